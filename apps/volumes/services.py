"""Writes of the block storage domain (Cinder).

Every action checks its allow-list (``states``), moves the object into its busy status by
compare-and-swap and records it, and only on commit asks an agent to act: the storage host's
agent for data (``agents.storage.tasks``), the compute host's for hot-plug (``agents.tasks``).
Each agent result comes back to ``volume_task_done`` (the control queue), which applies it only
if the object still waits for it. A failure leaves a status the user sees (``error``,
``error_deleting`` ...) and a user message with the agent's reason (Cinder's messages API).

Quotas (``volumes``, ``gigabytes``, ``snapshots``, ``backups``) are counted in the transaction
that records the object, under the row locks of ``quota_reserve``; they are released exactly once,
by the compare-and-swap that removes the object. As in Cinder, ``gigabytes`` counts volumes and
snapshots, and an object in ``error`` keeps its quota until it is deleted.
"""

import dataclasses
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
import string
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents import names
from agents.specs import BackupSpec, SnapshotSpec, VolumeAttachSpec, VolumeConnection, VolumeSpec
from agents.storage.qemu_img import FORMATS as VOLUME_IMAGE_FORMATS
from apps.hosts.models import Host, HostState
from apps.images.models import Image, ImageStatus
from apps.images.selectors import image_maps_volumes, image_ref
from apps.instances.models import Instance
from apps.instances.states import VmState
from apps.tenants.models import Project, User
from apps.tenants.selectors import is_cloud_admin
from apps.tenants.services import quota_release, quota_reserve
from apps.volumes import selectors
from apps.volumes.models import (
    BACKEND_SPEC,
    MULTIATTACH_SPEC,
    Attachment,
    Backup,
    Message,
    Snapshot,
    Transfer,
    Volume,
    VolumeType,
)
from apps.volumes.states import (
    BACKUP_TRANSITIONS,
    RESET_BACKUP_STATUSES,
    RESET_SNAPSHOT_STATUSES,
    RESET_VOLUME_STATUSES,
    SNAPSHOT_TRANSITIONS,
    VOLUME_TRANSITIONS,
    AttachStatus,
    BackupStatus,
    SnapshotStatus,
    VolumeStatus,
)
from cloudmgr.exceptions import (
    ApplicationError,
    Conflict,
    InvalidState,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    ServiceUnavailable,
    ValidationError,
)
from cloudmgr.rpc import agent_call, agent_cast

logger = logging.getLogger(__name__)

GIB = 1024**3
MESSAGE_TTL = timedelta(days=30)  # Cinder's message_ttl
MAX_METADATA_ITEMS = 128
MAX_SIZE_GB = 16384
_SPEC_KEY = re.compile(r"^[\w.:-]{1,255}$")
_DEVICE = re.compile(r"^/dev/vd([b-z]|[a-z][a-z])$")

# Backends a type may name (agents.storage.volumes.BACKENDS).
BACKENDS = ("file", "lvm")

# The statuses an instance may have a volume attached or detached in (Nova's allow-list, less
# the states cloudmgr has not: shelved, soft-deleted). A shelved server's volumes are recorded
# only, and connected when it is unshelved (Nova 2.20).
ATTACH_VM_STATES = (VmState.ACTIVE, VmState.PAUSED, VmState.STOPPED, VmState.SHELVED_OFFLOADED)

DELETE_REFUSED = ("Volume status must be available or error or error_restoring or error_extending or "
                  "error_managing and must not be migrating, attached, belong to a group, have snapshots, "
                  "awaiting a transfer, or be disassociated from snapshots after volume transfer.")


# --- errors, messages, plumbing ---------------------------------------------------------------


def _invalid(kind: str, reason: str) -> InvalidState:
    """Cinder's InvalidVolume/InvalidSnapshot/InvalidBackup: the object's status (or shape)
    forbids the action. The block storage API answers it with 400, as Cinder."""
    exc = InvalidState(f"Invalid {kind}: {reason}")
    exc.invalid_resource = kind
    return exc


# Cinder's event ids are <PROJECT>_<RESOURCE>_<ACTION>_<DETAIL>; the action numbers are ours.
_ACTIONS = {
    "create": ("001", "create volume"),
    "attach": ("002", "attach volume"),
    "detach": ("003", "detach volume"),
    "extend": ("007", "extend volume"),
    "delete": ("008", "delete volume"),
    "snapshot_create": ("009", "create snapshot"),
    "snapshot_delete": ("010", "delete snapshot"),
    "backup_create": ("013", "create backup"),
    "backup_delete": ("014", "delete backup"),
    "backup_restore": ("015", "restore backup"),
    "revert": ("016", "revert volume to snapshot"),
    "resized": ("017", "tell the server a volume grew"),
}


def _message(*, project_id, resource_type: str, resource_id, action: str, reason: str, request_id: str = "") -> None:
    number, what = _ACTIONS[action]
    Message.objects.create(
        project_id=project_id, request_id=request_id, resource_type=resource_type, resource_uuid=resource_id,
        event_id=f"VOLUME_{resource_type}_{number}_001", user_message=f"{what}: {reason}",
        expires_at=timezone.now() + MESSAGE_TTL,
    )


def _cast(host: Host, task: str, payload: dict) -> None:
    """Send an agent task on commit, its result to ``volume_task_done``."""
    queue = host.queue
    transaction.on_commit(
        lambda: agent_cast(queue=queue, task=task, payload=payload, callback=names.CALLBACK_VOLUME_DONE))


def _host_up(host: Host | None, what: str) -> Host:
    if host is None:
        raise InvalidState(f"{what} has no storage host.")
    if host.state != HostState.UP:
        raise InvalidState(f"The storage host {host.hostname} of {what} is not up: try again when it is.")
    return host


def _move(model, obj, allowed, to: str, **fields) -> bool:
    """Compare-and-swap ``obj``'s status from one of ``allowed`` to ``to``; True if it moved."""
    done = model.objects.filter(pk=obj.pk, status__in=list(allowed)).update(
        status=to, updated_at=timezone.now(), **fields)
    if done:
        obj.status = to
        for field, value in fields.items():
            setattr(obj, field, value)
    return bool(done)


def _volume_spec(volume: Volume, **fields) -> VolumeSpec:
    return VolumeSpec(id=str(volume.pk), size_gb=volume.size, backend=volume.backend, **fields)


def _locked_volume(volume: Volume) -> Volume:
    """The volume's row under a lock (the caller's transaction), fresh."""
    # of=self: PostgreSQL cannot lock the nullable side of the outer join to the host.
    return Volume.objects.select_for_update(of=("self",)).select_related("host", "volume_type").get(pk=volume.pk)


def _check_name(name, what: str = "name") -> str:
    if name is None:
        return ""
    if not isinstance(name, str) or len(name) > 255:
        raise ValidationError(f"Invalid input: {what} must be a string of at most 255 characters.")
    return name.strip()


def _check_description(description) -> str:
    if description is None:
        return ""
    if not isinstance(description, str) or len(description) > 255:
        raise ValidationError("Invalid input: description must be a string of at most 255 characters.")
    return description


def check_metadata(metadata) -> dict[str, str]:
    """Cinder's metadata: at most 128 string items, keys 1-255 and values 0-255 characters."""
    if not isinstance(metadata, dict):
        raise ValidationError("Invalid input: metadata must be an object of strings.")
    for key, value in metadata.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 255 or not isinstance(value, str) or len(value) > 255:
            raise ValidationError("Invalid input: metadata keys are 1-255 characters and values strings of at "
                                  "most 255.")
    if len(metadata) > MAX_METADATA_ITEMS:
        raise ValidationError(f"Invalid input: at most {MAX_METADATA_ITEMS} metadata items.")
    return dict(metadata)


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE_GB:
        raise ValidationError(f"Invalid input received: size must be an integer from 1 to {MAX_SIZE_GB} (GiB), "
                              f"not {size!r}.")
    return size


# --- volume types -----------------------------------------------------------------------------


def _check_extra_specs(specs) -> dict[str, str]:
    if not isinstance(specs, dict):
        raise ValidationError("Invalid input: extra_specs must be an object.")
    cleaned = {}
    for key, value in specs.items():
        if not _SPEC_KEY.match(str(key)) or not isinstance(value, (str, int, float, bool)) or len(str(value)) > 255:
            raise ValidationError(f"Invalid input: extra spec {key!r}: keys are 1-255 of [A-Za-z0-9_.:-], values "
                                  "strings of at most 255 characters.")
        cleaned[str(key)] = str(value)
    if BACKEND_SPEC in cleaned and cleaned[BACKEND_SPEC] not in BACKENDS:
        raise ValidationError(f"Invalid input: {BACKEND_SPEC} must be one of {', '.join(BACKENDS)}, "
                              f"not {cleaned[BACKEND_SPEC]!r}.")
    if MULTIATTACH_SPEC in cleaned and cleaned[MULTIATTACH_SPEC].strip().lower() not in ("<is> true", "<is> false"):
        raise ValidationError(f"Invalid input: {MULTIATTACH_SPEC} must be '<is> True' or '<is> False'.")
    return cleaned


def volume_type_create(*, name: str, description: str = "", is_public: bool = True,
                       extra_specs: dict | None = None) -> VolumeType:
    """Admin: a new volume type. 409 if the name is taken."""
    name = _check_name(name)
    if not name:
        raise ValidationError("A volume type needs a name of 1 to 255 characters.")
    specs = _check_extra_specs(extra_specs or {})
    with transaction.atomic():
        if VolumeType.objects.filter(name=name).exists():
            raise Conflict(f"Volume Type {name} already exists.")
        return VolumeType.objects.create(name=name, description=_check_description(description),
                                         is_public=bool(is_public), extra_specs=specs)


