"""The real libvirt driver against the host's libvirtd, booting the real test guest.

Needs libvirtd and virtlogd running (``scripts/host-setup.sh``) and builds the test guest with
``scripts/build-testvm.sh`` (cached under ``var/testvm/``).
"""

from __future__ import annotations

import json
import os
import re
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
from agents.compute.config import QEMU_NS
from agents.compute.designer import SLOW_TCG_CPU_READ
from agents.compute.driver import ComputeError, reset_driver
from agents.compute.libvirt_driver import LibvirtDriver
from agents.config import EPHEMERAL_DISK, SWAP_DISK, load_config
from agents.specs import POWER_NOSTATE, POWER_RUNNING, POWER_SHUTDOWN, DiskSpec, DomainSpec, ImageRef, NicSpec
from agents.storage import image_cache
from agents.worker import build_host_report
from tests.agents.conftest import in_threads

pytestmark = pytest.mark.libvirt

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-testvm.sh"
MARKER = "CLOUDMGR_TESTVM_BOOTED"
BOOT_TIMEOUT = 180  # polled; a TCG boot on a busy 2-core host can take a minute or more
URI = os.environ.get("CLOUDMGR_LIBVIRT_URI", "qemu:///system")
MiB = 1 << 20
GiB = 1 << 30


@pytest.fixture(scope="session")
def testvm_image() -> Path:
    if not BUILD_SCRIPT.exists():
        pytest.skip(f"{BUILD_SCRIPT.relative_to(REPO)} does not exist yet: cannot build the test guest")
    out = REPO / "var" / "testvm" / "testvm.qcow2"
    proc = subprocess.run([str(BUILD_SCRIPT), str(out)], check=False, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"build-testvm.sh failed:\n{proc.stdout}\n{proc.stderr}"
    return out


@pytest.fixture(scope="session")
def libvirt_conn():
    try:
        conn = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        pytest.fail(f"cannot connect to {URI} ({exc}): start the daemons with scripts/host-setup.sh")
    yield conn
    conn.close()


@pytest.fixture
def data_dir() -> Path:
    """A data dir the libvirt-qemu user can traverse, removed afterwards."""
    parent = REPO / "var"
    parent.mkdir(exist_ok=True)
    path = parent / f"test-agents-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    check = subprocess.run(
        ["runuser", "-u", "libvirt-qemu", "--", "test", "-x", str(path)], check=False, capture_output=True
    )
    assert check.returncode == 0, f"user libvirt-qemu cannot reach {path}: run scripts/host-setup.sh"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def driver(data_dir, libvirt_conn):
    config = load_config(
        {"CLOUDMGR_DATA_DIR": str(data_dir), "CLOUDMGR_HOSTNAME": "test-host", "CLOUDMGR_LIBVIRT_URI": URI}
    )
    drv = LibvirtDriver(config)
    drv.spawned = []  # instance ids to clean up whatever happens
    yield drv
    for instance_id in drv.spawned:
        try:
            dom = libvirt_conn.lookupByName(names.domain_name(instance_id))
        except libvirt.libvirtError:
            continue
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    drv.close()


def make_spec(driver, image: Path, **overrides) -> DomainSpec:
    fields = {
        "instance_id": str(uuid.uuid4()),
        "display_name": "agents test guest",
        "vcpus": 1,
        "memory_mib": 128,
        "disks": [DiskSpec(name="root", size_gb=1, image=ImageRef(id="testvm", source=image.as_uri()))],
    }
    fields.update(overrides)
    spec = DomainSpec(**fields)
    driver.spawned.append(spec.instance_id)
    return spec


def wait_for_marker(driver, instance_id: str, timeout: float = BOOT_TIMEOUT) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if MARKER in driver.console_log(instance_id):
            return time.monotonic() - start
        time.sleep(0.2)
    pytest.fail(f"{MARKER} not seen within {timeout} s; console:\n{driver.console_log(instance_id, 40)}")


def domain_exists(conn, instance_id: str) -> bool:
    try:
        conn.lookupByName(names.domain_name(instance_id))
        return True
    except libvirt.libvirtError as exc:
        assert exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
        return False


