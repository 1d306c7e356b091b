"""The file backend: qcow2 files in a pool directory (``CLOUDMGR_VOLUME_DIR``).

Layout (every name is derived from an id checked by :func:`agents.config.safe_component`)::

    volume-<id>.qcow2      a volume: always a leaf, never anyone's backing file
    snapshot-<id>.qcow2    a snapshot: frozen; the backing file of its volume and of its clones
    snapshot-<id>.deleted  the snapshot was deleted while something still backs onto it
    base-<image_id>        a hard link to a cached image that volumes are overlays of
    .tmp-<name>~<random>   work in progress, renamed into place when complete

**Snapshots are external qcow2 files.** Taking one of a detached volume hard-links the volume's
file as ``snapshot-<id>.qcow2``, creates an overlay on it, and renames the overlay over the
volume's name: instant, copy-on-write, and at no moment is the volume missing (a crash leaves
the two names on one inode, which a retry completes). A volume cloned from a snapshot is an
overlay on it. Internal qcow2 snapshots were not chosen because a backing file cannot name an
internal snapshot (a clone would be a full copy), and qemu-img cannot take one while a guest
has the file open.

A snapshot of an *attached* volume is a point-in-time copy made by the process that holds it
(:mod:`agents.storage.volumes.holders`): crash-consistent while the guest keeps running.

Deleting a snapshot whose only dependant is its own detached volume merges it into that volume
(``qemu-img rebase`` onto the next live ancestor); otherwise (clones, or an attached volume)
the file stays, marked deleted, and is removed by the collector once nothing backs onto it.
Base images are hard links into the pool, so pruning the image cache never pulls a base from
under a volume, and they go the same way when their last volume does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agents.specs import VolumeConnection, VolumeSpec
from agents.storage import StorageError, image_cache, qemu_img
from agents.storage.image_cache import _backing_file as backing_file
from agents.storage.volumes.base import VIEWS, GiB, VolumeBackend, checked_id, key_lock
from agents.storage.volumes.config import VolumeConfig
from agents.storage.volumes.qsd import fuse_view

__all__ = ["FileBackend"]

log = logging.getLogger(__name__)

POOL_LOCK = ".pool"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBackend(VolumeBackend):
    name = "file"

    def __init__(self, config: VolumeConfig, *, cow_images: bool = True) -> None:
        super().__init__(config)
        self.pool = config.volume_dir
        # False: a volume from an image is a full copy, independent of the image cache.
        self.cow_images = cow_images

    # -- names -----------------------------------------------------------------------------

    def volume_path(self, volume_id: str) -> Path:
        return self.pool / f"volume-{checked_id(volume_id, 'volume id')}.qcow2"

    def snapshot_path(self, snapshot_id: str) -> Path:
        return self.pool / f"snapshot-{checked_id(snapshot_id, 'snapshot id')}.qcow2"

    def _retired(self, snapshot: Path) -> Path:
        return snapshot.with_suffix(".deleted")

    def _base_path(self, image_id: str) -> Path:
        return self.pool / f"base-{checked_id(image_id, 'image id')}"

    def _tmp(self, final: Path) -> Path:
        # "~" is outside the ids' alphabet: one object's work files never match another's glob.
        return self.pool / f".tmp-{final.stem}~{uuid.uuid4().hex[:8]}.qcow2"

    def _drop_leftovers(self, final: Path) -> None:
        """Remove the work files a crashed operation on ``final`` left (its lock is held)."""
        for leftover in self.pool.glob(f".tmp-{final.stem}~*.qcow2"):
            leftover.unlink(missing_ok=True)

    def _pool(self) -> Path:
        self.pool.mkdir(mode=0o755, parents=True, exist_ok=True)
        return self.pool

    @contextlib.contextmanager
    def _pool_lock(self) -> Iterator[None]:
        """Serialises changes of who backs onto what (new overlays on shared files, collection)."""
        with key_lock(self.config.run_dir / "locks" / self.name, POOL_LOCK):
            yield

    # -- volumes ---------------------------------------------------------------------------

    def exists(self, volume_id: str) -> bool:
        return self.volume_path(volume_id).exists()

    def size(self, volume_id: str) -> int:
        path = self.volume_path(volume_id)
        if not path.exists():
            raise StorageError(f"volume {volume_id} does not exist")
        return qemu_img.virtual_size(path, "qcow2")

    def create(self, spec: VolumeSpec) -> int:
        path = self.volume_path(spec.id)
        sources = [s for s in (spec.image, spec.source_snapshot_id, spec.source_volume_id) if s]
        if len(sources) > 1:
            raise StorageError("a volume has at most one source: an image, a snapshot or a volume")
        if spec.size_gb < 1:
            raise StorageError("a volume must be at least 1 GiB")
        size = spec.size_gb * GiB
        keys = [spec.id] + [k for k in (spec.source_snapshot_id, spec.source_volume_id) if k]
        with self.lock(*keys):
            if path.exists():
                return qemu_img.virtual_size(path, "qcow2")
            self._pool()
            self._drop_leftovers(path)
            tmp = self._tmp(path)
            try:
                if spec.image is not None:
                    self._from_image(spec, tmp, size)
                elif spec.source_snapshot_id:
                    self._from_snapshot(spec.source_snapshot_id, tmp, size)
                elif spec.source_volume_id:
                    self._from_volume(spec.source_volume_id, tmp, size)
                else:
                    qemu_img.create(tmp, "qcow2", size)
                os.replace(tmp, path)
                _fsync_dir(self.pool)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            log.info("created volume %s (%d GiB)", spec.id, spec.size_gb)
            return qemu_img.virtual_size(path, "qcow2")

    @staticmethod
    def _fits(source_size: int, size: int, what: str) -> None:
        if source_size > size:
            raise StorageError(f"the volume ({size // GiB} GiB) is smaller than its {what} "
                               f"({-(-source_size // GiB)} GiB)")

    def _from_image(self, spec: VolumeSpec, tmp: Path, size: int) -> None:
        image = spec.image
        cached = image_cache.ensure_image(image, self.config.image_cache_dir)
        self._fits(qemu_img.virtual_size(cached, image.disk_format), size, f"image {image.id}")
        if not self.cow_images:
            qemu_img.convert(cached, image.disk_format, tmp, "qcow2")
            qemu_img.resize(tmp, "qcow2", size)
            return
        base = self._base_path(image.id)
        with self._pool_lock():  # the collector must not take the base before the overlay exists
            if not base.exists():
                try:
                    os.link(cached, base)
                except OSError:  # another filesystem: a copy, which is immutable too
                    part = self._tmp(base)
                    try:
                        qemu_img.convert(cached, image.disk_format, part, image.disk_format)
                        os.chmod(part, 0o644)
                        os.replace(part, base)
                    except BaseException:
                        part.unlink(missing_ok=True)
                        raise
            qemu_img.create_overlay(tmp, base, image.disk_format, size)

    def _from_snapshot(self, snapshot_id: str, tmp: Path, size: int) -> None:
        snapshot = self.snapshot_path(snapshot_id)
        if not snapshot.exists() or self._retired(snapshot).exists():
            raise StorageError(f"snapshot {snapshot_id} does not exist")
        self._fits(qemu_img.virtual_size(snapshot, "qcow2"), size, f"snapshot {snapshot_id}")
        qemu_img.create_overlay(tmp, snapshot, "qcow2", size)

    def _from_volume(self, volume_id: str, tmp: Path, size: int) -> None:
        source = self.volume_path(volume_id)
        if not source.exists():
            raise StorageError(f"volume {volume_id} does not exist")
        source_size = qemu_img.virtual_size(source, "qcow2")
        self._fits(source_size, size, f"source volume {volume_id}")
        holder = self.holder(volume_id, source)
        if holder is not None:
            holder.copy_to(tmp, source_size)
        else:
            qemu_img.convert(source, "qcow2", tmp, "qcow2")
        if size > source_size:
            qemu_img.resize(tmp, "qcow2", size)

    def delete(self, volume_id: str) -> None:
        path = self.volume_path(volume_id)
        with self.lock(volume_id):
            if path.exists():
                self.refuse_if_held(volume_id, path, "delete")
                path.unlink()
                log.info("deleted volume %s", volume_id)
            if self.pool.exists():
                self._drop_leftovers(path)
                self.collect()

    def extend(self, volume_id: str, size_bytes: int) -> int:
        path = self.volume_path(volume_id)
        with self.lock(volume_id):
            if not path.exists():
                raise StorageError(f"volume {volume_id} does not exist")
            current = qemu_img.virtual_size(path, "qcow2")
            if size_bytes < current:
                raise StorageError(f"volume {volume_id} is {current // GiB} GiB: it cannot shrink")
            if size_bytes > current:
                holder = self.holder(volume_id, path)
                if holder is not None:
                    holder.resize(size_bytes)
                else:
                    qemu_img.resize(path, "qcow2", size_bytes)
                log.info("extended volume %s to %d bytes", volume_id, size_bytes)
            return qemu_img.virtual_size(path, "qcow2")

    # -- snapshots -------------------------------------------------------------------------

    def snapshot_create(self, snapshot_id: str, volume_id: str) -> int:
        path, snapshot = self.volume_path(volume_id), self.snapshot_path(snapshot_id)
        with self.lock(volume_id, snapshot_id):
            if not path.exists():
                raise StorageError(f"volume {volume_id} does not exist")
            if snapshot.exists() and not os.path.samefile(snapshot, path):
                return qemu_img.virtual_size(snapshot, "qcow2")
            size = qemu_img.virtual_size(path, "qcow2")
            self._drop_leftovers(snapshot)
            self._drop_leftovers(path)
            holder = self.holder(volume_id, path)
            if holder is not None:
                tmp = self._tmp(snapshot)
                try:
                    holder.copy_to(tmp, size)
                    os.replace(tmp, snapshot)
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise
            else:
                if not snapshot.exists():  # else a crash came between the link and the rename
                    os.link(path, snapshot)
                tmp = self._tmp(path)
                try:
                    qemu_img.create_overlay(tmp, snapshot, "qcow2", size)
                    os.chmod(snapshot, 0o644)  # a backing file that guests read
                    os.replace(tmp, path)  # the volume's name now points at the new overlay
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    if os.path.samefile(snapshot, path):
                        snapshot.unlink()
                    raise
            _fsync_dir(self.pool)
            log.info("snapshot %s of volume %s taken (%s)", snapshot_id, volume_id,
                     "copied through " + holder.description if holder else "copy-on-write")
            return size

    def snapshot_delete(self, snapshot_id: str, volume_id: str) -> None:
        snapshot, path = self.snapshot_path(snapshot_id), self.volume_path(volume_id)
        with self.lock(volume_id, snapshot_id):
            if snapshot.exists() and not self._retired(snapshot).exists():
                children = self._children().get(snapshot.name, [])
                if children == [path] and self.holder(volume_id, path) is None:
                    self._merge(path)
                    children = []
                if children:
                    self._retired(snapshot).touch()
                    log.info("snapshot %s deleted; its file stays while %s back onto it", snapshot_id,
                             ", ".join(c.name for c in children))
                else:
                    snapshot.unlink()
                    log.info("deleted snapshot %s", snapshot_id)
            if self.pool.exists():
                self.collect()

    def _merge(self, leaf: Path) -> None:
        """Rebase ``leaf`` past the snapshot it backs onto, and past deleted snapshots above that,
        onto the next live ancestor (or onto nothing): the skipped files' data is copied into it."""
        skipped = self._backing(leaf)
        ancestor = self._backing(Path(skipped[0])) if skipped else None
        while ancestor is not None and self._is_retired(Path(ancestor[0])):
            ancestor = self._backing(Path(ancestor[0]))
        if ancestor is None:
            qemu_img.rebase(leaf, "qcow2", None, None)
        else:
            qemu_img.rebase(leaf, "qcow2", ancestor[0], ancestor[1])

    @staticmethod
    def _backing(path: Path) -> tuple[str, str] | None:
        """``(backing file, its format)`` from the qcow2 header of ``path``, or None."""
        data = qemu_img.info(path, "qcow2")
        name = data.get("full-backing-filename") or data.get("backing-filename")
        if not name:
            return None
        if not data.get("backing-filename-format"):  # never probe a format
            raise StorageError(f"{path.name} does not record the format of its backing file")
        return name, data["backing-filename-format"]

    def _is_retired(self, path: Path) -> bool:
        return path.parent == self.pool and path.name.startswith("snapshot-") and self._retired(path).exists()

    # -- collection --------------------------------------------------------------------------

    def _children(self) -> dict[str, list[Path]]:
        """Pool file name -> the files in the pool (work in progress included) backing onto it."""
        children: dict[str, list[Path]] = {}
        for path in sorted(self.pool.glob("*.qcow2")):  # pathlib's "*" matches the .tmp- files too
            backing = backing_file(path)
            if backing and Path(backing).parent == self.pool:
                children.setdefault(Path(backing).name, []).append(path)
        return children

    def collect(self) -> list[str]:
        """Remove deleted snapshots and base images that nothing backs onto any more."""
        removed: list[str] = []
        with self._pool_lock():
            while True:
                children = self._children()
                garbage = [p for p in self.pool.glob("snapshot-*.qcow2")
                           if self._retired(p).exists() and p.name not in children]
                garbage += [p for p in self.pool.glob("base-*") if p.name not in children]
                if not garbage:
                    break
                for path in garbage:
                    path.unlink(missing_ok=True)
                    self._retired(path).unlink(missing_ok=True)
                    removed.append(path.name)
        if removed:
            log.info("collected %s", ", ".join(removed))
        return removed

    # -- data paths ------------------------------------------------------------------------

    def local_connection(self, volume_id: str) -> VolumeConnection:
        path = self.volume_path(volume_id)
        if not path.exists():
            raise StorageError(f"volume {volume_id} does not exist")
        return VolumeConnection(driver="file", path=str(path), format="qcow2")

    def blockdev(self, volume_id: str) -> dict[str, Any]:
        path = self.volume_path(volume_id)
        if not path.exists():
            raise StorageError(f"volume {volume_id} does not exist")
        return {"driver": "qcow2", "file": {"driver": "file", "filename": str(path)}}

    def _view_dir(self) -> Path:
        return self.config.run_dir / VIEWS / uuid.uuid4().hex[:12]

    @contextlib.contextmanager
    def read_view(self, *, volume_id: str | None = None, snapshot_id: str | None = None) -> Iterator[Path]:
        if snapshot_id:
            path, key = self.snapshot_path(snapshot_id), snapshot_id
            if self._retired(path).exists():
                raise StorageError(f"snapshot {snapshot_id} does not exist")
        elif volume_id:
            path, key = self.volume_path(volume_id), volume_id
        else:
            raise StorageError("read_view needs a volume or a snapshot")
        with self.lock(key):
            if not path.exists():
                raise StorageError(f"{'snapshot' if snapshot_id else 'volume'} {key} does not exist")
            if volume_id and not snapshot_id:
                self.refuse_if_held(volume_id, path, "back up")
            node = {"driver": "qcow2", "read-only": True,
                    "file": {"driver": "file", "filename": str(path), "read-only": True}}
            with fuse_view(node, self._view_dir(), writable=False) as view:
                yield view

    @contextlib.contextmanager
    def replace(self, volume_id: str, size_bytes: int) -> Iterator[Path]:
        path = self.volume_path(volume_id)
        with self.lock(volume_id):
            if path.exists():
                self.refuse_if_held(volume_id, path, "restore into")
                size_bytes = max(size_bytes, qemu_img.virtual_size(path, "qcow2"))
            self._pool()
            self._drop_leftovers(path)
            tmp = self._tmp(path)
            try:
                qemu_img.create(tmp, "qcow2", size_bytes)
                node = {"driver": "qcow2", "discard": "unmap", "file": {"driver": "file", "filename": str(tmp)}}
                with fuse_view(node, self._view_dir(), writable=True) as view:
                    yield view
                os.replace(tmp, path)
                _fsync_dir(self.pool)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
