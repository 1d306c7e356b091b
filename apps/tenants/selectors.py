"""Identity reads: who a request is (tokens, passwords, application credentials), what roles they
hold, and the lists and lookups of the Keystone API. Policy on reads lives here too: a viewer who
may not see a user or a credential gets PermissionDenied (another user) or NotFound (another
user's credential), never a silent empty answer."""

import functools
import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Case, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.db.models.query import get_related_populators
from django.urls import Resolver404, resolve
from django.utils import timezone

from apps.tenants.models import (
    ADMIN_PROJECT_NAME,
    DEFAULT_DOMAIN_ID,
    DEFAULT_DOMAIN_NAME,
    ROLE_RANK,
    ApplicationCredential,
    CustomRole,
    Group,
    GroupAssignment,
    Membership,
    Project,
    Quota,
    Role,
    Token,
    User,
)
from cloudmgr.exceptions import NotAuthenticated, NotFound, PermissionDenied, ValidationError
from cloudmgr.models import filter_pk, first_by_name_or_id

AUTH_REQUIRED = "The request you have made requires authentication."

# Descriptions of the default roles (Keystone gives them none; the portal and `role list` show these).
DEFAULT_ROLE_DESCRIPTIONS = {
    Role.ADMIN: "Manages the project's resources; on the admin project, the whole cloud.",
    Role.MEMBER: "Uses and changes the project's resources.",
    Role.READER: "Reads the project's resources, changes nothing.",
}


