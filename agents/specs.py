"""The wire contract between the control plane and the agents.

Specs travel as plain JSON dicts (``to_dict``) with a ``version`` field; agents rebuild them with
``from_dict`` and refuse a version they do not know.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SPEC_VERSION = 1

# Nova's power states (nova/compute/power_state.py): the hypervisor's view of a domain.
POWER_NOSTATE = 0
POWER_RUNNING = 1
POWER_PAUSED = 3
POWER_SHUTDOWN = 4
POWER_CRASHED = 6
POWER_SUSPENDED = 7


class SpecVersionError(ValueError):
    pass


def _check_version(data: dict[str, Any]) -> None:
    version = data.get("version", SPEC_VERSION)
    if version != SPEC_VERSION:
        raise SpecVersionError(f"spec version {version} is not supported (agent speaks {SPEC_VERSION})")


@dataclass
class ImageRef:
    """Where an agent fetches a base image from: ``http(s)://`` from the image API (with
    ``auth_token``, a short-lived download ticket for this image only, sent as ``X-Auth-Token``),
    or ``file://`` when the agent sees the image store (one box, tests)."""

    id: str
    source: str
    disk_format: str = "qcow2"
    size: int | None = None
    sha512: str | None = None
    auth_token: str | None = None


# What a DiskSpec's ``fs`` may ask for: an ext4 filesystem labelled "ephemeral0" (Nova's ephemeral
# disk, which cloud-init mounts on /mnt), or a disk formatted by mkswap.
DISK_FILESYSTEMS = ("ext4", "swap")


@dataclass
class DiskSpec:
    name: str  # "root", "ephemeral0", "swap", "rescue", or a volume id
    size_gb: int
    image: ImageRef | None = None
    bus: str = "virtio"
    # A volume (the root disk of a server booted from a volume, or an attached volume): how this
    # host reaches it (the storage host's export); None for the instance's own qcow2 disks.
    connection: VolumeConnection | None = None
    # The target device recorded when the volume was attached ("vdb"), kept when the domain is
    # defined again (resize, rebuild, rescue) so that a later detach finds it.
    device: str | None = None
    # Made already formatted (one of DISK_FILESYSTEMS) rather than blank or from an image: the
    # flavor's ephemeral ("ext4") and swap ("swap") disks.
    fs: str | None = None
    # The exact size in MiB, used instead of size_gb when set (a flavor's swap is in MiB).
    size_mib: int | None = None

    @property
    def size_bytes(self) -> int:
        return int(self.size_mib) << 20 if self.size_mib is not None else int(self.size_gb) << 30

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiskSpec:
        image, connection = data.get("image"), data.get("connection")
        return cls(**{**data, "image": ImageRef(**image) if image else None,
                      "connection": VolumeConnection(**connection) if connection else None})


@dataclass
class NicSpec:
    port_id: str
    mac_address: str
    bridge: str
    mtu: int = 1500
    model: str = "virtio"
    # False when the port or its network is administratively down: the tap is plugged but kept
    # link-down, so no frame passes. Older messages lack it: up.
    admin_state_up: bool = True


@dataclass
class DomainSpec:
    instance_id: str
    display_name: str
    vcpus: int
    memory_mib: int
    virt_type: str = "qemu"
    disks: list[DiskSpec] = field(default_factory=list)
    nics: list[NicSpec] = field(default_factory=list)
    # Rescue mode: the disk named "rescue" boots first, the root disk comes second.
    rescue: bool = False
    # The config drive's files (path -> base64 content): an ISO 9660 "config-2" CD-ROM, or None.
    config_drive: dict[str, str] | None = None
    # A virtio-serial channel for the QEMU guest agent (the image's hw_qemu_guest_agent).
    guest_agent: bool = False
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainSpec:
        _check_version(data)
        return cls(
            **{
                **data,
                "disks": [DiskSpec.from_dict(d) for d in data.get("disks", [])],
                "nics": [NicSpec(**n) for n in data.get("nics", [])],
            }
        )


