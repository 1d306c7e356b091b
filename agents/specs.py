"""The wire contract between the control plane and the agents.

Specs travel as plain JSON dicts (``to_dict``) with a ``version`` field; agents rebuild them with
``from_dict`` and refuse a version they do not know.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SPEC_VERSION = 1

# Nova's power states (nova/compute/power_state.py): the hypervisor's view of a domain.
POWER_NOSTATE = 0
POWER_RUNNING = 1
POWER_PAUSED = 3
POWER_SHUTDOWN = 4
POWER_CRASHED = 6
POWER_SUSPENDED = 7


class SpecVersionError(ValueError):
    pass


def _check_version(data: dict[str, Any]) -> None:
    version = data.get("version", SPEC_VERSION)
    if version != SPEC_VERSION:
        raise SpecVersionError(f"spec version {version} is not supported (agent speaks {SPEC_VERSION})")


@dataclass
class ImageRef:
    """Where an agent fetches a base image from: ``http(s)://`` from the image API (with
    ``auth_token``, a short-lived download ticket for this image only, sent as ``X-Auth-Token``),
    or ``file://`` when the agent sees the image store (one box, tests)."""

    id: str
    source: str
    disk_format: str = "qcow2"
    size: int | None = None
    sha512: str | None = None
    auth_token: str | None = None


@dataclass
class DiskSpec:
    name: str  # "root", or a volume id later
    size_gb: int
    image: ImageRef | None = None
    bus: str = "virtio"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiskSpec:
        image = data.get("image")
        return cls(**{**data, "image": ImageRef(**image) if image else None})


@dataclass
class NicSpec:
    port_id: str
    mac_address: str
    bridge: str
    mtu: int = 1500
    model: str = "virtio"


@dataclass
class DomainSpec:
    instance_id: str
    display_name: str
    vcpus: int
    memory_mib: int
    virt_type: str = "qemu"
    disks: list[DiskSpec] = field(default_factory=list)
    nics: list[NicSpec] = field(default_factory=list)
    # Rescue mode: the disk named "rescue" boots first, the root disk comes second.
    rescue: bool = False
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainSpec:
        _check_version(data)
        return cls(
            **{
                **data,
                "disks": [DiskSpec.from_dict(d) for d in data.get("disks", [])],
                "nics": [NicSpec(**n) for n in data.get("nics", [])],
            }
        )


@dataclass
class InstanceRef:
    """Names one instance on a host, for operations that need nothing else (destroy, console)."""

    instance_id: str
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceRef:
        _check_version(data)
        return cls(**data)


@dataclass
class OperationSpec:
    """One lifecycle operation on an existing instance (``agents.names.OPERATIONS``).

    ``hard`` (reboot) resets instead of an ACPI shutdown; ``timeout`` is how long a clean shutdown
    may take before the domain is destroyed; ``domain`` is the instance's (new) spec for
    ``resize`` and ``rebuild``; ``start`` says whether ``resize`` leaves the guest running.
    ``snapshot`` uploads the root disk (qcow2, flattened) with ``PUT upload_url`` and
    ``X-Auth-Token: upload_token``; ``image_id`` names the image it fills (it comes back in the
    result).
    """

    instance_id: str
    operation: str
    hard: bool = False
    timeout: int = 60
    start: bool = True
    domain: DomainSpec | None = None
    image_id: str | None = None
    upload_url: str | None = None
    upload_token: str | None = None
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OperationSpec:
        _check_version(data)
        domain = data.get("domain")
        return cls(**{**data, "domain": DomainSpec.from_dict(domain) if domain else None})


@dataclass
class HostReport:
    """What an agent's heartbeat tells the control plane: identity, capacity, domains."""

    hostname: str
    queue: str
    virt_type: str
    vcpus: int
    memory_mib: int
    disk_gb: int
    agent_version: str
    domains: dict[str, int] = field(default_factory=dict)  # instance id -> power state
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostReport:
        _check_version(data)
        return cls(**data)
