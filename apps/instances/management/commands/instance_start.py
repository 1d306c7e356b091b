from apps.instances.management.commands._common import action_command

Command = action_command("instance_start", "Start (power on) a stopped instance.", option=None)
