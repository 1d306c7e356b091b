"""Volumes in real guests: the file backend, exports, and hot-plug through the libvirt driver.

Two test guests boot once for the module; the tests type shell commands into their serial
consoles (docs/testvm.md) and read the answers, so every check is what the guest itself sees:
the disk, its size, its serial, a marker written into an ext4 file system on it. The tests run
in order and build on each other's volumes (a scenario), sharing the guests to stay fast.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from agents import names, tasks
from agents.compute.driver import ComputeError, reset_driver
from agents.compute.libvirt_driver import LibvirtDriver
from agents.config import load_config
from agents.specs import BackupSpec, DiskSpec, DomainSpec, ImageRef, SnapshotSpec, VolumeAttachSpec, VolumeSpec
from agents.storage import StorageError, qemu_img
from agents.storage.volumes import LocalVolumeDriver
from agents.storage.volumes.config import load_volume_config
from agents.storage.volumes.qsd import StorageDaemon

pytestmark = pytest.mark.libvirt

REPO = Path(__file__).resolve().parents[2]
URI = os.environ.get("CLOUDMGR_LIBVIRT_URI", "qemu:///system")
BOOT_TIMEOUT = 180  # a TCG guest boots in ~3 s idle, far longer when the machine is busy
COMMAND_TIMEOUT = 90
GiB = 1 << 30
SECTORS_PER_GIB = GiB // 512


class Console:
    """Types shell commands into a test guest's serial console (its pty) and returns their output.

    Each command is wrapped in two marker lines whose text the typed line itself does not contain
    (``B''EGIN`` is echoed as typed, printed as ``BEGIN``), so the shell's echo of the command never
    matches. A thread drains the pty, so the guest never blocks on a full console."""

    def __init__(self, dom: libvirt.virDomain) -> None:
        pty = ET.fromstring(dom.XMLDesc(0)).find("./devices/console/source").get("path")
        self.fd = os.open(pty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.output = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        time.sleep(1.2)  # QEMU reads a pty only once it has seen it connected (polls each second)

    def _drain(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    data = os.read(self.fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                with self._lock:
                    self.output += data

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT, check: bool = True) -> str:
        token = uuid.uuid4().hex[:8]
        with self._lock:
            start = len(self.output)
        os.write(self.fd, f"echo B''EGIN{token}; {command}; echo E''ND{token}=$?\n".encode())
        pattern = re.compile(rf"BEGIN{token}\r?\n(.*?)END{token}=(\d+)", re.S)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = pattern.search(self.output[start:].decode(errors="replace"))
            if found:
                out, status = found.group(1).replace("\r", ""), int(found.group(2))
                if check and status != 0:
                    raise AssertionError(f"{command!r} failed in the guest (exit {status}):\n{out}")
                return out
            time.sleep(0.05)
        with self._lock:
            tail = self.output[-2000:].decode(errors="replace")
        raise AssertionError(f"no answer to {command!r} within {timeout} s; console:\n{tail}")

    def wait_for_disk(self, volume_id: str, timeout: float = 60) -> tuple[str, int]:
        """``(device name, size in sectors)`` of the virtio disk whose serial is the volume's
        (virtio-blk serials hold 20 bytes)."""
        serial = volume_id[:20]
        out = self.run(
            f'D=; for i in $(seq {int(timeout * 10)}); do for d in /sys/block/vd*; do '
            f'[ "$(cat $d/serial 2>/dev/null)" = "{serial}" ] && D=${{d##*/}} && break 2; done; sleep 0.1; done; '
            'echo DISK=$D:$(cat /sys/block/$D/size)', timeout=timeout + COMMAND_TIMEOUT)
        found = re.search(r"DISK=(vd[a-z]+):(\d+)", out)
        assert found, f"the guest sees no disk with serial {serial}:\n{out}"
        return found.group(1), int(found.group(2))

    def wait_until_gone(self, device: str, timeout: float = 60) -> None:
        self.run(f"for i in $(seq {int(timeout * 10)}); do [ -e /sys/block/{device} ] || break; sleep 0.1; done; "
                 f"[ ! -e /sys/block/{device} ]", timeout=timeout + COMMAND_TIMEOUT)

    def wait_for_size(self, device: str, sectors: int, timeout: float = 60) -> None:
        self.run(f"for i in $(seq {int(timeout * 10)}); do [ $(cat /sys/block/{device}/size) = {sectors} ] && break; "
                 f"sleep 0.1; done; [ $(cat /sys/block/{device}/size) = {sectors} ]", timeout=timeout + COMMAND_TIMEOUT)

    def close(self) -> None:
        self._stop.set()
        self._reader.join(2)
        os.close(self.fd)


class Guest:
    def __init__(self, instance_id: str, console: Console, conn: libvirt.virConnect) -> None:
        self.instance_id = instance_id
        self.console = console
        self.conn = conn
        self.root_volume: str | None = None


def domain(guest: Guest) -> libvirt.virDomain:
    return guest.conn.lookupByName(names.domain_name(guest.instance_id))


@pytest.fixture(scope="module")
def host(testvm_image):
    """A data dir (short: QMP sockets live under it), the libvirt driver and the volume driver."""
    data_dir = REPO / "var" / f"tv-{uuid.uuid4().hex[:6]}"
    data_dir.mkdir(mode=0o755, parents=True)
    env = {"CLOUDMGR_DATA_DIR": str(data_dir), "CLOUDMGR_HOSTNAME": "vol-host", "CLOUDMGR_LIBVIRT_URI": URI,
           "CLOUDMGR_NBD_ADDRESS": "127.0.0.1"}
    compute = LibvirtDriver(load_config(env))
    storage = LocalVolumeDriver(load_volume_config(env))
    conn = libvirt.open(URI)
    image = ImageRef(id="testvm", source=testvm_image.as_uri())
    # The second guest boots from a volume made from the image (a copy-on-write overlay in the pool).
    root_volume = VolumeSpec(id=f"root-{uuid.uuid4()}", size_gb=1, image=image)
    storage.volume_create(root_volume)
    roots = [DiskSpec(name="root", size_gb=1, image=image),
             DiskSpec(name="root", size_gb=1, connection=storage.volume_export(root_volume))]
    specs = [DomainSpec(instance_id=str(uuid.uuid4()), display_name=f"volume guest {n}", vcpus=1, memory_mib=128,
                        disks=[root]) for n, root in enumerate(roots, 1)]
    consoles: list[Console] = []
    try:
        for spec in specs:  # both boot at once
            compute.spawn(spec)
        guests = []
        for spec in specs:
            deadline = time.monotonic() + BOOT_TIMEOUT
            while "CLOUDMGR_TESTVM_DISKS" not in compute.console_log(spec.instance_id):
                if time.monotonic() > deadline:
                    pytest.fail(f"guest did not boot within {BOOT_TIMEOUT} s:\n"
                                f"{compute.console_log(spec.instance_id, 30)}")
                time.sleep(0.2)
            console = Console(conn.lookupByName(names.domain_name(spec.instance_id)))
            consoles.append(console)
            console.run("true")
            guests.append(Guest(spec.instance_id, console, conn))
        guests[1].root_volume = root_volume.id
        yield compute, storage, guests
    finally:
        for console in consoles:
            console.close()
        for spec in specs:
            compute.destroy(spec.instance_id)
        for daemon_dir in (data_dir / "run" / "vol" / "nbd").glob("*"):
            StorageDaemon(daemon_dir).stop()
        compute.close()
        conn.close()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def state():
    """What the scenario's tests hand on to the next ones (volume ids, the marker)."""
    return {"marker": f"voldp-{uuid.uuid4().hex[:12]}"}


