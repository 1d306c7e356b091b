"""Reads of the block storage domain. Every query takes the viewer: a project sees its own
objects, a cloud admin every project's (when asked); another project's object is NotFound."""

import uuid

from django.conf import settings
from django.db.models import Count, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from agents.specs import DiskSpec, VolumeConnection
from apps.hosts.models import Host, HostStatus
from apps.tenants.models import Project, Quota, User
from apps.tenants.selectors import is_cloud_admin
from apps.volumes.models import Attachment, Backup, Message, Snapshot, Transfer, Volume, VolumeType
from apps.volumes.states import AttachStatus, BackupStatus
from cloudmgr.exceptions import NotFound
from cloudmgr.models import filter_pk

QUOTA_RESOURCES = ("volumes", "gigabytes", "snapshots", "backups")


def viewer_is_admin(user: User | None) -> bool:
    """A command (no user) acts as the operator."""
    return user is None or is_cloud_admin(user=user)


def storage_host() -> Host | None:
    """The host whose storage agent holds new volumes: CLOUDMGR_STORAGE_HOST, else the first
    enabled host registered (on a single box, the host that runs the agent)."""
    if settings.CLOUDMGR_STORAGE_HOST:
        return Host.objects.filter(hostname=settings.CLOUDMGR_STORAGE_HOST).first()
    return Host.objects.filter(status=HostStatus.ENABLED).order_by("created_at", "hostname").first()


def _uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _scoped(queryset: QuerySet, *, user: User | None, project: Project | None, all_projects: bool,
            project_id: str | None) -> QuerySet:
    if all_projects and viewer_is_admin(user):
        return queryset.filter(project_id=_uuid(project_id)) if project_id else queryset
    return queryset.filter(project=project)


def _get(queryset: QuerySet, *, user: User | None, project: Project | None, object_id, kind: str):
    """One object by id: the project's own, or any project's for an admin; else NotFound."""
    obj = filter_pk(queryset, str(object_id)).first()
    if obj is None or (obj.project_id != getattr(project, "pk", None) and not viewer_is_admin(user)):
        raise NotFound(f"{kind} {object_id} could not be found.")
    return obj


# --- volume types -----------------------------------------------------------------------------


def volume_type_list(*, user: User | None, project: Project | None) -> QuerySet[VolumeType]:
    """Public types, and the private ones shared with the project; every type for an admin."""
    types = VolumeType.objects.all()
    if viewer_is_admin(user):
        return types
    return types.filter(Q(is_public=True) | Q(projects=project)).distinct()


def volume_type_default() -> VolumeType:
    vtype = VolumeType.objects.filter(name=settings.CLOUDMGR_VOLUME_DEFAULT_TYPE).first()
    if vtype is None:
        raise NotFound(f"Default volume type {settings.CLOUDMGR_VOLUME_DEFAULT_TYPE} could not be found.")
    return vtype


def volume_type_get(*, user: User | None, project: Project | None, name_or_id: str) -> VolumeType:
    """A type by id or name ("default" is the default type, as Cinder's GET /types/default)."""
    if name_or_id == "default":
        return volume_type_default()
    types = volume_type_list(user=user, project=project)
    vtype = filter_pk(types, name_or_id).first() or types.filter(name=name_or_id).first()
    if vtype is None:
        raise NotFound(f"Volume type {name_or_id} could not be found.")
    return vtype


# --- volumes ----------------------------------------------------------------------------------


def _attachments_prefetch() -> Prefetch:
    return Prefetch("attachments", queryset=Attachment.objects.select_related("host", "instance").order_by("created_at"))


def volume_list(*, user: User | None, project: Project | None, all_projects: bool = False,
                project_id: str | None = None) -> QuerySet[Volume]:
    volumes = _scoped(Volume.objects.all(), user=user, project=project, all_projects=all_projects,
                      project_id=project_id)
    return volumes.select_related("volume_type", "host").prefetch_related(_attachments_prefetch())


def volume_get(*, user: User | None, project: Project | None, volume_id) -> Volume:
    return _get(volume_list(user=user, project=project, all_projects=True), user=user, project=project,
                object_id=volume_id, kind="Volume")


def volume_summary(*, volumes: QuerySet[Volume]) -> dict:
    totals = volumes.aggregate(total_count=Count("pk"), total_size=Coalesce(Sum("size"), 0))
    metadata: dict[str, list[str]] = {}
    for item in volumes.values_list("metadata", flat=True):
        for key, value in (item or {}).items():
            if value not in metadata.setdefault(key, []):
                metadata[key].append(value)
    return {**totals, "metadata": metadata}


# --- snapshots --------------------------------------------------------------------------------


def snapshot_list(*, user: User | None, project: Project | None, all_projects: bool = False,
                  project_id: str | None = None) -> QuerySet[Snapshot]:
    snapshots = Snapshot.objects.filter(temporary=False)
    return _scoped(snapshots, user=user, project=project, all_projects=all_projects,
                   project_id=project_id).select_related("volume")


def snapshot_get(*, user: User | None, project: Project | None, snapshot_id) -> Snapshot:
    return _get(snapshot_list(user=user, project=project, all_projects=True), user=user, project=project,
                object_id=snapshot_id, kind="Snapshot")


# --- attachments ------------------------------------------------------------------------------


def attachment_list(*, user: User | None, project: Project | None, all_projects: bool = False,
                    project_id: str | None = None) -> QuerySet[Attachment]:
    attachments = _scoped(Attachment.objects.all(), user=user, project=project, all_projects=all_projects,
                          project_id=project_id)
    return attachments.select_related("volume", "instance", "host")


