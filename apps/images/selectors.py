from pathlib import Path

from django.conf import settings
from django.db.models import Q, QuerySet

from agents.specs import ImageRef
from apps.images.models import Image, ImageStatus, Visibility
from apps.tenants.models import Project, User
from apps.tenants.selectors import is_cloud_admin
from cloudmgr.exceptions import NotFound
from cloudmgr.models import first_by_name_or_id


def image_path(image: Image) -> Path:
    """Where the image store keeps an image's bytes."""
    return settings.IMAGE_STORE_DIR / str(image.id)


def image_list(*, user: User, project: Project) -> QuerySet[Image]:
    """Images the project may use: its own and the public ones (all for a cloud admin)."""
    images = Image.objects.exclude(status=ImageStatus.DELETED)
    if is_cloud_admin(user=user):
        return images
    return images.filter(Q(project=project) | Q(visibility=Visibility.PUBLIC))


def image_get(*, user: User, project: Project, name_or_id: str) -> Image:
    image = first_by_name_or_id(image_list(user=user, project=project), name_or_id)
    if image is None:
        raise NotFound(f"Image {name_or_id} could not be found.")
    return image


def image_ref(*, image: Image) -> ImageRef:
    """How an agent fetches the image. A file URL while the cloud is one box."""
    return ImageRef(
        id=str(image.id),
        source=image_path(image).as_uri(),
        disk_format=image.disk_format,
        size=image.size,
        sha512=image.os_hash_value or None,
    )
