"""An in-memory volume driver for fast tests of the control plane (``CLOUDMGR_VOLUME_DRIVER=fake``).

It keeps the real driver's rules that the control plane relies on (idempotent creates and
deletes, no volume from a missing source, no shrinking, no deleting a backup with incremental
children, restore creates its target) and lets a test inject failures::

    driver = FakeVolumeDriver()
    reset_volume_driver(driver)
    driver.fail_next("volume_create", "the pool is full")   # the next create raises StorageError
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from agents.config import safe_component
from agents.specs import BackupSpec, SnapshotSpec, VolumeConnection, VolumeSpec
from agents.storage import StorageError
from agents.storage.volumes import BACKENDS, VolumeDriver

__all__ = ["FakeVolumeDriver"]


@dataclass
class FakeVolume:
    size_gb: int
    backend: str
    source: str | None = None  # "image:<id>", "snapshot:<id>" or "volume:<id>"


class FakeVolumeDriver(VolumeDriver):
    def __init__(self, hostname: str = "fake-storage") -> None:
        self.hostname = hostname
        self._lock = threading.Lock()
        self.volumes: dict[str, FakeVolume] = {}
        self.snapshots: dict[str, tuple[str, int]] = {}  # id -> (volume id, size_gb)
        self.backups: dict[str, dict[str, Any]] = {}
        self.exports: set[str] = set()
        self.calls: list[tuple[str, str]] = []  # (operation, object id), for assertions
        self._failures: dict[str, list[str]] = {}

    # -- test hooks --------------------------------------------------------------------------

    def fail_next(self, operation: str, message: str) -> None:
        """Make the next ``operation`` (``volume_create``, ``backup_restore`` ...) raise
        ``StorageError(message)`` without changing anything."""
        with self._lock:
            self._failures.setdefault(operation, []).append(message)

    def _enter(self, operation: str, object_id: str, backend: str = "file") -> None:
        try:
            safe_component(object_id)
        except ValueError as exc:
            raise StorageError(str(exc)) from None
        if backend not in BACKENDS:
            raise StorageError(f"unknown volume backend {backend!r} (known: {', '.join(BACKENDS)})")
        self.calls.append((operation, object_id))
        failures = self._failures.get(operation)
        if failures:
            raise StorageError(failures.pop(0))

    def _volume(self, volume_id: str) -> FakeVolume:
        if volume_id not in self.volumes:
            raise StorageError(f"volume {volume_id} does not exist")
        return self.volumes[volume_id]

    # -- driver ------------------------------------------------------------------------------

    def volume_create(self, spec: VolumeSpec) -> dict[str, Any]:
        with self._lock:
            self._enter("volume_create", spec.id, spec.backend)
            if spec.id not in self.volumes:
                source, minimum = None, 1
                if spec.source_snapshot_id:
                    if spec.source_snapshot_id not in self.snapshots:
                        raise StorageError(f"snapshot {spec.source_snapshot_id} does not exist")
                    source, minimum = f"snapshot:{spec.source_snapshot_id}", self.snapshots[spec.source_snapshot_id][1]
                elif spec.source_volume_id:
                    source = f"volume:{spec.source_volume_id}"
                    minimum = self._volume(spec.source_volume_id).size_gb
                elif spec.image is not None:
                    source = f"image:{spec.image.id}"
                if spec.size_gb < minimum:
                    raise StorageError(f"the volume ({spec.size_gb} GiB) is smaller than its source ({minimum} GiB)")
                self.volumes[spec.id] = FakeVolume(spec.size_gb, spec.backend, source)
            return {"size_gb": self.volumes[spec.id].size_gb}

    def volume_delete(self, spec: VolumeSpec) -> None:
        with self._lock:
            self._enter("volume_delete", spec.id, spec.backend)
            self.exports.discard(spec.id)
            self.volumes.pop(spec.id, None)

    def volume_extend(self, spec: VolumeSpec) -> dict[str, Any]:
        with self._lock:
            self._enter("volume_extend", spec.id, spec.backend)
            volume = self._volume(spec.id)
            if spec.size_gb < volume.size_gb:
                raise StorageError(f"volume {spec.id} is {volume.size_gb} GiB: it cannot shrink")
            volume.size_gb = spec.size_gb
            return {"size_gb": volume.size_gb}

    def volume_export(self, spec: VolumeSpec, host: str | None = None) -> VolumeConnection:
        with self._lock:
            self._enter("volume_export", spec.id, spec.backend)
            self._volume(spec.id)
            if host is not None and host != self.hostname:
                self.exports.add(spec.id)
                return VolumeConnection(driver="nbd", format="raw", host="192.0.2.10", port=10809, export=spec.id)
            return VolumeConnection(driver="file", path=f"/fake/volumes/volume-{spec.id}.qcow2", format="qcow2")

    def volume_unexport(self, spec: VolumeSpec) -> None:
        with self._lock:
            self._enter("volume_unexport", spec.id, spec.backend)
            self.exports.discard(spec.id)

    def snapshot_create(self, spec: SnapshotSpec) -> dict[str, Any]:
        with self._lock:
            self._enter("snapshot_create", spec.id, spec.backend)
            if spec.id not in self.snapshots:
                self.snapshots[spec.id] = (spec.volume_id, self._volume(spec.volume_id).size_gb)
            return {"size_gb": self.snapshots[spec.id][1]}

    def snapshot_delete(self, spec: SnapshotSpec) -> None:
        with self._lock:
            self._enter("snapshot_delete", spec.id, spec.backend)
            self.snapshots.pop(spec.id, None)

    def backup_create(self, spec: BackupSpec) -> dict[str, Any]:
        with self._lock:
            self._enter("backup_create", spec.id, spec.backend)
            if spec.id not in self.backups:
                if spec.parent_id and spec.parent_id not in self.backups:
                    raise StorageError(f"the parent backup {spec.parent_id} does not exist")
                if spec.snapshot_id and spec.snapshot_id not in self.snapshots:
                    raise StorageError(f"snapshot {spec.snapshot_id} does not exist")
                size_gb = self._volume(spec.volume_id).size_gb
                self.backups[spec.id] = {"volume_id": spec.volume_id, "parent_id": spec.parent_id, "size_gb": size_gb}
            backup = self.backups[spec.id]
            return {"size": backup["size_gb"] << 30, "object_count": 1, "stored_bytes": 0, "chunks": 1,
                    "incremental": backup["parent_id"] is not None}

    def backup_restore(self, spec: BackupSpec) -> dict[str, Any]:
        with self._lock:
            self._enter("backup_restore", spec.id, spec.backend)
            if spec.id not in self.backups:
                raise StorageError(f"backup {spec.id} does not exist")
            target = spec.restore_volume_id or spec.volume_id
            size_gb = self.backups[spec.id]["size_gb"]
            volume = self.volumes.setdefault(target, FakeVolume(size_gb, spec.backend, f"backup:{spec.id}"))
            volume.size_gb = max(volume.size_gb, size_gb)
            return {"restore_volume_id": target, "size": volume.size_gb << 30}

    def backup_delete(self, spec: BackupSpec) -> None:
        with self._lock:
            self._enter("backup_delete", spec.id, spec.backend)
            children = sorted(i for i, b in self.backups.items() if b["parent_id"] == spec.id)
            if children:
                raise StorageError(f"backup {spec.id} has incremental backups that depend on it "
                                   f"({', '.join(children)}): delete them first")
            self.backups.pop(spec.id, None)
