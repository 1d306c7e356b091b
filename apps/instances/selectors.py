import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import reduce

from django.db.models import Case, CharField, Exists, F, OuterRef, Prefetch, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce

from agents.names import TASK_CONSOLE_LOG, TASK_DIAGNOSTICS
from agents.specs import InstanceRef
from apps.hosts.models import Host
from apps.instances.models import (
    HELD,
    Flavor,
    Instance,
    InstanceFault,
    InstanceTag,
    Keypair,
    Migration,
    ServerGroup,
)
from apps.instances.states import VmState, vm_states_for_status
from apps.networks.selectors import server_ids_by_address
from apps.tenants.models import Project, User
from apps.tenants.selectors import is_cloud_admin
from apps.volumes.selectors import server_boot_volume
from cloudmgr.exceptions import InvalidState, NotFound, PermissionDenied, ServiceUnavailable, ValidationError
from cloudmgr.models import checked_regex, filter_pk
from cloudmgr.rpc import agent_call


@dataclass(frozen=True)
class HostUsage:
    vcpus: int = 0
    memory_mib: int = 0
    disk_gb: int = 0


_USAGE = {resource: Coalesce(Sum(held), 0) for resource, held in HELD.items()}


def host_usage(*, host: Host) -> HostUsage:
    """What the instances placed on a host claim (every instance not deleted)."""
    return HostUsage(**Instance.objects.filter(host=host, deleted_at__isnull=True).aggregate(**_USAGE))


def hosts_usage(*, hosts: list[Host]) -> dict:
    """host_usage for many hosts in one query."""
    rows = (
        Instance.objects.filter(host__in=hosts, deleted_at__isnull=True)
        .values("host_id")
        .annotate(**_USAGE)
    )
    usage = {row.pop("host_id"): HostUsage(**row) for row in rows}
    return {host.pk: usage.get(host.pk, HostUsage()) for host in hosts}


def hosts_servers(*, hosts: list[Host]) -> dict:
    """The (id, name) of the instances on each host, oldest first, by host id."""
    servers: dict = {host.pk: [] for host in hosts}
    for host_id, server_id, name in Instance.objects.filter(host__in=hosts, deleted_at__isnull=True).order_by(
            "created_at").values_list("host_id", "id", "name"):
        servers[host_id].append((server_id, name))
    return servers


def host_usage_by_project(*, host: Host) -> dict[str, HostUsage]:
    """What each project's instances on the host claim (Nova's os-hosts show), by project id."""
    rows = (Instance.objects.filter(host=host, deleted_at__isnull=True).values("project_id")
            .annotate(**_USAGE).order_by("project_id"))
    return {row.pop("project_id").hex: HostUsage(**row) for row in rows}


def flavor_list(*, user: User, project: Project | None = None) -> QuerySet[Flavor]:
    """Enabled flavors: all for an admin; public ones and the private ones shared with the
    project for anyone else."""
    flavors = Flavor.objects.filter(disabled=False)
    if is_cloud_admin(user=user):
        return flavors
    if project is None:
        return flavors.filter(is_public=True)
    return flavors.filter(Q(is_public=True) | Q(projects=project)).distinct()


def flavor_get(*, user: User, name_or_id: str, project: Project | None = None) -> Flavor:
    flavor = flavor_list(user=user, project=project).filter(Q(pk=name_or_id) | Q(name=name_or_id)).first()
    if flavor is None:
        raise NotFound(f"Flavor {name_or_id} could not be found.")
    return flavor


# Nova's server list filters that only admins may use (before 2.83 a non-admin's are dropped),
# as (field, match): "exact" and "uuid" are the exact ones of its database layer, "regex" the rest
# (a regex on the column); "config_drive" is a regex on the column Nova stores, "True" or "".
ADMIN_SERVER_FILTERS = {
    "uuid": ("pk", "uuid"),
    "user_id": ("user_id", "uuid"),
    "image_ref": ("image_id", "uuid"),
    "vm_state": ("vm_state", "exact"),
    "task_state": ("task_state", "exact"),
    "host": ("host__hostname", "exact"),
    "node": ("host__hostname", "regex"),
    "hostname": ("hostname", "regex"),
    "display_name": ("name", "regex"),
    "description": ("description", "regex"),
    "display_description": ("description", "regex"),
    "key_name": ("key_name", "regex"),
    "availability_zone": ("availability_zone", "regex"),
    "power_state": ("power_state", "regex"),
    "locked_by": ("locked_by", "regex"),
    "launch_index": ("launch_index", "regex"),
    "config_drive": ("config_drive", "config_drive"),
}


