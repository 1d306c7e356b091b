from apps.instances.management.commands._common import action_command

Command = action_command("instance_reset_state",
                         "Reset a stuck instance to ACTIVE or ERROR, with no task (admins; as Nova's os-resetState).",
                         option="state")
