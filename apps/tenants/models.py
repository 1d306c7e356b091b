import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models

from cloudmgr.models import BaseModel


class User(AbstractUser):
    """A cloud user. A UUID id, as Keystone's (shown as 32 hex digits on the wire)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)


class Role(models.TextChoices):
    """Keystone's default roles."""

    ADMIN = "admin"
    MEMBER = "member"
    READER = "reader"


class Project(BaseModel):
    name = models.CharField(max_length=64, unique=True)
    description = models.TextField(blank=True, default="")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(BaseModel):
    """A user's role on a project."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "project"], name="membership_unique_user_project")]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} on {self.project}"


class Resource(models.TextChoices):
    INSTANCES = "instances"
    CORES = "cores"
    RAM = "ram"
    VOLUMES = "volumes"
    GIGABYTES = "gigabytes"
    NETWORKS = "networks"
    PORTS = "ports"
    FLOATING_IPS = "floating_ips"
    SECURITY_GROUPS = "security_groups"


class Quota(BaseModel):
    """One resource's limit and usage for a project. Usage changes only under a row lock."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="quotas")
    resource = models.CharField(max_length=32, choices=Resource.choices)
    limit = models.IntegerField(help_text="-1 means unlimited")
    in_use = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "resource"], name="quota_unique_project_resource"),
            models.CheckConstraint(condition=models.Q(in_use__gte=0), name="quota_in_use_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.project} {self.resource} {self.in_use}/{self.limit}"


class Token(BaseModel):
    """An API token. Only its SHA-256 is stored; the token itself is shown once."""

    key_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokens")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, null=True, related_name="tokens")
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"token {self.id} of {self.user}"
