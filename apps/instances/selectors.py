from dataclasses import dataclass

from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from agents.names import TASK_CONSOLE_LOG
from agents.specs import InstanceRef
from apps.hosts.models import Host
from apps.instances.models import Flavor, Instance
from apps.instances.states import vm_states_for_status
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


def flavor_list(*, user: User) -> QuerySet[Flavor]:
    flavors = Flavor.objects.filter(disabled=False)
    return flavors if is_cloud_admin(user=user) else flavors.filter(is_public=True)


def flavor_get(*, user: User, name_or_id: str) -> Flavor:
    flavor = flavor_list(user=user).filter(Q(pk=name_or_id) | Q(name=name_or_id)).first()
    if flavor is None:
        raise NotFound(f"Flavor {name_or_id} could not be found.")
    return flavor


def instance_list(*, user: User, project: Project, status: str | None = None, name: str | None = None,
                  all_projects: bool = False) -> QuerySet[Instance]:
    """The project's instances that are not deleted; every project's for an admin who asks."""
    instances = Instance.objects.filter(deleted_at__isnull=True)
    if not (all_projects and is_cloud_admin(user=user)):
        instances = instances.filter(project=project)
    if status:
        instances = instances.filter(vm_state__in=vm_states_for_status(status))
    if name:
        instances = instances.filter(name__regex=name)
    return instances.select_related("flavor", "image", "host", "user", "project")


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
