"""Volume backups: chunked copies in a backup store, full or incremental.

A backup reads the volume's guest-visible bytes (the backend's ``read_view``; an attached volume
is backed up from a snapshot) in chunks of ``CHUNK_SIZE``. Its manifest lists, per chunk, the
SHA-256 of its bytes and the backup that stores them, or nothing for a chunk of zeros (holes
are skipped without being read, zeros are not stored). An *incremental* backup stores only the
chunks whose hash differs from its parent's and refers to the parent's entries for the others,
so a restore reads each chunk straight from the backup that has it, never walking the chain.

The store is an interface (:class:`BackupStore`) of named objects, a manifest written last:
:class:`DirectoryBackupStore` keeps them in a directory; an object store (S3, Swift) maps the
same five calls onto its keys. A backup is complete once its manifest exists, so a crashed
backup is never mistaken for one, and a retry discards what it left.

A backup with incremental children cannot be deleted (their manifests point into it): the error
says which, as Cinder's does. Restoring verifies every chunk's hash and writes into a new object
that replaces the volume only when it is complete (the backend's ``replace``).
"""

from __future__ import annotations

import abc
import contextlib
import errno
import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agents.specs import BackupSpec
from agents.storage import StorageError
from agents.storage.volumes.base import VolumeBackend, checked_id

__all__ = ["CHUNK_SIZE", "BackupStore", "DirectoryBackupStore", "backup_create", "backup_delete", "backup_restore"]

log = logging.getLogger(__name__)

CHUNK_SIZE = 4 << 20
READ_AHEAD = 4  # chunks in flight between the reading thread and the hashing/storing one
MANIFEST_VERSION = 1
_ZEROS = bytes(CHUNK_SIZE)


