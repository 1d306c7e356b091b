from apps.instances.management.commands._common import action_command

Command = action_command(
    "instance_stop",
    "Stop an instance: ACPI shutdown, destroyed after CLOUDMGR_SHUTDOWN_TIMEOUT seconds.",
)