@dataclass
class InstanceRef:
    """Names one instance on a host, for operations that need nothing else (destroy, console)."""

    instance_id: str
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceRef:
        _check_version(data)
        return cls(**data)


@dataclass
class PasswordSpec:
    """A new password for a user of the guest, set by the QEMU guest agent (Nova's changePassword)."""

    instance_id: str
    user: str
    password: str = field(repr=False)
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PasswordSpec:
        _check_version(data)
        return cls(**data)


@dataclass
class OperationSpec:
    """One lifecycle operation on an existing instance (``agents.names.OPERATIONS``).

    ``hard`` (reboot) resets instead of an ACPI shutdown; ``timeout`` is how long a clean shutdown
    may take before the domain is destroyed; ``domain`` is the instance's (new) spec for
    ``resize`` and ``rebuild``; ``start`` says whether ``resize`` leaves the guest running.
    ``snapshot`` uploads the root disk (qcow2, flattened) with ``PUT upload_url`` and
    ``X-Auth-Token: upload_token``; ``image_id`` names the image it fills. Both ``image_id`` and
    ``rotation`` (how many backups a createBackup keeps, which the control plane applies) come back
    in the result. ``shelve`` uploads the same way before it removes the domain, except without
    an ``upload_url``: the control plane sends none for a server booted from a volume.
    """

    instance_id: str
    operation: str
    hard: bool = False
    timeout: int = 60
    start: bool = True
    domain: DomainSpec | None = None
    image_id: str | None = None
    upload_url: str | None = None
    upload_token: str | None = None
    rotation: int | None = None
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OperationSpec:
        _check_version(data)
        domain = data.get("domain")
        return cls(**{**data, "domain": DomainSpec.from_dict(domain) if domain else None})


@dataclass
class HostReport:
    """What an agent's heartbeat tells the control plane: identity, capacity, domains."""

    hostname: str
    queue: str
    virt_type: str
    vcpus: int
    memory_mib: int
    disk_gb: int
    agent_version: str
    domains: dict[str, int] = field(default_factory=dict)  # instance id -> power state
    # As Nova's os-hypervisors shows them: QEMU's version (7.2.0 is 7002000) and the host CPU.
    hypervisor_version: int = 0
    cpu_info: dict[str, Any] = field(default_factory=dict)
    # When this agent process started (epoch seconds): a new value tells the control plane the
    # agent restarted, and it sends the host its whole network state (HostNetworkState).
    started_at: float = 0.0
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostReport:
        _check_version(data)
        return cls(**data)


# ----------------------------------------------------------------------------------- networks
# The control plane sends a host the whole desired state of one thing (a network, a router, a
# port); the agent converges to it idempotently, so a resync after an agent restart is the same
# call, and a repeated delivery changes nothing. Only the control plane allocates (IPAM): the
# agents receive addresses, never choose them.


@dataclass
class SubnetSpec:
    id: str
    cidr: str
    ip_version: int = 4
    gateway_ip: str | None = None
    enable_dhcp: bool = True
    dns_nameservers: list[str] = field(default_factory=list)
    host_routes: list[dict[str, str]] = field(default_factory=list)  # {"destination", "nexthop"}
    ipv6_address_mode: str | None = None  # "slaac", "dhcpv6-stateful", "dhcpv6-stateless"
    ipv6_ra_mode: str | None = None


@dataclass
class FixedIPSpec:
    subnet_id: str
    ip_address: str


@dataclass
class SecurityRuleSpec:
    """One security group rule, as Neutron has it. ``remote_group_id`` names a set in the port's
    ``remote_groups`` (the member addresses, resolved by the control plane)."""

    direction: str  # "ingress" | "egress"
    ethertype: str = "IPv4"  # "IPv4" | "IPv6"
    protocol: str | None = None  # None (any), "tcp", "udp", "icmp", "ipv6-icmp", or a number
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None


