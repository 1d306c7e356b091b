from dataclasses import dataclass

from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from agents.names import TASK_CONSOLE_LOG
from agents.specs import InstanceRef
from apps.hosts.models import Host
from apps.instances.models import Flavor, Instance, Keypair, ServerGroup
from apps.instances.states import vm_states_for_status
from apps.networks.selectors import server_ids_by_address
from apps.tenants.models import Project, User
from apps.tenants.selectors import is_cloud_admin
from cloudmgr.exceptions import NotFound, ServiceUnavailable
from cloudmgr.models import filter_pk
from cloudmgr.rpc import agent_call


@dataclass(frozen=True)
class HostUsage:
    vcpus: int = 0
    memory_mib: int = 0
    disk_gb: int = 0


_USAGE = {
    "vcpus": Coalesce(Sum("vcpus"), 0),
    "memory_mib": Coalesce(Sum("memory_mib"), 0),
    "disk_gb": Coalesce(Sum("root_gb"), 0),
}


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


def instance_list(*, user: User, project: Project, status: str | None = None, name: str | None = None,
                  all_projects: bool = False, changes_since=None, project_id: str | None = None,
                  reservation_id: str | None = None, ip: str | None = None, ip6: str | None = None
                  ) -> QuerySet[Instance]:
    """The project's instances that are not deleted (with ``changes_since``, also those deleted
    since then, as Nova); every project's (or ``project_id``'s) for an admin who asks.
    ``ip``/``ip6`` are regexes on the instances' fixed IPv4/IPv6 addresses."""
    instances = Instance.objects.all()
    if changes_since is not None:
        instances = instances.filter(updated_at__gte=changes_since)
    else:
        instances = instances.filter(deleted_at__isnull=True)
    if all_projects and is_cloud_admin(user=user):
        if project_id:
            instances = instances.filter(project_id=_uuid_or_none(project_id))
    else:
        instances = instances.filter(project=project)
    if status:
        instances = instances.filter(vm_state__in=vm_states_for_status(status))
    if name:
        instances = instances.filter(name__regex=name)
    if reservation_id:
        instances = instances.filter(reservation_id=reservation_id)
    if ip is not None or ip6 is not None:
        instances = instances.filter(pk__in=server_ids_by_address(ip=ip, ip6=ip6))
    return instances.select_related("flavor", "image", "host", "user", "project")


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


def instance_get(*, user: User, project: Project, instance_id: str) -> Instance:
    instance = filter_pk(instance_list(user=user, project=project, all_projects=True), instance_id).first()
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
    ("lock", "Lock", ""),
    ("unlock", "Unlock", ""),
]


def instance_allowed_actions(*, instance: Instance) -> list[tuple[str, str, str]]:
    """The portal actions the instance's state allows now (the services still decide)."""
    from apps.instances.states import TRANSITIONS

    if instance.task_state is not None or instance.deleted_at:
        return []
    allowed = []
    for key, label, confirm in PORTAL_ACTIONS:
        if key == "lock" and instance.locked or key == "unlock" and not instance.locked:
            continue
        if instance.vm_state in TRANSITIONS[key].allowed:
            allowed.append((key, label, confirm.format(name=instance.name)))
    return allowed
