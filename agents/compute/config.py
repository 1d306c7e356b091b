"""Libvirt domain XML as small config objects (in the spirit of ``nova/virt/libvirt/config.py``).

Each object knows how to render itself as an ``xml.etree.ElementTree`` element (``format_dom``) and
as text (``to_xml``). Nothing here formats XML with strings, so values are always escaped. What to
put into the objects is decided by :mod:`agents.compute.designer`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

METADATA_NS = "urn:cloudmgr:instance:1"
METADATA_PREFIX = "cloudmgr"
ET.register_namespace(METADATA_PREFIX, METADATA_NS)
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"  # libvirt's QEMU-specific domain elements
ET.register_namespace("qemu", QEMU_NS)


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


class ConfigObject:
    root_name = ""

    def format_dom(self) -> ET.Element:
        raise NotImplementedError

    def to_xml(self, pretty: bool = True) -> str:
        root = self.format_dom()
        if pretty:
            ET.indent(root, space="  ")
        return ET.tostring(root, encoding="unicode")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})
    if text is not None:
        el.text = str(text)
    return el


@dataclass
class GuestDisk(ConfigObject):
    """A file-backed disk: ``<disk type='file' device='disk'>`` (or ``'cdrom'``, read-only)."""

    source_path: str
    target_dev: str
    target_bus: str = "virtio"
    driver_format: str = "qcow2"
    driver_cache: str | None = "none"
    serial: str | None = None
    device: str = "disk"
    root_name = "disk"

    def format_dom(self) -> ET.Element:
        disk = ET.Element("disk", type="file", device=self.device)
        driver = _sub(disk, "driver", name="qemu", type=self.driver_format)
        if self.driver_cache:
            driver.set("cache", self.driver_cache)
        _sub(disk, "source", file=self.source_path)
        _sub(disk, "target", dev=self.target_dev, bus=self.target_bus)
        if self.device == "cdrom":
            _sub(disk, "readonly")
        if self.serial:
            _sub(disk, "serial", self.serial)
        return disk


@dataclass
class GuestInterface(ConfigObject):
    """A NIC on the tap ``target_dev``, which the network agent made (IPv6 off) and plugged into
    its network's bridge before the domain starts: ``managed='no'``, libvirt neither creates,
    plugs nor deletes it."""

    mac_address: str
    target_dev: str
    model: str = "virtio"
    mtu: int | None = None
    root_name = "interface"

    def format_dom(self) -> ET.Element:
        iface = ET.Element("interface", type="ethernet")
        _sub(iface, "mac", address=self.mac_address)
        _sub(iface, "target", dev=self.target_dev, managed="no")
        _sub(iface, "model", type=self.model)
        if self.mtu:
            _sub(iface, "mtu", size=str(self.mtu))
        return iface


@dataclass
class GuestSerial(ConfigObject):
    """A pty serial port whose output virtlogd also writes to ``log_file`` (truncated at start)."""

    log_file: str | None = None
    port: int = 0
    log_append: bool = False
    root_name = "serial"

    def format_dom(self) -> ET.Element:
        serial = ET.Element("serial", type="pty")
        if self.log_file:
            _sub(serial, "log", file=self.log_file, append="on" if self.log_append else "off")
        _sub(serial, "target", port=str(self.port))
        return serial


@dataclass
class GuestConsole(ConfigObject):
    """``<console>`` aliasing a serial port (what ``virsh console`` attaches to)."""

    target_type: str = "serial"
    port: int = 0
    root_name = "console"

    def format_dom(self) -> ET.Element:
        console = ET.Element("console", type="pty")
        _sub(console, "target", type=self.target_type, port=str(self.port))
        return console


@dataclass
class GuestGraphics(ConfigObject):
    type: str = "vnc"
    listen: str = "127.0.0.1"
    autoport: bool = True
    root_name = "graphics"

    def format_dom(self) -> ET.Element:
        graphics = ET.Element("graphics", type=self.type, autoport=_yes_no(self.autoport), listen=self.listen)
        _sub(graphics, "listen", type="address", address=self.listen)
        return graphics


@dataclass
class GuestVideo(ConfigObject):
    model: str = "vga"
    root_name = "video"

    def format_dom(self) -> ET.Element:
        video = ET.Element("video")
        _sub(video, "model", type=self.model)
        return video


@dataclass
class GuestMemBalloon(ConfigObject):
    """``model='none'`` disables the balloon; ``period`` enables guest memory statistics."""

    model: str = "virtio"
    period: int | None = 10
    root_name = "memballoon"

    def format_dom(self) -> ET.Element:
        balloon = ET.Element("memballoon", model=self.model)
        if self.model != "none" and self.period:
            _sub(balloon, "stats", period=str(self.period))
        return balloon


@dataclass
class GuestRng(ConfigObject):
    """A virtio-rng device fed from the host's ``backend`` (fast entropy for guests)."""

    backend: str = "/dev/urandom"
    model: str = "virtio"
    root_name = "rng"

    def format_dom(self) -> ET.Element:
        rng = ET.Element("rng", model=self.model)
        _sub(rng, "backend", self.backend, model="random")
        return rng


@dataclass
class GuestChannel(ConfigObject):
    """A virtio-serial channel named ``name`` in the guest, a UNIX socket on the host whose path
    libvirt chooses (and connects to itself for the QEMU guest agent's channel)."""

    name: str
    root_name = "channel"

    def format_dom(self) -> ET.Element:
        channel = ET.Element("channel", type="unix")
        _sub(channel, "target", type="virtio", name=self.name)
        return channel


