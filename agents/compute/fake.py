"""An in-memory compute driver for fast tests of the control plane (``CLOUDMGR_COMPUTE_DRIVER=fake``).

Spawned instances are recorded as running domains, ``console_log`` returns a boot log that contains
the test guest's marker, and failures can be injected::

    driver = agents.compute.driver.get_driver()      # a FakeDriver under CLOUDMGR_COMPUTE_DRIVER=fake
    driver.fail_next_spawn("no valid host found")    # the next spawn raises ComputeError(...)
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

from agents.compute.designer import design_guest
from agents.compute.driver import ComputeDriver, ComputeError, HypervisorUnavailable
from agents.config import InstancePaths, safe_component
from agents.specs import POWER_NOSTATE, POWER_RUNNING, DomainSpec

__all__ = ["BOOT_MARKER", "FakeDriver"]

BOOT_MARKER = "CLOUDMGR_TESTVM_BOOTED"

DEFAULT_CAPACITY = {"vcpus": 1024, "memory_mib": 4 * 1024 * 1024, "disk_gb": 100_000}


class FakeDriver(ComputeDriver):
    name = "fake"

    def __init__(self, capacity: dict[str, int] | None = None) -> None:
        self._lock = threading.Lock()
        self.domains: dict[str, int] = {}
        self.specs: dict[str, DomainSpec] = {}
        self.capacity = dict(DEFAULT_CAPACITY if capacity is None else capacity)
        self.calls: list[tuple[str, str]] = []  # (operation, instance id), for assertions
        self._spawn_failures: list[tuple[str, bool]] = []

    # -- test hooks --------------------------------------------------------------------------

    def fail_next_spawn(self, message: str, *, times: int = 1, transient: bool = False) -> None:
        """Make the next ``times`` spawns raise ``ComputeError(message)`` (``HypervisorUnavailable``
        if ``transient``) without creating anything."""
        with self._lock:
            self._spawn_failures += [(message, transient)] * times

    def set_power_state(self, instance_id: str, state: int) -> None:
        with self._lock:
            self.domains[instance_id] = state

    def reset(self) -> None:
        with self._lock:
            self.domains.clear()
            self.specs.clear()
            self.calls.clear()
            self._spawn_failures.clear()

    # -- driver ------------------------------------------------------------------------------

    @staticmethod
    def _check_id(instance_id: str) -> None:
        try:
            safe_component(instance_id, "instance id")
        except ValueError as exc:
            raise ComputeError(str(exc)) from None

    def spawn(self, spec: DomainSpec) -> dict[str, Any]:
        self._check_id(spec.instance_id)
        # Same spec validation as the real driver (raises ComputeError on an invalid spec).
        design_guest(spec, InstancePaths(Path("/nonexistent/instances") / spec.instance_id))
        with self._lock:
            self.calls.append(("spawn", spec.instance_id))
            if self._spawn_failures:
                message, transient = self._spawn_failures.pop(0)
                raise (HypervisorUnavailable if transient else ComputeError)(message)
            if self.domains.get(spec.instance_id) != POWER_RUNNING:
                self.domains[spec.instance_id] = POWER_RUNNING
            self.specs.setdefault(spec.instance_id, copy.deepcopy(spec))
            return {"power_state": self.domains[spec.instance_id]}

    def destroy(self, instance_id: str) -> None:
        self._check_id(instance_id)
        with self._lock:
            self.calls.append(("destroy", instance_id))
            self.domains.pop(instance_id, None)
            self.specs.pop(instance_id, None)

    def power_state(self, instance_id: str) -> int:
        with self._lock:
            return self.domains.get(instance_id, POWER_NOSTATE)

    def list_domains(self) -> dict[str, int]:
        with self._lock:
            return dict(self.domains)

    def console_log(self, instance_id: str, length: int | None = None) -> str:
        with self._lock:
            spec = self.specs.get(instance_id)
        if spec is None:
            return ""
        lines = [
            "SeaBIOS (version fake)\n",
            "Booting from Hard Disk...\n",
            f"[    0.000000] Linux version 6.1.0-fake ({spec.display_name})\n",
            f"{BOOT_MARKER}\n",
            "login: \n",
        ]
        if length is not None:
            if length < 0:
                raise ComputeError("the console length must not be negative")
            lines = lines[-length:] if length else []
        return "".join(lines)

    def host_capacity(self) -> dict[str, int]:
        with self._lock:
            return dict(self.capacity)
