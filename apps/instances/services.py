import base64
import binascii
import hashlib
import json
import logging
import math
import re
import secrets
import string
import unicodedata
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.config import EPHEMERAL_DISK, ROOT_DISK, SWAP_DISK
from agents.names import (
    CALLBACK_DESTROY_DONE,
    CALLBACK_OPERATION_DONE,
    CALLBACK_SPAWN_DONE,
    TASK_DESTROY,
    TASK_SET_PASSWORD,
    TASK_SPAWN,
    TASK_SYNC_INTERFACES,
    operation_task,
)
from agents.specs import DiskSpec, DomainSpec, InstanceRef, OperationSpec, PasswordSpec
from agents.storage.qemu_img import FORMATS as BOOTABLE_DISK_FORMATS
from apps.hosts.models import Host, HostState
from apps.images.models import Image, ImageStatus
from apps.images.selectors import VOLUME_MAPPING, image_maps_volumes, image_ref
from apps.instances import scheduler
from apps.instances.models import (
    Flavor,
    Instance,
    InstanceAction,
    InstanceActionEvent,
    InstanceFault,
    InstanceTag,
    Keypair,
    Migration,
    MigrationStatus,
    ServerGroup,
)
from apps.instances.selectors import instance_guest_agent, instance_image_properties
from apps.instances.states import (
    DELETE_ALLOWED,
    TRANSITIONS,
    PowerState,
    TaskState,
    Transition,
    VmState,
    vm_state_for_power,
)
from apps.networks.dataplane import batched_sync
from apps.networks.metadata import config_drive_for
from apps.networks.selectors import server_nics
from apps.networks.services import (
    server_fixed_ip_add,
    server_fixed_ip_remove,
    server_interface_attach,
    server_interface_detach,
    server_ports_bind,
    server_ports_create,
    server_ports_release,
    server_ports_unbind,
    server_security_group_add,
    server_security_group_remove,
)
from apps.tenants.models import Project, User
from apps.tenants.selectors import is_cloud_admin
from apps.tenants.services import quota_release, quota_reserve
from apps.volumes.selectors import server_boot_volume, server_has_volumes, server_volume_disks
from apps.volumes.services import (
    PENDING,
    server_block_devices_create,
    server_volumes_connect,
    server_volumes_disconnect,
    server_volumes_release,
)
from cloudmgr.exceptions import (
    ApplicationError,
    Conflict,
    InvalidState,
    NotFound,
    NoValidHost,
    PermissionDenied,
    QuotaExceeded,
    ServiceUnavailable,
    ValidationError,
)
from cloudmgr.models import INT_MAX
from cloudmgr.rpc import agent_call, agent_cast

logger = logging.getLogger(__name__)

GIB = 1024**3
UNSET = object()  # a field left as it is (None means clear it)


def _quota_deltas(instance: Instance) -> dict[str, int]:
    return {"instances": 1, "cores": instance.vcpus, "ram": instance.memory_mib}


def _action_start(*, instance: Instance, action: str, user: User | None, request_id: str) -> InstanceAction:
    return InstanceAction.objects.create(instance=instance, action=action, user=user,
                                         request_id=request_id or f"req-{uuid.uuid4()}")


def _action_finish(*, instance: Instance, action: str, result: str, message: str = "") -> None:
    now = timezone.now()
    actions = InstanceAction.objects.filter(instance=instance, action=action, finished_at__isnull=True)
    InstanceActionEvent.objects.filter(action__in=actions, finished_at__isnull=True).update(
        finished_at=now, result=result, details=message
    )
    actions.update(finished_at=now, result=result, message=message)


