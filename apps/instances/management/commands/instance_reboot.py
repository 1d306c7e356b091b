from apps.instances.management.commands._common import action_command

Command = action_command("instance_reboot", "Reboot an instance (clean ACPI reboot, or --hard reset).", option="hard")