class BackupStore(abc.ABC):
    """Where backups live: per backup, numbered chunks and one manifest (written last)."""

    @abc.abstractmethod
    def put_chunk(self, backup_id: str, index: int, data: bytes) -> None:
        """Store chunk ``index`` of a backup being written."""

    @abc.abstractmethod
    def get_chunk(self, backup_id: str, index: int) -> bytes:
        """The bytes of a stored chunk."""

    @abc.abstractmethod
    def put_manifest(self, backup_id: str, manifest: dict[str, Any]) -> None:
        """Write the manifest, which makes the backup complete (atomically)."""

    @abc.abstractmethod
    def get_manifest(self, backup_id: str) -> dict[str, Any] | None:
        """The manifest of a complete backup, or None."""

    @abc.abstractmethod
    def manifests(self) -> Iterator[dict[str, Any]]:
        """The manifests of every complete backup."""

    @abc.abstractmethod
    def discard(self, backup_id: str) -> None:
        """Remove a backup, complete or not, with everything it stored; a missing one is fine."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class DirectoryBackupStore(BackupStore):
    """``<root>/<backup_id>/chunks/<index>`` and ``<root>/<backup_id>/manifest.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, backup_id: str) -> Path:
        return self.root / checked_id(backup_id, "backup id")

    def _make_dir(self, backup_id: str) -> Path:
        """The backup's directory, made if missing: readable by root only (tenants' data)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory = self._dir(backup_id)
        directory.mkdir(mode=0o700, exist_ok=True)
        return directory

    def _chunk(self, backup_id: str, index: int) -> Path:
        return self._dir(backup_id) / "chunks" / f"{int(index):08d}"

    def put_chunk(self, backup_id: str, index: int, data: bytes) -> None:
        path = self._chunk(backup_id, index)
        try:
            self._make_dir(backup_id)
            path.parent.mkdir(mode=0o700, exist_ok=True)
            path.write_bytes(data)  # made durable all at once by put_manifest
        except OSError as exc:
            raise StorageError(f"cannot write to the backup store: {exc.strerror or exc}") from None

    def get_chunk(self, backup_id: str, index: int) -> bytes:
        try:
            return self._chunk(backup_id, index).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"chunk {index} of backup {backup_id} is missing from the backup store") from None
        except OSError as exc:
            raise StorageError(f"cannot read the backup store: {exc.strerror or exc}") from None

    def put_manifest(self, backup_id: str, manifest: dict[str, Any]) -> None:
        try:
            directory = self._make_dir(backup_id)
            chunks = directory / "chunks"
            if chunks.is_dir():  # every chunk is on disk before the manifest says the backup is complete
                for chunk in chunks.iterdir():
                    _fsync(chunk)
                _fsync(chunks)
            _write_atomically(directory / "manifest.json", json.dumps(manifest).encode())
            _fsync(directory)
        except OSError as exc:
            raise StorageError(f"cannot write to the backup store: {exc.strerror or exc}") from None

    def get_manifest(self, backup_id: str) -> dict[str, Any] | None:
        try:
            return json.loads((self._dir(backup_id) / "manifest.json").read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StorageError(f"the manifest of backup {backup_id} is unreadable: {exc}") from None

    def manifests(self) -> Iterator[dict[str, Any]]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("*/manifest.json")):
            with contextlib.suppress(OSError, ValueError):
                yield json.loads(path.read_text())

    def discard(self, backup_id: str) -> None:
        directory = self._dir(backup_id)
        if directory.exists():
            # Renamed first: a half-removed backup is never seen as one.
            doomed = self.root / f".deleting-{directory.name}-{uuid.uuid4().hex[:8]}"
            os.replace(directory, doomed)
            shutil.rmtree(doomed)


def _size(fd: int) -> int:
    return os.lseek(fd, 0, os.SEEK_END)  # st_size is 0 for a block device


def _next_data(fd: int, offset: int, size: int) -> int:
    """The first offset at or after ``offset`` that may hold data (``size`` if none)."""
    try:
        return os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return size
        if exc.errno == errno.EINVAL:  # no SEEK_DATA here: everything may be data
            return offset
        raise


def _read(fd: int, offset: int, length: int) -> bytes:
    data = bytearray()
    while len(data) < length:
        part = os.pread(fd, length - len(data), offset + len(data))
        if not part:
            raise StorageError(f"the volume ended at {offset + len(data)} bytes while being read")
        data += part
    return bytes(data)


def _volume_chunks(fd: int, size: int) -> Iterator[tuple[int, bytes | None]]:
    """``(index, bytes)`` of each chunk of the file, ``None`` for a chunk that is all hole."""
    data_at = _next_data(fd, 0, size)
    for index, offset in enumerate(range(0, size, CHUNK_SIZE)):
        length = min(CHUNK_SIZE, size - offset)
        if data_at < offset:
            data_at = _next_data(fd, offset, size)
        yield index, (None if data_at >= offset + length else _read(fd, offset, length))


_END = object()


def _read_ahead(items: Iterator[Any], depth: int = READ_AHEAD) -> Iterator[Any]:
    """Iterate ``items`` in a thread, up to ``depth`` ahead: reading the next chunks overlaps
    hashing and storing this one (the reads and writes release the GIL)."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                ready.put(item)
            ready.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            ready.put(exc)

    thread = threading.Thread(target=produce, name="backup-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.05)
        thread.join()


def _chunk_entry(entry: Any, index: int) -> tuple[str, str] | None:
    """``(sha256, backup id)`` of a manifest entry (checked: a manifest names store objects)."""
    if entry is None:
        return None
    try:
        digest, holder = str(entry["sha256"]), checked_id(str(entry["backup"]), "backup id")
    except (KeyError, TypeError):
        raise StorageError(f"manifest entry {index} is malformed") from None
    if len(digest) != 64:
        raise StorageError(f"manifest entry {index} has no valid SHA-256")
    return digest, holder


def backup_create(spec: BackupSpec, backend: VolumeBackend, store: BackupStore) -> dict[str, Any]:
    """Back up ``spec.volume_id`` (from ``spec.snapshot_id`` if given) into ``store``: only the
    chunks that differ from ``spec.parent_id``'s if that is set. Returns the manifest's summary."""
    checked_id(spec.id, "backup id")
    done = store.get_manifest(spec.id)
    if done is not None:
        return _summary(done)
    store.discard(spec.id)  # what a crashed attempt left
    parent_chunks: list[Any] = []
    if spec.parent_id:
        parent = store.get_manifest(spec.parent_id)
        if parent is None:
            raise StorageError(f"the parent backup {spec.parent_id} does not exist")
        if parent.get("volume_id") != spec.volume_id:
            raise StorageError(f"the parent backup {spec.parent_id} is of another volume")
        if parent.get("chunk_size") != CHUNK_SIZE:
            raise StorageError(f"the parent backup {spec.parent_id} has another chunk size")
        parent_chunks = parent["chunks"]
    started = time.monotonic()
    chunks: list[dict[str, str] | None] = []
    stored = stored_bytes = read_bytes = 0
    try:
        with backend.read_view(volume_id=spec.volume_id, snapshot_id=spec.snapshot_id) as view:
            fd = os.open(view, os.O_RDONLY)
            try:
                size = _size(fd)
                for index, data in _read_ahead(_volume_chunks(fd, size)):
                    if data is None:
                        chunks.append(None)  # a hole: zeros, not even read
                        continue
                    read_bytes += len(data)
                    if data == _ZEROS[:len(data)]:
                        chunks.append(None)
                        continue
                    digest = hashlib.sha256(data).hexdigest()
                    previous = _chunk_entry(parent_chunks[index], index) if index < len(parent_chunks) else None
                    if previous is not None and previous[0] == digest:
                        chunks.append({"sha256": digest, "backup": previous[1]})
                        continue
                    store.put_chunk(spec.id, index, data)
                    stored += 1
                    stored_bytes += len(data)
                    chunks.append({"sha256": digest, "backup": spec.id})
            finally:
                os.close(fd)
        manifest = {
            "version": MANIFEST_VERSION, "backup_id": spec.id, "volume_id": spec.volume_id,
            "snapshot_id": spec.snapshot_id, "parent_id": spec.parent_id, "size": size,
            "chunk_size": CHUNK_SIZE, "chunks": chunks, "stored_chunks": stored, "stored_bytes": stored_bytes,
            "read_bytes": read_bytes, "created_at": time.time(),
        }
        store.put_manifest(spec.id, manifest)
    except BaseException:
        with contextlib.suppress(Exception):
            store.discard(spec.id)
        raise
    log.info("backup %s of volume %s: %d of %d chunks stored (%d bytes) in %.1f s", spec.id, spec.volume_id,
             stored, len(chunks), stored_bytes, time.monotonic() - started)
    return _summary(manifest)


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        "size": manifest["size"],
        "object_count": manifest["stored_chunks"],
        "stored_bytes": manifest["stored_bytes"],
        "chunks": len(manifest["chunks"]),
        "incremental": manifest.get("parent_id") is not None,
    }


