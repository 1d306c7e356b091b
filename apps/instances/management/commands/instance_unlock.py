from apps.instances.management.commands._common import action_command

Command = action_command("instance_unlock", "Unlock an instance.", option=None)
