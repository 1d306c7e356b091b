from apps.instances.management.commands._common import action_command

Command = action_command("instance_pause", "Pause an instance (its vCPUs stop; memory stays).", option=None)
