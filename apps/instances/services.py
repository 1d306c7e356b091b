import logging
import math

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.names import CALLBACK_DESTROY_DONE, CALLBACK_SPAWN_DONE, TASK_DESTROY, TASK_SPAWN
from agents.specs import DiskSpec, DomainSpec, InstanceRef
from apps.hosts.models import HostState
from apps.images.models import Image, ImageStatus
from apps.images.selectors import image_ref
from apps.instances import scheduler
from apps.instances.models import Flavor, Instance, InstanceAction, InstanceFault
from apps.instances.states import DELETE_ALLOWED, PowerState, TaskState, VmState
from apps.tenants.models import Project, User
from apps.tenants.services import quota_release, quota_reserve
from cloudmgr.exceptions import NotFound, ValidationError
from cloudmgr.rpc import agent_cast

logger = logging.getLogger(__name__)

GIB = 1024**3


def _quota_deltas(instance: Instance) -> dict[str, int]:
    return {"instances": 1, "cores": instance.vcpus, "ram": instance.memory_mib}


def _action_start(*, instance: Instance, action: str, user: User | None, request_id: str) -> InstanceAction:
    return InstanceAction.objects.create(instance=instance, action=action, user=user, request_id=request_id)


def _action_finish(*, instance: Instance, action: str, result: str, message: str = "") -> None:
    InstanceAction.objects.filter(instance=instance, action=action, finished_at__isnull=True).update(
        finished_at=timezone.now(), result=result, message=message
    )


def _fault(*, instance: Instance, message: str, code: int = 500) -> None:
    InstanceFault.objects.create(instance=instance, code=code, message=message)


def _root_gb(*, flavor: Flavor, image: Image) -> int:
    image_gb = math.ceil((image.virtual_size or image.size or 0) / GIB)
    if flavor.disk == 0:
        return max(image_gb, image.min_disk, 1)
    if image_gb > flavor.disk or image.min_disk > flavor.disk:
        raise ValidationError(f"Flavor {flavor.name}'s disk ({flavor.disk} GB) is too small for image {image.name}.")
    return flavor.disk


def _domain_spec(instance: Instance) -> DomainSpec:
    return DomainSpec(
        instance_id=str(instance.id),
        display_name=instance.name,
        vcpus=instance.vcpus,
        memory_mib=instance.memory_mib,
        virt_type=instance.host.virt_type,
        disks=[DiskSpec(name="root", size_gb=instance.root_gb, image=image_ref(image=instance.image))],
    )


def instance_create(
    *, user: User, project: Project, name: str, flavor: Flavor, image: Image, request_id: str = ""
) -> Instance:
    """Record a new instance, claim quota and a host, and (on commit) ask that host to spawn it.

    Like Nova, the API accepts the request even when no host has room: the instance then goes to
    ERROR with the fault "No valid host was found." and keeps its quota until deleted.
    """
    name = name.strip()
    if not name or len(name) > 255:
        raise ValidationError("An instance needs a name of 1 to 255 characters.")
    if flavor.disabled:
        raise ValidationError(f"Flavor {flavor.name} is disabled.")
    if image.status != ImageStatus.ACTIVE:
        raise ValidationError(f"Image {image.id} is not active (it is {image.status}).")
    if image.min_ram > flavor.ram:
        raise ValidationError(f"Flavor {flavor.name}'s memory is too small for image {image.name}.")
    root_gb = _root_gb(flavor=flavor, image=image)

    with transaction.atomic():
        instance = Instance(
            project=project,
            user=user,
            name=name,
            flavor=flavor,
            image=image,
            vcpus=flavor.vcpus,
            memory_mib=flavor.ram,
            root_gb=root_gb,
            vm_state=VmState.BUILDING,
            task_state=TaskState.SCHEDULING,
        )
        quota_reserve(project=project, deltas=_quota_deltas(instance))
        instance.save()
        _action_start(instance=instance, action="create", user=user, request_id=request_id)
        host = scheduler.claim(instance)
        if host is None:
            instance.vm_state, instance.task_state = VmState.ERROR, None
            instance.save(update_fields=["vm_state", "task_state", "updated_at"])
            _fault(instance=instance, code=500, message="No valid host was found. There are not enough hosts available.")
            _action_finish(instance=instance, action="create", result="Error", message="No valid host was found.")
            return instance
        instance.task_state = TaskState.SPAWNING
        instance.save(update_fields=["task_state", "updated_at"])
        payload = _domain_spec(instance).to_dict()
        transaction.on_commit(
            lambda: agent_cast(queue=host.queue, task=TASK_SPAWN, payload=payload, callback=CALLBACK_SPAWN_DONE)
        )
    logger.info("instance %s (%s) scheduled to %s", instance.id, instance.name, host.hostname)
    return instance


