"""Identity writes: projects, users, groups, roles and their assignments, quotas, tokens and
application credentials. Every front door (the Keystone API, the portal, the commands) calls
these; they check what the model cannot (names, passwords, roles held) and raise
cloudmgr.exceptions errors."""

import base64
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from apps.tenants import selectors
from apps.tenants.models import (
    ADMIN_PROJECT_NAME,
    ROLE_RANK,
    ApplicationCredential,
    CustomRole,
    Group,
    GroupAssignment,
    Membership,
    Project,
    Quota,
    Resource,
    Token,
    User,
)
from apps.tenants.selectors import hash_token, implied_roles, project_role_names, role_exists
from cloudmgr.exceptions import (
    Conflict,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    ValidationError,
)
from cloudmgr.models import INT_MAX

_UNSET = object()


def _duplicate(kind: str, name: str) -> Conflict:
    return Conflict(f"Conflict occurred attempting to store {kind} - Duplicate entry found with name {name}.")


def _clean_name(kind: str, name, max_length: int) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"Invalid input for field 'name': a {kind} needs a name.")
    name = name.strip()
    if len(name) > max_length:
        raise ValidationError(f"Invalid input for field 'name': at most {max_length} characters.")
    return name


def _django_messages(exc: DjangoValidationError) -> str:
    return " ".join(exc.messages)


# --- Projects ---------------------------------------------------------------------------------


@transaction.atomic
def project_create(*, name: str, description: str = "", enabled: bool = True, parent: Project | None = None) -> Project:
    """A new project with the default quotas."""
    name = _clean_name("project", name, 64)
    if Project.objects.filter(name=name).exists():
        raise _duplicate("project", name)
    project = Project.objects.create(name=name, description=description or "", enabled=enabled, parent=parent)
    defaults = settings.CLOUDMGR_DEFAULT_QUOTAS
    Quota.objects.bulk_create(
        Quota(project=project, resource=resource, limit=defaults[resource]) for resource in Resource.values
    )
    return project


def project_ensure(*, name: str, description: str = "") -> Project:
    project = Project.objects.filter(name=name).first()
    return project or project_create(name=name, description=description)


def _guard_admin_project(project: Project, what: str) -> None:
    if project.name == ADMIN_PROJECT_NAME:
        raise PermissionDenied(f"The {ADMIN_PROJECT_NAME} project (the cloud operators') cannot be {what}.")


@transaction.atomic
def project_update(
    *, project: Project, name: str | None = None, description: str | None = None, enabled: bool | None = None
) -> Project:
    """Rename, describe, enable or disable a project. Disabling it ends its tokens."""
    fields = []
    if name is not None and name != project.name:
        _guard_admin_project(project, "renamed")
        name = _clean_name("project", name, 64)
        if Project.objects.filter(name=name).exclude(pk=project.pk).exists():
            raise _duplicate("project", name)
        project.name = name
        fields.append("name")
    if description is not None:
        project.description = description
        fields.append("description")
    if enabled is not None and enabled != project.enabled:
        if not enabled:
            _guard_admin_project(project, "disabled")
            Token.objects.filter(project=project, revoked_at__isnull=True).update(revoked_at=timezone.now())
        project.enabled = enabled
        fields.append("enabled")
    if fields:
        project.save(update_fields=[*fields, "updated_at"])
    return project


def _protected_kinds(exc: ProtectedError) -> str:
    """What still refers to the object being deleted, e.g. "images, instances"."""
    return ", ".join(sorted({str(obj._meta.verbose_name_plural) for obj in exc.protected_objects}))


def project_delete(*, project: Project) -> None:
    """Delete a project, its role assignments, quotas, tokens and application credentials. Refused
    for the admin project, a project with sub-projects (403, as Keystone) and one that still owns
    resources (409: delete its servers, images ... first)."""
    _guard_admin_project(project, "deleted")
    if project.children.exists():
        raise PermissionDenied(f"Cannot delete project {project.name}: it has sub-projects.")
    try:
        with transaction.atomic():
            project.delete()
    except ProtectedError as exc:
        raise Conflict(f"Project {project.name} still owns {_protected_kinds(exc)}: delete them first.") from exc


def quota_set(*, project: Project, resource: str, limit: int) -> Quota:
    if resource not in Resource.values:
        raise ValidationError(f"Unknown quota resource {resource}.")
    if not -1 <= limit <= INT_MAX:
        raise ValidationError(f"A quota limit is -1 (unlimited) or 0 to {INT_MAX}.")
    quota, _ = Quota.objects.update_or_create(project=project, resource=resource, defaults={"limit": limit})
    return quota


