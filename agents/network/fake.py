"""An in-memory network driver for fast tests of the control plane (``CLOUDMGR_NETWORK_DRIVER=fake``).

It keeps the last spec of every network, port and router it was given, and what a resync would
have removed, so a test can assert what the control plane sent::

    driver = FakeNetworkDriver()
    agents.network.driver.reset_network_driver(driver)
    ...                                        # the control plane sends its tasks (in-process)
    assert driver.networks[network_id].dhcp_port is not None
    driver.fail_next("router_sync", "no external bridge")   # the next router_sync raises NetworkError
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import Any

from agents import names
from agents.network import NetworkError
from agents.network.driver import NetworkDriver
from agents.specs import HostNetworkState, NetworkSpec, NicSpec, PortSpec, RouterSpec, SecurityGroupMembersSpec

__all__ = ["FakeNetworkDriver"]


class FakeNetworkDriver(NetworkDriver):
    name = "fake"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.networks: dict[str, NetworkSpec] = {}
        self.ports: dict[str, PortSpec] = {}
        self.routers: dict[str, RouterSpec] = {}
        self.plugged: dict[str, NicSpec] = {}  # tap name -> NIC, from the compute spawn path
        self.group_members: dict[str, list[str]] = {}  # security group id -> its members' addresses
        self.calls: list[tuple[str, str]] = []  # (operation, object id), for assertions
        self._failures: dict[str, list[str]] = {}

    def fail_next(self, operation: str, message: str) -> None:
        """Make the next ``operation`` (``network_sync``, ``port_delete``, ...) raise NetworkError."""
        with self._lock:
            self._failures.setdefault(operation, []).append(message)

    def reset(self) -> None:
        with self._lock:
            self.networks.clear()
            self.ports.clear()
            self.routers.clear()
            self.plugged.clear()
            self.group_members.clear()
            self.calls.clear()
            self._failures.clear()

    def _call(self, operation: str, object_id: str) -> None:
        """Record the call (under the lock), raising an injected failure first."""
        failures = self._failures.get(operation)
        if failures:
            raise NetworkError(failures.pop(0))
        self.calls.append((operation, object_id))

    def network_sync(self, spec: NetworkSpec) -> dict[str, Any]:
        with self._lock:
            self._call("network_sync", spec.id)
            self.networks[spec.id] = copy.deepcopy(spec)
        return {"bridge": names.bridge_name(spec.id), "dhcp": spec.dhcp_port is not None}

    def network_delete(self, network_id: str) -> None:
        with self._lock:
            self._call("network_delete", network_id)
            self.networks.pop(network_id, None)

    def port_sync(self, spec: PortSpec) -> dict[str, Any]:
        with self._lock:
            self._call("port_sync", spec.id)
            self.ports[spec.id] = copy.deepcopy(spec)
        return {"device": None if spec.device_owner.startswith("network:") else names.tap_name(spec.id)}

    def port_delete(self, port_id: str, network_id: str) -> None:
        with self._lock:
            self._call("port_delete", port_id)
            self.ports.pop(port_id, None)

    def router_sync(self, spec: RouterSpec) -> None:
        with self._lock:
            self._call("router_sync", spec.id)
            self.routers[spec.id] = copy.deepcopy(spec)

    def router_delete(self, router_id: str) -> None:
        with self._lock:
            self._call("router_delete", router_id)
            self.routers.pop(router_id, None)

    def security_group_members(self, spec: SecurityGroupMembersSpec) -> dict[str, Any]:
        with self._lock:
            self._call("security_group_members", spec.id)
            self.group_members[spec.id] = list(spec.members)
        return {}

    def plug_nics(self, nics: Sequence[NicSpec]) -> None:
        with self._lock:
            for nic in nics:
                self._call("plug_nic", nic.port_id)
                self.plugged[names.tap_name(nic.port_id)] = copy.deepcopy(nic)

    def resync(self, state: HostNetworkState) -> dict[str, Any]:
        with self._lock:
            self._call("resync", "")
            removed = sorted(
                [names.bridge_name(i) for i in set(self.networks) - {n.id for n in state.networks}]
                + [names.tap_name(i) for i in set(self.ports) - {p.id for p in state.ports}]
                + [names.router_namespace(i) for i in set(self.routers) - {r.id for r in state.routers}]
            )
            self.networks = {n.id: copy.deepcopy(n) for n in state.networks}
            self.ports = {p.id: copy.deepcopy(p) for p in state.ports}
            self.routers = {r.id: copy.deepcopy(r) for r in state.routers}
        return {"removed": removed, "errors": []}
