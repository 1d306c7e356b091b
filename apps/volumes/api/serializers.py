"""Cinder v3 response bodies (and Nova's volume attachment bodies), at the request's
microversion, and the parsing of request bodies that need more than a dict lookup."""

from apps.images.selectors import image_get
from apps.volumes import selectors
from apps.volumes.models import MULTIATTACH_SPEC, Attachment, Backup, Message, Snapshot, Transfer, Volume, VolumeType
from cloudmgr.api.microversions import Version, in_span
from cloudmgr.api.versions import link, public_url
from cloudmgr.api.viewsets import only_keys
from cloudmgr.exceptions import NotFound, ValidationError

BASE_VERSION = Version(3, 0)

# Extra specs a user (not only an admin) sees (Cinder's user-visible specs).
USER_VISIBLE_SPECS = (MULTIATTACH_SPEC,)


def _time(value) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


def _links(project_id: str, collection: str, object_id) -> list[dict]:
    return [link("self", public_url(f"volume/v3/{project_id}/{collection}/{object_id}")),
            link("bookmark", public_url(f"volume/{project_id}/{collection}/{object_id}"))]


def _hex(value) -> str:
    return value.hex if hasattr(value, "hex") else str(value)


# --- volumes ----------------------------------------------------------------------------------


def volume_summary(volume: Volume) -> dict:
    return {"id": str(volume.pk), "name": volume.name, "links": _links(_hex(volume.project_id), "volumes", volume.pk)}


def attachment_in_volume(attachment: Attachment) -> dict:
    """An attachment as the volume body lists it."""
    return {
        "id": str(attachment.volume_id), "attachment_id": str(attachment.pk), "volume_id": str(attachment.volume_id),
        "server_id": str(attachment.instance_id), "host_name": attachment.host.hostname if attachment.host else None,
        "device": attachment.device, "attached_at": _time(attachment.attached_at),
    }


def volume_detail(volume: Volume, *, version: Version = BASE_VERSION, is_admin: bool = False) -> dict:
    attached = [a for a in volume.attachments.all() if a.status in ("attached", "detaching")]
    body = {
        **volume_summary(volume),
        "description": volume.description or None,
        "status": volume.status,
        "size": volume.size,
        "availability_zone": volume.availability_zone,
        "created_at": _time(volume.created_at),
        "updated_at": _time(volume.updated_at),
        "attachments": [attachment_in_volume(a) for a in attached],
        "bootable": "true" if volume.bootable else "false",
        "encrypted": False,
        "metadata": dict(volume.metadata or {}),
        "multiattach": volume.multiattach,
        "replication_status": None,
        "consistencygroup_id": None,
        "snapshot_id": str(volume.snapshot_id) if volume.snapshot_id else None,
        "source_volid": str(volume.source_volume_id) if volume.source_volume_id else None,
        "user_id": _hex(volume.user_id),
        "volume_type": volume.volume_type.name,
        "os-vol-tenant-attr:tenant_id": _hex(volume.project_id),
        "migration_status": None,
    }
    if volume.image_metadata:
        body["volume_image_metadata"] = dict(volume.image_metadata)
    if is_admin:
        host = volume.host.hostname if volume.host else None
        body["os-vol-host-attr:host"] = f"{host}@{volume.backend}#{volume.backend}" if host else None
        body["os-vol-mig-status-attr:migstat"] = None
        body["os-vol-mig-status-attr:name_id"] = None
        if in_span(version, "3.21"):
            body["provider_id"] = None
    if in_span(version, "3.13"):
        body["group_id"] = None
    return body


# --- snapshots --------------------------------------------------------------------------------


def snapshot_body(snapshot: Snapshot, *, version: Version = BASE_VERSION, detail: bool = True) -> dict:
    body = {
        "id": str(snapshot.pk), "name": snapshot.name, "description": snapshot.description or None,
        "status": snapshot.status, "size": snapshot.size, "volume_id": str(snapshot.volume_id),
        "created_at": _time(snapshot.created_at), "updated_at": _time(snapshot.updated_at),
        "metadata": dict(snapshot.metadata or {}),
    }
    if detail:
        body["os-extended-snapshot-attributes:progress"] = "100%" if snapshot.status == "available" else "0%"
        body["os-extended-snapshot-attributes:project_id"] = _hex(snapshot.project_id)
    if in_span(version, "3.14"):
        body["group_snapshot_id"] = None
    if in_span(version, "3.41"):
        body["user_id"] = _hex(snapshot.user_id)
    return body


# --- backups ----------------------------------------------------------------------------------


