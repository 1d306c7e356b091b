from apps.instances.management.commands._common import action_command

Command = action_command("instance_lock", "Lock an instance: only admins may act on it until it is unlocked.")