def volume_type_update(*, vtype: VolumeType, name: str | None = None, description: str | None = None,
                       is_public: bool | None = None) -> VolumeType:
    if name is not None:
        name = _check_name(name)
        if not name:
            raise ValidationError("A volume type needs a name of 1 to 255 characters.")
        if name != vtype.name and vtype.name == settings.CLOUDMGR_VOLUME_DEFAULT_TYPE:
            raise ValidationError("The default volume type cannot be renamed.")
        if VolumeType.objects.filter(name=name).exclude(pk=vtype.pk).exists():
            raise Conflict(f"Volume Type {name} already exists.")
        vtype.name = name
    if description is not None:
        vtype.description = _check_description(description)
    if is_public is not None:
        vtype.is_public = bool(is_public)
    vtype.save()
    return vtype


def volume_type_delete(*, vtype: VolumeType) -> None:
    if vtype.name == settings.CLOUDMGR_VOLUME_DEFAULT_TYPE:
        raise ValidationError("Default volume type can not be deleted.")
    if Volume.objects.filter(volume_type=vtype).exists():
        raise ValidationError("Target volume type is still in use.")
    vtype.delete()


def _type_in_use(vtype: VolumeType) -> None:
    # A volume keeps its backend; changing what the type says would lie about the volumes.
    if Volume.objects.filter(volume_type=vtype).exists():
        raise ValidationError(f"Invalid volume type: the extra specs of {vtype.name} cannot change while "
                              "volumes use it.")


def volume_type_extra_specs_set(*, vtype: VolumeType, specs: dict) -> dict[str, str]:
    cleaned = _check_extra_specs(specs)
    with transaction.atomic():
        locked = VolumeType.objects.select_for_update().get(pk=vtype.pk)
        if any(locked.extra_specs.get(k) != v for k, v in cleaned.items()):
            _type_in_use(locked)
        locked.extra_specs = {**locked.extra_specs, **cleaned}
        locked.save(update_fields=["extra_specs", "updated_at"])
    vtype.extra_specs = locked.extra_specs
    return locked.extra_specs


def volume_type_extra_spec_delete(*, vtype: VolumeType, key: str) -> None:
    with transaction.atomic():
        locked = VolumeType.objects.select_for_update().get(pk=vtype.pk)
        if key not in locked.extra_specs:
            raise NotFound(f"Volume Type {vtype.pk} has no extra specs with key {key}.")
        _type_in_use(locked)
        locked.extra_specs.pop(key)
        locked.save(update_fields=["extra_specs", "updated_at"])


def volume_type_access_add(*, vtype: VolumeType, project: Project) -> None:
    if vtype.is_public:
        raise ValidationError("Invalid volume type: access cannot be given to a public type.")
    if vtype.projects.filter(pk=project.pk).exists():
        raise Conflict(f"Volume type access for {vtype.pk}/{project.pk.hex} combination already exists.")
    vtype.projects.add(project)


def volume_type_access_remove(*, vtype: VolumeType, project: Project) -> None:
    if not vtype.projects.filter(pk=project.pk).exists():
        raise NotFound(f"Volume type access not found for {vtype.pk}/{project.pk.hex} combination.")
    vtype.projects.remove(project)


# --- volumes: create ----------------------------------------------------------------------------


def _image_size_gb(image: Image) -> int:
    return max(1, math.ceil((image.virtual_size or image.size or 0) / GIB), image.min_disk)


def _image_metadata(image: Image) -> dict[str, str]:
    """Cinder's volume_image_metadata: the image's base attributes and properties, as strings."""
    meta = {"image_id": str(image.pk), "image_name": image.name, "checksum": image.checksum,
            "container_format": image.container_format, "disk_format": image.disk_format,
            "min_disk": str(image.min_disk), "min_ram": str(image.min_ram), "size": str(image.size or 0)}
    meta.update({str(k): str(v) for k, v in (image.properties or {}).items()})
    return meta


def _check_image(image: Image, size: int) -> None:
    if image.status != ImageStatus.ACTIVE:
        raise ValidationError(f"Invalid image: image {image.pk} is not active (it is {image.status}).")
    if image_maps_volumes(image=image):
        raise ValidationError(f"Invalid image: image {image.pk} has no data: it maps volume snapshots (an image of "
                              "a server booted from a volume). Boot a server from it, or make a volume from one "
                              "of its snapshots.")
    if image.disk_format not in VOLUME_IMAGE_FORMATS:
        raise ValidationError(f"Invalid image: image {image.pk} has disk format {image.disk_format}; volumes are "
                              f"made from {', '.join(VOLUME_IMAGE_FORMATS)} images.")
    needed = _image_size_gb(image)
    if size < needed:
        raise ValidationError(f"Invalid input received: Image virtual size is {needed}GB and doesn't fit in a "
                              f"volume of size {size}GB.")


def volume_type_default_ensure() -> VolumeType:
    """The default type (its migration makes it; made again if an operator deleted its row)."""
    vtype, _ = VolumeType.objects.get_or_create(name=settings.CLOUDMGR_VOLUME_DEFAULT_TYPE,
                                                defaults={"description": "Default Volume Type"})
    return vtype


def _resolve_type(vtype: VolumeType | None, source: Volume | None) -> VolumeType:
    if source is not None:
        if vtype is not None and vtype.backend != source.backend:
            raise ValidationError(f"Invalid volume type: type {vtype.name} keeps volumes in backend {vtype.backend}, "
                                  f"its source is in {source.backend}; recommend omitting the type argument.")
        return vtype or source.volume_type
    return vtype or volume_type_default_ensure()


def volume_create(
    *, user: User, project: Project, size: int | None = None, name: str = "", description: str = "",
    volume_type: VolumeType | None = None, image: Image | None = None, snapshot: Snapshot | None = None,
    source_volume: Volume | None = None, metadata: dict | None = None, availability_zone: str | None = None,
    request_id: str = "",
) -> Volume:
    """Record a new volume (empty, or from one source), count its quota, and (on commit) ask its
    storage host to create it. With no storage host up it is recorded in ``error``, with a
    message saying why (as Cinder's scheduler answers "No valid backend was found")."""
    if len([s for s in (image, snapshot, source_volume) if s is not None]) > 1:
        raise ValidationError("Invalid input received: give at most one source (imageRef, snapshot_id, "
                              "source_volid).")
    name, description = _check_name(name), _check_description(description)
    metadata = check_metadata(metadata or {})
    source = snapshot.volume if snapshot is not None else source_volume
    vtype = _resolve_type(volume_type, source)
    if snapshot is not None:
        minimum, what = snapshot.size, "snapshot"
    elif source_volume is not None:
        minimum, what = source_volume.size, "source volume"
    else:
        minimum, what = (_image_size_gb(image) if image is not None else 1), "image"
    size = minimum if size is None else _check_size(size)
    if size < minimum and what != "image":
        raise ValidationError(f"Invalid input received: Volume size '{size}'GB cannot be smaller than the {what} "
                              f"size {minimum}GB. They must be >= original {what} size.")
    if image is not None:
        _check_image(image, size)
    host = source.host if source is not None else selectors.storage_host()
    zone = host.availability_zone if host is not None else "nova"
    if availability_zone and availability_zone != zone:
        raise ValidationError(f"Invalid input received: Availability zone '{availability_zone}' is invalid.")

    with transaction.atomic():
        if snapshot is not None:
            locked = Snapshot.objects.select_for_update().get(pk=snapshot.pk)
            if locked.status not in SNAPSHOT_TRANSITIONS["use"].allowed:
                raise _invalid("snapshot", f"Originating snapshot status must be one of 'available' values, "
                                           f"it is {locked.status}.")
        if source_volume is not None:
            locked_source = _locked_volume(source_volume)
            if locked_source.status not in VOLUME_TRANSITIONS["clone"].allowed:
                raise _invalid("volume", f"Volume {source_volume.pk} status must be available or in-use to be "
                                         f"cloned, it is {locked_source.status}.")
        quota_reserve(project=project, deltas={"volumes": 1, "gigabytes": size})
        volume = Volume.objects.create(
            project=project, user=user, name=name, description=description, size=size, volume_type=vtype,
            backend=vtype.backend, host=host, availability_zone=zone, metadata=metadata,
            multiattach=vtype.multiattach, snapshot=snapshot, source_volume=source_volume,
            bootable=image is not None or bool(source and source.bootable),
            image_metadata=_image_metadata(image) if image is not None else dict(source.image_metadata if source
                                                                                  else {}),
        )
        if host is None or host.state != HostState.UP:
            reason = ("No valid backend was found. " + (f"The storage host {host.hostname} is not up."
                                                       if host else "There is no storage host."))
            _move(Volume, volume, [VolumeStatus.CREATING], VolumeStatus.ERROR)
            _message(project_id=project.pk, resource_type="VOLUME", resource_id=volume.pk, action="create",
                     reason=reason, request_id=request_id)
            return volume
        spec = _volume_spec(volume, image=image_ref(image=image) if image is not None else None,
                            source_snapshot_id=str(snapshot.pk) if snapshot else None,
                            source_volume_id=str(source_volume.pk) if source_volume else None)
        _cast(host, names.TASK_VOLUME_CREATE, spec.to_dict())
    logger.info("volume %s (%s GiB) is being created on %s", volume.pk, size, host.hostname)
    return volume