def backup_restore(spec: BackupSpec, backend: VolumeBackend, store: BackupStore) -> dict[str, Any]:
    """Write backup ``spec.id`` into ``spec.restore_volume_id`` (default: its own volume), which
    is created if missing and replaced only once every chunk is written and verified."""
    manifest = store.get_manifest(checked_id(spec.id, "backup id"))
    if manifest is None:
        raise StorageError(f"backup {spec.id} does not exist")
    target = spec.restore_volume_id or spec.volume_id
    chunk_size = int(manifest["chunk_size"])
    size = int(manifest["size"])
    entries = [(index, _chunk_entry(raw, index)) for index, raw in enumerate(manifest["chunks"])]

    def stored_chunks() -> Iterator[tuple[int, bytes]]:
        for index, entry in entries:
            if entry is None:
                continue  # the new volume reads zeros there already
            data = store.get_chunk(entry[1], index)
            if hashlib.sha256(data).hexdigest() != entry[0]:
                raise StorageError(f"chunk {index} of backup {spec.id} is corrupt (its SHA-256 does not match)")
            yield index, data

    with backend.replace(target, size) as view:
        fd = os.open(view, os.O_WRONLY)
        try:
            for index, data in _read_ahead(stored_chunks()):
                os.pwrite(fd, data, index * chunk_size)
            os.fsync(fd)
        finally:
            os.close(fd)
    log.info("restored backup %s into volume %s", spec.id, target)
    return {"restore_volume_id": target, "size": size}


def backup_delete(spec: BackupSpec, store: BackupStore) -> None:
    """Remove a backup; refused while incremental backups depend on it. A missing one is fine."""
    checked_id(spec.id, "backup id")
    children = sorted(m.get("backup_id", "?") for m in store.manifests() if m.get("parent_id") == spec.id)
    if children:
        raise StorageError(f"backup {spec.id} has incremental backups that depend on it "
                           f"({', '.join(children)}): delete them first")
    store.discard(spec.id)
