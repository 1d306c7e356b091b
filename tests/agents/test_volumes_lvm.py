"""The LVM backend on a real thin pool: a volume group built on a loop device for the module.

Needs root, lvm2 and thin-provisioning-tools (scripts/host-setup.sh) and a kernel with
device-mapper's thin-pool target. A kernel without device-mapper cannot activate any LV: the
module is skipped there, with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from agents.specs import BackupSpec, ImageRef, SnapshotSpec, VolumeConnection, VolumeSpec
from agents.storage import StorageError, qemu_img
from agents.storage.volumes import LocalVolumeDriver
from agents.storage.volumes.config import load_volume_config

GiB = 1 << 30
MiB = 1 << 20
LVM_ENV = {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"}


def host_has_device_mapper() -> bool:
    """Whether this kernel has device-mapper loaded (without it, test_volumes_lvm_guest.py runs
    this module in a guest whose kernel has it)."""
    return Path("/dev/mapper/control").exists() and "device-mapper" in Path("/proc/misc").read_text()


def _device_mapper_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("lvcreate") is None or shutil.which("thin_check") is None:
        return "lvm2 or thin-provisioning-tools is not installed (scripts/host-setup.sh)"
    if not host_has_device_mapper():
        return ("this kernel has no device-mapper (no dm-mod, no dm-thin-pool): LVM cannot activate volumes here "
                "(test_volumes_lvm_guest.py runs this module in a guest instead)")
    return None


pytestmark = pytest.mark.skipif(_device_mapper_missing() is not None, reason=str(_device_mapper_missing()))


def run(*args: str) -> str:
    return subprocess.run(list(args), check=True, capture_output=True, text=True, env=LVM_ENV).stdout


@pytest.fixture(scope="module")
def volume_group():
    """A volume group with a thin pool on a 3 GiB sparse loop device, removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="tlvm-", dir="/tmp"))
    image = workdir / "pv.img"
    with open(image, "wb") as f:
        f.truncate(3 * GiB)
    loop = run("losetup", "--find", "--show", str(image)).strip()
    vg = f"cmtest{uuid.uuid4().hex[:8]}"
    try:
        run("pvcreate", "-q", loop)
        run("vgcreate", "-q", vg, loop)
        run("lvcreate", "-q", "--type", "thin-pool", "-L", "2G", "-n", "pool", vg)
        yield vg, workdir
    finally:
        subprocess.run(["vgremove", "-f", "-y", vg], capture_output=True, env=LVM_ENV)
        subprocess.run(["pvremove", "-y", loop], capture_output=True, env=LVM_ENV)
        subprocess.run(["losetup", "-d", loop], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def driver(volume_group):
    vg, workdir = volume_group
    data = workdir / f"d{uuid.uuid4().hex[:6]}"
    config = load_volume_config({"CLOUDMGR_DATA_DIR": str(data), "CLOUDMGR_HOSTNAME": "st1",
                                 "CLOUDMGR_VOLUME_GROUP": vg, "CLOUDMGR_THIN_POOL": "pool",
                                 "CLOUDMGR_NBD_ADDRESS": "127.0.0.1"})
    drv = LocalVolumeDriver(config)
    yield drv
    for lv in run("lvs", "--noheadings", "-o", "lv_name", vg).split():
        if lv != "pool":
            subprocess.run(["lvremove", "-f", "-y", f"{vg}/{lv}"], capture_output=True, env=LVM_ENV)


def spec(volume_id: str, size_gb: int = 1, **fields) -> VolumeSpec:
    return VolumeSpec(id=volume_id, size_gb=size_gb, backend="lvm", **fields)


def device(driver, volume_id: str) -> Path:
    return Path(driver.volume_export(spec(volume_id)).path)


def write(path: Path, pattern: int, offset: int) -> None:
    out = subprocess.run(["qemu-io", "-f", "raw", "-c", f"write -P {pattern:#x} {offset} 1M", str(path)],
                         capture_output=True, text=True)
    assert "wrote" in out.stdout, out.stderr


def holds(path: Path, pattern: int, offset: int) -> bool:
    out = subprocess.run(["qemu-io", "-f", "raw", "-c", f"read -P {pattern:#x} {offset} 1M", str(path)],
                         capture_output=True, text=True)
    return out.returncode == 0 and "Pattern verification failed" not in out.stdout


def test_thin_volumes_snapshots_clones_and_extend(driver, volume_group):
    vg, _ = volume_group
    assert driver.volume_create(spec("v1")) == {"size_gb": 1}
    assert driver.volume_create(spec("v1")) == {"size_gb": 1}  # idempotent
    connection = driver.volume_export(spec("v1"))
    assert connection == VolumeConnection(driver="block", path=f"/dev/{vg}/volume-v1", format="raw")
    write(Path(connection.path), 0x11, 0)

    assert driver.snapshot_create(SnapshotSpec(id="s1", volume_id="v1", backend="lvm")) == {"size_gb": 1}
    write(device(driver, "v1"), 0x22, 0)
    driver.volume_create(spec("c1", 2, source_snapshot_id="s1"))
    assert holds(device(driver, "c1"), 0x11, 0) and driver.backend("lvm").size("c1") == 2 * GiB
    driver.volume_create(spec("c2", source_volume_id="v1"))
    assert holds(device(driver, "c2"), 0x22, 0)
    driver.snapshot_delete(SnapshotSpec(id="s1", volume_id="v1", backend="lvm"))  # clones do not depend on it
    assert holds(device(driver, "c1"), 0x11, 0)

    assert driver.volume_extend(spec("v1", 2)) == {"size_gb": 2}
    with pytest.raises(StorageError, match="cannot shrink"):
        driver.volume_extend(spec("v1", 1))
    for volume in ("v1", "c1", "c2"):
        driver.volume_delete(spec(volume))
        driver.volume_delete(spec(volume))
    assert run("lvs", "--noheadings", "-o", "lv_name", vg).split() == ["pool"]


def test_from_image_backup_and_restore(driver, tmp_path):
    image = tmp_path / "img.qcow2"
    qemu_img.create(image, "qcow2", 64 * MiB)
    write_qcow2 = subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {MiB} 1M", str(image)],
                                 capture_output=True, text=True)
    assert write_qcow2.returncode == 0
    driver.volume_create(spec("v1", image=ImageRef(id="img", source=image.as_uri())))
    assert holds(device(driver, "v1"), 0x5A, MiB)

    summary = driver.backup_create(BackupSpec(id="b1", volume_id="v1", backend="lvm"))
    assert summary["object_count"] == 1
    driver.snapshot_create(SnapshotSpec(id="s1", volume_id="v1", backend="lvm"))
    write(device(driver, "v1"), 0x33, 100 * MiB)
    driver.backup_create(BackupSpec(id="b2", volume_id="v1", backend="lvm", parent_id="b1"))
    driver.volume_delete(spec("v1"))
    driver.backup_restore(BackupSpec(id="b2", volume_id="v1", backend="lvm", restore_volume_id="v1"))
    assert holds(device(driver, "v1"), 0x5A, MiB) and holds(device(driver, "v1"), 0x33, 100 * MiB)
    from_snapshot = driver.backup_create(BackupSpec(id="b3", volume_id="v1", backend="lvm", snapshot_id="s1"))
    assert from_snapshot["object_count"] == 1


def test_nbd_export_of_a_thin_volume(driver):
    driver.volume_create(spec("v1"))
    connection = driver.volume_export(spec("v1"), "compute-2")
    url = f"nbd://{connection.host}:{connection.port}/{connection.export}"
    out = subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x42 0 1M", url], capture_output=True, text=True)
    assert "wrote" in out.stdout
    with pytest.raises(StorageError, match="in use by its NBD export"):
        driver.backend("lvm").delete("v1")
    driver.volume_unexport(spec("v1"))
    assert holds(device(driver, "v1"), 0x42, 0)