def _event_start(*, action: InstanceAction, event: str, host: Host | None) -> None:
    InstanceActionEvent.objects.create(
        action=action, event=event, host=host.hostname if host else "", started_at=timezone.now()
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


# What an instance holds of its flavor (a resize keeps the old amounts in old_<field> until confirmed or reverted).
_FLAVOR_RESOURCES = ("vcpus", "memory_mib", "root_gb", "ephemeral_gb", "swap_mb")


def _flavor_resources(instance: Instance) -> dict[str, int]:
    return {field: getattr(instance, field) for field in _FLAVOR_RESOURCES}


def _flavor_disks(*, ephemeral_gb: int, swap_mb: int) -> list[DiskSpec]:
    """The flavor's local disks after the root disk: ephemeral, then swap (Nova's vdb and vdc)."""
    disks = []
    if ephemeral_gb:
        disks.append(DiskSpec(name=EPHEMERAL_DISK, size_gb=ephemeral_gb, fs="ext4"))
    if swap_mb:
        disks.append(DiskSpec(name=SWAP_DISK, size_gb=0, size_mib=swap_mb, fs="swap"))
    return disks


def _domain_spec(instance: Instance, *, old_flavor: bool = False, image: Image | None = None) -> DomainSpec:
    """The instance's domain; its root disk from ``image`` if given (an unshelve's), else its image.
    With ``old_flavor``, the resources it had before its resize (a revert's)."""
    image = image or instance.image
    image = image_ref(image=image) if image is not None else None
    prefix = "old_" if old_flavor else ""
    vcpus, memory_mib, root_gb, ephemeral_gb, swap_mb = (getattr(instance, prefix + field)
                                                          for field in _FLAVOR_RESOURCES)
    # Volumes are disks too: the boot volume is the root disk of a server booted from a volume.
    boot_volume, volumes = server_volume_disks(instance=instance)
    return DomainSpec(
        instance_id=str(instance.id),
        display_name=instance.name,
        vcpus=vcpus,
        memory_mib=memory_mib,
        virt_type=instance.host.virt_type,
        disks=[boot_volume or DiskSpec(name=ROOT_DISK, size_gb=root_gb, image=image),
               *_flavor_disks(ephemeral_gb=ephemeral_gb, swap_mb=swap_mb), *volumes],
        nics=server_nics(device_id=str(instance.id)),
        config_drive=config_drive_for(instance=instance),
        guest_agent=instance_guest_agent(instance=instance),
    )


def _check_bootable(image: Image) -> None:
    """Compute hosts boot qcow2 and raw disks only; other formats are refused here with a clear
    400 rather than failing on the host (CLOUDMGR_IMAGE_CONVERT_TO converts them on import)."""
    if image.status != ImageStatus.ACTIVE:
        raise ValidationError(f"Image {image.id} is not active (it is {image.status}).")
    if image.disk_format not in BOOTABLE_DISK_FORMATS:
        raise ValidationError(
            f"Image {image.id} has disk format {image.disk_format}, which compute hosts cannot boot "
            f"(they boot {', '.join(BOOTABLE_DISK_FORMATS)}). Convert it with qemu-img, or set "
            "CLOUDMGR_IMAGE_CONVERT_TO=qcow2 so that imports are converted."
        )


def _reservation_id() -> str:
    return "r-" + "".join(secrets.choice(string.digits + string.ascii_lowercase) for _ in range(8))


def _hostname(name: str, instance_id) -> str:
    """Nova's host name from a server name: RFC 952/1123 characters, lower case, 63 at most."""
    host = name.encode("latin-1", "ignore").decode("latin-1")[:63]
    host = re.sub(r"[^\w.-]+", "", re.sub(r"[ _.]", "-", host)).lower().strip(".-")
    return host or f"Server-{instance_id}"


def instance_create(
    *, user: User, project: Project, name: str, flavor: Flavor, image: Image | None, request_id: str = "",
    key_name: str | None = None, user_data: str = "", metadata: dict | None = None,
    availability_zone: str | None = None, server_group: ServerGroup | None = None,
    reservation_id: str | None = None, launch_index: int = 0, networks=None,
    security_groups: list[str] | None = None, block_devices: list[dict] | None = None, config_drive: bool = False,
    description: str | None = None,
) -> Instance:
    """Record a new instance, claim quota and a host, and (on commit) ask that host to spawn it.

    Like Nova, the API accepts the request even when no host has room: the instance then goes to
    ERROR with the fault "No valid host was found." and keeps its quota until deleted.
    ``block_devices`` (Nova's block_device_mapping_v2, parsed) become volumes attached to it; one
    with boot index 0 is its root disk (no ``image``), and it spawns once they are all made.
    ``config_drive`` asks for a config drive even where the network serves metadata.
    """
    name = _check_name(name)
    description = _check_description(description)
    if flavor.disabled:
        raise ValidationError(f"Flavor {flavor.name} is disabled.")
    if image is not None and image_maps_volumes(image=image):
        # An image of a server booted from a volume: its volumes, made from their snapshots.
        if any(b.get("boot_index") == 0 for b in block_devices or []):
            raise ValidationError(f"Block Device Mapping is Invalid: image {image.id} maps a boot volume "
                                  "already; give no block device with boot_index 0.")
        _check_bootable(image)
        block_devices = [*_image_block_devices(image=image, user=user, project=project), *(block_devices or [])]
    boots_from_volume = any(b.get("boot_index") == 0 for b in block_devices or [])
    if image is None and not boots_from_volume:
        raise ValidationError("Block Device Mapping is Invalid: give an imageRef, or a block device with "
                              "boot_index 0.")
    if boots_from_volume:
        image = None  # its root disk is the boot volume
    else:
        _check_bootable(image)
    if image is not None and image.min_ram > flavor.ram:
        raise ValidationError(f"Flavor {flavor.name}'s memory is too small for image {image.name}.")
    if key_name is not None and not Keypair.objects.filter(user=user, name=key_name).exists():
        raise ValidationError(f"Invalid key_name provided: {key_name}.")
    if user_data and len(user_data) > 65535:
        raise ValidationError("user_data is too long (at most 65535 bytes, base64).")
    metadata = _check_metadata(metadata or {})
    if availability_zone is not None and not Host.objects.filter(availability_zone=availability_zone).exists():
        raise ValidationError(f"The requested availability zone is not available: {availability_zone}")
    if server_group is not None and server_group.project_id != project.pk:
        raise ValidationError("Invalid server group.")
    root_gb = 0 if image is None else _root_gb(flavor=flavor, image=image)  # a boot volume uses no local disk

    # One data plane message per port, network and group for the whole create (ports made, then bound).
    with transaction.atomic(), batched_sync():
        instance = Instance(
            project=project,
            user=user,
            name=name,
            description=description,
            flavor=flavor,
            image=image,
            vcpus=flavor.vcpus,
            memory_mib=flavor.ram,
            root_gb=root_gb,
            ephemeral_gb=flavor.ephemeral,
            swap_mb=flavor.swap,
            vm_state=VmState.BUILDING,
            task_state=TaskState.SCHEDULING,
            key_name=key_name,
            user_data=user_data or "",
            config_drive=bool(config_drive),
            metadata=metadata,
            availability_zone=availability_zone or "nova",
            reservation_id=reservation_id or _reservation_id(),
            launch_index=launch_index,
        )
        instance.hostname = _hostname(name, instance.id)
        quota_reserve(project=project, deltas=_quota_deltas(instance))
        instance.save()
        # Nova's ``networks`` (None, "auto", "none" or [{uuid | port, fixed_ip}]): ports made now,
        # bound to the host once placed.
        server_ports_create(user=user, project=project, device_id=str(instance.id), name=instance.hostname,
                            requested=networks, security_groups=security_groups)
        if server_group is not None:
            _join_server_group(instance, server_group)
        if block_devices:
            server_block_devices_create(instance=instance, user=user, project=project, block_devices=block_devices,
                                        request_id=request_id)
        create_action = _action_start(instance=instance, action="create", user=user, request_id=request_id)
        host = scheduler.claim(instance, server_group)
        if host is None:
            _no_valid_host(instance)
            return instance
        _spawn_on(instance, host, create_action)
    logger.info("instance %s (%s) scheduled to %s", instance.id, instance.name, host.hostname)
    return instance


def _printable(text: str) -> bool:
    """Nova's rule for names and descriptions: no control or format characters, no separators
    but spaces."""
    return all(category[0] not in "CZ" or category == "Zs" for category in map(unicodedata.category, text))


def _check_name(name) -> str:
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > 255 or not _printable(name):
        raise ValidationError("An instance needs a name of 1 to 255 printable characters.")
    return name


def _check_description(description: str | None) -> str | None:
    """Nova's server description: null, or at most 255 printable characters."""
    if description is None:
        return None
    if not isinstance(description, str) or len(description) > 255 or not _printable(description):
        raise ValidationError("Invalid input for field/attribute description: a description is at most 255 "
                              "printable characters, or null.")
    return description


NO_VALID_HOST = "No valid host was found. There are not enough hosts available."


def _no_valid_host(instance: Instance, detail: str = "") -> None:
    Instance.objects.filter(pk=instance.pk).update(vm_state=VmState.ERROR, task_state=None, updated_at=timezone.now())
    instance.vm_state, instance.task_state = VmState.ERROR, None
    _fault(instance=instance, code=500, message=NO_VALID_HOST + detail)
    _action_finish(instance=instance, action="create", result="Error", message="No valid host was found.")


def _spawn_on(instance: Instance, host: Host, action: InstanceAction, *,
              event: str = "compute__do_build_and_run_instance", image: Image | None = None) -> None:
    """Ask the claimed host to spawn the instance (from ``image`` if given, else its own), its
    ports bound there: a create's, a reschedule's or an unshelve's."""
    Instance.objects.filter(pk=instance.pk).update(task_state=TaskState.SPAWNING, updated_at=timezone.now())
    instance.task_state = TaskState.SPAWNING
    _event_start(action=action, event=event, host=host)
    server_ports_bind(device_id=str(instance.id), host=host)
    if server_has_volumes(instance=instance):
        instance_id = instance.pk
        transaction.on_commit(lambda: instance_volumes_spawn(instance_id=instance_id))
        return
    payload = _domain_spec(instance, image=image).to_dict()
    transaction.on_commit(
        lambda: agent_cast(queue=host.queue, task=TASK_SPAWN, payload=payload, callback=CALLBACK_SPAWN_DONE)
    )


def instance_volumes_spawn(*, instance_id) -> None:
    """Spawn a server that has volumes once they are all made and exported to its host (after
    its create commits, and again each time one of its new volumes is made). A volume that could
    not be made fails the build (no other host would do better)."""
    instance = Instance.objects.select_related("host", "project", "image", "shelved_image").filter(
        pk=instance_id, vm_state__in=(VmState.BUILDING, VmState.SHELVED_OFFLOADED),
        task_state=TaskState.SPAWNING).first()
    if instance is None or instance.host is None:
        return
    problem = server_volumes_connect(instance=instance)
    if problem == PENDING:
        return
    if problem:
        instance_spawn_done(result={"instance_id": str(instance.pk), "ok": False, "error": problem,
                                    "reschedule": False})
        return
    # An unshelve's root disk comes from its shelved image (none when it boots from a volume).
    image = instance.shelved_image if instance.vm_state == VmState.SHELVED_OFFLOADED else None
    agent_cast(queue=instance.host.queue, task=TASK_SPAWN, payload=_domain_spec(instance, image=image).to_dict(),
               callback=CALLBACK_SPAWN_DONE)


def instances_create(*, min_count: int = 1, max_count: int = 1, name: str, **kwargs) -> list[Instance]:
    """Nova's multiple create: up to ``max_count`` instances (named ``name-1`` ...), at least
    ``min_count`` or none (quota)."""
    if not 1 <= min_count <= max_count:
        raise ValidationError("min_count must be at least 1 and at most max_count.")
    reservation_id = _reservation_id()
    if max_count == 1:
        return [instance_create(name=name, reservation_id=reservation_id, **kwargs)]
    created: list[Instance] = []
    for i in range(1, max_count + 1):
        try:
            created.append(instance_create(name=f"{name}-{i}", reservation_id=reservation_id, launch_index=i - 1,
                                           **kwargs))
        except QuotaExceeded:
            if len(created) >= min_count:
                break
            for instance in created:
                instance_delete(instance=Instance.objects.select_related("host", "project").get(pk=instance.pk),
                                user=None)
            raise
    return created


def _reschedule(instance: Instance, error: str) -> bool:
    """After a failed spawn: try another host (up to CLOUDMGR_SCHEDULER_MAX_ATTEMPTS hosts in all).
    True if the instance was placed again. Runs in the caller's transaction."""
    action = InstanceAction.objects.filter(instance=instance, action="create", finished_at__isnull=True).first()
    if action is None:
        return False
    tried = set(action.events.filter(event="compute__do_build_and_run_instance").values_list("host", flat=True))
    if len(tried) >= getattr(settings, "CLOUDMGR_SCHEDULER_MAX_ATTEMPTS", 3):
        return False
    moved = Instance.objects.filter(pk=instance.pk, vm_state=VmState.BUILDING, task_state=TaskState.SPAWNING).update(
        task_state=TaskState.SCHEDULING, host=None, updated_at=timezone.now())
    if not moved:
        return False
    InstanceActionEvent.objects.filter(action=action, finished_at__isnull=True).update(
        finished_at=timezone.now(), result="Error", details=error)
    instance.host = None
    group = instance.server_groups.first()
    exclude = Host.objects.filter(hostname__in=tried).values_list("pk", flat=True)
    host = scheduler.claim(instance, group, exclude=list(exclude))
    if host is None:
        _no_valid_host(instance, f" Last error: {error}")
        return True
    logger.info("instance %s: spawn failed (%s); retrying on %s", instance.id, error, host.hostname)
    _spawn_on(instance, host, action)
    return True


def instance_spawn_done(*, result: dict) -> None:
    """Apply an agent's spawn result, only if the instance still waits for it."""
    instance = Instance.objects.select_related("host", "project").filter(pk=result["instance_id"]).first()
    if instance is None:
        return
    if instance.vm_state == VmState.SHELVED_OFFLOADED:
        _unshelve_done(instance, result)
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
        elif result.get("reschedule", True) and _reschedule(instance, result.get("error") or "spawn failed"):
            return
        else:
            applied = spawning.update(vm_state=VmState.ERROR, task_state=None, updated_at=timezone.now())
            if applied:
                _fault(instance=instance, message=result.get("error") or "The host failed to start the instance.")
                _action_finish(instance=instance, action="create", result="Error", message=result.get("error") or "")
    if not applied:
        _destroy_if_deleted(instance)


def _destroy_if_deleted(instance: Instance) -> None:
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
            server_ports_release(device_id=str(instance.id))
            server_volumes_release(instance=instance)  # kept, or deleted (delete_on_termination)
            # A resize waiting to be confirmed is confirmed by the delete (Nova); one under way ends.
            _migration_to(instance, MigrationStatus.CONFIRMED, current=[MigrationStatus.FINISHED])
            _migration_to(instance, MigrationStatus.ERROR, current=[MigrationStatus.MIGRATING,
                                                                   MigrationStatus.REVERTING])
            _delete_shelved_image(instance)
            # A snapshot or backup it was making is never filled now; one being uploaded stays.
            Image.objects.filter(project_id=instance.project_id, properties__instance_uuid=str(instance.id),
                                 status=ImageStatus.QUEUED).delete()
            _action_finish(instance=instance, action="delete", result="Success")
    return bool(done)


def instance_delete(*, instance: Instance, user: User | None, request_id: str = "") -> None:
    """Delete from any state. The host destroys the domain and its disk; then the record is
    marked deleted and the quota freed. An instance never placed, or on a host that is down,
    is deleted at once (the destroy still goes to the host's queue for when it returns)."""
    if instance.vm_state not in DELETE_ALLOWED or instance.deleted_at:
        raise NotFound(f"Instance {instance.id} could not be found.")
    if user is not None:
        _check_locked(instance=instance, user=user)
    with transaction.atomic():
        started = (
            Instance.objects.filter(pk=instance.pk, deleted_at__isnull=True)
            .filter(Q(task_state__isnull=True) | ~Q(task_state=TaskState.DELETING))
            .update(task_state=TaskState.DELETING, updated_at=timezone.now())
        )
        if not started:
            return  # a delete is already in progress
        instance.task_state = TaskState.DELETING
        delete_action = _action_start(instance=instance, action="delete", user=user, request_id=request_id)
        _event_start(action=delete_action, event="compute_terminate_instance", host=instance.host)
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


# --- lifecycle actions ------------------------------------------------------------------------


def _check_locked(*, instance: Instance, user: User) -> None:
    if instance.locked and not is_cloud_admin(user=user):
        raise InvalidState(f"Instance {instance.id} is locked.")


def _refuse(instance: Instance, transition: Transition) -> InvalidState:
    if instance.task_state:
        return InvalidState(
            f"Cannot '{transition.action}' instance {instance.id} while it is in task_state {instance.task_state}."
        )
    return InvalidState(
        f"Cannot '{transition.action}' instance {instance.id} while it is in vm_state {instance.vm_state}."
    )


def _begin(*, instance: Instance, transition: Transition, user: User | None, request_id: str,
           **updates) -> InstanceAction:
    """Check the allow-list and move to the transition's task state by compare-and-swap; record
    the action. Must run in the caller's transaction. InvalidState (409) if not allowed."""
    if instance.deleted_at or instance.vm_state == VmState.DELETED:
        raise NotFound(f"Instance {instance.id} could not be found.")
    if user is not None:
        _check_locked(instance=instance, user=user)
    if instance.vm_state not in transition.allowed or instance.task_state is not None:
        raise _refuse(instance, transition)
    if transition.operation and (instance.host is None or instance.host.state != HostState.UP):
        host = instance.host.hostname if instance.host else "no host"
        raise InvalidState(f"Cannot '{transition.action}' instance {instance.id}: its host ({host}) is not up.")
    now = timezone.now()
    moved = Instance.objects.filter(
        pk=instance.pk, vm_state=instance.vm_state, task_state__isnull=True, deleted_at__isnull=True
    ).update(task_state=transition.task_state, updated_at=now, **updates)
    if not moved:
        instance.refresh_from_db()
        raise _refuse(instance, transition)
    instance.task_state = transition.task_state
    for field, value in updates.items():
        setattr(instance, field, value)
    action = _action_start(instance=instance, action=transition.action, user=user, request_id=request_id)
    if transition.operation:
        _event_start(action=action, event=transition.event_name, host=instance.host)
    return action


def _send(instance: Instance, spec: OperationSpec) -> None:
    queue, payload, task = instance.host.queue, spec.to_dict(), operation_task(spec.operation)
    transaction.on_commit(lambda: agent_cast(queue=queue, task=task, payload=payload, callback=CALLBACK_OPERATION_DONE))


def _shutdown_timeout() -> int:
    return int(getattr(settings, "CLOUDMGR_SHUTDOWN_TIMEOUT", 60))


def _simple_action(key: str, *, instance: Instance, user: User | None, request_id: str = "", hard: bool = False) -> Instance:
    transition = TRANSITIONS[key]
    with transaction.atomic():
        _begin(instance=instance, transition=transition, user=user, request_id=request_id)
        _send(instance, OperationSpec(instance_id=str(instance.id), operation=transition.operation, hard=hard,
                                      timeout=_shutdown_timeout()))
    return instance


def instance_start(*, instance: Instance, user: User | None, request_id: str = "") -> Instance:
    return _simple_action("start", instance=instance, user=user, request_id=request_id)


def instance_stop(*, instance: Instance, user: User | None, request_id: str = "") -> Instance:
    return _simple_action("stop", instance=instance, user=user, request_id=request_id)


def instance_reboot(*, instance: Instance, user: User | None, hard: bool = False, request_id: str = "") -> Instance:
    """SOFT: ACPI shutdown (destroyed after CLOUDMGR_SHUTDOWN_TIMEOUT) then start; HARD: reset."""
    return _simple_action("reboot_hard" if hard else "reboot", instance=instance, user=user,
                          request_id=request_id, hard=hard)


def instance_pause(*, instance: Instance, user: User | None, request_id: str = "") -> Instance:
    return _simple_action("pause", instance=instance, user=user, request_id=request_id)


def instance_unpause(*, instance: Instance, user: User | None, request_id: str = "") -> Instance:
    return _simple_action("unpause", instance=instance, user=user, request_id=request_id)


def instance_suspend(*, instance: Instance, user: User | None, request_id: str = "") -> Instance:
    return _simple_action("suspend", instance=instance, user=user, request_id=request_id)


def instance_resume(*, instance: Instance, user: User | None, request_id: str = "") -> Instance:
    return _simple_action("resume", instance=instance, user=user, request_id=request_id)


def instance_trigger_crash_dump(*, instance: Instance, user: User | None, request_id: str = "") -> Instance:
    """Nova's trigger_crash_dump (2.17): an NMI to the guest. What follows is the guest's choice
    (a kdump, a panic, or a kernel message), so no state changes; the action records the result."""
    return _simple_action("trigger_crash_dump", instance=instance, user=user, request_id=request_id)


def instance_restore(*, instance: Instance, user: User | None, request_id: str = "") -> None:
    """Nova's restore brings back a soft-deleted server. Deletes are never deferred here (Nova's
    reclaim_instance_interval 0), so no server is soft deleted: 409, as Nova answers for one that
    is not."""
    if instance.deleted_at or instance.vm_state == VmState.DELETED:
        raise NotFound(f"Instance {instance.id} could not be found.")
    raise InvalidState(f"Cannot 'restore' instance {instance.id} while it is in vm_state {instance.vm_state}.")


def instance_change_password(*, instance: Instance, user: User | None, password, request_id: str = "") -> None:
    """Nova's changePassword: the guest agent sets the password of the image's ``os_admin_user``
    (default root; Administrator for ``os_type`` windows) while the caller waits. It needs a
    running guest whose image has ``hw_qemu_guest_agent=yes`` (409 otherwise, as Nova). A failure
    is a 409 with the guest's reason, a fault and the action's error. The password is neither
    stored nor logged."""
    if not isinstance(password, str):
        raise ValidationError("Invalid input for field/attribute adminPass: it must be a string.")
    if "\n" in password or "\r" in password:
        raise ValidationError("Invalid input for field/attribute adminPass: it must be one line.")
    transition = TRANSITIONS["changePassword"]
    if instance.vm_state not in transition.allowed or instance.task_state is not None:
        raise _refuse(instance, transition)
    if not instance_guest_agent(instance=instance):
        raise InvalidState("QEMU guest agent is not enabled (the image's hw_qemu_guest_agent is not yes).")
    if instance.power_state != PowerState.RUNNING:
        raise InvalidState(f"Failed to set admin password on {instance.id} because instance is not running.")
    properties = instance_image_properties(instance=instance)
    windows = str(properties.get("os_type", "")).lower() == "windows"
    admin_user = properties.get("os_admin_user") or ("Administrator" if windows else "root")
    with transaction.atomic():
        _begin(instance=instance, transition=transition, user=user, request_id=request_id)
    spec = PasswordSpec(instance_id=str(instance.id), user=str(admin_user), password=password)
    error = "the message to the host was not sent"
    try:
        answer = agent_call(queue=instance.host.queue, task=TASK_SET_PASSWORD, payload=spec.to_dict())
        error = None if answer.get("ok") else answer.get("error") or "the host failed"
    except ServiceUnavailable as exc:
        error = exc.message
    finally:  # whatever happened, the task state does not stay
        with transaction.atomic():
            done = Instance.objects.filter(pk=instance.pk, task_state=TaskState.UPDATING_PASSWORD).update(
                task_state=None, updated_at=timezone.now())
            if done and error is None:
                _action_finish(instance=instance, action=transition.action, result="Success")
            elif done:
                _fault(instance=instance, message=f"Failed to set admin password: {error}")
                _action_finish(instance=instance, action=transition.action, result="Error", message=error)
        instance.task_state = None
    if error is not None:
        raise InvalidState(f"Failed to set admin password on {instance.id} because error setting admin password: "
                           f"{error}")


def instance_lock(*, instance: Instance, user: User, request_id: str = "") -> Instance:
    """Lock: only admins may act on the instance until it is unlocked. Locking twice is fine."""
    if instance.deleted_at:
        raise NotFound(f"Instance {instance.id} could not be found.")
    owner = "admin" if is_cloud_admin(user=user) and instance.user_id != user.pk else "owner"
    with transaction.atomic():
        Instance.objects.filter(pk=instance.pk).update(locked=True, locked_by=owner, updated_at=timezone.now())
        _action_start(instance=instance, action="lock", user=user, request_id=request_id)
        _action_finish(instance=instance, action="lock", result="Success")
    instance.locked, instance.locked_by = True, owner
    return instance


# The states an admin may reset an instance to (Nova's os-resetState).
RESET_STATES = (VmState.ACTIVE, VmState.ERROR)


def instance_reset_state(*, instance: Instance, user: User, state: str, request_id: str = "") -> Instance:
    """Nova's os-resetState, for admins: an instance stuck in a task (or in ERROR after a failure
    that was mended by hand) gets ``state`` as its vm_state and no task, whatever it was doing; the
    power state stays what the host reports. Recorded as the ``resetState`` action."""
    if not is_cloud_admin(user=user):
        raise PermissionDenied("Policy doesn't allow os_compute_api:os-admin-actions:reset_state to be performed.")
    if state not in RESET_STATES:
        raise ValidationError(f"Invalid input for field/attribute state. Value: {state}. "
                              f"It must be one of {', '.join(RESET_STATES)}.")
    if instance.deleted_at:
        raise NotFound(f"Instance {instance.id} could not be found.")
    with transaction.atomic():
        _action_start(instance=instance, action="resetState", user=user, request_id=request_id)
        Instance.objects.filter(pk=instance.pk).update(vm_state=state, task_state=None, updated_at=timezone.now())
        _action_finish(instance=instance, action="resetState", result="Success")
    logger.info("instance %s reset to %s (was %s, task %s)", instance.id, state, instance.vm_state, instance.task_state)
    instance.vm_state, instance.task_state = state, None
    return instance


def instance_unlock(*, instance: Instance, user: User, request_id: str = "") -> Instance:
    if instance.deleted_at:
        raise NotFound(f"Instance {instance.id} could not be found.")
    if instance.locked_by == "admin" and not is_cloud_admin(user=user):
        raise PermissionDenied(f"Instance {instance.id} was locked by an administrator.")
    with transaction.atomic():
        Instance.objects.filter(pk=instance.pk).update(locked=False, locked_by="", updated_at=timezone.now())
        _action_start(instance=instance, action="unlock", user=user, request_id=request_id)
        _action_finish(instance=instance, action="unlock", result="Success")
    instance.locked, instance.locked_by = False, ""
    return instance


def _resize_deltas(old: dict, new: dict) -> dict[str, int]:
    return {"cores": new["vcpus"] - old["vcpus"], "ram": new["memory_mib"] - old["memory_mib"]}


def _positive(deltas: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in deltas.items() if v > 0}


def _migration_to(instance: Instance, status: str, *, current: list[str]) -> None:
    """The server's resize (its os-migrations record) moves on from one of ``current``."""
    Migration.objects.filter(instance=instance, status__in=current).update(status=status,
                                                                           updated_at=timezone.now())


def instance_resize(*, instance: Instance, flavor: Flavor, user: User | None, request_id: str = "") -> Instance:
    """Resize in place on the instance's host: claim the difference (quota and host room), stop
    the guest, redefine its domain with the new flavor, grow the root disk and start it again (if
    it was running). The instance then waits in VERIFY_RESIZE for confirmResize/revertResize. A
    server booted from a volume has no local root disk: the flavor's disk is not used (Nova)."""
    if flavor.pk == instance.flavor_id:
        raise ValidationError("When resizing, instances must change flavor!")
    if flavor.disabled:
        raise ValidationError(f"Flavor {flavor.name} is disabled.")
    if server_boot_volume(instance=instance) is not None:
        new_root = 0
    else:
        new_root = max(flavor.disk, instance.root_gb) if flavor.disk == 0 else flavor.disk
        if new_root < instance.root_gb:
            raise ValidationError("Resize to a flavor with a smaller disk is not allowed.")
    if flavor.ephemeral < instance.ephemeral_gb:  # Nova: its filesystem cannot shrink with it
        raise ValidationError("Resize to a flavor with a smaller ephemeral disk is not allowed.")
    old = _flavor_resources(instance)
    new = {"vcpus": flavor.vcpus, "memory_mib": flavor.ram, "root_gb": new_root, "ephemeral_gb": flavor.ephemeral,
           "swap_mb": flavor.swap}
    was_running = instance.vm_state == VmState.ACTIVE
    with transaction.atomic():
        transition = TRANSITIONS["resize"]
        if user is not None:
            _check_locked(instance=instance, user=user)
        if instance.vm_state not in transition.allowed or instance.task_state is not None:
            raise _refuse(instance, transition)
        quota_reserve(project=instance.project, deltas=_positive(_resize_deltas(old, new)))
        if instance.host is not None and not scheduler.fits_growth(instance, new):
            raise NoValidHost(f"No valid host was found: host {instance.host.hostname} has no room for "
                              f"flavor {flavor.name}.")
        hostname = instance.host.hostname if instance.host is not None else ""
        Migration.objects.create(instance=instance, source_compute=hostname, dest_compute=hostname,
                                 old_flavor_ref=instance.flavor_id, new_flavor_ref=flavor.pk)
        _begin(instance=instance, transition=transition, user=user, request_id=request_id,
               old_flavor_id=instance.flavor_id, flavor_id=flavor.pk, **{f"old_{k}": v for k, v in old.items()}, **new)
        instance.flavor = flavor
        _send(instance, OperationSpec(instance_id=str(instance.id), operation="resize", timeout=_shutdown_timeout(),
                                      start=was_running, domain=_domain_spec(instance)))
    return instance


def _drop_old_flavor(instance: Instance, *, revert: bool, **updates) -> int:
    """Finish a resize's bookkeeping (by CAS on the task state): keep the new flavor (confirm)
    or go back to the old one (revert), and release the quota the other one held."""
    old = {"vcpus": instance.old_vcpus, "memory_mib": instance.old_memory_mib}
    new = {"vcpus": instance.vcpus, "memory_mib": instance.memory_mib}
    fields = dict(old_flavor=None, **{f"old_{field}": None for field in _FLAVOR_RESOURCES}, **updates)
    if revert:
        fields.update(flavor_id=instance.old_flavor_id,
                      **{field: getattr(instance, f"old_{field}") for field in _FLAVOR_RESOURCES})
        release = _positive(_resize_deltas(old, new))
    else:
        release = _positive(_resize_deltas(new, old))
    done = Instance.objects.filter(pk=instance.pk, task_state=instance.task_state).update(
        updated_at=timezone.now(), **fields)
    if done and release:
        quota_release(project=instance.project, deltas=release)
    return done


def instance_resize_confirm(*, instance: Instance, user: User | None, request_id: str = "") -> Instance:
    transition = TRANSITIONS["confirmResize"]
    with transaction.atomic():
        _begin(instance=instance, transition=transition, user=user, request_id=request_id)
        _drop_old_flavor(instance, revert=False, task_state=None,
                         vm_state=vm_state_for_power(instance.power_state))
        _migration_to(instance, MigrationStatus.CONFIRMED, current=[MigrationStatus.FINISHED])
        _action_finish(instance=instance, action=transition.action, result="Success")
    instance.refresh_from_db()
    return instance


def instance_resize_revert(*, instance: Instance, user: User | None, request_id: str = "") -> Instance:
    transition = TRANSITIONS["revertResize"]
    with transaction.atomic():
        _begin(instance=instance, transition=transition, user=user, request_id=request_id)
        _migration_to(instance, MigrationStatus.REVERTING, current=[MigrationStatus.FINISHED])
        spec = _domain_spec(instance, old_flavor=True)
        _send(instance, OperationSpec(instance_id=str(instance.id), operation="resize", timeout=_shutdown_timeout(),
                                      start=instance.power_state == PowerState.RUNNING, domain=spec))
    return instance


def instance_rebuild(*, instance: Instance, image: Image, user: User | None, name: str | None = None,
                     description=UNSET, request_id: str = "") -> Instance:
    """A new root disk from ``image`` (the old one is thrown away) and a fresh boot; a new
    ``name`` and ``description`` (None clears it) if given. A server booted from a volume keeps
    its volume as it is (Nova reimages it only from 2.93): the guest is made afresh, and only
    with the image the volume was made from."""
    boot_volume = server_boot_volume(instance=instance)
    if boot_volume is not None:
        if str(image.pk) != boot_volume.image_metadata.get("image_id"):
            raise ValidationError(f"Image {image.pk} is unacceptable: Unable to rebuild with a different image for "
                                  "a volume-backed server.")
        updates = {}
    else:
        _check_bootable(image)
        if image.min_ram > instance.memory_mib:
            raise ValidationError(f"Flavor {instance.flavor.name}'s memory is too small for image {image.name}.")
        root_gb = _root_gb(flavor=instance.flavor, image=image)
        updates = {"image_id": image.pk, "root_gb": max(root_gb, instance.root_gb)}
    if name is not None:
        updates["name"] = _check_name(name)
    if description is not UNSET:
        updates["description"] = _check_description(description)
    with transaction.atomic():
        new_root = updates.get("root_gb", instance.root_gb)
        if new_root > instance.root_gb and instance.host is not None and not scheduler.fits_growth(
                instance, {**_flavor_resources(instance), "root_gb": new_root}):
            raise NoValidHost(f"No valid host was found: host {instance.host.hostname} has no room for the "
                              f"{new_root} GB root disk of image {image.name}.")
        _begin(instance=instance, transition=TRANSITIONS["rebuild"], user=user, request_id=request_id, **updates)
        if boot_volume is None:
            instance.image = image
        _send(instance, OperationSpec(instance_id=str(instance.id), operation="rebuild", timeout=_shutdown_timeout(),
                                      domain=_domain_spec(instance)))
    return instance


def instance_rescue(*, instance: Instance, user: User | None, image: Image | None = None,
                    request_id: str = "") -> Instance:
    """Boot a rescue system (``image``, default the instance's image) with the instance's root
    disk attached as the second disk, to repair it. Not a server booted from a volume (Nova
    rescues one only from 2.87)."""
    if server_boot_volume(instance=instance) is not None:
        raise ValidationError(f"Instance {instance.id} cannot be rescued: Cannot rescue a volume-backed instance")
    image = image or instance.image
    if image is None:
        raise ValidationError("The instance's image is gone: give a rescue_image_ref.")
    _check_bootable(image)
    with transaction.atomic():
        _begin(instance=instance, transition=TRANSITIONS["rescue"], user=user, request_id=request_id)
        spec = _domain_spec(instance)
        spec.rescue = True
        size_gb = max(1, math.ceil((image.virtual_size or image.size or 0) / GIB))
        spec.disks.insert(0, DiskSpec(name="rescue", size_gb=size_gb, image=image_ref(image=image)))
        _send(instance, OperationSpec(instance_id=str(instance.id), operation="rescue", timeout=_shutdown_timeout(),
                                      domain=spec))
    return instance


def instance_unrescue(*, instance: Instance, user: User | None, request_id: str = "") -> Instance:
    with transaction.atomic():
        _begin(instance=instance, transition=TRANSITIONS["unrescue"], user=user, request_id=request_id)
        _send(instance, OperationSpec(instance_id=str(instance.id), operation="unrescue",
                                      domain=_domain_spec(instance)))
    return instance


def instance_create_image(*, instance: Instance, user: User, name: str, metadata: dict | None = None,
                          request_id: str = ""):
    """Nova's createImage: a new (queued) image in the instance's project; the host copies the
    root disk (flattened qcow2) and uploads it through the image API, which makes it active. Of
    a server booted from a volume: snapshots of its volumes, which the image maps."""
    if server_boot_volume(instance=instance) is not None:
        return _image_of_volumes(instance=instance, user=user, name=name, metadata=metadata, request_id=request_id)
    return _image_of_instance(instance=instance, user=user, name=name, metadata=metadata, request_id=request_id,
                              transition=TRANSITIONS["createImage"], properties={"image_type": "snapshot"})


def _image_request(name, metadata) -> tuple[str, dict[str, str]]:
    """The name and metadata of a new image of an instance (createImage, createBackup, shelve)."""
    name = (name or "").strip()
    if not name or len(name) > 255:
        raise ValidationError("An image needs a name of 1 to 255 characters.")
    return name, _check_metadata(metadata or {})


def _image_of_volumes(*, instance: Instance, user: User, name: str, metadata: dict | None, request_id: str):
    """Nova's createImage of a server booted from a volume: a snapshot of each of its volumes
    (crash-consistent, as Nova's without a guest agent) and an image without data whose
    ``block_device_mapping`` (with ``bdm_v2``) maps them; a server booted from the image boots
    from volumes made from those snapshots. The image stays queued until every snapshot is made
    (``volume_snapshot_settled``): Nova activates it at once, so a boot right after could meet a
    snapshot still being made."""
    from apps.images.services import image_create
    from apps.volumes.selectors import server_attachments
    from apps.volumes.services import snapshot_create

    name, metadata = _image_request(name, metadata)
    with transaction.atomic():
        _begin(instance=instance, transition=TRANSITIONS["createImage"], user=user, request_id=request_id)
        mapping = []
        for attachment in server_attachments(instance=instance):
            snapshot = snapshot_create(volume=attachment.volume, user=user, name=f"snapshot for {name}"[:255],
                                       force=True)
            mapping.append({"source_type": "snapshot", "destination_type": "volume",
                            "snapshot_id": str(snapshot.pk), "volume_size": attachment.volume.size,
                            "boot_index": attachment.boot_index, "device_name": attachment.device,
                            "delete_on_termination": attachment.delete_on_termination})
        attrs = {"name": name, "disk_format": "raw", "container_format": "bare", "visibility": "private",
                 **metadata, "instance_uuid": str(instance.id), "image_type": "snapshot",
                 "root_device_name": "/dev/vda", "bdm_v2": "True", VOLUME_MAPPING: json.dumps(mapping)}
        return image_create(user=user, project=instance.project, attrs=attrs)


def volume_snapshot_settled(*, volume_id) -> None:
    """A snapshot of the volume was made or failed: a createImage of its server that waits for
    its snapshots ends once none is being made. All made: the image is active. One failed (or
    the image was deleted meanwhile): the action fails, and what was made for it goes."""
    from apps.images.services import image_activate_without_data, image_delete
    from apps.volumes.models import Snapshot
    from apps.volumes.services import snapshot_delete
    from apps.volumes.states import SnapshotStatus

    waiting = Instance.objects.select_related("project").filter(
        task_state=TaskState.IMAGE_SNAPSHOT, volume_attachments__volume_id=volume_id).distinct()
    for instance in waiting:
        image = Image.objects.filter(project_id=instance.project_id, properties__instance_uuid=str(instance.id),
                                     properties__has_key=VOLUME_MAPPING).order_by("-created_at").first()
        if image is None:
            continue
        ids = [m.get("snapshot_id") for m in json.loads(image.properties[VOLUME_MAPPING])]
        snapshots = list(Snapshot.objects.filter(pk__in=ids))
        if any(s.status == SnapshotStatus.CREATING for s in snapshots):
            continue
        made = image.status == ImageStatus.QUEUED and len(snapshots) == len(ids) and all(
            s.status == SnapshotStatus.AVAILABLE for s in snapshots)
        with transaction.atomic():
            if not Instance.objects.filter(pk=instance.pk, task_state=TaskState.IMAGE_SNAPSHOT).update(
                    task_state=None, updated_at=timezone.now()):
                continue
            if made:
                image_activate_without_data(image=image)
                _action_finish(instance=instance, action="createImage", result="Success")
                continue
            error = ("The image was deleted before the snapshots of the server's volumes were made."
                     if image.status != ImageStatus.QUEUED else "A snapshot of the server's volumes failed.")
            _fault(instance=instance, message=error)
            _action_finish(instance=instance, action="createImage", result="Error", message=error)
            if image.status == ImageStatus.QUEUED:
                image_delete(user=None, project=image.project, image=image)
            for snapshot in snapshots:
                if snapshot.status == SnapshotStatus.AVAILABLE:
                    snapshot_delete(snapshot=snapshot, user=None)


def _image_block_devices(*, image: Image, user: User, project: Project) -> list[dict]:
    """The volumes of a server booted from an image that createImage made of a server booted
    from a volume (Nova's image ``block_device_mapping``): each one made from its snapshot."""
    from apps.volumes.selectors import snapshot_get

    try:
        mapping = json.loads(image.properties[VOLUME_MAPPING])
    except (TypeError, ValueError):
        mapping = None
    if not isinstance(mapping, list) or not all(isinstance(m, dict) for m in mapping):
        raise ValidationError(f"Image {image.id} has a block_device_mapping that is not a list of mappings.")
    devices = []
    for entry in mapping:
        if (entry.get("source_type"), entry.get("destination_type")) != ("snapshot", "volume"):
            raise ValidationError(f"Block Device Mapping is Invalid: image {image.id} maps a "
                                  f"{entry.get('source_type')} to a {entry.get('destination_type')}; only volume "
                                  "snapshots to volumes are supported.")
        try:
            snapshot = snapshot_get(user=user, project=project, snapshot_id=entry.get("snapshot_id"))
        except NotFound:
            raise ValidationError(f"Block Device Mapping is Invalid: failed to get snapshot "
                                  f"{entry.get('snapshot_id')}.") from None
        size = entry.get("volume_size")
        devices.append({"source": snapshot, "boot_index": entry.get("boot_index"),
                        "volume_size": size if isinstance(size, int) and size > 0 else snapshot.size,
                        "delete_on_termination": bool(entry.get("delete_on_termination")),
                        "device_name": entry.get("device_name"), "volume_type": None})
    return devices


def instance_create_backup(*, instance: Instance, user: User, name: str, backup_type: str, rotation: int,
                           metadata: dict | None = None, request_id: str = ""):
    """Nova's createBackup: an image made as createImage's, with ``image_type`` "backup" and its
    ``backup_type``. Once it is uploaded, the instance's backups of that type beyond the newest
    ``rotation`` are deleted (0 deletes them all, this one too, as Nova); a failed backup deletes
    none."""
    if not isinstance(backup_type, str):
        raise ValidationError("Invalid input for field/attribute backup_type: it must be a string.")
    if isinstance(rotation, bool) or not isinstance(rotation, int) or not 0 <= rotation <= INT_MAX:
        raise ValidationError(f"Invalid input for field/attribute rotation. Value: {rotation}. "
                              f"It must be an integer from 0 to {INT_MAX}.")
    if server_boot_volume(instance=instance) is not None:
        raise ValidationError("Backup is not supported for volume-backed instances.")
    return _image_of_instance(instance=instance, user=user, name=name, metadata=metadata, request_id=request_id,
                              transition=TRANSITIONS["createBackup"], rotation=rotation,
                              properties={"image_type": "backup", "backup_type": backup_type})


def _image_of_instance(*, instance: Instance, user: User, name: str, metadata: dict | None, request_id: str,
                       transition: Transition, properties: dict, rotation: int | None = None):
    """Queue an image of the instance's root disk, with ``properties`` over the user's metadata, and
    send the host the snapshot operation that fills it."""
    from apps.images import tickets
    from apps.images.services import image_create

    name, metadata = _image_request(name, metadata)
    if user is not None:
        _check_locked(instance=instance, user=user)
    if instance.vm_state not in transition.allowed or instance.task_state is not None:
        raise _refuse(instance, transition)
    attrs = {"name": name, "disk_format": "qcow2", "container_format": "bare", "visibility": "private",
             **metadata, "instance_uuid": str(instance.id), **properties}
    if instance.image is not None:
        attrs["base_image_ref"] = str(instance.image_id)
        for key in ("architecture", "os_distro", "hw_disk_bus"):
            if (instance.image.properties or {}).get(key):
                attrs.setdefault(key, instance.image.properties[key])
    with transaction.atomic():
        image = image_create(user=user, project=instance.project, attrs=attrs)
        _begin(instance=instance, transition=transition, user=user, request_id=request_id)
        # An upload ticket lets the host PUT this image's data and nothing else: a user's token
        # on the broker would let any reader act as that user everywhere.
        ticket = tickets.ticket_issue(image_id=str(image.pk), action=tickets.UPLOAD)
        base = getattr(settings, "CLOUDMGR_IMAGE_AGENT_URL", settings.CLOUDMGR_PUBLIC_URL).rstrip("/")
        _send(instance, OperationSpec(instance_id=str(instance.id), operation=transition.operation,
                                      image_id=str(image.pk),
                                      upload_url=f"{base}/image/v2/images/{image.pk}/file", upload_token=ticket,
                                      rotation=rotation))
    return image


def instance_shelve(*, instance: Instance, user: User, request_id: str = "") -> Instance:
    """Nova's shelve, offloaded at once: the host stops the guest, uploads its root disk as the
    image "<name>-shelved" and removes the domain and its disks; the instance then holds no host
    (its quota stays, as Nova counts it) until unshelved. Its ports stay, unbound; its volumes
    stay attached, disconnected from the host. A server booted from a volume has no local disk
    to keep: no image is made (Nova)."""
    if server_boot_volume(instance=instance) is not None:
        with transaction.atomic():
            _begin(instance=instance, transition=TRANSITIONS["shelve"], user=user, request_id=request_id)
            _send(instance, OperationSpec(instance_id=str(instance.id), operation="shelve",
                                          timeout=_shutdown_timeout()))
        return instance
    with transaction.atomic():
        image = _image_of_instance(instance=instance, user=user, name=f"{instance.name[:247]}-shelved", metadata=None,
                                   request_id=request_id, transition=TRANSITIONS["shelve"],
                                   properties={"image_type": "snapshot"})
        Instance.objects.filter(pk=instance.pk).update(shelved_image=image)
        instance.shelved_image = image
    return instance


def _shelve_done(instance: Instance) -> int:
    """The host removed the shelved guest: the instance leaves it (the usage triggers free its
    room there) and its ports are unbound."""
    applied = Instance.objects.filter(pk=instance.pk, task_state=TaskState.SHELVING, deleted_at__isnull=True).update(
        vm_state=VmState.SHELVED_OFFLOADED, task_state=None, power_state=PowerState.NOSTATE, host=None,
        updated_at=timezone.now())
    if applied:
        server_ports_unbind(device_id=str(instance.id))
        server_volumes_disconnect(instance=instance)
    return applied


def instance_unshelve(*, instance: Instance, user: User | None, request_id: str = "") -> Instance:
    """Place a shelved instance again and spawn it from its shelved image (which is deleted once
    it runs), or from its boot volume; its volumes are exported to the new host first. With no
    host that fits, it stays shelved, with the fault "No valid host was found"."""
    image = instance.shelved_image
    if (instance.vm_state == VmState.SHELVED_OFFLOADED and (image is None or image.status != ImageStatus.ACTIVE)
            and server_boot_volume(instance=instance) is None):
        raise InvalidState(f"Cannot 'unshelve' instance {instance.id}: its shelved image is gone.")
    with transaction.atomic():
        action = _begin(instance=instance, transition=TRANSITIONS["unshelve"], user=user, request_id=request_id)
        host = scheduler.claim(instance, instance.server_groups.first())
        if host is None:
            message = NO_VALID_HOST
            Instance.objects.filter(pk=instance.pk).update(task_state=None, updated_at=timezone.now())
            instance.task_state = None
            _fault(instance=instance, message=message)
            _action_finish(instance=instance, action="unshelve", result="Error", message=message)
            return instance
        _spawn_on(instance, host, action, event="compute_unshelve_instance", image=image)
    logger.info("instance %s unshelving on %s", instance.id, host.hostname)
    return instance


def _unshelve_done(instance: Instance, result: dict) -> None:
    """Running again: the shelved image goes. Failed: the host cleaned up its attempt, and the
    instance is shelved as before, with a fault (no other host is tried, as Nova)."""
    spawning = Instance.objects.filter(pk=instance.pk, vm_state=VmState.SHELVED_OFFLOADED,
                                       task_state=TaskState.SPAWNING, deleted_at__isnull=True)
    with transaction.atomic():
        if result["ok"]:
            applied = spawning.update(vm_state=VmState.ACTIVE, task_state=None, shelved_image=None,
                                      power_state=result.get("power_state", PowerState.RUNNING),
                                      launched_at=timezone.now(), updated_at=timezone.now())
            if applied:
                _delete_shelved_image(instance)
                _action_finish(instance=instance, action="unshelve", result="Success")
        else:
            error = result.get("error") or "The host failed to start the instance."
            applied = spawning.update(task_state=None, host=None, power_state=PowerState.NOSTATE,
                                      updated_at=timezone.now())
            if applied:
                server_ports_unbind(device_id=str(instance.id))
                server_volumes_disconnect(instance=instance)
                _fault(instance=instance, message=error)
                _action_finish(instance=instance, action="unshelve", result="Error", message=error)
    if not applied:
        _destroy_if_deleted(instance)


def _delete_shelved_image(instance: Instance) -> None:
    """The instance's shelved image, once it is no longer needed (unshelved, deleted, or a failed
    shelve); a protected one stays."""
    from apps.images.services import image_delete

    image = Image.objects.filter(pk=instance.shelved_image_id).exclude(status=ImageStatus.DELETED).first()
    if image is None:
        return
    try:
        image_delete(user=None, project=image.project, image=image)
    except ApplicationError as exc:
        logger.info("the shelved image %s of instance %s stays (%s)", image.id, instance.id, exc.message)


def _rotate_backups(instance: Instance, image_id: str, rotation: int) -> None:
    """Delete the instance's backups of the new backup's type beyond the newest ``rotation``
    (Nova's ``_rotate_backups``). A backup that cannot go (protected) stays, and the rest go."""
    from apps.images.services import image_delete

    backup = Image.objects.filter(pk=image_id).first()
    if backup is None:
        return
    backups = (Image.objects.filter(project_id=backup.project_id, properties__image_type="backup",
                                    properties__backup_type=backup.properties.get("backup_type"),
                                    properties__instance_uuid=str(instance.id))
               .exclude(status=ImageStatus.DELETED).order_by("-created_at", "-id"))
    for old in backups[rotation:]:
        try:
            image_delete(user=None, project=old.project, image=old)
        except ApplicationError as exc:
            logger.info("backup rotation of instance %s: image %s stays (%s)", instance.id, old.id, exc.message)
            continue
        logger.info("backup rotation of instance %s: deleted image %s", instance.id, old.id)


def instance_console_url(*, instance: Instance, user: User, protocol: str = "vnc", console_type: str = "novnc") -> str:
    """A noVNC URL with a one-time token valid CLOUDMGR_CONSOLE_TOKEN_TTL seconds. Guests have
    a VNC server only (no SPICE, serial or MKS console), and noVNC is its only client."""
    from agents.names import TASK_VNC_ADDRESS
    from apps.instances.consoles import console_token_store

    if protocol != "vnc":
        raise ValidationError(f"Unavailable console type {protocol}: this cloud serves VNC consoles (novnc) only.")
    if console_type != "novnc":
        raise ValidationError(f"Invalid console type {console_type}: VNC consoles are novnc only.")
    # A running QEMU serves VNC: active, paused (a still picture) and rescued guests.
    ready = (VmState.ACTIVE, VmState.PAUSED, VmState.RESCUED)
    if instance.vm_state not in ready or instance.task_state == TaskState.DELETING or instance.host is None:
        raise InvalidState(f"Instance {instance.id} is not ready for a console (vm_state {instance.vm_state}).")
    answer = agent_call(queue=instance.host.queue, task=TASK_VNC_ADDRESS,
                        payload=InstanceRef(instance_id=str(instance.id)).to_dict())
    if answer.get("error"):
        raise ServiceUnavailable(f"The host could not find the console: {answer['error']}")
    token = console_token_store(instance_id=str(instance.id), host=answer["host"], port=answer["port"])
    return f"{settings.CLOUDMGR_CONSOLE_URL}/vnc_lite.html?path=%3Ftoken%3D{token}"


def _discard_snapshot_image(image_id: str) -> None:
    from apps.images.models import Image

    Image.objects.filter(pk=image_id, status=ImageStatus.QUEUED).delete()


# Which transitions an operation's result may finish, by the task state the instance is in.
_OPERATION_TASKS = {
    "start": {TaskState.POWERING_ON: TRANSITIONS["start"]},
    "stop": {TaskState.POWERING_OFF: TRANSITIONS["stop"]},
    "reboot": {TaskState.REBOOTING: TRANSITIONS["reboot"], TaskState.REBOOTING_HARD: TRANSITIONS["reboot_hard"]},
    "pause": {TaskState.PAUSING: TRANSITIONS["pause"]},
    "unpause": {TaskState.UNPAUSING: TRANSITIONS["unpause"]},
    "suspend": {TaskState.SUSPENDING: TRANSITIONS["suspend"]},
    "resume": {TaskState.RESUMING: TRANSITIONS["resume"]},
    "resize": {TaskState.RESIZE_MIGRATING: TRANSITIONS["resize"],
               TaskState.RESIZE_REVERTING: TRANSITIONS["revertResize"]},
    "rebuild": {TaskState.REBUILDING: TRANSITIONS["rebuild"]},
    "snapshot": {TaskState.IMAGE_SNAPSHOT: TRANSITIONS["createImage"],
                 TaskState.IMAGE_BACKUP: TRANSITIONS["createBackup"]},
    "shelve": {TaskState.SHELVING: TRANSITIONS["shelve"]},
    "rescue": {TaskState.RESCUING: TRANSITIONS["rescue"]},
    "unrescue": {TaskState.UNRESCUING: TRANSITIONS["unrescue"]},
}


def instance_operation_done(*, result: dict) -> None:
    """Apply an agent's operation result, only if the instance still waits for it (CAS on the
    task state). Success moves to the transition's stable state; failure reverts the task state
    (rebuild, whose old disk is gone, goes to ERROR) and records a fault."""
    instance = Instance.objects.select_related("host", "project").filter(pk=result.get("instance_id")).first()
    if instance is None:
        return
    if result.get("operation") == "trigger_crash_dump":
        _crash_dump_done(instance, result)
        return
    transition = _OPERATION_TASKS.get(result.get("operation"), {}).get(instance.task_state)
    if transition is None:
        logger.info("ignoring a late %s result for instance %s (task state %s)",
                    result.get("operation"), instance.id, instance.task_state)
        return
    power_state = int(result.get("power_state") or PowerState.NOSTATE)
    waiting = Instance.objects.filter(pk=instance.pk, task_state=instance.task_state, deleted_at__isnull=True)
    now = timezone.now()
    with transaction.atomic():
        if result.get("ok"):
            if transition.action == "revertResize":
                applied = _drop_old_flavor(instance, revert=True, task_state=None, power_state=power_state,
                                           vm_state=vm_state_for_power(power_state))
            elif transition.action == "shelve":
                applied = _shelve_done(instance)
            else:
                applied = waiting.update(vm_state=transition.done or instance.vm_state, task_state=None,
                                         power_state=power_state, updated_at=now)
            if applied:
                _action_finish(instance=instance, action=transition.action, result="Success")
                if transition.action == "resize":
                    _migration_to(instance, MigrationStatus.FINISHED, current=[MigrationStatus.MIGRATING])
                elif transition.action == "revertResize":
                    _migration_to(instance, MigrationStatus.REVERTED, current=[MigrationStatus.REVERTING])
                if transition.action == "createBackup" and result.get("image_id"):
                    _rotate_backups(instance, result["image_id"], int(result.get("rotation") or 0))
            return
        error = result.get("error") or f"The host failed to {transition.action} the instance."
        if transition.action == "resize":
            applied = _drop_old_flavor(instance, revert=True, task_state=None, power_state=power_state)
        elif transition.action == "rebuild":
            applied = waiting.update(vm_state=VmState.ERROR, task_state=None, power_state=power_state, updated_at=now)
        elif transition.action == "shelve":
            # The host may have stopped the guest before it failed: the state follows the power.
            applied = waiting.update(vm_state=vm_state_for_power(power_state), task_state=None, shelved_image=None,
                                     power_state=power_state, updated_at=now)
            if applied:
                _delete_shelved_image(instance)
        else:
            applied = waiting.update(task_state=None, power_state=power_state, updated_at=now)
        if applied:
            _fault(instance=instance, message=error)
            _action_finish(instance=instance, action=transition.action, result="Error", message=error)
            if transition.action in ("resize", "revertResize"):
                _migration_to(instance, MigrationStatus.ERROR, current=[MigrationStatus.MIGRATING,
                                                                       MigrationStatus.REVERTING])
            if transition.operation == "snapshot" and result.get("image_id"):
                _discard_snapshot_image(result["image_id"])
            logger.warning("%s of instance %s failed: %s", transition.action, instance.id, error)


def _crash_dump_done(instance: Instance, result: dict) -> None:
    """Finish the trigger_crash_dump action whatever the instance does now (it held no task
    state); a failure (the guest was not running) is the action's error and a fault, as Nova."""
    with transaction.atomic():
        if result.get("ok"):
            _action_finish(instance=instance, action="trigger_crash_dump", result="Success")
            return
        error = result.get("error") or "The host failed to inject an NMI."
        _fault(instance=instance, message=error)
        _action_finish(instance=instance, action="trigger_crash_dump", result="Error", message=error)
        logger.warning("trigger_crash_dump of instance %s failed: %s", instance.id, error)


# --- reconciler -------------------------------------------------------------------------------

_RECONCILED = (VmState.ACTIVE, VmState.STOPPED, VmState.PAUSED, VmState.SUSPENDED)


def instances_reconcile() -> dict:
    """Compare what each up host reported in its last heartbeat with the records: fix power
    state and vm_state (a guest that powered itself off becomes SHUTOFF), skipping instances with
    a task in progress or changed since that heartbeat. Domains that no record owns (another cloud
    on the same libvirt, or leftovers) are only logged: nothing is ever destroyed here."""
    fixed, unknown, missing = [], [], []
    for host in Host.objects.filter(state=HostState.UP, last_heartbeat__isnull=False):
        reported = {str(k): int(v) for k, v in (host.domains or {}).items()}
        records = Instance.objects.filter(host=host, deleted_at__isnull=True)
        owned = {str(pk) for pk in records.values_list("pk", flat=True)}
        strangers = sorted(set(reported) - owned)
        if strangers:
            unknown += strangers
            logger.info("host %s runs %d domain(s) no instance record owns: %s", host.hostname, len(strangers),
                        ", ".join(strangers[:10]))
        # Only instances settled before the report was made: a newer change may not show in it
        # yet. A heartbeat is processed within its expiry (agents.worker.heartbeat_expires:
        # max(30 s, 6 intervals)) of being built, so older changes are surely in it.
        slack = max(30.0, 6 * settings.CLOUDMGR_HEARTBEAT_INTERVAL)
        settled = records.filter(task_state__isnull=True, vm_state__in=_RECONCILED,
                                 updated_at__lt=host.last_heartbeat - timedelta(seconds=slack))
        for instance in settled:
            power = reported.get(str(instance.id))
            if power is None:
                if instance.power_state != PowerState.NOSTATE:
                    missing.append(str(instance.id))
                    logger.warning("instance %s has no domain on its host %s", instance.id, host.hostname)
                    _reconcile_update(instance, power_state=PowerState.NOSTATE)
                continue
            vm_state = instance.vm_state
            if vm_state == VmState.ACTIVE and power in (PowerState.SHUTDOWN, PowerState.CRASHED):
                vm_state = VmState.STOPPED
            elif vm_state == VmState.ACTIVE and power == PowerState.PAUSED:
                vm_state = VmState.PAUSED
            elif vm_state in (VmState.PAUSED, VmState.SUSPENDED, VmState.STOPPED) and power == PowerState.RUNNING:
                vm_state = VmState.ACTIVE
            elif vm_state == VmState.PAUSED and power == PowerState.SHUTDOWN:
                vm_state = VmState.STOPPED
            changed = vm_state != instance.vm_state or power != instance.power_state
            if changed and _reconcile_update(instance, power_state=power, vm_state=vm_state):
                fixed.append(str(instance.id))
                logger.info("reconciled instance %s: %s/%s -> %s/%s", instance.id, instance.vm_state,
                            instance.power_state, vm_state, power)
    return {"fixed": fixed, "unknown": unknown, "missing": missing}


def _reconcile_update(instance: Instance, **fields) -> int:
    return Instance.objects.filter(
        pk=instance.pk, vm_state=instance.vm_state, task_state__isnull=True, deleted_at__isnull=True,
        updated_at=instance.updated_at,
    ).update(updated_at=timezone.now(), **fields)


# --- flavors ----------------------------------------------------------------------------------

_EXTRA_SPEC_KEY = re.compile(r"^[\w.:-]{1,255}$")


def flavor_create(*, name: str, vcpus: int, ram: int, disk: int, flavor_id: str | None = None,
                  ephemeral: int = 0, swap: int = 0, rxtx_factor: float = 1.0, is_public: bool = True,
                  description: str = "") -> Flavor:
    """Admin: a new flavor. 409 if the name or id is taken."""
    name = (name or "").strip()
    if not name or len(name) > 255:
        raise ValidationError("A flavor needs a name of 1 to 255 characters.")
    if vcpus < 1 or ram < 1 or disk < 0 or ephemeral < 0 or swap < 0 or rxtx_factor <= 0:
        raise ValidationError("A flavor needs vcpus >= 1, ram >= 1 MiB, and no negative disk, ephemeral or swap.")
    if max(vcpus, ram, disk, ephemeral, swap) > INT_MAX:
        raise ValidationError(f"A flavor's vcpus, ram, disk, ephemeral and swap are at most {INT_MAX}.")
    flavor_id = str(flavor_id) if flavor_id not in (None, "", "auto") else str(uuid.uuid4())
    if Flavor.objects.filter(Q(pk=flavor_id) | Q(name=name)).exists():
        raise Conflict(f"Flavor with name {name} or id {flavor_id} already exists.")
    return Flavor.objects.create(id=flavor_id, name=name, vcpus=vcpus, ram=ram, disk=disk, ephemeral=ephemeral,
                                 swap=swap, rxtx_factor=rxtx_factor, is_public=is_public, description=description)


def flavor_delete(*, flavor: Flavor) -> None:
    """Admin. Instances keep what they were built with; a flavor in use is only disabled
    (the database keeps the reference), as Nova keeps deleted flavors for its instances."""
    if Instance.objects.filter(Q(flavor=flavor) | Q(old_flavor=flavor)).exists():
        Flavor.objects.filter(pk=flavor.pk).update(disabled=True, name=f"{flavor.name}-deleted-{uuid.uuid4().hex[:8]}")
    else:
        flavor.delete()


def flavor_extra_specs_set(*, flavor: Flavor, specs: dict) -> dict:
    if not isinstance(specs, dict):
        raise ValidationError("extra_specs must be an object.")
    for key, value in specs.items():
        if not _EXTRA_SPEC_KEY.match(str(key)) or not isinstance(value, (str, int, float, bool)):
            raise ValidationError(f"Invalid extra spec {key!r}: keys are 1-255 of [A-Za-z0-9_.:-], values strings.")
    flavor.extra_specs = {**flavor.extra_specs, **{str(k): str(v) for k, v in specs.items()}}
    flavor.save(update_fields=["extra_specs"])
    return flavor.extra_specs


def flavor_extra_spec_delete(*, flavor: Flavor, key: str) -> None:
    if key not in flavor.extra_specs:
        raise NotFound(f"Flavor {flavor.id} has no extra specs with key {key}.")
    flavor.extra_specs.pop(key)
    flavor.save(update_fields=["extra_specs"])


def flavor_access_add(*, flavor: Flavor, project: Project, refuse_public: bool = True) -> None:
    """Let ``project`` use a private flavor. Nova before microversion 2.7 also recorded access
    to a public flavor (it changes nothing): ``refuse_public=False`` keeps that."""
    if flavor.is_public and refuse_public:
        raise Conflict("Can not add access to a public flavor.")
    if flavor.projects.filter(pk=project.pk).exists():
        raise Conflict(f"Flavor access already exists for flavor {flavor.id} and project {project.pk.hex}.")
    flavor.projects.add(project)


def flavor_access_remove(*, flavor: Flavor, project: Project) -> None:
    if not flavor.projects.filter(pk=project.pk).exists():
        raise NotFound(f"Flavor access not found for flavor {flavor.id} and project {project.pk.hex}.")
    flavor.projects.remove(project)


# --- keypairs ---------------------------------------------------------------------------------


def _public_key_fingerprint(public_key: str) -> tuple[str, str]:
    """(normalized "type base64 [comment]" key, Nova's MD5 fingerprint); 400 if not an SSH key."""
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    parts = (public_key or "").strip().split()
    if len(parts) < 2 or parts[0] not in ("ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256",
                                          "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"):
        raise ValidationError("Keypair data is invalid: the public key must be ssh-rsa, ssh-ed25519 or ecdsa.")
    try:
        load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
        blob = base64.b64decode(parts[1], validate=True)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ValidationError(f"Keypair data is invalid: {exc}") from exc
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return " ".join(parts[:3]), ":".join(digest[i:i + 2] for i in range(0, 32, 2))


def _ssh_generate() -> tuple[str, str]:
    """(OpenSSH public key, OpenSSH private key) of a new ed25519 key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption()).decode()
    public_key = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    return public_key + " Generated-by-cloudmgr", private_key


def _x509_fingerprint(certificate: str) -> str:
    """Nova's fingerprint of an x509 key pair: the certificate's SHA-1, colon separated."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        cert = x509.load_pem_x509_certificate((certificate or "").strip().encode())
    except ValueError as exc:
        raise ValidationError(f"Keypair data is invalid: not a PEM X.509 certificate ({exc}).") from exc
    digest = cert.fingerprint(hashes.SHA1()).hex()  # Nova's fingerprint format, not a signature
    return ":".join(digest[i:i + 2] for i in range(0, 40, 2))


def _x509_generate(user: User) -> tuple[str, str]:
    """(certificate PEM, base64 PKCS#12 of its key and itself, no password): as Nova, a client
    certificate for WinRM, for the user (CN and UPN ``<user id>@localhost``), valid 10 years."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user.pk.hex)])
    upn = f"{user.pk.hex}@localhost".encode()  # a DER UTF8String: tag 0x0c, short length
    now = timezone.now()
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.OtherName(
            x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), bytes([0x0C, len(upn)]) + upn)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    bundle = pkcs12.serialize_key_and_certificates(None, key, cert, None, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), base64.b64encode(bundle).decode()


def compute_limit(name: str) -> int:
    """One of Nova's limits that cloudmgr enforces outside the project quotas (settings'
    ``CLOUDMGR_COMPUTE_LIMITS``: key_pairs per user, server_groups per project,
    server_group_members per group); -1 is no limit."""
    return settings.CLOUDMGR_COMPUTE_LIMITS[name]


def _over(name: str, count: int) -> bool:
    limit = compute_limit(name)
    return limit >= 0 and count >= limit


def keypair_create(*, user: User, name: str, public_key: str | None = None, key_type: str = "ssh"
                   ) -> tuple[Keypair, str | None]:
    """Import ``public_key``, or generate a key pair and return its private key once (it is never
    stored): ed25519 for ``ssh``; for ``x509`` a certificate, whose PKCS#12 bundle is the private
    key (as Nova). 409 if the user has a key pair of that name, 403 past the key_pairs limit."""
    name = (name or "").strip()
    if not name or len(name) > 255 or not re.match(r"^[\w .@-]+$", name):
        raise ValidationError("Keypair name must be 1-255 characters of letters, digits, spaces, '_', '-', '.', '@'.")
    if key_type not in ("ssh", "x509"):
        raise ValidationError("Keypair type must be ssh or x509.")
    private_key = None
    if key_type == "x509":
        if public_key is None:
            public_key, private_key = _x509_generate(user)
        public_key = public_key.strip()
        fingerprint = _x509_fingerprint(public_key)
    else:
        if public_key is None:
            public_key, private_key = _ssh_generate()
        public_key, fingerprint = _public_key_fingerprint(public_key)
    with transaction.atomic():
        User.objects.select_for_update().filter(pk=user.pk).first()  # one create of the user's at a time
        if Keypair.objects.filter(user=user, name=name).exists():
            raise Conflict(f"Key pair '{name}' already exists.")
        if _over("key_pairs", Keypair.objects.filter(user=user).count()):
            raise QuotaExceeded("Quota exceeded, too many key pairs.")
        keypair = Keypair.objects.create(user=user, name=name, type=key_type, public_key=public_key,
                                         fingerprint=fingerprint)
    return keypair, private_key


def keypair_delete(*, keypair: Keypair) -> None:
    keypair.delete()


# --- servers: update, metadata ----------------------------------------------------------------

MAX_METADATA_ITEMS = 128


def _check_metadata(metadata) -> dict[str, str]:
    if not isinstance(metadata, dict):
        raise ValidationError("metadata must be an object of strings.")
    for key, value in metadata.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 255 or not isinstance(value, str) or len(value) > 255:
            raise ValidationError("Metadata keys are 1-255 characters and values strings of at most 255.")
    if len(metadata) > MAX_METADATA_ITEMS:
        raise QuotaExceeded(f"Quota exceeded for metadata_items: at most {MAX_METADATA_ITEMS} items.")
    return dict(metadata)


def instance_update(*, instance: Instance, user: User, name: str | None = None, description=UNSET) -> Instance:
    """Rename, and set or (None) clear the description, of the fields given."""
    if instance.deleted_at:
        raise NotFound(f"Instance {instance.id} could not be found.")
    fields = []
    if name is not None:
        instance.name = _check_name(name)
        fields.append("name")
    if description is not UNSET:
        instance.description = _check_description(description)
        fields.append("description")
    if fields:
        instance.save(update_fields=[*fields, "updated_at"])
    return instance


def instance_metadata_set(*, instance: Instance, user: User, metadata: dict, replace: bool = False,
                          delete_key: str | None = None) -> dict[str, str]:
    """Merge (POST, PUT of one key), replace (PUT), or delete one key; under a row lock."""
    _check_locked(instance=instance, user=user)
    with transaction.atomic():
        locked = Instance.objects.select_for_update().get(pk=instance.pk)
        if delete_key is not None:
            if delete_key not in locked.metadata:
                raise NotFound(f"Metadata item was not found: {delete_key}")
            locked.metadata.pop(delete_key)
            current = locked.metadata
        else:
            current = _check_metadata(metadata if replace else {**locked.metadata, **_check_metadata(metadata)})
        locked.metadata = current
        locked.save(update_fields=["metadata", "updated_at"])
    instance.metadata = current
    return current


# --- tags (Nova 2.26) --------------------------------------------------------------------------

# Nova changes a server's tags only in these stable states (server_tags.py); reading works in any.
TAGS_WRITABLE = (VmState.ACTIVE, VmState.PAUSED, VmState.SUSPENDED, VmState.STOPPED)


def _check_tag(tag) -> str:
    if not isinstance(tag, str) or not 1 <= len(tag) <= InstanceTag.MAX_LENGTH or "/" in tag or "," in tag:
        raise ValidationError(f"Tag '{tag}' is invalid. It must be a non empty string of at most "
                              f"{InstanceTag.MAX_LENGTH} characters without characters '/' and ','.")
    return tag


def _tags_locked(instance: Instance, action: str) -> Instance:
    """The instance's row, locked (so concurrent changes count each other's tags), or 409 when
    its state does not take tag changes."""
    locked = Instance.objects.select_for_update().get(pk=instance.pk)
    if locked.deleted_at is not None:
        raise NotFound(f"Instance {instance.id} could not be found.")
    if locked.vm_state not in TAGS_WRITABLE:
        raise InvalidState(f"Cannot '{action}' instance {instance.id} while it is in vm_state {locked.vm_state}.")
    return locked


def _touch(instance: Instance) -> None:
    """Tags are part of the server: a change shows in its ``updated`` and in changes-since."""
    instance.save(update_fields=["updated_at"])


def instance_tag_add(*, instance: Instance, tag: str) -> bool:
    """Tag the server; False if it already had the tag. 400 past Nova's 50 tags per server."""
    tag = _check_tag(tag)
    with transaction.atomic():
        locked = _tags_locked(instance, "update tag")
        tags = list(locked.tags.values_list("tag", flat=True))
        if tag in tags:
            return False
        if len(tags) >= InstanceTag.MAX_PER_INSTANCE:
            raise ValidationError(f"The number of tags exceeded the per-server limit {InstanceTag.MAX_PER_INSTANCE}")
        InstanceTag.objects.create(instance=locked, tag=tag)
        _touch(locked)
    return True


