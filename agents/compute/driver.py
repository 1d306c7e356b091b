"""The compute driver interface, its errors, and the per-process driver factory.

Every operation is idempotent, so Celery redeliveries (``acks_late``) and retries are safe:
``spawn`` creates only what is missing and starts the domain only if it is not running, ``destroy``
of a missing instance succeeds.
"""

from __future__ import annotations

import abc
import threading
from typing import Any

from agents.specs import DomainSpec, VolumeAttachSpec

__all__ = ["ComputeDriver", "ComputeError", "HypervisorUnavailable", "get_driver", "reset_driver"]


class ComputeError(Exception):
    """A compute operation failed; the message is meant to be shown to users."""

    #: True when retrying the same operation later may succeed (e.g. a lost hypervisor connection).
    transient = False


class HypervisorUnavailable(ComputeError):
    """The hypervisor cannot be reached right now (connection refused or lost)."""

    transient = True


class ComputeDriver(abc.ABC):
    """What a host agent can do with instances on its host."""

    name = "abstract"

    @abc.abstractmethod
    def spawn(self, spec: DomainSpec) -> dict[str, Any]:
        """Create (if missing) and start (if not running) the instance; return ``{"power_state": int}``."""

    @abc.abstractmethod
    def destroy(self, instance_id: str) -> None:
        """Stop and remove the domain and its instance directory; a missing instance is fine."""

    @abc.abstractmethod
    def power_state(self, instance_id: str) -> int:
        """The instance's power state (``agents.specs.POWER_*``); ``POWER_NOSTATE`` if it does not exist."""

    @abc.abstractmethod
    def list_domains(self) -> dict[str, int]:
        """``{instance_id: power_state}`` of cloudmgr's domains on this host (others are ignored)."""

    @abc.abstractmethod
    def console_log(self, instance_id: str, length: int | None = None) -> str:
        """The last ``length`` lines (all if ``None``) of the serial console; ``""`` if there is none."""

    @abc.abstractmethod
    def host_capacity(self) -> dict[str, int]:
        """``{"vcpus": int, "memory_mib": int, "disk_gb": int}``: this host's total resources."""

    @abc.abstractmethod
    def hypervisor_info(self) -> dict[str, Any]:
        """``{"hypervisor_version": int, "cpu_info": dict}``, as Nova's os-hypervisors shows them."""


    # -- lifecycle operations (each idempotent; each returns the power state afterwards) ----------

    def _unsupported(self, what: str):
        raise ComputeError(f"the {self.name} driver cannot {what}")

    def start(self, instance_id: str) -> int:
        """Power on (restoring a managed save if there is one); running already is fine."""
        self._unsupported("start instances")

    def stop(self, instance_id: str, timeout: int = 60) -> int:
        """ACPI shutdown, destroyed after ``timeout`` seconds if still running; stopped already is fine."""
        self._unsupported("stop instances")

    def reboot(self, instance_id: str, hard: bool = False, timeout: int = 60) -> int:
        """Soft: clean shutdown (hard after ``timeout``) then start. Hard: reset (or start if off)."""
        self._unsupported("reboot instances")

    def pause(self, instance_id: str) -> int:
        self._unsupported("pause instances")

    def unpause(self, instance_id: str) -> int:
        self._unsupported("unpause instances")

    def suspend(self, instance_id: str) -> int:
        """Save the guest's memory to disk (managed save) and stop it."""
        self._unsupported("suspend instances")

    def resume(self, instance_id: str) -> int:
        self._unsupported("resume instances")

    def resize(self, spec: DomainSpec, timeout: int = 60, start: bool = True) -> int:
        """Redefine the domain with ``spec``'s resources (disks kept and grown to their sizes; the
        ephemeral and swap disks made, the swap disk made afresh at a new size, and the ones ``spec``
        lacks deleted); stops the guest first and starts it again if ``start``."""
        self._unsupported("resize instances")

    def rebuild(self, spec: DomainSpec, timeout: int = 60) -> int:
        """Throw the domain and its disks away and spawn ``spec`` afresh (a new root disk from its image)."""
        self._unsupported("rebuild instances")

    def rescue(self, spec: DomainSpec, timeout: int = 60) -> int:
        """Stop the guest and boot ``spec`` (``rescue=True``): a fresh rescue disk from its image
        first, the instance's root disk second."""
        self._unsupported("rescue instances")

    def unrescue(self, spec: DomainSpec) -> int:
        """Destroy the rescue domain, drop the rescue disk, boot the instance's own ``spec`` again."""
        self._unsupported("unrescue instances")

    def trigger_crash_dump(self, instance_id: str) -> int:
        """Inject an NMI into the running guest (its kernel decides: a kdump, a panic, a message)."""
        self._unsupported("inject NMIs")

    def vnc_address(self, instance_id: str) -> tuple[str, int]:
        """Where the instance's VNC server listens on this host (localhost only)."""
        self._unsupported("show consoles")

    def diagnostics(self, instance_id: str) -> dict[str, int]:
        """The running domain's counters, named as Nova's libvirt driver names them (before 2.48):
        ``cpu<N>_time`` (ns), ``<disk>_read``/``_write`` (bytes), ``_read_req``/``_write_req``,
        ``_errors``, ``<tap>_rx``/``_tx`` (bytes), ``_packets``, ``_errors``, ``_drop``, ``memory``
        (KiB) and ``memory-<stat>`` (the balloon's statistics, KiB)."""
        self._unsupported("read diagnostics")

    def set_password(self, instance_id: str, user: str, password: str) -> None:
        """Set ``user``'s password in the running guest through the QEMU guest agent."""
        self._unsupported("set passwords")

    def snapshot(self, instance_id: str, upload_url: str, upload_token: str | None) -> int:
        """Copy the root disk (flattened qcow2; a running guest is paused meanwhile) and upload it
        with ``PUT upload_url``."""
        self._unsupported("snapshot instances")

    def sync_interfaces(self, spec: DomainSpec) -> int:
        """Attach and detach NICs (by MAC address) so that the domain has exactly ``spec.nics``
        (Nova's os-interface): live if it runs, and in its definition."""
        self._unsupported("attach interfaces")

    def volume_attach(self, spec: VolumeAttachSpec) -> int:
        """Hot-plug the volume (``spec.connection``) as virtio disk ``spec.device``, live if the
        guest runs and in its definition; attached already is fine."""
        self._unsupported("attach volumes")

    def volume_detach(self, spec: VolumeAttachSpec) -> int:
        """Unplug the volume and wait up to ``spec.timeout`` s for the guest to release it (a
        ``ComputeError`` says so if it does not); not attached is fine."""
        self._unsupported("detach volumes")

    def volume_resized(self, spec: VolumeAttachSpec) -> int:
        """Tell the guest the attached volume's new size (``spec.size_gb``, or its source's size
        if 0); returns the size in bytes the guest now sees."""
        self._unsupported("resize volumes")


_driver: ComputeDriver | None = None
_driver_lock = threading.Lock()


def _make_driver() -> ComputeDriver:
    from agents.config import get_config

    config = get_config()
    if config.compute_driver == "fake":
        from agents.compute.fake import FakeDriver

        return FakeDriver()
    from agents.compute.libvirt_driver import LibvirtDriver

    return LibvirtDriver(config)


def get_driver() -> ComputeDriver:
    """The process's driver, chosen by ``CLOUDMGR_COMPUTE_DRIVER`` and created on first use."""
    global _driver
    with _driver_lock:
        if _driver is None:
            _driver = _make_driver()
        return _driver


def reset_driver(driver: ComputeDriver | None = None) -> None:
    """Forget the cached driver (the next ``get_driver`` makes a new one), or install ``driver``."""
    global _driver
    with _driver_lock:
        old, _driver = _driver, driver
    close = getattr(old, "close", None)
    if old is not None and old is not driver and close is not None:
        close()
