from apps.instances.management.commands._common import action_command

Command = action_command(
    "instance_resize_confirm",
    "Confirm a resize (the old flavor's claim is released).",
    option=None,
)