def instance_tags_replace(*, instance: Instance, tags) -> list[str]:
    """Make ``tags`` the server's tags (duplicates count once); the tags, sorted."""
    if not isinstance(tags, list):
        raise ValidationError("Invalid input for field/attribute tags. Value should be a list of strings.")
    wanted = {_check_tag(tag) for tag in tags}
    if len(tags) > InstanceTag.MAX_PER_INSTANCE:
        raise ValidationError(f"The number of tags exceeded the per-server limit {InstanceTag.MAX_PER_INSTANCE}")
    with transaction.atomic():
        locked = _tags_locked(instance, "update tags")
        current = set(locked.tags.values_list("tag", flat=True))
        locked.tags.filter(tag__in=current - wanted).delete()
        InstanceTag.objects.bulk_create([InstanceTag(instance=locked, tag=tag) for tag in sorted(wanted - current)])
        _touch(locked)
    return sorted(wanted)


def instance_tag_delete(*, instance: Instance, tag: str) -> None:
    with transaction.atomic():
        locked = _tags_locked(instance, "delete tag")
        if not locked.tags.filter(tag=tag).delete()[0]:
            raise NotFound(f"Instance {instance.id} has no tag '{tag}'")
        _touch(locked)


def instance_tags_clear(*, instance: Instance) -> None:
    with transaction.atomic():
        locked = _tags_locked(instance, "delete tags")
        locked.tags.all().delete()
        _touch(locked)


