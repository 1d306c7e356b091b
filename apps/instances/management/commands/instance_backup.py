from apps.instances.management.commands._common import action_command

Command = action_command(
    "instance_create_backup",
    "Back up an instance's root disk as an image (Nova's createBackup), keeping the newest --rotation "
    "backups of its --type; --wait until it is uploaded and rotated.",
    option="backup",
)
