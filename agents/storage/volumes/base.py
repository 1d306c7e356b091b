"""The interface every volume backend implements, and what they share (locks, ids, holders).

A backend stores volumes and their snapshots (the file backend: qcow2 files in a pool
directory; the LVM backend: thin volumes in a thin pool). Every method is idempotent: creating
what exists, or deleting what is gone, succeeds and changes nothing, so a redelivered task is
harmless. A failure leaves nothing behind: new objects are built under a temporary name and
renamed into place at the end.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agents.config import safe_component
from agents.specs import VolumeConnection, VolumeSpec
from agents.storage import StorageError
from agents.storage.volumes.config import VolumeConfig
from agents.storage.volumes.holders import DaemonHolder, Holder, find_domain_holder
from agents.storage.volumes.qsd import StorageDaemon

__all__ = ["VIEWS", "GiB", "VolumeBackend", "checked_id", "export_daemon", "key_lock"]

GiB = 1 << 30
VIEWS = "view"  # under the run directory: the FUSE views that backups read and restores write


def checked_id(value: str, what: str) -> str:
    """``value`` if it is safe as a file or LV name component, else a :class:`StorageError`."""
    try:
        return safe_component(value, what)
    except ValueError as exc:
        raise StorageError(str(exc)) from None


@contextlib.contextmanager
def key_lock(lock_dir: Path, key: str) -> Iterator[None]:
    """An exclusive lock on ``key`` across threads and processes (``flock`` on its own file)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def export_daemon(config: VolumeConfig, volume_id: str) -> StorageDaemon:
    """The qemu-storage-daemon that serves ``volume_id`` over NBD (running or not)."""
    return StorageDaemon(config.run_dir / "nbd" / checked_id(volume_id, "volume id"))


class VolumeBackend(abc.ABC):
    name = "abstract"

    def __init__(self, config: VolumeConfig) -> None:
        self.config = config

    @contextlib.contextmanager
    def lock(self, *keys: str) -> Iterator[None]:
        """Hold the locks of ``keys`` (volume and snapshot ids), taken in a fixed order."""
        with contextlib.ExitStack() as stack:
            for key in sorted(set(keys)):
                stack.enter_context(key_lock(self.config.run_dir / "locks" / self.name, key))
            yield

    def holder(self, volume_id: str, path: Path) -> Holder | None:
        """Who has the volume open: its NBD export's daemon, or a guest on this host."""
        daemon = export_daemon(self.config, volume_id)
        if daemon.running():
            return DaemonHolder(daemon)
        return find_domain_holder(self.config.libvirt_uri, path)

    def refuse_if_held(self, volume_id: str, path: Path, action: str) -> None:
        holder = self.holder(volume_id, path)
        if holder is not None:
            raise StorageError(f"cannot {action} volume {volume_id}: it is in use by {holder.description}")

    # -- volumes ---------------------------------------------------------------------------

    @abc.abstractmethod
    def create(self, spec: VolumeSpec) -> int:
        """Create the volume (empty, or from ``spec``'s one source) if it does not exist; its size
        in bytes."""

    @abc.abstractmethod
    def delete(self, volume_id: str) -> None:
        """Remove the volume (refused while it is attached); a missing volume is fine."""

    @abc.abstractmethod
    def extend(self, volume_id: str, size_bytes: int) -> int:
        """Grow the volume (never shrink it); an attached volume grows through its holder, so
        the guest sees the new size. Returns the size in bytes."""

    @abc.abstractmethod
    def exists(self, volume_id: str) -> bool:
        """Whether the volume exists on this backend."""

    @abc.abstractmethod
    def size(self, volume_id: str) -> int:
        """The volume's size in bytes, as its guest sees it."""

    # -- snapshots -------------------------------------------------------------------------

    @abc.abstractmethod
    def snapshot_create(self, snapshot_id: str, volume_id: str) -> int:
        """Freeze the volume's contents as a snapshot (crash-consistent, also while attached);
        its size in bytes."""

    @abc.abstractmethod
    def snapshot_delete(self, snapshot_id: str, volume_id: str) -> None:
        """Remove the snapshot; volumes cloned from it keep their data. A missing one is fine."""

    # -- data paths ------------------------------------------------------------------------

    @abc.abstractmethod
    def local_connection(self, volume_id: str) -> VolumeConnection:
        """How a guest on this host opens the volume (a ``file`` or a ``block`` device)."""

    @abc.abstractmethod
    def blockdev(self, volume_id: str) -> dict[str, Any]:
        """The volume as a QEMU block node (``--blockdev`` JSON), for qemu-storage-daemon."""

    @abc.abstractmethod
    def read_view(self, *, volume_id: str | None = None, snapshot_id: str | None = None
                  ) -> contextlib.AbstractContextManager[Path]:
        """A read-only file of the volume's (or snapshot's) guest-visible bytes, for backups.
        A volume that is attached is refused: back it up from a snapshot."""

    @abc.abstractmethod
    def replace(self, volume_id: str, size_bytes: int) -> contextlib.AbstractContextManager[Path]:
        """A writable, zeroed file of ``size_bytes`` that becomes the volume's contents when the
        context ends without an error (a restore); on an error the volume is unchanged. The volume
        is created if it does not exist; an attached one is refused."""
