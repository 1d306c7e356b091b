"""Celery entry points of the agents, registered under the names in :mod:`agents.names`.

The control plane sends them by name to a host's queue and links its callback (``link=``) to
``spawn``/``destroy``; the callback receives the result dict as its first argument::

    {"instance_id": str, "ok": bool, "error": str | None, "power_state": int}

These tasks never raise for an operation failure (an errback called by name would lose the
exception): a ``ComputeError``/``StorageError``, an unknown spec version or an invalid spec becomes
``ok: False`` with a readable ``error``, and a failed spawn best-effort destroys the instance on this
host (domain and instance directory). Transient failures (the hypervisor connection is down) are
retried with exponential backoff, ``MAX_RETRIES`` times; after that the task returns ``ok: False``
too, so the callback always runs exactly once per delivered operation.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from agents import names
from agents.compute.driver import ComputeError, get_driver
from agents.config import get_config
from agents.network import NetworkError
from agents.network.driver import get_network_driver
from agents.specs import (
    POWER_NOSTATE,
    DomainSpec,
    InstanceRef,
    OperationSpec,
    PasswordSpec,
    SpecVersionError,
    VolumeAttachSpec,
)
from agents.storage import StorageError, image_cache
from agents.uptime import host_uptime
from agents.worker import app

__all__ = ["MAX_RETRIES", "OPERATION_TASKS", "console_log", "destroy", "image_cache_prune", "operate", "spawn",
           "sync_interfaces", "volume_attach", "volume_detach", "volume_resized"]

log = logging.getLogger(__name__)

MAX_RETRIES = 5
RETRY_BASE_SECONDS = 2
RETRY_MAX_SECONDS = 60

OPERATION_ERRORS = (ComputeError, StorageError)


def result(instance_id: str, ok: bool, error: str | None = None, power_state: int = POWER_NOSTATE) -> dict[str, Any]:
    return {"instance_id": instance_id, "ok": ok, "error": error, "power_state": int(power_state)}


def _instance_id_of(data: Any) -> str:
    if isinstance(data, dict) and data.get("instance_id") is not None:
        return str(data["instance_id"])
    return ""


def _retry_countdown(retries: int) -> float:
    delay = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * (2**retries))
    return delay * random.uniform(0.8, 1.2)


def _should_retry(task, exc: Exception) -> bool:
    return (
        bool(getattr(exc, "transient", False))
        and not task.request.called_directly
        and task.request.retries < MAX_RETRIES
    )


def _current_state(driver, instance_id: str) -> int:
    try:
        return driver.power_state(instance_id)
    except Exception:  # noqa: BLE001 - best effort: the failure itself is what gets reported
        return POWER_NOSTATE


def _cleanup(driver, instance_id: str) -> None:
    try:
        driver.destroy(instance_id)
    except Exception:
        log.exception("cleaning up instance %s after a failed spawn failed", instance_id)


def _parse(cls, data: Any, what: str):
    """(spec, None), or (None, a failure result) when the spec cannot be read."""
    try:
        return cls.from_dict(data), None
    except SpecVersionError as exc:
        return None, result(_instance_id_of(data), False, str(exc))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        return None, result(_instance_id_of(data), False, f"invalid {what}: {exc}")


def _operate(task, verb: str, instance_id: str, operation, *, cleanup: bool = False) -> dict[str, Any]:
    """Run one driver operation (it returns the power state): retry transient errors, turn every
    other failure into ``ok: False`` with a readable reason."""
    try:
        driver = get_driver()
    except Exception as exc:
        log.exception("no compute driver")
        return result(instance_id, False, f"the compute agent is misconfigured: {exc}")
    try:
        power_state = operation(driver)
    except Exception as exc:
        if _should_retry(task, exc):
            log.warning("%s of %s failed transiently (%s); retrying", verb, instance_id, exc)
            raise task.retry(exc=exc, countdown=_retry_countdown(task.request.retries))
        if isinstance(exc, OPERATION_ERRORS):
            log.warning("%s of %s failed: %s", verb, instance_id, exc)
            message = str(exc)
        else:
            log.exception("%s of %s failed unexpectedly", verb, instance_id)
            message = f"internal error in the compute agent: {exc.__class__.__name__}: {exc}"
        if cleanup:
            _cleanup(driver, instance_id)
        return result(instance_id, False, message, _current_state(driver, instance_id))
    return result(instance_id, True, None, power_state)


@app.task(name=names.TASK_SPAWN, bind=True, max_retries=MAX_RETRIES)
def spawn(self, spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Create and start an instance from a ``DomainSpec.to_dict()``; a failed spawn is cleaned up.

    The result also carries ``timings``: when this agent began and finished (epoch seconds) and
    the seconds each stage of the driver's spawn took; the callback logs them for the boot
    benchmark's breakdown."""
    received_at = time.time()
    spec, failure = _parse(DomainSpec, spec_dict, "instance spec")
    if failure:
        return failure
    stages: dict[str, float] = {}

    def operation(driver) -> int:
        out = driver.spawn(spec)
        stages.update(out.get("stages") or {})
        return out.get("power_state", POWER_NOSTATE)

    out = _operate(self, "spawn", spec.instance_id, operation, cleanup=True)
    out["timings"] = {"received_at": received_at, "finished_at": time.time(), "stages": stages}
    return out


