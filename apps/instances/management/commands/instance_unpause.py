from apps.instances.management.commands._common import action_command

Command = action_command("instance_unpause", "Unpause a paused instance.", option=None)