def backup_summary(backup: Backup) -> dict:
    return {"id": str(backup.pk), "name": backup.name, "links": _links(_hex(backup.project_id), "backups", backup.pk)}


def backup_detail(backup: Backup, *, version: Version = BASE_VERSION) -> dict:
    dependents = getattr(backup, "dependents", None)
    if dependents is None:
        dependents = backup.children.count()
    body = {
        **backup_summary(backup),
        "description": backup.description or None,
        "status": backup.status,
        "availability_zone": backup.availability_zone,
        "volume_id": str(backup.volume_uuid),
        "snapshot_id": str(backup.snapshot_id) if backup.snapshot_id and backup.temp_snapshot_id is None else None,
        "size": backup.size,
        "object_count": backup.object_count,
        "container": f"backups/{backup.host.hostname}" if backup.host_id and backup.host else None,
        "created_at": _time(backup.created_at),
        "updated_at": _time(backup.updated_at),
        "fail_reason": backup.fail_reason or None,
        "is_incremental": backup.parent_id is not None,
        "has_dependent_backups": bool(dependents),
        "data_timestamp": _time(backup.data_timestamp or backup.created_at),
    }
    if in_span(version, "3.18"):
        body["os-backup-project-attr:project_id"] = _hex(backup.project_id)
    return body


# --- attachments (Cinder 3.27) ------------------------------------------------------------------


def connection_info(attachment: Attachment) -> dict | None:
    connection = attachment.connection
    if not connection:
        return None
    data = {k: v for k, v in connection.items() if k != "driver" and v is not None}
    return {"driver_volume_type": connection.get("driver"), "data": data}


def attachment_summary(attachment: Attachment) -> dict:
    return {"id": str(attachment.pk), "status": attachment.status, "instance": str(attachment.instance_id),
            "volume_id": str(attachment.volume_id)}


def attachment_detail(attachment: Attachment) -> dict:
    return {**attachment_summary(attachment), "attached_at": _time(attachment.attached_at), "detached_at": None,
            "attach_mode": attachment.mode, "connection_info": connection_info(attachment)}


# --- Nova's os-volume_attachments -------------------------------------------------------------


def volume_attachment_nova(attachment: Attachment, *, version) -> dict:
    body = {"id": str(attachment.volume_id), "serverId": str(attachment.instance_id),
            "volumeId": str(attachment.volume_id), "device": attachment.device}
    if in_span(version, "2.70"):
        body["tag"] = None
    if in_span(version, "2.79"):
        body["delete_on_termination"] = attachment.delete_on_termination
    return body


# --- transfers --------------------------------------------------------------------------------


def transfer_summary(transfer: Transfer) -> dict:
    return {"id": str(transfer.pk), "name": transfer.name, "volume_id": str(transfer.volume_id),
            "links": _links(_hex(transfer.project_id), "os-volume-transfer", transfer.pk)}


def transfer_detail(transfer: Transfer, auth_key: str | None = None) -> dict:
    body = {**transfer_summary(transfer), "created_at": _time(transfer.created_at)}
    if auth_key is not None:
        body["auth_key"] = auth_key
    return body


# --- volume types -----------------------------------------------------------------------------


def volume_type_body(vtype: VolumeType, *, is_admin: bool) -> dict:
    specs = dict(vtype.extra_specs or {})
    if not is_admin:
        specs = {k: v for k, v in specs.items() if k in USER_VISIBLE_SPECS}
    return {"id": str(vtype.pk), "name": vtype.name, "description": vtype.description or None,
            "is_public": vtype.is_public, "os-volume-type-access:is_public": vtype.is_public,
            "extra_specs": specs, "qos_specs_id": None}


# --- messages (Cinder 3.3) --------------------------------------------------------------------


def message_body(message: Message) -> dict:
    return {
        "id": str(message.pk), "event_id": message.event_id, "user_message": message.user_message,
        "message_level": message.message_level, "resource_type": message.resource_type,
        "resource_uuid": str(message.resource_uuid) if message.resource_uuid else None,
        "request_id": message.request_id or None, "created_at": _time(message.created_at),
        "guaranteed_until": _time(message.expires_at),
        "links": _links(_hex(message.project_id), "messages", message.pk),
    }


# --- requests ---------------------------------------------------------------------------------


