"""Turn a :class:`~agents.specs.DomainSpec` plus host-local paths into a :class:`~agents.compute.config.Guest`.

This is the only place that decides what an instance's domain looks like; its output is pinned by
golden-XML tests (``tests/agents/golden``).
"""

from __future__ import annotations

import re
import string

from agents import names
from agents.compute import config as vconfig
from agents.compute.driver import ComputeError
from agents.config import ROOT_DISK, VIRT_TYPES, InstancePaths, safe_component
from agents.specs import DISK_FILESYSTEMS, DiskSpec, DomainSpec, VolumeAttachSpec, VolumeConnection

__all__ = ["BUS_PREFIXES", "VIRT_TYPES", "design_guest", "design_volume_disk"]

BUS_PREFIXES = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}
NIC_MODELS = ("virtio", "e1000", "rtl8139")
MIN_MEMORY_MIB = 16
RESCUE_DISK = "rescue"
VIRTIO_SERIAL_MAX = 20  # virtio-blk serial numbers are at most 20 bytes
X86_ARCHES = ("x86_64", "i686")
# libvirt 9.0 reads an x86 guest's CPU after each start. With this QEMU capability it asks for
# every CPU property (one qom-list and ~400 qom-get round trips: a TCG start takes 0.6-1.0 s);
# without it, for the two x86 feature-word properties, which say the same (0.15-0.3 s). A TCG
# guest's CPU is QEMU's fixed model, so nothing is lost; libvirt marks such domains
# "tainted: custom-hypervisor-feature" in their log. KVM guests keep the full read.
SLOW_TCG_CPU_READ = "cpu-unavailable-features"

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean_text(value: str) -> str:
    """Text safe for XML 1.0 and for libvirt's single-line ``<title>``."""
    return " ".join(_CONTROL.sub("", value).split())


def _invalid(message: str) -> ComputeError:
    return ComputeError(f"invalid instance spec: {message}")


def _target_dev(bus: str, index: int) -> str:
    if index >= len(string.ascii_lowercase):
        raise _invalid("too many disks on one bus")
    return BUS_PREFIXES[bus] + string.ascii_lowercase[index]


def _check_formatted(disk: DiskSpec) -> None:
    """A formatted disk (the flavor's ephemeral or swap disk) is made here, from its size alone."""
    if disk.fs is None:
        return
    if disk.fs not in DISK_FILESYSTEMS:
        raise _invalid(f"disk {disk.name}: filesystem {disk.fs!r} is not one of {', '.join(DISK_FILESYSTEMS)}")
    if disk.image is not None or disk.connection is not None:
        raise _invalid(f"disk {disk.name} is made formatted ({disk.fs}), so it can have neither an image nor a volume")
    if disk.size_bytes <= 0:
        raise _invalid(f"disk {disk.name} is made formatted ({disk.fs}) and needs a positive size")