def test_spawn_boot_list_destroy(driver, testvm_image, libvirt_conn, record_property):
    spec = make_spec(driver, testvm_image)
    paths = driver.config.instance_paths(spec.instance_id)

    start = time.monotonic()
    out = driver.spawn(spec)
    spawn_seconds = time.monotonic() - start
    assert out["power_state"] == POWER_RUNNING
    # Where its time went: every stage ran once, and together they are the whole spawn.
    assert {"lock", "prepare", "image", "disk", "define", "turn", "start"} <= set(out["stages"])
    assert all(seconds >= 0 for seconds in out["stages"].values())
    assert sum(out["stages"].values()) <= spawn_seconds + 0.01
    boot_seconds = wait_for_marker(driver, spec.instance_id)
    total = spawn_seconds + boot_seconds
    record_property("spawn_seconds", round(spawn_seconds, 2))
    record_property("spawn_to_marker_seconds", round(total, 2))
    print(f"\nspawn() took {spawn_seconds:.2f} s; {MARKER} after {total:.2f} s from spawn start")

    # The overlay is sized to the root disk and backed by the cached image, with explicit formats.
    info = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", "-f", "qcow2", str(paths.root_disk)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '"virtual-size": 1073741824' in info
    assert str(driver.config.cached_image_path("testvm")) in info
    assert '"backing-filename-format": "qcow2"' in info

    assert driver.list_domains()[spec.instance_id] == POWER_RUNNING
    assert driver.power_state(spec.instance_id) == POWER_RUNNING
    assert driver.console_log(spec.instance_id, 1).strip() != ""
    assert driver.console_log(spec.instance_id, 0) == ""

    # Heartbeat payload from the real driver.
    report = build_host_report(driver=driver, config=driver.config)
    assert report.queue == names.host_queue("test-host") and report.virt_type == "qemu"
    assert report.vcpus >= 1 and report.memory_mib >= 128 and report.disk_gb >= 1
    assert report.domains[spec.instance_id] == POWER_RUNNING
    assert report.to_dict()["version"] == 1
    # os-hypervisors' view of the host, from libvirt: QEMU's version (7.2.x is 7002xxx) and CPU.
    assert report.hypervisor_version == libvirt_conn.getVersion() >= 7_000_000
    cpu = report.cpu_info
    assert set(cpu) == {"arch", "model", "vendor", "topology", "features"}
    assert cpu["arch"] == "x86_64" and cpu["model"] and cpu["vendor"] in ("AMD", "Intel")
    assert set(cpu["topology"]) == {"cells", "sockets", "cores", "threads"} and cpu["topology"]["cores"] >= 1
    assert cpu["features"] and cpu["features"] == sorted(cpu["features"])

    # Spawning again is a no-op (the disk is not recreated).
    inode = paths.root_disk.stat().st_ino
    assert driver.spawn(spec)["power_state"] == POWER_RUNNING
    assert paths.root_disk.stat().st_ino == inode

    driver.destroy(spec.instance_id)
    assert not domain_exists(libvirt_conn, spec.instance_id)
    assert not paths.instance_dir.exists()
    assert spec.instance_id not in driver.list_domains()
    assert driver.power_state(spec.instance_id) == POWER_NOSTATE
    assert driver.console_log(spec.instance_id) == ""
    driver.destroy(spec.instance_id)  # destroying a missing instance succeeds
    assert driver.config.cached_image_path("testvm").exists()  # the image cache stays


def test_spawn_restarts_a_stopped_domain(driver, testvm_image, libvirt_conn):
    spec = make_spec(driver, testvm_image)
    driver.spawn(spec)
    libvirt_conn.lookupByName(names.domain_name(spec.instance_id)).destroy()
    assert driver.power_state(spec.instance_id) == POWER_SHUTDOWN
    assert driver.list_domains()[spec.instance_id] == POWER_SHUTDOWN
    assert driver.spawn(spec)["power_state"] == POWER_RUNNING
    wait_for_marker(driver, spec.instance_id)
    driver.destroy(spec.instance_id)
    assert not domain_exists(libvirt_conn, spec.instance_id)


