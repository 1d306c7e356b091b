"""Reads of the image service. Tenancy is here: every query takes the acting user and project.

Glance's visibility rules:
- a project sees its own images, public ones, community ones (by id, and in lists that ask for
  them), and shared ones it is a member of (by id whatever its member status; in the default list
  once it has accepted them);
- community images never appear in the default list (except to their owner);
- a cloud admin sees every image;
- an image the caller cannot see is 404, never 403.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce

from agents.specs import ImageRef
from apps.images import tickets
from apps.images.models import Image, ImageMember, ImageStatus, MemberStatus, Visibility
from apps.images.stores import get_store
from apps.tenants.models import Project, User
from apps.tenants.selectors import is_cloud_admin
from cloudmgr.exceptions import NotFound, PermissionDenied, ValidationError
from cloudmgr.models import filter_pk, first_by_name_or_id

# Glance's default page size and its maximum (api_limit_max).
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000

SORT_KEYS = {
    "name", "status", "container_format", "disk_format", "size", "virtual_size", "id", "created_at",
    "updated_at", "visibility", "min_disk", "min_ram", "owner",
}
_SORT_FIELDS = {"owner": "project_id", "id": "pk"}
# Nullable sort keys sort as if empty, so that paging after a marker is well defined.
_SORT_DEFAULTS = {"size": -1, "virtual_size": -1}


def image_path(image: Image) -> Path:
    """Where the image store keeps an image's bytes."""
    return get_store().path(str(image.id))


def _member_of(project: Project, status: str | None = None) -> Exists:
    members = ImageMember.objects.filter(image=OuterRef("pk"), project=project)
    if status is not None:
        members = members.filter(status=status)
    return Exists(members)


def image_visible(*, user: User, project: Project) -> QuerySet[Image]:
    """Every image the caller may look at by id."""
    images = Image.objects.exclude(status=ImageStatus.DELETED)
    if is_cloud_admin(user=user):
        return images
    return images.filter(
        Q(project=project)
        | Q(visibility__in=[Visibility.PUBLIC, Visibility.COMMUNITY])
        | (Q(visibility=Visibility.SHARED) & _member_of(project))
    )


def image_list(
    *,
    user: User,
    project: Project,
    visibility: str | None = None,
    member_status: str | None = None,
) -> QuerySet[Image]:
    """The images a list shows (Glance's rules). Without `visibility`: the project's own, the
    public ones, and the shared ones it has accepted (`member_status` picks another status, or
    `all`); community images only with `visibility=community` or `all`. A cloud admin sees every
    project's images."""
    if visibility not in (None, "all", *Visibility.values):
        raise ValidationError(f"Invalid visibility value: {visibility}")
    if member_status not in (None, "all", *MemberStatus.values):
        raise ValidationError(f"Invalid member_status value: {member_status}")
    images = Image.objects.exclude(status=ImageStatus.DELETED)
    mine = Q(project=project)
    status = None if member_status == "all" else (member_status or MemberStatus.ACCEPTED)
    shared_with_me = Q(visibility=Visibility.SHARED) & ~mine & _member_of(project, status)
    if is_cloud_admin(user=user):
        if visibility in (None,):
            return images.filter(~Q(visibility=Visibility.COMMUNITY) | mine)
        if visibility == "all":
            return images
        return images.filter(visibility=visibility)
    if visibility is None:
        default = mine | Q(visibility=Visibility.PUBLIC) | shared_with_me
        return images.filter(default)
    if visibility == "all":
        return images.filter(mine | Q(visibility__in=[Visibility.PUBLIC, Visibility.COMMUNITY]) | shared_with_me)
    if visibility == Visibility.SHARED:
        return images.filter((mine & Q(visibility=Visibility.SHARED)) | shared_with_me)
    if visibility == Visibility.PRIVATE:
        return images.filter(mine, visibility=Visibility.PRIVATE)
    return images.filter(visibility=visibility)  # public, community


@dataclass
class ImageQuery:
    """The filters, sort and page of an image list (GET /v2/images)."""

    name: str | None = None
    status: str | None = None
    owner: str | None = None
    tags: tuple[str, ...] = ()
    os_hidden: bool = False
    protected: bool | None = None
    disk_format: str | None = None
    container_format: str | None = None
    size_min: int | None = None
    size_max: int | None = None
    sort: tuple[tuple[str, str], ...] = (("created_at", "desc"),)
    limit: int = DEFAULT_LIMIT
    marker: str | None = None


