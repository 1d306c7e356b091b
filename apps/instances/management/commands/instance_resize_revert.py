from apps.instances.management.commands._common import action_command

Command = action_command("instance_resize_revert", "Revert a resize (back to the old flavor).", option=None)