@app.task(name=names.TASK_DESTROY, bind=True, max_retries=MAX_RETRIES)
def destroy(self, ref_dict: dict[str, Any]) -> dict[str, Any]:
    """Stop and remove an instance (``InstanceRef.to_dict()``); a missing instance is fine."""
    ref, failure = _parse(InstanceRef, ref_dict, "instance reference")
    if failure:
        return failure

    def operation(driver) -> int:
        driver.destroy(ref.instance_id)
        return POWER_NOSTATE

    return _operate(self, "destroy", ref.instance_id, operation)


def _run_operation(driver, spec: OperationSpec) -> int:
    op, iid = spec.operation, spec.instance_id
    if op in ("resize", "rebuild", "rescue", "unrescue") and spec.domain is None:
        raise ComputeError(f"{op} needs the instance's domain spec")
    if op == "snapshot" and not spec.upload_url:
        raise ComputeError(f"{op} needs an upload URL")
    if spec.domain is not None and spec.domain.instance_id != iid:
        raise ComputeError("the domain spec is for another instance")
    calls = {
        "start": lambda: driver.start(iid),
        "stop": lambda: driver.stop(iid, spec.timeout),
        "reboot": lambda: driver.reboot(iid, spec.hard, spec.timeout),
        "pause": lambda: driver.pause(iid),
        "unpause": lambda: driver.unpause(iid),
        "suspend": lambda: driver.suspend(iid),
        "resume": lambda: driver.resume(iid),
        "resize": lambda: driver.resize(spec.domain, spec.timeout, spec.start),
        "rebuild": lambda: driver.rebuild(spec.domain, spec.timeout),
        "snapshot": lambda: driver.snapshot(iid, spec.upload_url, spec.upload_token),
        "rescue": lambda: driver.rescue(spec.domain, spec.timeout),
        "unrescue": lambda: driver.unrescue(spec.domain),
        "trigger_crash_dump": lambda: driver.trigger_crash_dump(iid),
        "shelve": lambda: _shelve(driver, spec),
    }
    if op not in calls:
        raise ComputeError(f"unknown operation {op!r}")
    return calls[op]()


def _shelve(driver, spec: OperationSpec) -> int:
    """Stop the guest cleanly (a suspended one loses its memory, as Nova's shelve), upload its
    root disk, then remove the domain and its files: the control plane keeps the image. With no
    upload URL (a server booted from a volume, whose root disk is the volume) nothing is
    uploaded. Volumes are never among the files removed."""
    driver.stop(spec.instance_id, spec.timeout)
    if spec.upload_url:
        driver.snapshot(spec.instance_id, spec.upload_url, spec.upload_token)
    driver.destroy(spec.instance_id)
    return POWER_NOSTATE


def operate(task, spec_dict: dict[str, Any], expected: str) -> dict[str, Any]:
    """Run one lifecycle operation (an ``OperationSpec``); the result says which one it was."""
    spec, failure = _parse(OperationSpec, spec_dict, "operation spec")
    if failure:
        failure["operation"] = expected
        return failure
    if spec.operation != expected:
        out = result(spec.instance_id, False, f"task {expected} got a {spec.operation!r} operation")
    else:
        out = _operate(task, spec.operation, spec.instance_id, lambda d: _run_operation(d, spec))
    out["operation"] = expected
    out["hard"] = bool(spec.hard)
    out["image_id"] = spec.image_id
    out["rotation"] = spec.rotation
    return out


def _operation_task(operation: str):
    def run(self, spec_dict: dict[str, Any]) -> dict[str, Any]:
        return operate(self, spec_dict, operation)

    run.__name__ = run.__qualname__ = f"operation_{operation}"
    run.__doc__ = f"Lifecycle operation {operation!r} on an existing instance (an ``OperationSpec``)."
    return app.task(name=names.operation_task(operation), bind=True, max_retries=MAX_RETRIES)(run)