def test_trigger_crash_dump_sends_the_guest_kernel_an_nmi(driver, testvm_image, libvirt_conn):
    """Nova's trigger_crash_dump: an NMI the guest's kernel handles (this one logs it and goes on)."""
    spec = make_spec(driver, testvm_image)
    driver.spawn(spec)
    wait_for_marker(driver, spec.instance_id)
    assert "NMI received" not in driver.console_log(spec.instance_id)
    assert driver.trigger_crash_dump(spec.instance_id) == POWER_RUNNING
    deadline = time.monotonic() + 30
    while "NMI received" not in driver.console_log(spec.instance_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "NMI received" in driver.console_log(spec.instance_id), driver.console_log(spec.instance_id, 20)
    assert driver.power_state(spec.instance_id) == POWER_RUNNING

    libvirt_conn.lookupByName(names.domain_name(spec.instance_id)).destroy()
    with pytest.raises(ComputeError, match="not running"):
        driver.trigger_crash_dump(spec.instance_id)
    driver.destroy(spec.instance_id)


def test_started_domains_yield_cpu_weight_to_starting_ones(driver, testvm_image, libvirt_conn):
    """A running guest keeps a quarter of the CPU weight a domain starts with, so starting another
    domain (hundreds of QMP round trips in libvirt) is not starved by running guests' vCPUs."""
    spec = make_spec(driver, testvm_image)
    driver.spawn(spec)
    dom = libvirt_conn.lookupByName(names.domain_name(spec.instance_id))
    running = dom.schedulerParameters()["cpu_shares"]
    dom.destroy()
    dom.create()  # by hand: the weight a domain starts with
    starting = dom.schedulerParameters()["cpu_shares"]
    assert running == starting // 4 < starting
    dom.destroy()
    assert driver.start(spec.instance_id) == POWER_RUNNING  # every start lowers it, not only spawn
    assert dom.schedulerParameters()["cpu_shares"] == running
    driver.destroy(spec.instance_id)

def test_guests_have_a_reaper_that_reaps_at_once(driver, testvm_image, libvirt_conn):
    """libvirt daemonizes each QEMU, and destroying a domain waits until its process is reaped.
    Its reaper is tini (scripts/host-setup.sh runs libvirtd under ``tini -s``) or a real init as
    PID 1; this machine's PID 1 reaps orphans about once a second, which made every destroy
    take 1.2-1.6 s more."""
    spec = make_spec(driver, testvm_image)
    driver.spawn(spec)
    name = names.domain_name(spec.instance_id)
    pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text())
    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    parent_name = Path(f"/proc/{parent}/comm").read_text().strip()
    assert parent_name == "tini" or (parent == 1 and parent_name in ("systemd", "init")), (
        f"QEMU's parent is {parent_name} (pid {parent}): start libvirtd with scripts/host-setup.sh"
    )
    driver.destroy(spec.instance_id)
    assert not Path(f"/proc/{pid}").exists()  # reaped, not left a zombie



def test_concurrent_spawns_of_one_instance(driver, testvm_image, libvirt_conn):
    spec = make_spec(driver, testvm_image)
    results, errors = in_threads(lambda: driver.spawn(spec), 3)
    assert not errors
    assert [r["power_state"] for r in results] == [POWER_RUNNING] * 3
    driver.destroy(spec.instance_id)
    assert not domain_exists(libvirt_conn, spec.instance_id)


def test_failed_spawn_task_reports_and_cleans_up(driver, testvm_image, libvirt_conn):
    """A NIC on a bridge that does not exist (and is no network's, which the agent would make):
    its tap cannot be plugged; the task returns ok False with the reason, and leaves neither a
    domain nor files behind."""
    spec = make_spec(
        driver,
        testvm_image,
        nics=[NicSpec(port_id=str(uuid.uuid4()), mac_address="52:54:00:aa:bb:cc", bridge="br-missing00")],
    )
    with pytest.raises(ComputeError, match="cannot plug the network interfaces: bridge br-missing00 does not exist"):
        driver.spawn(spec)

    reset_driver(driver)
    try:
        result = tasks.spawn(spec.to_dict())
    finally:
        reset_driver(None)
    assert result["ok"] is False and result["instance_id"] == spec.instance_id
    assert "br-missing00" in result["error"]
    assert result["power_state"] == POWER_NOSTATE
    assert not domain_exists(libvirt_conn, spec.instance_id)
    assert not driver.config.instance_paths(spec.instance_id).instance_dir.exists()


