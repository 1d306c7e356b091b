"""Golden-XML tests of the domain designer: any change to the generated domain shows up here."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agents.compute.config import QEMU_NS
from agents.compute.designer import SLOW_TCG_CPU_READ, design_guest
from agents.compute.driver import ComputeError
from agents.config import EPHEMERAL_DISK, SWAP_DISK, InstancePaths
from agents.specs import DiskSpec, DomainSpec, ImageRef, NicSpec, VolumeConnection

GOLDEN = Path(__file__).parent / "golden"
INSTANCE_ID = "3f2c1d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
PATHS = InstancePaths(Path("/var/lib/cloudmgr/instances") / INSTANCE_ID)


def canonical(xml: str) -> str:
    return ET.canonicalize(xml_data=xml, strip_text=True)


def make_spec(**overrides) -> DomainSpec:
    fields = {
        "instance_id": INSTANCE_ID,
        "display_name": "web-1",
        "vcpus": 2,
        "memory_mib": 256,
        "disks": [
            DiskSpec(
                name="root",
                size_gb=2,
                image=ImageRef(id="debian-12", source="file:///srv/images/debian-12.qcow2"),
            )
        ],
        "nics": [
            NicSpec(
                port_id="7d9e8f10-1111-4222-8333-944455566677",
                mac_address="52:54:00:12:34:56",
                bridge="brq0a1b2c3d4e5",
                mtu=1450,
            )
        ],
    }
    fields.update(overrides)
    return DomainSpec(**fields)


def assert_golden(xml: str, name: str) -> None:
    expected = (GOLDEN / name).read_text()
    assert canonical(xml) == canonical(expected), f"domain XML differs from {name}:\n{xml}"


def test_domain_with_one_disk_and_one_nic():
    assert_golden(design_guest(make_spec(), PATHS).to_xml(), "domain_disk_nic.xml")


def test_domain_without_nic():
    assert_golden(design_guest(make_spec(nics=[], vcpus=1, memory_mib=128), PATHS).to_xml(), "domain_no_nic.xml")


def flavor_disks(ephemeral_gb: int = 5, swap_mib: int = 512) -> list[DiskSpec]:
    """The flavor's ephemeral and swap disks, as the control plane sends them after the root disk."""
    return [DiskSpec(name=EPHEMERAL_DISK, size_gb=ephemeral_gb, fs="ext4"),
            DiskSpec(name=SWAP_DISK, size_gb=0, size_mib=swap_mib, fs="swap")]


def test_domain_with_ephemeral_and_swap_disks():
    spec = make_spec(disks=[*make_spec().disks, *flavor_disks()])
    assert_golden(design_guest(spec, PATHS).to_xml(), "domain_ephemeral_swap.xml")


def test_ephemeral_and_swap_disks_follow_the_root_disk_and_volumes_keep_their_devices():
    def volume(volume_id: str, device: str | None) -> DiskSpec:
        return DiskSpec(name=volume_id, size_gb=1, device=device,
                        connection=VolumeConnection(driver="file", path=f"/srv/volumes/{volume_id}", format="qcow2"))

    # A volume attached (as vdb) before a resize gave the instance its ephemeral and swap disks.
    spec = make_spec(disks=[*make_spec().disks, *flavor_disks(), volume("vol-a", "vdb"), volume("vol-b", None)])
    root = ET.fromstring(design_guest(spec, PATHS, disk_cache_mode="writethrough").to_xml())
    disks = {d.findtext("serial"): d for d in root.findall("devices/disk")}
    assert {serial: d.find("target").get("dev") for serial, d in disks.items()} == {
        "root": "vda", "vol-a": "vdb", EPHEMERAL_DISK: "vdc", SWAP_DISK: "vdd", "vol-b": "vde"}
    for serial, path in ((EPHEMERAL_DISK, "disk.ephemeral0.qcow2"), (SWAP_DISK, "disk.swap.qcow2")):
        assert disks[serial].find("source").get("file") == str(PATHS.instance_dir / path)
        assert disks[serial].find("driver").attrib == {"name": "qemu", "type": "qcow2", "cache": "writethrough"}
        assert disks[serial].find("target").get("bus") == "virtio"

    alone = design_guest(make_spec(disks=[*make_spec().disks, *flavor_disks()]), PATHS).to_xml()
    assert [d.find("target").get("dev") for d in ET.fromstring(alone).findall("devices/disk")] == ["vda", "vdb", "vdc"]


def test_disk_spec_without_the_new_keys_parses_as_before():
    data = make_spec(disks=flavor_disks()).to_dict()
    assert DomainSpec.from_dict(data).disks == flavor_disks()
    for disk in data["disks"]:
        del disk["fs"], disk["size_mib"]
    old = DomainSpec.from_dict(data).disks
    assert [(d.fs, d.size_mib) for d in old] == [(None, None), (None, None)]
    assert [d.size_bytes for d in old] == [5 << 30, 0]
    assert flavor_disks()[1].size_bytes == 512 << 20  # size_mib, not size_gb


def test_kvm_domain_uses_host_model_cpu():
    root = ET.fromstring(design_guest(make_spec(virt_type="kvm"), PATHS).to_xml())
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-model"
    qemu = ET.fromstring(design_guest(make_spec(), PATHS).to_xml())
    assert qemu.get("type") == "qemu" and qemu.find("cpu") is None


def removed_capabilities(root: ET.Element) -> list[str]:
    return [d.get("capability") for d in root.iterfind(f"{{{QEMU_NS}}}capabilities/{{{QEMU_NS}}}del")]