def _volume_create_done(result: dict) -> None:
    volume = Volume.objects.select_related("host").filter(pk=result.get("id")).first()
    if volume is None:
        return
    if volume.status == VolumeStatus.DELETING and volume.host is not None:
        # Deleted while it was being made (its server went): the delete may have run first on the
        # storage host, so send it again (delete is idempotent) to leave nothing behind.
        _cast(volume.host, names.TASK_VOLUME_DELETE, _volume_spec(volume).to_dict())
        return
    with transaction.atomic():
        if result.get("ok"):
            moved = _move(Volume, volume, [VolumeStatus.CREATING], VolumeStatus.AVAILABLE)
        else:
            moved = _move(Volume, volume, [VolumeStatus.CREATING], VolumeStatus.ERROR)
            if moved:
                _message(project_id=volume.project_id, resource_type="VOLUME", resource_id=volume.pk,
                         action="create", reason=result.get("error") or "the storage host failed")
    if moved:
        _boot_volume_ready(volume)


def _boot_volume_ready(volume: Volume) -> None:
    """A volume made for a server that is being built: the server may spawn once all are made."""
    pending = Attachment.objects.filter(volume=volume, instance__vm_state=VmState.BUILDING).values_list(
        "instance_id", flat=True)
    if pending:
        from apps.instances.services import instance_volumes_spawn  # the server's build goes on

        for instance_id in pending:
            instance_volumes_spawn(instance_id=instance_id)


# --- volumes: update, metadata, flags ---------------------------------------------------------


def volume_update(*, volume: Volume, user: User | None, name: str | None = None, description: str | None = None,
                  metadata: dict | None = None) -> Volume:
    fields = _name_fields(name, description)
    if metadata is not None:
        fields["metadata"] = check_metadata(metadata)
    _update_fields(volume, fields)
    return volume


def _name_fields(name: str | None, description: str | None) -> dict[str, str]:
    """The checked name and description of an update, those given only."""
    fields = {}
    if name is not None:
        fields["name"] = _check_name(name)
    if description is not None:
        fields["description"] = _check_description(description)
    return fields


def _update_fields(obj, fields: dict) -> None:
    """Write ``fields`` in one UPDATE, not save(): a callback changing the status meanwhile must
    not be overwritten with the status this copy was read with."""
    if fields:
        type(obj).objects.filter(pk=obj.pk).update(updated_at=timezone.now(), **fields)
        for field, value in fields.items():
            setattr(obj, field, value)


def metadata_etag(metadata: dict) -> str:
    """The ETag of a metadata dictionary (Cinder 3.15), the same whatever the key order."""
    return hashlib.md5(json.dumps(metadata, sort_keys=True).encode(), usedforsecurity=False).hexdigest()


def _metadata_change(model, obj, *, metadata: dict, replace: bool, delete_key: str | None,
                     if_match: list[str] | None = None) -> dict[str, str]:
    with transaction.atomic():
        locked = model.objects.select_for_update().get(pk=obj.pk)
        # Under the row lock: a client that read the metadata before another change fails.
        if if_match is not None and metadata_etag(locked.metadata) not in if_match:
            raise PreconditionFailed("The metadata changed since it was read (If-Match).")
        if delete_key is not None:
            if delete_key not in locked.metadata:
                raise NotFound(f"Metadata item was not found: {delete_key}")
            current = {k: v for k, v in locked.metadata.items() if k != delete_key}
        else:
            current = check_metadata(metadata if replace else {**locked.metadata, **check_metadata(metadata)})
        model.objects.filter(pk=obj.pk).update(metadata=current, updated_at=timezone.now())
    obj.metadata = current
    return current


def volume_metadata_set(*, volume: Volume, metadata: dict, replace: bool = False, delete_key: str | None = None,
                        if_match: list[str] | None = None) -> dict[str, str]:
    """Merge (POST), replace (PUT), or delete one key, under a row lock; with ``if_match`` (ETags)
    only if the metadata is still what the client read."""
    return _metadata_change(Volume, volume, metadata=metadata, replace=replace, delete_key=delete_key,
                            if_match=if_match)


def volume_set_bootable(*, volume: Volume, bootable: bool) -> Volume:
    Volume.objects.filter(pk=volume.pk).update(bootable=bool(bootable), updated_at=timezone.now())
    volume.bootable = bool(bootable)
    return volume


def volume_set_read_only(*, volume: Volume, read_only: bool) -> Volume:
    """Later attachments are read-only (the guest cannot write); current ones keep their mode."""
    Volume.objects.filter(pk=volume.pk).update(read_only=bool(read_only), updated_at=timezone.now())
    volume.read_only = bool(read_only)
    return volume


def volume_reset_status(*, volume: Volume, status: str | None = None, attach_status: str | None = None,
                        migration_status: str | None = None) -> Volume:
    """Admin (os-reset_status): set the record's status without asking the backend, to recover from
    a failure the operator has fixed by hand. ``attach_status: detached`` forgets the attachments."""
    if status is None and attach_status is None and migration_status is None:
        raise ValidationError("Must specify 'status', 'attach_status' or 'migration_status' for update.")
    if status is not None and status not in RESET_VOLUME_STATUSES:
        raise ValidationError(f"Invalid input received: status {status!r} is not one of "
                              f"{', '.join(RESET_VOLUME_STATUSES)}.")
    if attach_status is not None and attach_status not in ("attached", "detached"):
        raise ValidationError(f"Invalid input received: attach_status {attach_status!r} must be attached or "
                              "detached.")
    if migration_status is not None and migration_status not in ("none", "migrating", "error", "success"):
        raise ValidationError(f"Invalid input received: migration_status {migration_status!r} is not valid.")
    with transaction.atomic():
        if status is not None:
            Volume.objects.filter(pk=volume.pk).update(status=status, pending_size=None, updated_at=timezone.now())
            volume.status = status
        if attach_status == "detached":
            Attachment.objects.filter(volume=volume).delete()
    return volume


# --- volumes: delete --------------------------------------------------------------------------


def _release_volume(volume: Volume) -> None:
    quota_release(project=volume.project, deltas={"volumes": 1, "gigabytes": volume.size})


def volume_delete(*, volume: Volume, user: User | None, cascade: bool = False, force: bool = False,
                  request_id: str = "") -> None:
    """Delete on the storage host, then the record (and its quota). Refused while attached, with
    snapshots (unless ``cascade``: they are deleted first), or in a transfer. ``force`` (admins)
    also deletes from a busy or failed status."""
    if force and user is not None and not is_cloud_admin(user=user):
        raise PermissionDenied("Policy does not allow volume:force_delete to be performed.")
    transition = VOLUME_TRANSITIONS["force_delete" if force else "delete"]
    with transaction.atomic():
        locked = _locked_volume(volume)
        if locked.attachments.exists() or locked.status not in transition.allowed:
            raise _invalid("volume", DELETE_REFUSED)
        snapshots = list(Snapshot.objects.select_for_update().filter(volume=locked, temporary=False))
        if snapshots and not cascade:
            raise _invalid("volume", DELETE_REFUSED)
        for snap in snapshots:
            if snap.status not in SNAPSHOT_TRANSITIONS["delete"].allowed and not force:
                raise _invalid("volume", f"Snapshot {snap.pk} status must be available or error to cascade the "
                                         f"delete, it is {snap.status}.")
        if Backup.objects.filter(volume=locked, status=BackupStatus.CREATING).exists() or \
                Snapshot.objects.filter(volume=locked, temporary=True).exists():
            raise _invalid("volume", "a backup of it is being made.")
        if locked.host is None:  # never placed: nothing exists on any host
            Volume.objects.filter(pk=locked.pk).delete()
            _release_volume(locked)
            return
        _move(Volume, locked, transition.allowed, VolumeStatus.DELETING)
        volume.status = VolumeStatus.DELETING
        Transfer.objects.filter(volume=locked).delete()
        if snapshots:
            for snap in snapshots:
                _move(Snapshot, snap, SNAPSHOT_TRANSITIONS["force_delete"].allowed, SnapshotStatus.DELETING)
                _cast(locked.host, names.TASK_SNAPSHOT_DELETE, _snapshot_spec(snap, locked).to_dict())
            return  # the last snapshot's delete sends the volume's
        _cast(locked.host, names.TASK_VOLUME_DELETE, _volume_spec(locked).to_dict())


def _volume_delete_done(result: dict) -> None:
    volume = Volume.objects.select_related("project").filter(pk=result.get("id")).first()
    if volume is None:
        return
    with transaction.atomic():
        if result.get("ok"):
            deleted, _ = Volume.objects.filter(pk=volume.pk, status=VolumeStatus.DELETING).delete()
            if deleted:
                _release_volume(volume)
            return
        if _move(Volume, volume, [VolumeStatus.DELETING], VolumeStatus.ERROR_DELETING):
            _message(project_id=volume.project_id, resource_type="VOLUME", resource_id=volume.pk, action="delete",
                     reason=result.get("error") or "the storage host failed")


# --- volumes: extend --------------------------------------------------------------------------


