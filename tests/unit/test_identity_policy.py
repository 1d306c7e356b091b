"""Identity policy, generically: every endpoint refuses a missing, expired or revoked token (401);
admin resources refuse members and readers (403); who a cloud admin is (Keystone-like: `admin` on
the admin project, directly or through a group, or a superuser); Keystone's error body."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from apps.tenants import services
from apps.tenants.models import Role, Token

pytestmark = pytest.mark.django_db

V3 = "/identity/v3"
ID = "0123456789abcdef0123456789abcdef"

# (method, path) of every identity endpoint that needs a token; {u}/{p}/{g} are filled in.
AUTHENTICATED = [
    ("get", "auth/tokens"),
    ("head", "auth/tokens"),
    ("delete", "auth/tokens"),
    ("get", "auth/projects"),
    ("get", "auth/domains"),
    ("get", "auth/catalog"),
    ("get", "domains"),
    ("post", "domains"),
    ("get", "domains/default"),
    ("patch", "domains/default"),
    ("delete", "domains/default"),
    ("get", "services"),
    ("get", "endpoints"),
    ("get", "regions"),
    ("get", "projects"),
    ("post", "projects"),
    ("get", "projects/{p}"),
    ("patch", "projects/{p}"),
    ("delete", "projects/{p}"),
    ("get", "projects/{p}/users/{u}/roles"),
    ("put", "projects/{p}/users/{u}/roles/member"),
    ("head", "projects/{p}/users/{u}/roles/member"),
    ("delete", "projects/{p}/users/{u}/roles/member"),
    ("get", "projects/{p}/groups/{g}/roles"),
    ("put", "projects/{p}/groups/{g}/roles/member"),
    ("head", "projects/{p}/groups/{g}/roles/member"),
    ("delete", "projects/{p}/groups/{g}/roles/member"),
    ("get", "role_assignments"),
    ("get", "users"),
    ("post", "users"),
    ("get", "users/{u}"),
    ("patch", "users/{u}"),
    ("delete", "users/{u}"),
    ("get", "users/{u}/projects"),
    ("get", "users/{u}/groups"),
    ("get", "users/{u}/application_credentials"),
    ("post", "users/{u}/application_credentials"),
    ("get", f"users/{{u}}/application_credentials/{ID}"),
    ("delete", f"users/{{u}}/application_credentials/{ID}"),
    ("get", "groups"),
    ("post", "groups"),
    ("get", "groups/{g}"),
    ("patch", "groups/{g}"),
    ("delete", "groups/{g}"),
    ("get", "groups/{g}/users"),
    ("put", "groups/{g}/users/{u}"),
    ("head", "groups/{g}/users/{u}"),
    ("delete", "groups/{g}/users/{u}"),
    ("get", "roles"),
    ("post", "roles"),
    ("get", "roles/member"),
    ("patch", "roles/member"),
    ("delete", "roles/member"),
]

# Cloud admins only: a member or a reader of a project gets 403 (users reading themselves and
# their own credentials are in test_identity_resources).
ADMIN_ONLY = [
    ("post", "domains"),
    ("patch", "domains/default"),
    ("delete", "domains/default"),
    ("get", "services"),
    ("get", "endpoints"),
    ("get", "regions"),
    ("post", "projects"),
    ("patch", "projects/{p}"),
    ("delete", "projects/{p}"),
    ("get", "projects/{p}/users/{u}/roles"),
    ("put", "projects/{p}/users/{u}/roles/member"),
    ("head", "projects/{p}/users/{u}/roles/member"),
    ("delete", "projects/{p}/users/{u}/roles/member"),
    ("get", "projects/{p}/groups/{g}/roles"),
    ("put", "projects/{p}/groups/{g}/roles/member"),
    ("get", "role_assignments"),
    ("post", "users"),
    ("patch", "users/{u}"),
    ("delete", "users/{u}"),
    ("get", "users/{other}"),
    ("get", "users/{other}/projects"),
    ("get", "users/{other}/application_credentials"),
    ("get", "groups"),
    ("post", "groups"),
    ("get", "groups/{g}"),
    ("patch", "groups/{g}"),
    ("delete", "groups/{g}"),
    ("get", "groups/{g}/users"),
    ("put", "groups/{g}/users/{u}"),
    ("get", "roles"),
    ("post", "roles"),
    ("get", "roles/member"),
    ("delete", "roles/member"),
]


@pytest.fixture(autouse=True)
def fresh_login_counters():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def group(world):
    return services.group_create(name="devs")


def fill(path, world, group):
    return path.format(p=world.project.pk.hex, u=world.member.pk.hex, g=group.pk.hex, other=world.outsider.pk.hex)


def call(token, method, path, world, group, **extra):
    c = APIClient()
    if token:
        c.credentials(HTTP_X_AUTH_TOKEN=token)
    body = {} if method in ("post", "put", "patch") else None
    kwargs = {"format": "json"} if body is not None else {}
    return getattr(c, method)(f"{V3}/{fill(path, world, group)}", body, HTTP_X_SUBJECT_TOKEN="x", **kwargs, **extra)


def assert_error(resp, code, where):
    assert resp.status_code == code, (where, resp.status_code, resp.content)
    if resp.request["REQUEST_METHOD"] != "HEAD":
        error = resp.json()["error"]
        assert error["code"] == code and error["title"] and error["message"], where


@pytest.mark.parametrize("method,path", AUTHENTICATED)
def test_no_token_is_401(world, group, method, path):
    resp = call(None, method, path, world, group)
    assert_error(resp, 401, (method, path))
    assert resp["WWW-Authenticate"].startswith("Keystone")


def test_bad_expired_and_revoked_tokens_are_401_everywhere(world, group):
    expired, revoked = world.token(world.admin), world.token(world.admin)
    Token.objects.filter(key_hash=services.hash_token(expired)).update(expires_at=timezone.now() - timedelta(seconds=1))
    services.token_revoke(token=Token.objects.get(key_hash=services.hash_token(revoked)))
    for method, path in AUTHENTICATED:
        for token in ("not-a-token", expired, revoked):
            assert_error(call(token, method, path, world, group), 401, (method, path))


@pytest.mark.parametrize("who", ["member", "reader"])
def test_admin_resources_are_403_for_members_and_readers(world, group, who):
    token = world.token(getattr(world, who))
    for method, path in ADMIN_ONLY:
        assert_error(call(token, method, path, world, group), 403, (who, method, path))


def test_admin_role_on_the_admin_project_makes_a_cloud_admin(world, group):
    ops = services.project_ensure(name="admin")
    carol = services.user_create(username="carol", password="Carol-pass-123")
    services.role_grant(user=carol, project=ops, role=Role.ADMIN)
    token = world.token(carol, ops)
    assert call(token, "get", "groups", world, group).status_code == 200
    assert call(token, "get", "role_assignments", world, group).status_code == 200
    # ... acting on any project, and its token says so.
    assert (
        APIClient().get("/compute/v2.1/servers", HTTP_X_AUTH_TOKEN=world.token(carol, world.project)).status_code == 200
    )

    dave = services.user_create(username="dave", password="Dave-pass-1234")
    services.role_grant(user=dave, project=world.project, role=Role.ADMIN)  # admin of alpha only
    assert_error(call(world.token(dave), "get", "groups", world, group), 403, "admin elsewhere")
    services.role_grant(user=dave, project=ops, role=Role.MEMBER)  # a member of the admin project
    assert_error(call(world.token(dave, ops), "get", "groups", world, group), 403, "member of admin")

    ops_admins = services.group_create(name="operators")
    services.group_add_user(group=ops_admins, user=dave)
    services.group_role_grant(group=ops_admins, project=ops, role=Role.ADMIN)
    assert call(world.token(dave, ops), "get", "groups", world, group).status_code == 200  # through a group


def test_a_restricted_credential_of_an_admin_is_not_an_admin(world, group):
    ops = services.project_ensure(name="admin")
    secret, cred = services.application_credential_create(user=world.admin, project=ops, name="ro", roles=[Role.READER])
    resp = APIClient().post(
        f"{V3}/auth/tokens",
        {
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {"id": cred.pk.hex, "secret": secret},
                }
            }
        },
        format="json",
    )
    token = resp["X-Subject-Token"]
    assert_error(call(token, "get", "groups", world, group), 403, "reader credential")
    assert_error(call(token, "post", "projects", world, group), 403, "reader credential")


def test_a_reader_writes_nothing_in_compute_but_manages_their_own_credentials(world):
    token = world.token(world.reader)
    c = APIClient()
    c.credentials(HTTP_X_AUTH_TOKEN=token)
    create = c.post(
        "/compute/v2.1/servers", {"server": {"name": "x", "imageRef": "x", "flavorRef": "x"}}, format="json"
    )
    assert create.status_code == 403 and create.json()["forbidden"]["code"] == 403  # Nova's body
    resp = c.post(
        f"{V3}/users/{world.reader.pk.hex}/application_credentials",
        {"application_credential": {"name": "mine"}},
        format="json",
    )
    assert resp.status_code == 201 and [r["id"] for r in resp.json()["application_credential"]["roles"]] == ["reader"]


def test_keystone_error_bodies_for_each_status(world, group):
    admin = APIClient()
    admin.credentials(HTTP_X_AUTH_TOKEN=world.token(world.admin))
    cases = [
        (admin.post(f"{V3}/projects", {"project": {"name": ""}}, format="json"), 400),
        (APIClient().get(f"{V3}/projects"), 401),
        (call(world.token(world.member), "get", "groups", world, group), 403),
        (admin.get(f"{V3}/projects/{ID}"), 404),
        (admin.post(f"{V3}/projects", {"project": {"name": "alpha"}}, format="json"), 409),
    ]
    for resp, code in cases:
        assert resp.status_code == code
        assert resp.json() == {
            "error": {"code": code, "title": resp.json()["error"]["title"], "message": resp.json()["error"]["message"]}
        }
        assert resp["Content-Type"].startswith("application/json")
