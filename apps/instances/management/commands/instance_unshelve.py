from apps.instances.management.commands._common import action_command

Command = action_command("instance_unshelve", "Unshelve an instance: placed again, it boots from its shelved image "
                         "(or its boot volume), with its volumes.", option=None)