def attach(compute, storage, guest: Guest, volume_id: str, device: str = "vdb", *, host: str | None = None):
    connection = storage.volume_export(VolumeSpec(id=volume_id, size_gb=1), host)
    spec = VolumeAttachSpec(instance_id=guest.instance_id, volume_id=volume_id, device=device, connection=connection)
    compute.volume_attach(spec)
    return spec, guest.console.wait_for_disk(volume_id)


def detach(compute, guest: Guest, spec: VolumeAttachSpec, device: str) -> None:
    compute.volume_detach(spec)
    guest.console.wait_until_gone(device)


def test_a_server_boots_from_a_volume(host):
    compute, storage, (_, second) = host
    pool_file = storage.backend("file").volume_path(second.root_volume)
    root = ET.fromstring(domain(second).XMLDesc(0)).find("./devices/disk/target[@dev='vda']/..")
    assert root.find("source").get("file") == str(pool_file) and root.findtext("serial") == "root"
    assert qemu_img.info(pool_file, "qcow2")["backing-filename"] == str(pool_file.parent / "base-testvm")
    assert "CLOUDMGR_TESTVM_BOOTED" in compute.console_log(second.instance_id)
    assert not compute.config.instance_paths(second.instance_id).root_disk.exists()  # no disk of its own


def test_a_new_volume_is_a_1gib_virtio_disk_that_keeps_a_marker(host, state):
    compute, storage, (first, _) = host
    volume_id = str(uuid.uuid4())
    assert storage.volume_create(VolumeSpec(id=volume_id, size_gb=1)) == {"size_gb": 1}
    spec, (device, sectors) = attach(compute, storage, first, volume_id)
    assert sectors == SECTORS_PER_GIB  # the guest sees a new 1 GiB disk
    print(first.console.run(f"echo {device}: $(cat /sys/block/{device}/size) sectors, serial "
                            f"$(cat /sys/block/{device}/serial)"))
    compute.volume_attach(spec)  # attached already: nothing changes
    assert domain(first).XMLDesc(0).count(f"<serial>{volume_id}</serial>") == 1
    with pytest.raises(StorageError, match=f"cannot delete volume {volume_id}: it is in use by the guest"):
        storage.volume_delete(VolumeSpec(id=volume_id, size_gb=1))

    console = first.console
    console.run(f"mke2fs -q -t ext4 /dev/{device} >/dev/null 2>&1 || mke2fs /dev/{device} >/dev/null")
    console.run(f"mkdir -p /mnt/v && mount /dev/{device} /mnt/v && echo {state['marker']} > /mnt/v/marker && "
                "umount /mnt/v")
    detach(compute, first, spec, device)
    compute.volume_detach(spec)  # detached already: fine
    assert volume_id not in domain(first).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)  # the definition too
    state["volume"] = volume_id


