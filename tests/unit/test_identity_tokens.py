"""Keystone v3 tokens: issue (password, token, application credential), scopes, validate/check/
revoke, /auth/{projects,domains,catalog}, expiry and revocation, rate limits, query cost."""

import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from apps.tenants import selectors, services
from apps.tenants.models import Role, Token

pytestmark = pytest.mark.django_db

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
TOKENS = "/identity/v3/auth/tokens"


@pytest.fixture(autouse=True)
def fresh_login_counters():
    cache.clear()
    yield
    cache.clear()


def client(token=None):
    c = APIClient()
    if token:
        c.credentials(HTTP_X_AUTH_TOKEN=token)
    return c


def password_body(name=None, password=None, *, user_id=None, scope=None, domain=None):
    user = {"password": password}
    if user_id:
        user["id"] = user_id
    else:
        user.update(name=name, domain=domain or {"name": "Default"})
    auth = {"identity": {"methods": ["password"], "password": {"user": user}}}
    if scope is not None:
        auth["scope"] = scope
    return {"auth": auth}


def project_scope(name):
    return {"project": {"name": name, "domain": {"id": "default"}}}


def issue(body, query=""):
    return client().post(TOKENS + query, body, format="json")


def alice_token(world, project="alpha"):
    resp = issue(password_body("alice", "pw-alice-123", scope=project_scope(project) if project else None))
    assert resp.status_code == 201, resp.content
    return resp["X-Subject-Token"], resp.json()["token"]


def assert_keystone_error(resp, code):
    assert resp.status_code == code, resp.content
    error = resp.json()["error"]
    assert error["code"] == code and error["title"] and error["message"]


# --- Issue: password --------------------------------------------------------------------------


def test_password_by_name_scoped_to_a_project_by_name(world):
    key, body = alice_token(world)
    assert len(key) >= 40
    assert body["methods"] == ["password"]
    assert body["user"] == {
        "id": world.member.pk.hex,
        "name": "alice",
        "domain": {"id": "default", "name": "Default"},
        "password_expires_at": None,
    }
    assert body["project"] == {
        "id": world.project.pk.hex,
        "name": "alpha",
        "domain": {"id": "default", "name": "Default"},
    }
    assert body["is_domain"] is False and body["is_admin_project"] is False
    assert [r["name"] for r in body["roles"]] == ["reader", "member"]  # member implies reader
    assert all(r["id"] == r["name"] for r in body["roles"])
    assert len(body["audit_ids"]) == 1 and len(body["audit_ids"][0]) == 22
    types = {svc["type"] for svc in body["catalog"]}
    assert {"identity", "compute"} <= types
    for svc in body["catalog"]:
        assert {"id", "type", "name", "endpoints"} <= set(svc)
        assert {e["interface"] for e in svc["endpoints"]} == {"public", "internal", "admin"}
        assert all(e["region"] == e["region_id"] == "RegionOne" and e["url"] and e["id"] for e in svc["endpoints"])
    # The key is stored only as a hash.
    assert not Token.objects.filter(key_hash=key).exists()


def test_password_by_user_id_scoped_to_a_project_by_id(world):
    body = password_body(
        user_id=world.member.pk.hex, password="pw-alice-123", scope={"project": {"id": world.project.pk.hex}}
    )
    resp = issue(body)
    assert resp.status_code == 201
    assert resp.json()["token"]["project"]["id"] == world.project.pk.hex


def test_expires_at_and_issued_at_share_one_format_and_follow_the_ttl(world, settings):
    settings.CLOUDMGR_TOKEN_TTL = 120
    _, body = alice_token(world)
    assert TIME.match(body["expires_at"]) and TIME.match(body["issued_at"])
    issued = timezone.datetime.fromisoformat(body["issued_at"].replace("Z", "+00:00"))
    expires = timezone.datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert timedelta(seconds=119) <= expires - issued <= timedelta(seconds=121)


def test_bad_credentials_are_401_with_keystone_body(world):
    world.reader.is_active = False
    world.reader.save()
    for body in [
        password_body("alice", "wrong"),
        password_body("nobody", "pw-alice-123"),
        password_body("rita", "pw-rita-123"),  # disabled
        password_body("alice", "pw-alice-123", domain={"name": "Elsewhere"}),
        password_body(user_id="0" * 32, password="pw-alice-123"),
    ]:
        resp = issue(body)
        assert_keystone_error(resp, 401)
        assert resp["WWW-Authenticate"].startswith("Keystone uri=")


