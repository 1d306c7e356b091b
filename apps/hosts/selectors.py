import zlib
from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from agents.names import TASK_HOST_UPTIME
from apps.hosts.models import DEFAULT_AVAILABILITY_ZONE, Host, HostState, HostStatus
from cloudmgr.exceptions import NotFound, ServiceUnavailable, ValidationError
from cloudmgr.rpc import agent_call


def host_list() -> QuerySet[Host]:
    return Host.objects.all()


def host_get(*, hostname: str) -> Host:
    host = Host.objects.filter(hostname=hostname).first()
    if host is None:
        raise NotFound(f"Host {hostname} could not be found.")
    return host


def hosts_schedulable() -> QuerySet[Host]:
    """Hosts that may take new instances: reporting (up) and enabled by the operator."""
    return Host.objects.filter(state=HostState.UP, status=HostStatus.ENABLED)


def hosts_matching(*, pattern: str) -> QuerySet[Host]:
    """Hosts whose name contains ``pattern`` (Nova's hypervisor search); NotFound if none."""
    hosts = Host.objects.filter(hostname__icontains=pattern)
    if not hosts.exists():
        raise NotFound(f"No hypervisor matching '{pattern}' could be found.")
    return hosts


def host_uptime(*, host: Host) -> str:
    """The host's ``uptime`` line (Nova's hypervisor uptime), asked of its agent."""
    if host.state != HostState.UP:
        raise ValidationError(f"Compute service of {host.hostname} is unavailable at this time.")
    answer = agent_call(queue=host.queue, task=TASK_HOST_UPTIME, payload={})
    if answer.get("error"):
        raise ServiceUnavailable(f"Host {host.hostname}: {answer['error']}")
    return answer["uptime"]


@dataclass(frozen=True)
class ZoneAggregate:
    """A host aggregate as Nova has one for each availability zone other than its default."""
    id: int
    name: str
    hosts: list[str]
    created_at: datetime


def zone_aggregates() -> list[ZoneAggregate]:
    """An availability zone is a host attribute here; Nova keeps it as an aggregate whose
    metadata names the zone, so each zone but the default one reads as such an aggregate. Its
    id, an integer as Nova's, is derived from the zone's name so that it stays the same."""
    zones: dict[str, list[Host]] = {}
    for host in Host.objects.exclude(availability_zone=DEFAULT_AVAILABILITY_ZONE).order_by("hostname"):
        zones.setdefault(host.availability_zone, []).append(host)
    return [ZoneAggregate(id=zlib.crc32(zone.encode()) & 0x7FFFFFFF, name=zone,
                          hosts=[h.hostname for h in hosts], created_at=min(h.created_at for h in hosts))
            for zone, hosts in sorted(zones.items())]


def zone_aggregate_get(*, aggregate_id: str) -> ZoneAggregate:
    for aggregate in zone_aggregates():
        if str(aggregate.id) == aggregate_id:
            return aggregate
    raise NotFound(f"Aggregate {aggregate_id} could not be found.")