def instance_spawn_done(*, result: dict) -> None:
    """Apply an agent's spawn result, only if the instance still waits for it."""
    instance = Instance.objects.select_related("host", "project").filter(pk=result["instance_id"]).first()
    if instance is None:
        return
    spawning = Instance.objects.filter(pk=instance.pk, vm_state=VmState.BUILDING, task_state=TaskState.SPAWNING)
    with transaction.atomic():
        if result["ok"]:
            applied = spawning.update(
                vm_state=VmState.ACTIVE,
                task_state=None,
                power_state=result.get("power_state", PowerState.RUNNING),
                launched_at=timezone.now(),
                updated_at=timezone.now(),
            )
            if applied:
                _action_finish(instance=instance, action="create", result="Success")
        else:
            applied = spawning.update(vm_state=VmState.ERROR, task_state=None, updated_at=timezone.now())
            if applied:
                _fault(instance=instance, message=result.get("error") or "The host failed to start the instance.")
                _action_finish(instance=instance, action="create", result="Error", message=result.get("error") or "")
    if not applied:
        instance.refresh_from_db()
        if instance.task_state == TaskState.DELETING or instance.deleted_at:
            # Deleted while the host was spawning: the destroy may have run first, so send it
            # again (destroy is idempotent) to leave no domain behind.
            _destroy_on_host(instance)


def _destroy_on_host(instance: Instance) -> None:
    payload = InstanceRef(instance_id=str(instance.id)).to_dict()
    queue = instance.host.queue
    transaction.on_commit(
        lambda: agent_cast(queue=queue, task=TASK_DESTROY, payload=payload, callback=CALLBACK_DESTROY_DONE)
    )


def _mark_deleted(instance: Instance) -> bool:
    """Finish a delete once: the record is deleted and its quota freed. False if already done."""
    with transaction.atomic():
        now = timezone.now()
        done = Instance.objects.filter(pk=instance.pk, deleted_at__isnull=True).update(
            vm_state=VmState.DELETED,
            task_state=None,
            power_state=PowerState.NOSTATE,
            deleted_at=now,
            terminated_at=now,
            updated_at=now,
        )
        if done:
            quota_release(project=instance.project, deltas=_quota_deltas(instance))
            _action_finish(instance=instance, action="delete", result="Success")
    return bool(done)


def instance_delete(*, instance: Instance, user: User | None, request_id: str = "") -> None:
    """Delete from any state. The host destroys the domain and its disk; then the record is
    marked deleted and the quota freed. An instance never placed, or on a host that is down,
    is deleted at once (the destroy still goes to the host's queue for when it returns)."""
    if instance.vm_state not in DELETE_ALLOWED or instance.deleted_at:
        raise NotFound(f"Instance {instance.id} could not be found.")
    with transaction.atomic():
        started = (
            Instance.objects.filter(pk=instance.pk, deleted_at__isnull=True)
            .filter(Q(task_state__isnull=True) | ~Q(task_state=TaskState.DELETING))
            .update(task_state=TaskState.DELETING, updated_at=timezone.now())
        )
        if not started:
            return  # a delete is already in progress
        instance.task_state = TaskState.DELETING
        _action_start(instance=instance, action="delete", user=user, request_id=request_id)
        if instance.host is not None:
            _destroy_on_host(instance)
        if instance.host is None or instance.host.state == HostState.DOWN:
            _mark_deleted(instance)


def instance_destroy_done(*, result: dict) -> None:
    instance = Instance.objects.select_related("project").filter(pk=result["instance_id"]).first()
    if instance is None:
        return
    if result["ok"]:
        _mark_deleted(instance)
        return
    message = f"Failed to delete: {result.get('error')}"
    with transaction.atomic():
        reverted = Instance.objects.filter(pk=instance.pk, task_state=TaskState.DELETING).update(
            vm_state=VmState.ERROR, task_state=None, updated_at=timezone.now()
        )
        if reverted:
            _fault(instance=instance, message=message)
            _action_finish(instance=instance, action="delete", result="Error", message=message)


def flavor_ensure(*, flavor_id: str, name: str, vcpus: int, ram: int, disk: int) -> Flavor:
    """Create the flavor if no flavor has this id (bootstrap)."""
    flavor, _ = Flavor.objects.get_or_create(pk=flavor_id, defaults={"name": name, "vcpus": vcpus, "ram": ram, "disk": disk})
    return flavor