def volume_extend(*, volume: Volume, user: User | None, new_size: int, in_use: bool = False,
                  request_id: str = "") -> Volume:
    """Grow a volume; with ``in_use`` (Cinder 3.42) also an attached one, whose guests are told
    the new size once the storage host has grown it."""
    new_size = _check_size(new_size)
    transition = VOLUME_TRANSITIONS["extend_in_use" if in_use else "extend"]
    with transaction.atomic():
        locked = _locked_volume(volume)
        if new_size <= locked.size:
            raise ValidationError(f"Invalid input received: New size for extend must be greater than current size. "
                                  f"(current: {locked.size}, extended: {new_size}).")
        if locked.status not in transition.allowed:
            raise _invalid("volume", f"Volume {locked.pk} status must be "
                                     f"{' or '.join(transition.allowed)} to extend, but current status is: "
                                     f"{locked.status}.")
        host = _host_up(locked.host, f"volume {locked.pk}")
        quota_reserve(project=locked.project, deltas={"gigabytes": new_size - locked.size})
        _move(Volume, locked, transition.allowed, VolumeStatus.EXTENDING, previous_status=locked.status,
              pending_size=new_size)
        spec = _volume_spec(locked)
        spec.size_gb = new_size
        _cast(host, names.TASK_VOLUME_EXTEND, spec.to_dict())
    volume.status = VolumeStatus.EXTENDING
    return volume


def _volume_extend_done(result: dict) -> None:
    volume = Volume.objects.select_related("project").filter(pk=result.get("id")).first()
    if volume is None or volume.status != VolumeStatus.EXTENDING or not volume.pending_size:
        return
    back = volume.previous_status or VolumeStatus.AVAILABLE
    with transaction.atomic():
        if result.get("ok"):
            if not _move(Volume, volume, [VolumeStatus.EXTENDING], back, size=volume.pending_size, pending_size=None,
                         previous_status=""):
                return
            # The guests of an attached volume learn the new size from their compute hosts.
            for attachment in Attachment.objects.filter(volume=volume, status=AttachStatus.ATTACHED).select_related(
                    "instance__host"):
                if attachment.instance.host is not None:
                    _cast(attachment.instance.host, names.TASK_VOLUME_RESIZED,
                          _attach_spec(attachment, volume).to_dict())
            return
        # An attached volume stays usable (its data is intact); a detached one shows the failure.
        failed = back if back == VolumeStatus.IN_USE else VolumeStatus.ERROR_EXTENDING
        delta = volume.pending_size - volume.size
        if _move(Volume, volume, [VolumeStatus.EXTENDING], failed, pending_size=None, previous_status=""):
            quota_release(project=volume.project, deltas={"gigabytes": delta})
            _message(project_id=volume.project_id, resource_type="VOLUME", resource_id=volume.pk, action="extend",
                     reason=result.get("error") or "the storage host failed")


# --- attachments ------------------------------------------------------------------------------


def _attach_spec(attachment: Attachment, volume: Volume) -> VolumeAttachSpec:
    return VolumeAttachSpec(
        instance_id=str(attachment.instance_id), volume_id=str(volume.pk),
        device=attachment.device.removeprefix("/dev/"),
        connection=VolumeConnection(**attachment.connection) if attachment.connection else None,
        read_only=attachment.mode == "ro", timeout=settings.CLOUDMGR_VOLUME_DETACH_TIMEOUT, size_gb=volume.size,
    )


def _next_device(instance: Instance, wanted: str | None) -> str:
    """The device a new attachment gets: ``wanted`` if free (Nova's ``device``), else the first
    free virtio name after the root disk."""
    used = set(Attachment.objects.filter(instance=instance).values_list("device", flat=True)) | {"/dev/vda"}
    if wanted and _DEVICE.match(wanted) and wanted not in used:
        return wanted
    letters = string.ascii_lowercase
    for name in [f"/dev/vd{c}" for c in letters[1:]] + [f"/dev/vd{a}{b}" for a in letters for b in letters]:
        if name not in used:
            return name
    raise ValidationError("The server has no free device name for another volume.")


def _check_server(instance: Instance, user: User | None, action: str) -> Host | None:
    """The server's host, once its state allows ``action``; None for a shelved server, which has
    no host."""
    if instance.deleted_at or instance.vm_state == VmState.DELETED:
        raise NotFound(f"Instance {instance.pk} could not be found.")
    if instance.locked and user is not None and not is_cloud_admin(user=user):
        raise InvalidState(f"Instance {instance.pk} is locked.")
    if instance.vm_state not in ATTACH_VM_STATES or instance.task_state is not None:
        state = f"task_state {instance.task_state}" if instance.task_state else f"vm_state {instance.vm_state}"
        raise InvalidState(f"Cannot '{action}' instance {instance.pk} while it is in {state}.")
    if instance.vm_state == VmState.SHELVED_OFFLOADED:
        return None
    if instance.host is None or instance.host.state != HostState.UP:
        raise InvalidState(f"Cannot '{action}' instance {instance.pk}: its host is not up.")
    return instance.host


def _still_shelved(instance: Instance, action: str) -> None:
    """Lock a shelved server's row and check it is still shelved with no task: an unshelve that
    began meanwhile has already read the volumes it connects."""
    locked = Instance.objects.select_for_update().filter(
        pk=instance.pk, vm_state=VmState.SHELVED_OFFLOADED, task_state__isnull=True, deleted_at__isnull=True).first()
    if locked is None:
        raise InvalidState(f"Cannot '{action}' instance {instance.pk}: it is no longer shelved and idle.")


def volume_attach(*, volume: Volume, instance: Instance, user: User | None, device: str | None = None,
                  mode: str = "rw", connector: dict | None = None, request_id: str = "") -> Attachment:
    """Attach a volume to a server: the one service behind Cinder's attachments API and Nova's
    os-volume_attachments. The attachment is recorded (``attaching``) first; then the storage
    host exports the volume for the server's host, which hot-plugs it (virtio); the result makes
    the volume ``in-use``. A volume in use takes another attachment only if its type allows
    multiattach. A shelved server's attachment is recorded at once, and connected when it is
    unshelved (Nova 2.20)."""
    if mode not in ("rw", "ro"):
        raise ValidationError(f"Invalid input received: attach mode must be rw or ro, not {mode!r}.")
    if volume.project_id != instance.project_id:
        raise ValidationError(f"Invalid volume: volume {volume.pk} and server {instance.pk} belong to different "
                              "projects.")
    shelved = _check_server(instance, user, "attach_volume") is None
    with transaction.atomic():
        if shelved:
            _still_shelved(instance, "attach_volume")
        locked = _locked_volume(volume)
        if Attachment.objects.filter(volume=locked, instance=instance).exists():
            raise _invalid("volume", f"volume {locked.pk} is already attached to server {instance.pk}.")
        if locked.status == VolumeStatus.IN_USE and not locked.multiattach:
            raise _invalid("volume", f"Volume {locked.pk} status must be available to reserve, but the status is "
                                     "in-use (its type does not allow multiattach).")
        transition = VOLUME_TRANSITIONS["attach_more" if locked.status == VolumeStatus.IN_USE else "attach"]
        if locked.status not in transition.allowed:
            raise _invalid("volume", f"Volume {locked.pk} status must be available to reserve, but the status is "
                                     f"{locked.status}.")
        if locked.read_only:
            mode = "ro"
        _host_up(locked.host, f"volume {locked.pk}")
        if shelved:
            _move(Volume, locked, transition.allowed, VolumeStatus.IN_USE, previous_status=locked.status)
            volume.status = VolumeStatus.IN_USE
            return Attachment.objects.create(
                project_id=locked.project_id, volume=locked, instance=instance, device=_next_device(instance, device),
                status=AttachStatus.ATTACHED, attached_at=timezone.now(), mode=mode,
                connector=connector if isinstance(connector, dict) else {},
            )
        _move(Volume, locked, transition.allowed, VolumeStatus.ATTACHING, previous_status=locked.status)
        attachment = Attachment.objects.create(
            project_id=locked.project_id, volume=locked, instance=instance, host=instance.host,
            device=_next_device(instance, device), status=AttachStatus.ATTACHING, mode=mode,
            connector=connector if isinstance(connector, dict) else {},
        )
        attachment_id = attachment.pk
        transaction.on_commit(lambda: _attach_connect(attachment_id))
    volume.status = VolumeStatus.ATTACHING
    return attachment


def _export(volume: Volume, compute_host: Host) -> VolumeConnection:
    """Ask the volume's storage host how ``compute_host`` reaches it (a synchronous call)."""
    try:
        answer = agent_call(queue=volume.host.queue, task=names.TASK_VOLUME_EXPORT,
                            payload=_volume_spec(volume).to_dict(), host=compute_host.hostname)
    except ServiceUnavailable as exc:
        raise ApplicationError(f"the storage host did not export the volume: {exc.message}") from exc
    if not answer.get("ok"):
        raise ApplicationError(f"the storage host could not export the volume: {answer.get('error')}")
    return VolumeConnection(**answer["connection"])


def _attach_connect(attachment_id) -> None:
    """After the attachment is recorded: export the volume for the server's host, then hot-plug."""
    attachment = Attachment.objects.select_related("volume__host", "instance__host").filter(pk=attachment_id).first()
    if attachment is None or attachment.status != AttachStatus.ATTACHING:
        return
    volume, host = attachment.volume, attachment.instance.host
    if host is None:
        _attach_failed(attachment, "the server has no host")
        return
    try:
        connection = _export(volume, host)
    except ApplicationError as exc:
        _attach_failed(attachment, exc.message)
        return
    with transaction.atomic():
        Attachment.objects.filter(pk=attachment.pk).update(connection=dataclasses.asdict(connection),
                                                            updated_at=timezone.now())
        attachment.connection = dataclasses.asdict(connection)
        _cast(host, names.TASK_VOLUME_ATTACH, _attach_spec(attachment, volume).to_dict())


