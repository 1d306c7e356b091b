from apps.instances.management.commands._common import action_command

Command = action_command(
    "instance_resize",
    "Resize an instance in place to another flavor (then confirm or revert).",
    option="flavor",
)