def _admin_filter(name: str, value: str) -> Q:
    field, match = ADMIN_SERVER_FILTERS[name]
    if match == "exact":
        return Q(**{field: value})
    if match == "uuid":
        uuid = _uuid_or_none(value)
        return Q(**{field: uuid}) if uuid else Q(pk__in=[])  # matches nothing
    pattern = checked_regex(name, value)
    if match == "regex":
        return Q(**{f"{field}__regex": pattern})
    matches = Q(pk__in=[])  # config_drive: "False" matches neither "True" nor ""
    if re.search(pattern, "True"):
        matches |= Q(config_drive=True)
    if re.search(pattern, ""):
        matches |= Q(config_drive=False)
    return matches


def instance_list(*, user: User, project: Project, status: str | None = None, name: str | None = None,
                  all_projects: bool = False, changes_since=None, project_id: str | None = None,
                  reservation_id: str | None = None, ip: str | None = None, ip6: str | None = None,
                  image: str | None = None, flavor: str | None = None, admin_filters: dict[str, str] | None = None,
                  deleted: bool | None = None, include_deleted: bool = False, tags: Sequence[str] = (),
                  tags_any: Sequence[str] = (), not_tags: Sequence[str] = (),
                  not_tags_any: Sequence[str] = ()) -> QuerySet[Instance]:
    """The project's instances that are not deleted (with ``changes_since``, also those deleted
    since then, as Nova; with ``include_deleted``, all); every project's (or ``project_id``'s) for
    an admin who asks. ``ip``/``ip6`` are regexes on the instances' fixed IPv4/IPv6 addresses,
    ``image`` an image id, ``flavor`` a flavor id. ``admin_filters`` (``ADMIN_SERVER_FILTERS``) and
    ``deleted`` (only deleted, or only live, instances) apply for admins and are dropped for others.
    A status of DELETED lists deleted instances, for admins only (403 for others, as Nova). The tag
    filters are Nova's: all of ``tags``, any of ``tags_any``, not all of ``not_tags``, none of
    ``not_tags_any``."""
    admin = is_cloud_admin(user=user)
    if not admin:
        admin_filters, deleted = {}, None
    if status and status.upper() == "DELETED":
        if not admin:
            raise PermissionDenied("Only administrators may list deleted instances")
        deleted = True
    instances = Instance.objects.all()
    if changes_since is not None:
        instances = instances.filter(updated_at__gte=changes_since)
    if deleted is not None:
        instances = instances.filter(deleted_at__isnull=not deleted)
    elif changes_since is None and not include_deleted:
        instances = instances.filter(deleted_at__isnull=True)
    if all_projects and admin:
        if project_id:
            instances = instances.filter(project_id=_uuid_or_none(project_id))
    else:
        instances = instances.filter(project=project)
    if status:
        instances = instances.filter(vm_state__in=vm_states_for_status(status))
    if name:
        instances = instances.filter(name__regex=checked_regex("name", name))
    if reservation_id:
        instances = instances.filter(reservation_id=reservation_id)
    if ip is not None or ip6 is not None:
        instances = instances.filter(pk__in=server_ids_by_address(ip=ip, ip6=ip6))
    if image:
        image_id = _uuid_or_none(image)
        instances = instances.filter(image_id=image_id) if image_id else instances.none()
    if flavor:
        instances = instances.filter(flavor_id=flavor)
    for key, value in (admin_filters or {}).items():
        instances = instances.filter(_admin_filter(key, value))
    for tag in tags:
        instances = instances.filter(_tagged(tag))
    if tags_any:
        instances = instances.filter(_tagged(*tags_any))
    if not_tags:
        instances = instances.exclude(*(_tagged(tag) for tag in not_tags))
    if not_tags_any:
        instances = instances.exclude(_tagged(*not_tags_any))
    return instances.select_related("flavor", "image", "host", "user", "project")


