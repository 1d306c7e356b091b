from apps.instances.management.commands._common import action_command

Command = action_command(
    "instance_rebuild",
    "Rebuild an instance: a new root disk from its image (or --image).",
    option="image",
)
