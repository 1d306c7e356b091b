from apps.instances.management.commands._common import action_command

Command = action_command("instance_unshelve", "Unshelve an instance: placed again, it boots from its shelved image.",
                         option=None)
