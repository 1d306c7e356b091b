from django.db import models

from cloudmgr.models import BaseModel, TenantOwnedModel


class ImageStatus(models.TextChoices):
    """Glance's image statuses."""

    QUEUED = "queued"  # recorded, no data yet
    SAVING = "saving"  # data is being uploaded (PUT .../file)
    UPLOADING = "uploading"  # data is being (or has been) staged for an import (PUT .../stage)
    IMPORTING = "importing"  # an import task is running
    ACTIVE = "active"
    KILLED = "killed"  # an import failed for good; the image can only be deleted
    DELETED = "deleted"
    DEACTIVATED = "deactivated"


class Visibility(models.TextChoices):
    PUBLIC = "public"
    PRIVATE = "private"
    SHARED = "shared"
    COMMUNITY = "community"


class DiskFormat(models.TextChoices):
    """The disk formats the inspector recognises (apps/images/inspector.py)."""

    RAW = "raw"
    QCOW2 = "qcow2"
    VMDK = "vmdk"
    VDI = "vdi"
    VHD = "vhd"
    VHDX = "vhdx"
    ISO = "iso"


class ContainerFormat(models.TextChoices):
    """Only `bare`: cloudmgr stores disk images, not OVF/OVA/Docker containers."""

    BARE = "bare"


class Image(TenantOwnedModel):
    """A disk image; `project` is its owner. The bytes live in the image store under its id
    (apps/images/stores.py)."""

    name = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=16, choices=ImageStatus.choices, default=ImageStatus.QUEUED)
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.SHARED)
    disk_format = models.CharField(max_length=16, choices=DiskFormat.choices, blank=True, default="")
    container_format = models.CharField(max_length=16, blank=True, default="")
    size = models.BigIntegerField(null=True, blank=True)
    virtual_size = models.BigIntegerField(null=True, blank=True)
    checksum = models.CharField(max_length=32, blank=True, default="", help_text="MD5, as Glance")
    os_hash_algo = models.CharField(max_length=16, blank=True, default="")
    os_hash_value = models.CharField(max_length=128, blank=True, default="")
    min_disk = models.PositiveIntegerField(default=0)
    min_ram = models.PositiveIntegerField(default=0)
    protected = models.BooleanField(default=False)
    os_hidden = models.BooleanField(default=False)
    # Glance's free-form properties ("os_distro": "debian", "hw_disk_bus": "scsi" ...): string
    # values, shown as top-level keys of the image on the wire.
    properties = models.JSONField(default=dict, blank=True)
    # Bytes held against the project's image storage quota while data streams in (an upload or a
    # staged import); 0 otherwise. Once the image has its data, `size` counts instead.
    reserved_bytes = models.BigIntegerField(default=0)
    # An upload or import in progress: how many bytes have arrived (the portal shows it), and why
    # the last import failed, if it did.
    progress_bytes = models.BigIntegerField(default=0)
    # A conversion to CLOUDMGR_IMAGE_CONVERT_TO in progress: how far it is, in percent.
    convert_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    import_method = models.CharField(max_length=32, blank=True, default="")
    import_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["name", "created_at"]
        indexes = [models.Index(fields=["project", "status"], name="image_project_status")]

    def __str__(self) -> str:
        return self.name or str(self.id)


class ImageTag(models.Model):
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="tag_set")
    value = models.CharField(max_length=255)

    class Meta:
        ordering = ["value"]
        constraints = [models.UniqueConstraint(fields=["image", "value"], name="imagetag_unique_image_value")]

    def __str__(self) -> str:
        return self.value


class MemberStatus(models.TextChoices):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class ImageMember(BaseModel):
    """A project an image is shared with (Glance's image member). The owner adds and removes
    members; the member project accepts or rejects the image."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="members")
    project = models.ForeignKey("tenants.Project", on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=MemberStatus.choices, default=MemberStatus.PENDING)

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["image", "project"], name="imagemember_unique_image_project")]

    def __str__(self) -> str:
        return f"{self.project} on image {self.image_id} ({self.status})"
