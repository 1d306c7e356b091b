from django.db.models import QuerySet

from agents.names import TASK_HOST_UPTIME
from apps.hosts.models import Aggregate, Host, HostState, HostStatus
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


def aggregate_list() -> QuerySet[Aggregate]:
    return Aggregate.objects.prefetch_related("hosts")


def aggregate_get(*, aggregate_id) -> Aggregate:
    digits = str(aggregate_id)
    aggregate = aggregate_list().filter(pk=int(digits)).first() if digits.isdigit() and int(digits) < 2**63 else None
    if aggregate is None:
        raise NotFound(f"Aggregate {aggregate_id} could not be found.")
    return aggregate


def hosts_in_aggregates_with(*, metadata: dict[str, str]) -> set:
    """The pks of the hosts whose aggregates' metadata hold every KEY=VALUE asked, as Nova's
    AggregateInstanceExtraSpecsFilter reads them: a host's values for a key are those of all its
    aggregates, each value a comma-separated list of alternatives."""
    values: dict = {}  # host pk -> key -> the values its aggregates give it
    members = Aggregate.hosts.through.objects.values_list("aggregate_id", "host_id")
    metadata_of = dict(Aggregate.objects.values_list("pk", "metadata"))
    for aggregate_id, host_id in members:
        for key, listed in metadata_of[aggregate_id].items():
            values.setdefault(host_id, {}).setdefault(key, set()).update(v.strip() for v in str(listed).split(","))
    return {host_id for host_id, held in values.items()
            if all(value in held.get(key, ()) for key, value in metadata.items())}