def optional_bool(value, name: str) -> bool:
    """Cinder's boolean body fields: JSON booleans, or the strings true/false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise ValidationError(f"Invalid input for field/attribute {name}. Value: {value}. It must be a boolean.")


def optional_int(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValidationError(f"Invalid input for field/attribute {name}. Value: {value}. It must be an integer.")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"Invalid input for field/attribute {name}. Value: {value}. It must be an "
                              "integer.") from None


BDM_KEYS = {"boot_index", "uuid", "source_type", "destination_type", "volume_size", "delete_on_termination",
            "device_name", "volume_type", "disk_bus", "device_type", "guest_format", "tag", "no_device",
            "volume_id", "snapshot_id", "image_id"}


def block_device_mapping_v2(value) -> list[dict]:
    """Nova's block_device_mapping_v2 entries as plain dicts: ``source_type`` (image, volume,
    snapshot, blank), ``uuid``, ``boot_index`` (int or None), ``volume_size``,
    ``delete_on_termination``, ``device_name``, ``volume_type``. Entries for local disks (an image
    booted as today, destination local) are left out: the server's image is its root disk."""
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValidationError("Invalid input for field/attribute block_device_mapping_v2: it must be a list of "
                              "objects.")
    parsed, boots = [], 0
    for item in value:
        only_keys(item, BDM_KEYS, "block_device_mapping_v2")
        source = item.get("source_type")
        destination = item.get("destination_type") or ("volume" if source in ("volume", "snapshot") else "local")
        if source not in ("image", "volume", "snapshot", "blank"):
            raise ValidationError(f"Block Device Mapping is Invalid: source_type {source!r} is not one of image, "
                                  "volume, snapshot, blank.")
        if destination not in ("volume", "local"):
            raise ValidationError(f"Block Device Mapping is Invalid: destination_type {destination!r}.")
        boot_index = item.get("boot_index")
        if boot_index in ("", "none", "None"):
            boot_index = None
        boot_index = optional_int(boot_index, "boot_index")
        if destination == "local":
            if source != "image" or boot_index != 0:
                raise ValidationError("Block Device Mapping is Invalid: only the image may be a local disk (as "
                                      "the boot disk); ephemeral and swap disks come from the flavor.")
            continue
        if boot_index == 0:
            boots += 1
        uuid_value = item.get("uuid") or item.get(f"{source}_id")
        if source != "blank" and not uuid_value:
            raise ValidationError(f"Block Device Mapping is Invalid: a {source} source needs its uuid.")
        size = optional_int(item.get("volume_size"), "volume_size")
        if source == "blank" and not size:
            raise ValidationError("Block Device Mapping is Invalid: a blank volume needs a volume_size.")
        device = item.get("device_name")
        if device is not None and not isinstance(device, str):
            raise ValidationError("Invalid input for field/attribute device_name: it must be a string.")
        parsed.append({
            "source_type": source, "uuid": str(uuid_value) if uuid_value else None, "boot_index": boot_index,
            "volume_size": size, "device_name": device, "volume_type": item.get("volume_type"),
            "delete_on_termination": optional_bool(item.get("delete_on_termination", False),
                                                   "delete_on_termination"),
        })
    if boots > 1:
        raise ValidationError("Block Device Mapping is Invalid: Boot sequence for the instance and image/block "
                              "device mapping combination is not valid.")
    return parsed


def resolve_block_devices(*, user, project, block_devices: list[dict], count: int = 1) -> list[dict]:
    """Nova's parsed block devices with their sources looked up (the image, snapshot or volume;
    the volume type): a reference the project cannot see is a 400, as Nova's."""
    if count > 1 and any(bdm["source_type"] == "volume" for bdm in block_devices):
        raise ValidationError("Cannot attach one or more volumes to multiple instances.")
    resolved = []
    for bdm in block_devices:
        source_type, uuid = bdm["source_type"], bdm["uuid"]
        try:
            if source_type == "image":
                source = image_get(user=user, project=project, name_or_id=uuid)
            elif source_type == "volume":
                source = selectors.volume_get(user=user, project=project, volume_id=uuid)
            elif source_type == "snapshot":
                source = selectors.snapshot_get(user=user, project=project, snapshot_id=uuid)
            else:
                source = None
            vtype = (selectors.volume_type_get(user=user, project=project, name_or_id=str(bdm["volume_type"]))
                     if bdm.get("volume_type") else None)
        except NotFound as exc:
            raise ValidationError(f"Block Device Mapping is Invalid: failed to get {source_type} {uuid}: "
                                  f"{exc.message}") from None
        resolved.append({**bdm, "source": source, "volume_type": vtype})
    return resolved


def server_body_volumes(volumes: list[tuple[str, bool]], *, version) -> list[dict]:
    """Nova's ``os-extended-volumes:volumes_attached`` (``delete_on_termination`` from 2.3)."""
    if in_span(version, "2.3"):
        return [{"id": volume_id, "delete_on_termination": delete} for volume_id, delete in volumes]
    return [{"id": volume_id} for volume_id, _ in volumes]

