"""Names shared by the control plane and the agents: queues, task names, device names."""

CONTROL_QUEUE = "control"

# Agent tasks, sent by name to a host's queue.
TASK_SPAWN = "agents.compute.spawn"
TASK_DESTROY = "agents.compute.destroy"
TASK_CONSOLE_LOG = "agents.compute.console_log"
TASK_VNC_ADDRESS = "agents.compute.vnc_address"
TASK_IMAGE_CACHE_PRUNE = "agents.storage.image_cache_prune"

# Lifecycle operations on an existing instance (an ``OperationSpec`` each); their results go to
# CALLBACK_OPERATION_DONE. One task name per operation.
OPERATIONS = ("start", "stop", "reboot", "pause", "unpause", "suspend", "resume", "resize", "rebuild", "snapshot",
              "rescue", "unrescue")


def operation_task(operation: str) -> str:
    return f"agents.compute.{operation}"

# Control-plane tasks the agents call back (results) or report to (heartbeats).
TASK_HOST_HEARTBEAT = "apps.hosts.tasks.host_heartbeat"
CALLBACK_SPAWN_DONE = "apps.instances.tasks.spawn_done"
CALLBACK_DESTROY_DONE = "apps.instances.tasks.destroy_done"
CALLBACK_OPERATION_DONE = "apps.instances.tasks.operation_done"

# Linux limits interface names to 15 characters.
IFNAME_MAX = 15


def host_queue(hostname: str) -> str:
    return f"host.{hostname}"


def domain_name(instance_id: str) -> str:
    """The libvirt domain name of an instance: stable, unique, derived from its id."""
    return f"cloudmgr-{instance_id}"


def _hex(object_id: str) -> str:
    return object_id.replace("-", "").lower()


def tap_name(port_id: str) -> str:
    return ("tap" + _hex(port_id))[:IFNAME_MAX - 1]


def bridge_name(network_id: str) -> str:
    return ("brq" + _hex(network_id))[:IFNAME_MAX - 1]
