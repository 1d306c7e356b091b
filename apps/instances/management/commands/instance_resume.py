from apps.instances.management.commands._common import action_command

Command = action_command("instance_resume", "Resume a suspended instance.", option=None)
