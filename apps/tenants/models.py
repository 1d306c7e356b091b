"""Identity (Keystone): users, projects, groups, roles and their assignments, quotas, tokens and
application credentials.

cloudmgr has one domain, Keystone's `default` (see docs/identity.md): user, project, group and
role names are unique in the whole cloud, and the domain is a constant, not a row.
"""

import base64
import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models

from cloudmgr.models import BaseModel

# The one domain, as Keystone's default domain is named on the wire.
DEFAULT_DOMAIN_ID = "default"
DEFAULT_DOMAIN_NAME = "Default"
# The project whose `admin` role makes a cloud operator (Keystone's `admin_project_name`).
ADMIN_PROJECT_NAME = "admin"


class User(AbstractUser):
    """A cloud user. A UUID id, as Keystone's (shown as 32 hex digits on the wire). Keystone's
    `name` is `username`, `enabled` is `is_active`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    description = models.TextField(blank=True, default="")
    # Where a token goes when the user asks for one without a scope (as Keystone's).
    default_project = models.ForeignKey(
        "tenants.Project", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )


class Role(models.TextChoices):
    """Keystone's default roles. Each implies the ones below it: admin > member > reader."""

    ADMIN = "admin"
    MEMBER = "member"
    READER = "reader"


# The rank of each default role; a higher one implies the lower ones (Keystone's implied roles).
ROLE_RANK = {Role.READER.value: 1, Role.MEMBER.value: 2, Role.ADMIN.value: 3}


class CustomRole(BaseModel):
    """A role beyond the default three, made by an operator (`openstack role create`). It can be
    granted and shows in tokens and assignments; cloudmgr's own policy gives it no powers. Its
    name is its id on the wire, as for the default roles."""

    name = models.CharField(max_length=64, unique=True)
    description = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Project(BaseModel):
    name = models.CharField(max_length=64, unique=True)
    description = models.TextField(blank=True, default="")
    enabled = models.BooleanField(default=True)
    # None: a top-level project, whose parent on the wire is the domain.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(BaseModel):
    """A role a user holds on a project. A user may hold several roles on one project, as in
    Keystone; the highest default role among them is what cloudmgr's policy acts on."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=64, default=Role.MEMBER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "project", "role"], name="membership_unique_user_project_role")
        ]

    def __str__(self) -> str:
        return f"{self.user} is {self.role} on {self.project}"


class Group(BaseModel):
    """A Keystone group: a set of users; a role granted to it on a project is held by each member."""

    name = models.CharField(max_length=64, unique=True)
    description = models.TextField(blank=True, default="")
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="identity_groups")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class GroupAssignment(BaseModel):
    """A role a group holds on a project."""

    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="assignments")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="group_assignments")
    role = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["group", "project", "role"], name="groupassignment_unique_group_project_role"
            )
        ]

    def __str__(self) -> str:
        return f"group {self.group} is {self.role} on {self.project}"


class Resource(models.TextChoices):
    INSTANCES = "instances"
    CORES = "cores"
    RAM = "ram"
    VOLUMES = "volumes"
    GIGABYTES = "gigabytes"
    SNAPSHOTS = "snapshots"
    BACKUPS = "backups"
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


class ApplicationCredential(BaseModel):
    """A secret a user makes for a program: it authenticates as the user, scoped to one project,
    with at most the roles listed. Only a hash of the secret is stored; the secret is shown once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="application_credentials")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="application_credentials")
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    secret_hash = models.CharField(max_length=255)
    # Role names, implied roles included (as Keystone stores them).
    roles = models.JSONField(default=list)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Keystone's flag: may it create or delete application credentials? cloudmgr stores and
    # honours it (false by default).
    unrestricted = models.BooleanField(default=False)

    class Meta:
        ordering = ["created_at"]
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="appcred_unique_user_name")]

    def __str__(self) -> str:
        return f"application credential {self.name} of {self.user}"


class Token(BaseModel):
    """An API token. Only its SHA-256 is stored; the token itself is shown once.

    Scope: a project (`project`), the default domain (`domain_scoped`), or none (unscoped)."""

    key_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokens")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, null=True, related_name="tokens")
    domain_scoped = models.BooleanField(default=False)
    # Deleting the credential revokes its tokens.
    application_credential = models.ForeignKey(
        ApplicationCredential, on_delete=models.CASCADE, null=True, blank=True, related_name="tokens"
    )
    # The methods that proved the identity, comma-separated ("password", "token,password" ...).
    methods = models.CharField(max_length=128, default="password")
    # The audit id of the token this one was re-scoped from (Keystone's audit chain).
    audit_chain_id = models.CharField(max_length=22, blank=True, default="")
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["expires_at"], name="token_expires_at")]

    def __str__(self) -> str:
        return f"token {self.id} of {self.user}"

    @property
    def audit_id(self) -> str:
        """Keystone's audit id: 22 URL-safe characters, public (it names the token in logs)."""
        return base64.urlsafe_b64encode(self.id.bytes).rstrip(b"=").decode()

    @property
    def method_list(self) -> list[str]:
        return [m for m in self.methods.split(",") if m]

    @property
    def issued_at(self):
        return self.created_at
