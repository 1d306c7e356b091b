from apps.instances.management.commands._common import action_command

Command = action_command("instance_trigger_crash_dump",
                         "Inject an NMI into an instance (its kernel may panic, write a crash dump or log it).",
                         option=None)
