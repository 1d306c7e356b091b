"""Names shared by the control plane and the agents: queues, task names, device names."""

CONTROL_QUEUE = "control"

# Agent tasks, sent by name to a host's queue.
TASK_SPAWN = "agents.compute.spawn"
TASK_DESTROY = "agents.compute.destroy"
TASK_CONSOLE_LOG = "agents.compute.console_log"
TASK_VNC_ADDRESS = "agents.compute.vnc_address"
TASK_SET_PASSWORD = "agents.compute.set_password"  # PasswordSpec, a call: the guest agent sets it
TASK_DIAGNOSTICS = "agents.compute.diagnostics"  # InstanceRef, a call: the domain's counters
TASK_HOST_UPTIME = "agents.host_uptime"  # {}, a call: the host's `uptime` line
# The libvirt channel the QEMU guest agent listens on in the guest (virtio-serial).
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
TASK_IMAGE_CACHE_PRUNE = "agents.storage.image_cache_prune"
# A DomainSpec: attach/detach NICs so the running domain has exactly its nics (os-interface).
TASK_SYNC_INTERFACES = "agents.compute.sync_interfaces"

# Lifecycle operations on an existing instance (an ``OperationSpec`` each); their results go to
# CALLBACK_OPERATION_DONE. One task name per operation.
OPERATIONS = ("start", "stop", "reboot", "pause", "unpause", "suspend", "resume", "resize", "rebuild", "snapshot",
              "rescue", "unrescue", "trigger_crash_dump", "shelve")


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


# Network agent tasks (``agents.specs`` network section). Each applies one whole desired state.
TASK_NETWORK_SYNC = "agents.network.network_sync"        # NetworkSpec: bridge, DHCP, metadata
TASK_NETWORK_DELETE = "agents.network.network_delete"    # {"network_id"}
TASK_PORT_SYNC = "agents.network.port_sync"              # PortSpec: tap + filter of a bound port
TASK_PORT_DELETE = "agents.network.port_delete"          # {"port_id", "network_id"}
TASK_ROUTER_SYNC = "agents.network.router_sync"          # RouterSpec: namespace, legs, NAT
TASK_ROUTER_DELETE = "agents.network.router_delete"      # {"router_id"}
TASK_SECURITY_GROUP_MEMBERS = "agents.network.security_group_members"  # SecurityGroupMembersSpec
TASK_HOST_NETWORK_RESYNC = "agents.network.resync"       # HostNetworkState: converge, drop the rest
CALLBACK_NETWORK_DONE = "apps.networks.tasks.network_task_done"


def _short(object_id: str, prefix: str) -> str:
    return (prefix + _hex(object_id))[:IFNAME_MAX - 1]


def dhcp_namespace(network_id: str) -> str:
    return f"qdhcp-{network_id}"


def router_namespace(router_id: str) -> str:
    return f"qrouter-{router_id}"


def dhcp_device(port_id: str) -> str:
    """The DHCP port's end inside its namespace (its peer on the bridge is ``ns-`` + id)."""
    return _short(port_id, "tap")


def router_leg(port_id: str) -> str:
    return _short(port_id, "qr-")


def router_gateway(port_id: str) -> str:
    return _short(port_id, "qg-")


def veth_peer(port_id: str) -> str:
    """The bridge-side end of a namespace's veth pair."""
    return _short(port_id, "ns-")


def vxlan_device(segmentation_id: int) -> str:
    return f"vxlan-{segmentation_id}"


# Volume tasks: storage operations on the storage host's queue, attach/detach on the compute
# host's. Results go to CALLBACK_VOLUME_DONE.
TASK_VOLUME_CREATE = "agents.storage.volume_create"      # VolumeSpec
TASK_VOLUME_DELETE = "agents.storage.volume_delete"      # VolumeSpec
TASK_VOLUME_EXTEND = "agents.storage.volume_extend"      # VolumeSpec with the new size_gb
TASK_VOLUME_EXPORT = "agents.storage.volume_export"      # VolumeSpec -> VolumeConnection (call)
TASK_VOLUME_UNEXPORT = "agents.storage.volume_unexport"  # VolumeSpec
TASK_SNAPSHOT_CREATE = "agents.storage.snapshot_create"  # SnapshotSpec
TASK_SNAPSHOT_DELETE = "agents.storage.snapshot_delete"  # SnapshotSpec
TASK_BACKUP_CREATE = "agents.storage.backup_create"      # BackupSpec
TASK_BACKUP_RESTORE = "agents.storage.backup_restore"    # BackupSpec with restore_volume_id
TASK_BACKUP_DELETE = "agents.storage.backup_delete"      # BackupSpec
TASK_VOLUME_ATTACH = "agents.compute.volume_attach"      # VolumeAttachSpec
TASK_VOLUME_DETACH = "agents.compute.volume_detach"      # VolumeAttachSpec
TASK_VOLUME_RESIZED = "agents.compute.volume_resized"    # VolumeAttachSpec: tell the guest the new size
CALLBACK_VOLUME_DONE = "apps.volumes.tasks.volume_task_done"