# --- server groups ----------------------------------------------------------------------------

SERVER_GROUP_POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")


def server_group_create(*, user: User, project: Project, name: str, policy: str, rules: dict | None = None
                        ) -> ServerGroup:
    name = (name or "").strip()
    if not name or len(name) > 255:
        raise ValidationError("A server group needs a name of 1 to 255 characters.")
    if policy not in SERVER_GROUP_POLICIES:
        raise ValidationError(f"Invalid policy {policy!r}: one of {', '.join(SERVER_GROUP_POLICIES)}.")
    rules = rules or {}
    if rules and (policy != "anti-affinity" or set(rules) - {"max_server_per_host"}):
        raise ValidationError("Only the anti-affinity policy takes a rule: max_server_per_host.")
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()  # one group create at a time
        if _over("server_groups", ServerGroup.objects.filter(project=project).count()):
            raise QuotaExceeded("Quota exceeded, too many server groups.")
        return ServerGroup.objects.create(project=project, user=user, name=name, policy=policy, rules=rules)


def _join_server_group(instance: Instance, group: ServerGroup) -> None:
    """Make the instance a member, under the group's row lock (which the scheduler's claim for
    the group takes too): 403 past the server_group_members limit of live members, as Nova."""
    locked = ServerGroup.objects.select_for_update().get(pk=group.pk)
    if _over("server_group_members", locked.members.filter(deleted_at__isnull=True).count()):
        raise QuotaExceeded("Quota exceeded, too many servers in group")
    locked.members.add(instance)