def read_marker(console: Console, device: str) -> str:
    return console.run(f"mkdir -p /mnt/r && mount /dev/{device} /mnt/r && cat /mnt/r/marker; umount /mnt/r")


def test_the_marker_moves_to_a_second_guest(host, state):
    compute, storage, (_, second) = host
    spec, (device, _) = attach(compute, storage, second, state["volume"])
    assert state["marker"] in read_marker(second.console, device)
    detach(compute, second, spec, device)


def test_extend_while_attached_the_guest_sees_the_new_size(host, state):
    compute, storage, (first, _) = host
    spec, (device, _) = attach(compute, storage, first, state["volume"])
    result = storage.volume_extend(VolumeSpec(id=state["volume"], size_gb=2))
    assert result == {"size_gb": 2}
    first.console.wait_for_size(device, 2 * SECTORS_PER_GIB)
    assert compute.volume_resized(spec) == 2 * GiB  # the compute side agrees; nothing more to do
    spec.size_gb = 2
    assert compute.volume_resized(spec) == 2 * GiB
    first.console.run(f"mkdir -p /mnt/v && mount /dev/{device} /mnt/v")  # stays mounted for the snapshot test
    state["attached"] = (spec, device)


def test_snapshot_of_an_attached_volume_and_a_clone_of_it_have_the_marker(host, state):
    compute, storage, (first, second) = host
    spec, device = state.pop("attached")
    # The guest keeps writing while the snapshot is taken; the snapshot is a point in time.
    first.console.run("sync")
    writer = "i=0; while [ $i -lt 200 ]; do echo $i > /mnt/v/counter; i=$((i+1)); done & true"
    first.console.run(writer)
    snapshot_id = str(uuid.uuid4())
    assert storage.snapshot_create(SnapshotSpec(id=snapshot_id, volume_id=state["volume"])) == {"size_gb": 2}
    first.console.run("wait; umount /mnt/v")
    detach(compute, first, spec, device)

    clone_id = str(uuid.uuid4())
    storage.volume_create(VolumeSpec(id=clone_id, size_gb=2, source_snapshot_id=snapshot_id))
    clone, (clone_device, sectors) = attach(compute, storage, second, clone_id)
    assert sectors == 2 * SECTORS_PER_GIB
    assert state["marker"] in read_marker(second.console, clone_device)
    detach(compute, second, clone, clone_device)

    # A snapshot of the detached volume is copy-on-write; its clone has the marker too.
    offline_id = str(uuid.uuid4())
    storage.snapshot_create(SnapshotSpec(id=offline_id, volume_id=state["volume"]))
    offline_clone = str(uuid.uuid4())
    storage.volume_create(VolumeSpec(id=offline_clone, size_gb=2, source_snapshot_id=offline_id))
    spec2, (device2, _) = attach(compute, storage, second, offline_clone)
    assert state["marker"] in read_marker(second.console, device2)
    detach(compute, second, spec2, device2)
    for volume in (clone_id, offline_clone):
        storage.volume_delete(VolumeSpec(id=volume, size_gb=2))
    for snapshot in (snapshot_id, offline_id):
        storage.snapshot_delete(SnapshotSpec(id=snapshot, volume_id=state["volume"]))
    pool = storage.backend("file").pool
    assert sorted(p.name for p in pool.iterdir() if "root-" not in p.name) == [
        "base-testvm", f"volume-{state['volume']}.qcow2"]  # no snapshot file is left


