"""The portal's reads: which project the portal acts in, the identity pages' lists, and the
credentials files (clouds.yaml, openrc) that the API access page hands out."""

import shlex

import yaml
from django.conf import settings
from django.db.models import BooleanField, Count, ExpressionWrapper, OuterRef, Q, QuerySet

from apps.tenants.models import Project, User
from apps.tenants.selectors import (
    REGION,
    cloud_admin_condition,
    project_list,
    project_list_visible,
    service_catalog,
    user_list,
)

SESSION_KEY = "project_id"

# The name of the cloud in the clouds.yaml we hand out (`openstack --os-cloud cloudmgr ...`).
CLOUD_NAME = "cloudmgr"
# cloudmgr has no domains: every user and project is in Keystone's default domain.
DOMAIN_NAME = "Default"


def current_project(*, request) -> Project | None:
    """The project the portal acts in: the one chosen in the session, else the user's first."""
    projects = project_list(user=request.user)
    chosen = request.session.get(SESSION_KEY)
    project = projects.filter(pk=chosen).first() if chosen else None
    return project or projects.first()


# --- API access -------------------------------------------------------------------------------


def auth_url() -> str:
    """Keystone's v3 URL as clients reach it (OS_AUTH_URL)."""
    return f"{settings.CLOUDMGR_PUBLIC_URL}/identity/v3"


def api_endpoints(*, project: Project) -> list[dict]:
    """The public endpoint of every service in the project's catalog: type, name, url."""
    return [
        {"type": service["type"], "name": service["name"], "url": endpoint["url"]}
        for service in service_catalog(project=project)
        for endpoint in service["endpoints"]
        if endpoint["interface"] == "public"
    ]


def clouds_yaml(*, user: User, project: Project, credential=None, secret: str = "") -> str:
    """A clouds.yaml with one cloud, `cloudmgr`. For the user's password (which it never holds:
    openstacksdk asks for it, or takes OS_PASSWORD), scoped to the project; or, with an
    application credential and its secret, for that credential (already scoped)."""
    if credential is not None:
        auth = {
            "auth_url": auth_url(),
            "application_credential_id": credential.id.hex,
            "application_credential_secret": secret,
        }
        cloud = {"auth_type": "v3applicationcredential", "auth": auth}
    else:
        auth = {
            "auth_url": auth_url(),
            "username": user.get_username(),
            "project_id": project.id.hex,
            "project_name": project.name,
            "user_domain_name": DOMAIN_NAME,
            "project_domain_name": DOMAIN_NAME,
        }
        cloud = {"auth": auth}
    cloud.update(region_name=REGION, interface="public", identity_api_version=3)
    header = (
        "# clouds.yaml for cloudmgr: put it in ./ or ~/.config/openstack/, then\n"
        "#   openstack --os-cloud cloudmgr server list\n"
    )
    if credential is not None:
        header += "# It holds an application credential's secret: keep it private (chmod 600).\n"
    else:
        header += "# The password is not in this file: openstack asks for it, or reads OS_PASSWORD.\n"
    return header + yaml.safe_dump({"clouds": {CLOUD_NAME: cloud}}, sort_keys=False, default_flow_style=False)


def _export(name: str, value) -> str:
    return f"export {name}={shlex.quote(str(value))}"


def openrc(*, user: User, project: Project, credential=None, secret: str = "") -> str:
    """A shell file to `source` that sets the OS_* variables for the openstack CLI. For the
    password it asks for the password (never stored in the file); for an application credential
    it sets its id and secret, and unsets the password and project variables it must not mix with."""
    lines = [
        "#!/usr/bin/env bash",
        "# openrc for cloudmgr. Use it with:  source "
        + openrc_filename(user=user, project=project, credential=credential),
        _export("OS_AUTH_URL", auth_url()),
    ]
    if credential is not None:
        lines += [
            "# An application credential is scoped already: no user, password or project variables.",
            "unset OS_USERNAME OS_PASSWORD OS_USER_ID OS_PROJECT_NAME OS_PROJECT_ID",
            "unset OS_TENANT_NAME OS_TENANT_ID OS_TOKEN OS_CLOUD",
            "unset OS_USER_DOMAIN_NAME OS_PROJECT_DOMAIN_NAME OS_USER_DOMAIN_ID OS_PROJECT_DOMAIN_ID",
            _export("OS_AUTH_TYPE", "v3applicationcredential"),
            _export("OS_APPLICATION_CREDENTIAL_ID", credential.id.hex),
            _export("OS_APPLICATION_CREDENTIAL_SECRET", secret),
        ]
    else:
        lines += [
            "unset OS_AUTH_TYPE OS_APPLICATION_CREDENTIAL_ID OS_APPLICATION_CREDENTIAL_SECRET",
            "unset OS_TENANT_NAME OS_TENANT_ID OS_TOKEN OS_CLOUD",
            _export("OS_USERNAME", user.get_username()),
            _export("OS_PROJECT_NAME", project.name),
            _export("OS_PROJECT_ID", project.id.hex),
            _export("OS_USER_DOMAIN_NAME", DOMAIN_NAME),
            _export("OS_PROJECT_DOMAIN_NAME", DOMAIN_NAME),
        ]
    lines += [
        _export("OS_REGION_NAME", REGION),
        "export OS_IDENTITY_API_VERSION=3",
        "export OS_INTERFACE=public",
    ]
    if credential is None:
        lines += [
            # The password is never in the file: ask for it without echoing it.
            'printf "Password for %s in project %s: " "$OS_USERNAME" "$OS_PROJECT_NAME" >&2',
            "read -sr OS_PASSWORD",
            'printf "\\n" >&2',
            "export OS_PASSWORD",
        ]
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-.") or "cloudmgr"


def openrc_filename(*, user: User, project: Project, credential=None) -> str:
    if credential is not None:
        return f"app-cred-{_slug(credential.name)}-openrc.sh"
    return f"{_slug(project.name)}-openrc.sh"


# --- Identity administration (cloud admins) ---------------------------------------------------


def admin_project_list(*, viewer: User) -> QuerySet[Project]:
    """The projects the viewer may see (every one, enabled or not, for a cloud admin), with how
    many users hold a role on each."""
    return project_list_visible(viewer=viewer).annotate(member_count=Count("memberships__user", distinct=True))


def admin_user_list(*, viewer: User) -> QuerySet[User]:
    """The users the viewer may see (every one for a cloud admin), with how many projects each
    holds a role on, and whether they are a cloud admin (a superuser, or `admin` on the admin
    project, directly or through a group)."""
    return user_list(viewer=viewer).annotate(
        project_count=Count("memberships__project", distinct=True),
        cloud_admin=ExpressionWrapper(Q(is_superuser=True) | cloud_admin_condition(OuterRef("pk")), BooleanField()),
    )
