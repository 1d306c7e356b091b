"""Celery entry points of the network agent, registered under the names in :mod:`agents.names`.

The control plane sends them by name to a host's queue, usually with the callback
``names.CALLBACK_NETWORK_DONE`` linked; each returns (never raises) one result dict::

    {"task": <task name>, "kind": "network" | "port" | "router" | "host", "id": <object id>,
     "host": <this agent's hostname>, "ok": bool, "error": str | None, ...details}

with the details ``network_sync``: ``bridge``, ``dhcp`` (dnsmasq serves the network);
``port_sync``: ``device`` (the tap, or None for router and DHCP ports); ``resync``: ``removed``
(the names of what it removed) and ``errors`` (one per item that failed; the others were still
converged). A spec of an unknown version or a malformed one is ``ok: False`` with the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from agents import names
from agents.config import get_config
from agents.locks import KeyedLocks
from agents.network import NetworkError
from agents.network.driver import NetworkDriver, get_network_driver
from agents.specs import (
    HostNetworkState,
    NetworkSpec,
    PortSpec,
    RouterSpec,
    SecurityGroupMembersSpec,
    SpecVersionError,
)
from agents.worker import app

__all__ = ["network_delete", "network_sync", "port_delete", "port_sync", "resync", "router_delete", "router_sync",
           "security_group_members"]

log = logging.getLogger(__name__)


def _hostname() -> str:
    try:
        return get_config().hostname
    except Exception:  # noqa: BLE001 - a misconfigured agent still answers
        return ""


def result(task: str, kind: str, object_id: str, ok: bool, error: str | None = None, **details: Any) -> dict[str, Any]:
    return {"task": task, "kind": kind, "id": object_id, "host": _hostname(), "ok": ok, "error": error, **details}


def _object_id(data: Any, key: str) -> str:
    if isinstance(data, dict) and isinstance(data.get(key), str):
        return data[key]
    return ""


def _execute(task: str, kind: str, object_id: str, call: Callable[[NetworkDriver], dict | None]) -> dict[str, Any]:
    """Run one driver call; every failure becomes ``ok: False`` with a readable reason."""
    try:
        driver = get_network_driver()
    except Exception as exc:
        log.exception("no network driver")
        return result(task, kind, object_id, False, f"the network agent is misconfigured: {exc}")
    try:
        details = call(driver) or {}
    except NetworkError as exc:
        log.warning("%s of %s %s failed: %s", task, kind, object_id, exc)
        return result(task, kind, object_id, False, str(exc))
    except Exception as exc:
        log.exception("%s of %s %s failed unexpectedly", task, kind, object_id)
        return result(task, kind, object_id, False,
                      f"internal error in the network agent: {exc.__class__.__name__}: {exc}")
    return result(task, kind, object_id, True, None, **details)


# A host's tasks run on several threads, so two messages about one object may run in either order.
# Each carries ``generation``, when the control plane read the state it holds; the highest one
# applied is remembered per object and an older message is dropped (a newer state is in place).
# A message is also dropped when a newer one about the same object has arrived: that one holds
# the whole newer state and runs anyway, so a burst (a boot storm changing one security group
# many times) costs one application, not one per message, and no thread waits to apply an old state.
_applied: dict[tuple[str, str], int] = {}
_arrived: dict[tuple[str, str], int] = {}
_arrived_lock = threading.Lock()
_ordering = KeyedLocks()


def _superseded(key: tuple[str, str], generation: int) -> bool:
    return generation < max(_applied.get(key, 0), _arrived.get(key, 0))


def _in_order(task: str, kind: str, object_id: str, generation: Any, run: Callable[[], dict]) -> dict[str, Any]:
    if not isinstance(generation, int) or isinstance(generation, bool) or generation <= 0:
        return run()
    key = (kind, object_id)
    with _arrived_lock:
        if generation > _arrived.get(key, 0):
            _arrived[key] = generation

    def dropped() -> dict[str, Any]:
        log.info("dropping a superseded %s of %s %s", task, kind, object_id)
        return result(task, kind, object_id, True, None, stale=True)

    if _superseded(key, generation):
        return dropped()
    with _ordering(f"{kind}:{object_id}"):
        if _superseded(key, generation):
            return dropped()
        out = run()
        if out["ok"]:
            _applied[key] = generation
        return out


def _sync(task: str, kind: str, cls, data: Any, call: Callable[[NetworkDriver, Any], dict | None]) -> dict[str, Any]:
    object_id = _object_id(data, "id")
    try:
        spec = cls.from_dict(data)
    except SpecVersionError as exc:
        return result(task, kind, object_id, False, str(exc))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        return result(task, kind, object_id, False, f"invalid {kind} spec: {exc}")
    return _in_order(task, kind, spec.id, spec.generation,
                     lambda: _execute(task, kind, spec.id, lambda driver: call(driver, spec)))


def _delete(task: str, kind: str, data: Any, keys: tuple[str, ...], call: Callable[..., None]) -> dict[str, Any]:
    object_id = _object_id(data, keys[0])
    missing = [key for key in keys if not _object_id(data, key)]
    if missing:
        return result(task, kind, object_id, False, f"invalid {kind} reference: {', '.join(missing)} missing")
    return _in_order(task, kind, object_id, data.get("generation"),
                     lambda: _execute(task, kind, object_id, lambda driver: call(driver, *(data[key] for key in keys))))


@app.task(name=names.TASK_NETWORK_SYNC)
def network_sync(spec: dict[str, Any]) -> dict[str, Any]:
    """Bridge, uplink, DHCP namespace and dnsmasq of a ``NetworkSpec``."""
    return _sync(names.TASK_NETWORK_SYNC, "network", NetworkSpec, spec, lambda d, s: d.network_sync(s))


@app.task(name=names.TASK_NETWORK_DELETE)
def network_delete(ref: dict[str, Any]) -> dict[str, Any]:
    """``{"network_id"}``: its DHCP namespace, dnsmasq and bridge go; a missing network is fine."""
    return _delete(names.TASK_NETWORK_DELETE, "network", ref, ("network_id",), lambda d, n: d.network_delete(n))


@app.task(name=names.TASK_PORT_SYNC)
def port_sync(spec: dict[str, Any]) -> dict[str, Any]:
    """The tap of a bound ``PortSpec`` on its network's bridge (and its filter)."""
    return _sync(names.TASK_PORT_SYNC, "port", PortSpec, spec, lambda d, s: d.port_sync(s))