def _locked_quotas(project: Project, resources) -> list[Quota]:
    """The project's quota rows for these resources, locked always in the same (resource) order:
    unordered, PostgreSQL locks them in their physical order, which every update changes, and two
    reservations that take the same rows in opposite orders deadlock."""
    return list(Quota.objects.select_for_update().filter(project=project, resource__in=resources)
                .order_by("resource"))


def quota_reserve(*, project: Project, deltas: dict[str, int]) -> None:
    """Count new usage, or raise QuotaExceeded. Must run inside the caller's transaction, so that
    the usage and the object that uses it commit together; the row lock serializes concurrent
    reservations (on SQLite the IMMEDIATE transaction does)."""
    assert transaction.get_connection().in_atomic_block, "quota_reserve needs a transaction"
    quotas = {q.resource: q for q in _locked_quotas(project, deltas)}
    over = []
    for resource, delta in deltas.items():
        quota = quotas.get(resource)
        if quota is None:
            raise ValidationError(f"Project {project.name} has no {resource} quota.")
        if quota.limit >= 0 and quota.in_use + delta > quota.limit:
            over.append(f"{resource} (limit {quota.limit}, in use {quota.in_use}, requested {delta})")
    if over:
        raise QuotaExceeded(f"Quota exceeded for {', '.join(over)}.")
    for resource, delta in deltas.items():
        quotas[resource].in_use += delta
        quotas[resource].save(update_fields=["in_use", "updated_at"])


def quota_release(*, project: Project, deltas: dict[str, int]) -> None:
    with transaction.atomic():
        for quota in _locked_quotas(project, deltas):
            quota.in_use = max(0, quota.in_use - deltas[quota.resource])
            quota.save(update_fields=["in_use", "updated_at"])


# --- Users ------------------------------------------------------------------------------------


def _clean_username(username) -> str:
    username = _clean_name("user", username, 150)
    try:
        UnicodeUsernameValidator()(username)
    except DjangoValidationError as exc:
        raise ValidationError(f"Invalid input for field 'name': {_django_messages(exc)}") from exc
    return username


def _clean_email(email) -> str:
    email = (email or "").strip()
    if email:
        try:
            validate_email(email)
        except DjangoValidationError as exc:
            raise ValidationError(f"Invalid input for field 'email': {_django_messages(exc)}") from exc
    return email


def _check_password(password, user: User) -> None:
    if not isinstance(password, str) or not password:
        raise ValidationError("Invalid input for field 'password': a password is needed.")
    try:
        validate_password(password, user=user)
    except DjangoValidationError as exc:
        raise ValidationError(f"Invalid input for field 'password': {_django_messages(exc)}") from exc


def generate_password() -> str:
    """A strong random password (about 120 bits), for users made without one."""
    return secrets.token_urlsafe(15)


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str | None = None,
    email: str = "",
    is_admin: bool = False,
    enabled: bool = True,
    description: str = "",
    default_project: Project | None = None,
) -> User:
    """A new user. Without a password the user cannot log in until one is set. `is_admin` makes
    a superuser (a cloud admin everywhere, and on the Django admin site)."""
    username = _clean_username(username)
    email = _clean_email(email)
    if User.objects.filter(username=username).exists():
        raise _duplicate("user", username)
    user = User(
        username=username,
        email=email,
        is_active=enabled,
        description=description or "",
        default_project=default_project,
        is_superuser=is_admin,
        is_staff=is_admin,
    )
    if password is None:
        user.set_unusable_password()
    else:
        _check_password(password, user)
        user.set_password(password)
    user.save()
    return user


def _revoke_user_tokens(user: User) -> None:
    Token.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())


def user_set_password(*, user: User, password: str) -> User:
    """Set a user's password (checked against the password rules) and end their tokens, as
    Keystone does when a password changes."""
    _check_password(password, user)
    user.set_password(password)
    with transaction.atomic():
        user.save(update_fields=["password"])
        _revoke_user_tokens(user)
    return user


def user_change_password(*, user: User, original_password: str, password: str) -> User:
    """A user changing their own password: the original proves it is them (401 if wrong)."""
    if not isinstance(original_password, str) or not user.check_password(original_password):
        raise NotAuthenticated("The original password is not correct.")
    return user_set_password(user=user, password=password)


