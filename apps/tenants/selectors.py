import hashlib

from django.conf import settings
from django.contrib.auth import authenticate
from django.db.models import QuerySet
from django.utils import timezone

from apps.tenants.models import Membership, Project, Quota, Role, Token, User
from cloudmgr.exceptions import NotAuthenticated, NotFound
from cloudmgr.models import filter_pk, first_by_name_or_id


def hash_token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def token_authenticate(*, key: str) -> Token:
    """The live token for this key, with its user and project loaded, or NotAuthenticated."""
    token = (
        Token.objects.select_related("user", "project")
        .filter(key_hash=hash_token(key), revoked_at__isnull=True, expires_at__gt=timezone.now())
        .first()
    )
    if token is None or not token.user.is_active:
        raise NotAuthenticated("The request you have made requires authentication.")
    return token


def user_authenticate(*, request, username: str | None, user_id: str | None, password: str) -> User:
    """The user with this name (or id) and password, or NotAuthenticated."""
    if not username and user_id:
        username = filter_pk(User.objects.all(), user_id).values_list("username", flat=True).first()
    user = authenticate(request, username=username, password=password) if username else None
    if user is None:
        raise NotAuthenticated("The request you have made requires authentication.")
    return user


def is_cloud_admin(*, user: User) -> bool:
    return user.is_superuser


def role_on_project(*, user: User, project: Project) -> str | None:
    if is_cloud_admin(user=user):
        return Role.ADMIN
    membership = Membership.objects.filter(user=user, project=project).only("role").first()
    return membership.role if membership else None


# The roles that may change things; `reader` may only look.
WRITE_ROLES = frozenset({Role.ADMIN, Role.MEMBER})


def role_can_write(role: str | None) -> bool:
    return role in WRITE_ROLES


def project_list(*, user: User) -> QuerySet[Project]:
    """The projects a user may act in: every project for a cloud admin, else their memberships."""
    if is_cloud_admin(user=user):
        return Project.objects.filter(enabled=True)
    return Project.objects.filter(enabled=True, memberships__user=user).distinct()


def project_get(*, user: User, name_or_id: str) -> Project:
    project = first_by_name_or_id(project_list(user=user), name_or_id)
    if project is None:
        raise NotFound(f"Project {name_or_id} could not be found.")
    return project


def quota_list(*, project: Project) -> QuerySet[Quota]:
    return Quota.objects.filter(project=project).order_by("resource")


# The services in the catalog: (type, name, path below the public URL).
CATALOG_SERVICES = [
    ("identity", "keystone", "identity/v3"),
    ("compute", "nova", "compute/v2.1"),
    ("image", "glance", "image"),
    ("network", "neutron", "network"),
    ("block-storage", "cinder", "volume/v3/{project_id}"),
    ("volumev3", "cinderv3", "volume/v3/{project_id}"),
]
REGION = "RegionOne"


def service_catalog(*, project: Project | None) -> list[dict]:
    """The Keystone catalog: every service with public, internal and admin endpoints."""
    catalog = []
    project_id = project.id.hex if project else ""
    for service_type, name, path in CATALOG_SERVICES:
        url = f"{settings.CLOUDMGR_PUBLIC_URL}/{path.format(project_id=project_id)}".rstrip("/")
        service_id = hashlib.md5(service_type.encode(), usedforsecurity=False).hexdigest()
        endpoints = [
            {
                "id": hashlib.md5(f"{service_type}-{interface}".encode(), usedforsecurity=False).hexdigest(),
                "interface": interface,
                "region": REGION,
                "region_id": REGION,
                "url": url,
            }
            for interface in ("public", "internal", "admin")
        ]
        catalog.append({"type": service_type, "name": name, "id": service_id, "endpoints": endpoints})
    return catalog
