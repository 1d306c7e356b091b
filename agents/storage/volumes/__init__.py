"""Volumes on a storage host: backends, snapshots, backups and exports behind one driver.

* :mod:`.base`: the backend interface (:class:`~.base.VolumeBackend`), locks, holders;
* :mod:`.file`: qcow2 files in a pool directory; :mod:`.lvm`: thin volumes in a thin pool;
* :mod:`.holders`: copies and resizes of attached volumes through the process holding them;
* :mod:`.exports`: local paths and NBD exports (:mod:`.qsd`: qemu-storage-daemon);
* :mod:`agents.storage.backups`: the backup store and full/incremental backups;
* :class:`VolumeDriver`: what the agent's tasks (:mod:`agents.storage.tasks`) call, with
  :mod:`.fake` for the control plane's unit tests (``CLOUDMGR_VOLUME_DRIVER=fake``).
"""

from __future__ import annotations

import abc
import threading
from typing import Any

from agents.specs import BackupSpec, SnapshotSpec, VolumeConnection, VolumeSpec
from agents.storage import StorageError, backups
from agents.storage.volumes import exports
from agents.storage.volumes.base import VIEWS, VolumeBackend
from agents.storage.volumes.config import VolumeConfig, get_volume_config
from agents.storage.volumes.file import FileBackend
from agents.storage.volumes.lvm import LvmBackend
from agents.storage.volumes.qsd import drop_stale_views

__all__ = ["BACKENDS", "LocalVolumeDriver", "VolumeDriver", "get_volume_driver", "reset_volume_driver"]

BACKENDS = ("file", "lvm")


def _gib(size_bytes: int) -> int:
    return -(-int(size_bytes) // (1 << 30))


class VolumeDriver(abc.ABC):
    """What a storage host does with volumes; every method is idempotent and raises
    :class:`~agents.storage.StorageError` with a readable message on failure."""

    @abc.abstractmethod
    def volume_create(self, spec: VolumeSpec) -> dict[str, Any]:
        """``{"size_gb"}``: create the volume (empty or from its source) if it does not exist."""

    @abc.abstractmethod
    def volume_delete(self, spec: VolumeSpec) -> None:
        """Remove the volume; refused while a guest on this host or its NBD export holds it."""

    @abc.abstractmethod
    def volume_extend(self, spec: VolumeSpec) -> dict[str, Any]:
        """``{"size_gb"}``: grow the volume to ``spec.size_gb`` (an attached one through its holder)."""

    @abc.abstractmethod
    def volume_export(self, spec: VolumeSpec, host: str | None = None) -> VolumeConnection:
        """How compute ``host`` reaches the volume: a local path when it is this host (or None),
        an NBD export otherwise."""

    @abc.abstractmethod
    def volume_unexport(self, spec: VolumeSpec) -> None:
        """Stop the volume's NBD export, if any."""

    @abc.abstractmethod
    def snapshot_create(self, spec: SnapshotSpec) -> dict[str, Any]:
        """``{"size_gb"}``: a crash-consistent snapshot (also of an attached volume)."""

    @abc.abstractmethod
    def snapshot_delete(self, spec: SnapshotSpec) -> None:
        """Remove the snapshot (volumes cloned from it keep their data)."""

    @abc.abstractmethod
    def backup_create(self, spec: BackupSpec) -> dict[str, Any]:
        """``{"size", "object_count", "stored_bytes", "chunks", "incremental"}``."""

    @abc.abstractmethod
    def backup_restore(self, spec: BackupSpec) -> dict[str, Any]:
        """``{"restore_volume_id", "size"}``: restore into ``spec.restore_volume_id`` (or the backup's volume)."""

    @abc.abstractmethod
    def backup_delete(self, spec: BackupSpec) -> None:
        """Remove the backup; refused while incremental backups depend on it."""


class LocalVolumeDriver(VolumeDriver):
    """The real driver: this host's backends and backup directory."""

    def __init__(self, config: VolumeConfig) -> None:
        self.config = config
        self.store = backups.DirectoryBackupStore(config.backup_dir)
        self._backends: dict[str, VolumeBackend] = {}
        self._lock = threading.Lock()
        drop_stale_views(config.run_dir / VIEWS)  # left by an agent that died mid-backup

    def backend(self, name: str) -> VolumeBackend:
        """The backend named by a spec (``file`` or ``lvm``), made on first use."""
        if name not in BACKENDS:
            raise StorageError(f"unknown volume backend {name!r} (known: {', '.join(BACKENDS)})")
        with self._lock:
            if name not in self._backends:
                self._backends[name] = FileBackend(self.config) if name == "file" else LvmBackend(self.config)
            return self._backends[name]

    def volume_create(self, spec: VolumeSpec) -> dict[str, Any]:
        return {"size_gb": _gib(self.backend(spec.backend).create(spec))}

    def volume_delete(self, spec: VolumeSpec) -> None:
        # An NBD export still running means a host may have it attached: refused (with the
        # reason) by the backend, never cut off from under a guest.
        self.backend(spec.backend).delete(spec.id)

    def volume_extend(self, spec: VolumeSpec) -> dict[str, Any]:
        return {"size_gb": _gib(self.backend(spec.backend).extend(spec.id, spec.size_gb << 30))}

    def volume_export(self, spec: VolumeSpec, host: str | None = None) -> VolumeConnection:
        remote = host is not None and host != self.config.hostname
        return exports.export(self.backend(spec.backend), spec.id, remote=remote)

    def volume_unexport(self, spec: VolumeSpec) -> None:
        exports.unexport(self.backend(spec.backend), spec.id)

    def snapshot_create(self, spec: SnapshotSpec) -> dict[str, Any]:
        return {"size_gb": _gib(self.backend(spec.backend).snapshot_create(spec.id, spec.volume_id))}

    def snapshot_delete(self, spec: SnapshotSpec) -> None:
        self.backend(spec.backend).snapshot_delete(spec.id, spec.volume_id)

    def backup_create(self, spec: BackupSpec) -> dict[str, Any]:
        return backups.backup_create(spec, self.backend(spec.backend), self.store)

    def backup_restore(self, spec: BackupSpec) -> dict[str, Any]:
        return backups.backup_restore(spec, self.backend(spec.backend), self.store)

    def backup_delete(self, spec: BackupSpec) -> None:
        backups.backup_delete(spec, self.store)


_driver: VolumeDriver | None = None
_driver_lock = threading.Lock()


def _make_driver() -> VolumeDriver:
    config = get_volume_config()
    if config.driver == "fake":
        from agents.storage.volumes.fake import FakeVolumeDriver

        return FakeVolumeDriver()
    return LocalVolumeDriver(config)


def get_volume_driver() -> VolumeDriver:
    """The process's volume driver, chosen by ``CLOUDMGR_VOLUME_DRIVER`` and made on first use."""
    global _driver
    with _driver_lock:
        if _driver is None:
            _driver = _make_driver()
        return _driver


def reset_volume_driver(driver: VolumeDriver | None = None) -> None:
    """Forget the process's driver (the next call makes a new one), or install ``driver``."""
    global _driver
    with _driver_lock:
        _driver = driver