@transaction.atomic
def user_update(
    *,
    user: User,
    enabled: bool | None = None,
    email: str | None = None,
    name: str | None = None,
    description: str | None = None,
    default_project=_UNSET,
    password: str | None = None,
) -> User:
    """Change a user (Keystone's PATCH /users/{id}). Disabling a user ends their tokens (and their
    application credentials stop working until they are enabled again)."""
    fields = []
    if name is not None and name != user.username:
        name = _clean_username(name)
        if User.objects.filter(username=name).exclude(pk=user.pk).exists():
            raise _duplicate("user", name)
        user.username = name
        fields.append("username")
    if email is not None:
        user.email = _clean_email(email)
        fields.append("email")
    if description is not None:
        user.description = description
        fields.append("description")
    if default_project is not _UNSET:
        user.default_project = default_project
        fields.append("default_project")
    if enabled is not None and enabled != user.is_active:
        user.is_active = enabled
        fields.append("is_active")
        if not enabled:
            _revoke_user_tokens(user)
    if fields:
        user.save(update_fields=fields)
    if password is not None:
        user_set_password(user=user, password=password)
    return user


def user_delete(*, user: User) -> None:
    """Delete a user with their role assignments, tokens and application credentials. A user who
    owns servers, volumes or other resources cannot be deleted (409): disable them instead."""
    try:
        with transaction.atomic():
            user.delete()
    except ProtectedError as exc:
        raise Conflict(f"User {user.username} owns {_protected_kinds(exc)} and cannot be deleted; disable the user "
                       "instead.") from exc


# --- Groups -----------------------------------------------------------------------------------


def group_create(*, name: str, description: str = "") -> Group:
    name = _clean_name("group", name, 64)
    if Group.objects.filter(name=name).exists():
        raise _duplicate("group", name)
    return Group.objects.create(name=name, description=description or "")


def group_update(*, group: Group, name: str | None = None, description: str | None = None) -> Group:
    fields = []
    if name is not None and name != group.name:
        name = _clean_name("group", name, 64)
        if Group.objects.filter(name=name).exclude(pk=group.pk).exists():
            raise _duplicate("group", name)
        group.name = name
        fields.append("name")
    if description is not None:
        group.description = description
        fields.append("description")
    if fields:
        group.save(update_fields=[*fields, "updated_at"])
    return group


def group_delete(*, group: Group) -> None:
    group.delete()


def group_add_user(*, group: Group, user: User) -> None:
    group.users.add(user)


def group_remove_user(*, group: Group, user: User) -> None:
    if not group.users.filter(pk=user.pk).exists():
        raise NotFound(f"User {user.pk.hex} is not in group {group.pk.hex}.")
    group.users.remove(user)


# --- Roles and role assignments ---------------------------------------------------------------


def _clean_role_name(name) -> str:
    name = _clean_name("role", name, 64)
    if not all(c.isalnum() or c in "_-." for c in name):
        raise ValidationError("Invalid input for field 'name': a role name is letters, digits, '_', '-' and '.'.")
    return name


def role_create(*, name: str, description: str = "") -> CustomRole:
    """A custom role. Its name is its id; it can be granted, and gives no powers of its own."""
    name = _clean_role_name(name)
    if role_exists(name=name):
        raise _duplicate("role", name)
    try:
        return CustomRole.objects.create(name=name, description=description or "")
    except IntegrityError as exc:
        raise _duplicate("role", name) from exc


def role_update(*, name: str, new_name: str | None = None, description: str | None = None) -> CustomRole:
    if name in ROLE_RANK:
        raise PermissionDenied(f"The default role {name} cannot be changed.")
    role = CustomRole.objects.filter(name=name).first()
    if role is None:
        raise NotFound(f"Could not find role: {name}.")
    if new_name is not None and new_name != name:
        raise ValidationError("A role's name is its id in cloudmgr and cannot change; create a new role instead.")
    if description is not None:
        role.description = description
        role.save(update_fields=["description", "updated_at"])
    return role


@transaction.atomic
def role_delete(*, name: str) -> None:
    """Delete a custom role, its assignments, and the application credentials that name it (as
    Keystone does)."""
    if name in ROLE_RANK:
        raise PermissionDenied(f"The default role {name} cannot be deleted.")
    deleted, _ = CustomRole.objects.filter(name=name).delete()
    if not deleted:
        raise NotFound(f"Could not find role: {name}.")
    Membership.objects.filter(role=name).delete()
    GroupAssignment.objects.filter(role=name).delete()
    stale = [c.pk for c in ApplicationCredential.objects.only("pk", "roles") if name in c.roles]
    ApplicationCredential.objects.filter(pk__in=stale).delete()