def _filtered(images: QuerySet[Image], query: ImageQuery) -> QuerySet[Image]:
    if query.name is not None:
        images = images.filter(name=query.name)
    if query.status is not None:
        images = images.filter(status=query.status)
    if query.owner is not None:
        images = images.filter(project_id=query.owner) if _uuidish(query.owner) else images.none()
    for tag in query.tags:
        images = images.filter(tag_set__value=tag)
    images = images.filter(os_hidden=query.os_hidden)
    if query.protected is not None:
        images = images.filter(protected=query.protected)
    if query.disk_format is not None:
        images = images.filter(disk_format=query.disk_format)
    if query.container_format is not None:
        images = images.filter(container_format=query.container_format)
    if query.size_min is not None:
        images = images.filter(size__gte=query.size_min)
    if query.size_max is not None:
        images = images.filter(size__lte=query.size_max)
    return images


def _uuidish(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def _sort_expression(key: str):
    field = _SORT_FIELDS.get(key, key)
    if key in _SORT_DEFAULTS:
        return Coalesce(F(field), Value(_SORT_DEFAULTS[key]))
    return F(field)


def image_page(*, user: User, project: Project, visibility: str | None, member_status: str | None,
               query: ImageQuery) -> tuple[list[Image], bool]:
    """One page of the list, and whether there may be more. Paging is by marker (the last id of
    the previous page) over the sort keys plus the id, so pages never skip or repeat images."""
    images = _filtered(image_list(user=user, project=project, visibility=visibility, member_status=member_status),
                       query)
    keys = list(query.sort)
    if not any(key == "id" for key, _ in keys):
        keys.append(("id", keys[-1][1] if keys else "desc"))
    annotations = {f"_sort_{key}": _sort_expression(key) for key, _ in keys}
    images = images.annotate(**annotations)
    order = [f"{'-' if direction == 'desc' else ''}_sort_{key}" for key, direction in keys]
    if query.marker:
        anchor = images.filter(pk=query.marker).values(*annotations).first() if _uuidish(query.marker) else None
        if anchor is None:
            raise ValidationError(f"marker [{query.marker}] not found")
        after = Q()
        for i, (key, direction) in enumerate(keys):
            step = Q(**{f"_sort_{k}": anchor[f"_sort_{k}"] for k, _ in keys[:i]})
            op = "lt" if direction == "desc" else "gt"
            step &= Q(**{f"_sort_{key}__{op}": anchor[f"_sort_{key}"]})
            after |= step
        images = images.filter(after)
    page = list(images.order_by(*order).prefetch_related("tag_set")[: query.limit + 1])
    return page[: query.limit], len(page) > query.limit


def image_get_by_id(*, user: User, project: Project, image_id: str) -> Image:
    """An image by id (Glance's GET /v2/images/{id}), or NotFound."""
    image = filter_pk(image_visible(user=user, project=project), image_id).prefetch_related("tag_set").first()
    if image is None:
        raise NotFound(f"No image found with ID {image_id}")
    return image


def image_get(*, user: User, project: Project, name_or_id: str) -> Image:
    """An image by name or id, as Nova's imageRef and the commands name one."""
    image = first_by_name_or_id(image_visible(user=user, project=project), name_or_id)
    if image is None:
        raise NotFound(f"Image {name_or_id} could not be found.")
    return image


def image_for_ticket(*, ticket: str, action: str, image_id: str) -> Image:
    """The image an image ticket names (it must be this one), or 403/404."""
    if tickets.ticket_image_id(ticket=ticket, action=action) != str(image_id):
        raise PermissionDenied(f"The {action} ticket is for another image.")
    image = filter_pk(Image.objects.exclude(status=ImageStatus.DELETED), image_id).first()
    if image is None:
        raise NotFound(f"No image found with ID {image_id}")
    return image


def image_can_modify(*, user: User, project: Project, image: Image) -> bool:
    """Only the owner project (a member or admin there) or a cloud admin changes an image."""
    return image.project_id == project.pk or is_cloud_admin(user=user)


def image_member_list(*, user: User, project: Project, image: Image) -> QuerySet[ImageMember]:
    """The owner (and a cloud admin) sees every member; a member sees only itself."""
    if image.visibility != Visibility.SHARED:
        raise PermissionDenied("Only shared images have members.")
    members = ImageMember.objects.filter(image=image).select_related("project")
    if image_can_modify(user=user, project=project, image=image):
        return members
    return members.filter(project=project)


def image_member_get(*, user: User, project: Project, image: Image, member_id: str) -> ImageMember:
    members = image_member_list(user=user, project=project, image=image)
    member = members.filter(project_id=member_id).first() if _uuidish(member_id) else None
    if member is None:
        raise NotFound(f"{member_id} is not a member of image {image.id}")
    return member


@dataclass
class ImageData:
    """An image's bytes as a download serves them."""

    file: BinaryIO | None  # None: the image has no data (Glance answers 204)
    size: int
    checksum: str


def image_data(*, user: User | None, project: Project | None, image_id: str, ticket: str | None = None) -> ImageData:
    """Open an image's data for a download, by a user or with a download ticket (an agent).
    A deactivated image's data is for cloud admins only, as Glance's."""
    if ticket is not None:
        image = image_for_ticket(ticket=ticket, action=tickets.DOWNLOAD, image_id=image_id)
    else:
        image = image_get_by_id(user=user, project=project, image_id=image_id)
        if image.status == ImageStatus.DEACTIVATED and not is_cloud_admin(user=user):
            raise PermissionDenied("The requested image has been deactivated. Image data download is forbidden.")
    if image.status not in (ImageStatus.ACTIVE, ImageStatus.DEACTIVATED) or image.size == 0:
        return ImageData(file=None, size=0, checksum="")  # size 0: it maps volume snapshots only
    try:
        f = get_store().open(str(image.id))
    except FileNotFoundError:
        raise NotFound(f"The data of image {image_id} is missing from the image store.") from None
    return ImageData(file=f, size=image.size or 0, checksum=image.checksum)


def image_usage(*, project: Project, exclude: Image | None = None) -> tuple[int, int]:
    """(images, bytes) the project uses against its image quotas: every image not deleted, its
    size once it has data, and the bytes held by uploads in progress."""
    images = Image.objects.filter(project=project).exclude(status__in=[ImageStatus.DELETED, ImageStatus.KILLED])
    count = images.count()
    if exclude is not None:
        images = images.exclude(pk=exclude.pk)
    used = images.aggregate(total=Sum(Coalesce(F("size"), Value(0)) + F("reserved_bytes")))["total"] or 0
    return count, used


# Nova's image property, on an image of a server booted from a volume, that maps the snapshots
# (JSON) a server booted from the image gets its volumes from. Such an image has no data.
VOLUME_MAPPING = "block_device_mapping"


def image_maps_volumes(*, image: Image) -> bool:
    return VOLUME_MAPPING in (image.properties or {})


def image_ref(*, image: Image) -> ImageRef:
    """How an agent fetches the image: over HTTP from the image API with a download ticket (read
    only, this image only, short-lived), or, with CLOUDMGR_IMAGE_AGENT_TRANSFER=file, a file URL
    when every host sees the image store (one box)."""
    if settings.CLOUDMGR_IMAGE_AGENT_TRANSFER == "file":
        return ImageRef(
            id=str(image.id),
            source=image_path(image).as_uri(),
            disk_format=image.disk_format,
            size=image.size,
            sha512=image.os_hash_value or None,
        )
    return ImageRef(
        id=str(image.id),
        source=f"{settings.CLOUDMGR_IMAGE_AGENT_URL}/image/v2/images/{image.id}/file",
        disk_format=image.disk_format,
        size=image.size,
        sha512=image.os_hash_value or None,
        auth_token=tickets.ticket_issue(image_id=str(image.id), action=tickets.DOWNLOAD),
    )


PORTAL_TABS = ("all", "mine", "shared", "public")


def image_portal_list(*, user: User, project: Project, tab: str = "all") -> QuerySet[Image]:
    """The portal's image list tabs: everything the default list shows, the project's own, the
    images other projects share with it (whatever its answer), the public and community ones."""
    if tab == "mine":
        images = image_list(user=user, project=project, visibility="all").filter(project=project)
    elif tab == "shared":
        images = image_list(user=user, project=project, visibility=Visibility.SHARED, member_status="all")
        images = images.exclude(project=project)
    elif tab == "public":
        images = image_list(user=user, project=project, visibility="all").filter(
            visibility__in=[Visibility.PUBLIC, Visibility.COMMUNITY]
        )
    else:
        images = image_list(user=user, project=project)
    return images.select_related("project").order_by("-created_at")


def image_membership(*, project: Project, image: Image) -> ImageMember | None:
    """The caller's project's membership of an image shared with it, if any."""
    return ImageMember.objects.filter(image=image, project=project).first()