OPERATION_TASKS = {operation: _operation_task(operation) for operation in names.OPERATIONS}


@app.task(name=names.TASK_CONSOLE_LOG, ignore_result=False)
def console_log(ref_dict: dict[str, Any], length: int | None = None) -> dict[str, Any]:
    """``{"output": str}``: the last ``length`` lines of the serial console (all if ``None``).

    On failure the output is empty and an ``"error"`` key says why (this task never raises).
    """
    try:
        driver = get_driver()
    except Exception as exc:
        log.exception("no compute driver")
        return {"output": "", "error": f"the compute agent is misconfigured: {exc}"}
    try:
        ref = InstanceRef.from_dict(ref_dict)
        if length is not None:
            length = int(length)
        return {"output": driver.console_log(ref.instance_id, length)}
    except (SpecVersionError, ComputeError, StorageError) as exc:
        return {"output": "", "error": str(exc)}
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        return {"output": "", "error": f"invalid console request: {exc}"}
    except Exception as exc:
        log.exception("reading the console of %s failed", _instance_id_of(ref_dict))
        return {"output": "", "error": f"internal error in the compute agent: {exc.__class__.__name__}: {exc}"}


@app.task(name=names.TASK_DIAGNOSTICS, ignore_result=False)
def diagnostics(ref_dict: dict[str, Any]) -> dict[str, Any]:
    """``{"diagnostics": {counter: value}, "error": None}`` of a running instance, or
    ``{"diagnostics": None, "error"}``."""
    def read() -> dict[str, Any]:
        ref = InstanceRef.from_dict(ref_dict)
        return {"diagnostics": get_driver().diagnostics(ref.instance_id), "error": None}

    return _answer("diagnostics", ref_dict, {"diagnostics": None}, read)


@app.task(name=names.TASK_SET_PASSWORD, ignore_result=False)
def set_password(spec_dict: dict[str, Any]) -> dict[str, Any]:
    """``{"ok": True, "error": None}`` once the guest agent has set the password (a
    ``PasswordSpec``), else ``{"ok": False, "error"}``. The password is never logged nor answered."""
    def set_it() -> dict[str, Any]:
        spec = PasswordSpec.from_dict(spec_dict)
        get_driver().set_password(spec.instance_id, spec.user, spec.password)
        return {"ok": True, "error": None}

    return _answer("password", spec_dict, {"ok": False}, set_it)


@app.task(name=names.TASK_HOST_UPTIME, ignore_result=False)
def host_uptime_call(_payload: dict[str, Any]) -> dict[str, Any]:
    """``{"uptime": line, "error": None}``, or ``{"uptime": None, "error"}``."""
    try:
        return {"uptime": host_uptime(), "error": None}
    except (OSError, ValueError, IndexError) as exc:
        return {"uptime": None, "error": f"cannot read the host's uptime: {exc}"}


def _answer(kind: str, spec_dict: dict[str, Any], failed: dict[str, Any], work) -> dict[str, Any]:
    """``work()``'s answer to a call, or ``failed`` with an ``error`` that says why: a call never
    raises. Only the exception's class is told of a malformed request, so no argument (a
    password) is echoed."""
    try:
        return work()
    except (SpecVersionError, ComputeError, StorageError) as exc:
        return {**failed, "error": str(exc)}
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        return {**failed, "error": f"invalid {kind} request: {exc.__class__.__name__}"}
    except Exception as exc:
        log.exception("the %s call for %s failed", kind, _instance_id_of(spec_dict))
        return {**failed, "error": f"internal error in the compute agent: {exc.__class__.__name__}"}


@app.task(name=names.TASK_VNC_ADDRESS, ignore_result=False)
def vnc_address(ref_dict: dict[str, Any]) -> dict[str, Any]:
    """``{"host", "port"}`` of the instance's VNC server (localhost), or ``{"error"}``."""
    try:
        ref = InstanceRef.from_dict(ref_dict)
        host, port = get_driver().vnc_address(ref.instance_id)
        return {"host": host, "port": port, "error": None}
    except (SpecVersionError, ComputeError, StorageError) as exc:
        return {"host": None, "port": None, "error": str(exc)}
    except Exception as exc:
        log.exception("finding the console of %s failed", _instance_id_of(ref_dict))
        return {"host": None, "port": None, "error": f"internal error in the compute agent: {exc}"}


