"""Backups of file-backend volumes into a directory store, with the real qemu-img and
qemu-storage-daemon (the volume's bytes are read and written through a FUSE export)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from agents.specs import BackupSpec, VolumeSpec
from agents.storage import StorageError
from agents.storage.backups import CHUNK_SIZE, DirectoryBackupStore, backup_create, backup_delete, backup_restore
from agents.storage.volumes import LocalVolumeDriver
from agents.storage.volumes.config import load_volume_config
from agents.storage.volumes.file import FileBackend

GiB = 1 << 30
MiB = 1 << 20


@pytest.fixture
def data_dir():
    path = Path(tempfile.mkdtemp(prefix="tbak-", dir="/tmp"))
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
def store(config) -> DirectoryBackupStore:
    return DirectoryBackupStore(config.backup_dir)


def qemu_io(path: Path, command: str) -> str:
    proc = subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def write(backend, volume_id: str, pattern: int, offset: int, length: int = MiB) -> None:
    assert "wrote" in qemu_io(backend.volume_path(volume_id), f"write -P {pattern:#x} {offset} {length}")


def holds(backend, volume_id: str, pattern: int, offset: int, length: int = MiB) -> bool:
    out = qemu_io(backend.volume_path(volume_id), f"read -P {pattern:#x} {offset} {length}")
    return "Pattern verification failed" not in out


def test_a_full_backup_stores_only_data_chunks_with_their_hashes(backend, store, config):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    write(backend, "v1", 0x11, 0)
    write(backend, "v1", 0x22, 100 * MiB)
    qemu_io(backend.volume_path("v1"), f"write -z {200 * MiB} {4 * MiB}")  # allocated zeros
    summary = backup_create(BackupSpec(id="b1", volume_id="v1"), backend, store)
    assert summary == {"size": GiB, "object_count": 2, "stored_bytes": 2 * CHUNK_SIZE, "chunks": GiB // CHUNK_SIZE,
                       "incremental": False}
    manifest = store.get_manifest("b1")
    stored = {i: c for i, c in enumerate(manifest["chunks"]) if c}
    assert sorted(stored) == [0, 100 * MiB // CHUNK_SIZE]
    assert manifest["read_bytes"] <= 3 * CHUNK_SIZE  # holes are skipped without being read
    for index, entry in stored.items():
        data = (config.backup_dir / "b1" / "chunks" / f"{index:08d}").read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "backup": "b1"}
    assert oct((config.backup_dir / "b1").stat().st_mode & 0o777) == "0o700"
    # Backing up again is a no-op (idempotent): the same manifest.
    assert backup_create(BackupSpec(id="b1", volume_id="v1"), backend, store) == summary
    assert store.get_manifest("b1")["created_at"] == manifest["created_at"]


def test_an_incremental_backup_stores_only_changed_chunks_and_restores_whole(backend, store):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    write(backend, "v1", 0x11, 0)
    write(backend, "v1", 0x22, 100 * MiB)
    backup_create(BackupSpec(id="b1", volume_id="v1"), backend, store)
    write(backend, "v1", 0x33, 100 * MiB)
    write(backend, "v1", 0x44, 300 * MiB)
    summary = backup_create(BackupSpec(id="b2", volume_id="v1", parent_id="b1"), backend, store)
    assert summary["incremental"] and summary["object_count"] == 2  # chunks 25 and 75, not chunk 0
    chunks = store.get_manifest("b2")["chunks"]
    assert chunks[0]["backup"] == "b1" and chunks[25]["backup"] == "b2" and chunks[75]["backup"] == "b2"

    backup_restore(BackupSpec(id="b2", volume_id="v1", restore_volume_id="r2"), backend, store)
    assert holds(backend, "r2", 0x11, 0) and holds(backend, "r2", 0x33, 100 * MiB)
    assert holds(backend, "r2", 0x44, 300 * MiB)
    backup_restore(BackupSpec(id="b1", volume_id="v1", restore_volume_id="r1"), backend, store)
    assert holds(backend, "r1", 0x22, 100 * MiB) and holds(backend, "r1", 0x00, 300 * MiB)


def test_restore_into_an_existing_volume_replaces_its_contents_and_keeps_its_size(backend, store):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    write(backend, "v1", 0x11, 0)
    backup_create(BackupSpec(id="b1", volume_id="v1"), backend, store)
    backend.create(VolumeSpec(id="other", size_gb=2))
    write(backend, "other", 0x77, 0)
    write(backend, "other", 0x77, 50 * MiB)
    result = backup_restore(BackupSpec(id="b1", volume_id="v1", restore_volume_id="other"), backend, store)
    assert result == {"restore_volume_id": "other", "size": GiB}
    assert holds(backend, "other", 0x11, 0) and holds(backend, "other", 0x00, 50 * MiB)
    assert backend.size("other") == 2 * GiB
    assert sorted(p.name for p in backend.pool.iterdir()) == ["volume-other.qcow2", "volume-v1.qcow2"]


def test_a_corrupt_chunk_fails_the_restore_and_leaves_the_volume_alone(backend, store, config):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    write(backend, "v1", 0x11, 0)
    backup_create(BackupSpec(id="b1", volume_id="v1"), backend, store)
    write(backend, "v1", 0x55, 0)
    chunk = config.backup_dir / "b1" / "chunks" / "00000000"
    data = bytearray(chunk.read_bytes())
    data[4096] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="chunk 0 of backup b1 is corrupt"):
        backup_restore(BackupSpec(id="b1", volume_id="v1"), backend, store)
    assert holds(backend, "v1", 0x55, 0)
    assert sorted(p.name for p in backend.pool.iterdir()) == ["volume-v1.qcow2"]


def test_a_backup_with_incremental_children_cannot_be_deleted(backend, store):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    write(backend, "v1", 0x11, 0)
    backup_create(BackupSpec(id="b1", volume_id="v1"), backend, store)
    backup_create(BackupSpec(id="b2", volume_id="v1", parent_id="b1"), backend, store)
    with pytest.raises(StorageError, match=r"backup b1 has incremental backups that depend on it \(b2\)"):
        backup_delete(BackupSpec(id="b1", volume_id="v1"), store)
    assert store.get_manifest("b1") is not None
    backup_delete(BackupSpec(id="b2", volume_id="v1"), store)
    backup_delete(BackupSpec(id="b1", volume_id="v1"), store)
    backup_delete(BackupSpec(id="b1", volume_id="v1"), store)  # gone already: fine
    assert list(store.manifests()) == [] and os.listdir(store.root) == []


def test_parents_must_exist_and_be_of_the_same_volume(backend, store):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    backend.create(VolumeSpec(id="v2", size_gb=1))
    backup_create(BackupSpec(id="b1", volume_id="v1"), backend, store)
    with pytest.raises(StorageError, match="parent backup nope does not exist"):
        backup_create(BackupSpec(id="b2", volume_id="v1", parent_id="nope"), backend, store)
    with pytest.raises(StorageError, match="parent backup b1 is of another volume"):
        backup_create(BackupSpec(id="b3", volume_id="v2", parent_id="b1"), backend, store)
    with pytest.raises(StorageError, match="backup zz does not exist"):
        backup_restore(BackupSpec(id="zz", volume_id="v1"), backend, store)
    assert sorted(os.listdir(store.root)) == ["b1"]


def test_what_a_crashed_backup_left_is_never_a_backup_and_is_redone(backend, store, config):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    write(backend, "v1", 0x11, 0)
    store.put_chunk("b1", 0, b"half a chunk")  # a backup that died before its manifest
    assert store.get_manifest("b1") is None and list(store.manifests()) == []
    backup_create(BackupSpec(id="b1", volume_id="v1"), backend, store)
    backup_restore(BackupSpec(id="b1", volume_id="v1", restore_volume_id="r1"), backend, store)
    assert holds(backend, "r1", 0x11, 0)


def test_a_failed_backup_leaves_nothing_in_the_store(backend, store, monkeypatch):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    write(backend, "v1", 0x11, 0)
    write(backend, "v1", 0x22, 500 * MiB)
    calls = []
    real_put = store.put_chunk

    def failing_put(backup_id, index, data):
        calls.append(index)
        if len(calls) == 2:
            raise StorageError("injected: the backup store is full")
        real_put(backup_id, index, data)

    monkeypatch.setattr(store, "put_chunk", failing_put)
    with pytest.raises(StorageError, match="injected"):
        backup_create(BackupSpec(id="b1", volume_id="v1"), backend, store)
    assert os.listdir(store.root) == []
    assert not list((backend.config.run_dir / "view").glob("*"))  # the FUSE view is gone too


def test_an_attached_volume_is_backed_up_from_a_snapshot(config, store):
    driver = LocalVolumeDriver(config)
    backend = driver.backend("file")
    driver.volume_create(VolumeSpec(id="v1", size_gb=1))
    write(backend, "v1", 0x11, 0)
    driver.volume_export(VolumeSpec(id="v1", size_gb=1), "compute-2")  # its daemon holds it now
    try:
        with pytest.raises(StorageError, match="cannot back up volume v1: it is in use by its NBD export"):
            driver.backup_create(BackupSpec(id="b1", volume_id="v1"))
        from agents.specs import SnapshotSpec

        driver.snapshot_create(SnapshotSpec(id="s1", volume_id="v1"))  # through the daemon: a copy
        summary = driver.backup_create(BackupSpec(id="b1", volume_id="v1", snapshot_id="s1"))
    finally:
        driver.volume_unexport(VolumeSpec(id="v1", size_gb=1))
    assert summary["object_count"] == 1
    driver.backup_restore(BackupSpec(id="b1", volume_id="v1", restore_volume_id="r1"))
    assert holds(backend, "r1", 0x11, 0)


def test_the_manifest_is_json_that_names_only_store_objects(backend, store, config):
    backend.create(VolumeSpec(id="v1", size_gb=1))
    write(backend, "v1", 0x11, 0)
    backup_create(BackupSpec(id="b1", volume_id="v1"), backend, store)
    path = config.backup_dir / "b1" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["chunks"][0]["backup"] = "../../etc"
    path.write_text(json.dumps(manifest))
    with pytest.raises(StorageError, match="invalid backup id"):
        backup_restore(BackupSpec(id="b1", volume_id="v1", restore_volume_id="r1"), backend, store)
    assert not backend.exists("r1")


def test_a_view_left_by_a_dead_agent_is_unmounted_when_the_driver_starts(config, backend):
    """A backup's FUSE view whose daemon died (the agent was killed mid-backup) is stale: the
    next agent unmounts and removes it."""
    import signal

    from agents.storage.volumes.qsd import StorageDaemon

    backend.create(VolumeSpec(id="v1", size_gb=1))
    with backend.read_view(volume_id="v1") as view:
        daemon = StorageDaemon(view.parent)
        os.kill(daemon.pid(), signal.SIGKILL)
        for _ in range(100):
            if not daemon.running():
                break
            subprocess.run(["sleep", "0.05"])
        stale = view.parent
        with pytest.raises(OSError):
            os.stat(view)  # "Transport endpoint is not connected"
        LocalVolumeDriver(config)
        assert not stale.exists()
        assert view.parent.name not in (Path("/proc/self/mounts").read_text())
