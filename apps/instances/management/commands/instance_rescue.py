from apps.instances.management.commands._common import action_command

Command = action_command("instance_rescue", "Rescue an instance: boot its image afresh with the instance's disk "
                                            "attached as the second disk.")