def _known_role(role: str) -> str:
    if not isinstance(role, str) or not role_exists(name=role):
        raise NotFound(f"Could not find role: {role}.")
    return role


def role_grant(*, user: User, project: Project, role: str) -> Membership:
    """Give a user a role on a project (Keystone's PUT /projects/{p}/users/{u}/roles/{r}). Adds to
    the roles they hold there; idempotent."""
    role = _known_role(role)
    membership, _ = Membership.objects.get_or_create(user=user, project=project, role=role)
    return membership


def role_revoke(*, user: User, project: Project, role: str) -> None:
    """Take a role from a user on a project; NotFound if they do not hold it there directly."""
    deleted, _ = Membership.objects.filter(user=user, project=project, role=role).delete()
    if not deleted:
        raise NotFound(
            f"Could not find role assignment with role: {role}, user or group: {user.pk.hex}, "
            f"project, domain, or system: {project.pk.hex}."
        )


@transaction.atomic
def role_set(*, user: User, project: Project, role: str) -> Membership:
    """Make `role` the one default role the user holds on the project (replacing admin, member or
    reader; custom roles stay). For front doors that offer "the user's role" rather than a set."""
    role = _known_role(role)
    Membership.objects.filter(user=user, project=project, role__in=list(ROLE_RANK)).exclude(role=role).delete()
    return role_grant(user=user, project=project, role=role)


def group_role_grant(*, group: Group, project: Project, role: str) -> GroupAssignment:
    role = _known_role(role)
    assignment, _ = GroupAssignment.objects.get_or_create(group=group, project=project, role=role)
    return assignment


def group_role_revoke(*, group: Group, project: Project, role: str) -> None:
    deleted, _ = GroupAssignment.objects.filter(group=group, project=project, role=role).delete()
    if not deleted:
        raise NotFound(
            f"Could not find role assignment with role: {role}, user or group: {group.pk.hex}, "
            f"project, domain, or system: {project.pk.hex}."
        )


# --- Application credentials ------------------------------------------------------------------


def _generate_secret() -> str:
    """64 random bytes, URL-safe, as Keystone makes them."""
    return base64.urlsafe_b64encode(secrets.token_bytes(64)).rstrip(b"=").decode()


def _credential_roles(requested: Iterable[str] | None, held: list[str]) -> list[str]:
    if requested is None:
        return held
    roles: list[str] = []
    for name in requested:
        for role in implied_roles(name) or [name]:
            if role not in roles:
                roles.append(role)
    missing = [r for r in roles if r not in held]
    if missing:
        raise ValidationError(
            "Invalid application credential: Cannot create an application credential with unassigned role "
            f"({', '.join(missing)})."
        )
    return roles


def application_credential_create(
    *,
    user: User,
    project: Project,
    name: str,
    description: str = "",
    expires_at: datetime | None = None,
    roles: Iterable[str] | None = None,
    secret: str | None = None,
    unrestricted: bool = False,
    acting_credential: ApplicationCredential | None = None,
) -> tuple[str, ApplicationCredential]:
    """A new application credential of `user` for `project`, with the given roles (and those they
    imply) or, by default, every role the user holds there. Returns (secret, credential): the
    secret (generated unless given) is stored only as a hash and shown this once.
    `acting_credential`: the credential the request itself came with (a restricted one may not
    make others)."""
    if acting_credential is not None and not acting_credential.unrestricted:
        raise PermissionDenied("Using a restricted application credential to create another is not allowed.")
    name = _clean_name("application credential", name, 255)
    held = project_role_names(user=user, project=project)
    if not held:
        raise PermissionDenied(f"User {user.username} holds no role on project {project.name}.")
    credential_roles = _credential_roles(roles, held)
    if expires_at is not None:
        if timezone.is_naive(expires_at):
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= timezone.now():
            raise ValidationError("Invalid application credential: the expiry is in the past.")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ValidationError("Invalid input for field 'secret': it must be a non-empty string.")
    secret = secret or _generate_secret()
    if ApplicationCredential.objects.filter(user=user, name=name).exists():
        raise _duplicate("application credential", name)
    try:
        credential = ApplicationCredential.objects.create(
            user=user,
            project=project,
            name=name,
            description=description or "",
            secret_hash=make_password(secret),
            roles=credential_roles,
            expires_at=expires_at,
            unrestricted=bool(unrestricted),
        )
    except IntegrityError as exc:  # a concurrent create with the same name
        raise _duplicate("application credential", name) from exc
    return secret, credential