def test_missing_image_is_a_storage_error_result(driver, libvirt_conn):
    spec = make_spec(driver, Path("/nonexistent/image.qcow2"))
    reset_driver(driver)
    try:
        result = tasks.spawn(spec.to_dict())
    finally:
        reset_driver(None)
    assert result["ok"] is False and "does not exist" in result["error"]
    assert not driver.config.instance_paths(spec.instance_id).instance_dir.exists()


def test_reconnects_after_a_dead_connection(driver):
    class DeadConnection:
        def isAlive(self):
            raise libvirt.libvirtError("connection closed")

        def close(self):
            pass

    driver.list_domains()
    driver._local.conn = DeadConnection()
    driver._conns.add(driver._local.conn)
    assert isinstance(driver.list_domains(), dict)
    assert driver._local.conn.isAlive()


def test_each_thread_has_its_own_connection(driver):
    """libvirtd serves at most 5 calls of one connection at once: threads must not share one,
    or a few slow domain starts stall every other call."""
    main = driver._connection()
    assert driver._connection() is main  # reused by its thread
    others = []
    thread = threading.Thread(target=lambda: others.append(driver._connection()))
    thread.start()
    thread.join()
    assert others[0] is not main and others[0].isAlive()
    driver.close()  # closes every thread's connection
    assert not driver._conns
    fresh = driver._connection()
    assert fresh is not main and fresh.isAlive()


def test_unreachable_hypervisor_is_transient(tmp_path):
    uri = "qemu+unix:///system?socket=/nonexistent"
    config = load_config({"CLOUDMGR_DATA_DIR": str(tmp_path), "CLOUDMGR_LIBVIRT_URI": uri})
    with pytest.raises(ComputeError, match="cannot connect to the hypervisor") as excinfo:
        LibvirtDriver(config).list_domains()
    assert excinfo.value.transient


# --- ephemeral and swap disks -------------------------------------------------------------------


def flavor_disks(ephemeral_gb: int = 1, swap_mib: int = 32) -> list[DiskSpec]:
    """A flavor's ephemeral and swap disks, as the control plane sends them after the root disk."""
    return [DiskSpec(name=EPHEMERAL_DISK, size_gb=ephemeral_gb, fs="ext4"),
            DiskSpec(name=SWAP_DISK, size_gb=0, size_mib=swap_mib, fs="swap")]


def disk_info(path: Path) -> tuple[int, str, str]:
    """A qcow2 disk's virtual size, backing file and backing format."""
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", "-f", "qcow2", str(path)],
                                     capture_output=True, text=True, check=True).stdout)
    return info["virtual-size"], info.get("backing-filename"), info.get("backing-filename-format")