def test_backup_delete_restore_brings_the_marker_back(host, state):
    compute, storage, (_, second) = host
    volume_id, backup_id = state["volume"], str(uuid.uuid4())
    summary = storage.backup_create(BackupSpec(id=backup_id, volume_id=volume_id))
    assert summary["size"] == 2 * GiB and 0 < summary["object_count"] < summary["chunks"]
    storage.volume_delete(VolumeSpec(id=volume_id, size_gb=2))
    assert not storage.backend("file").exists(volume_id)
    restored = storage.backup_restore(BackupSpec(id=backup_id, volume_id=volume_id, restore_volume_id=volume_id))
    assert restored == {"restore_volume_id": volume_id, "size": 2 * GiB}
    spec, (device, sectors) = attach(compute, storage, second, volume_id)
    assert sectors == 2 * SECTORS_PER_GIB
    assert state["marker"] in read_marker(second.console, device)
    detach(compute, second, spec, device)


def test_an_nbd_export_attaches_as_a_network_disk(host, state):
    """The path for a storage host apart from the compute host: qemu-storage-daemon serves the
    volume over NBD, qemu-img reads it through nbd://, and a guest attaches it as a network disk."""
    compute, storage, (first, _) = host
    volume_id = state["volume"]
    connection = storage.volume_export(VolumeSpec(id=volume_id, size_gb=2), "another-host")
    assert connection.driver == "nbd" and connection.host == "127.0.0.1" and connection.export == volume_id
    url = f"nbd://{connection.host}:{connection.port}/{connection.export}"
    info = subprocess.run(["qemu-img", "info", "-f", "raw", "--output=json", url], capture_output=True, text=True,
                          check=True).stdout
    assert '"virtual-size": 2147483648' in info
    assert storage.volume_export(VolumeSpec(id=volume_id, size_gb=2), "another-host") == connection  # idempotent

    spec, (device, sectors) = attach(compute, storage, first, volume_id, host="another-host")
    assert sectors == 2 * SECTORS_PER_GIB
    assert "<source protocol='nbd'" in domain(first).XMLDesc(0)
    assert state["marker"] in read_marker(first.console, device)
    # The daemon holds the volume: an extend is refused with the reason, nothing changes.
    with pytest.raises(StorageError, match="cannot grow an NBD disk"):
        storage.volume_extend(VolumeSpec(id=volume_id, size_gb=3))
    detach(compute, first, spec, device)

    storage.volume_unexport(VolumeSpec(id=volume_id, size_gb=2))
    gone = subprocess.run(["qemu-img", "info", "-f", "raw", url], capture_output=True, text=True)
    assert gone.returncode != 0
    storage.volume_unexport(VolumeSpec(id=volume_id, size_gb=2))  # not exported: fine


def test_detach_waits_for_the_guest_and_times_out_with_a_clear_error(host, state):
    """A paused guest cannot release the device: the detach times out with the reason and the
    volume stays attached; once the guest runs again, a retry completes."""
    compute, storage, (first, _) = host
    spec, (device, _) = attach(compute, storage, first, state["volume"])
    dom = domain(first)
    dom.suspend()
    try:
        spec.timeout = 2
        reset_driver(compute)
        result = tasks.volume_detach(spec.to_dict())
    finally:
        reset_driver(None)
        dom.resume()
    assert result["ok"] is False and result["volume_id"] == state["volume"]
    assert f"did not release volume {state['volume']} ({device}) within 2 s" in result["error"]
    assert f"<serial>{state['volume']}</serial>" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    spec.timeout = 60
    detach(compute, first, spec, device)
    assert state["volume"] not in dom.XMLDesc(0)


def test_a_detach_from_a_missing_instance_is_a_readable_error(host, state):
    compute, _, _ = host
    spec = VolumeAttachSpec(instance_id=str(uuid.uuid4()), volume_id=state["volume"], device="vdb")
    with pytest.raises(ComputeError, match="has no domain on this host"):
        compute.volume_detach(spec)