def test_a_project_without_a_role_or_disabled_is_401(world):
    assert_keystone_error(issue(password_body("alice", "pw-alice-123", scope=project_scope("beta"))), 401)
    assert_keystone_error(issue(password_body("alice", "pw-alice-123", scope=project_scope("nope"))), 401)
    services.project_update(project=world.project, enabled=False)
    assert_keystone_error(issue(password_body("alice", "pw-alice-123", scope=project_scope("alpha"))), 401)


def test_malformed_requests_are_400(world):
    assert_keystone_error(issue({"auth": {}}), 400)
    assert_keystone_error(issue({"auth": {"identity": {"methods": ["password"]}}}), 400)
    body = password_body("alice", "pw-alice-123", scope={"project": {"name": "alpha"}, "domain": {"id": "default"}})
    assert_keystone_error(issue(body), 400)
    assert_keystone_error(issue({"auth": {"identity": {"methods": ["totp"], "totp": {}}}}), 401)


def test_unscoped_and_default_project_tokens(world):
    _, body = alice_token(world, project=None)
    assert "project" not in body and "catalog" not in body and "roles" not in body
    services.user_update(user=world.member, default_project=world.project)
    _, body = alice_token(world, project=None)
    assert body["project"]["name"] == "alpha"  # no scope asked: the default project, as Keystone
    resp = issue(password_body("alice", "pw-alice-123", scope="unscoped"))
    assert resp.status_code == 201 and "project" not in resp.json()["token"]


def test_domain_scope_is_for_cloud_admins(world):
    resp = issue(password_body("root", "pw-root-123", scope={"domain": {"id": "default"}}))
    assert resp.status_code == 201
    body = resp.json()["token"]
    assert body["domain"] == {"id": "default", "name": "Default"} and "project" not in body
    assert {r["name"] for r in body["roles"]} == {"admin", "member", "reader"}
    assert {svc["type"] for svc in body["catalog"]} >= {"identity", "compute"}
    assert_keystone_error(issue(password_body("alice", "pw-alice-123", scope={"domain": {"name": "Default"}})), 401)
    assert_keystone_error(issue(password_body("root", "pw-root-123", scope={"domain": {"id": "other"}})), 401)
    assert_keystone_error(issue(password_body("root", "pw-root-123", scope={"system": {"all": True}})), 401)


# --- Issue: token (re-scope) ------------------------------------------------------------------


def test_rescope_keeps_the_expiry_and_joins_the_audit_chain(world):
    unscoped_key, unscoped = alice_token(world, project=None)
    resp = issue(
        {
            "auth": {
                "identity": {"methods": ["token"], "token": {"id": unscoped_key}},
                "scope": {"project": {"id": world.project.pk.hex}},
            }
        }
    )
    assert resp.status_code == 201, resp.content
    body = resp.json()["token"]
    assert body["methods"] == ["token", "password"]
    assert body["project"]["name"] == "alpha"
    assert body["expires_at"] == unscoped["expires_at"]
    assert body["audit_ids"][1] == unscoped["audit_ids"][0] and body["audit_ids"][0] != unscoped["audit_ids"][0]
    assert client(resp["X-Subject-Token"]).get("/compute/v2.1/servers").status_code == 200


def test_rescope_refuses_bad_tokens_and_foreign_projects(world):
    unscoped_key, _ = alice_token(world, project=None)
    bad = issue({"auth": {"identity": {"methods": ["token"], "token": {"id": "nope"}}}})
    assert_keystone_error(bad, 404)
    foreign = issue(
        {"auth": {"identity": {"methods": ["token"], "token": {"id": unscoped_key}}, "scope": project_scope("beta")}}
    )
    assert_keystone_error(foreign, 401)


# --- Issue: application credential ------------------------------------------------------------


def app_cred_body(**ref):
    return {"auth": {"identity": {"methods": ["application_credential"], "application_credential": ref}}}


def test_application_credential_by_id_and_by_name(world):
    secret, cred = services.application_credential_create(
        user=world.member, project=world.project, name="ci", roles=[Role.READER]
    )
    resp = issue(app_cred_body(id=cred.pk.hex, secret=secret))
    assert resp.status_code == 201, resp.content
    body = resp.json()["token"]
    assert body["methods"] == ["application_credential"]
    assert body["project"]["id"] == world.project.pk.hex and body["user"]["id"] == world.member.pk.hex
    assert [r["name"] for r in body["roles"]] == ["reader"]
    assert body["application_credential"] == {"id": cred.pk.hex, "name": "ci", "restricted": True}
    by_name = issue(app_cred_body(name="ci", secret=secret, user={"name": "alice", "domain": {"name": "Default"}}))
    assert by_name.status_code == 201
    by_user_id = issue(app_cred_body(name="ci", secret=secret, user={"id": world.member.pk.hex}))
    assert by_user_id.status_code == 201


