"""Agent settings, read from environment variables only (agents never import Django).

=============================  =========================  ==========================================
Variable                       Default                    Meaning
=============================  =========================  ==========================================
``CLOUDMGR_DATA_DIR``          ``./var`` (made absolute)  host-local state: instances, image cache
``CLOUDMGR_HOSTNAME``          ``socket.gethostname()``   this host's name; its queue is host.<name>
``CLOUDMGR_VIRT_TYPE``         ``qemu``                   libvirt domain type this host offers
``CELERY_BROKER_URL``          ``redis://127.0.0.1:6379/0``  broker (and result backend)
``CLOUDMGR_LIBVIRT_URI``       ``qemu:///system``         libvirt connection URI
``CLOUDMGR_COMPUTE_DRIVER``    ``libvirt``                ``libvirt`` or ``fake``
``CLOUDMGR_HEARTBEAT_INTERVAL``  ``5``                    seconds between heartbeats
``CLOUDMGR_CONTROL_QUEUE``     ``control``                the control plane's queue (results, heartbeats)
=============================  =========================  ==========================================

Host-local layout under the data directory::

    <data>/instances/<instance_id>/disk.qcow2             root disk (qcow2 overlay on a cached image)
    <data>/instances/<instance_id>/disk.ephemeral0.qcow2  ephemeral disk (qcow2 overlay on a formatted base)
    <data>/instances/<instance_id>/disk.swap.qcow2        swap disk (qcow2 overlay on a formatted base)
    <data>/instances/<instance_id>/console.log            serial console, written by virtlogd
    <data>/cache/images/<image_id>                        cached base image
    <data>/cache/images/ephemeral_<MiB>m_ext4             formatted bases of ephemeral and swap disks (raw,
    <data>/cache/images/swap_<MiB>m                       shared by every instance of their size)
"""

from __future__ import annotations

import functools
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agents.names import CONTROL_QUEUE

DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_LIBVIRT_URI = "qemu:///system"
VIRT_TYPES = ("qemu", "kvm")
COMPUTE_DRIVERS = ("libvirt", "fake")

ROOT_DISK = "root"
# The flavor's local disks (Nova's names): an ext4 filesystem labelled like this disk, and swap.
EPHEMERAL_DISK = "ephemeral0"
SWAP_DISK = "swap"

# Ids become path components and libvirt names: keep them to a safe alphabet.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ConfigError(ValueError):
    pass


def safe_component(value: str, what: str = "id") -> str:
    """Return ``value`` if it is safe as a single path component, else raise ``ValueError``."""
    if not isinstance(value, str) or not _SAFE_ID.match(value) or value in (".", ".."):
        raise ValueError(f"invalid {what} {value!r}: only letters, digits, '.', '_' and '-' are allowed")
    return value


@dataclass(frozen=True)
class InstancePaths:
    """Where one instance's files live on this host."""

    instance_dir: Path

    @property
    def console_log(self) -> Path:
        return self.instance_dir / "console.log"

    @property
    def root_disk(self) -> Path:
        return self.instance_dir / "disk.qcow2"

    @property
    def config_drive(self) -> Path:
        return self.instance_dir / "disk.config"

    def disk_path(self, disk_name: str) -> Path:
        """The qcow2 file of a disk: ``disk.qcow2`` for the root disk, ``disk.<name>.qcow2`` else."""
        if disk_name == ROOT_DISK:
            return self.root_disk
        return self.instance_dir / f"disk.{safe_component(disk_name, 'disk name')}.qcow2"


@dataclass(frozen=True)
class AgentConfig:
    data_dir: Path
    hostname: str
    virt_type: str = "qemu"
    broker_url: str = DEFAULT_BROKER_URL
    libvirt_uri: str = DEFAULT_LIBVIRT_URI
    compute_driver: str = "libvirt"
    heartbeat_interval: float = 5.0
    control_queue: str = CONTROL_QUEUE
    # Seconds between two ACPI power button presses of a clean shutdown (Nova's
    # shutdown_retry_interval): a guest still booting ignores a press.
    shutdown_retry_interval: float = 10.0
    # QEMU processes started at once: a start is CPU work (libvirt's and QEMU's), so beyond the
    # host's cores every start in flight finishes later; queued ones start as soon as one is done.
    max_concurrent_starts: int = 2

    @property
    def instances_dir(self) -> Path:
        return self.data_dir / "instances"

    @property
    def image_cache_dir(self) -> Path:
        return self.data_dir / "cache" / "images"

    def instance_paths(self, instance_id: str) -> InstancePaths:
        return InstancePaths(self.instances_dir / safe_component(instance_id, "instance id"))

    def cached_image_path(self, image_id: str) -> Path:
        return self.image_cache_dir / safe_component(image_id, "image id")


def load_config(environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Build an :class:`AgentConfig` from ``environ`` (default: ``os.environ``)."""
    env = os.environ if environ is None else environ

    virt_type = env.get("CLOUDMGR_VIRT_TYPE", "qemu").strip() or "qemu"
    if virt_type not in VIRT_TYPES:
        raise ConfigError(f"CLOUDMGR_VIRT_TYPE must be one of {', '.join(VIRT_TYPES)}, not {virt_type!r}")
    driver = env.get("CLOUDMGR_COMPUTE_DRIVER", "libvirt").strip() or "libvirt"
    if driver not in COMPUTE_DRIVERS:
        raise ConfigError(f"CLOUDMGR_COMPUTE_DRIVER must be one of {', '.join(COMPUTE_DRIVERS)}, not {driver!r}")
    def positive(name: str, default, kind, what: str):
        """``name``'s value as ``kind`` (float or int), above zero; ``default`` when unset."""
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{name} must be {what}, not {raw!r}") from None
        if value <= 0:
            raise ConfigError(f"{name} must be positive")
        return value

    def seconds(name: str, default: float) -> float:
        return positive(name, default, float, "a number of seconds")

    return AgentConfig(
        data_dir=Path(env.get("CLOUDMGR_DATA_DIR") or "./var").expanduser().resolve(),
        hostname=(env.get("CLOUDMGR_HOSTNAME") or "").strip() or socket.gethostname(),
        virt_type=virt_type,
        broker_url=env.get("CELERY_BROKER_URL") or DEFAULT_BROKER_URL,
        libvirt_uri=env.get("CLOUDMGR_LIBVIRT_URI") or DEFAULT_LIBVIRT_URI,
        compute_driver=driver,
        heartbeat_interval=seconds("CLOUDMGR_HEARTBEAT_INTERVAL", 5.0),
        shutdown_retry_interval=seconds("CLOUDMGR_SHUTDOWN_RETRY_INTERVAL", 10.0),
        max_concurrent_starts=positive("CLOUDMGR_MAX_CONCURRENT_STARTS", os.cpu_count() or 1, int, "a whole number"),
        control_queue=(env.get("CLOUDMGR_CONTROL_QUEUE") or "").strip() or CONTROL_QUEUE,
    )


@functools.lru_cache(maxsize=1)
def get_config() -> AgentConfig:
    """The process-wide configuration (read once; ``get_config.cache_clear()`` re-reads it)."""
    return load_config()