def blkid(path: Path, tag: str) -> str:
    return subprocess.run(["blkid", "-p", "-o", "value", "-s", tag, str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def disk_driver(tmp_path):
    """A driver for its disk handling alone, which needs no libvirt."""
    return LibvirtDriver(load_config({"CLOUDMGR_DATA_DIR": str(tmp_path)}))


def new_instance_paths(driver, instance_id: str):
    paths = driver.config.instance_paths(instance_id)
    paths.instance_dir.mkdir(parents=True)
    return paths


def test_ephemeral_and_swap_disks_are_overlays_on_formatted_bases_shared_by_instances(disk_driver):
    cache = disk_driver.config.image_cache_dir
    ephemeral_base, swap_base = cache / "ephemeral_1024m_ext4", cache / "swap_32m"
    for instance_id in ("vm-1", "vm-2"):
        paths = new_instance_paths(disk_driver, instance_id)
        for disk in flavor_disks(1, 32):
            disk_driver._ensure_disk(disk, paths.disk_path(disk.name))
        assert paths.disk_path(EPHEMERAL_DISK).name == "disk.ephemeral0.qcow2"
        assert disk_info(paths.disk_path(EPHEMERAL_DISK)) == (GiB, str(ephemeral_base), "raw")
        assert disk_info(paths.disk_path(SWAP_DISK)) == (32 * MiB, str(swap_base), "raw")
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == [ephemeral_base.name,
                                                                                   swap_base.name]
    assert (blkid(ephemeral_base, "TYPE"), blkid(ephemeral_base, "LABEL")) == ("ext4", "ephemeral0")
    assert blkid(swap_base, "TYPE") == "swap"
    # The guest reads the formatted base through its overlay, which has nothing of its own.
    subprocess.run(["qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw", str(paths.disk_path(EPHEMERAL_DISK)),
                    str(ephemeral_base)], check=True, capture_output=True)
    # Both instances' disks are based on them: pruning keeps them.
    in_use = image_cache.images_in_use(disk_driver.config.instances_dir)
    assert image_cache.prune(cache, max_age=0, in_use=in_use).removed == []


def test_a_formatting_failure_is_a_compute_error_with_the_tools_stderr(disk_driver, monkeypatch):
    monkeypatch.setitem(image_cache.FORMATTERS, "ext4", [*image_cache.FORMATTERS["ext4"], "-b", "999"])
    paths = new_instance_paths(disk_driver, "vm-1")
    with pytest.raises(ComputeError, match="cannot create disk ephemeral0: mkfs.ext4 failed: .*invalid block size"):
        disk_driver._ensure_disk(flavor_disks()[0], paths.disk_path(EPHEMERAL_DISK))
    assert list(paths.instance_dir.iterdir()) == []
    assert [p.name for p in disk_driver.config.image_cache_dir.iterdir()] == [".ephemeral_1024m_ext4.lock"]


def test_resize_grows_ephemeral_remakes_swap_and_makes_missing_disks(disk_driver):
    paths = new_instance_paths(disk_driver, "vm-1")
    cache = disk_driver.config.image_cache_dir
    ephemeral_path, swap_path = paths.disk_path(EPHEMERAL_DISK), paths.disk_path(SWAP_DISK)

    def resize(ephemeral_gb: int, swap_mib: int) -> None:
        for disk in flavor_disks(ephemeral_gb, swap_mib):
            disk_driver._resize_disk(disk, paths.disk_path(disk.name))

    resize(1, 32)  # from a flavor without them
    assert disk_info(ephemeral_path) == (GiB, str(cache / "ephemeral_1024m_ext4"), "raw")
    assert disk_info(swap_path) == (32 * MiB, str(cache / "swap_32m"), "raw")
    ephemeral_inode, swap_made = ephemeral_path.stat().st_ino, swap_path.stat().st_mtime_ns

    resize(2, 32)
    # Grown in place, on the same base: the guest grows its filesystem, as with the root disk.
    assert disk_info(ephemeral_path) == (2 * GiB, str(cache / "ephemeral_1024m_ext4"), "raw")
    assert ephemeral_path.stat().st_ino == ephemeral_inode
    assert swap_path.stat().st_mtime_ns == swap_made  # same size: left alone

    resize(1, 64)
    assert disk_info(ephemeral_path)[0] == 2 * GiB  # never shrunk
    assert disk_info(swap_path) == (64 * MiB, str(cache / "swap_64m"), "raw")  # made afresh
    resize(1, 16)  # a smaller swap too (a revert)
    assert disk_info(swap_path) == (16 * MiB, str(cache / "swap_16m"), "raw")

    disk_driver._resize_disk(DiskSpec(name="data", size_gb=1), paths.disk_path("data"))
    assert not paths.disk_path("data").exists()  # only formatted disks are made: a lost disk is not replaced


def test_invalid_local_disks_are_refused_before_anything_is_made(driver):
    spec = make_spec(driver, Path("/nonexistent/image.qcow2"))
    spec.disks.append(DiskSpec(name=SWAP_DISK, size_gb=0, size_mib=0, fs="swap"))
    with pytest.raises(ComputeError, match="invalid instance spec: disk swap .* needs a positive size"):
        driver.spawn(spec)
    spec.disks[-1] = DiskSpec(name=EPHEMERAL_DISK, size_gb=1, fs="vfat")
    with pytest.raises(ComputeError, match="invalid instance spec: disk ephemeral0: filesystem 'vfat'"):
        driver.resize(spec)
    assert not driver.config.instance_paths(spec.instance_id).instance_dir.exists()


def guest_disks(driver, instance_id: str) -> dict[str, int]:
    """The guest's virtio disks and their sizes in 512-byte sectors, as its boot reports them."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        found = re.search(r"CLOUDMGR_TESTVM_DISKS=(.*)", driver.console_log(instance_id))
        if found:
            return {name: int(sectors) for name, sectors in (d.split(":") for d in found.group(1).split())}
        time.sleep(0.2)
    pytest.fail(f"the guest did not list its disks; console:\n{driver.console_log(instance_id, 40)}")


def domain_disks(conn, instance_id: str) -> dict[str, str]:
    xml = ET.fromstring(conn.lookupByName(names.domain_name(instance_id)).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    return {d.find("target").get("dev"): Path(d.find("source").get("file")).name for d in xml.findall("devices/disk")}


def test_spawn_and_resize_an_instance_with_ephemeral_and_swap_disks(driver, testvm_image, libvirt_conn):
    spec = make_spec(driver, testvm_image)
    root = spec.disks[0]
    paths = driver.config.instance_paths(spec.instance_id)
    spec.disks = [root, *flavor_disks(1, 32)]
    assert driver.spawn(spec)["power_state"] == POWER_RUNNING
    assert guest_disks(driver, spec.instance_id) == {"vda": GiB // 512, "vdb": GiB // 512, "vdc": 32 * MiB // 512}
    assert domain_disks(libvirt_conn, spec.instance_id) == {
        "vda": "disk.qcow2", "vdb": "disk.ephemeral0.qcow2", "vdc": "disk.swap.qcow2"}

    spec.disks = [root, *flavor_disks(2, 64)]
    assert driver.resize(spec, timeout=30) == POWER_RUNNING
    assert guest_disks(driver, spec.instance_id) == {"vda": GiB // 512, "vdb": 2 * GiB // 512,
                                                     "vdc": 64 * MiB // 512}
    assert disk_info(paths.disk_path(SWAP_DISK))[1] == str(driver.config.image_cache_dir / "swap_64m")

    # The revert to a flavor without them: those two disks go, no other disk does.
    paths.disk_path("rescue").touch()
    spec.disks = [root]
    assert driver.resize(spec, timeout=30, start=False) == POWER_SHUTDOWN
    assert domain_disks(libvirt_conn, spec.instance_id) == {"vda": "disk.qcow2"}
    assert sorted(p.name for p in paths.instance_dir.iterdir()) == ["console.log", "disk.qcow2", "disk.rescue.qcow2"]
    driver.destroy(spec.instance_id)


def test_tcg_domains_skip_libvirts_slow_cpu_read_and_run_the_same_cpu(driver, testvm_image, libvirt_conn):
    """The designer removes libvirt's per-property CPU read for TCG guests: libvirt keeps that in
    the domain, and starts the same CPU as it does with the full read."""
    spec = make_spec(driver, testvm_image)
    driver.spawn(spec)
    dom = libvirt_conn.lookupByName(names.domain_name(spec.instance_id))
    live = ET.fromstring(dom.XMLDesc(0))
    removed = live.findall(f"{{{QEMU_NS}}}capabilities/{{{QEMU_NS}}}del")
    assert [d.get("capability") for d in removed] == [SLOW_TCG_CPU_READ]

    # The same domain with the full read, started paused beside it (without its files).
    full = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    full.remove(full.find(f"{{{QEMU_NS}}}capabilities"))
    devices = full.find("devices")
    for device in devices.findall("disk") + devices.findall("serial") + devices.findall("console"):
        devices.remove(device)
    full.find("name").text = f"cloudmgr-test-cpu-{uuid.uuid4().hex[:8]}"
    full.find("uuid").text = str(uuid.uuid4())
    other = libvirt_conn.createXML(ET.tostring(full, encoding="unicode"), libvirt.VIR_DOMAIN_START_PAUSED)
    try:
        full_read_cpu = ET.fromstring(other.XMLDesc(0)).find("cpu")
    finally:
        other.destroy()
    assert full_read_cpu.find("model").text == "qemu64"
    assert ET.tostring(live.find("cpu")) == ET.tostring(full_read_cpu)
    driver.destroy(spec.instance_id)


@pytest.mark.parametrize("golden", sorted((Path(__file__).parent / "golden").glob("*.xml")), ids=lambda p: p.name)
def test_golden_xml_is_valid_for_libvirt(libvirt_conn, golden):
    """libvirt validates the golden domains against its schema (without starting them)."""
    dom = libvirt_conn.defineXMLFlags(golden.read_text(), libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        assert dom.name().startswith("cloudmgr-")
    finally:
        dom.undefine()
