import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Coalesce, Greatest

from apps.instances.states import PowerState, TaskState, VmState
from cloudmgr.models import BaseModel, TenantOwnedModel


def local_gb(root_gb: int, ephemeral_gb: int, swap_mb: int) -> int:
    """The disk an instance takes on its host (Nova's DISK_GB): root, ephemeral and swap, the
    swap rounded up to whole GiB. The hosts' usage triggers count the same sum in SQL."""
    return root_gb + ephemeral_gb + -(-swap_mb // 1024)


def _local_gb_of(prefix: str = "") -> models.Expression:
    """local_gb() of an instances_instance row in a query (integer division in SQLite and PostgreSQL);
    with ``prefix`` "old_", of the flavor it had before a resize waiting for confirmation."""
    root, ephemeral, swap = (Coalesce(models.F(prefix + c), models.F(c)) if prefix else models.F(c)
                             for c in ("root_gb", "ephemeral_gb", "swap_mb"))
    return root + ephemeral + (swap + 1023) / 1024


def _held(column: str) -> models.Expression:
    return Greatest(models.F(column), Coalesce(models.F(f"old_{column}"), models.F(column)))


# What an instance holds on its host, for queries: the larger of its flavor's amounts and, while a
# resize waits for confirmation, its old flavor's (the hosts' usage triggers count the same).
HELD = {"vcpus": _held("vcpus"), "memory_mib": _held("memory_mib"),
        "disk_gb": Greatest(_local_gb_of(), _local_gb_of("old_"))}


def _flavor_id() -> str:
    return str(uuid.uuid4())


class Flavor(models.Model):
    """Nova flavor. Ids are free strings in Nova ("1", "m1.tiny" or a UUID)."""

    id = models.CharField(primary_key=True, max_length=255, default=_flavor_id)
    name = models.CharField(max_length=255, unique=True)
    description = models.TextField(blank=True, default="")
    vcpus = models.PositiveIntegerField()
    ram = models.PositiveIntegerField(help_text="MiB")
    disk = models.PositiveIntegerField(help_text="root disk, GB")
    ephemeral = models.PositiveIntegerField(default=0)
    swap = models.PositiveIntegerField(default=0, help_text="MiB")
    rxtx_factor = models.FloatField(default=1.0)
    is_public = models.BooleanField(default=True)
    extra_specs = models.JSONField(default=dict, blank=True)
    projects = models.ManyToManyField("tenants.Project", blank=True, related_name="+",
                                      help_text="projects that may use a private flavor")
    disabled = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["ram", "vcpus", "name"]

    def __str__(self) -> str:
        return self.name


class Instance(TenantOwnedModel):
    name = models.CharField(max_length=255)
    # Nova's display_description: set at create from 2.19 (null if not given), the name before.
    description = models.CharField(max_length=255, null=True, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="instances")
    flavor = models.ForeignKey(Flavor, on_delete=models.PROTECT, related_name="instances")
    # The flavor's resources at boot, so that a later flavor edit does not change claims.
    vcpus = models.PositiveIntegerField()
    memory_mib = models.PositiveIntegerField()
    root_gb = models.PositiveIntegerField()
    ephemeral_gb = models.PositiveIntegerField(default=0)
    swap_mb = models.PositiveIntegerField(default=0)
    image = models.ForeignKey("images.Image", null=True, on_delete=models.SET_NULL, related_name="instances")
    host = models.ForeignKey("hosts.Host", null=True, blank=True, on_delete=models.PROTECT, related_name="instances")
    # The image a shelved instance's root disk was uploaded to (Nova's shelved_image_id), until unshelved.
    shelved_image = models.ForeignKey("images.Image", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+")
    availability_zone = models.CharField(max_length=255, default="nova")
    vm_state = models.CharField(max_length=32, choices=VmState.choices, default=VmState.BUILDING)
    task_state = models.CharField(max_length=32, choices=TaskState.choices, null=True, blank=True)
    power_state = models.IntegerField(choices=PowerState.choices, default=PowerState.NOSTATE)
    locked = models.BooleanField(default=False)
    locked_by = models.CharField(max_length=8, blank=True, default="", help_text="owner or admin (Nova)")
    # The flavor and resources before a resize, until it is confirmed or reverted.
    old_flavor = models.ForeignKey(Flavor, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    old_vcpus = models.PositiveIntegerField(null=True, blank=True)
    old_memory_mib = models.PositiveIntegerField(null=True, blank=True)
    old_root_gb = models.PositiveIntegerField(null=True, blank=True)
    old_ephemeral_gb = models.PositiveIntegerField(null=True, blank=True)
    old_swap_mb = models.PositiveIntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    key_name = models.CharField(max_length=255, null=True, blank=True)
    user_data = models.TextField(blank=True, default="")
    # Nova's ``config_drive`` of the create request: the instance gets a config drive even on a
    # network with a metadata service (a rebuild keeps it).
    config_drive = models.BooleanField(default=False)
    # Nova's create request ("r-" + 8 characters, shared by a multiple create), the index in it,
    # and the guest's host name, made from the name at create (a rename keeps it, as in Nova).
    reservation_id = models.CharField(max_length=16, blank=True, default="", db_index=True)
    launch_index = models.PositiveIntegerField(default=0)
    hostname = models.CharField(max_length=63, blank=True, default="")
    launched_at = models.DateTimeField(null=True, blank=True)
    terminated_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["project", "deleted_at", "created_at"]),
            models.Index(fields=["host", "deleted_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    @property
    def local_gb(self) -> int:
        return local_gb(self.root_gb, self.ephemeral_gb, self.swap_mb)


class InstanceFault(BaseModel):
    """Why an instance went wrong, in words the user can read."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="faults")
    code = models.PositiveIntegerField(default=500)
    message = models.TextField()

    class Meta:
        ordering = ["-created_at"]


class InstanceTag(BaseModel):
    """A server tag (Nova's, from 2.26): a string a user files the server under."""

    MAX_LENGTH = 60
    MAX_PER_INSTANCE = 50

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="tags")
    tag = models.CharField(max_length=MAX_LENGTH)

    class Meta:
        ordering = ["tag"]
        constraints = [models.UniqueConstraint(fields=["instance", "tag"], name="instance_tag_unique")]
        indexes = [models.Index(fields=["tag"])]


class InstanceAction(BaseModel):
    """Who asked for what, when (Nova's os-instance-actions)."""

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="actions")
    action = models.CharField(max_length=32)
    request_id = models.CharField(max_length=64, blank=True, default="")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.CharField(max_length=16, blank=True, default="")
    message = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at"]


class InstanceActionEvent(BaseModel):
    """One step of an action (Nova's instance action events, e.g. ``compute_stop_instance``)."""

    action = models.ForeignKey(InstanceAction, on_delete=models.CASCADE, related_name="events")
    event = models.CharField(max_length=64)
    host = models.CharField(max_length=255, blank=True, default="")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    result = models.CharField(max_length=16, blank=True, default="")
    details = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["started_at"]


class MigrationStatus(models.TextChoices):
    MIGRATING = "migrating"
    FINISHED = "finished"  # the server waits in VERIFY_RESIZE
    CONFIRMED = "confirmed"
    REVERTING = "reverting"
    REVERTED = "reverted"
    ERROR = "error"


class Migration(models.Model):
    """Nova's record of a move of a server (os-migrations). Here every move is a resize on the
    server's own host. Its id is an integer, as Nova's API shows it before 2.59."""

    id = models.BigAutoField(primary_key=True)
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="migrations")
    migration_type = models.CharField(max_length=16, default="resize")
    status = models.CharField(max_length=16, choices=MigrationStatus.choices, default=MigrationStatus.MIGRATING)
    source_compute = models.CharField(max_length=255, blank=True, default="")
    dest_compute = models.CharField(max_length=255, blank=True, default="")
    # Flavor ids, not references: a flavor may be deleted while its migrations are kept.
    old_flavor_ref = models.CharField(max_length=255)
    new_flavor_ref = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]


class Keypair(BaseModel):
    """An SSH public key of a user (Nova keypairs are per user, named uniquely per user)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="keypairs")
    name = models.CharField(max_length=255)
    type = models.CharField(max_length=8, default="ssh")
    public_key = models.TextField()
    fingerprint = models.CharField(max_length=128)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="keypair_unique_name_per_user")]


class ServerGroup(TenantOwnedModel):
    """Nova server group: placement policy for its members."""

    name = models.CharField(max_length=255)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    policy = models.CharField(max_length=32)  # affinity, anti-affinity, soft-affinity, soft-anti-affinity
    rules = models.JSONField(default=dict, blank=True)
    members = models.ManyToManyField(Instance, blank=True, related_name="server_groups")

    class Meta:
        ordering = ["created_at"]
