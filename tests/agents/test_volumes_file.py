"""The file backend against the real qemu-img (no guest needed): layout, copy-on-write clones,
snapshots and their deletion, idempotency, refusals, and no stray file after a failure.

Contents are checked with ``qemu-io`` patterns: what a guest would read at an offset.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from agents.specs import ImageRef, SnapshotSpec, VolumeSpec
from agents.storage import StorageError, qemu_img
from agents.storage import tasks as storage_tasks
from agents.storage.volumes import LocalVolumeDriver, get_volume_driver, reset_volume_driver
from agents.storage.volumes.config import load_volume_config
from agents.storage.volumes.file import FileBackend

GiB = 1 << 30
MiB = 1 << 20


@pytest.fixture
def data_dir():
    path = Path(tempfile.mkdtemp(prefix="tvol-", dir="/tmp"))  # short: QMP socket paths live under it
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def config(data_dir):
    return load_volume_config({"CLOUDMGR_DATA_DIR": str(data_dir), "CLOUDMGR_HOSTNAME": "st1",
                               "CLOUDMGR_NBD_ADDRESS": "127.0.0.1"})


@pytest.fixture
def backend(config) -> FileBackend:
    return FileBackend(config)


@pytest.fixture
def image(data_dir) -> ImageRef:
    """A 64 MiB qcow2 image with a pattern at 1 MiB, as the image cache would fetch it."""
    path = data_dir / "images" / "img.qcow2"
    path.parent.mkdir()
    qemu_img.create(path, "qcow2", 64 * MiB)
    write(path, 0x5A, MiB)
    return ImageRef(id="img-1", source=path.as_uri(), disk_format="qcow2")


def qemu_io(path: Path, command: str, fmt: str = "qcow2") -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-io", "-f", fmt, "-c", command, str(path)], capture_output=True, text=True)


def write(path: Path, pattern: int, offset: int, length: int = MiB) -> None:
    proc = qemu_io(path, f"write -P {pattern:#x} {offset} {length}")
    assert proc.returncode == 0 and "wrote" in proc.stdout, proc.stdout + proc.stderr


def holds(path: Path, pattern: int, offset: int, length: int = MiB) -> bool:
    proc = qemu_io(path, f"read -P {pattern:#x} {offset} {length}")
    return proc.returncode == 0 and "Pattern verification failed" not in proc.stdout


def info(path: Path) -> dict:
    return qemu_img.info(path, "qcow2")


def pool_files(backend: FileBackend) -> list[str]:
    return sorted(p.name for p in backend.pool.iterdir())


def test_create_empty_is_a_qcow2_of_the_size_and_idempotent(backend):
    assert backend.create(VolumeSpec(id="v1", size_gb=1)) == GiB
    path = backend.volume_path("v1")
    assert info(path)["virtual-size"] == GiB and "backing-filename" not in info(path)
    inode = path.stat().st_ino
    assert backend.create(VolumeSpec(id="v1", size_gb=1)) == GiB  # a redelivered create changes nothing
    assert path.stat().st_ino == inode
    assert pool_files(backend) == ["volume-v1.qcow2"]
    assert oct(backend.pool.stat().st_mode & 0o777) == "0o755"  # QEMU (libvirt-qemu) must reach the files


@pytest.mark.parametrize("bad", ["../etc", "a/b", ".", "", "-x", "v 1", "x" * 200])
def test_unsafe_ids_are_refused(backend, bad):
    with pytest.raises(StorageError, match="invalid volume id"):
        backend.create(VolumeSpec(id=bad, size_gb=1))
    with pytest.raises(StorageError, match="invalid snapshot id"):
        backend.snapshot_create(bad, "v1")
    assert not backend.pool.exists() or pool_files(backend) == []


def test_bad_requests_are_refused(backend, image):
    with pytest.raises(StorageError, match="at least 1 GiB"):
        backend.create(VolumeSpec(id="v1", size_gb=0))
    with pytest.raises(StorageError, match="at most one source"):
        backend.create(VolumeSpec(id="v1", size_gb=1, image=image, source_volume_id="v0"))
    with pytest.raises(StorageError, match="snapshot s9 does not exist"):
        backend.create(VolumeSpec(id="v1", size_gb=1, source_snapshot_id="s9"))
    with pytest.raises(StorageError, match="volume v9 does not exist"):
        backend.create(VolumeSpec(id="v1", size_gb=1, source_volume_id="v9"))
    with pytest.raises(StorageError, match="volume v9 does not exist"):
        backend.extend("v9", 2 * GiB)
    assert pool_files(backend) == []


def test_from_image_is_a_copy_on_write_overlay_on_a_hard_link_of_the_cached_image(backend, config, image):
    backend.create(VolumeSpec(id="v1", size_gb=1, image=image))
    path = backend.volume_path("v1")
    base = backend.pool / "base-img-1"
    cached = config.image_cache_dir / "img-1"
    assert info(path)["backing-filename"] == str(base) and info(path)["backing-filename-format"] == "qcow2"
    assert base.stat().st_ino == cached.stat().st_ino  # a hard link: no copy
    assert path.stat().st_size < MiB  # copy-on-write: only metadata
    assert holds(path, 0x5A, MiB) and info(path)["virtual-size"] == GiB
    # Pruning the image cache cannot pull the base from under the volume.
    cached.unlink()
    assert holds(path, 0x5A, MiB)
    # The base goes with its last volume.
    backend.create(VolumeSpec(id="v2", size_gb=1, image=image))
    backend.delete("v1")
    assert base.exists()
    backend.delete("v2")
    assert pool_files(backend) == []


def test_from_image_as_a_full_copy(config, image):
    backend = FileBackend(config, cow_images=False)
    backend.create(VolumeSpec(id="v1", size_gb=1, image=image))
    path = backend.volume_path("v1")
    assert "backing-filename" not in info(path) and holds(path, 0x5A, MiB)
    assert pool_files(backend) == ["volume-v1.qcow2"]


def test_a_volume_smaller_than_its_image_is_refused_and_leaves_nothing(backend, data_dir):
    path = data_dir / "big.qcow2"
    qemu_img.create(path, "qcow2", 2 * GiB)
    with pytest.raises(StorageError, match=r"smaller than its image big \(2 GiB\)"):
        backend.create(VolumeSpec(id="v1", size_gb=1, image=ImageRef(id="big", source=path.as_uri())))
    assert pool_files(backend) == []


def test_snapshot_freezes_the_contents_and_clones_are_copy_on_write(backend):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    path = backend.volume_path("v1")
    write(path, 0x11, 0)
    inode = path.stat().st_ino
    assert backend.snapshot_create("s1", "v1") == GiB
    snapshot = backend.snapshot_path("s1")
    assert snapshot.stat().st_ino == inode  # the volume's data became the snapshot, without a copy
    assert info(path)["backing-filename"] == str(snapshot)
    write(path, 0x22, 0)
    assert holds(snapshot, 0x11, 0) and holds(path, 0x22, 0)
    assert backend.snapshot_create("s1", "v1") == GiB  # idempotent: no second level
    assert info(path)["backing-filename"] == str(snapshot)

    assert backend.create(VolumeSpec(id="c1", size_gb=2, source_snapshot_id="s1")) == 2 * GiB
    clone = backend.volume_path("c1")
    assert info(clone)["backing-filename"] == str(snapshot) and holds(clone, 0x11, 0)
    write(clone, 0x33, 0)
    assert holds(snapshot, 0x11, 0) and holds(path, 0x22, 0)


def test_a_snapshot_interrupted_between_link_and_rename_is_completed_by_the_retry(backend):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    path = backend.volume_path("v1")
    write(path, 0x11, 0)
    os.link(path, backend.snapshot_path("s1"))  # where a crash would have left it
    backend.snapshot_create("s1", "v1")
    assert path.stat().st_ino != backend.snapshot_path("s1").stat().st_ino
    assert info(path)["backing-filename"] == str(backend.snapshot_path("s1"))
    write(path, 0x22, 0)
    assert holds(backend.snapshot_path("s1"), 0x11, 0)


def test_deleting_a_snapshot_merges_it_into_its_volume(backend):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    path = backend.volume_path("v1")
    write(path, 0x11, 0)
    backend.snapshot_create("s1", "v1")
    write(path, 0x22, 2 * MiB)
    backend.snapshot_delete("s1", "v1")
    assert pool_files(backend) == ["volume-v1.qcow2"]
    assert "backing-filename" not in info(path)
    assert holds(path, 0x11, 0) and holds(path, 0x22, 2 * MiB)
    backend.snapshot_delete("s1", "v1")  # gone already: fine


def test_a_snapshot_with_clones_is_kept_until_its_last_clone_goes(backend):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    write(backend.volume_path("v1"), 0x11, 0)
    backend.snapshot_create("s1", "v1")
    backend.create(VolumeSpec(id="c1", size_gb=1, source_snapshot_id="s1"))
    backend.snapshot_delete("s1", "v1")
    assert "snapshot-s1.deleted" in pool_files(backend)
    assert holds(backend.volume_path("c1"), 0x11, 0) and holds(backend.volume_path("v1"), 0x11, 0)
    with pytest.raises(StorageError, match="snapshot s1 does not exist"):
        backend.create(VolumeSpec(id="c2", size_gb=1, source_snapshot_id="s1"))
    backend.delete("c1")
    assert "snapshot-s1.qcow2" in pool_files(backend)  # the volume still backs onto it
    backend.delete("v1")
    assert pool_files(backend) == []


def test_chained_snapshots_deleted_oldest_first_leave_a_short_chain(backend):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    path = backend.volume_path("v1")
    write(path, 0x11, 0)
    backend.snapshot_create("s1", "v1")
    write(path, 0x22, MiB)
    backend.snapshot_create("s2", "v1")
    write(path, 0x33, 2 * MiB)
    backend.snapshot_delete("s1", "v1")  # s2 backs onto it: kept, marked
    assert holds(backend.snapshot_path("s2"), 0x11, 0)
    backend.snapshot_delete("s2", "v1")  # the volume is rebased past both
    assert pool_files(backend) == ["volume-v1.qcow2"]
    assert holds(path, 0x11, 0) and holds(path, 0x22, MiB) and holds(path, 0x33, 2 * MiB)


def test_clone_of_a_volume_is_an_independent_copy(backend):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    write(backend.volume_path("v1"), 0x11, 0)
    assert backend.create(VolumeSpec(id="v2", size_gb=2, source_volume_id="v1")) == 2 * GiB
    copy = backend.volume_path("v2")
    assert "backing-filename" not in info(copy) and holds(copy, 0x11, 0)
    write(backend.volume_path("v1"), 0x22, 0)
    assert holds(copy, 0x11, 0)
    with pytest.raises(StorageError, match=r"smaller than its source volume v2 \(2 GiB\)"):
        backend.create(VolumeSpec(id="v3", size_gb=1, source_volume_id="v2"))


def test_extend_grows_and_never_shrinks(backend):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    assert backend.extend("v1", 3 * GiB) == 3 * GiB
    assert backend.extend("v1", 3 * GiB) == 3 * GiB
    with pytest.raises(StorageError, match="cannot shrink"):
        backend.extend("v1", GiB)
    assert backend.size("v1") == 3 * GiB


def test_delete_is_idempotent_and_refused_while_exported(config, backend):
    driver = LocalVolumeDriver(config)
    driver.volume_create(VolumeSpec(id="v1", size_gb=1))
    driver.volume_export(VolumeSpec(id="v1", size_gb=1), "compute-2")
    with pytest.raises(StorageError, match="cannot delete volume v1: it is in use by its NBD export"):
        driver.volume_delete(VolumeSpec(id="v1", size_gb=1))
    assert pool_files(backend) == ["volume-v1.qcow2"]
    driver.volume_unexport(VolumeSpec(id="v1", size_gb=1))
    driver.volume_delete(VolumeSpec(id="v1", size_gb=1))
    assert pool_files(backend) == []
    driver.volume_delete(VolumeSpec(id="v1", size_gb=1))


def test_every_qemu_img_run_names_its_formats(monkeypatch, backend, image):
    """qemu-img never probes a format: every command the backend runs on the pool has -f (and -F
    for a backing). (The image cache probes a download once, on purpose, to check its declared
    format: agents/storage/image_cache.py.)"""
    commands = []
    real_run = subprocess.run

    def recording(cmd, *args, **kwargs):
        if "qemu-img" in cmd and any(str(backend.pool) in str(arg) for arg in cmd):
            commands.append(cmd[cmd.index("qemu-img"):])
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording)
    backend.create(VolumeSpec(id="v1", size_gb=1, image=image))
    backend.snapshot_create("s1", "v1")
    backend.create(VolumeSpec(id="v2", size_gb=1, source_snapshot_id="s1"))
    backend.create(VolumeSpec(id="v3", size_gb=1, source_volume_id="v1"))
    backend.extend("v3", 2 * GiB)
    backend.delete("v2")
    backend.snapshot_delete("s1", "v1")  # merged into v1 (rebase)
    assert {c[1] for c in commands} >= {"create", "info", "convert", "resize", "rebase"}
    for command in commands:
        assert "-f" in command, command
        if "-b" in command and command[command.index("-b") + 1]:
            assert "-F" in command, command


def test_an_injected_failure_mid_create_leaves_no_stray_file(monkeypatch, config):
    """The backend fails after qemu-img wrote the new file: the task reports it, nothing stays."""
    real_resize = qemu_img.resize

    def failing_resize(path, fmt, size):
        real_resize(path, fmt, size)  # the file is on disk and grown ...
        raise StorageError("injected: the disk filled up")  # ... then the backend fails

    reset_volume_driver(LocalVolumeDriver(config))
    try:
        get_volume_driver().volume_create(VolumeSpec(id="v0", size_gb=1))
        monkeypatch.setattr(qemu_img, "resize", failing_resize)
        result = storage_tasks.volume_create(VolumeSpec(id="v1", size_gb=2, source_volume_id="v0").to_dict())
    finally:
        reset_volume_driver()
    assert result["ok"] is False and result["id"] == "v1" and result["kind"] == "volume"
    assert result["error"] == "injected: the disk filled up"
    assert sorted(os.listdir(config.volume_dir)) == ["volume-v0.qcow2"]


def test_an_injected_failure_mid_snapshot_leaves_the_volume_as_it_was(monkeypatch, backend):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    path = backend.volume_path("v1")
    write(path, 0x11, 0)
    inode = path.stat().st_ino

    def failing_overlay(*args, **kwargs):
        raise StorageError("injected")

    monkeypatch.setattr(qemu_img, "create_overlay", failing_overlay)
    with pytest.raises(StorageError, match="injected"):
        backend.snapshot_create("s1", "v1")
    assert pool_files(backend) == ["volume-v1.qcow2"] and path.stat().st_ino == inode
    monkeypatch.undo()
    backend.snapshot_create("s1", "v1")
    assert holds(backend.snapshot_path("s1"), 0x11, 0)


def test_snapshot_tasks_report_sizes_and_errors(config):
    reset_volume_driver(LocalVolumeDriver(config))
    try:
        storage_tasks.volume_create(VolumeSpec(id="v1", size_gb=1).to_dict())
        done = storage_tasks.snapshot_create(SnapshotSpec(id="s1", volume_id="v1").to_dict())
        missing = storage_tasks.snapshot_create(SnapshotSpec(id="s2", volume_id="nope").to_dict())
    finally:
        reset_volume_driver()
    assert done["ok"] and done["size_gb"] == 1 and done["id"] == "s1" and done["volume_id"] == "v1"
    assert done["kind"] == "snapshot" and done["host"]
    assert missing == {**missing, "ok": False, "error": "volume nope does not exist"}