@app.task(name=names.TASK_PORT_DELETE)
def port_delete(ref: dict[str, Any]) -> dict[str, Any]:
    """``{"port_id", "network_id"}``: the tap goes; a missing one is fine."""
    return _delete(names.TASK_PORT_DELETE, "port", ref, ("port_id", "network_id"),
                   lambda d, p, n: d.port_delete(p, n))


@app.task(name=names.TASK_ROUTER_SYNC)
def router_sync(spec: dict[str, Any]) -> dict[str, Any]:
    """Namespace, legs, gateway, routes, NAT and floating IPs of a ``RouterSpec``."""
    return _sync(names.TASK_ROUTER_SYNC, "router", RouterSpec, spec, lambda d, s: d.router_sync(s))


@app.task(name=names.TASK_ROUTER_DELETE)
def router_delete(ref: dict[str, Any]) -> dict[str, Any]:
    """``{"router_id"}``: the namespace and its legs go; a missing router is fine."""
    return _delete(names.TASK_ROUTER_DELETE, "router", ref, ("router_id",), lambda d, r: d.router_delete(r))


@app.task(name=names.TASK_SECURITY_GROUP_MEMBERS)
def security_group_members(spec: dict[str, Any]) -> dict[str, Any]:
    """The members of a ``SecurityGroupMembersSpec`` into every filter whose rules name the group."""
    return _sync(names.TASK_SECURITY_GROUP_MEMBERS, "security_group", SecurityGroupMembersSpec, spec,
                 lambda d, s: d.security_group_members(s))


@app.task(name=names.TASK_HOST_NETWORK_RESYNC)
def resync(state: dict[str, Any]) -> dict[str, Any]:
    """Converge to a ``HostNetworkState`` and remove this agent's things that are not in it."""
    task, kind, host = names.TASK_HOST_NETWORK_RESYNC, "host", _hostname()
    try:
        parsed = HostNetworkState.from_dict(state)
    except SpecVersionError as exc:
        return result(task, kind, host, False, str(exc), removed=[], errors=[str(exc)])
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        return result(task, kind, host, False, f"invalid host network state: {exc}", removed=[], errors=[str(exc)])
    # Recorded first: a message older than this state, still queued, must not undo it.
    for spec_kind, specs in (("network", parsed.networks), ("router", parsed.routers), ("port", parsed.ports)):
        for spec in specs:
            if spec.generation > _applied.get((spec_kind, spec.id), 0):
                _applied[(spec_kind, spec.id)] = spec.generation
    out = _execute(task, kind, host, lambda driver: driver.resync(parsed))
    out.setdefault("removed", [])
    out.setdefault("errors", [out["error"]] if out["error"] else [])
    if out["errors"]:
        out["ok"] = False
        out["error"] = "; ".join(out["errors"])
    return out
