import hashlib
import logging
import os
from pathlib import Path

from django.db import transaction

from apps.images.inspector import inspect_as
from apps.images.models import DiskFormat, Image, ImageStatus, Visibility
from apps.images.selectors import image_path
from apps.tenants.models import Project
from cloudmgr.exceptions import Conflict, ValidationError

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024


def image_import_file(
    *, project: Project, path: Path, name: str, disk_format: str, visibility: str = Visibility.PRIVATE
) -> Image:
    """Copy a local file into the image store, inspected and checksummed. The image is active only
    once every byte is stored and verified; on any failure it ends `killed` with no file left."""
    if disk_format not in DiskFormat.values:
        raise ValidationError(f"Unsupported disk format {disk_format}; use one of {', '.join(DiskFormat.values)}.")
    if visibility not in Visibility.values:
        raise ValidationError(f"Unknown visibility {visibility}.")
    if not path.is_file():
        raise ValidationError(f"{path} is not a file.")
    size = path.stat().st_size
    with path.open("rb") as src:
        inspection = inspect_as(src, size=size, disk_format=disk_format)
    image = Image.objects.create(
        project=project, name=name, disk_format=disk_format, visibility=visibility, status=ImageStatus.SAVING
    )
    target = image_path(image)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    md5, sha512 = hashlib.md5(usedforsecurity=False), hashlib.sha512()
    try:
        with path.open("rb") as src, partial.open("wb") as dst:
            while chunk := src.read(CHUNK):
                md5.update(chunk)
                sha512.update(chunk)
                dst.write(chunk)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        Image.objects.filter(pk=image.pk).update(status=ImageStatus.KILLED)
        raise ValidationError(f"Could not store the image: {exc}") from exc
    image.size = size
    image.virtual_size = inspection.virtual_size
    image.checksum = md5.hexdigest()
    image.os_hash_algo = "sha512"
    image.os_hash_value = sha512.hexdigest()
    image.status = ImageStatus.ACTIVE
    image.save()
    return image


def image_delete(*, image: Image) -> None:
    if image.protected:
        raise Conflict(f"Image {image.id} is protected and cannot be deleted.")
    with transaction.atomic():
        image.status = ImageStatus.DELETED
        image.save(update_fields=["status", "updated_at"])
    path = image_path(image)
    transaction.on_commit(lambda: path.unlink(missing_ok=True))