@dataclass
class PortSpec:
    """A port as the data plane needs it: its tap, its addresses, and its filter."""

    id: str
    network_id: str
    mac_address: str
    fixed_ips: list[FixedIPSpec] = field(default_factory=list)
    device_owner: str = ""
    device_id: str = ""
    mtu: int = 1500
    port_security_enabled: bool = True
    allowed_address_pairs: list[dict[str, str]] = field(default_factory=list)  # {"ip_address", "mac_address"}
    security_rules: list[SecurityRuleSpec] = field(default_factory=list)
    remote_groups: dict[str, list[str]] = field(default_factory=dict)  # group id -> member IPs
    hostname: str = ""  # DHCP host name for compute ports
    # False when the port or its network is administratively down: its tap is kept link-down.
    admin_state_up: bool = True
    generation: int = 0  # see NetworkSpec
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PortSpec:
        _check_version(data)
        return cls(
            **{
                **data,
                "fixed_ips": [FixedIPSpec(**f) for f in data.get("fixed_ips", [])],
                "security_rules": [SecurityRuleSpec(**r) for r in data.get("security_rules", [])],
            }
        )


@dataclass
class NetworkSpec:
    """One network on one host: its bridge, and (where DHCP is on) its DHCP namespace.

    ``network_type`` is "local" (a bridge on this host only), "flat" (the bridge of
    ``physical_network``, e.g. the external network's host bridge), "vlan" or "vxlan" (with
    ``segmentation_id``; the VXLAN device per network joins the bridge when multi-host comes).
    ``dhcp_port`` is the port dnsmasq answers from (one fixed IP per DHCP subnet); ``ports`` are
    every port of the network with addresses, the static DHCP host entries; ``metadata`` says
    whether this network's DHCP namespace serves 169.254.169.254.
    """

    id: str
    network_type: str = "local"
    segmentation_id: int | None = None
    physical_network: str | None = None
    mtu: int = 1500
    subnets: list[SubnetSpec] = field(default_factory=list)
    dhcp_port: PortSpec | None = None
    ports: list[PortSpec] = field(default_factory=list)
    metadata: bool = True
    # When the control plane read this state (time.time_ns(), after the change committed): a
    # host's tasks run on several threads, so the agent drops a message older than the last one
    # it applied for the same object. 0: unknown, always applied.
    generation: int = 0
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkSpec:
        _check_version(data)
        dhcp_port = data.get("dhcp_port")
        return cls(
            **{
                **data,
                "subnets": [SubnetSpec(**s) for s in data.get("subnets", [])],
                "dhcp_port": PortSpec.from_dict(dhcp_port) if dhcp_port else None,
                "ports": [PortSpec.from_dict(p) for p in data.get("ports", [])],
            }
        )


@dataclass
class RouterInterfaceSpec:
    """A router's leg on a subnet (``qr-``) or its gateway on the external network (``qg-``):
    ``cidr`` is the subnet's, ``ip_address`` the router's own address in it."""

    port_id: str
    network_id: str
    mac_address: str
    ip_address: str
    cidr: str
    network: NetworkSpec | None = None  # the bridge the leg plugs into (no DHCP data needed)


@dataclass
class FloatingIPSpec:
    floating_ip_address: str
    fixed_ip_address: str


@dataclass
class RouterSpec:
    """A router: a namespace with a leg per attached subnet and a gateway with SNAT."""

    id: str
    interfaces: list[RouterInterfaceSpec] = field(default_factory=list)
    gateway: RouterInterfaceSpec | None = None
    gateway_ip: str | None = None  # next hop on the external network
    enable_snat: bool = True
    routes: list[dict[str, str]] = field(default_factory=list)  # {"destination", "nexthop"}
    floating_ips: list[FloatingIPSpec] = field(default_factory=list)
    generation: int = 0  # see NetworkSpec
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RouterSpec:
        _check_version(data)

        def interface(item: dict[str, Any]) -> RouterInterfaceSpec:
            network = item.get("network")
            return RouterInterfaceSpec(**{**item, "network": NetworkSpec.from_dict(network) if network else None})

        gateway = data.get("gateway")
        return cls(
            **{
                **data,
                "interfaces": [interface(i) for i in data.get("interfaces", [])],
                "gateway": interface(gateway) if gateway else None,
                "floating_ips": [FloatingIPSpec(**f) for f in data.get("floating_ips", [])],
            }
        )