def _settle_volume(volume: Volume, busy: str) -> None:
    """After an attach or detach finished: in-use while attachments remain, else available."""
    attached = Attachment.objects.filter(volume=volume, status=AttachStatus.ATTACHED).exists()
    _move(Volume, volume, [busy], VolumeStatus.IN_USE if attached else VolumeStatus.AVAILABLE, previous_status="")


def _unexport(volume: Volume) -> None:
    """Stop the volume's export once no server uses it (an NBD export serves one client)."""
    if volume.host is not None and not Attachment.objects.filter(volume=volume).exists():
        _cast(volume.host, names.TASK_VOLUME_UNEXPORT, _volume_spec(volume).to_dict())


def _attach_failed(attachment: Attachment, reason: str) -> None:
    volume = attachment.volume
    with transaction.atomic():
        deleted, _ = Attachment.objects.filter(pk=attachment.pk, status=AttachStatus.ATTACHING).delete()
        if not deleted:
            return
        _settle_volume(volume, VolumeStatus.ATTACHING)
        _message(project_id=volume.project_id, resource_type="VOLUME", resource_id=volume.pk, action="attach",
                 reason=f"server {attachment.instance_id}: {reason}")
        _unexport(volume)
    logger.warning("attaching volume %s to %s failed: %s", volume.pk, attachment.instance_id, reason)


def _attachment_of(result: dict) -> Attachment | None:
    return Attachment.objects.select_related("volume__host", "instance").filter(
        volume_id=result.get("volume_id") or None, instance_id=result.get("instance_id") or None).first()


def _volume_attach_done(result: dict) -> None:
    attachment = _attachment_of(result)
    if attachment is None or attachment.status != AttachStatus.ATTACHING:
        return
    if not result.get("ok"):
        _attach_failed(attachment, result.get("error") or "the compute host failed")
        return
    with transaction.atomic():
        if _move(Attachment, attachment, [AttachStatus.ATTACHING], AttachStatus.ATTACHED,
                 attached_at=timezone.now()):
            _settle_volume(attachment.volume, VolumeStatus.ATTACHING)


def volume_detach(*, attachment: Attachment, user: User | None, request_id: str = "") -> None:
    """Detach (both APIs): the compute host unplugs the volume and waits for the guest to let go
    of it (CLOUDMGR_VOLUME_DETACH_TIMEOUT); then the attachment is gone and the volume available
    (or still in use by its other servers). A server's boot volume stays. A shelved server's
    volume is only recorded, so its detach is done at once."""
    instance = attachment.instance
    if attachment.boot_index == 0:
        raise ValidationError("Invalid volume: Cannot detach a root device volume.")
    host = _check_server(instance, user, "detach_volume")
    with transaction.atomic():
        if host is None:
            _still_shelved(instance, "detach_volume")
        locked = _locked_volume(attachment.volume)
        if attachment.status != AttachStatus.ATTACHED or locked.status != VolumeStatus.IN_USE:
            raise _invalid("volume", f"Volume {locked.pk} must be in-use and attached to detach it, but it is "
                                     f"{locked.status} (attachment {attachment.status}).")
        if host is None:
            Attachment.objects.filter(pk=attachment.pk).delete()
            _settle_volume(locked, VolumeStatus.IN_USE)
            _unexport(locked)
            return
        if not _move(Attachment, attachment, [AttachStatus.ATTACHED], AttachStatus.DETACHING):
            raise _invalid("volume", f"attachment {attachment.pk} is not attached.")
        _move(Volume, locked, [VolumeStatus.IN_USE], VolumeStatus.DETACHING, previous_status=VolumeStatus.IN_USE)
        _cast(host, names.TASK_VOLUME_DETACH, _attach_spec(attachment, locked).to_dict())


def _volume_detach_done(result: dict) -> None:
    attachment = _attachment_of(result)
    if attachment is None or attachment.status != AttachStatus.DETACHING:
        return
    volume = attachment.volume
    with transaction.atomic():
        if result.get("ok"):
            deleted, _ = Attachment.objects.filter(pk=attachment.pk, status=AttachStatus.DETACHING).delete()
            if deleted:
                _settle_volume(volume, VolumeStatus.DETACHING)
                _unexport(volume)
            return
        # The guest still holds the disk: it stays attached, and says why.
        if _move(Attachment, attachment, [AttachStatus.DETACHING], AttachStatus.ATTACHED):
            _settle_volume(volume, VolumeStatus.DETACHING)
            _message(project_id=volume.project_id, resource_type="VOLUME", resource_id=volume.pk, action="detach",
                     reason=f"server {attachment.instance_id}: {result.get('error') or 'the compute host failed'}")


def attachment_update(*, attachment: Attachment, connector: dict) -> Attachment:
    """Cinder's attachment update: record what the client says about its host. cloudmgr plugs
    the volume into the server itself, so the connection is the one it made."""
    if not isinstance(connector, dict):
        raise ValidationError("Invalid input received: connector must be an object.")
    Attachment.objects.filter(pk=attachment.pk).update(connector=connector, updated_at=timezone.now())
    attachment.connector = connector
    return attachment


# --- servers: boot from volume, delete --------------------------------------------------------

PENDING = "pending"


def server_block_devices_create(*, instance: Instance, user: User, project: Project, block_devices: list[dict],
                                request_id: str = "") -> None:
    """Nova's block_device_mapping_v2 for a new server, in its create transaction: each entry
    becomes a volume (made from an image or a snapshot, blank, or an existing one) recorded as
    attached to the server with its boot index; the server spawns once all are available
    (``server_volumes_connect``)."""
    for index, bdm in enumerate(sorted(block_devices, key=lambda b: (b.get("boot_index") is None,
                                                                        b.get("boot_index") or 0))):
        source = bdm["source"]
        if isinstance(source, Volume):
            volume = source
            with transaction.atomic():
                locked = _locked_volume(volume)
                if locked.project_id != project.pk:
                    raise ValidationError(f"Block Device Mapping is Invalid: failed to get volume {volume.pk}.")
                if not _move(Volume, locked, VOLUME_TRANSITIONS["attach"].allowed, VolumeStatus.ATTACHING,
                             previous_status=VolumeStatus.AVAILABLE):
                    raise ValidationError(f"Block Device Mapping is Invalid: volume {volume.pk} is {locked.status}, "
                                          "not available.")
        else:
            volume = volume_create(
                user=user, project=project, size=bdm.get("volume_size"), volume_type=bdm.get("volume_type"),
                image=source if isinstance(source, Image) else None,
                snapshot=source if isinstance(source, Snapshot) else None,
                name="" if bdm.get("boot_index") != 0 else f"{instance.name}-boot", request_id=request_id,
            )
        device = "/dev/vda" if bdm.get("boot_index") == 0 else _next_device(instance, bdm.get("device_name"))
        Attachment.objects.create(
            project=project, volume=volume, instance=instance, device=device, status=AttachStatus.ATTACHING,
            delete_on_termination=bool(bdm.get("delete_on_termination")), boot_index=bdm.get("boot_index"),
        )


def server_volumes_connect(*, instance: Instance) -> str | None:
    """Before a server with volumes spawns on its host: ``PENDING`` while a volume is still being
    made; an error if one failed; else None, once each volume is exported to the host and
    recorded as attached (the domain spec then has them as disks)."""
    attachments = list(Attachment.objects.filter(instance=instance).select_related("volume__host"))
    for attachment in attachments:
        volume = attachment.volume
        if volume.status == VolumeStatus.CREATING:
            return PENDING
        if volume.status == VolumeStatus.ERROR:
            reason = selectors.message_latest(resource_uuid=volume.pk)
            return (f"Volume {volume.pk} could not be made for the server"
                    + (f": {reason.user_message}" if reason else " (it is in error)."))
        if volume.status not in (VolumeStatus.ATTACHING, VolumeStatus.AVAILABLE, VolumeStatus.IN_USE):
            return f"Volume {volume.pk} is {volume.status}: the server cannot use it now."
    for attachment in attachments:
        try:
            connection = _export(attachment.volume, instance.host)
        except ApplicationError as exc:
            return f"Volume {attachment.volume_id}: {exc.message}"
        with transaction.atomic():
            Attachment.objects.filter(pk=attachment.pk).update(
                connection=dataclasses.asdict(connection), host=instance.host, status=AttachStatus.ATTACHED,
                attached_at=timezone.now(), updated_at=timezone.now())
            _move(Volume, attachment.volume, [VolumeStatus.AVAILABLE, VolumeStatus.ATTACHING], VolumeStatus.IN_USE,
                  previous_status="")
    return None


def server_volumes_disconnect(*, instance: Instance) -> None:
    """A server left its host and waits for another (shelved, or an unshelve that failed): its
    volumes stay attached to it (in-use) without a connection, which its next host's export
    gives; an export that no other server holds stops (an NBD export serves one client, and the
    storage host's own guests open the file, which the export would hold)."""
    attachments = Attachment.objects.filter(instance=instance)
    volumes = [a.volume for a in attachments.select_related("volume__host")]
    attachments.update(connection=None, host=None, updated_at=timezone.now())
    for volume in volumes:
        if volume.host is not None and not Attachment.objects.filter(volume=volume).exclude(instance=instance).exists():
            _cast(volume.host, names.TASK_VOLUME_UNEXPORT, _volume_spec(volume).to_dict())


def _has_dependents(volume: Volume) -> bool:
    """Snapshots (a backup's temporary one too) or a backup being made: deleting would lose them."""
    return (Snapshot.objects.filter(volume=volume).exists()
            or Backup.objects.filter(volume=volume, status=BackupStatus.CREATING).exists())