def application_credential_delete(
    *, user: User, credential: ApplicationCredential, acting_credential: ApplicationCredential | None = None
) -> None:
    """Delete a credential, and with it every token it made. `user` (the one acting) must own it
    or be a cloud admin; else NotFound."""
    if credential.user_id != user.pk and not selectors.is_cloud_admin(user=user):
        raise NotFound(f"Could not find application credential: {credential.pk.hex}.")
    if acting_credential is not None and not acting_credential.unrestricted:
        raise PermissionDenied("Using a restricted application credential to delete one is not allowed.")
    credential.delete()


# --- Tokens -----------------------------------------------------------------------------------


def _token_create(
    *,
    user: User,
    project: Project | None,
    domain_scoped: bool,
    methods: Iterable[str],
    expires_at: datetime,
    application_credential: ApplicationCredential | None = None,
    audit_chain_id: str = "",
) -> tuple[str, Token]:
    key = secrets.token_urlsafe(32)
    token = Token.objects.create(
        key_hash=hash_token(key),
        user=user,
        project=project,
        domain_scoped=domain_scoped,
        application_credential=application_credential,
        methods=",".join(dict.fromkeys(methods)),
        audit_chain_id=audit_chain_id,
        expires_at=expires_at,
    )
    return key, token


def _check_scope(*, user: User, project: Project | None, domain_scoped: bool) -> None:
    if not user.is_active:
        raise NotAuthenticated("The account is disabled.")
    if project is not None:
        if not project.enabled:
            raise NotAuthenticated(f"Project {project.pk.hex} is disabled.")
        if not project_role_names(user=user, project=project):
            raise NotAuthenticated(f"User {user.username} has no role on project {project.name}.")
    if domain_scoped and not selectors.is_cloud_admin(user=user):
        raise NotAuthenticated(f"User {user.pk.hex} has no access to domain default.")


def token_issue(
    *, user: User, project: Project | None = None, domain_scoped: bool = False, methods: Iterable[str] = ("password",)
) -> tuple[str, Token]:
    """A new token for the user, scoped to a project they hold a role on, to the domain (cloud
    admins), or unscoped. Returns (key, token); the key is never stored."""
    _check_scope(user=user, project=project, domain_scoped=domain_scoped)
    expires_at = timezone.now() + timedelta(seconds=settings.CLOUDMGR_TOKEN_TTL)
    return _token_create(
        user=user, project=project, domain_scoped=domain_scoped, methods=methods, expires_at=expires_at
    )


def token_issue_for_credential(*, credential: ApplicationCredential) -> tuple[str, Token]:
    """A token from an application credential: scoped to its project, with its roles (those its
    user still holds), expiring no later than the credential."""
    if not selectors.application_credential_roles(credential=credential):
        raise NotAuthenticated(f"User {credential.user.pk.hex} has no access to project {credential.project.pk.hex}.")
    expires_at = timezone.now() + timedelta(seconds=settings.CLOUDMGR_TOKEN_TTL)
    if credential.expires_at is not None:
        expires_at = min(expires_at, credential.expires_at)
    return _token_create(
        user=credential.user,
        project=credential.project,
        domain_scoped=False,
        methods=["application_credential"],
        expires_at=expires_at,
        application_credential=credential,
    )


def token_rescope(
    *, token: Token, project: Project | None = None, domain_scoped: bool = False, scope_requested: bool = True
) -> tuple[str, Token]:
    """Keystone's `token` method: a new token for the same user, to another scope. It keeps the
    original's expiry (re-scoping never extends a login) and joins its audit chain."""
    credential = token.application_credential
    if credential is not None:
        if scope_requested:
            raise PermissionDenied("Using an application credential token to create a scoped token is not allowed.")
        return _token_create(
            user=token.user,
            project=token.project,
            domain_scoped=False,
            methods=["token", *token.method_list],
            expires_at=token.expires_at,
            application_credential=credential,
            audit_chain_id=token.audit_chain_id or token.audit_id,
        )
    _check_scope(user=token.user, project=project, domain_scoped=domain_scoped)
    return _token_create(
        user=token.user,
        project=project,
        domain_scoped=domain_scoped,
        methods=["token", *token.method_list],
        expires_at=token.expires_at,
        audit_chain_id=token.audit_chain_id or token.audit_id,
    )


def token_revoke(*, token: Token) -> None:
    Token.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def tokens_purge(*, before: datetime | None = None) -> int:
    """Delete tokens that expired (revoked or not) before `before` (default: now): they can never
    be used again. Returns how many."""
    deleted, _ = Token.objects.filter(expires_at__lt=before or timezone.now()).delete()
    return deleted
