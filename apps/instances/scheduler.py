"""Pick a host for an instance: filter hosts that can take it, weigh them, claim under a lock.

Filters (Nova's names): ComputeFilter (up and enabled), AvailabilityZoneFilter, the resource
filters (RAM, vCPU, disk with each host's allocation ratios), ServerGroup(Anti)AffinityFilter,
ImagePropertiesFilter (``architecture``), and the hosts a failed spawn already tried. Weigher:
free RAM, spread (most free first, default) or pack (least free first) by
``CLOUDMGR_SCHEDULER_WEIGHER``; soft (anti-)affinity weighs members' hosts first (last).

The claim is race-free: the chosen host's row (and the server group's) is locked and its usage
recounted inside the caller's transaction before the instance is placed on it, so two concurrent
creates can never both take its last room or both land on an anti-affinity group's host.
"""

from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import ExpressionWrapper, F, FloatField, Q, Sum
from django.db.models.functions import Coalesce

from apps.hosts.models import Host
from apps.hosts.selectors import hosts_schedulable
from apps.instances.models import Instance, ServerGroup
from apps.instances.selectors import HostUsage, host_usage

ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "i686": "i386", "arm64": "aarch64"}


@dataclass(frozen=True)
class Request:
    vcpus: int
    memory_mib: int
    root_gb: int
    availability_zone: str | None = None
    architecture: str | None = None
    exclude: frozenset = field(default_factory=frozenset)  # host pks already tried


def fits(host: Host, used: HostUsage, request: Request) -> bool:
    return (
        used.vcpus + request.vcpus <= host.vcpus * host.cpu_allocation_ratio
        and used.memory_mib + request.memory_mib <= host.memory_mib * host.ram_allocation_ratio
        and used.disk_gb + request.root_gb <= host.disk_gb * host.disk_allocation_ratio
    )


def free_ram_mib(host: Host, used: HostUsage) -> float:
    return host.memory_mib * host.ram_allocation_ratio - used.memory_mib


def _group_hosts(group: ServerGroup | None) -> dict:
    """{host pk: members on it} of the group's live members."""
    if group is None:
        return {}
    counts: dict = {}
    for host_id in Instance.objects.filter(server_groups=group, deleted_at__isnull=True,
                                           host__isnull=False).values_list("host_id", flat=True):
        counts[host_id] = counts.get(host_id, 0) + 1
    return counts


def _group_allows(group: ServerGroup | None, members: dict, host: Host) -> bool:
    if group is None:
        return True
    if group.policy == "anti-affinity":
        limit = int((group.rules or {}).get("max_server_per_host", 1))
        return members.get(host.pk, 0) < limit
    if group.policy == "affinity":
        return not members or host.pk in members
    return True


def _arch_ok(host: Host, request: Request) -> bool:
    if not request.architecture:
        return True
    wanted = ARCH_ALIASES.get(request.architecture.lower(), request.architecture.lower())
    host_arch = getattr(host, "architecture", "") or "x86_64"
    return ARCH_ALIASES.get(host_arch, host_arch) == wanted


MAX_CANDIDATES = 50


def candidates(request: Request, group: ServerGroup | None = None) -> list[Host]:
    """Hosts that pass every filter, best first (at most MAX_CANDIDATES: the claim takes the
    first that still fits once locked). Resources, zone, exclusions and hard group policies are
    filtered and weighed in SQL, so the cost does not grow with every host's instances in Python."""
    live = Q(instances__deleted_at__isnull=True)
    hosts = hosts_schedulable()
    if request.availability_zone:
        hosts = hosts.filter(availability_zone=request.availability_zone)
    if request.exclude:
        hosts = hosts.exclude(pk__in=request.exclude)
    members = _group_hosts(group)
    if group is not None and group.policy == "anti-affinity":
        limit = int((group.rules or {}).get("max_server_per_host", 1))
        hosts = hosts.exclude(pk__in=[pk for pk, n in members.items() if n >= limit])
    elif group is not None and group.policy == "affinity" and members:
        hosts = hosts.filter(pk__in=list(members))
    hosts = hosts.annotate(
        used_vcpus=Coalesce(Sum("instances__vcpus", filter=live), 0),
        used_memory=Coalesce(Sum("instances__memory_mib", filter=live), 0),
        used_disk=Coalesce(Sum("instances__root_gb", filter=live), 0),
    ).annotate(
        free_memory=ExpressionWrapper(F("memory_mib") * F("ram_allocation_ratio") - F("used_memory"),
                                      output_field=FloatField()),
        free_vcpus=ExpressionWrapper(F("vcpus") * F("cpu_allocation_ratio") - F("used_vcpus"),
                                     output_field=FloatField()),
        free_disk=ExpressionWrapper(F("disk_gb") * F("disk_allocation_ratio") - F("used_disk"),
                                    output_field=FloatField()),
    ).filter(free_memory__gte=request.memory_mib, free_vcpus__gte=request.vcpus, free_disk__gte=request.root_gb)
    pack = getattr(settings, "CLOUDMGR_SCHEDULER_WEIGHER", "spread") == "pack"
    hosts = hosts.order_by("free_memory" if pack else "-free_memory", "hostname")
    soft = group is not None and group.policy in ("soft-affinity", "soft-anti-affinity")
    passing = [h for h in (hosts if soft else hosts[:MAX_CANDIDATES]) if _arch_ok(h, request)]
    if soft:
        sign = -1 if group.policy == "soft-affinity" else 1
        passing.sort(key=lambda h: sign * members.get(h.pk, 0))  # stable: keeps the RAM order
        passing = passing[:MAX_CANDIDATES]
    return passing


def request_for(instance: Instance, exclude=()) -> Request:
    architecture = None
    if instance.image is not None:
        architecture = (instance.image.properties or {}).get("architecture") or None
    return Request(instance.vcpus, instance.memory_mib, instance.root_gb, instance.availability_zone or None,
                   architecture, frozenset(exclude))


def claim(instance: Instance, group: ServerGroup | None = None, exclude=()) -> Host | None:
    """Place the instance on the best host that still fits once locked; None if no host can.
    Must run in the caller's transaction."""
    if group is not None:
        group = ServerGroup.objects.select_for_update().get(pk=group.pk)  # serializes the group's claims
    request = request_for(instance, exclude)
    for host in candidates(request, group):
        locked = Host.objects.select_for_update().get(pk=host.pk)
        if fits(locked, host_usage(host=locked), request) and _group_allows(group, _group_hosts(group), locked):
            Instance.objects.filter(pk=instance.pk).update(host=locked)
            instance.host = locked
            return locked
    return None


def fits_resize(instance: Instance, new: dict) -> bool:
    """Whether the instance's host still has room for it with ``new`` resources (host row locked,
    usage recounted: the instance's current claim is replaced by the new one)."""
    locked = Host.objects.select_for_update().get(pk=instance.host_id)
    used = host_usage(host=locked)
    delta = Request(new["vcpus"] - instance.vcpus, new["memory_mib"] - instance.memory_mib,
                    new["root_gb"] - instance.root_gb)
    return fits(locked, used, delta)
