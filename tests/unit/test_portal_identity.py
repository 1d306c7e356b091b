"""The portal's identity pages with Django's test client: API access (clouds.yaml, openrc,
application credentials), the cloud admins' projects, users and role assignments, and logging in
with a TOTP second factor."""

import base64
import hashlib
import hmac
import os
import struct
import subprocess
import time
import uuid

import pytest
import yaml
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.contrib.auth import authenticate
from django.test import override_settings

from apps.portal import selectors as portal_selectors
from apps.tenants.models import Membership, Project, Quota, Role, User
from apps.tenants.selectors import service_catalog
from apps.tenants.services import role_grant

pytestmark = pytest.mark.django_db

PUBLIC_URL = "https://cloud.example.test:8443"


@pytest.fixture(autouse=True)
def public_url(settings):
    settings.CLOUDMGR_PUBLIC_URL = PUBLIC_URL


def login(client, user):
    client.force_login(user)
    return client


def totp_code(secret: str, at: float | None = None) -> str:
    """RFC 6238: HMAC-SHA1 of the 30 s counter, 6 digits (as authenticator apps do)."""
    counter = int((time.time() if at is None else at) // 30)
    digest = hmac.new(base64.b32decode(secret, casefold=True), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def parse_yaml(content: bytes | str) -> dict:
    return yaml.safe_load(content)


# --- clouds.yaml and openrc -------------------------------------------------------------------


def test_clouds_yaml_for_the_password(world):
    text = portal_selectors.clouds_yaml(user=world.member, project=world.project)
    cloud = parse_yaml(text)["clouds"]["cloudmgr"]
    assert cloud == {
        "auth": {
            "auth_url": f"{PUBLIC_URL}/identity/v3",
            "username": "alice",
            "project_id": world.project.id.hex,
            "project_name": "alpha",
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        },
        "region_name": "RegionOne",
        "interface": "public",
        "identity_api_version": 3,
    }
    assert "password:" not in text  # the client asks for it


def test_clouds_yaml_is_what_openstacksdk_reads(world, tmp_path, monkeypatch):
    from openstack.config.loader import OpenStackConfig

    for name in [k for k in os.environ if k.startswith("OS_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "clouds.yaml"
    path.write_text(portal_selectors.clouds_yaml(user=world.member, project=world.project))
    region = OpenStackConfig(config_files=[str(path)], vendor_files=[], secure_files=[]).get_one(
        cloud="cloudmgr", password="from-the-prompt"
    )
    auth = region.config["auth"]
    assert auth["auth_url"] == f"{PUBLIC_URL}/identity/v3"
    assert auth["username"] == "alice" and auth["project_name"] == "alpha" and auth["password"] == "from-the-prompt"
    assert region.region_name == "RegionOne" and region.config["interface"] == "public"


def test_clouds_yaml_for_an_application_credential(world):
    class Credential:  # what the selector reads of one
        id = uuid.uuid4()
        name = "ci"

    text = portal_selectors.clouds_yaml(
        user=world.member, project=world.project, credential=Credential, secret="s3cr3t"
    )
    cloud = parse_yaml(text)["clouds"]["cloudmgr"]
    assert cloud["auth_type"] == "v3applicationcredential"
    assert cloud["auth"] == {
        "auth_url": f"{PUBLIC_URL}/identity/v3",
        "application_credential_id": Credential.id.hex,
        "application_credential_secret": "s3cr3t",
    }
    assert "username" not in cloud["auth"] and "project_name" not in cloud["auth"]
    assert cloud["region_name"] == "RegionOne" and cloud["identity_api_version"] == 3


def _source(tmp_path, content: str, stdin: str = "") -> dict:
    """Source an openrc in bash and return the OS_* variables it leaves."""
    path = tmp_path / "openrc.sh"
    path.write_text(content)
    out = subprocess.run(
        ["bash", "-c", f"set -e; export OS_CLOUD=stale OS_TOKEN=stale; source {path}; env -0"],
        input=stdin, capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    )
    pairs = (item.split("=", 1) for item in out.stdout.split("\0") if "=" in item)
    return {k: v for k, v in pairs if k.startswith("OS_")}


def test_openrc_asks_for_the_password(world, tmp_path):
    project = Project.objects.create(name="it's $weird")  # quoting must survive shell metacharacters
    content = portal_selectors.openrc(user=world.member, project=project)
    assert "read -sr OS_PASSWORD" in content and "pw-alice" not in content
    env = _source(tmp_path, content, stdin="typed secret\n")
    assert env == {
        "OS_AUTH_URL": f"{PUBLIC_URL}/identity/v3",
        "OS_USERNAME": "alice",
        "OS_PROJECT_NAME": "it's $weird",
        "OS_PROJECT_ID": project.id.hex,
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_REGION_NAME": "RegionOne",
        "OS_IDENTITY_API_VERSION": "3",
        "OS_INTERFACE": "public",
        "OS_PASSWORD": "typed secret",
    }


def test_openrc_for_an_application_credential(world, tmp_path):
    class Credential:
        id = uuid.uuid4()
        name = "ci runner"

    content = portal_selectors.openrc(user=world.member, project=world.project, credential=Credential, secret="s3")
    assert "read -sr" not in content
    env = _source(tmp_path, content)
    assert env == {
        "OS_AUTH_URL": f"{PUBLIC_URL}/identity/v3",
        "OS_AUTH_TYPE": "v3applicationcredential",
        "OS_APPLICATION_CREDENTIAL_ID": Credential.id.hex,
        "OS_APPLICATION_CREDENTIAL_SECRET": "s3",
        "OS_REGION_NAME": "RegionOne",
        "OS_IDENTITY_API_VERSION": "3",
        "OS_INTERFACE": "public",
    }
    assert portal_selectors.openrc_filename(user=world.member, project=world.project, credential=Credential) == (
        "app-cred-ci-runner-openrc.sh"
    )


# --- API access page --------------------------------------------------------------------------


def test_api_access_page_lists_the_catalog(client, world):
    login(client, world.reader)  # any role may use the API (a reader only to look)
    r = client.get("/identity/api-access/")
    assert r.status_code == 200
    body = r.content.decode()
    assert f"{PUBLIC_URL}/identity/v3" in body and f"{PUBLIC_URL}/compute/v2.1" in body
    # Every service of the project's catalog, with its public URL.
    for service in service_catalog(project=world.project):
        public = next(e["url"] for e in service["endpoints"] if e["interface"] == "public")
        assert f'data-service-type="{service["type"]}"' in body and public in body
    assert 'href="/identity/api-access/clouds.yaml"' in body and 'href="/identity/api-access/openrc.sh"' in body


def test_downloads_follow_the_project_switcher(client, world):
    role_grant(user=world.member, project=world.other_project, role=Role.READER)
    login(client, world.member)
    r = client.get("/identity/api-access/clouds.yaml")
    assert r.status_code == 200 and r["Content-Disposition"] == 'attachment; filename="clouds.yaml"'
    assert r["Cache-Control"] == "no-store"
    assert parse_yaml(r.content)["clouds"]["cloudmgr"]["auth"]["project_name"] == "alpha"

    r = client.post("/project/", {"project": str(world.other_project.pk), "next": "/identity/api-access/"})
    assert r.status_code == 302 and r["Location"] == "/identity/api-access/"
    auth = parse_yaml(client.get("/identity/api-access/clouds.yaml").content)["clouds"]["cloudmgr"]["auth"]
    assert auth["project_name"] == "beta" and auth["project_id"] == world.other_project.id.hex

    r = client.get("/identity/api-access/openrc.sh")
    assert r["Content-Disposition"] == 'attachment; filename="beta-openrc.sh"'
    assert "export OS_PROJECT_NAME=beta" in r.content.decode()


def test_api_access_needs_a_login(client, world):
    r = client.get("/identity/api-access/clouds.yaml")
    assert r.status_code == 302 and r["Location"].startswith("/accounts/login/?next=/identity/api-access/clouds.yaml")


# --- application credentials ------------------------------------------------------------------


def test_application_credential_secret_is_shown_once(client, world):
    from apps.tenants.selectors import application_credential_list

    login(client, world.member)
    r = client.post("/identity/application-credentials/create/", {"name": "ci", "description": "the CI runner"})
    assert r.status_code == 200, r.content.decode()[:2000]
    credential = application_credential_list(user=world.member).get(name="ci")
    secret = r.context["secret"]
    assert secret and secret in r.content.decode() and "no-store" in r["Cache-Control"]
    assert credential.id.hex in r.content.decode()

    # Never again: not on the API access page, nor in the database in clear text.
    page = client.get("/identity/api-access/").content.decode()
    assert "ci" in page and credential.id.hex in page and secret not in page
    stored = type(credential).objects.filter(pk=credential.pk).values().first()
    assert not any(secret in str(value) for value in stored.values())

    # The page's download buttons post the secret back; the file holds it.
    file_url = f"/identity/application-credentials/{credential.pk}/file/"
    r = client.post(file_url, {"secret": secret, "format": "clouds.yaml"})
    assert r.status_code == 200 and r["Content-Disposition"] == 'attachment; filename="clouds.yaml"'
    cloud = parse_yaml(r.content)["clouds"]["cloudmgr"]
    assert cloud["auth_type"] == "v3applicationcredential"
    assert cloud["auth"]["application_credential_id"] == credential.id.hex
    assert cloud["auth"]["application_credential_secret"] == secret
    r = client.post(file_url, {"secret": secret, "format": "openrc"})
    assert r["Content-Disposition"] == 'attachment; filename="app-cred-ci-openrc.sh"'
    assert f"OS_APPLICATION_CREDENTIAL_ID={credential.id.hex}" in r.content.decode() and secret in r.content.decode()


def test_application_credential_expiry_must_be_in_the_future(client, world):
    login(client, world.member)
    r = client.post("/identity/application-credentials/create/", {"name": "old", "expires_at": "2001-01-01T00:00"})
    assert r.status_code == 400 and b"must be in the future" in r.content


def test_application_credential_delete_and_other_users_cannot(client, world):
    from apps.tenants.selectors import application_credential_list
    from apps.tenants.services import application_credential_create

    _, credential = application_credential_create(user=world.member, project=world.project, name="ci")
    login(client, world.outsider)
    r = client.post(f"/identity/application-credentials/{credential.pk}/delete/", follow=True)
    assert b"Could not find application credential" in r.content
    assert application_credential_list(user=world.member).filter(pk=credential.pk).exists()
    r = client.post(f"/identity/application-credentials/{credential.pk}/file/", {"secret": "x", "format": "openrc"})
    assert r.status_code == 302

    login(client, world.member)
    r = client.get(f"/identity/application-credentials/{credential.pk}/delete/")
    assert r.status_code == 200 and b"Delete application credential ci?" in r.content
    r = client.post(f"/identity/application-credentials/{credential.pk}/delete/", HTTP_HX_REQUEST="true")
    assert r["HX-Redirect"] == "/identity/api-access/"
    assert not application_credential_list(user=world.member).filter(pk=credential.pk).exists()


# --- cloud admins only ------------------------------------------------------------------------

ADMIN_PAGES = [
    "/identity/projects/", "/identity/projects/create/",
    "/identity/users/", "/identity/users/create/",
    "/identity/roles/",
]


@pytest.mark.parametrize("who", ["member", "reader", "outsider"])
def test_admin_pages_refuse_non_admins(client, world, who):
    user = getattr(world, who)
    login(client, user)
    for url in ADMIN_PAGES + [f"/identity/projects/{world.project.pk}/"]:
        r = client.get(url)
        assert r.status_code == 403 and b"for cloud administrators" in r.content, url
    posts = {
        "/identity/projects/create/": {"name": "sneaky"},
        "/identity/users/create/": {"username": "sneaky", "password": "Zq9!long-enough"},
        "/identity/roles/grant/": {"user": str(user.pk), "project": str(world.project.pk), "role": "admin"},
        f"/identity/projects/{world.project.pk}/quotas/": {"resource": "instances", "limit": "999"},
        f"/identity/users/{world.admin.pk}/enable/": {"enabled": "0"},
    }
    for url, data in posts.items():
        assert client.post(url, data).status_code == 403, url
    assert not Project.objects.filter(name="sneaky").exists() and not User.objects.filter(username="sneaky").exists()
    assert Quota.objects.get(project=world.project, resource="instances").limit == 10
    world.admin.refresh_from_db()
    assert world.admin.is_active
    assert Membership.objects.get(user=world.member, project=world.project).role == Role.MEMBER


def test_navbar_shows_identity_menu_to_admins_only(client, world):
    login(client, world.member)
    body = client.get("/identity/api-access/").content.decode()
    assert 'id="identity-menu"' not in body and ">API access</a>" in body
    login(client, world.admin)
    body = client.get("/identity/api-access/").content.decode()
    assert 'id="identity-menu"' in body and 'href="/identity/projects/"' in body and 'href="/accounts/2fa/"' in body


def test_anonymous_admin_page_goes_to_login(client, db):
    r = client.get("/identity/users/")
    assert r.status_code == 302 and r["Location"].startswith("/accounts/login/?next=/identity/users/")


def test_admin_creates_a_project_and_edits_a_quota(client, world):
    login(client, world.admin)
    r = client.post("/identity/projects/create/", {"name": "gamma", "description": "third"})
    project = Project.objects.get(name="gamma")
    assert r.status_code == 302 and r["Location"] == f"/identity/projects/{project.pk}/"
    assert project.description == "third" and project.quotas.count() == 11

    r = client.post("/identity/projects/create/", {"name": "gamma"})
    assert r.status_code == 200 and b"Duplicate entry" in r.content

    r = client.get(f"/identity/projects/{world.project.pk}/")
    body = r.content.decode()
    assert r.status_code == 200 and "alice" in body and "rita" in body and 'id="quota-limit-instances"' in body

    r = client.post(f"/identity/projects/{project.pk}/quotas/", {"resource": "cores", "limit": "64"}, follow=True)
    assert b"The cores quota of gamma is now 64." in r.content
    assert Quota.objects.get(project=project, resource="cores").limit == 64
    client.post(f"/identity/projects/{project.pk}/quotas/", {"resource": "ram", "limit": "-1"})
    assert Quota.objects.get(project=project, resource="ram").limit == -1
    r = client.post(f"/identity/projects/{project.pk}/quotas/", {"resource": "ram", "limit": "-5"}, follow=True)
    assert b"was not changed" in r.content and Quota.objects.get(project=project, resource="ram").limit == -1
    r = client.post(f"/identity/projects/{project.pk}/quotas/", {"resource": "bogus", "limit": "5"}, follow=True)
    assert b"Unknown quota resource" in r.content

    body = client.get("/identity/projects/").content.decode()
    assert "gamma" in body and "alpha" in body and "beta" in body


def test_admin_creates_users(client, world):
    login(client, world.admin)
    r = client.post(
        "/identity/users/create/", {"username": "carol", "email": "carol@example.test", "password": "Zq9!long-enough"}
    )
    carol = User.objects.get(username="carol")
    assert r.status_code == 302 and r["Location"] == f"/identity/roles/?user={carol.pk}"
    assert carol.email == "carol@example.test" and not carol.is_superuser
    assert authenticate(username="carol", password="Zq9!long-enough") == carol

    # No password: one is generated and shown on the answer, once.
    r = client.post("/identity/users/create/", {"username": "dave", "is_admin": "on"})
    assert r.status_code == 200 and "no-store" in r["Cache-Control"]
    password = r.context["password"]
    assert len(password) >= 16 and password in r.content.decode()
    dave = User.objects.get(username="dave")
    assert dave.is_superuser and authenticate(username="dave", password=password) == dave
    assert password not in client.get("/identity/users/").content.decode()

    r = client.post("/identity/users/create/", {"username": "erin", "password": "password"})
    assert r.status_code == 200 and b"too common" in r.content and not User.objects.filter(username="erin").exists()
    assert b'value="erin"' in r.content  # the form keeps what was typed
    r = client.post("/identity/users/create/", {"username": "carol"})
    assert b"Duplicate entry" in r.content


def test_admin_grants_and_revokes_roles(client, world):
    login(client, world.admin)
    r = client.get(f"/identity/roles/?project={world.project.pk}")
    assert r.status_code == 200 and b'data-user="alice"' in r.content and b'data-user="bob"' not in r.content
    grant = {"user": str(world.outsider.pk), "project": str(world.project.pk)}
    r = client.post(
        "/identity/roles/grant/", {**grant, "role": "reader", "next": f"/identity/roles/?project={world.project.pk}"}
    )
    assert r.status_code == 302 and r["Location"] == f"/identity/roles/?project={world.project.pk}"
    membership = Membership.objects.get(user=world.outsider, project=world.project)
    assert membership.role == Role.READER
    r = client.post("/identity/roles/grant/", {**grant, "role": "god"})
    assert r.status_code == 400 and Membership.objects.get(pk=membership.pk).role == Role.READER

    revoke = {"user": str(world.outsider.pk), "project": str(world.project.pk), "role": "reader"}
    r = client.post("/identity/roles/revoke/", {**revoke, "next": "https://evil.example/"})
    assert r.status_code == 302 and r["Location"] == "/identity/roles/"
    assert not Membership.objects.filter(pk=membership.pk).exists()
    r = client.post("/identity/roles/revoke/", revoke, follow=True)
    assert b"Could not find role assignment" in r.content
    r = client.post("/identity/roles/revoke/", {**revoke, "user": "nope"}, follow=True)
    assert b"No role was revoked" in r.content


def test_admin_disables_and_enables_a_user(client, world):
    login(client, world.admin)
    r = client.post(f"/identity/users/{world.member.pk}/enable/", {"enabled": "0"}, HTTP_HX_REQUEST="true")
    assert r["HX-Redirect"] == "/identity/users/"
    world.member.refresh_from_db()
    assert not world.member.is_active
    assert authenticate(username="alice", password="pw-alice-123") is None
    r = client.post(f"/identity/users/{world.member.pk}/enable/", {"enabled": "1"}, follow=True)
    assert b"User alice is enabled." in r.content
    world.member.refresh_from_db()
    assert world.member.is_active


# --- two-factor login -------------------------------------------------------------------------


@override_settings(ACCOUNT_RATE_LIMITS=False)
def test_login_asks_for_the_totp_code(client, world):
    secret = generate_totp_secret()
    TOTP.activate(world.member, secret)
    assert Authenticator.objects.filter(user=world.member, type="totp").exists()

    r = client.post("/accounts/login/", {"login": "alice", "password": "pw-alice-123"})
    assert r.status_code == 302 and r["Location"] == "/accounts/2fa/authenticate/"
    # Not logged in yet.
    assert client.get("/instances/").status_code == 302

    r = client.get("/accounts/2fa/authenticate/")
    assert r.status_code == 200 and b'autocomplete="one-time-code"' in r.content
    wrong = f"{(int(totp_code(secret)) + 1) % 1_000_000:06d}"
    r = client.post("/accounts/2fa/authenticate/", {"code": wrong})
    assert r.status_code == 200 and b"Incorrect code" in r.content
    assert client.get("/instances/").status_code == 302

    # At the very end of a 30 s step the code could be stale by the time it arrives.
    if 30 - time.time() % 30 < 2:
        time.sleep(2.1)
    r = client.post("/accounts/2fa/authenticate/", {"code": totp_code(secret)})
    assert r.status_code == 302 and r["Location"] == "/"
    assert client.get("/instances/").status_code == 200


def test_totp_activation_page_shows_the_qr_code_and_secret(client, world):
    login(client, world.member)
    # allauth asks for the password again before a second factor is added.
    r = client.get("/accounts/2fa/totp/activate/")
    assert r.status_code == 302 and r["Location"].startswith("/accounts/reauthenticate/")
    r = client.post(r["Location"], {"password": "pw-alice-123"})
    assert r.status_code == 302 and r["Location"] == "/accounts/2fa/totp/activate/"
    r = client.get("/accounts/2fa/totp/activate/")
    body = r.content.decode()
    assert r.status_code == 200 and "<svg" in body and 'data-testid="totp-secret"' in body
    secret = r.context["form"].secret
    r = client.post("/accounts/2fa/totp/activate/", {"code": "000000" if totp_code(secret) != "000000" else "111111"})
    assert r.status_code == 200 and b"Incorrect code" in r.content
    r = client.post("/accounts/2fa/totp/activate/", {"code": totp_code(secret)})
    assert r.status_code == 302 and r["Location"] == "/accounts/2fa/recovery-codes/"
    assert Authenticator.objects.filter(user=world.member, type="totp").exists()
    r = client.get("/accounts/2fa/recovery-codes/")
    assert r.status_code == 200 and b"recovery_codes" in r.content


def test_password_change_in_the_portal_ends_api_tokens(client, world):
    from apps.tenants.models import Token

    world.token(world.member)
    login(client, world.member)
    r = client.post("/accounts/password/change/", {
        "oldpassword": "pw-alice-123", "password1": "Another-pass-456", "password2": "Another-pass-456",
    })
    assert r.status_code == 302, r.content.decode()[:2000]
    assert authenticate(username="alice", password="Another-pass-456") is not None
    assert not Token.objects.filter(user=world.member, revoked_at__isnull=True).exists()