def hash_token(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# --- Roles ------------------------------------------------------------------------------------

# The roles that may change things; `reader` may only look.
WRITE_ROLES = frozenset({Role.ADMIN, Role.MEMBER})


def role_can_write(role: str | None) -> bool:
    return role in WRITE_ROLES


def _rank_name(rank: int | None) -> str | None:
    """The default role of this rank; None for no role, or custom roles only (rank 0)."""
    for name, value in ROLE_RANK.items():
        if value == rank:
            return name
    return None


def implied_roles(role: str | None) -> list[str]:
    """A default role and the roles it implies, lowest first: member -> [reader, member]."""
    if role not in ROLE_RANK:
        return []
    return [name for name, rank in sorted(ROLE_RANK.items(), key=lambda kv: kv[1]) if rank <= ROLE_RANK[role]]


def highest_role(names: Iterable[str]) -> str | None:
    """The highest default role among these role names (custom roles give no powers)."""
    best = max((ROLE_RANK.get(name, 0) for name in names), default=0)
    return _rank_name(best)


def _assignments_of_user(user: User) -> tuple[QuerySet, QuerySet]:
    """The user's direct role assignments and those of their groups."""
    return Membership.objects.filter(user=user), GroupAssignment.objects.filter(group__users=user)


def project_role_names(*, user: User, project: Project) -> list[str]:
    """Every role the user holds on the project, directly or through a group, with the roles they
    imply, default roles first (reader, member, admin) then custom ones. A cloud admin holds admin
    on every project. Honours the cap of the credential the request came with."""
    direct, through_groups = _assignments_of_user(user)
    names = set(
        direct.filter(project=project)
        .values_list("role", flat=True)
        .union(through_groups.filter(project=project).values_list("role", flat=True))
    )
    if _cloud_admin_uncapped(user):
        names.add(Role.ADMIN)
    cap = getattr(user, "_role_cap", None)
    if cap is not None:
        names &= set(cap)
    default = implied_roles(highest_role(names))
    return default + sorted(n for n in names if n not in ROLE_RANK)


def role_on_project(*, user: User, project: Project) -> str | None:
    """The highest default role the user holds on the project (what policy acts on), or None."""
    cached = getattr(user, "_token_roles", None)
    if cached is not None and cached[0] == project.pk:
        return cached[1]
    return highest_role(project_role_names(user=user, project=project))


def cloud_admin_condition(user_ref) -> Q:
    """A filter condition, for querysets of users (`user_ref` = OuterRef("pk")): holds `admin` on
    the admin project, directly or through a group (superusers are not included)."""
    return Q(Exists(Membership.objects.filter(user=user_ref, project__name=ADMIN_PROJECT_NAME, role=Role.ADMIN))) | Q(
        Exists(GroupAssignment.objects.filter(group__users=user_ref, project__name=ADMIN_PROJECT_NAME, role=Role.ADMIN))
    )


def _cloud_admin_uncapped(user: User) -> bool:
    if user.is_superuser:
        return True
    return User.objects.filter(pk=user.pk).filter(cloud_admin_condition(OuterRef("pk"))).exists()


def is_cloud_admin(*, user: User) -> bool:
    """A cloud operator: a superuser, or a user with the `admin` role on the admin project. A
    request made with an application credential that lacks the admin role is not one."""
    cached = getattr(user, "_cloud_admin", None)
    if cached is not None:
        return cached
    if user is None or not user.is_authenticated:
        return False
    return _cloud_admin_uncapped(user)


def _best_rank(queryset: QuerySet):
    """The highest default-role rank in a queryset of assignments; 0 for custom roles only,
    -1 for none."""
    ranked = (
        queryset.annotate(
            rank=Case(*[When(role=name, then=Value(rank)) for name, rank in ROLE_RANK.items()], default=Value(0))
        )
        .order_by("-rank")
        .values("rank")[:1]
    )
    return Coalesce(Subquery(ranked, output_field=IntegerField()), Value(-1))


# --- Tokens -----------------------------------------------------------------------------------


def _with_roles(tokens: QuerySet[Token]) -> QuerySet[Token]:
    """Annotate the user's best role on the token's project and whether they are a cloud admin,
    so that a token and what it may do come back in one indexed query."""
    user, project = OuterRef("user_id"), OuterRef("project_id")
    return tokens.annotate(
        direct_rank=_best_rank(Membership.objects.filter(user=user, project=project)),
        group_rank=_best_rank(GroupAssignment.objects.filter(group__users=user, project=project)),
        admin_grant=Exists(Membership.objects.filter(user=user, project__name=ADMIN_PROJECT_NAME, role=Role.ADMIN)),
        group_admin_grant=Exists(
            GroupAssignment.objects.filter(group__users=user, project__name=ADMIN_PROJECT_NAME, role=Role.ADMIN)
        ),
    )


@functools.cache
def _tokens_with_roles() -> QuerySet[Token]:
    """Built once per process: building this query costs far more than running it."""
    return _with_roles(Token.objects.select_related("user", "project", "application_credential"))


class _CompiledTokenQuery:
    """The token query compiled once per thread and database connection, then run with the key
    hash as its only changing parameter. Django takes ~1 ms of Python to build and compile this
    query and ~0.06 ms to run it; validating a token is on every API call. The rows become
    objects exactly as Django's ModelIterable makes them (same compiler, converters and related
    populators), so a Django upgrade that changes that shows up in the token tests."""

    _SENTINEL = "key-hash-placeholder"
    _local = threading.local()

    def __init__(self, alias: str):
        self.alias = alias
        queryset = _tokens_with_roles().filter(key_hash=self._SENTINEL)
        self.compiler = queryset.query.get_compiler(using=alias)
        self.sql, params = self.compiler.as_sql()
        self.params = list(params)
        self.key_index = self.params.index(self._SENTINEL)
        info, select = self.compiler.klass_info, self.compiler.select
        start, end = info["select_fields"][0], info["select_fields"][-1] + 1
        self.token_slice = slice(start, end)
        self.init_list = [column[0].target.attname for column in select[start:end]]
        self.related_populators = get_related_populators(info, select, alias)
        self.annotations = dict(self.compiler.annotation_col_map)

    @classmethod
    def for_connection(cls, alias: str = DEFAULT_DB_ALIAS) -> "_CompiledTokenQuery":
        cache_ = cls._local.__dict__.setdefault("by_connection", {})
        key = (alias, id(connections[alias]))
        if key not in cache_:
            cache_[key] = cls(alias)
        return cache_[key]

    def get(self, key_hash: str) -> Token | None:
        params = list(self.params)
        params[self.key_index] = key_hash
        with connections[self.alias].cursor() as cursor:
            cursor.execute(self.sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        row = next(iter(self.compiler.results_iter(results=[[row]])))
        token = Token.from_db(self.alias, self.init_list, row[self.token_slice])
        for populator in self.related_populators:
            populator.populate(row, token)
        for name, position in self.annotations.items():
            setattr(token, name, row[position])
        return token


def _token_by_key(key: str) -> Token | None:
    """The token with this key, its user, project, credential and role annotations; any state."""
    return _CompiledTokenQuery.for_connection().get(hash_token(key))


def _apply_token_roles(token: Token) -> Token:
    """Work out what the token's holder may do, and remember it on the token and the user (which
    the policy, `role_on_project` and `is_cloud_admin` read): `token.role` (the highest default
    role on the token's project, or None) and `token.cloud_admin`."""
    user = token.user
    cloud_admin = user.is_superuser or token.admin_grant or token.group_admin_grant
    rank = max(token.direct_rank, token.group_rank)
    if token.project_id is not None and cloud_admin:
        rank = ROLE_RANK[Role.ADMIN]
    credential = token.application_credential
    if credential is not None:
        # An application credential caps the roles at those it was given.
        cap = max((ROLE_RANK.get(name, 0) for name in credential.roles), default=0)
        rank = min(rank, cap)
        cloud_admin = cloud_admin and Role.ADMIN in credential.roles
        user._role_cap = list(credential.roles)
    token.role = _rank_name(rank) if token.project_id else None
    token.has_project_role = token.project_id is not None and rank >= 0
    if token.domain_scoped:
        token.role = Role.ADMIN if cloud_admin else None
    token.cloud_admin = bool(cloud_admin)
    user._cloud_admin = token.cloud_admin
    user._token_roles = (token.project_id, token.role)
    return token


def _usable(token: Token | None) -> bool:
    if token is None or token.revoked_at is not None or token.expires_at <= timezone.now():
        return False
    if not token.user.is_active:
        return False
    if token.project_id is not None and not token.project.enabled:
        return False
    credential = token.application_credential
    if credential is not None and credential.expires_at is not None and credential.expires_at <= timezone.now():
        return False
    return True


def _token_scope_held(token: Token) -> bool:
    """Does the user still hold a role where the token is scoped? (Unscoped tokens need none.)"""
    if token.project_id is not None:
        return token.has_project_role
    if token.domain_scoped:
        return token.cloud_admin
    return True


def token_authenticate(*, key: str) -> Token:
    """The live token for this key, with its user, project and roles loaded in one query, or
    NotAuthenticated. A project-scoped token whose user no longer holds a role there is dead."""
    token = _token_by_key(key)
    if not _usable(token):
        raise NotAuthenticated(AUTH_REQUIRED)
    _apply_token_roles(token)
    if not _token_scope_held(token):
        raise NotAuthenticated(AUTH_REQUIRED)
    return token


def token_validate(*, viewer: User, key: str) -> Token:
    """The token a caller asks about (`X-Subject-Token`): their own, or anyone's for a cloud
    admin. A token that is unknown, expired or revoked is NotFound (404), as Keystone says."""
    token = _token_by_key(key)
    if not _usable(token):
        raise NotFound("Could not find token.")
    if token.user_id != viewer.pk and not is_cloud_admin(user=viewer):
        raise PermissionDenied("You are not authorized to perform the requested action: identity:validate_token.")
    # Work out its roles without disturbing the viewer's (the token's user is its own object).
    _apply_token_roles(token)
    if not _token_scope_held(token):
        raise NotFound("Could not find token.")
    return token


def token_role_names(*, token: Token) -> list[str]:
    """The roles a token carries, for its body: its application credential's (those its user
    still holds), its project's, or on the domain a cloud admin's."""
    if token.application_credential_id is not None:
        return application_credential_roles(credential=token.application_credential)
    if token.domain_scoped:
        return implied_roles(Role.ADMIN) if is_cloud_admin(user=token.user) else []
    if token.project_id is None:
        return []
    return project_role_names(user=token.user, project=token.project)


# --- Who is asking: passwords and application credentials -------------------------------------


def _check_domain(domain: dict | None) -> None:
    """A name or id of the one domain, or NotAuthenticated (Keystone's answer for another)."""
    if not domain:
        return
    if domain.get("id") not in (None, DEFAULT_DOMAIN_ID) or domain.get("name") not in (None, DEFAULT_DOMAIN_NAME):
        raise NotAuthenticated(AUTH_REQUIRED)


def user_find_for_login(
    *, user_id: str | None = None, name: str | None = None, domain: dict | None = None
) -> User | None:
    """The user a login names, by id or by name (in the default domain); None if there is none."""
    _check_domain(domain)
    if user_id:
        return filter_pk(User.objects.all(), user_id).first()
    if name:
        return User.objects.filter(username=name).first()
    return None


def user_authenticate(
    *, password: str, user_id: str | None = None, name: str | None = None, domain: dict | None = None
) -> User:
    """The enabled user with this id or name and password, or NotAuthenticated. One password
    hash per call, whether or not the user exists (no timing oracle)."""
    user = user_find_for_login(user_id=user_id, name=name, domain=domain)
    if user is None:
        User().set_password(password)  # the same work as for a real user
        raise NotAuthenticated(AUTH_REQUIRED)
    if not user.check_password(password) or not user.is_active:
        raise NotAuthenticated(AUTH_REQUIRED)
    return user


def application_credential_authenticate(
    *, secret: str, credential_id: str | None = None, name: str | None = None, user: dict | None = None
) -> ApplicationCredential:
    """The live credential with this id (or name + user) and secret, or NotAuthenticated."""
    credentials = ApplicationCredential.objects.select_related("user", "project")
    if credential_id:
        credential = filter_pk(credentials, credential_id).first()
    elif name and user:
        owner = user_find_for_login(user_id=user.get("id"), name=user.get("name"), domain=user.get("domain"))
        credential = credentials.filter(user=owner, name=name).first() if owner else None
    else:
        raise ValidationError("Expecting to find id, or name and user, in application_credential.")
    if credential is None:
        make_password(secret)  # the same work as for a real one
        raise NotAuthenticated(AUTH_REQUIRED)
    if not check_password(secret, credential.secret_hash):
        raise NotAuthenticated(AUTH_REQUIRED)
    if credential.expires_at is not None and credential.expires_at <= timezone.now():
        raise NotAuthenticated(f"Error authenticating with application credential: {credential.id.hex} has expired.")
    if not credential.user.is_active or not credential.project.enabled:
        raise NotAuthenticated(AUTH_REQUIRED)
    return credential


def application_credential_roles(*, credential: ApplicationCredential) -> list[str]:
    """The roles a credential confers now: those it was given that its user still holds."""
    held = set(project_role_names(user=credential.user, project=credential.project))
    return [name for name in credential.roles if name in held]


# --- Projects ---------------------------------------------------------------------------------


def project_list(*, user: User) -> QuerySet[Project]:
    """The projects a user may act in (and scope tokens to): every enabled project for a cloud
    admin, else those they hold a role on, directly or through a group."""
    if is_cloud_admin(user=user):
        return Project.objects.filter(enabled=True)
    direct, through_groups = _assignments_of_user(user)
    return Project.objects.filter(enabled=True).filter(
        Q(pk__in=direct.values("project_id")) | Q(pk__in=through_groups.values("project_id"))
    )


def project_get(*, user: User, name_or_id: str) -> Project:
    project = first_by_name_or_id(project_list(user=user), name_or_id)
    if project is None:
        raise NotFound(f"Project {name_or_id} could not be found.")
    return project


def _domain_matches(domain_id: str | None) -> bool:
    return domain_id in (None, "", DEFAULT_DOMAIN_ID)


def project_list_all(
    *,
    name: str | None = None,
    enabled: bool | None = None,
    domain_id: str | None = None,
    parent_id: str | None = None,
    is_domain: bool | None = None,
) -> QuerySet[Project]:
    """Every project (a cloud admin's view), narrowed by Keystone's filters."""
    projects = Project.objects.select_related("parent").order_by("name")
    if not _domain_matches(domain_id) or is_domain:
        return projects.none()
    if name is not None:
        projects = projects.filter(name=name)
    if enabled is not None:
        projects = projects.filter(enabled=enabled)
    if parent_id is not None:
        if parent_id == DEFAULT_DOMAIN_ID:
            projects = projects.filter(parent__isnull=True)
        else:
            projects = projects.filter(parent__in=filter_pk(Project.objects.all(), parent_id))
    return projects


def project_list_visible(*, viewer: User, **filters) -> QuerySet[Project]:
    """`project_list_all` for a cloud admin; for anyone else only the projects they hold a role
    on (so that `openstack project show NAME` works for a member)."""
    projects = project_list_all(**filters)
    if is_cloud_admin(user=viewer):
        return projects
    return projects.filter(pk__in=project_list(user=viewer).values("pk"))


def project_by_id(*, project_id: str) -> Project:
    """A project by id (Keystone's GET /projects/{id}: by id only), or NotFound."""
    project = filter_pk(Project.objects.select_related("parent"), project_id).first()
    if project is None:
        raise NotFound(f"Could not find project: {project_id}.")
    return project


def project_show(*, viewer: User, project_id: str) -> Project:
    """A project for a viewer: a cloud admin sees any; a user, those they hold a role on."""
    project = project_by_id(project_id=project_id)
    if is_cloud_admin(user=viewer):
        return project
    if not project_list(user=viewer).filter(pk=project.pk).exists():
        raise PermissionDenied("You are not authorized to perform the requested action: identity:get_project.")
    return project


def project_for_scope(
    *, user: User, project_id: str | None = None, name: str | None = None, domain: dict | None = None
) -> Project:
    """The enabled project a token is asked for, which the user must hold a role on; else
    NotAuthenticated (Keystone's 401)."""
    _check_domain(domain)
    projects = project_list(user=user)
    project = filter_pk(projects, project_id).first() if project_id else projects.filter(name=name).first()
    if project is None:
        raise NotAuthenticated(f"User {user.pk.hex} has no access to project {project_id or name}.")
    return project


def quota_list(*, project: Project) -> QuerySet[Quota]:
    return Quota.objects.filter(project=project).order_by("resource")


# --- Users ------------------------------------------------------------------------------------


def user_list(
    *, viewer: User | None = None, name: str | None = None, enabled: bool | None = None, domain_id: str | None = None
) -> QuerySet[User]:
    """Users narrowed by Keystone's filters. Without a viewer (a front door that checked for a
    cloud admin already) or for a cloud admin, every user; anyone else sees only themselves (so
    that `openstack user show MYNAME` works)."""
    users = User.objects.order_by("username")
    if viewer is not None and not is_cloud_admin(user=viewer):
        users = users.filter(pk=viewer.pk)
    if not _domain_matches(domain_id):
        return users.none()
    if name is not None:
        users = users.filter(username=name)
    if enabled is not None:
        users = users.filter(is_active=enabled)
    return users


def user_by_id(*, user_id: str) -> User:
    user = filter_pk(User.objects.all(), user_id).first()
    if user is None:
        raise NotFound(f"Could not find user: {user_id}.")
    return user


def user_show(*, viewer: User, user_id: str, action: str = "get_user") -> User:
    """A user as a viewer may see them: themselves, or anyone for a cloud admin; else 403."""
    if viewer.pk.hex == str(user_id).replace("-", "").lower():
        return viewer
    if not is_cloud_admin(user=viewer):
        raise PermissionDenied(f"You are not authorized to perform the requested action: identity:{action}.")
    return user_by_id(user_id=user_id)


def user_self(*, viewer: User, user_id: str, action: str) -> User:
    """Only the user themselves, not even a cloud admin (Keystone's rule for creating
    application credentials); else 403."""
    if viewer.pk.hex != str(user_id).replace("-", "").lower():
        raise PermissionDenied(f"You are not authorized to perform the requested action: identity:{action}.")
    return viewer


def user_by_name_or_id(*, name_or_id: str) -> User:
    """For commands and the portal: a user by name, then by id."""
    user = User.objects.filter(username=name_or_id).first() or filter_pk(User.objects.all(), name_or_id).first()
    if user is None:
        raise NotFound(f"User {name_or_id} does not exist.")
    return user


def project_by_name_or_id(*, name_or_id: str) -> Project:
    project = first_by_name_or_id(Project.objects.all(), name_or_id)
    if project is None:
        raise NotFound(f"Project {name_or_id} does not exist.")
    return project


# --- Groups -----------------------------------------------------------------------------------


def group_list(*, name: str | None = None, domain_id: str | None = None, user: User | None = None) -> QuerySet[Group]:
    groups = Group.objects.order_by("name")
    if not _domain_matches(domain_id):
        return groups.none()
    if name is not None:
        groups = groups.filter(name=name)
    if user is not None:
        groups = groups.filter(users=user)
    return groups


def group_by_id(*, group_id: str) -> Group:
    group = filter_pk(Group.objects.all(), group_id).first()
    if group is None:
        raise NotFound(f"Could not find group: {group_id}.")
    return group


def group_member_list(*, group: Group) -> QuerySet[User]:
    return group.users.order_by("username")


def group_has_user(*, group: Group, user: User) -> bool:
    return group.users.filter(pk=user.pk).exists()


# --- Roles ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleInfo:
    """A role as the API shows it; `id` is its name."""

    name: str
    description: str = ""
    builtin: bool = False

    @property
    def id(self) -> str:
        return self.name


def role_list(*, name: str | None = None, domain_id: str | None = None) -> list[RoleInfo]:
    if domain_id:
        return []  # cloudmgr has no domain-specific roles
    roles = [RoleInfo(name, DEFAULT_ROLE_DESCRIPTIONS[name], True) for name in (Role.ADMIN, Role.MEMBER, Role.READER)]
    roles += [RoleInfo(r.name, r.description) for r in CustomRole.objects.order_by("name")]
    return [r for r in roles if name is None or r.name == name]


def role_get(*, role_id: str) -> RoleInfo:
    if role_id in ROLE_RANK:
        return RoleInfo(role_id, DEFAULT_ROLE_DESCRIPTIONS[role_id], True)
    custom = CustomRole.objects.filter(name=role_id).first()
    if custom is None:
        raise NotFound(f"Could not find role: {role_id}.")
    return RoleInfo(custom.name, custom.description)


def role_exists(*, name: str) -> bool:
    return name in ROLE_RANK or CustomRole.objects.filter(name=name).exists()


# --- Role assignments -------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """One role assignment as Keystone lists it: a user or a group, a project, a role; for an
    effective listing also the group a user's role comes through, or the role it is implied by."""

    role: str
    project: Project
    user: User | None = None
    group: Group | None = None
    via_group: Group | None = None
    prior_role: str | None = None


def user_project_roles(*, user: User, project: Project) -> list[str]:
    """The roles granted to the user on the project directly (not through groups), sorted."""
    return sorted(Membership.objects.filter(user=user, project=project).values_list("role", flat=True))


def group_project_roles(*, group: Group, project: Project) -> list[str]:
    return sorted(GroupAssignment.objects.filter(group=group, project=project).values_list("role", flat=True))


def role_assignment_list(
    *,
    user: User | None = None,
    group: Group | None = None,
    project: Project | None = None,
    role: str | None = None,
    effective: bool = False,
    domain_scope: bool = False,
) -> list[Assignment]:
    """Role assignments, narrowed like Keystone's GET /role_assignments. `effective` lists what
    users actually hold: group grants become one entry per member, and implied roles appear."""
    if domain_scope:
        return []  # no role is granted on the domain itself
    memberships = Membership.objects.select_related("user", "project").order_by(
        "project__name", "user__username", "role"
    )
    grants = GroupAssignment.objects.select_related("group", "project").order_by("project__name", "group__name", "role")
    if project is not None:
        memberships, grants = memberships.filter(project=project), grants.filter(project=project)
    result: list[Assignment] = []
    if not effective:
        if group is None:
            users = memberships.filter(user=user) if user is not None else memberships
            result += [Assignment(role=m.role, project=m.project, user=m.user) for m in users]
        if user is None:
            groups = grants.filter(group=group) if group is not None else grants
            result += [Assignment(role=g.role, project=g.project, group=g.group) for g in groups]
        return [a for a in result if role is None or a.role == role]

    if group is not None:
        return []  # Keystone: effective assignments are of users only
    direct = memberships.filter(user=user) if user is not None else memberships
    result += [Assignment(role=m.role, project=m.project, user=m.user) for m in direct]
    expanded = grants.prefetch_related("group__users")
    for grant in expanded:
        for member in sorted(grant.group.users.all(), key=lambda u: u.username):
            if user is None or member.pk == user.pk:
                result.append(Assignment(role=grant.role, project=grant.project, user=member, via_group=grant.group))
    implied = []
    for item in result:
        for lower in implied_roles(item.role)[:-1]:
            implied.append(
                Assignment(
                    role=lower, project=item.project, user=item.user, via_group=item.via_group, prior_role=item.role
                )
            )
    result += implied
    return [a for a in result if role is None or a.role == role]


# --- Application credentials ------------------------------------------------------------------


def application_credential_list(*, user: User, name: str | None = None) -> QuerySet[ApplicationCredential]:
    """A user's application credentials, oldest first (expired ones too, as Keystone lists them)."""
    credentials = ApplicationCredential.objects.filter(user=user).select_related("project").order_by("created_at")
    if name is not None:
        credentials = credentials.filter(name=name)
    return credentials


def application_credential_get(*, user: User, credential_id: str) -> ApplicationCredential:
    """One of this user's credentials; another user's is NotFound."""
    credential = filter_pk(application_credential_list(user=user), credential_id).first()
    if credential is None:
        raise NotFound(f"Could not find application credential: {credential_id}.")
    return credential


# --- Domains and the catalog ------------------------------------------------------------------


def domain_get(*, domain_id: str) -> dict:
    if domain_id != DEFAULT_DOMAIN_ID:
        raise NotFound(f"Could not find domain: {domain_id}.")
    return {"id": DEFAULT_DOMAIN_ID, "name": DEFAULT_DOMAIN_NAME}


def domain_list(*, name: str | None = None, enabled: bool | None = None) -> list[dict]:
    if (name is not None and name != DEFAULT_DOMAIN_NAME) or enabled is False:
        return []
    return [domain_get(domain_id=DEFAULT_DOMAIN_ID)]


def domain_list_for_user(*, user: User) -> list[dict]:
    """The domains a user may scope a token to: the default one, for cloud admins."""
    return domain_list() if is_cloud_admin(user=user) else []


# The services of the catalog: (type, name, path below the public URL).
CATALOG_SERVICES = [
    ("identity", "keystone", "identity/v3"),
    ("compute", "nova", "compute/v2.1"),
    ("image", "glance", "image"),
    ("network", "neutron", "network"),
    ("block-storage", "cinder", "volume/v3/{project_id}"),
    ("volumev3", "cinderv3", "volume/v3/{project_id}"),
]
REGION = "RegionOne"
INTERFACES = ("public", "internal", "admin")


@functools.cache
def _served(path: str) -> bool:
    """Is this service's API mounted here: does its catalog URL itself resolve? The catalog lists
    only those. Clients discover every service in it (`openstack server list` asks the image
    service for image names) with a GET on the catalog URL, and a 404, or a redirect to the same
    URL with a slash, breaks them."""
    try:
        resolve("/" + path.format(project_id="0" * 32))
    except Resolver404:
        return False
    return True


def catalog_services() -> list[tuple[str, str, str]]:
    return [entry for entry in CATALOG_SERVICES if _served(entry[2])]


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def service_list() -> list[dict]:
    """The services of the catalog, as Keystone's /v3/services lists them."""
    return [
        {"id": _md5(service_type), "type": service_type, "name": name} for service_type, name, _ in catalog_services()
    ]


def endpoint_list() -> list[dict]:
    """Every endpoint, its URL a template where it names the project (`%(project_id)s`)."""
    return [
        {
            "id": _md5(f"{service_type}-{interface}"),
            "service_id": _md5(service_type),
            "interface": interface,
            "region": REGION,
            "region_id": REGION,
            "url": f"{settings.CLOUDMGR_PUBLIC_URL}/{path.format(project_id='%(project_id)s')}",
        }
        for service_type, _, path in catalog_services()
        for interface in INTERFACES
    ]


def service_catalog(*, project: Project | None) -> list[dict]:
    """The Keystone catalog: every service with public, internal and admin endpoints. Without a
    project (a domain-scoped token), services whose URL names the project are left out, as
    Keystone leaves out endpoints it cannot fill in."""
    catalog = []
    project_id = project.id.hex if project else None
    for service_type, name, path in catalog_services():
        if project_id is None and "{project_id}" in path:
            continue
        url = f"{settings.CLOUDMGR_PUBLIC_URL}/{path.format(project_id=project_id)}".rstrip("/")
        endpoints = [
            {
                "id": _md5(f"{service_type}-{interface}"),
                "interface": interface,
                "region": REGION,
                "region_id": REGION,
                "url": url,
            }
            for interface in INTERFACES
        ]
        catalog.append({"type": service_type, "name": name, "id": _md5(service_type), "endpoints": endpoints})
    return catalog