def _tagged(*tags: str) -> Exists:
    """The instance has one of ``tags``."""
    return Exists(InstanceTag.objects.filter(instance=OuterRef("pk"), tag__in=tags))


def instance_tags(*, instance: Instance) -> list[str]:
    return [tag.tag for tag in instance.tags.all()]


@dataclass(frozen=True)
class SortColumn:
    """How cloudmgr orders by one of Nova's server sort keys: a field path or an expression."""

    expression: str | Case
    nullable: bool = False
    admin_only: bool = False


# Nova's server sort keys (its list schema's enum). NULLs sort as the smallest value (first when
# ascending, last when descending, as MySQL, Nova's usual database), on every backend.
SERVER_SORT_COLUMNS = {
    "created_at": SortColumn("created_at"),
    "updated_at": SortColumn("updated_at"),
    "display_name": SortColumn("name"),
    "display_description": SortColumn("description", nullable=True),
    "hostname": SortColumn("hostname"),
    "uuid": SortColumn("id"),
    "vm_state": SortColumn("vm_state"),
    "task_state": SortColumn("task_state", nullable=True),
    "power_state": SortColumn("power_state"),
    "availability_zone": SortColumn("availability_zone"),
    "instance_type_id": SortColumn("flavor_id"),
    "image_ref": SortColumn("image_id", nullable=True),
    "key_name": SortColumn("key_name", nullable=True),
    "launch_index": SortColumn("launch_index"),
    "launched_at": SortColumn("launched_at", nullable=True),
    "terminated_at": SortColumn("terminated_at", nullable=True),
    "locked_by": SortColumn("locked_by"),
    "project_id": SortColumn("project_id"),
    "user_id": SortColumn("user_id"),
    "config_drive": SortColumn("config_drive"),  # shown as "" or "True": false sorts first
    "root_device_name": SortColumn(Case(When(host__isnull=False, then=Value("/dev/vda")), default=Value(None),
                                        output_field=CharField()), nullable=True),
    # Hosts are for admins to see, so only they may sort by them (Nova: 403 for others).
    "host": SortColumn("host__hostname", nullable=True, admin_only=True),
    "node": SortColumn("host__hostname", nullable=True, admin_only=True),
}
# Valid keys whose value is the same for every server here (empty access IPs, no kernel, progress
# 0...): they do not change the order, but their direction still counts.
SERVER_SORT_CONSTANT_KEYS = {"access_ip_v4", "access_ip_v6", "auto_disk_config", "kernel_id", "ramdisk_id",
                             "progress"}
# Valid keys Nova ignores (dropped with their direction) rather than refuse, for compatibility.
SERVER_SORT_IGNORED_KEYS = {
    "architecture", "cell_name", "cleaned", "default_ephemeral_device", "default_swap_device", "deleted",
    "deleted_at", "disable_terminate", "ephemeral_gb", "ephemeral_key_uuid", "id", "key_data", "launched_on",
    "locked", "memory_mb", "os_type", "reservation_id", "root_gb", "shutdown_terminate", "user_data", "vcpus",
    "vm_mode",
}
# What Nova appends to every sort, in the first given direction: the order is total.
SERVER_SORT_DEFAULT_KEYS = ("created_at", "uuid")


@dataclass(frozen=True)
class _SortTerm:
    alias: str  # the annotation that holds the key's value
    column: SortColumn
    descending: bool


