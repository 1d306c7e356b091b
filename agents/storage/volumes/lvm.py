"""The LVM backend: thin volumes in a thin pool (``CLOUDMGR_VOLUME_GROUP``/``CLOUDMGR_THIN_POOL``).

LV names: ``volume-<id>`` and ``snap-<id>`` (ids checked by
:func:`agents.config.safe_component`, whose alphabet LVM accepts; LVM reserves names starting
with "snapshot"). The operator creates the
volume group and its thin pool (``lvcreate --type thin-pool``); the backend only makes thin
volumes in it, so it never touches another LV of the group.

Device-mapper makes thin snapshots atomic even while the origin is open, so a snapshot of an
attached volume needs no help from its holder, and clones (from a snapshot or from a volume) are
thin snapshots too: instant and copy-on-write. They are made with ``lvcreate --type thin -n NAME
VG/ORIGIN`` (lvcreate's explicit form of a thin snapshot): ``lvcreate -s`` also requires the old
copy-on-write snapshot target (dm-snapshot), which a host may not have. A thin snapshot does not depend on its origin,
so a snapshot with clones can be deleted at once. Volumes from an image are written with
``qemu-img convert`` into a new thin volume. Thin snapshots carry LVM's activation-skip flag;
they are activated (``-K``) only while a backup reads them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agents.specs import VolumeConnection, VolumeSpec
from agents.storage import StorageError, image_cache, qemu_img, run_tool
from agents.storage.volumes.base import GiB, VolumeBackend, checked_id
from agents.storage.volumes.config import VolumeConfig
from agents.storage.volumes.holders import DaemonHolder

__all__ = ["LvmBackend"]

log = logging.getLogger(__name__)

LVM_TIMEOUT = 120
# LVM reserves names that start with "snapshot" (and "pvmove").
LV_PREFIXES = {"volume": "volume-", "snapshot": "snap-"}
COPY_TIMEOUT = 3600
# LVM warns about every inherited descriptor (Celery's pipes) on stderr: noise, not errors.
LVM_ENV = {"LVM_SUPPRESS_FD_WARNINGS": "1"}


def _run(args: Sequence[str], timeout: float = LVM_TIMEOUT) -> str:
    return run_tool(args, timeout=timeout, env={**os.environ, **LVM_ENV}, install_hint=" (package lvm2)")


class LvmBackend(VolumeBackend):
    name = "lvm"

    def __init__(self, config: VolumeConfig) -> None:
        super().__init__(config)
        if not config.volume_group:
            raise StorageError("the lvm backend is not configured on this host: set CLOUDMGR_VOLUME_GROUP")
        self.vg = config.volume_group
        self.pool = config.thin_pool

    # -- names and queries -------------------------------------------------------------------

    def _lv(self, kind: str, object_id: str) -> str:
        return f"{LV_PREFIXES[kind]}{checked_id(object_id, kind + ' id')}"

    def device(self, lv: str) -> Path:
        return Path("/dev") / self.vg / lv

    def _attr(self, lv: str, field: str) -> str | None:
        """One ``lvs`` field of ``lv``, or None if the LV does not exist."""
        try:
            out = _run(["lvs", "--noheadings", "--units", "b", "--nosuffix", "-o", field, f"{self.vg}/{lv}"])
        except StorageError as exc:
            if "not found" in str(exc) or "Failed to find logical volume" in str(exc):
                return None
            raise
        return out.strip()

    def _exists(self, lv: str) -> bool:
        return self._attr(lv, "lv_name") is not None

    def _size(self, lv: str) -> int:
        value = self._attr(lv, "lv_size")
        if value is None:
            raise StorageError(f"{lv} does not exist in volume group {self.vg}")
        return int(value)

    def exists(self, volume_id: str) -> bool:
        return self._exists(self._lv("volume", volume_id))

    def size(self, volume_id: str) -> int:
        return self._size(self._lv("volume", volume_id))

    def _remove(self, lv: str) -> None:
        if self._exists(lv):
            _run(["lvremove", "-y", f"{self.vg}/{lv}"])

    # -- volumes ---------------------------------------------------------------------------

    def create(self, spec: VolumeSpec) -> int:
        lv = self._lv("volume", spec.id)
        sources = [s for s in (spec.image, spec.source_snapshot_id, spec.source_volume_id) if s]
        if len(sources) > 1:
            raise StorageError("a volume has at most one source: an image, a snapshot or a volume")
        if spec.size_gb < 1:
            raise StorageError("a volume must be at least 1 GiB")
        size = spec.size_gb * GiB
        keys = [spec.id] + [k for k in (spec.source_snapshot_id, spec.source_volume_id) if k]
        with self.lock(*keys):
            if self._exists(lv):
                return self._size(lv)
            work = f"{lv}.new"  # renamed into place when complete; a crash leaves only this
            self._remove(work)
            try:
                if spec.source_snapshot_id or spec.source_volume_id:
                    origin = (self._lv("snapshot", spec.source_snapshot_id) if spec.source_snapshot_id
                              else self._lv("volume", spec.source_volume_id))
                    origin_size = self._size(origin)
                    self._fits(origin_size, size, origin)
                    _run(["lvcreate", "--type", "thin", "-kn", "-ay", "-n", work, f"{self.vg}/{origin}"])
                    if size > origin_size:
                        _run(["lvextend", "-L", f"{size}b", f"{self.vg}/{work}"])
                else:
                    image_path = fmt = None
                    if spec.image is not None:
                        image_path = image_cache.ensure_image(spec.image, self.config.image_cache_dir)
                        fmt = spec.image.disk_format
                        self._fits(qemu_img.virtual_size(image_path, fmt), size, f"image {spec.image.id}")
                    _run(["lvcreate", "-T", f"{self.vg}/{self.pool}", "-V", f"{size}b", "-n", work])
                    if image_path is not None:
                        qemu_img.convert(image_path, fmt, self.device(work), "raw", target_exists=True,
                                         timeout=COPY_TIMEOUT)
                _run(["lvrename", self.vg, work, lv])
            except BaseException:
                with contextlib.suppress(StorageError):
                    self._remove(work)
                raise
            log.info("created volume %s (%d GiB) in %s", spec.id, spec.size_gb, self.vg)
            return self._size(lv)

    @staticmethod
    def _fits(source_size: int, size: int, what: str) -> None:
        if source_size > size:
            raise StorageError(f"the volume ({size // GiB} GiB) is smaller than its source {what} "
                               f"({-(-source_size // GiB)} GiB)")

    def delete(self, volume_id: str) -> None:
        lv = self._lv("volume", volume_id)
        with self.lock(volume_id):
            if self._exists(lv):
                self.refuse_if_held(volume_id, self.device(lv), "delete")
                _run(["lvremove", "-y", f"{self.vg}/{lv}"])
                log.info("deleted volume %s", volume_id)
            self._remove(f"{lv}.new")

    def extend(self, volume_id: str, size_bytes: int) -> int:
        lv = self._lv("volume", volume_id)
        with self.lock(volume_id):
            current = self._size(lv)
            if size_bytes < current:
                raise StorageError(f"volume {volume_id} is {current // GiB} GiB: it cannot shrink")
            if size_bytes > current:
                holder = self.holder(volume_id, self.device(lv))
                if isinstance(holder, DaemonHolder):
                    holder.resize(size_bytes)  # refuses, with the reason, before anything changes
                _run(["lvextend", "-L", f"{size_bytes}b", f"{self.vg}/{lv}"])
                if holder is not None:
                    holder.resize(size_bytes)  # QEMU re-reads the device's size; the guest is told
                log.info("extended volume %s to %d bytes", volume_id, size_bytes)
            return self._size(lv)

    # -- snapshots -------------------------------------------------------------------------

    def snapshot_create(self, snapshot_id: str, volume_id: str) -> int:
        lv, snap = self._lv("volume", volume_id), self._lv("snapshot", snapshot_id)
        with self.lock(volume_id, snapshot_id):
            if not self._exists(snap):
                _run(["lvcreate", "--type", "thin", "-n", snap, f"{self.vg}/{lv}"])
                log.info("snapshot %s of volume %s taken", snapshot_id, volume_id)
            return self._size(snap)

    def snapshot_delete(self, snapshot_id: str, volume_id: str) -> None:
        with self.lock(volume_id, snapshot_id):
            self._remove(self._lv("snapshot", snapshot_id))

    # -- data paths ------------------------------------------------------------------------

    def local_connection(self, volume_id: str) -> VolumeConnection:
        lv = self._lv("volume", volume_id)
        if not self._exists(lv):
            raise StorageError(f"volume {volume_id} does not exist")
        _run(["lvchange", "-ay", f"{self.vg}/{lv}"])
        return VolumeConnection(driver="block", path=str(self.device(lv)), format="raw")

    def blockdev(self, volume_id: str) -> dict[str, Any]:
        path = self.local_connection(volume_id).path
        return {"driver": "raw", "file": {"driver": "host_device", "filename": path}}

    @contextlib.contextmanager
    def read_view(self, *, volume_id: str | None = None, snapshot_id: str | None = None) -> Iterator[Path]:
        if snapshot_id:
            lv, key = self._lv("snapshot", snapshot_id), snapshot_id
        elif volume_id:
            lv, key = self._lv("volume", volume_id), volume_id
        else:
            raise StorageError("read_view needs a volume or a snapshot")
        with self.lock(key):
            if not self._exists(lv):
                raise StorageError(f"{'snapshot' if snapshot_id else 'volume'} {key} does not exist")
            if not snapshot_id:
                self.refuse_if_held(volume_id, self.device(lv), "back up")
            _run(["lvchange", "-ay", "-K", f"{self.vg}/{lv}"])
            try:
                yield self.device(lv)
            finally:
                if snapshot_id:
                    with contextlib.suppress(StorageError):
                        _run(["lvchange", "-an", f"{self.vg}/{lv}"])

    @contextlib.contextmanager
    def replace(self, volume_id: str, size_bytes: int) -> Iterator[Path]:
        lv = self._lv("volume", volume_id)
        work = f"{lv}.new"
        with self.lock(volume_id):
            if self._exists(lv):
                self.refuse_if_held(volume_id, self.device(lv), "restore into")
                size_bytes = max(size_bytes, self._size(lv))
            self._remove(work)
            _run(["lvcreate", "-T", f"{self.vg}/{self.pool}", "-V", f"{size_bytes}b", "-n", work])
            try:
                yield self.device(work)
                self._remove(lv)
                _run(["lvrename", self.vg, work, lv])
            except BaseException:
                with contextlib.suppress(StorageError):
                    self._remove(work)
                raise
