"""Pick a host for an instance: filter hosts that can take it, weigh them, claim under a lock.

The claim is race-free: the chosen host's row is locked and its usage recounted inside the
caller's transaction before the instance is placed on it, so two concurrent creates can never
both take its last room.
"""

from dataclasses import dataclass

from apps.hosts.models import Host
from apps.hosts.selectors import hosts_schedulable
from apps.instances.models import Instance
from apps.instances.selectors import HostUsage, host_usage, hosts_usage


@dataclass(frozen=True)
class Request:
    vcpus: int
    memory_mib: int
    root_gb: int
    availability_zone: str | None = None


def fits(host: Host, used: HostUsage, request: Request) -> bool:
    return (
        used.vcpus + request.vcpus <= host.vcpus * host.cpu_allocation_ratio
        and used.memory_mib + request.memory_mib <= host.memory_mib * host.ram_allocation_ratio
        and used.disk_gb + request.root_gb <= host.disk_gb * host.disk_allocation_ratio
    )


def free_ram_mib(host: Host, used: HostUsage) -> float:
    return host.memory_mib * host.ram_allocation_ratio - used.memory_mib


def candidates(request: Request) -> list[Host]:
    """Hosts that pass every filter, best first (spread: the most free RAM)."""
    hosts = hosts_schedulable()
    if request.availability_zone:
        hosts = hosts.filter(availability_zone=request.availability_zone)
    hosts = list(hosts)
    usage = hosts_usage(hosts=hosts)
    passing = [h for h in hosts if fits(h, usage[h.pk], request)]
    return sorted(passing, key=lambda h: (-free_ram_mib(h, usage[h.pk]), h.hostname))


def claim(instance: Instance) -> Host | None:
    """Place the instance on the best host that still fits once locked; None if no host can."""
    request = Request(instance.vcpus, instance.memory_mib, instance.root_gb, instance.availability_zone or None)
    for host in candidates(request):
        locked = Host.objects.select_for_update().get(pk=host.pk)
        if fits(locked, host_usage(host=locked), request):
            Instance.objects.filter(pk=instance.pk).update(host=locked)
            instance.host = locked
            return locked
    return None
