from django.conf import settings
from django.db import models

from cloudmgr.models import BaseModel


class HostState(models.TextChoices):
    """What the heartbeats say (Nova's service state)."""

    UP = "up"
    DOWN = "down"


class HostStatus(models.TextChoices):
    """What the operator says (Nova's service status)."""

    ENABLED = "enabled"
    DISABLED = "disabled"


def _cpu_ratio() -> float:
    return settings.CLOUDMGR_CPU_ALLOCATION_RATIO


def _ram_ratio() -> float:
    return settings.CLOUDMGR_RAM_ALLOCATION_RATIO


def _disk_ratio() -> float:
    return settings.CLOUDMGR_DISK_ALLOCATION_RATIO


class Host(BaseModel):
    hostname = models.CharField(max_length=255, unique=True)
    queue = models.CharField(max_length=255)
    virt_type = models.CharField(max_length=16, default="qemu")
    availability_zone = models.CharField(max_length=255, default="nova")
    vcpus = models.PositiveIntegerField(default=0)
    memory_mib = models.PositiveIntegerField(default=0)
    disk_gb = models.PositiveIntegerField(default=0)
    cpu_allocation_ratio = models.FloatField(default=_cpu_ratio)
    ram_allocation_ratio = models.FloatField(default=_ram_ratio)
    disk_allocation_ratio = models.FloatField(default=_disk_ratio)
    state = models.CharField(max_length=8, choices=HostState.choices, default=HostState.DOWN)
    status = models.CharField(max_length=8, choices=HostStatus.choices, default=HostStatus.ENABLED)
    disabled_reason = models.CharField(max_length=255, blank=True, default="")
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    agent_version = models.CharField(max_length=32, blank=True, default="")
    # The last heartbeat's domains ({instance id: power state}) for the reconciler; may include
    # domains no record owns (another cloud on the same libvirt).
    domains = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["hostname"]

    def __str__(self) -> str:
        return self.hostname
