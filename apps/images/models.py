from django.db import models

from cloudmgr.models import TenantOwnedModel


class ImageStatus(models.TextChoices):
    """Glance's image statuses."""

    QUEUED = "queued"
    SAVING = "saving"
    ACTIVE = "active"
    KILLED = "killed"
    DELETED = "deleted"
    DEACTIVATED = "deactivated"


class Visibility(models.TextChoices):
    PUBLIC = "public"
    PRIVATE = "private"
    SHARED = "shared"
    COMMUNITY = "community"


class DiskFormat(models.TextChoices):
    RAW = "raw"
    QCOW2 = "qcow2"


class Image(TenantOwnedModel):
    """A disk image; `project` is its owner. The bytes live in the image store under its id."""

    name = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=16, choices=ImageStatus.choices, default=ImageStatus.QUEUED)
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.SHARED)
    disk_format = models.CharField(max_length=16, choices=DiskFormat.choices, blank=True, default="")
    container_format = models.CharField(max_length=16, default="bare")
    size = models.BigIntegerField(null=True, blank=True)
    virtual_size = models.BigIntegerField(null=True, blank=True)
    checksum = models.CharField(max_length=32, blank=True, default="", help_text="MD5, as Glance")
    os_hash_algo = models.CharField(max_length=16, blank=True, default="")
    os_hash_value = models.CharField(max_length=128, blank=True, default="")
    min_disk = models.PositiveIntegerField(default=0)
    min_ram = models.PositiveIntegerField(default=0)
    protected = models.BooleanField(default=False)

    class Meta:
        ordering = ["name", "created_at"]

    def __str__(self) -> str:
        return self.name or str(self.id)