def server_volumes_release(*, instance: Instance) -> None:
    """A server is deleted (its domain is gone): its volumes are detached in the records, and
    those marked ``delete_on_termination`` deleted; the others become available again. As Nova,
    whose delete Cinder refuses then, a volume with snapshots (or a backup being made) is kept."""
    for attachment in Attachment.objects.filter(instance=instance).select_related("volume__host", "volume__project"):
        volume = attachment.volume
        with transaction.atomic():
            Attachment.objects.filter(pk=attachment.pk).delete()
            remaining = Attachment.objects.filter(volume=volume).exists()
            delete = attachment.delete_on_termination and not remaining and volume.host is not None
            if delete and _has_dependents(volume):
                delete = False
                reason = f"server {instance.pk} was deleted, but the volume has snapshots or a backup in progress"
                _message(project_id=volume.project_id, resource_type="VOLUME", resource_id=volume.pk,
                         action="delete", reason=reason)
                logger.warning("volume %s is kept: %s", volume.pk, reason)
            if delete:
                busy = [VolumeStatus.IN_USE, VolumeStatus.ATTACHING, VolumeStatus.DETACHING, VolumeStatus.AVAILABLE,
                        VolumeStatus.CREATING, VolumeStatus.ERROR]
                if _move(Volume, volume, busy, VolumeStatus.DELETING, previous_status=""):
                    _cast(volume.host, names.TASK_VOLUME_DELETE, _volume_spec(volume).to_dict())
                continue
            if volume.status in (VolumeStatus.IN_USE, VolumeStatus.ATTACHING, VolumeStatus.DETACHING):
                _move(Volume, volume, [volume.status], VolumeStatus.IN_USE if remaining else VolumeStatus.AVAILABLE,
                      previous_status="")
            _unexport(volume)


# --- snapshots --------------------------------------------------------------------------------


def _snapshot_spec(snapshot: Snapshot, volume: Volume) -> SnapshotSpec:
    return SnapshotSpec(id=str(snapshot.pk), volume_id=str(volume.pk), backend=volume.backend)


def snapshot_create(*, volume: Volume, user: User, name: str = "", description: str = "", force: bool = False,
                    metadata: dict | None = None, request_id: str = "") -> Snapshot:
    """Snapshot a volume; an attached one only with ``force`` (crash-consistent)."""
    name, description = _check_name(name), _check_description(description)
    metadata = check_metadata(metadata or {})
    transition = VOLUME_TRANSITIONS["snapshot_force" if force else "snapshot"]
    with transaction.atomic():
        locked = _locked_volume(volume)
        if locked.status not in transition.allowed:
            raise _invalid("volume", f"Volume {locked.pk} status must be available, but current status is: "
                                     f"{locked.status}.")
        host = _host_up(locked.host, f"volume {locked.pk}")
        quota_reserve(project=locked.project, deltas={"snapshots": 1, "gigabytes": locked.size})
        snapshot = Snapshot.objects.create(project=locked.project, volume=locked, user=user, name=name,
                                           description=description, size=locked.size, metadata=metadata)
        _cast(host, names.TASK_SNAPSHOT_CREATE, _snapshot_spec(snapshot, locked).to_dict())
    return snapshot


def _snapshot_create_done(result: dict) -> None:
    snapshot = Snapshot.objects.select_related("volume__host").filter(pk=result.get("id")).first()
    if snapshot is None:
        return
    with transaction.atomic():
        if result.get("ok"):
            if _move(Snapshot, snapshot, [SnapshotStatus.CREATING], SnapshotStatus.AVAILABLE):
                if snapshot.temporary:
                    _backup_from_snapshot(snapshot)
                else:
                    transaction.on_commit(lambda: _snapshot_settled(snapshot))
            return
        if not _move(Snapshot, snapshot, [SnapshotStatus.CREATING], SnapshotStatus.ERROR):
            return
        reason = result.get("error") or "the storage host failed"
        if snapshot.temporary:
            backup = Backup.objects.filter(temp_snapshot=snapshot, status=BackupStatus.CREATING).first()
            if backup is not None:
                _backup_failed(backup, reason)
            return
        _message(project_id=snapshot.project_id, resource_type="SNAPSHOT", resource_id=snapshot.pk,
                 action="snapshot_create", reason=reason)
        transaction.on_commit(lambda: _snapshot_settled(snapshot))


def _snapshot_settled(snapshot: Snapshot) -> None:
    """A createImage of a server booted from a volume may wait for this snapshot."""
    from apps.instances.services import volume_snapshot_settled

    volume_snapshot_settled(volume_id=snapshot.volume_id)


def snapshot_update(*, snapshot: Snapshot, name: str | None = None, description: str | None = None) -> Snapshot:
    _update_fields(snapshot, _name_fields(name, description))
    return snapshot


def snapshot_metadata_set(*, snapshot: Snapshot, metadata: dict, replace: bool = False,
                          delete_key: str | None = None) -> dict[str, str]:
    return _metadata_change(Snapshot, snapshot, metadata=metadata, replace=replace, delete_key=delete_key)


def snapshot_reset_status(*, snapshot: Snapshot, status: str) -> Snapshot:
    if status not in RESET_SNAPSHOT_STATUSES:
        raise ValidationError(f"Invalid input received: status {status!r} is not one of "
                              f"{', '.join(RESET_SNAPSHOT_STATUSES)}.")
    Snapshot.objects.filter(pk=snapshot.pk).update(status=status, updated_at=timezone.now())
    snapshot.status = status
    return snapshot


def snapshot_delete(*, snapshot: Snapshot, user: User | None, force: bool = False) -> None:
    """Delete on the storage host, then the record and its quota. Volumes made from it keep
    their data (the backend copes); one still being made from it blocks the delete."""
    transition = SNAPSHOT_TRANSITIONS["force_delete" if force else "delete"]
    with transaction.atomic():
        locked = Snapshot.objects.select_for_update(of=("self",)).select_related("volume__host").get(pk=snapshot.pk)
        if locked.status not in transition.allowed:
            raise _invalid("snapshot", f"Snapshot {locked.pk} status must be available or error, but it is "
                                       f"{locked.status}.")
        if Volume.objects.filter(snapshot=locked, status=VolumeStatus.CREATING).exists():
            raise _invalid("snapshot", f"a volume is being created from snapshot {locked.pk}.")
        host = _host_up(locked.volume.host, f"snapshot {locked.pk}")
        _move(Snapshot, locked, transition.allowed, SnapshotStatus.DELETING)
        _cast(host, names.TASK_SNAPSHOT_DELETE, _snapshot_spec(locked, locked.volume).to_dict())
    snapshot.status = SnapshotStatus.DELETING


def _snapshot_delete_done(result: dict) -> None:
    snapshot = Snapshot.objects.select_related("volume__host", "project").filter(pk=result.get("id")).first()
    if snapshot is None:
        return
    volume = snapshot.volume
    with transaction.atomic():
        if not result.get("ok"):
            if _move(Snapshot, snapshot, [SnapshotStatus.DELETING], SnapshotStatus.ERROR_DELETING):
                reason = result.get("error") or "the storage host failed"
                _message(project_id=snapshot.project_id, resource_type="SNAPSHOT", resource_id=snapshot.pk,
                         action="snapshot_delete", reason=reason)
                if _move(Volume, volume, [VolumeStatus.DELETING], VolumeStatus.ERROR_DELETING):  # a cascade stops
                    _message(project_id=volume.project_id, resource_type="VOLUME", resource_id=volume.pk,
                             action="delete", reason=f"its snapshot {snapshot.pk} could not be deleted: {reason}")
            return
        deleted, _ = Snapshot.objects.filter(pk=snapshot.pk, status=SnapshotStatus.DELETING).delete()
        if not deleted:
            return
        if not snapshot.temporary:
            quota_release(project=snapshot.project, deltas={"snapshots": 1, "gigabytes": snapshot.size})
        # The last snapshot of a cascading delete: now the volume itself.
        if volume.status == VolumeStatus.DELETING and not Snapshot.objects.filter(volume=volume).exists() \
                and volume.host is not None:
            _cast(volume.host, names.TASK_VOLUME_DELETE, _volume_spec(volume).to_dict())


# --- backups ----------------------------------------------------------------------------------


def _backup_spec(backup: Backup, **fields) -> BackupSpec:
    return BackupSpec(id=str(backup.pk), volume_id=str(backup.volume_uuid), backend=backup.backend,
                      size_gb=backup.size, parent_id=str(backup.parent_id) if backup.parent_id else None,
                      snapshot_id=str(backup.snapshot_id) if backup.snapshot_id else None, **fields)