@app.task(name=names.TASK_IMAGE_CACHE_PRUNE, ignore_result=False)
def image_cache_prune(request: dict[str, Any]) -> dict[str, Any]:
    """Remove cached base images unused for ``request["max_age"]`` seconds that no instance on
    this host is based on. ``{"ok", "removed": [ids], "kept": int, "freed_bytes", "error"}``."""
    try:
        config = get_config()
        pruned = image_cache.prune(
            config.image_cache_dir,
            max_age=float(request["max_age"]),
            in_use=image_cache.images_in_use(config.instances_dir),
        )
    except Exception as exc:
        log.exception("pruning the image cache failed")
        return {"ok": False, "removed": [], "kept": 0, "freed_bytes": 0, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "removed": pruned.removed, "kept": len(pruned.kept), "freed_bytes": pruned.freed_bytes,
            "error": None}


@app.task(name=names.TASK_SYNC_INTERFACES, bind=True, max_retries=MAX_RETRIES, ignore_result=False)
def sync_interfaces(self, spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Plug the NICs of a ``DomainSpec`` into their bridges and attach/detach them so that the
    domain has exactly those (os-interface). A synchronous call: its result is stored."""
    spec, failure = _parse(DomainSpec, spec_dict, "instance spec")
    if failure:
        return failure

    def operation(driver) -> int:
        try:
            get_network_driver().plug_nics(spec.nics)
        except NetworkError as exc:
            raise ComputeError(f"cannot plug the network interfaces: {exc}") from None
        return driver.sync_interfaces(spec)

    return _operate(self, "interface change", spec.instance_id, operation)


# -- volumes: hot-plug on the compute host (results go to names.CALLBACK_VOLUME_DONE) --------


def _volume_result(task: str, data: Any, ok: bool, error: str | None = None, **details: Any) -> dict[str, Any]:
    """The storage agent's result shape (``agents.storage.tasks``) plus the instance and device."""
    fields = data if isinstance(data, dict) else {}
    volume_id = str(fields.get("volume_id") or "")
    return {"task": task, "kind": "attachment", "id": volume_id, "volume_id": volume_id,
            "instance_id": str(fields.get("instance_id") or ""), "device": fields.get("device"),
            "host": get_config().hostname, "ok": ok, "error": error, **details}


def _volume_operation(task, name: str, spec_dict: dict[str, Any], call) -> dict[str, Any]:
    """Run one volume operation of the compute driver: transient errors are retried, every other
    failure is ``ok: False`` with a readable reason."""
    try:
        spec = VolumeAttachSpec.from_dict(spec_dict)
    except SpecVersionError as exc:
        return _volume_result(name, spec_dict, False, str(exc))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        return _volume_result(name, spec_dict, False, f"invalid attachment spec: {exc}")
    try:
        driver = get_driver()
        details = call(driver, spec)
    except Exception as exc:
        if _should_retry(task, exc):
            log.warning("%s of volume %s failed transiently (%s); retrying", name, spec.volume_id, exc)
            raise task.retry(exc=exc, countdown=_retry_countdown(task.request.retries))
        if isinstance(exc, OPERATION_ERRORS):
            log.warning("%s of volume %s failed: %s", name, spec.volume_id, exc)
            message = str(exc)
        else:
            log.exception("%s of volume %s failed unexpectedly", name, spec.volume_id)
            message = f"internal error in the compute agent: {exc.__class__.__name__}: {exc}"
        return _volume_result(name, spec_dict, False, message)
    return _volume_result(name, spec_dict, True, None, **details)


@app.task(name=names.TASK_VOLUME_ATTACH, bind=True, max_retries=MAX_RETRIES)
def volume_attach(self, spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Hot-plug a volume (``VolumeAttachSpec`` with its connection) into an instance."""
    return _volume_operation(self, names.TASK_VOLUME_ATTACH, spec_dict,
                             lambda driver, spec: {"power_state": driver.volume_attach(spec)})


@app.task(name=names.TASK_VOLUME_DETACH, bind=True, max_retries=MAX_RETRIES)
def volume_detach(self, spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Unplug a volume, waiting up to ``timeout`` s for the guest to release it."""
    return _volume_operation(self, names.TASK_VOLUME_DETACH, spec_dict,
                             lambda driver, spec: {"power_state": driver.volume_detach(spec)})


@app.task(name=names.TASK_VOLUME_RESIZED, bind=True, max_retries=MAX_RETRIES)
def volume_resized(self, spec_dict: dict[str, Any]) -> dict[str, Any]:
    """Tell an instance that an attached volume grew; ``size`` is the bytes the guest now sees."""
    return _volume_operation(self, names.TASK_VOLUME_RESIZED, spec_dict,
                             lambda driver, spec: {"size": driver.volume_resized(spec)})