@dataclass
class SecurityGroupMembersSpec:
    """The addresses of one security group's ports (fixed IPs and allowed address pairs): what
    the remote-group rules naming it match. Sent when the group gains or loses an address, to the
    hosts whose filters name it; the ports' rules are unchanged."""

    id: str  # the security group
    members: list[str] = field(default_factory=list)
    generation: int = 0  # see NetworkSpec
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SecurityGroupMembersSpec:
        _check_version(data)
        return cls(**data)


@dataclass
class HostNetworkState:
    """Everything of the data plane one host should have; the agent removes what is not here."""

    networks: list[NetworkSpec] = field(default_factory=list)
    routers: list[RouterSpec] = field(default_factory=list)
    ports: list[PortSpec] = field(default_factory=list)  # ports bound to this host (taps, filters)
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostNetworkState:
        _check_version(data)
        return cls(
            networks=[NetworkSpec.from_dict(n) for n in data.get("networks", [])],
            routers=[RouterSpec.from_dict(r) for r in data.get("routers", [])],
            ports=[PortSpec.from_dict(p) for p in data.get("ports", [])],
        )


# ------------------------------------------------------------------------------------ volumes
# Cinder's split: the storage host's backend creates, copies and exports volumes; the compute
# host attaches what the export tells it (a ``VolumeConnection``), so the two can be different
# hosts. Every operation is idempotent (create only if absent, delete a missing volume succeeds).


@dataclass
class VolumeSpec:
    """A volume on a backend ("file": qcow2 files in a pool directory; "lvm": thin volumes).
    At most one source: an image (copy-on-write on the file backend), a snapshot or a volume."""

    id: str
    size_gb: int
    backend: str = "file"
    image: ImageRef | None = None
    source_snapshot_id: str | None = None
    source_volume_id: str | None = None
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VolumeSpec:
        _check_version(data)
        image = data.get("image")
        return cls(**{**data, "image": ImageRef(**image) if image else None})


@dataclass
class SnapshotSpec:
    id: str
    volume_id: str
    backend: str = "file"
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotSpec:
        _check_version(data)
        return cls(**data)


@dataclass
class BackupSpec:
    """A backup of a volume (or of ``snapshot_id``, for an attached volume) into the backup
    store; ``parent_id`` makes it incremental on that backup. ``restore_volume`` names the volume
    a restore writes into."""

    id: str
    volume_id: str
    backend: str = "file"
    size_gb: int = 0
    parent_id: str | None = None
    snapshot_id: str | None = None
    restore_volume_id: str | None = None
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackupSpec:
        _check_version(data)
        return cls(**data)


@dataclass
class VolumeConnection:
    """How a compute host reaches a volume: a local ``file`` (with its ``format``) or ``block``
    device, or an ``nbd`` export (``host``, ``port``, ``export``) served by qemu-storage-daemon."""

    driver: str
    path: str | None = None
    format: str = "raw"
    host: str | None = None
    port: int | None = None
    export: str | None = None


@dataclass
class VolumeAttachSpec:
    """Hot-plug (or unplug) ``volume_id`` into a running instance as ``device`` (vdb, vdc ...);
    the guest sees ``serial`` (the volume id) in /dev/disk/by-id. ``timeout`` bounds how long a
    detach waits for the guest to release the device."""

    instance_id: str
    volume_id: str
    device: str
    connection: VolumeConnection | None = None
    read_only: bool = False
    timeout: int = 30
    # The volume's size; for TASK_VOLUME_RESIZED the new size the guest should see.
    size_gb: int = 0
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VolumeAttachSpec:
        _check_version(data)
        connection = data.get("connection")
        return cls(**{**data, "connection": VolumeConnection(**connection) if connection else None})