def backup_create(*, volume: Volume, user: User, name: str = "", description: str = "", incremental: bool = False,
                  force: bool = False, snapshot: Snapshot | None = None, temporary: bool = False,
                  request_id: str = "") -> Backup:
    """Back up a volume (or one of its snapshots) into the storage host's backup store, full or
    incremental on the volume's newest backup. An attached volume needs ``force``: it is backed
    up from a temporary snapshot, made first and deleted after."""
    name, description = _check_name(name), _check_description(description)
    with transaction.atomic():
        locked = _locked_volume(volume)
        if snapshot is not None and snapshot.volume_id != locked.pk:
            raise ValidationError(f"Invalid snapshot: snapshot {snapshot.pk} is not of volume {locked.pk}.")
        if locked.status == VolumeStatus.IN_USE and not force and snapshot is None:
            raise _invalid("volume", "Backing up an in-use volume must use the force flag.")
        transition = VOLUME_TRANSITIONS["backup_force"]
        if locked.status not in transition.allowed:
            raise _invalid("volume", f'Volume to be backed up must be available or in-use, but the current status '
                                     f'is "{locked.status}".')
        if snapshot is not None and snapshot.status != SnapshotStatus.AVAILABLE:
            raise _invalid("snapshot", f"Snapshot to be backed up must be available, but the current status is "
                                       f'"{snapshot.status}".')
        host = _host_up(locked.host, f"volume {locked.pk}")
        parent = None
        if incremental:
            parent = selectors.backup_latest(volume=locked)
            if parent is None:
                raise _invalid("backup", "No backups available to do an incremental backup.")
        if not temporary:
            quota_reserve(project=locked.project, deltas={"backups": 1})
        backup = Backup.objects.create(
            project=locked.project, user=user, name=name, description=description, volume_uuid=locked.pk,
            volume=locked, snapshot_id=snapshot.pk if snapshot else None, parent=parent,
            size=snapshot.size if snapshot is not None else locked.size,  # a snapshot keeps its size (Cinder)
            backend=locked.backend, host=host, availability_zone=locked.availability_zone, temporary=temporary,
        )
        _move(Volume, locked, transition.allowed, VolumeStatus.BACKING_UP, previous_status=locked.status)
        if snapshot is None and locked.previous_status == VolumeStatus.IN_USE:
            temp = Snapshot.objects.create(project=locked.project, volume=locked, user=user, size=locked.size,
                                           name=f"backup-{backup.pk}", temporary=True)
            Backup.objects.filter(pk=backup.pk).update(temp_snapshot=temp, snapshot_id=temp.pk)
            _cast(host, names.TASK_SNAPSHOT_CREATE, _snapshot_spec(temp, locked).to_dict())
        else:
            _cast(host, names.TASK_BACKUP_CREATE, _backup_spec(backup).to_dict())
    return backup


def _backup_from_snapshot(snapshot: Snapshot) -> None:
    """The temporary snapshot of an attached volume exists: back it up."""
    backup = Backup.objects.select_related("host").filter(temp_snapshot=snapshot, status=BackupStatus.CREATING).first()
    if backup is not None:
        _cast(backup.host, names.TASK_BACKUP_CREATE, _backup_spec(backup).to_dict())


def _drop_temp_snapshot(backup: Backup) -> None:
    snapshot = backup.temp_snapshot
    if snapshot is not None and _move(Snapshot, snapshot, [SnapshotStatus.AVAILABLE, SnapshotStatus.ERROR,
                                                           SnapshotStatus.CREATING], SnapshotStatus.DELETING):
        _cast(backup.host, names.TASK_SNAPSHOT_DELETE, _snapshot_spec(snapshot, snapshot.volume).to_dict())


def _volume_back_from(volume_id, busy: str) -> None:
    volume = Volume.objects.filter(pk=volume_id).first()
    if volume is not None and volume.status == busy:
        _move(Volume, volume, [busy], volume.previous_status or VolumeStatus.AVAILABLE, previous_status="")


def _backup_failed(backup: Backup, reason: str) -> None:
    if not _move(Backup, backup, [BackupStatus.CREATING], BackupStatus.ERROR, fail_reason=reason):
        return
    _volume_back_from(backup.volume_id, VolumeStatus.BACKING_UP)
    _drop_temp_snapshot(backup)
    if backup.temporary:
        _revert_failed(backup, reason)
        return
    _message(project_id=backup.project_id, resource_type="BACKUP", resource_id=backup.pk, action="backup_create",
             reason=reason)


def _backup_measures(result: dict) -> dict:
    """What the storage host measured: ``size`` in bytes of what it read, recorded as Cinder's
    ``size`` in GiB (rounded up: a restore makes a volume of that size, which must hold every
    byte), and ``object_count``, the chunks it stored. A value missing or malformed keeps the
    record's."""
    measures = {}
    size, objects = result.get("size"), result.get("object_count")
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        measures["size"] = math.ceil(size / GIB)
    if isinstance(objects, int) and not isinstance(objects, bool) and objects >= 0:
        measures["object_count"] = objects
    return measures


def _backup_create_done(result: dict) -> None:
    backup = Backup.objects.select_related("host", "temp_snapshot__volume").filter(pk=result.get("id")).first()
    if backup is None:
        return
    with transaction.atomic():
        if not result.get("ok"):
            _backup_failed(backup, result.get("error") or "the storage host failed")
            return
        if not _move(Backup, backup, [BackupStatus.CREATING], BackupStatus.AVAILABLE, data_timestamp=backup.created_at,
                     fail_reason="", **_backup_measures(result)):
            return
        _volume_back_from(backup.volume_id, VolumeStatus.BACKING_UP)
        _drop_temp_snapshot(backup)
        if backup.temporary and backup.restore_volume_id:
            _revert_restore(backup)


def backup_update(*, backup: Backup, name: str | None = None, description: str | None = None) -> Backup:
    _update_fields(backup, _name_fields(name, description))
    return backup


def backup_reset_status(*, backup: Backup, status: str) -> Backup:
    if status not in RESET_BACKUP_STATUSES:
        raise ValidationError(f"Invalid input received: status {status!r} must be available or error.")
    Backup.objects.filter(pk=backup.pk).update(status=status, updated_at=timezone.now())
    backup.status = status
    return backup


def backup_restore(*, backup: Backup, user: User, project: Project, volume: Volume | None = None,
                   name: str | None = None, request_id: str = "") -> Volume:
    """Restore a backup into ``volume`` (available, at least as large, on the backup's storage
    host) or into a new volume of the backup's size (counted in the quota)."""
    with transaction.atomic():
        locked_backup = Backup.objects.select_for_update(of=("self",)).select_related("host").get(pk=backup.pk)
        if locked_backup.status not in BACKUP_TRANSITIONS["restore"].allowed:
            raise _invalid("backup", f"Backup status must be available, but it is {locked_backup.status}.")
        host = _host_up(locked_backup.host, f"backup {backup.pk}")
        if volume is None:
            vtype = volume_type_default_ensure()
            quota_reserve(project=project, deltas={"volumes": 1, "gigabytes": locked_backup.size})
            volume = Volume.objects.create(
                project=project, user=user, name=_check_name(name) if name else f"restore_backup_{backup.pk}",
                size=locked_backup.size, volume_type=vtype, backend=locked_backup.backend, host=host,
                availability_zone=locked_backup.availability_zone, status=VolumeStatus.RESTORING_BACKUP,
                previous_status=VolumeStatus.AVAILABLE,
            )
        else:
            locked = _locked_volume(volume)
            if locked.size < locked_backup.size:
                raise _invalid("volume", f"volume size {locked.size} is too small to restore backup of size "
                                         f"{locked_backup.size}.")
            if locked.host_id != host.pk or locked.backend != locked_backup.backend:
                raise _invalid("volume", f"volume {locked.pk} is not in the backend of backup {backup.pk}.")
            if not _move(Volume, locked, VOLUME_TRANSITIONS["restore"].allowed, VolumeStatus.RESTORING_BACKUP,
                         previous_status=VolumeStatus.AVAILABLE):
                raise _invalid("volume", f"Volume to be restored to must be available, but it is {locked.status}.")
            volume = locked
        _move(Backup, locked_backup, BACKUP_TRANSITIONS["restore"].allowed, BackupStatus.RESTORING,
              restore_volume=volume)
        _cast(host, names.TASK_BACKUP_RESTORE, _backup_spec(locked_backup, restore_volume_id=str(volume.pk)).to_dict())
    return volume


def _backup_restore_done(result: dict) -> None:
    backup = Backup.objects.select_related("host", "restore_volume").filter(pk=result.get("id")).first()
    if backup is None or backup.status != BackupStatus.RESTORING:
        return
    volume = backup.restore_volume
    with transaction.atomic():
        if not _move(Backup, backup, [BackupStatus.RESTORING], BackupStatus.AVAILABLE, restore_volume=None):
            return
        if backup.temporary:
            _revert_done(backup, volume, result)
            return
        if volume is None:
            return
        if result.get("ok"):
            _move(Volume, volume, [VolumeStatus.RESTORING_BACKUP], VolumeStatus.AVAILABLE, previous_status="")
            return
        if _move(Volume, volume, [VolumeStatus.RESTORING_BACKUP], VolumeStatus.ERROR_RESTORING, previous_status=""):
            _message(project_id=volume.project_id, resource_type="VOLUME", resource_id=volume.pk,
                     action="backup_restore",
                     reason=f"backup {backup.pk}: {result.get('error') or 'the storage host failed'}")


def backup_delete(*, backup: Backup, user: User | None, force: bool = False) -> None:
    transition = BACKUP_TRANSITIONS["force_delete" if force else "delete"]
    with transaction.atomic():
        locked = Backup.objects.select_for_update(of=("self",)).select_related("host").get(pk=backup.pk)
        if locked.status not in transition.allowed:
            raise _invalid("backup", f"Backup status must be available or error, but it is {locked.status}.")
        if Backup.objects.filter(parent=locked).exists():
            raise _invalid("backup", "Incremental backups exist for this backup.")
        host = _host_up(locked.host, f"backup {locked.pk}")
        _move(Backup, locked, transition.allowed, BackupStatus.DELETING)
        _cast(host, names.TASK_BACKUP_DELETE, _backup_spec(locked).to_dict())
    backup.status = BackupStatus.DELETING