def test_application_credential_refusals(world):
    secret, cred = services.application_credential_create(user=world.member, project=world.project, name="ci")
    assert_keystone_error(issue(app_cred_body(id=cred.pk.hex, secret="wrong")), 401)
    assert_keystone_error(issue(app_cred_body(id="0" * 32, secret=secret)), 401)
    scoped = app_cred_body(id=cred.pk.hex, secret=secret)
    scoped["auth"]["scope"] = project_scope("alpha")
    assert_keystone_error(issue(scoped), 401)  # an application credential cannot choose its scope
    cred.expires_at = timezone.now() - timedelta(seconds=1)
    cred.save()
    assert_keystone_error(issue(app_cred_body(id=cred.pk.hex, secret=secret)), 401)


def test_application_credential_token_has_at_most_its_roles(world):
    from tests.unit.conftest import make_host

    make_host()
    secret, cred = services.application_credential_create(
        user=world.member, project=world.project, name="ro", roles=[Role.READER]
    )
    key = issue(app_cred_body(id=cred.pk.hex, secret=secret))["X-Subject-Token"]
    c = client(key)
    assert c.get("/compute/v2.1/servers").status_code == 200
    create = c.post(
        "/compute/v2.1/servers",
        {"server": {"name": "x", "imageRef": str(world.image.id), "flavorRef": world.flavor.id}},
        format="json",
    )
    assert create.status_code == 403  # a member, through a reader-only credential
    # Re-scoping an application credential token to another project is refused.
    rescope = issue(
        {"auth": {"identity": {"methods": ["token"], "token": {"id": key}}, "scope": project_scope("beta")}}
    )
    assert_keystone_error(rescope, 403)


def test_an_application_credential_stops_when_its_user_loses_the_role(world):
    secret, cred = services.application_credential_create(user=world.member, project=world.project, name="ci")
    key = issue(app_cred_body(id=cred.pk.hex, secret=secret))["X-Subject-Token"]
    services.role_revoke(user=world.member, project=world.project, role=Role.MEMBER)
    assert client(key).get("/compute/v2.1/servers").status_code == 401
    assert_keystone_error(issue(app_cred_body(id=cred.pk.hex, secret=secret)), 401)


# --- Validate, check, revoke ------------------------------------------------------------------


def test_validate_check_and_revoke(world):
    key, issued = alice_token(world)
    other, _ = alice_token(world)
    c = client(other)
    resp = c.get(TOKENS, HTTP_X_SUBJECT_TOKEN=key)
    assert resp.status_code == 200 and resp["X-Subject-Token"] == key
    body = resp.json()["token"]
    assert body["audit_ids"] == issued["audit_ids"] and body["expires_at"] == issued["expires_at"]
    assert [r["name"] for r in body["roles"]] == ["reader", "member"] and body["catalog"]
    assert "catalog" not in c.get(TOKENS + "?nocatalog", HTTP_X_SUBJECT_TOKEN=key).json()["token"]
    head = c.head(TOKENS, HTTP_X_SUBJECT_TOKEN=key)
    assert head.status_code == 200 and not head.content
    assert c.delete(TOKENS, HTTP_X_SUBJECT_TOKEN=key).status_code == 204
    assert_keystone_error(c.get(TOKENS, HTTP_X_SUBJECT_TOKEN=key), 404)
    assert c.head(TOKENS, HTTP_X_SUBJECT_TOKEN=key).status_code == 404
    assert_keystone_error(client(key).get("/compute/v2.1/servers"), 401)
    assert_keystone_error(client(key).get("/identity/v3/auth/projects"), 401)
    assert c.get("/compute/v2.1/servers").status_code == 200  # the other token lives on


def test_validate_needs_a_token_and_a_subject(world):
    key, _ = alice_token(world)
    assert_keystone_error(client().get(TOKENS, HTTP_X_SUBJECT_TOKEN=key), 401)
    assert_keystone_error(client(key).get(TOKENS), 400)
    assert_keystone_error(client(key).get(TOKENS, HTTP_X_SUBJECT_TOKEN="not-a-token"), 404)


