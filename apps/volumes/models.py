"""Block storage (Cinder): volume types, volumes, snapshots, attachments, backups, transfers and
the user messages that say why an operation failed.

A volume lives on one storage host (``host``) in one backend (``backend``, named by its type's
``volume_backend_name`` extra spec); its data never passes through the control plane.
"""

from django.conf import settings
from django.db import models

from apps.volumes.states import AttachStatus, BackupStatus, SnapshotStatus, VolumeStatus
from cloudmgr.models import BaseModel, TenantOwnedModel

# The extra specs cloudmgr acts on (Cinder's names).
BACKEND_SPEC = "volume_backend_name"
MULTIATTACH_SPEC = "multiattach"


class VolumeType(BaseModel):
    """A kind of volume: which backend holds it, whether it may be attached to several servers."""

    name = models.CharField(max_length=255, unique=True)
    description = models.TextField(blank=True, default="")
    is_public = models.BooleanField(default=True)
    extra_specs = models.JSONField(default=dict, blank=True)
    projects = models.ManyToManyField("tenants.Project", blank=True, related_name="+",
                                      help_text="projects that may use a private type")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def backend(self) -> str:
        return str(self.extra_specs.get(BACKEND_SPEC) or settings.CLOUDMGR_VOLUME_DEFAULT_BACKEND)

    @property
    def multiattach(self) -> bool:
        # Cinder's capability syntax: "<is> True".
        return str(self.extra_specs.get(MULTIATTACH_SPEC, "")).strip().lower() == "<is> true"


class Volume(TenantOwnedModel):
    name = models.CharField(max_length=255, blank=True, default="")
    description = models.TextField(blank=True, default="")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="volumes")
    size = models.PositiveIntegerField(help_text="GiB")
    status = models.CharField(max_length=24, choices=VolumeStatus.choices, default=VolumeStatus.CREATING)
    # The status to go back to after a backup or a restore (Cinder's previous_status).
    previous_status = models.CharField(max_length=24, blank=True, default="")
    # The size an extend in progress grows it to.
    pending_size = models.PositiveIntegerField(null=True, blank=True)
    volume_type = models.ForeignKey(VolumeType, on_delete=models.PROTECT, related_name="volumes")
    backend = models.CharField(max_length=32)
    host = models.ForeignKey("hosts.Host", null=True, blank=True, on_delete=models.PROTECT, related_name="volumes",
                             help_text="the storage host that holds it")
    availability_zone = models.CharField(max_length=255, default="nova")
    bootable = models.BooleanField(default=False)
    read_only = models.BooleanField(default=False)
    multiattach = models.BooleanField(default=False)
    metadata = models.JSONField(default=dict, blank=True)
    image_metadata = models.JSONField(default=dict, blank=True, help_text="volume_image_metadata")
    source_volume = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    snapshot = models.ForeignKey("Snapshot", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "created_at"])]

    def __str__(self) -> str:
        return f"{self.name or self.id} ({self.size} GiB, {self.status})"


class Snapshot(TenantOwnedModel):
    volume = models.ForeignKey(Volume, on_delete=models.PROTECT, related_name="snapshots")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    name = models.CharField(max_length=255, blank=True, default="")
    description = models.TextField(blank=True, default="")
    size = models.PositiveIntegerField(help_text="GiB")
    status = models.CharField(max_length=24, choices=SnapshotStatus.choices, default=SnapshotStatus.CREATING)
    metadata = models.JSONField(default=dict, blank=True)
    # Made by cloudmgr to back up an attached volume, deleted after it: counts in no quota and
    # lists nowhere (Cinder's temporary snapshots).
    temporary = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "created_at"])]

    def __str__(self) -> str:
        return f"snapshot {self.name or self.id} of {self.volume_id}"


class Attachment(TenantOwnedModel):
    """A volume attached to a server (Cinder's attachment, Nova's block device mapping)."""

    volume = models.ForeignKey(Volume, on_delete=models.CASCADE, related_name="attachments")
    instance = models.ForeignKey("instances.Instance", on_delete=models.CASCADE, related_name="volume_attachments")
    host = models.ForeignKey("hosts.Host", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                             help_text="the compute host the volume is plugged into")
    device = models.CharField(max_length=32, help_text="/dev/vdb")
    status = models.CharField(max_length=24, choices=AttachStatus.choices, default=AttachStatus.ATTACHING)
    mode = models.CharField(max_length=2, default="rw")
    connection = models.JSONField(null=True, blank=True, help_text="the storage host's export (VolumeConnection)")
    connector = models.JSONField(default=dict, blank=True, help_text="what the client said about its host")
    delete_on_termination = models.BooleanField(default=False)
    boot_index = models.IntegerField(null=True, blank=True, help_text="0: the server boots from it")
    attached_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["instance", "device"], name="attachment_unique_device"),
            models.UniqueConstraint(fields=["instance", "volume"], name="attachment_unique_volume"),
        ]

    def __str__(self) -> str:
        return f"{self.volume_id} on {self.instance_id} as {self.device}"


class Backup(TenantOwnedModel):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    name = models.CharField(max_length=255, blank=True, default="")
    description = models.TextField(blank=True, default="")
    # The volume it was made of: the id stays when the volume is deleted (a restore needs none).
    volume_uuid = models.UUIDField()
    volume = models.ForeignKey(Volume, null=True, blank=True, on_delete=models.SET_NULL, related_name="backups")
    snapshot_id = models.UUIDField(null=True, blank=True)
    # A temporary snapshot of an attached volume, which the data is read from.
    temp_snapshot = models.ForeignKey(Snapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    size = models.PositiveIntegerField(help_text="GiB")
    # Chunks this backup stored itself (an incremental one refers to its parents' for the rest),
    # as the storage host reports them; Cinder's ``object_count``.
    object_count = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=24, choices=BackupStatus.choices, default=BackupStatus.CREATING)
    fail_reason = models.TextField(blank=True, default="")
    backend = models.CharField(max_length=32)
    host = models.ForeignKey("hosts.Host", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    availability_zone = models.CharField(max_length=255, default="nova")
    data_timestamp = models.DateTimeField(null=True, blank=True)
    # The volume a restore writes into, while it runs.
    restore_volume = models.ForeignKey(Volume, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Made by cloudmgr to revert a volume to a snapshot (the snapshot's data, restored into the
    # volume), deleted after it: counts in no quota and lists nowhere.
    temporary = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "created_at"])]

    def __str__(self) -> str:
        return f"backup {self.name or self.id} of {self.volume_uuid}"


class Transfer(TenantOwnedModel):
    """An offer to give a volume to another project; whoever has the auth key may accept it.
    Only a salted hash of the key is stored (the key is shown once)."""

    volume = models.ForeignKey(Volume, on_delete=models.CASCADE, related_name="transfers")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    name = models.CharField(max_length=255, blank=True, default="")
    salt = models.CharField(max_length=32)
    key_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-created_at"]


class Message(BaseModel):
    """Why an asynchronous operation failed, for the project to read (Cinder's user messages)."""

    project = models.ForeignKey("tenants.Project", on_delete=models.CASCADE, related_name="+")
    request_id = models.CharField(max_length=64, blank=True, default="")
    resource_type = models.CharField(max_length=16)
    resource_uuid = models.UUIDField(null=True, blank=True)
    event_id = models.CharField(max_length=64)
    message_level = models.CharField(max_length=16, default="ERROR")
    user_message = models.TextField()
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "created_at"]), models.Index(fields=["resource_uuid"])]