def test_only_x86_tcg_domains_skip_libvirts_per_property_cpu_read():
    def removed(virt_type: str, arch: str) -> list[str]:
        guest = design_guest(make_spec(virt_type=virt_type), PATHS, arch=arch)
        return removed_capabilities(ET.fromstring(guest.to_xml()))

    assert removed("qemu", "x86_64") == [SLOW_TCG_CPU_READ] == ["cpu-unavailable-features"]
    assert removed("qemu", "i686") == [SLOW_TCG_CPU_READ]
    assert removed("kvm", "x86_64") == []  # a KVM guest's CPU is the host's: libvirt reads all of it
    assert removed("qemu", "aarch64") == []  # the per-property read is libvirt's only one there


def test_guest_agent_channel_only_when_asked():
    root = ET.fromstring(design_guest(make_spec(guest_agent=True), PATHS).to_xml())
    (channel,) = root.findall("devices/channel")
    assert channel.get("type") == "unix" and channel.find("source") is None  # libvirt picks the socket
    assert channel.find("target").attrib == {"type": "virtio", "name": "org.qemu.guest_agent.0"}
    assert ET.fromstring(design_guest(make_spec(), PATHS).to_xml()).find("devices/channel") is None


def test_spec_round_trips_through_json_dict():
    spec = make_spec()
    assert design_guest(DomainSpec.from_dict(spec.to_dict()), PATHS).to_xml() == design_guest(spec, PATHS).to_xml()


def test_display_name_is_escaped_and_single_line():
    xml = design_guest(make_spec(display_name='a <b> & "c"\nsecond\x07 line'), PATHS).to_xml()
    root = ET.fromstring(xml)  # well-formed despite the markup characters
    assert root.findtext("title") == 'a <b> & "c" second line'
    ns = {"c": "urn:cloudmgr:instance:1"}
    assert root.findtext("metadata/c:instance/c:display-name", namespaces=ns) == 'a <b> & "c" second line'


def test_root_disk_first_and_extra_disks_get_next_target():
    spec = make_spec(disks=[DiskSpec(name="data", size_gb=1), *make_spec().disks])
    disks = ET.fromstring(design_guest(spec, PATHS).to_xml()).findall("devices/disk")
    assert [(d.find("target").get("dev"), d.find("source").get("file")) for d in disks] == [
        ("vda", str(PATHS.root_disk)),
        ("vdb", str(PATHS.instance_dir / "disk.data.qcow2")),
    ]


def test_cache_mode_is_passed_through():
    root = ET.fromstring(design_guest(make_spec(), PATHS, disk_cache_mode="writethrough").to_xml())
    assert root.find("devices/disk/driver").get("cache") == "writethrough"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"virt_type": "xen"}, "virt type"),
        ({"vcpus": 0}, "vCPU"),
        ({"memory_mib": 1}, "memory"),
        ({"disks": []}, "root disk"),
        ({"nics": [NicSpec(port_id="p", mac_address="zz:00", bridge="br0")]}, "MAC"),
        ({"disks": [DiskSpec(name="root", size_gb=1, bus="floppy")]}, "bus"),
        ({"disks": [DiskSpec(name="root", size_gb=1), DiskSpec(name="../x", size_gb=1)]}, "disk name"),
        ({"disks": [DiskSpec(name="root", size_gb=1), DiskSpec(name="ephemeral0", size_gb=1, fs="xfs")]},
         "^invalid instance spec: disk ephemeral0: filesystem 'xfs' is not one of ext4, swap$"),
        ({"disks": [DiskSpec(name="root", size_gb=1),
                    DiskSpec(name="ephemeral0", size_gb=1, fs="ext4", image=ImageRef(id="i", source="file:///i"))]},
         "neither an image nor a volume"),
        ({"disks": [DiskSpec(name="root", size_gb=1),
                    DiskSpec(name="swap", size_gb=0, size_mib=8, fs="swap",
                             connection=VolumeConnection(driver="file", path="/v"))]},
         "neither an image nor a volume"),
        ({"disks": [DiskSpec(name="root", size_gb=1), DiskSpec(name="swap", size_gb=0, fs="swap")]}, "positive size"),
        ({"disks": [DiskSpec(name="root", size_gb=1), DiskSpec(name="swap", size_gb=1, size_mib=0, fs="swap")]},
         "positive size"),
        ({"disks": [DiskSpec(name="root", size_gb=1), DiskSpec(name="ephemeral0", size_gb=-1, fs="ext4")]},
         "positive size"),
    ],
)
def test_invalid_specs_are_refused_with_a_readable_error(overrides, message):
    with pytest.raises(ComputeError, match=message):
        design_guest(make_spec(**overrides), PATHS)


def test_rescue_boots_the_rescue_disk_and_attaches_the_root_disk_second():
    spec = DomainSpec(instance_id="0f0e0d0c-0000-4000-8000-000000000001", display_name="r", vcpus=1,
                      memory_mib=128, disks=[DiskSpec(name="rescue", size_gb=1), DiskSpec(name="root", size_gb=1)],
                      rescue=True)
    import re

    xml = design_guest(spec, InstancePaths(Path("/i/x"))).to_xml()
    assert re.findall(r'<source file="([^"]+)"|<target dev="([^"]+)"', xml) == [
        ("/i/x/disk.rescue.qcow2", ""), ("", "vda"), ("/i/x/disk.qcow2", ""), ("", "vdb")]