def design_guest(
    spec: DomainSpec,
    paths: InstancePaths,
    *,
    disk_cache_mode: str = "none",
    arch: str = "x86_64",
) -> vconfig.Guest:
    """Describe ``spec``'s domain.

    ``paths`` says where the instance's disks and console log live on this host; ``disk_cache_mode``
    is ``none`` when the filesystem supports O_DIRECT (the driver checks), ``writethrough`` otherwise.
    """
    if spec.virt_type not in VIRT_TYPES:
        raise _invalid(f"virt type {spec.virt_type!r} is not one of {', '.join(VIRT_TYPES)}")
    if spec.vcpus < 1:
        raise _invalid("an instance needs at least one vCPU")
    if spec.memory_mib < MIN_MEMORY_MIB:
        raise _invalid(f"an instance needs at least {MIN_MEMORY_MIB} MiB of memory")

    roots = [d for d in spec.disks if d.name == ROOT_DISK]
    rescue = [d for d in spec.disks if d.name == RESCUE_DISK]
    if spec.rescue and len(rescue) != 1:
        raise _invalid("a rescue spec needs exactly one rescue disk")
    if len(roots) != 1:
        raise _invalid("an instance needs exactly one root disk")
    disk_names = [d.name for d in spec.disks]
    if len(set(disk_names)) != len(disk_names):
        raise _invalid("disk names must be unique")

    display_name = _clean_text(spec.display_name)
    guest = vconfig.Guest(
        virt_type=spec.virt_type,
        name=names.domain_name(spec.instance_id),
        uuid=spec.instance_id,
        memory_mib=spec.memory_mib,
        vcpus=spec.vcpus,
        title=display_name or None,
        metadata=vconfig.GuestMetadata(display_name=display_name),
        os_arch=arch,
        os_machine="pc",
        cpu=vconfig.GuestCPU(mode="host-model") if spec.virt_type == "kvm" else None,
        removed_qemu_capabilities=[SLOW_TCG_CPU_READ] if spec.virt_type == "qemu" and arch in X86_ARCHES else [],
        clock=vconfig.GuestClock(
            offset="utc",
            timers=[
                vconfig.GuestTimer("rtc", tickpolicy="catchup"),
                vconfig.GuestTimer("pit", tickpolicy="delay"),
                vconfig.GuestTimer("hpet", present=False),
            ],
        ),
    )

    # The root disk comes first: <boot dev='hd'/> boots the first disk.
    ordered = roots + [d for d in spec.disks if d.name != ROOT_DISK]
    if spec.rescue:  # the rescue disk boots; the instance's root disk is the second disk
        ordered = rescue + roots + [d for d in spec.disks if d.name not in (ROOT_DISK, RESCUE_DISK)]
    # Attached volumes keep the device they were attached as; the other disks take the free names.
    recorded = {d.device for d in ordered if d.connection is not None and d.device}
    taken: set[str] = set()
    for disk in ordered:
        if disk.bus not in BUS_PREFIXES:
            raise _invalid(f"disk bus {disk.bus!r} is not one of {', '.join(BUS_PREFIXES)}")
        _check_formatted(disk)
        if disk.connection is not None and disk.device and disk.device not in taken:
            target = disk.device
        else:
            target = next(_target_dev(disk.bus, i) for i in range(len(string.ascii_lowercase) + 1)
                          if _target_dev(disk.bus, i) not in taken | recorded)
        taken.add(target)
        if disk.connection is not None:  # a volume (boot from volume, or attached before a redefine)
            guest.devices.append(_connection_disk(disk.connection, target, _volume_serial(disk.name),
                                                  disk_cache_mode, bus=disk.bus))
            continue
        try:
            source = paths.disk_path(disk.name)
        except ValueError as exc:
            raise _invalid(str(exc)) from None
        guest.devices.append(
            vconfig.GuestDisk(
                source_path=str(source),
                target_dev=target,
                target_bus=disk.bus,
                driver_format="qcow2",
                driver_cache=disk_cache_mode,
                serial=disk.name[:VIRTIO_SERIAL_MAX],
            )
        )

    if spec.config_drive is not None:
        # Nova's place for it on a "pc" machine: the last IDE slot, a read-only CD-ROM.
        guest.devices.append(vconfig.GuestDisk(source_path=str(paths.config_drive), target_dev="hdd",
                                               target_bus="ide", driver_format="raw", driver_cache=None,
                                               device="cdrom"))

    for nic in spec.nics:
        mac = nic.mac_address.lower()
        if not _MAC.match(mac):
            raise _invalid(f"MAC address {nic.mac_address!r} is not valid")
        if nic.model not in NIC_MODELS:
            raise _invalid(f"NIC model {nic.model!r} is not one of {', '.join(NIC_MODELS)}")
        if not nic.bridge or len(nic.bridge) > names.IFNAME_MAX:
            raise _invalid(f"bridge name {nic.bridge!r} is not a valid interface name")
        guest.devices.append(
            vconfig.GuestInterface(
                mac_address=mac,
                target_dev=names.tap_name(nic.port_id),
                model=nic.model,
                mtu=nic.mtu,
            )
        )

    guest.devices += [
        vconfig.GuestSerial(log_file=str(paths.console_log), port=0),
        vconfig.GuestConsole(target_type="serial", port=0),
        vconfig.GuestGraphics(type="vnc", listen="127.0.0.1", autoport=True),
        vconfig.GuestVideo(model="vga"),
        vconfig.GuestMemBalloon(model="virtio", period=10),
        vconfig.GuestRng(backend="/dev/urandom"),
    ]
    if spec.guest_agent:
        guest.devices.append(vconfig.GuestChannel(name=names.GUEST_AGENT_CHANNEL))
    return guest


_VOLUME_DEVICE = re.compile(r"^vd[a-z]{1,2}$")
VOLUME_SOURCES = {"file": "file", "block": "block", "nbd": "network"}


def _volume_serial(volume_id: str) -> str:
    try:
        return safe_component(volume_id, "volume id")
    except ValueError as exc:
        raise ComputeError(str(exc)) from None


def _connection_disk(connection: VolumeConnection, target_dev: str, serial: str, disk_cache_mode: str, *,
                     bus: str = "virtio", read_only: bool = False) -> vconfig.GuestVolumeDisk:
    """A disk whose source is a volume's connection (a file, a block device or an NBD export)."""
    if connection.driver not in VOLUME_SOURCES:
        raise ComputeError(f"unknown volume connection {connection.driver!r} "
                           f"(known: {', '.join(VOLUME_SOURCES)})")
    if connection.format not in ("raw", "qcow2"):
        raise ComputeError(f"unsupported volume format {connection.format!r}")
    disk = vconfig.GuestVolumeDisk(
        source_type=VOLUME_SOURCES[connection.driver],
        target_dev=target_dev,
        target_bus=bus,
        serial=serial,
        driver_format=connection.format,
        driver_cache=disk_cache_mode,
        read_only=read_only,
    )
    if connection.driver == "nbd":
        if not connection.host or not connection.port or not connection.export:
            raise ComputeError("an NBD volume connection needs a host, a port and an export name")
        disk.nbd_host, disk.nbd_port, disk.nbd_export = connection.host, int(connection.port), connection.export
    else:
        if not connection.path or not connection.path.startswith("/"):
            raise ComputeError(f"a {connection.driver} volume connection needs an absolute path")
        disk.source_path = connection.path
    return disk


def design_volume_disk(spec: VolumeAttachSpec, *, disk_cache_mode: str = "none") -> vconfig.GuestVolumeDisk:
    """The virtio disk that hot-plugs ``spec``'s volume: its connection decides the source, the
    volume id is the serial (the guest's ``/dev/disk/by-id/virtio-<first 20 characters>``)."""
    if spec.connection is None:
        raise ComputeError("attaching a volume needs its connection")
    if not _VOLUME_DEVICE.match(spec.device or "") or spec.device == "vda":
        raise ComputeError(f"invalid volume device {spec.device!r}: a virtio disk name after vda (vdb, vdc ...)")
    return _connection_disk(spec.connection, spec.device, _volume_serial(spec.volume_id), disk_cache_mode,
                            read_only=spec.read_only)
