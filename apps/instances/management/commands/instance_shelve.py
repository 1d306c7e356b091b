from apps.instances.management.commands._common import action_command

Command = action_command("instance_shelve", "Shelve an instance: its root disk is uploaded as the image "
                         "<name>-shelved (none if it boots from a volume) and it leaves its host; its volumes "
                         "stay attached and its quota stays.", option=None)