def server_group_delete(*, group: ServerGroup) -> None:
    group.delete()


# --- network interfaces (os-interface) --------------------------------------------------------

_INTERFACE_STATES = (VmState.ACTIVE, VmState.PAUSED, VmState.STOPPED)


def _interfaces_apply(instance: Instance) -> str | None:
    """Make the instance's domain have exactly its ports' NICs (hot-plug); the host's error."""
    if instance.host is None:
        return None
    try:
        answer = agent_call(queue=instance.host.queue, task=TASK_SYNC_INTERFACES,
                            payload=_domain_spec(instance).to_dict())
    except ServiceUnavailable as exc:
        return exc.message
    return None if answer.get("ok") else answer.get("error") or "the host could not change the interfaces"


def _check_interface_state(instance: Instance, user: User | None, action: str) -> None:
    if instance.deleted_at:
        raise NotFound(f"Instance {instance.id} could not be found.")
    if user is not None:
        _check_locked(instance=instance, user=user)
    if instance.vm_state not in _INTERFACE_STATES or instance.task_state is not None:
        state = f"task_state {instance.task_state}" if instance.task_state else f"vm_state {instance.vm_state}"
        raise InvalidState(f"Cannot '{action}' instance {instance.id} while it is in {state}.")


def instance_interface_attach(*, instance: Instance, user: User | None, network_id: str | None = None,
                              port_id: str | None = None, fixed_ip: str | None = None, request_id: str = ""):
    """Nova's os-interface attach: a new port on ``network_id`` (or the user's ``port_id``) plugged
    into the instance at once (live if it runs). If the host cannot plug it, the port is released
    again and the answer is 409."""
    _check_interface_state(instance, user, "attach_interface")
    port = server_interface_attach(user=user, project=instance.project, device_id=str(instance.id),
                                   name=instance.hostname, host=instance.host, network_id=network_id,
                                   port_id=port_id, fixed_ip=fixed_ip)
    error = _interfaces_apply(instance)
    with transaction.atomic():
        _action_start(instance=instance, action="attach_interface", user=user, request_id=request_id)
        if error:
            server_interface_detach(device_id=str(instance.id), port=port)
            _action_finish(instance=instance, action="attach_interface", result="Error", message=error)
        else:
            _action_finish(instance=instance, action="attach_interface", result="Success")
    if error:
        raise Conflict(f"Failed to attach network adapter device to {instance.id}: {error}")
    return port