@dataclass
class GuestTimer(ConfigObject):
    name: str
    tickpolicy: str | None = None
    present: bool | None = None
    root_name = "timer"

    def format_dom(self) -> ET.Element:
        timer = ET.Element("timer", name=self.name)
        if self.tickpolicy:
            timer.set("tickpolicy", self.tickpolicy)
        if self.present is not None:
            timer.set("present", _yes_no(self.present))
        return timer


@dataclass
class GuestClock(ConfigObject):
    offset: str = "utc"
    timers: list[GuestTimer] = field(default_factory=list)
    root_name = "clock"

    def format_dom(self) -> ET.Element:
        clock = ET.Element("clock", offset=self.offset)
        for timer in self.timers:
            clock.append(timer.format_dom())
        return clock


@dataclass
class GuestCPU(ConfigObject):
    mode: str = "host-model"
    root_name = "cpu"

    def format_dom(self) -> ET.Element:
        return ET.Element("cpu", mode=self.mode)


@dataclass
class GuestMetadata(ConfigObject):
    """cloudmgr's own ``<metadata>`` block (namespace :data:`METADATA_NS`)."""

    display_name: str
    root_name = "metadata"

    def format_dom(self) -> ET.Element:
        metadata = ET.Element("metadata")
        instance = _sub(metadata, f"{{{METADATA_NS}}}instance")
        _sub(instance, f"{{{METADATA_NS}}}display-name", self.display_name)
        return metadata


GuestDevice = (
    GuestDisk | GuestInterface | GuestSerial | GuestConsole | GuestGraphics | GuestVideo | GuestMemBalloon | GuestRng
)


@dataclass
class Guest(ConfigObject):
    """A whole ``<domain>``."""

    virt_type: str
    name: str
    uuid: str
    memory_mib: int
    vcpus: int
    title: str | None = None
    metadata: GuestMetadata | None = None
    os_type: str = "hvm"
    os_arch: str | None = "x86_64"
    os_machine: str | None = "pc"
    boot_devs: list[str] = field(default_factory=lambda: ["hd"])
    features: list[str] = field(default_factory=lambda: ["acpi", "apic"])
    cpu: GuestCPU | None = None
    clock: GuestClock | None = None
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"
    devices: list[GuestDevice] = field(default_factory=list)
    # QEMU capabilities libvirt should act as if this QEMU lacked (``<qemu:capabilities>``)
    removed_qemu_capabilities: list[str] = field(default_factory=list)
    root_name = "domain"

    def format_dom(self) -> ET.Element:
        domain = ET.Element("domain", type=self.virt_type)
        _sub(domain, "name", self.name)
        _sub(domain, "uuid", self.uuid)
        if self.title:
            _sub(domain, "title", self.title)
        if self.metadata is not None:
            domain.append(self.metadata.format_dom())
        _sub(domain, "memory", str(self.memory_mib * 1024), unit="KiB")
        _sub(domain, "vcpu", str(self.vcpus))

        os_el = _sub(domain, "os")
        os_type = _sub(os_el, "type", self.os_type)
        if self.os_arch:
            os_type.set("arch", self.os_arch)
        if self.os_machine:
            os_type.set("machine", self.os_machine)
        for dev in self.boot_devs:
            _sub(os_el, "boot", dev=dev)

        if self.features:
            features = _sub(domain, "features")
            for name in self.features:
                _sub(features, name)
        if self.cpu is not None:
            domain.append(self.cpu.format_dom())
        if self.clock is not None:
            domain.append(self.clock.format_dom())
        _sub(domain, "on_poweroff", self.on_poweroff)
        _sub(domain, "on_reboot", self.on_reboot)
        _sub(domain, "on_crash", self.on_crash)

        devices = _sub(domain, "devices")
        for device in self.devices:
            devices.append(device.format_dom())
        if self.removed_qemu_capabilities:
            capabilities = _sub(domain, f"{{{QEMU_NS}}}capabilities")
            for name in self.removed_qemu_capabilities:
                _sub(capabilities, f"{{{QEMU_NS}}}del", capability=name)
        return domain


@dataclass
class GuestVolumeDisk(ConfigObject):
    """A volume's disk: a ``file`` (qcow2 in the storage pool), a ``block`` device (an LV), or a
    ``network`` disk (``nbd``: ``host``/``port``/``export`` of a storage host). ``discard='unmap'``
    lets a guest's TRIM return space to thin storage."""

    source_type: str
    target_dev: str
    serial: str
    driver_format: str = "raw"
    driver_cache: str | None = "none"
    source_path: str | None = None
    nbd_host: str | None = None
    nbd_port: int | None = None
    nbd_export: str | None = None
    target_bus: str = "virtio"
    read_only: bool = False
    root_name = "disk"

    def format_dom(self) -> ET.Element:
        disk = ET.Element("disk", type=self.source_type, device="disk")
        driver = _sub(disk, "driver", name="qemu", type=self.driver_format, discard="unmap")
        if self.driver_cache:
            driver.set("cache", self.driver_cache)
        if self.source_type == "network":
            source = _sub(disk, "source", protocol="nbd", name=self.nbd_export or "")
            _sub(source, "host", name=self.nbd_host or "", port=str(self.nbd_port))
        elif self.source_type == "block":
            _sub(disk, "source", dev=self.source_path or "")
        else:
            _sub(disk, "source", file=self.source_path or "")
        _sub(disk, "target", dev=self.target_dev, bus=self.target_bus)
        if self.read_only:
            _sub(disk, "readonly")
        _sub(disk, "serial", self.serial)
        return disk
