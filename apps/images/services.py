"""Writes of the image service (Glance): records, data, sharing, imports.

An image's data goes queued -> saving -> active (an upload), or queued -> uploading -> importing
-> active (an interoperable import: glance-direct after staging, or web-download). Every path
streams in constant memory through `uploads.stream_into`: hashed (MD5 and SHA-512), inspected
(the first bytes while streaming, the whole file before it becomes active), held against the
project's quota while it arrives, and written to the store, which publishes it atomically. A
failed or interrupted upload goes back to `queued` with nothing stored and nothing reserved.

Quotas are per project, from settings: CLOUDMGR_IMAGE_QUOTA_COUNT images and
CLOUDMGR_IMAGE_QUOTA_BYTES bytes (-1: unlimited), checked under a lock on the project's row (an
IMMEDIATE transaction on SQLite), and answered 413 as Glance does.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.images import inspector, qemu
from apps.images.models import (
    ContainerFormat,
    DiskFormat,
    Image,
    ImageMember,
    ImageStatus,
    ImageTag,
    MemberStatus,
    Visibility,
)
from apps.images.selectors import image_can_modify, image_usage
from apps.images.stores import get_store
from apps.images.uploads import CHUNK, Body, stream_into
from apps.tenants.models import Project, User
from apps.tenants.selectors import is_cloud_admin
from cloudmgr.exceptions import (
    ApplicationError,
    Conflict,
    InvalidState,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    ValidationError,
)

logger = logging.getLogger(__name__)

MAX_PROPERTIES = 128
MAX_TAGS = 128
MAX_MEMBERS = 128
MAX_PROPERTY_VALUE = 65535
# While data streams in, storage quota is reserved ahead in steps of this size.
RESERVE_STEP = 64 << 20

IMPORT_METHODS = ("glance-direct", "web-download")

BASE_ATTRS = {
    "name", "visibility", "protected", "os_hidden", "min_disk", "min_ram", "disk_format", "container_format",
    "tags", "owner",
}
READ_ONLY_ATTRS = {
    "id", "status", "created_at", "updated_at", "size", "virtual_size", "checksum", "os_hash_algo",
    "os_hash_value", "self", "file", "schema", "direct_url", "locations", "stores",
}
RESERVED_ATTRS = {"deleted", "deleted_at", "location", "properties"}
# The SDK's aliases, should a client send them as keys.
_ALIASES = {"is_protected": "protected", "is_hidden": "os_hidden", "owner_id": "owner"}


class ImageQuotaExceeded(QuotaExceeded):
    """Glance answers 413 for image quotas (count and storage)."""

    status_code = 413
    title = "Request Entity Too Large"


class ImageGone(ApplicationError):
    status_code = 410
    title = "Gone"


class UnsupportedMediaType(ApplicationError):
    status_code = 415
    title = "Unsupported Media Type"


# --- attributes -------------------------------------------------------------------------------


def _check_key(key: str) -> None:
    if key in READ_ONLY_ATTRS:
        raise PermissionDenied(f"Attribute '{key}' is read-only.")
    if key in RESERVED_ATTRS or key.startswith("os_glance"):
        raise PermissionDenied(f"Attribute '{key}' is reserved.")
    if not key or len(key) > 255:
        raise ValidationError("Property names are 1 to 255 characters long.")


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValidationError(f"Invalid value for '{key}': {value!r} is not a boolean.")


def _int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        else:
            raise ValidationError(f"Invalid value for '{key}': {value!r} is not an integer.")
    if value < 0 or value > 2**31 - 1:
        raise ValidationError(f"Invalid value for '{key}': {value} is out of range.")
    return value


def _choice(key: str, value: Any, choices: Iterable[str], *, nullable: bool = True) -> str:
    if value is None and nullable:
        return ""
    if value not in set(choices):
        raise ValidationError(f"Invalid value for '{key}': {value!r}; use one of {', '.join(choices)}.")
    return value


def _tags(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValidationError("Invalid value for 'tags': a list of strings is expected.")
    tags = list(dict.fromkeys(value))
    for tag in tags:
        if not tag or len(tag) > 255:
            raise ValidationError("Tags are 1 to 255 characters long.")
    if len(tags) > MAX_TAGS:
        raise ImageQuotaExceeded(f"Maximum number of tags exceeded ({MAX_TAGS}).")
    return tags


def _clean_base(key: str, value: Any) -> Any:
    if key == "name":
        if value is None:
            return ""
        if not isinstance(value, str) or len(value) > 255:
            raise ValidationError("Invalid value for 'name': a string of at most 255 characters is expected.")
        return value
    if key == "visibility":
        return _choice(key, value, Visibility.values, nullable=False)
    if key in ("protected", "os_hidden"):
        return _bool(key, value)
    if key in ("min_disk", "min_ram"):
        return _int(key, value)
    if key == "disk_format":
        return _choice(key, value, DiskFormat.values)
    if key == "container_format":
        return _choice(key, value, ContainerFormat.values)
    if key == "tags":
        return _tags(value)
    if key == "owner":
        if not isinstance(value, str):
            raise ValidationError("Invalid value for 'owner'.")
        return value
    raise AssertionError(key)


def _clean_property(key: str, value: Any) -> str:
    _check_key(key)
    if not isinstance(value, str):
        raise ValidationError(f"Invalid value for property '{key}': a string is expected.")
    if len(value) > MAX_PROPERTY_VALUE:
        raise ValidationError(f"The value of property '{key}' is too long.")
    return value


def _owner_project(*, user: User, project: Project, owner: str | None) -> Project:
    if owner in (None, project.pk.hex, str(project.pk)):
        return project
    if not is_cloud_admin(user=user):
        raise PermissionDenied(f"You are not permitted to create or move images owned by '{owner}'.")
    try:
        return Project.objects.get(pk=uuid.UUID(owner))
    except (ValueError, Project.DoesNotExist):
        raise ValidationError(f"There is no project {owner}.") from None


def _check_publicize(*, user: User, visibility: str) -> None:
    if visibility == Visibility.PUBLIC and not is_cloud_admin(user=user):
        raise PermissionDenied("You are not authorized to complete publicize_image action.")


def _lock_project(project_id) -> None:
    """Serialise quota decisions of one project (a no-op lock on SQLite, whose IMMEDIATE
    transactions serialise writers anyway)."""
    list(Project.objects.select_for_update().filter(pk=project_id).values_list("pk", flat=True))


def _check_count_quota(project: Project) -> None:
    limit = settings.CLOUDMGR_IMAGE_QUOTA_COUNT
    if limit < 0:
        return
    count, _ = image_usage(project=project)
    if count >= limit:
        raise ImageQuotaExceeded(f"Maximum number of images exceeded: project {project.name} may have {limit}.")


def _set_tags(image: Image, tags: list[str]) -> None:
    ImageTag.objects.filter(image=image).exclude(value__in=tags).delete()
    existing = set(ImageTag.objects.filter(image=image).values_list("value", flat=True))
    ImageTag.objects.bulk_create([ImageTag(image=image, value=t) for t in tags if t not in existing])


def _normalise(attrs: dict) -> dict:
    return {_ALIASES.get(key, key): value for key, value in attrs.items()}


def image_create(*, user: User, project: Project, attrs: dict[str, Any]) -> Image:
    """Record a new image (queued, no data). `attrs` are Glance's create body: base attributes,
    `id`, `owner`, `tags`, and free-form string properties."""
    attrs = _normalise(attrs)
    image_id = attrs.pop("id", None)
    if image_id is not None:
        try:
            image_id = uuid.UUID(str(image_id))
        except ValueError:
            raise ValidationError(f"Invalid image id {image_id!r}: a UUID is expected.") from None
    owner = _owner_project(user=user, project=project, owner=attrs.pop("owner", None))
    base, properties = {}, {}
    for key, value in attrs.items():
        if key in BASE_ATTRS:
            base[key] = _clean_base(key, value)
        else:
            properties[key] = _clean_property(key, value)
    if len(properties) > MAX_PROPERTIES:
        raise ImageQuotaExceeded(f"Maximum number of image properties exceeded ({MAX_PROPERTIES}).")
    tags = base.pop("tags", [])
    base.setdefault("visibility", Visibility.SHARED)
    _check_publicize(user=user, visibility=base["visibility"])
    with transaction.atomic():
        _lock_project(owner.pk)
        _check_count_quota(owner)
        fields = {**base, "project": owner, "properties": properties}
        if image_id is not None:
            if Image.objects.filter(pk=image_id).exists():
                raise Conflict(f"An image with identifier {image_id} already exists")
            fields["id"] = image_id
        image = Image.objects.create(**fields)
        _set_tags(image, tags)
    logger.info("image %s (%s) created in project %s", image.id, image.name, owner.name)
    return image


@dataclass
class PatchOp:
    """One JSON Patch operation on an image: add, replace or remove of a top-level key."""

    op: str
    key: str
    value: Any = None


def _check_modify(*, user: User, project: Project, image: Image) -> None:
    if not image_can_modify(user=user, project=project, image=image):
        raise PermissionDenied(f"You are not permitted to modify image {image.id}: it belongs to another project.")


def image_update(*, user: User, project: Project, image: Image, changes: list[PatchOp]) -> Image:
    """Apply JSON Patch operations (Glance's semantics): base attributes are added or replaced,
    never removed; properties are added, replaced (409 if missing) and removed (409 if missing)."""
    _check_modify(user=user, project=project, image=image)
    with transaction.atomic():
        image = Image.objects.select_for_update().get(pk=image.pk)
        if image.status == ImageStatus.DELETED:
            raise NotFound(f"No image found with ID {image.id}")
        base: dict[str, Any] = {}
        properties = dict(image.properties)
        tags = None
        for change in changes:
            key = _ALIASES.get(change.key, change.key)
            if change.op not in ("add", "replace", "remove"):
                raise ValidationError(f"Invalid operation: {change.op}")
            if key in BASE_ATTRS:
                if change.op == "remove":
                    raise PermissionDenied(f"Attribute '{key}' cannot be removed.")
                value = _clean_base(key, change.value)
                if key == "tags":
                    tags = value
                else:
                    base[key] = value
                continue
            _check_key(key)
            if change.op == "remove":
                if key not in properties:
                    raise Conflict(f"Property {key} does not exist.")
                del properties[key]
            else:
                if change.op == "replace" and key not in properties:
                    raise Conflict(f"Property {key} does not exist.")
                properties[key] = _clean_property(key, change.value)
        if len(properties) > MAX_PROPERTIES:
            raise ImageQuotaExceeded(f"Maximum number of image properties exceeded ({MAX_PROPERTIES}).")
        for key in ("disk_format", "container_format"):
            if key in base and base[key] != getattr(image, key) and image.status != ImageStatus.QUEUED:
                raise PermissionDenied(f"Attribute {key} can be only replaced for a queued image.")
        if "visibility" in base and base["visibility"] != image.visibility:
            _check_publicize(user=user, visibility=base["visibility"])
        if "owner" in base:
            owner = _owner_project(user=user, project=project, owner=base.pop("owner"))
            if owner.pk != image.project_id:
                if not is_cloud_admin(user=user):
                    raise PermissionDenied("Only cloud admins may give an image to another project.")
                base["project"] = owner
        for key, value in base.items():
            setattr(image, key, value)
        image.properties = properties
        image.save()
        if tags is not None:
            _set_tags(image, tags)
    return image


def image_delete(*, user: User, project: Project, image: Image) -> None:
    """Delete an image (204); a protected one is refused (403). Its data and staged data go once
    the deletion commits; an upload still streaming into it then fails (410)."""
    _check_modify(user=user, project=project, image=image)
    if image.protected:
        raise PermissionDenied(f"Image {image.id} is protected and cannot be deleted.")
    with transaction.atomic():
        updated = Image.objects.filter(pk=image.pk, protected=False).exclude(status=ImageStatus.DELETED).update(
            status=ImageStatus.DELETED, reserved_bytes=0, updated_at=timezone.now()
        )
        if not updated:
            raise NotFound(f"No image found with ID {image.id}")
        ImageMember.objects.filter(image=image).delete()
        image_id = str(image.id)
        transaction.on_commit(lambda: _delete_data(image_id))
    logger.info("image %s deleted", image.id)


def _delete_data(image_id: str) -> None:
    store = get_store()
    store.delete(image_id)
    store.delete(image_id, staging=True)


def image_deactivate(*, user: User, project: Project, image: Image) -> Image:
    _check_modify(user=user, project=project, image=image)
    if image.status == ImageStatus.DEACTIVATED:
        return image
    if not Image.objects.filter(pk=image.pk, status=ImageStatus.ACTIVE).update(
        status=ImageStatus.DEACTIVATED, updated_at=timezone.now()
    ):
        raise PermissionDenied(f"Not allowed to deactivate image in status '{image.status}'")
    image.refresh_from_db()
    return image


def image_reactivate(*, user: User, project: Project, image: Image) -> Image:
    _check_modify(user=user, project=project, image=image)
    if image.status == ImageStatus.ACTIVE:
        return image
    if not Image.objects.filter(pk=image.pk, status=ImageStatus.DEACTIVATED).update(
        status=ImageStatus.ACTIVE, updated_at=timezone.now()
    ):
        raise PermissionDenied(f"Not allowed to reactivate image in status '{image.status}'")
    image.refresh_from_db()
    return image


def image_tag_add(*, user: User, project: Project, image: Image, tag: str) -> None:
    _check_modify(user=user, project=project, image=image)
    tag = _tags([tag])[0]
    with transaction.atomic():
        if ImageTag.objects.filter(image=image, value=tag).exists():
            return
        if ImageTag.objects.filter(image=image).count() >= MAX_TAGS:
            raise ImageQuotaExceeded(f"Maximum number of tags exceeded ({MAX_TAGS}).")
        ImageTag.objects.create(image=image, value=tag)
        Image.objects.filter(pk=image.pk).update(updated_at=timezone.now())


def image_tag_remove(*, user: User, project: Project, image: Image, tag: str) -> None:
    _check_modify(user=user, project=project, image=image)
    deleted, _ = ImageTag.objects.filter(image=image, value=tag).delete()
    if not deleted:
        raise NotFound(f"Tag {tag} not found")
    Image.objects.filter(pk=image.pk).update(updated_at=timezone.now())


# --- members ----------------------------------------------------------------------------------


def image_member_create(*, user: User, project: Project, image: Image, member_id: str) -> ImageMember:
    """Share a `shared` image with another project (the owner only); it starts `pending`."""
    _check_modify(user=user, project=project, image=image)
    if image.visibility != Visibility.SHARED:
        raise PermissionDenied(f"Only shared images have members; image {image.id} is {image.visibility}.")
    try:
        member_project = Project.objects.get(pk=uuid.UUID(str(member_id)))
    except (ValueError, Project.DoesNotExist):
        raise ValidationError(f"There is no project {member_id}.") from None
    if member_project.pk == image.project_id:
        raise ValidationError("An image's owner cannot be one of its members.")
    with transaction.atomic():
        if ImageMember.objects.filter(image=image).count() >= MAX_MEMBERS:
            raise ImageQuotaExceeded(f"Maximum number of image members exceeded ({MAX_MEMBERS}).")
        try:
            with transaction.atomic():
                member = ImageMember.objects.create(image=image, project=member_project)
        except IntegrityError:
            raise Conflict(f"Project {member_project.pk.hex} is already a member of image {image.id}.") from None
    return member


def image_member_update(*, user: User, project: Project, member: ImageMember, status: str) -> ImageMember:
    """Accept, reject (or set back to pending) an image shared with the caller's project. Only
    the member project decides; not even the owner may."""
    if status not in MemberStatus.values:
        raise ValidationError(f"Invalid status {status!r}; use one of {', '.join(MemberStatus.values)}.")
    if member.project_id != project.pk:
        raise PermissionDenied("Only the member project may change its membership status.")
    member.status = status
    member.save(update_fields=["status", "updated_at"])
    return member


def image_member_delete(*, user: User, project: Project, member: ImageMember) -> None:
    _check_modify(user=user, project=project, image=member.image)
    member.delete()


# --- data: quotas while streaming -------------------------------------------------------------


class _Room:
    """Says whether an image may hold `total` bytes, reserving storage quota ahead in steps (one
    short transaction per RESERVE_STEP), so that concurrent uploads of a project can never
    together exceed its quota. Also records the progress the portal shows."""

    def __init__(self, image: Image, statuses: tuple[str, ...]):
        self.image = image
        self.statuses = statuses
        self.reserved = 0

    def __call__(self, total: int) -> None:
        cap = settings.CLOUDMGR_IMAGE_SIZE_CAP
        if 0 <= cap < total:
            raise ImageQuotaExceeded(f"The image is larger than the maximum image size of {cap} bytes.")
        if total <= self.reserved:
            return
        self.reserved = self._reserve(needed=total, wanted=total + RESERVE_STEP)

    def _reserve(self, *, needed: int, wanted: int) -> int:
        limit = settings.CLOUDMGR_IMAGE_QUOTA_BYTES
        with transaction.atomic():
            _lock_project(self.image.project_id)
            grant = wanted
            if limit >= 0:
                _, used = image_usage(project=self.image.project, exclude=self.image)
                available = limit - used
                if available < needed:
                    raise ImageQuotaExceeded(
                        f"Denying attempt to upload image because it exceeds the quota: the image needs "
                        f"{needed} bytes and project {self.image.project.name} has "
                        f"{max(available, 0)} of its {limit} bytes left."
                    )
                grant = min(wanted, available)
            updated = Image.objects.filter(pk=self.image.pk, status__in=self.statuses).update(
                reserved_bytes=grant, progress_bytes=needed, updated_at=timezone.now()
            )
        if not updated:
            raise ImageGone(f"Image {self.image.id} was deleted during the upload.")
        return grant


@dataclass
class _Stored:
    size: int
    md5: str
    sha512: str
    disk_format: str
    virtual_size: int


def _inspect_file(path: Path, *, size: int, disk_format: str) -> tuple[str, int]:
    """The whole-file inspection, then qemu-img's opinion (only on what passed). -> (format, virtual size)"""
    with path.open("rb") as f:
        found = inspector.inspect_as(f, size=size, disk_format=disk_format)
    return found.disk_format, qemu.check(path, found.disk_format, found.virtual_size)


def _stream_to_store(
    *, image: Image, chunks: Iterable[bytes], declared_size: int | None, staging: bool, statuses: tuple[str, ...]
) -> _Stored:
    """Stream data into the store (or the staging area), inspected and counted; the whole file
    is inspected before it is published. On any error nothing is left."""
    room = _Room(image, statuses)
    if declared_size:
        room(declared_size)  # refuse at once what cannot fit, before reading a byte
    declared = image.disk_format or None
    with get_store().writer(str(image.id), staging=staging) as writer:
        streamed = stream_into(chunks, writer=writer, disk_format=declared, ensure_room=room)
        if declared_size is not None and streamed.size != declared_size:
            raise ValidationError(f"The upload has {streamed.size} bytes, not the {declared_size} announced.")
        if staging:
            fmt, virtual_size = declared or "", 0
            if streamed.size == 0:
                raise inspector.InspectionError("The image is empty.")
        else:
            fmt, virtual_size = _inspect_file(writer.partial, size=streamed.size, disk_format=declared)
        writer.commit()
    return _Stored(streamed.size, streamed.md5, streamed.sha512, fmt, virtual_size)


def _claim(image: Image, *, to: str, from_: tuple[str, ...] = (ImageStatus.QUEUED,)) -> None:
    if not Image.objects.filter(pk=image.pk, status__in=from_).update(
        status=to, reserved_bytes=0, progress_bytes=0, import_error="", updated_at=timezone.now()
    ):
        image.refresh_from_db(fields=["status"])
        raise InvalidState(f"Image status transition from {image.status} to {to} is not allowed")


def _activate(image: Image, stored: _Stored, *, from_: str) -> Image:
    updated = Image.objects.filter(pk=image.pk, status=from_).update(
        status=ImageStatus.ACTIVE,
        size=stored.size,
        virtual_size=stored.virtual_size,
        disk_format=stored.disk_format,
        checksum=stored.md5,
        os_hash_algo="sha512",
        os_hash_value=stored.sha512,
        reserved_bytes=0,
        progress_bytes=stored.size,
        import_method="",
        import_error="",
        updated_at=timezone.now(),
    )
    if not updated:
        _delete_data(str(image.id))
        raise ImageGone(f"Image {image.id} was deleted during the upload.")
    image.refresh_from_db()
    logger.info("image %s is active: %s bytes, %s", image.id, stored.size, stored.disk_format)
    return image


def _reset(image: Image, *, from_: tuple[str, ...], error: str = "") -> None:
    Image.objects.filter(pk=image.pk, status__in=from_).update(
        status=ImageStatus.QUEUED, reserved_bytes=0, progress_bytes=0, import_method="", import_error=error,
        updated_at=timezone.now(),
    )


def _require_formats(image: Image) -> None:
    if not image.disk_format or not image.container_format:
        raise ValidationError("Properties disk_format, container_format must be set prior to saving data.")


def image_upload(*, user: User | None, project: Project | None, image: Image, body: Body,
                 size_hint: int | None = None, ticket: str | None = None) -> Image:
    """PUT /v2/images/{id}/file: stream the body into the store; the image is active once every
    byte is stored, inspected and checksummed. On any failure (a refused format, the quota, the
    client going away) it is back to `queued`, with no data and no reservation left. The caller
    is a user of the owner project (or a cloud admin), or holds an upload ticket for this image
    (a compute host uploading a snapshot)."""
    if ticket is not None:
        from apps.images import tickets

        if tickets.ticket_image_id(ticket=ticket, action=tickets.UPLOAD) != str(image.pk):
            raise PermissionDenied("The upload ticket is for another image.")
    else:
        _check_modify(user=user, project=project, image=image)
    _require_formats(image)
    _claim(image, to=ImageStatus.SAVING)
    try:
        stored = _stream_to_store(
            image=image, chunks=body.chunks, declared_size=body.length if body.length is not None else size_hint,
            staging=False, statuses=(ImageStatus.SAVING,),
        )
    except BaseException:
        _reset(image, from_=(ImageStatus.SAVING,))
        raise
    return _activate(image, stored, from_=ImageStatus.SAVING)


def image_activate_without_data(*, image: Image) -> Image:
    """Make a queued image active with no data (size 0): an image that only maps volume
    snapshots, made by createImage of a server booted from a volume (Nova activates these with
    an empty upload). Its download answers 204, as for an image without data."""
    _claim(image, to=ImageStatus.SAVING)
    empty = _Stored(size=0, md5=hashlib.md5(b"", usedforsecurity=False).hexdigest(),
                    sha512=hashlib.sha512(b"").hexdigest(), disk_format=image.disk_format, virtual_size=0)
    return _activate(image, empty, from_=ImageStatus.SAVING)


def image_stage(*, user: User, project: Project, image: Image, body: Body, size_hint: int | None = None) -> Image:
    """PUT /v2/images/{id}/stage: stream the data into the staging area (status `uploading`),
    for a glance-direct import. The first bytes are inspected already; the whole file at import."""
    _check_modify(user=user, project=project, image=image)
    _claim(image, to=ImageStatus.UPLOADING)
    try:
        stored = _stream_to_store(
            image=image, chunks=body.chunks, declared_size=body.length if body.length is not None else size_hint,
            staging=True, statuses=(ImageStatus.UPLOADING,),
        )
    except BaseException:
        _reset(image, from_=(ImageStatus.UPLOADING,))
        raise
    # The staged bytes stay counted against the quota until the import is done.
    Image.objects.filter(pk=image.pk).update(reserved_bytes=stored.size, progress_bytes=stored.size)
    image.refresh_from_db()
    return image


def image_import(*, user: User, project: Project, image: Image, method: str, uri: str | None = None) -> Image:
    """POST /v2/images/{id}/import (202): start an import task. glance-direct imports what was
    staged; web-download fetches `uri` from an allowed host (apps/images/webdownload.py)."""
    from apps.images import tasks, webdownload

    _check_modify(user=user, project=project, image=image)
    if method not in import_methods():
        raise ValidationError(f"Import method {method} is not supported; use one of {', '.join(import_methods())}.")
    _require_formats(image)
    if method == "glance-direct":
        if image.status != ImageStatus.UPLOADING or not get_store().exists(str(image.id), staging=True):
            raise InvalidState(f"Image {image.id} has no staged data to import (it is {image.status}).")
        _claim(image, to=ImageStatus.IMPORTING, from_=(ImageStatus.UPLOADING,))
        Image.objects.filter(pk=image.pk).update(
            import_method=method, reserved_bytes=get_store().size(str(image.id), staging=True)
        )
    else:
        if not isinstance(uri, str) or not uri:
            raise ValidationError("The web-download import method needs a 'uri'.")
        webdownload.check_url(uri)  # refuse at once what the task would refuse
        _claim(image, to=ImageStatus.IMPORTING)
        Image.objects.filter(pk=image.pk).update(import_method=method)
    image_id = str(image.id)
    transaction.on_commit(lambda: tasks.image_import_start(image_id=image_id, method=method, uri=uri))
    image.refresh_from_db()
    return image


def import_methods() -> tuple[str, ...]:
    """web-download is offered only when some host is allowed."""
    if settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_HOSTS:
        return IMPORT_METHODS
    return ("glance-direct",)


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def image_import_run(*, image_id: str, method: str, uri: str | None = None) -> None:
    """The import task (control worker): fetch or take the staged data, inspect it whole,
    convert it if CLOUDMGR_IMAGE_CONVERT_TO asks, and publish it. A failure puts the image back
    to `queued` with the reason in `import_error`, and removes any data."""
    from apps.images import webdownload

    image = Image.objects.select_related("project").filter(pk=image_id, status=ImageStatus.IMPORTING).first()
    if image is None:
        return
    try:
        if method == "glance-direct":
            stored = _import_staged(image)
        else:
            with webdownload.open_url(uri) as response:
                stored = _stream_to_store(
                    image=image, chunks=response.chunks(), declared_size=response.length, staging=False,
                    statuses=(ImageStatus.IMPORTING,),
                )
        stored = _maybe_convert(image, stored)
    except Exception as exc:
        message = exc.message if isinstance(exc, ApplicationError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, ApplicationError):
            logger.exception("import of image %s failed", image_id)
        else:
            logger.warning("import of image %s failed: %s", image_id, message)
        _delete_data(image_id)
        _reset(image, from_=(ImageStatus.IMPORTING,), error=f"The {method} import failed: {message}")
        return
    try:
        _activate(image, stored, from_=ImageStatus.IMPORTING)
    except ImageGone:
        logger.info("image %s was deleted during its import", image_id)


def _hash_file(path: Path) -> tuple[int, str, str]:
    md5, sha512, size = hashlib.md5(usedforsecurity=False), hashlib.sha512(), 0
    for chunk in _file_chunks(path):
        md5.update(chunk)
        sha512.update(chunk)
        size += len(chunk)
    return size, md5.hexdigest(), sha512.hexdigest()


def _import_staged(image: Image) -> _Stored:
    """glance-direct: inspect the staged file whole, hash it, and move it into the store."""
    store = get_store()
    staged = store.path(str(image.id), staging=True)
    size, md5, sha512 = _hash_file(staged)
    fmt, virtual_size = _inspect_file(staged, size=size, disk_format=image.disk_format)
    store.promote(str(image.id))
    return _Stored(size, md5, sha512, fmt, virtual_size)


def _convert_progress(image: Image, percent: int | None) -> None:
    Image.objects.filter(pk=image.pk).update(convert_percent=percent)


def _maybe_convert(image: Image, stored: _Stored) -> _Stored:
    """Convert an imported image to CLOUDMGR_IMAGE_CONVERT_TO (qcow2), and inspect the result
    again before it replaces the original."""
    target = settings.CLOUDMGR_IMAGE_CONVERT_TO
    if not target or stored.disk_format == target or stored.disk_format == "iso":
        return stored
    src = get_store().path(str(image.id))
    tmp = src.with_name(f".{src.name}.{target}.partial")
    try:
        qemu.convert(src, stored.disk_format, tmp, target, on_progress=lambda percent: _convert_progress(image, percent))
        size, md5, sha512 = _hash_file(tmp)
        fmt, virtual_size = _inspect_file(tmp, size=size, disk_format=target)
        tmp.replace(src)
    finally:
        tmp.unlink(missing_ok=True)
        _convert_progress(image, None)
    logger.info("image %s converted from %s to %s", image.id, stored.disk_format, target)
    return _Stored(size, md5, sha512, fmt, virtual_size)


def images_reap_uploads(*, older_than: timedelta = timedelta(hours=1)) -> int:
    """Put back to `queued` the uploads and imports whose process died (no progress for an
    hour), and remove partial files that old. Returns how many images were reset."""
    cutoff = timezone.now() - older_than
    store = get_store()
    old = Image.objects.filter(updated_at__lt=cutoff)
    busy = old.filter(status__in=[ImageStatus.SAVING, ImageStatus.IMPORTING])
    stale = [str(pk) for pk in busy.values_list("pk", flat=True)]
    # A stage whose data never arrived whole (a staged file is kept until its import).
    stale += [str(pk) for pk in old.filter(status=ImageStatus.UPLOADING).values_list("pk", flat=True)
              if not store.exists(str(pk), staging=True)]
    count = Image.objects.filter(pk__in=stale, updated_at__lt=cutoff).update(
        status=ImageStatus.QUEUED, reserved_bytes=0, progress_bytes=0,
        import_error="The upload stopped making progress.", updated_at=timezone.now(),
    )
    ids = stale
    for path in store.partial_files():
        try:
            if path.stat().st_mtime < cutoff.timestamp():
                path.unlink(missing_ok=True)
        except OSError:
            pass
    for image_id in ids:
        store.delete(image_id, staging=True)
    return count


# --- operators --------------------------------------------------------------------------------


def image_import_file(
    *, project: Project, path: Path, name: str, disk_format: str, visibility: str = Visibility.PRIVATE
) -> Image:
    """Copy a local file into the image store (`image_import`, `cloud_bootstrap`), inspected and
    checksummed like an upload. The image is active only once every byte is stored and verified;
    on any failure it ends `killed` with no file left."""
    if disk_format not in DiskFormat.values:
        raise ValidationError(f"Unsupported disk format {disk_format}; use one of {', '.join(DiskFormat.values)}.")
    if visibility not in Visibility.values:
        raise ValidationError(f"Unknown visibility {visibility}.")
    if not path.is_file():
        raise ValidationError(f"{path} is not a file.")
    with transaction.atomic():
        _lock_project(project.pk)
        _check_count_quota(project)
        image = Image.objects.create(
            project=project, name=name, disk_format=disk_format, container_format=ContainerFormat.BARE,
            visibility=visibility, status=ImageStatus.SAVING,
        )
    try:
        stored = _stream_to_store(
            image=image, chunks=_file_chunks(path), declared_size=path.stat().st_size, staging=False,
            statuses=(ImageStatus.SAVING,),
        )
    except ApplicationError:
        Image.objects.filter(pk=image.pk).update(status=ImageStatus.KILLED, reserved_bytes=0)
        raise
    except OSError as exc:
        Image.objects.filter(pk=image.pk).update(status=ImageStatus.KILLED, reserved_bytes=0)
        raise ValidationError(f"Could not store the image: {exc}") from exc
    return _activate(image, stored, from_=ImageStatus.SAVING)


def image_cache_prune(*, max_age: int, hostname: str | None = None, wait: bool = True) -> dict[str, dict]:
    """Ask each host that is up (or one) to remove cached images unused for `max_age` seconds
    that none of its instances is based on. With `wait`, returns each host's answer."""
    from agents.names import TASK_IMAGE_CACHE_PRUNE
    from apps.hosts.models import Host, HostState
    from cloudmgr.rpc import agent_call, agent_cast

    hosts = Host.objects.filter(state=HostState.UP)
    if hostname is not None:
        hosts = Host.objects.filter(hostname=hostname)
        if not hosts.exists():
            raise NotFound(f"Host {hostname} could not be found.")
    answers = {}
    for host in hosts:
        payload = {"max_age": int(max_age)}
        if wait:
            answers[host.hostname] = agent_call(queue=host.queue, task=TASK_IMAGE_CACHE_PRUNE, payload=payload)
        else:
            agent_cast(queue=host.queue, task=TASK_IMAGE_CACHE_PRUNE, payload=payload)
    return answers


def image_create_from_url(*, user: User, project: Project, attrs: dict[str, Any], uri: str) -> Image:
    """The portal's "import from a URL": record an image and start its web-download import. The
    URL is checked first, so a refused one records nothing."""
    from apps.images import webdownload

    webdownload.check_url(uri)
    with transaction.atomic():
        image = image_create(user=user, project=project, attrs=attrs)
        return image_import(user=user, project=project, image=image, method="web-download", uri=uri)
