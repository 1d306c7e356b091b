from apps.instances.management.commands._common import action_command

Command = action_command("instance_suspend", "Suspend an instance (memory saved to disk, domain stopped).", option=None)
