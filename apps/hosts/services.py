import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.names import host_queue
from agents.specs import HostReport
from apps.hosts.models import DEFAULT_AVAILABILITY_ZONE, Aggregate, Host, HostState, HostStatus
from apps.networks.services import network_agent_report
from cloudmgr.exceptions import Conflict, NotFound, ValidationError

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
    host.hypervisor_version = report.hypervisor_version
    host.cpu_info = dict(report.cpu_info or {})
    host.architecture = host.cpu_info.get("arch") or host.architecture
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


# --- aggregates ------------------------------------------------------------------------------------

AZ_KEY = "availability_zone"


def _check_text(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        raise ValidationError(f"Invalid input for field/attribute {what}: 1 to 255 characters.")
    return value.strip()


def _check_zone(zone) -> str | None:
    if zone is None:
        return None
    zone = _check_text(zone, AZ_KEY)
    if ":" in zone:  # "zone:host" asks for a host at boot
        raise ValidationError(f"Invalid input for field/attribute {AZ_KEY}: a zone name has no ':'.")
    return zone


def _zones_after(aggregate: Aggregate, *, hosts: list[Host], zone: str | None) -> dict[Host, str]:
    """Each of ``hosts``' zone once ``aggregate`` has ``zone`` and those hosts among its members;
    refused if a host would be in two zones, or would move with instances on it (they keep the
    zone they were booted in, as in Nova)."""
    zones = {}
    for host in hosts:
        others = {a.availability_zone for a in host.aggregates.exclude(pk=aggregate.pk) if a.availability_zone}
        if zone and others - {zone}:
            raise Conflict(f"Cannot put host {host.hostname} in availability zone {zone}: another aggregate puts "
                           f"it in {', '.join(sorted(others - {zone}))}.")
        new_zone = zone or (others.pop() if others else DEFAULT_AVAILABILITY_ZONE)
        if new_zone != host.availability_zone and host.instances.filter(deleted_at__isnull=True).exists():
            raise Conflict(f"Cannot move host {host.hostname} from availability zone {host.availability_zone} to "
                           f"{new_zone}: it has instances.")
        zones[host] = new_zone
    return zones


def _apply_zones(zones: dict[Host, str]) -> None:
    for host, zone in zones.items():
        if host.availability_zone != zone:
            Host.objects.filter(pk=host.pk).update(availability_zone=zone, updated_at=timezone.now())
            logger.info("host %s is in availability zone %s", host.hostname, zone)


def _locked_members(aggregate: Aggregate) -> list[Host]:
    return list(Host.objects.select_for_update().filter(aggregates=aggregate).order_by("hostname"))


@transaction.atomic
def aggregate_create(*, name, availability_zone=None) -> Aggregate:
    name, zone = _check_text(name, "name"), _check_zone(availability_zone)
    if Aggregate.objects.filter(name=name).exists():
        raise Conflict(f"Aggregate {name} already exists.")
    aggregate = Aggregate.objects.create(name=name, metadata={AZ_KEY: zone} if zone else {})
    logger.info("aggregate %s (%s) created%s", aggregate.id, name, f" for zone {zone}" if zone else "")
    return aggregate


@transaction.atomic
def aggregate_update(*, aggregate: Aggregate, changes: dict) -> Aggregate:
    """Nova's update: a new ``name`` and/or ``availability_zone`` (null: none); the members move
    to the new zone."""
    if not changes or set(changes) - {"name", AZ_KEY}:
        raise ValidationError("Invalid input for field/attribute aggregate: give a name and/or an availability_zone, "
                              "nothing else.")
    if "name" in changes:
        name = _check_text(changes["name"], "name")
        if Aggregate.objects.filter(name=name).exclude(pk=aggregate.pk).exists():
            raise Conflict(f"Aggregate {name} already exists.")
        aggregate.name = name
    if AZ_KEY in changes:
        _set_zone(aggregate, _check_zone(changes[AZ_KEY]))
    aggregate.save()
    return aggregate


def _set_zone(aggregate: Aggregate, zone: str | None) -> None:
    try:
        zones = _zones_after(aggregate, hosts=_locked_members(aggregate), zone=zone)
    except Conflict as exc:  # Nova answers a zone change it refuses with 400
        raise ValidationError(str(exc)) from None
    metadata = {k: v for k, v in aggregate.metadata.items() if k != AZ_KEY}
    aggregate.metadata = {**metadata, AZ_KEY: zone} if zone else metadata
    _apply_zones(zones)


@transaction.atomic
def aggregate_set_metadata(*, aggregate: Aggregate, metadata) -> Aggregate:
    """Nova's set_metadata: each key set, or removed when its value is null; the
    ``availability_zone`` key moves the members as an update does."""
    if not isinstance(metadata, dict):
        raise ValidationError("Invalid input for field/attribute metadata: it must be an object.")
    updated = dict(aggregate.metadata)
    for key, value in metadata.items():
        key = _check_text(key, "metadata key")
        if key == AZ_KEY:
            continue
        if value is None:
            updated.pop(key, None)
        else:
            updated[key] = _check_text(value, f"metadata {key}")
    aggregate.metadata = updated  # its zone kept, unless the zone key below changes it
    if AZ_KEY in metadata:
        _set_zone(aggregate, _check_zone(metadata[AZ_KEY]))
    aggregate.save()
    return aggregate


@transaction.atomic
def aggregate_delete(*, aggregate: Aggregate) -> None:
    if aggregate.hosts.exists():
        raise ValidationError(f"Cannot delete aggregate {aggregate.id}: it still has hosts; remove them first.")
    aggregate.delete()
    logger.info("aggregate %s (%s) deleted", aggregate.id, aggregate.name)


@transaction.atomic
def aggregate_add_host(*, aggregate: Aggregate, hostname: str) -> Aggregate:
    host = Host.objects.select_for_update().filter(hostname=hostname).first()
    if host is None:
        raise NotFound(f"Compute host {hostname} could not be found.")
    if aggregate.hosts.filter(pk=host.pk).exists():
        raise Conflict(f"Aggregate {aggregate.id} already has host {hostname}.")
    _apply_zones(_zones_after(aggregate, hosts=[host], zone=aggregate.availability_zone))
    aggregate.hosts.add(host)
    aggregate.save(update_fields=["updated_at"])
    return aggregate


@transaction.atomic
def aggregate_remove_host(*, aggregate: Aggregate, hostname: str) -> Aggregate:
    host = Host.objects.select_for_update().filter(hostname=hostname, aggregates=aggregate).first()
    if host is None:
        raise NotFound(f"Cannot remove host {hostname} in aggregate {aggregate.id}: it is not a member.")
    try:
        zones = _zones_after(aggregate, hosts=[host], zone=None)
    except Conflict as exc:
        raise Conflict(f"Cannot remove host {hostname} in aggregate {aggregate.id}: {exc}") from None
    aggregate.hosts.remove(host)
    _apply_zones(zones)
    aggregate.save(update_fields=["updated_at"])
    return aggregate
