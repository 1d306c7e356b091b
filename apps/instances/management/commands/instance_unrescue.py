from apps.instances.management.commands._common import action_command

Command = action_command("instance_unrescue", "Unrescue an instance: boot it from its own disk again.")
