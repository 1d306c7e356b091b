from django.db.models import QuerySet

from apps.hosts.models import Host, HostState, HostStatus
from cloudmgr.exceptions import NotFound


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