def server_sort(*, user: User, sort_keys: Sequence[str] = (), sort_dirs: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Nova's ``sort_key``/``sort_dir`` pairs made whole: no key means ``created_at``, no direction
    ``desc``; a key without its direction takes the first given; ``created_at`` and ``uuid`` are
    appended (in the first direction) unless given. Unknown keys and directions are 400, more
    directions than keys 400, ``host``/``node`` 403 for non-admins; keys Nova ignores are dropped
    with their direction. Returns (key, direction) pairs with only the keys that order."""
    keys = list(sort_keys) or ["created_at"]
    dirs = list(sort_dirs) or ["desc"]
    for key in keys:
        if key not in SERVER_SORT_COLUMNS and key not in SERVER_SORT_CONSTANT_KEYS \
                and key not in SERVER_SORT_IGNORED_KEYS:
            raise ValidationError(f"Invalid input for query parameters sort_key. Value: {key}.")
    kept_keys, kept_dirs = [], []
    for index, key in enumerate(keys):
        if key in SERVER_SORT_IGNORED_KEYS:
            continue
        column = SERVER_SORT_COLUMNS.get(key)
        if column is not None and column.admin_only and not is_cloud_admin(user=user):
            raise PermissionDenied(f"Only administrators can sort servers by {key}")
        kept_keys.append(key)
        if index < len(dirs):
            kept_dirs.append(dirs[index])
    kept_dirs += dirs[len(keys):]  # extra directions: refused below, as Nova does
    for direction in kept_dirs:
        if direction not in ("asc", "desc"):
            raise ValidationError("Unknown sort direction, must be 'desc' or 'asc'")
    if len(kept_dirs) > len(kept_keys):
        raise ValidationError("Sort direction size exceeds sort key size")
    first = kept_dirs[0] if kept_dirs else "desc"
    kept_dirs += [first] * (len(kept_keys) - len(kept_dirs))
    pairs = list(zip(kept_keys, kept_dirs, strict=True))
    pairs += [(key, first) for key in SERVER_SORT_DEFAULT_KEYS if key not in kept_keys]
    ordering, seen = [], set()
    for key, direction in pairs:
        column = SERVER_SORT_COLUMNS.get(key)
        if column is None or str(column.expression) in seen:
            continue  # a constant, or a column already ordered by (host and node)
        seen.add(str(column.expression))
        ordering.append((key, direction))
    return ordering


def _sort_terms(ordering: list[tuple[str, str]]) -> list[_SortTerm]:
    return [_SortTerm(f"sort{index}", SERVER_SORT_COLUMNS[key], direction == "desc")
            for index, (key, direction) in enumerate(ordering)]


def _annotated(instances: QuerySet[Instance], terms: list[_SortTerm]) -> QuerySet[Instance]:
    return instances.annotate(**{
        term.alias: F(term.column.expression) if isinstance(term.column.expression, str) else term.column.expression
        for term in terms
    })


def _order_by(term: _SortTerm):
    if not term.column.nullable:
        return F(term.alias).desc() if term.descending else F(term.alias).asc()
    return F(term.alias).desc(nulls_last=True) if term.descending else F(term.alias).asc(nulls_first=True)


def _beyond(term: _SortTerm, value) -> Q | None:
    """Rows strictly after ``value`` on this key (None: no row can be)."""
    if value is None:  # NULL is the smallest value
        return None if term.descending else Q(**{f"{term.alias}__isnull": False})
    if not term.descending:
        return Q(**{f"{term.alias}__gt": value})
    after = Q(**{f"{term.alias}__lt": value})
    return after | Q(**{f"{term.alias}__isnull": True}) if term.column.nullable else after


def _same(term: _SortTerm, value) -> Q:
    return Q(**{f"{term.alias}__isnull": True}) if value is None else Q(**{term.alias: value})


def _after_marker(terms: list[_SortTerm], values: dict) -> Q:
    """Keyset condition: the rows after the marker's in the order of ``terms``, i.e.
    (k1, k2, ..., id) > (v1, v2, ..., marker id) with each key's direction and NULLs; written out
    as k1 > v1 OR (k1 = v1 AND k2 > v2) OR ..., since SQL's row comparison has one direction."""
    alternatives, ties = [], Q()
    for term in terms:
        beyond = _beyond(term, values[term.alias])
        if beyond is not None:
            alternatives.append(ties & beyond)
        ties &= _same(term, values[term.alias])
    condition = reduce(operator.or_, alternatives) if alternatives else Q(pk__in=[])
    # A bound on the first key alone lets the database use an index on it for the range.
    first, value = terms[0], values[terms[0].alias]
    if value is not None and not first.descending:
        condition &= Q(**{f"{first.alias}__gte": value})
    elif value is not None and not first.column.nullable:
        condition &= Q(**{f"{first.alias}__lte": value})
    return condition


def instance_page(*, user: User, project: Project, limit: int, marker: str | None = None,
                  sort_keys: Sequence[str] = (), sort_dirs: Sequence[str] = (), with_tags: bool = False,
                  **filters) -> list[Instance]:
    """One page of ``instance_list(**filters)`` in Nova's order (``server_sort``): at most ``limit``
    instances after the ``marker`` instance, with their faults (newest first) and, if asked, their
    tags (one query more). Keyset pagination:
    the database finds the rows after the marker's sort values and stops at ``limit``; nothing
    reads the ids before it. The marker may be any instance the user may see, even deleted since
    (Nova reads it with deleted ones), so a page walk survives a delete. 400 if it is not one."""
    terms = _sort_terms(server_sort(user=user, sort_keys=sort_keys, sort_dirs=sort_dirs))
    instances = _annotated(instance_list(user=user, project=project, **filters), terms)
    if marker:
        visible = Instance.objects.all() if is_cloud_admin(user=user) else Instance.objects.filter(project=project)
        values = (filter_pk(_annotated(visible, terms), marker).order_by()
                  .values(*(term.alias for term in terms)).first())
        if values is None:
            raise ValidationError(f"marker [{marker}] not found")
        instances = instances.filter(_after_marker(terms, values))
    instances = instances.order_by(*(_order_by(term) for term in terms))
    faults = Prefetch("faults", queryset=InstanceFault.objects.order_by("-created_at"))
    instances = instances.prefetch_related(faults, *(["tags"] if with_tags else []))
    return list(instances[:limit])


def _uuid_or_none(value: str):
    import uuid

    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def keypair_list(*, user: User) -> QuerySet[Keypair]:
    return Keypair.objects.filter(user=user)


def keypair_get(*, user: User, name: str) -> Keypair:
    keypair = keypair_list(user=user).filter(name=name).first()
    if keypair is None:
        raise NotFound(f"Keypair {name} not found for user {user.pk.hex}.")
    return keypair


def server_group_list(*, user: User, project: Project, all_projects: bool = False) -> QuerySet[ServerGroup]:
    groups = ServerGroup.objects.all()
    if not (all_projects and is_cloud_admin(user=user)):
        groups = groups.filter(project=project)
    return groups.prefetch_related("members")


def server_group_get(*, user: User, project: Project, group_id: str) -> ServerGroup:
    group = filter_pk(server_group_list(user=user, project=project, all_projects=True), group_id).first()
    if group is None or (group.project_id != project.pk and not is_cloud_admin(user=user)):
        raise NotFound(f"Instance group {group_id} could not be found.")
    return group


def instance_actions(*, instance: Instance) -> QuerySet:
    return instance.actions.select_related("user").prefetch_related("events").order_by("-created_at")


def instance_image_properties(*, instance: Instance) -> dict:
    """The properties of the image the instance was made from: its image's, or for a server
    booted from a volume, the image the volume was made from (volume_image_metadata), as Nova."""
    if instance.image is not None:
        return instance.image.properties or {}
    boot_volume = server_boot_volume(instance=instance)
    return (boot_volume.image_metadata or {}) if boot_volume is not None else {}


def instance_guest_agent(*, instance: Instance) -> bool:
    """Whether the instance's image asks for the QEMU guest agent (``hw_qemu_guest_agent``)."""
    value = instance_image_properties(instance=instance).get("hw_qemu_guest_agent", "")
    return str(value).strip().lower() in ("yes", "true", "1", "on", "y")


def instance_get(*, user: User, project: Project, instance_id: str, include_deleted: bool = False) -> Instance:
    """The instance, if the user may see it (a deleted one only with ``include_deleted``)."""
    instances = instance_list(user=user, project=project, all_projects=True, include_deleted=include_deleted)
    instance = filter_pk(instances, instance_id).first()
    if instance is None:
        raise NotFound(f"Instance {instance_id} could not be found.")
    return instance


def instance_fault(*, instance: Instance):
    return instance.faults.first()


def instance_console_log(*, instance: Instance, length: int | None = None) -> str:
    """The guest's serial console output, asked of the host that runs it."""
    if instance.host is None:
        return ""
    answer = agent_call(
        queue=instance.host.queue,
        task=TASK_CONSOLE_LOG,
        payload=InstanceRef(instance_id=str(instance.id)).to_dict(),
        length=length,
    )
    if answer.get("error"):
        raise ServiceUnavailable(f"The host could not read the console log: {answer['error']}")
    return answer["output"]


def instance_diagnostics(*, user: User, instance: Instance) -> dict[str, int]:
    """Nova's server diagnostics (before 2.48, the libvirt driver's names), for cloud admins:
    the running domain's CPU time, disk and network counters and memory, asked of its host."""
    if not is_cloud_admin(user=user):
        raise PermissionDenied("Policy doesn't allow os_compute_api:os-server-diagnostics to be performed.")
    if instance.host is None or instance.vm_state not in (VmState.ACTIVE, VmState.PAUSED, VmState.RESCUED):
        raise InvalidState(f"Cannot 'get_diagnostics' instance {instance.id} while it is in vm_state "
                           f"{instance.vm_state}.")
    answer = agent_call(queue=instance.host.queue, task=TASK_DIAGNOSTICS,
                        payload=InstanceRef(instance_id=str(instance.id)).to_dict())
    if answer.get("error"):
        raise InvalidState(f"The host could not read the diagnostics of {instance.id}: {answer['error']}")
    return answer["diagnostics"]


# The portal's action menu: (key, label, confirmation or "") in menu order.
PORTAL_ACTIONS = [
    ("start", "Start", ""),
    ("stop", "Shut off", "Shut off {name}? The guest gets an ACPI power-off first."),
    ("reboot", "Reboot", "Reboot {name}?"),
    ("reboot_hard", "Hard reboot", "Hard reboot {name}? The guest is reset without a clean shutdown."),
    ("pause", "Pause", ""),
    ("unpause", "Unpause", ""),
    ("suspend", "Suspend", "Suspend {name}? Its memory is saved to disk."),
    ("resume", "Resume", ""),
    ("confirmResize", "Confirm resize", ""),
    ("rescue", "Rescue", "Boot {name} from a rescue system (its disk becomes the second disk)?"),
    ("unrescue", "Unrescue", ""),
    ("revertResize", "Revert resize", "Revert {name} to its old flavor?"),
    ("trigger_crash_dump", "Trigger crash dump",
     "Send {name} an NMI? Its kernel decides what follows: a crash dump, a panic, or a log line."),
    ("shelve", "Shelve",
     "Shelve {name}? It is shut down and leaves its host until unshelved; its disk is kept (as an image, "
     "unless it boots from a volume) and its volumes stay attached."),
    ("unshelve", "Unshelve", ""),
    ("lock", "Lock", ""),
    ("unlock", "Unlock", ""),
]


# Nova's os-resetState for cloud admins, in any state and during any task (what it is for).
PORTAL_ADMIN_ACTIONS = [
    ("reset_active", "Reset state to active",
     "Reset {name} to active with no task? Only for an instance stuck in a task: nothing is asked of its host."),
    ("reset_error", "Reset state to error", "Reset {name} to error with no task? Nothing is asked of its host."),
]


def instance_allowed_actions(*, instance: Instance, admin: bool = False) -> list[tuple[str, str, str]]:
    """The portal actions the instance's state allows now (the services still decide); with
    ``admin`` (the user is a cloud admin), the reset-state ones too."""
    from apps.instances.states import TRANSITIONS

    if instance.deleted_at:
        return []
    allowed = []
    for key, label, confirm in PORTAL_ACTIONS:
        if instance.task_state is not None:
            break
        if key == "lock" and instance.locked or key == "unlock" and not instance.locked:
            continue
        if instance.vm_state in TRANSITIONS[key].allowed:
            allowed.append((key, label, confirm.format(name=instance.name)))
    if admin:
        allowed += [(key, label, confirm.format(name=instance.name)) for key, label, confirm in PORTAL_ADMIN_ACTIONS]
    return allowed


# --- usage (os-simple-tenant-usage) -------------------------------------------------------------


@dataclass(frozen=True)
class ServerUsage:
    """One server's part of a usage report: the hours it ran inside the report's period."""

    instance: Instance
    hours: float

    @property
    def local_gb(self) -> int:
        return self.instance.root_gb + self.instance.ephemeral_gb

    @property
    def state(self) -> str:
        return "terminated" if self.instance.terminated_at else self.instance.vm_state


@dataclass
class ProjectUsage:
    project_id: str  # hex, as the compute API's tenant_id
    start: datetime
    stop: datetime
    servers: list[ServerUsage] = field(default_factory=list)

    @property
    def total_hours(self) -> float:
        return sum(s.hours for s in self.servers)

    @property
    def vcpu_hours(self) -> float:
        return sum(s.hours * s.instance.vcpus for s in self.servers)

    @property
    def ram_mib_hours(self) -> float:
        return sum(s.hours * s.instance.memory_mib for s in self.servers)

    @property
    def ram_gib_hours(self) -> float:
        return self.ram_mib_hours / 1024

    @property
    def disk_gb_hours(self) -> float:
        return sum(s.hours * s.local_gb for s in self.servers)


def _hours_in(instance: Instance, start: datetime, stop: datetime) -> float:
    """Nova's ``_hours_for``: the part of [launched_at, terminated_at or stop] inside the period."""
    if instance.launched_at is None or instance.launched_at > stop:
        return 0.0
    if instance.terminated_at is not None and instance.terminated_at < start:
        return 0.0
    end = min(stop, instance.terminated_at) if instance.terminated_at else stop
    return (end - max(instance.launched_at, start)).total_seconds() / 3600


def usage_report(*, user: User, project: Project, start: datetime, stop: datetime, project_id: str | None = None,
                 limit: int = 1000) -> list[ProjectUsage]:
    """Nova's simple tenant usage: per project, the servers that ran in [start, stop) (launched
    before stop, not terminated before start; deleted ones too) with their hours, in Nova's
    order (project, then id) and at most ``limit`` servers. Every project's for a cloud admin
    (403 for others); one project's (``project_id``) for a token of that ``project`` or an admin.
    A period that ends before it starts (a start still to come) has no usage."""
    admin = is_cloud_admin(user=user)
    instances = Instance.objects.filter(launched_at__lt=stop).filter(
        Q(terminated_at__isnull=True) | Q(terminated_at__gt=start))
    if project_id is None:
        if not admin:
            raise PermissionDenied("Policy doesn't allow os_compute_api:os-simple-tenant-usage:list to be performed.")
    else:
        wanted = _uuid_or_none(project_id)
        if not admin and wanted != project.pk:
            raise PermissionDenied("Policy doesn't allow os_compute_api:os-simple-tenant-usage:show to be performed.")
        instances = instances.filter(project_id=wanted) if wanted else instances.none()
    if start >= stop:
        instances = instances.none()
    reports: dict[str, ProjectUsage] = {}
    for instance in instances.select_related("flavor").order_by("project_id", "id")[:limit]:
        key = instance.project_id.hex
        report = reports.setdefault(key, ProjectUsage(key, start, stop))
        report.servers.append(ServerUsage(instance, _hours_in(instance, start, stop)))
    return list(reports.values())


# Nova's os-migrations filters: column lookups (``host`` is either end of the move).
MIGRATION_FILTERS = {"status": "status", "instance_uuid": "instance_id", "source_compute": "source_compute",
                     "migration_type": "migration_type"}


def migration_list(*, user: User, filters: dict[str, str]) -> QuerySet[Migration]:
    """Cloud admins: the moves of servers (here, resizes), newest first, as Nova's os-migrations."""
    if not is_cloud_admin(user=user):
        raise PermissionDenied("Policy doesn't allow os_compute_api:os-migrations:index to be performed.")
    migrations = Migration.objects.all()
    for name, column in MIGRATION_FILTERS.items():
        if value := filters.get(name):
            if column == "instance_id" and _uuid_or_none(value) is None:
                return migrations.none()
            migrations = migrations.filter(**{column: value})
    if host := filters.get("host"):
        migrations = migrations.filter(Q(source_compute=host) | Q(dest_compute=host))
    return migrations