def _backup_delete_done(result: dict) -> None:
    backup = Backup.objects.select_related("project").filter(pk=result.get("id")).first()
    if backup is None:
        return
    with transaction.atomic():
        if result.get("ok"):
            deleted, _ = Backup.objects.filter(pk=backup.pk, status=BackupStatus.DELETING).delete()
            if deleted and not backup.temporary:
                quota_release(project=backup.project, deltas={"backups": 1})
            return
        reason = result.get("error") or "the storage host failed"
        if _move(Backup, backup, [BackupStatus.DELETING], BackupStatus.ERROR, fail_reason=reason) and \
                not backup.temporary:
            _message(project_id=backup.project_id, resource_type="BACKUP", resource_id=backup.pk,
                     action="backup_delete", reason=reason)


# --- revert to a snapshot (Cinder 3.40) -------------------------------------------------------


def volume_revert(*, volume: Volume, snapshot: Snapshot, user: User, request_id: str = "") -> Volume:
    """Put the volume's data back as it was in its newest snapshot. The storage host has no
    revert of its own: the snapshot's data is backed up (a temporary backup) and restored into the
    volume, as Cinder's generic revert copies it; the volume is ``reverting`` meanwhile."""
    with transaction.atomic():
        locked = _locked_volume(volume)
        if snapshot.volume_id != locked.pk:
            raise ValidationError(f"Invalid snapshot: snapshot {snapshot.pk} is not of volume {locked.pk}.")
        latest = Snapshot.objects.filter(volume=locked, temporary=False).order_by("-created_at").first()
        if latest is None or latest.pk != snapshot.pk:
            raise _invalid("snapshot", f"Snapshot {snapshot.pk} is not the latest one of volume {locked.pk}.")
        if snapshot.status != SnapshotStatus.AVAILABLE:
            raise _invalid("snapshot", f"Snapshot {snapshot.pk} status must be available, it is {snapshot.status}.")
        if locked.size != snapshot.size:
            raise _invalid("volume", f"Volume {locked.pk} size ({locked.size}) must be equal to snapshot size "
                                     f"({snapshot.size}) to revert.")
        if locked.status not in VOLUME_TRANSITIONS["revert"].allowed:
            raise _invalid("volume", f"Volume {locked.pk} status must be available, but it is {locked.status}.")
        host = _host_up(locked.host, f"volume {locked.pk}")
        backup = Backup.objects.create(
            project=locked.project, user=user, name=f"revert-{locked.pk}", volume_uuid=locked.pk, volume=locked,
            snapshot_id=snapshot.pk, size=locked.size, backend=locked.backend, host=host, temporary=True,
            availability_zone=locked.availability_zone, restore_volume=locked,
        )
        _move(Volume, locked, VOLUME_TRANSITIONS["revert"].allowed, VolumeStatus.REVERTING,
              previous_status=VolumeStatus.AVAILABLE)
        _cast(host, names.TASK_BACKUP_CREATE, _backup_spec(backup).to_dict())
    volume.status = VolumeStatus.REVERTING
    return volume


def _revert_restore(backup: Backup) -> None:
    """The snapshot's data is in the temporary backup: write it into the volume."""
    if _move(Backup, backup, [BackupStatus.AVAILABLE], BackupStatus.RESTORING):
        _cast(backup.host, names.TASK_BACKUP_RESTORE,
              _backup_spec(backup, restore_volume_id=str(backup.restore_volume_id)).to_dict())


def _drop_temp_backup(backup: Backup) -> None:
    if _move(Backup, backup, [BackupStatus.AVAILABLE, BackupStatus.ERROR], BackupStatus.DELETING):
        _cast(backup.host, names.TASK_BACKUP_DELETE, _backup_spec(backup).to_dict())


def _revert_done(backup: Backup, volume: Volume | None, result: dict) -> None:
    _drop_temp_backup(backup)
    if volume is None:
        return
    if result.get("ok"):
        _move(Volume, volume, [VolumeStatus.REVERTING], VolumeStatus.AVAILABLE, previous_status="")
    else:
        _revert_failed(backup, result.get("error") or "the storage host failed", volume)


def _revert_failed(backup: Backup, reason: str, volume: Volume | None = None) -> None:
    volume = volume or Volume.objects.filter(pk=backup.restore_volume_id or backup.volume_id).first()
    Backup.objects.filter(pk=backup.pk).update(restore_volume=None)
    _drop_temp_backup(backup)
    if volume is not None and _move(Volume, volume, [VolumeStatus.REVERTING], VolumeStatus.ERROR,
                                    previous_status=""):
        _message(project_id=volume.project_id, resource_type="VOLUME", resource_id=volume.pk, action="revert",
                 reason=reason)


# --- transfers --------------------------------------------------------------------------------


def _key_hash(salt: str, key: str) -> str:
    return hashlib.sha256(f"{salt}{key}".encode()).hexdigest()


def transfer_create(*, volume: Volume, user: User, name: str = "") -> tuple[Transfer, str]:
    """Offer a volume (available, with its snapshots available) to another project: the volume
    waits (``awaiting-transfer``) until the transfer is accepted or deleted. The auth key is
    returned once; only a salted hash of it is kept."""
    name = _check_name(name)
    with transaction.atomic():
        locked = _locked_volume(volume)
        if locked.status not in VOLUME_TRANSITIONS["transfer"].allowed:
            raise _invalid("volume", f"status must be available, it is {locked.status}.")
        if locked.snapshots.exclude(status=SnapshotStatus.AVAILABLE).exists():
            raise _invalid("snapshot", f"every snapshot of volume {locked.pk} must be available to transfer it.")
        _move(Volume, locked, VOLUME_TRANSITIONS["transfer"].allowed, VolumeStatus.AWAITING_TRANSFER)
        salt, key = secrets.token_hex(8), secrets.token_hex(8)
        transfer = Transfer.objects.create(project=locked.project, volume=locked, user=user, name=name, salt=salt,
                                           key_hash=_key_hash(salt, key))
    return transfer, key


def transfer_delete(*, transfer: Transfer) -> None:
    with transaction.atomic():
        Transfer.objects.filter(pk=transfer.pk).delete()
        _move(Volume, transfer.volume, [VolumeStatus.AWAITING_TRANSFER], VolumeStatus.AVAILABLE)


def transfer_accept(*, transfer: Transfer, auth_key: str, user: User, project: Project) -> Transfer:
    """Take the volume (and its snapshots) into ``project``: the usage moves from one project's
    quota to the other's, under their row locks."""
    if not isinstance(auth_key, str) or not hmac.compare_digest(_key_hash(transfer.salt, auth_key),
                                                                transfer.key_hash):
        raise ValidationError(f"Invalid auth key: Attempt to transfer {transfer.pk} with invalid auth key.")
    if transfer.project_id == project.pk:
        raise ValidationError(f"Invalid volume: volume {transfer.volume_id} already belongs to project "
                              f"{project.pk.hex}.")
    with transaction.atomic():
        volume = _locked_volume(transfer.volume)
        if not Transfer.objects.filter(pk=transfer.pk).exists() or volume.status != VolumeStatus.AWAITING_TRANSFER:
            raise NotFound(f"Transfer {transfer.pk} could not be found.")
        snapshots = list(Snapshot.objects.filter(volume=volume, temporary=False))
        gigabytes = volume.size + sum(s.size for s in snapshots)
        deltas = {"volumes": 1, "gigabytes": gigabytes, "snapshots": len(snapshots)}
        quota_reserve(project=project, deltas=deltas)
        quota_release(project=volume.project, deltas=deltas)
        _move(Volume, volume, [VolumeStatus.AWAITING_TRANSFER], VolumeStatus.AVAILABLE, project=project, user=user)
        Snapshot.objects.filter(volume=volume).update(project=project, updated_at=timezone.now())
        Transfer.objects.filter(pk=transfer.pk).delete()
    return transfer


# --- messages ---------------------------------------------------------------------------------


def message_delete(*, message: Message) -> None:
    message.delete()


# --- agent results ----------------------------------------------------------------------------


def _resized_done(result: dict) -> None:
    if not result.get("ok"):
        volume = Volume.objects.filter(pk=result.get("volume_id") or None).first()
        if volume is not None:
            _message(project_id=volume.project_id, resource_type="VOLUME", resource_id=volume.pk, action="resized",
                     reason=f"server {result.get('instance_id')}: {result.get('error')}")


def _logged(result: dict) -> None:
    if not result.get("ok"):
        logger.warning("%s of %s failed: %s", result.get("task"), result.get("id"), result.get("error"))


_RESULTS = {
    names.TASK_VOLUME_CREATE: _volume_create_done,
    names.TASK_VOLUME_DELETE: _volume_delete_done,
    names.TASK_VOLUME_EXTEND: _volume_extend_done,
    names.TASK_VOLUME_UNEXPORT: _logged,
    names.TASK_SNAPSHOT_CREATE: _snapshot_create_done,
    names.TASK_SNAPSHOT_DELETE: _snapshot_delete_done,
    names.TASK_BACKUP_CREATE: _backup_create_done,
    names.TASK_BACKUP_RESTORE: _backup_restore_done,
    names.TASK_BACKUP_DELETE: _backup_delete_done,
    names.TASK_VOLUME_ATTACH: _volume_attach_done,
    names.TASK_VOLUME_DETACH: _volume_detach_done,
    names.TASK_VOLUME_RESIZED: _resized_done,
}


def volume_task_done(*, result: dict) -> None:
    """Apply an agent's result (any volume task), only if its object still waits for it."""
    handler = _RESULTS.get(result.get("task") if isinstance(result, dict) else None)
    if handler is None:
        logger.warning("ignoring a volume task result of unknown shape: %r", result)
        return
    handler(result)