def test_only_the_owner_or_a_cloud_admin_validates_a_token(world):
    key, _ = alice_token(world)
    bob = world.token(world.outsider, world.other_project)
    assert_keystone_error(client(bob).get(TOKENS, HTTP_X_SUBJECT_TOKEN=key), 403)
    assert_keystone_error(client(bob).delete(TOKENS, HTTP_X_SUBJECT_TOKEN=key), 403)
    root = world.token(world.admin)
    assert client(root).get(TOKENS, HTTP_X_SUBJECT_TOKEN=key).status_code == 200


def test_expired_tokens_are_404_to_validate_and_401_to_use(world):
    key, _ = alice_token(world)
    other = world.token(world.member)
    Token.objects.exclude(key_hash=selectors.hash_token(other)).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_keystone_error(client(other).get(TOKENS, HTTP_X_SUBJECT_TOKEN=key), 404)
    assert_keystone_error(client(key).get("/identity/v3/users/" + world.member.pk.hex), 401)


def test_tokens_end_with_the_password_the_user_or_the_role(world):
    key, _ = alice_token(world)
    services.user_set_password(user=world.member, password="a-new-Passw0rd")
    assert client(key).get("/compute/v2.1/servers").status_code == 401

    key = world.token(world.member)
    services.role_revoke(user=world.member, project=world.project, role=Role.MEMBER)
    assert client(key).get("/compute/v2.1/servers").status_code == 401  # no role left on alpha

    key = world.token(world.reader)
    services.user_update(user=world.reader, enabled=False)
    assert client(key).get("/compute/v2.1/servers").status_code == 401

    key = world.token(world.outsider, world.other_project)
    services.project_update(project=world.other_project, enabled=False)
    assert client(key).get("/compute/v2.1/servers").status_code == 401


# --- /auth/projects, /auth/domains, /auth/catalog ---------------------------------------------


def test_auth_projects_domains_and_catalog(world):
    key, _ = alice_token(world)
    c = client(key)
    projects = c.get("/identity/v3/auth/projects").json()
    assert [p["name"] for p in projects["projects"]] == ["alpha"]
    assert projects["links"]["self"].endswith("/identity/v3/auth/projects")
    assert c.get("/identity/v3/auth/domains").json()["domains"] == []
    catalog = c.get("/identity/v3/auth/catalog").json()
    assert {"identity", "compute"} <= {svc["type"] for svc in catalog["catalog"]}
    unscoped, _ = alice_token(world, project=None)
    assert_keystone_error(client(unscoped).get("/identity/v3/auth/catalog"), 403)
    assert [p["name"] for p in client(unscoped).get("/identity/v3/auth/projects").json()["projects"]] == ["alpha"]
    root = client(world.token(world.admin))
    assert [d["id"] for d in root.get("/identity/v3/auth/domains").json()["domains"]] == ["default"]
    assert {p["name"] for p in root.get("/identity/v3/auth/projects").json()["projects"]} == {"alpha", "beta"}


# --- Cost and rate limits ---------------------------------------------------------------------


def test_validating_a_token_is_one_query(world):
    key = world.token(world.member)
    c = client(key)
    c.get("/identity/v3/domains/default")  # warm up (URL resolver caches)
    with CaptureQueriesContext(connection) as queries:
        assert c.get("/identity/v3/domains/default").status_code == 200
    assert len(queries) == 1, [q["sql"] for q in queries]
    with CaptureQueriesContext(connection) as queries:
        assert c.get("/compute/v2.1/servers").status_code == 200
    # The token (with the roles), then the servers: no extra policy queries.
    assert len(queries) == 2, [q["sql"] for q in queries]


def test_failed_logins_are_rate_limited(world, settings):
    settings.ACCOUNT_RATE_LIMITS = {"login_failed": "100/m/ip,3/5m/key"}
    for _ in range(3):
        assert issue(password_body("alice", "wrong")).status_code == 401
    limited = issue(password_body("alice", "pw-alice-123"))
    assert_keystone_error(limited, 429)
    assert int(limited["Retry-After"]) > 0
    assert issue(password_body("rita", "pw-rita-123")).status_code == 201  # another account is not limited
    cache.clear()
    assert issue(password_body("alice", "pw-alice-123")).status_code == 201


def test_the_catalog_lists_only_services_answering_at_their_catalog_url():
    from apps.tenants.selectors import _served

    assert _served.__wrapped__("identity/v3") and _served.__wrapped__("compute/v2.1")
    assert not _served.__wrapped__("nowhere/v1")
    assert not _served.__wrapped__("volume-not-routed/v3/{project_id}")