def attachment_get(*, user: User | None, project: Project | None, attachment_id) -> Attachment:
    return _get(attachment_list(user=user, project=project, all_projects=True), user=user, project=project,
                object_id=attachment_id, kind="Attachment")


def server_attachments(*, instance) -> QuerySet[Attachment]:
    """The volumes attached to a server (Nova's os-volume_attachments), boot volume first."""
    return Attachment.objects.filter(instance=instance).select_related("volume").order_by("device")


def server_attachment_get(*, instance, volume_id) -> Attachment:
    attachment = server_attachments(instance=instance).filter(volume_id=_uuid(volume_id)).first()
    if attachment is None:
        raise NotFound(f"volume_id not found: {volume_id}")
    return attachment


def servers_volumes(*, instance_ids: list) -> dict[str, list[tuple[str, bool]]]:
    """Nova's ``volumes_attached`` of many servers in one query: server id -> [(volume id,
    delete_on_termination)]."""
    found: dict[str, list[tuple[str, bool]]] = {str(i): [] for i in instance_ids}
    rows = Attachment.objects.filter(instance_id__in=instance_ids).order_by("device").values_list(
        "instance_id", "volume_id", "delete_on_termination")
    for instance_id, volume_id, delete in rows:
        found.setdefault(str(instance_id), []).append((str(volume_id), delete))
    return found


def server_has_volumes(*, instance) -> bool:
    return Attachment.objects.filter(instance=instance).exists()


def server_boot_volume(*, instance) -> Volume | None:
    attachment = Attachment.objects.filter(instance=instance, boot_index=0).select_related("volume").first()
    return attachment.volume if attachment else None


def server_volume_disks(*, instance) -> tuple[DiskSpec | None, list[DiskSpec]]:
    """The server's volumes as disks of its domain: (its boot volume as the root disk, or None;
    the other attached volumes with the target device each was attached as). Only volumes whose
    export is known (attached, or connected for a boot) are disks."""
    root, others = None, []
    attachments = Attachment.objects.filter(instance=instance, connection__isnull=False).exclude(
        status__in=[AttachStatus.ERROR_ATTACHING]).select_related("volume").order_by("device")
    for attachment in attachments:
        disk = DiskSpec(name=str(attachment.volume_id), size_gb=attachment.volume.size,
                        connection=VolumeConnection(**attachment.connection),
                        device=attachment.device.removeprefix("/dev/"))
        if attachment.boot_index == 0:
            disk.name = "root"
            root = disk
        else:
            others.append(disk)
    return root, others


# --- backups ----------------------------------------------------------------------------------


def backup_list(*, user: User | None, project: Project | None, all_projects: bool = False,
                project_id: str | None = None) -> QuerySet[Backup]:
    backups = _scoped(Backup.objects.filter(temporary=False), user=user, project=project,
                      all_projects=all_projects, project_id=project_id)
    return backups.annotate(dependents=Count("children"))


def backup_get(*, user: User | None, project: Project | None, backup_id) -> Backup:
    return _get(backup_list(user=user, project=project, all_projects=True), user=user, project=project,
                object_id=backup_id, kind="Backup")


def backup_latest(*, volume: Volume) -> Backup | None:
    """The newest available backup of a volume: the parent of an incremental one."""
    return (Backup.objects.filter(volume=volume, status=BackupStatus.AVAILABLE, temporary=False)
            .order_by("-data_timestamp", "-created_at").first())


# --- transfers --------------------------------------------------------------------------------


def transfer_list(*, user: User | None, project: Project | None, all_projects: bool = False) -> QuerySet[Transfer]:
    return _scoped(Transfer.objects.all(), user=user, project=project, all_projects=all_projects,
                   project_id=None).select_related("volume")


def transfer_get(*, user: User | None, project: Project | None, transfer_id) -> Transfer:
    return _get(transfer_list(user=user, project=project, all_projects=True), user=user, project=project,
                object_id=transfer_id, kind="Transfer")


def transfer_for_accept(*, transfer_id) -> Transfer:
    """Any project may accept a transfer it knows the id and key of."""
    transfer = filter_pk(Transfer.objects.select_related("volume", "project"), str(transfer_id)).first()
    if transfer is None:
        raise NotFound(f"Transfer {transfer_id} could not be found.")
    return transfer


# --- messages ---------------------------------------------------------------------------------


def message_list(*, user: User | None, project: Project | None, all_projects: bool = False) -> QuerySet[Message]:
    from django.utils import timezone

    return _scoped(Message.objects.filter(expires_at__gt=timezone.now()), user=user, project=project,
                   all_projects=all_projects, project_id=None)


def message_get(*, user: User | None, project: Project | None, message_id) -> Message:
    return _get(message_list(user=user, project=project, all_projects=True), user=user, project=project,
                object_id=message_id, kind="Message")


def message_latest(*, resource_uuid) -> Message | None:
    """Why the last operation on an object failed, for the portal."""
    return Message.objects.filter(resource_uuid=resource_uuid).order_by("-created_at").first()


# --- quotas -----------------------------------------------------------------------------------


def volume_quota_usage(*, project: Project) -> dict[str, tuple[int, int]]:
    """resource -> (limit, in use) of the block storage quotas."""
    rows = Quota.objects.filter(project=project, resource__in=QUOTA_RESOURCES).values_list("resource", "limit",
                                                                                            "in_use")
    found = {resource: (limit, in_use) for resource, limit, in_use in rows}
    return {resource: found.get(resource, (-1, 0)) for resource in QUOTA_RESOURCES}