def _check_fixed_ip_change(instance: Instance, user: User | None) -> None:
    """Nova's multinic actions: in any state, not on a locked server (for non-admins)."""
    if instance.deleted_at:
        raise NotFound(f"Instance {instance.id} could not be found.")
    if user is not None:
        _check_locked(instance=instance, user=user)


def instance_fixed_ip_add(*, instance: Instance, user: User | None, network_id, request_id: str = "") -> None:
    """Nova's addFixedIp: one more address from ``network_id`` on the server's port there; the
    host's filter and the network's DHCP entries follow through the port's sync."""
    _check_fixed_ip_change(instance, user)
    with transaction.atomic():
        server_fixed_ip_add(device_id=str(instance.id), network_id=network_id)
        _action_start(instance=instance, action="addFixedIp", user=user, request_id=request_id)
        _action_finish(instance=instance, action="addFixedIp", result="Success")


def instance_fixed_ip_remove(*, instance: Instance, user: User | None, address: str, request_id: str = "") -> None:
    """Nova's removeFixedIp: the address leaves the server's port that holds it."""
    _check_fixed_ip_change(instance, user)
    with transaction.atomic():
        server_fixed_ip_remove(device_id=str(instance.id), address=address)
        _action_start(instance=instance, action="removeFixedIp", user=user, request_id=request_id)
        _action_finish(instance=instance, action="removeFixedIp", result="Success")


