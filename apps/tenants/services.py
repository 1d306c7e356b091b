import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.tenants.models import Membership, Project, Quota, Resource, Role, Token, User
from apps.tenants.selectors import hash_token, role_on_project
from cloudmgr.exceptions import Conflict, NotAuthenticated, QuotaExceeded, ValidationError


@transaction.atomic
def project_create(*, name: str, description: str = "") -> Project:
    if Project.objects.filter(name=name).exists():
        raise Conflict(f"Project {name} already exists.")
    project = Project.objects.create(name=name, description=description)
    defaults = settings.CLOUDMGR_DEFAULT_QUOTAS
    Quota.objects.bulk_create(
        Quota(project=project, resource=resource, limit=defaults[resource]) for resource in Resource.values
    )
    return project


def project_ensure(*, name: str, description: str = "") -> Project:
    project = Project.objects.filter(name=name).first()
    return project or project_create(name=name, description=description)


def user_create(*, username: str, password: str, email: str = "", is_admin: bool = False) -> User:
    if User.objects.filter(username=username).exists():
        raise Conflict(f"User {username} already exists.")
    if is_admin:
        return User.objects.create_superuser(username=username, email=email, password=password)
    return User.objects.create_user(username=username, email=email, password=password)


def role_grant(*, user: User, project: Project, role: str) -> Membership:
    if role not in Role.values:
        raise ValidationError(f"Unknown role {role}; roles are {', '.join(Role.values)}.")
    membership, _ = Membership.objects.update_or_create(user=user, project=project, defaults={"role": role})
    return membership


def quota_set(*, project: Project, resource: str, limit: int) -> Quota:
    if resource not in Resource.values:
        raise ValidationError(f"Unknown quota resource {resource}.")
    quota, _ = Quota.objects.update_or_create(project=project, resource=resource, defaults={"limit": limit})
    return quota


def quota_reserve(*, project: Project, deltas: dict[str, int]) -> None:
    """Count new usage, or raise QuotaExceeded. Must run inside the caller's transaction, so that
    the usage and the object that uses it commit together; the row lock serializes concurrent
    reservations (on SQLite the IMMEDIATE transaction does)."""
    assert transaction.get_connection().in_atomic_block, "quota_reserve needs a transaction"
    quotas = {q.resource: q for q in Quota.objects.select_for_update().filter(project=project, resource__in=deltas)}
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
        for quota in Quota.objects.select_for_update().filter(project=project, resource__in=deltas):
            quota.in_use = max(0, quota.in_use - deltas[quota.resource])
            quota.save(update_fields=["in_use", "updated_at"])


def token_issue(*, user: User, project: Project | None) -> tuple[str, Token]:
    """A new token for the user, scoped to a project they have a role on. Returns (key, token);
    the key is never stored."""
    if not user.is_active:
        raise NotAuthenticated("The account is disabled.")
    if project is not None and role_on_project(user=user, project=project) is None:
        raise NotAuthenticated(f"User {user.username} has no role on project {project.name}.")
    key = secrets.token_urlsafe(32)
    token = Token.objects.create(
        key_hash=hash_token(key),
        user=user,
        project=project,
        expires_at=timezone.now() + timedelta(seconds=settings.CLOUDMGR_TOKEN_TTL),
    )
    return key, token


def token_revoke(*, token: Token) -> None:
    Token.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
