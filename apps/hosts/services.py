import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.names import host_queue
from agents.specs import HostReport
from apps.hosts.models import Host, HostState, HostStatus
from apps.networks.services import network_agent_report

logger = logging.getLogger(__name__)


def host_register(*, hostname: str, virt_type: str) -> Host:
    """Record a host before its agent first reports (bootstrap); it stays down until it does."""
    host, _ = Host.objects.get_or_create(
        hostname=hostname, defaults={"queue": host_queue(hostname), "virt_type": virt_type}
    )
    return host


@transaction.atomic
def host_heartbeat(*, report: HostReport) -> Host:
    """Apply an agent's report: capacity, version, and the host is up (again) unless forced down."""
    host, created = Host.objects.select_for_update().get_or_create(
        hostname=report.hostname, defaults={"queue": report.queue}
    )
    if host.state != HostState.UP and not host.forced_down:
        logger.info("host %s is up", host.hostname)
    host.queue = report.queue
    host.virt_type = report.virt_type
    host.vcpus = report.vcpus
    host.memory_mib = report.memory_mib
    host.disk_gb = report.disk_gb
    host.agent_version = report.agent_version
    host.domains = dict(report.domains or {})
    host.state = HostState.DOWN if host.forced_down else HostState.UP
    host.last_heartbeat = timezone.now()
    host.save()
    # A new agent process (restart, reboot) gets the host's whole network state.
    network_agent_report(host=host, started_at=report.started_at)
    return host


def _heartbeat_cutoff():
    """A host whose last heartbeat is older than this is down."""
    return timezone.now() - timedelta(seconds=settings.CLOUDMGR_HOST_DOWN_AFTER)


def hosts_mark_down() -> list[str]:
    """Mark down every up host whose heartbeats stopped; returns their names."""
    stale = Host.objects.filter(state=HostState.UP, last_heartbeat__lt=_heartbeat_cutoff())
    names = list(stale.values_list("hostname", flat=True))
    if names:
        stale.update(state=HostState.DOWN, updated_at=timezone.now())
        logger.warning("hosts down (no heartbeat for %ss): %s", settings.CLOUDMGR_HOST_DOWN_AFTER, ", ".join(names))
    return names


@transaction.atomic
def host_force_down(*, host: Host, forced_down: bool) -> Host:
    """Force the host down (the scheduler and instance operations treat it as down, whatever its
    heartbeats say), or lift that: then it is up again if its last heartbeat is recent."""
    host = Host.objects.select_for_update().get(pk=host.pk)
    host.forced_down = forced_down
    if forced_down:
        host.state = HostState.DOWN
    else:
        alive = host.last_heartbeat is not None and host.last_heartbeat >= _heartbeat_cutoff()
        host.state = HostState.UP if alive else HostState.DOWN
    host.save(update_fields=["forced_down", "state", "updated_at"])
    logger.warning("host %s: %s", host.hostname,
                   "forced down" if forced_down else f"no longer forced down ({host.state})")
    return host


def host_disable(*, host: Host, reason: str = "") -> Host:
    host.status = HostStatus.DISABLED
    host.disabled_reason = reason
    host.save(update_fields=["status", "disabled_reason", "updated_at"])
    return host


def host_enable(*, host: Host) -> Host:
    host.status = HostStatus.ENABLED
    host.disabled_reason = ""
    host.save(update_fields=["status", "disabled_reason", "updated_at"])
    return host