def instance_security_group_add(*, instance: Instance, user: User | None, name: str) -> None:
    """Nova's addSecurityGroup: the group (id or name) on every port of the instance. As in Nova,
    in any state, locked or not, and no instance action (it changes the ports, not the instance)."""
    server_security_group_add(user=user, project=instance.project, device_id=str(instance.id), name=name)


def instance_security_group_remove(*, instance: Instance, user: User | None, name: str) -> None:
    """Nova's removeSecurityGroup: the group off every port of the instance that has it."""
    server_security_group_remove(user=user, project=instance.project, device_id=str(instance.id), name=name)


def instance_interface_detach(*, instance: Instance, user: User | None, port, request_id: str = "") -> None:
    """Nova's os-interface detach: the port leaves the instance (deleted if it was made for it)
    and its NIC is unplugged from the domain."""
    _check_interface_state(instance, user, "detach_interface")
    server_interface_detach(device_id=str(instance.id), port=port)
    error = _interfaces_apply(instance)
    with transaction.atomic():
        _action_start(instance=instance, action="detach_interface", user=user, request_id=request_id)
        _action_finish(instance=instance, action="detach_interface", result="Error" if error else "Success",
                       message=error or "")
        if error:
            _fault(instance=instance, message=f"Failed to detach network adapter device: {error}")
    if error:
        raise Conflict(f"Failed to detach network adapter device from {instance.id}: {error}")
