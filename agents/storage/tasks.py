"""Celery entry points of the storage agent, registered under the volume names in :mod:`agents.names`.

The control plane sends them by name to the storage host's queue, with the callback
``names.CALLBACK_VOLUME_DONE`` linked (``volume_export`` is a synchronous call: its result is
stored). Each returns, never raises, one result dict::

    {"task": <task name>, "kind": "volume" | "snapshot" | "backup", "id": <object id>,
     "volume_id": <the volume concerned>, "host": <this agent's hostname>,
     "ok": bool, "error": str | None, ...details}

with the details ``volume_create``/``volume_extend``/``snapshot_create``: ``size_gb`` (the
size on the backend); ``volume_export``: ``connection`` (a ``VolumeConnection`` as a dict);
``backup_create``: ``size`` (bytes), ``object_count`` (chunks stored), ``stored_bytes``,
``chunks``, ``incremental``; ``backup_restore``: ``restore_volume_id`` (the volume written) and
``size``.
A malformed spec or one of an unknown version is ``ok: False`` with the reason.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from agents import names
from agents.config import get_config
from agents.specs import BackupSpec, SnapshotSpec, SpecVersionError, VolumeSpec
from agents.storage import StorageError
from agents.storage.volumes import VolumeDriver, get_volume_driver
from agents.worker import app

__all__ = ["backup_create", "backup_delete", "backup_restore", "snapshot_create", "snapshot_delete", "volume_create",
           "volume_delete", "volume_export", "volume_extend", "volume_unexport"]

log = logging.getLogger(__name__)


def _hostname() -> str:
    try:
        return get_config().hostname
    except Exception:  # noqa: BLE001 - a misconfigured agent still answers
        return ""


def result(task: str, kind: str, object_id: str, volume_id: str, ok: bool, error: str | None = None,
           **details: Any) -> dict[str, Any]:
    return {"task": task, "kind": kind, "id": object_id, "volume_id": volume_id, "host": _hostname(), "ok": ok,
            "error": error, **details}


def _field(data: Any, key: str) -> str:
    if isinstance(data, dict) and isinstance(data.get(key), str):
        return data[key]
    return ""


def _execute(task: str, kind: str, cls, data: Any, call: Callable[[VolumeDriver, Any], dict | None]) -> dict[str, Any]:
    """Parse the spec, run one driver call; every failure becomes ``ok: False`` with a reason."""
    object_id = _field(data, "id")
    volume_id = _field(data, "volume_id") if kind != "volume" else object_id
    try:
        spec = cls.from_dict(data)
    except SpecVersionError as exc:
        return result(task, kind, object_id, volume_id, False, str(exc))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        return result(task, kind, object_id, volume_id, False, f"invalid {kind} spec: {exc}")
    try:
        driver = get_volume_driver()
    except Exception as exc:
        log.exception("no volume driver")
        return result(task, kind, object_id, volume_id, False, f"the storage agent is misconfigured: {exc}")
    try:
        details = call(driver, spec) or {}
    except StorageError as exc:
        log.warning("%s of %s %s failed: %s", task, kind, object_id, exc)
        return result(task, kind, object_id, volume_id, False, str(exc))
    except Exception as exc:
        log.exception("%s of %s %s failed unexpectedly", task, kind, object_id)
        return result(task, kind, object_id, volume_id, False,
                      f"internal error in the storage agent: {exc.__class__.__name__}: {exc}")
    return result(task, kind, object_id, volume_id, True, None, **details)


@app.task(name=names.TASK_VOLUME_CREATE)
def volume_create(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Create a volume (``VolumeSpec``): empty, from an image, a snapshot or a volume."""
    return _execute(names.TASK_VOLUME_CREATE, "volume", VolumeSpec, spec_dict, lambda d, s: d.volume_create(s))


@app.task(name=names.TASK_VOLUME_DELETE)
def volume_delete(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Delete a volume (a missing one is fine; an attached one is refused)."""
    return _execute(names.TASK_VOLUME_DELETE, "volume", VolumeSpec, spec_dict, lambda d, s: d.volume_delete(s))


@app.task(name=names.TASK_VOLUME_EXTEND)
def volume_extend(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Grow a volume to ``size_gb``; an attached one grows through the guest holding it."""
    return _execute(names.TASK_VOLUME_EXTEND, "volume", VolumeSpec, spec_dict, lambda d, s: d.volume_extend(s))


@app.task(name=names.TASK_VOLUME_EXPORT, ignore_result=False)
def volume_export(spec_dict: dict[str, Any], host: str | None = None) -> dict[str, Any]:
    """How compute ``host`` reaches the volume (a synchronous call): ``connection`` is a local
    path when ``host`` is this storage host (or None), an NBD export otherwise."""

    def call(driver: VolumeDriver, spec: VolumeSpec) -> dict[str, Any]:
        return {"connection": dataclasses.asdict(driver.volume_export(spec, host))}

    return _execute(names.TASK_VOLUME_EXPORT, "volume", VolumeSpec, spec_dict, call)


@app.task(name=names.TASK_VOLUME_UNEXPORT)
def volume_unexport(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Stop a volume's NBD export (after a detach); none running is fine."""
    return _execute(names.TASK_VOLUME_UNEXPORT, "volume", VolumeSpec, spec_dict, lambda d, s: d.volume_unexport(s))


@app.task(name=names.TASK_SNAPSHOT_CREATE)
def snapshot_create(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Snapshot a volume (``SnapshotSpec``), crash-consistent also while it is attached."""
    return _execute(names.TASK_SNAPSHOT_CREATE, "snapshot", SnapshotSpec, spec_dict,
                    lambda d, s: d.snapshot_create(s))


@app.task(name=names.TASK_SNAPSHOT_DELETE)
def snapshot_delete(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Delete a snapshot; volumes made from it keep their data."""
    return _execute(names.TASK_SNAPSHOT_DELETE, "snapshot", SnapshotSpec, spec_dict,
                    lambda d, s: d.snapshot_delete(s))


@app.task(name=names.TASK_BACKUP_CREATE)
def backup_create(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Back up a volume (``BackupSpec``; from ``snapshot_id`` if set; incremental on ``parent_id``)."""
    return _execute(names.TASK_BACKUP_CREATE, "backup", BackupSpec, spec_dict, lambda d, s: d.backup_create(s))


@app.task(name=names.TASK_BACKUP_RESTORE)
def backup_restore(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Restore a backup into ``restore_volume_id`` (created if missing, replaced when complete)."""
    return _execute(names.TASK_BACKUP_RESTORE, "backup", BackupSpec, spec_dict, lambda d, s: d.backup_restore(s))


@app.task(name=names.TASK_BACKUP_DELETE)
def backup_delete(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Delete a backup; refused while incremental backups depend on it."""
    return _execute(names.TASK_BACKUP_DELETE, "backup", BackupSpec, spec_dict, lambda d, s: d.backup_delete(s))
