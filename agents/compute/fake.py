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

from agents.compute.designer import design_guest, design_volume_disk
from agents.compute.driver import ComputeDriver, ComputeError, HypervisorUnavailable
from agents.config import InstancePaths, safe_component
from agents.specs import POWER_NOSTATE, POWER_PAUSED, POWER_RUNNING, POWER_SHUTDOWN, DomainSpec, VolumeAttachSpec

__all__ = ["BOOT_MARKER", "FakeDriver"]

BOOT_MARKER = "CLOUDMGR_TESTVM_BOOTED"

DEFAULT_CAPACITY = {"vcpus": 1024, "memory_mib": 4 * 1024 * 1024, "disk_gb": 100_000}
FAKE_HYPERVISOR_VERSION = 1000000  # "1.0.0" in Nova's integer form


class FakeDriver(ComputeDriver):
    name = "fake"

    def __init__(self, capacity: dict[str, int] | None = None) -> None:
        self._lock = threading.Lock()
        self.domains: dict[str, int] = {}
        self.specs: dict[str, DomainSpec] = {}
        self.capacity = dict(DEFAULT_CAPACITY if capacity is None else capacity)
        self.calls: list[tuple[str, str]] = []  # (operation, instance id), for assertions
        self._spawn_failures: list[tuple[str, bool]] = []
        self._op_failures: dict[str, list[str]] = {}
        self.saved: set[str] = set()  # instances with a managed save (suspended)
        self.boots: dict[str, int] = {}  # instance id -> times started
        self.attached_volumes: dict[str, dict[str, str]] = {}  # instance id -> {volume id: device}
        self.passwords: dict[str, tuple[str, str]] = {}  # instance id -> (user, password) last set
        self.volume_sizes: dict[str, int] = {}  # volume id -> bytes volume_resized reports

    # -- test hooks --------------------------------------------------------------------------

    def fail_next_spawn(self, message: str, *, times: int = 1, transient: bool = False) -> None:
        """Make the next ``times`` spawns raise ``ComputeError(message)`` (``HypervisorUnavailable``
        if ``transient``) without creating anything."""
        with self._lock:
            self._spawn_failures += [(message, transient)] * times

    def fail_next(self, operation: str, message: str) -> None:
        """Make the next ``operation`` (start, stop, reboot, ...) raise ``ComputeError(message)``."""
        with self._lock:
            self._op_failures.setdefault(operation, []).append(message)

    def set_power_state(self, instance_id: str, state: int) -> None:
        with self._lock:
            self.domains[instance_id] = state

    def reset(self) -> None:
        with self._lock:
            self.domains.clear()
            self.specs.clear()
            self.calls.clear()
            self._spawn_failures.clear()
            self._op_failures.clear()
            self.saved.clear()
            self.boots.clear()
            self.attached_volumes.clear()
            self.passwords.clear()
            self.volume_sizes.clear()

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
                self.boots[spec.instance_id] = self.boots.get(spec.instance_id, 0) + 1
            self.specs.setdefault(spec.instance_id, copy.deepcopy(spec))
            return {"power_state": self.domains[spec.instance_id]}

    def destroy(self, instance_id: str) -> None:
        self._check_id(instance_id)
        with self._lock:
            self.calls.append(("destroy", instance_id))
            self.domains.pop(instance_id, None)
            self.specs.pop(instance_id, None)
            # The libvirt driver's destroy undefines the domain, which takes its hot-plugged disks with it.
            self.attached_volumes.pop(instance_id, None)

    # -- lifecycle operations ----------------------------------------------------------------

    def _op(self, operation: str, instance_id: str, change) -> int:
        self._check_id(instance_id)
        with self._lock:
            self.calls.append((operation, instance_id))
            failures = self._op_failures.get(operation)
            if failures:
                raise ComputeError(failures.pop(0))
            if instance_id not in self.domains:
                raise ComputeError(f"instance {instance_id} has no domain on this host")
            change(instance_id)
            return self.domains[instance_id]

    def _boot(self, instance_id: str) -> None:
        self.saved.discard(instance_id)
        self.domains[instance_id] = POWER_RUNNING
        self.boots[instance_id] = self.boots.get(instance_id, 0) + 1

    def start(self, instance_id: str) -> int:
        def change(i):
            if self.domains[i] != POWER_RUNNING:
                self._boot(i)
        return self._op("start", instance_id, change)

    def stop(self, instance_id: str, timeout: int = 60) -> int:
        def change(i):
            self.saved.discard(i)
            self.domains[i] = POWER_SHUTDOWN
        return self._op("stop", instance_id, change)

    def reboot(self, instance_id: str, hard: bool = False, timeout: int = 60) -> int:
        return self._op("reboot", instance_id, self._boot)

    def pause(self, instance_id: str) -> int:
        def change(i):
            if self.domains[i] == POWER_RUNNING:
                self.domains[i] = POWER_PAUSED
        return self._op("pause", instance_id, change)

    def unpause(self, instance_id: str) -> int:
        def change(i):
            if self.domains[i] == POWER_PAUSED:
                self.domains[i] = POWER_RUNNING
        return self._op("unpause", instance_id, change)

    def trigger_crash_dump(self, instance_id: str) -> int:
        def change(i):
            if self.domains[i] not in (POWER_RUNNING, POWER_PAUSED):
                raise ComputeError("cannot inject an NMI: the instance is not running")
        return self._op("trigger_crash_dump", instance_id, change)

    def suspend(self, instance_id: str) -> int:
        def change(i):
            if self.domains[i] in (POWER_RUNNING, POWER_PAUSED):
                self.saved.add(i)
                self.domains[i] = POWER_SHUTDOWN
        return self._op("suspend", instance_id, change)

    def resume(self, instance_id: str) -> int:
        def change(i):
            if self.domains[i] != POWER_RUNNING:
                self.saved.discard(i)
                self.domains[i] = POWER_RUNNING
        return self._op("resume", instance_id, change)

    def resize(self, spec: DomainSpec, timeout: int = 60, start: bool = True) -> int:
        design_guest(spec, InstancePaths(Path("/nonexistent/instances") / spec.instance_id))

        def change(i):
            self.specs[i] = copy.deepcopy(spec)
            self.domains[i] = POWER_SHUTDOWN
            if start:
                self._boot(i)
        return self._op("resize", spec.instance_id, change)

    def rebuild(self, spec: DomainSpec, timeout: int = 60) -> int:
        design_guest(spec, InstancePaths(Path("/nonexistent/instances") / spec.instance_id))

        def change(i):
            self.specs[i] = copy.deepcopy(spec)
            self._boot(i)
        return self._op("rebuild", spec.instance_id, change)

    def rescue(self, spec: DomainSpec, timeout: int = 60) -> int:
        design_guest(spec, InstancePaths(Path("/nonexistent/instances") / spec.instance_id))

        def change(i):
            self.specs[i] = copy.deepcopy(spec)
            self._boot(i)
        return self._op("rescue", spec.instance_id, change)

    def unrescue(self, spec: DomainSpec) -> int:
        def change(i):
            self.specs[i] = copy.deepcopy(spec)
            self._boot(i)
        return self._op("unrescue", spec.instance_id, change)

    def vnc_address(self, instance_id: str) -> tuple[str, int]:
        with self._lock:
            if self.domains.get(instance_id) != POWER_RUNNING:
                raise ComputeError(f"instance {instance_id} is not running")
        return "127.0.0.1", 5900

    def diagnostics(self, instance_id: str) -> dict[str, int]:
        with self._lock:
            if self.domains.get(instance_id) not in (POWER_RUNNING, POWER_PAUSED):
                raise ComputeError(f"instance {instance_id} is not running")
            spec = self.specs[instance_id]
        out = {f"cpu{n}_time": 1_000_000 * (n + 1) for n in range(spec.vcpus)}
        out.update({"vda_read": 4096, "vda_read_req": 1, "vda_write": 0, "vda_write_req": 0, "vda_errors": -1})
        return {**out, "memory": spec.memory_mib * 1024, "memory-actual": spec.memory_mib * 1024}

    def set_password(self, instance_id: str, user: str, password: str) -> None:
        """As libvirt: the domain must run and have the guest agent's channel."""
        with self._lock:
            if self.domains.get(instance_id) != POWER_RUNNING:
                raise ComputeError(f"instance {instance_id} is not running")
            spec = self.specs.get(instance_id)
            if spec is None or not spec.guest_agent:
                raise ComputeError("setting the password failed: argument unsupported: QEMU guest agent is not "
                                   "configured")
            self.passwords[instance_id] = (user, password)

    def snapshot(self, instance_id: str, upload_url: str, upload_token: str | None) -> int:
        self.uploads = getattr(self, "uploads", [])
        self.uploads.append(upload_url)
        self.upload_tokens = getattr(self, "upload_tokens", [])
        self.upload_tokens.append(upload_token)
        return self._op("snapshot", instance_id, lambda i: None)

    def sync_interfaces(self, spec: DomainSpec) -> int:
        design_guest(spec, InstancePaths(Path("/nonexistent/instances") / spec.instance_id))

        def change(i):
            self.specs[i] = copy.deepcopy(spec)
        return self._op("interfaces", spec.instance_id, change)

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

    def hypervisor_info(self) -> dict[str, Any]:
        return {"hypervisor_version": FAKE_HYPERVISOR_VERSION, "cpu_info": {
            "arch": "x86_64", "model": "fake", "vendor": "cloudmgr", "features": [],
            "topology": {"cells": 1, "sockets": 1, "cores": self.capacity["vcpus"], "threads": 1}}}

    # -- volumes -----------------------------------------------------------------------------

    def volume_attach(self, spec: VolumeAttachSpec) -> int:
        design_volume_disk(spec)  # the real driver's validation

        def change(i):
            attached = self.attached_volumes.setdefault(i, {})
            if spec.volume_id in attached:
                return
            if spec.device in attached.values():
                raise ComputeError(f"device {spec.device} of instance {i} is already used by another disk")
            attached[spec.volume_id] = spec.device
        return self._op("volume_attach", spec.instance_id, change)

    def volume_detach(self, spec: VolumeAttachSpec) -> int:
        def change(i):
            self.attached_volumes.get(i, {}).pop(spec.volume_id, None)
        return self._op("volume_detach", spec.instance_id, change)

    def volume_resized(self, spec: VolumeAttachSpec) -> int:
        def change(i):
            if spec.volume_id not in self.attached_volumes.get(i, {}):
                raise ComputeError(f"volume {spec.volume_id} is not attached to running instance {i}")
        self._op("volume_resized", spec.instance_id, change)
        if spec.size_gb:
            self.volume_sizes[spec.volume_id] = spec.size_gb << 30
        return self.volume_sizes.get(spec.volume_id, 0)
