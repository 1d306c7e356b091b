"""Keystone v3 resources: domains, projects, users, groups, roles, role assignments, application
credentials, the catalog's services/endpoints/regions. Bodies, filters, links, status codes."""

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from apps.tenants import services
from apps.tenants.models import ApplicationCredential, Project, Quota, Role, Token, User

pytestmark = pytest.mark.django_db

V3 = "/identity/v3"
PROJECT_KEYS = {
    "id",
    "name",
    "description",
    "enabled",
    "domain_id",
    "parent_id",
    "is_domain",
    "tags",
    "options",
    "links",
}
USER_KEYS = {"id", "name", "domain_id", "enabled", "password_expires_at", "options", "links"}
APP_CRED_KEYS = {
    "id",
    "name",
    "description",
    "project_id",
    "roles",
    "expires_at",
    "unrestricted",
    "access_rules",
    "links",
}


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


@pytest.fixture
def admin(world):
    return client(world.token(world.admin))


@pytest.fixture
def alice(world):
    return client(world.token(world.member))


def login(name, password, project=None):
    auth = {
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": name, "domain": {"id": "default"}, "password": password}},
        }
    }
    if project:
        auth["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
    return client().post(f"{V3}/auth/tokens", {"auth": auth}, format="json")


def error(resp, code):
    assert resp.status_code == code, resp.content
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    return body["error"]["message"]


def self_link(body, path):
    assert body["links"]["self"].endswith(f"{V3}/{path}"), body["links"]


# --- Domains ----------------------------------------------------------------------------------


def test_the_default_domain(admin, alice):
    listed = admin.get(f"{V3}/domains").json()
    assert [d["id"] for d in listed["domains"]] == ["default"]
    assert set(listed["links"]) == {"self", "previous", "next"}
    domain = alice.get(f"{V3}/domains/default").json()["domain"]  # anyone may read it
    assert domain["name"] == "Default" and domain["enabled"] is True
    self_link(domain, "domains/default")
    assert admin.get(f"{V3}/domains?name=Default").json()["domains"]
    assert admin.get(f"{V3}/domains?name=Other").json()["domains"] == []
    error(admin.get(f"{V3}/domains/other"), 404)
    error(admin.post(f"{V3}/domains", {"domain": {"name": "other"}}, format="json"), 501)
    error(alice.post(f"{V3}/domains", {"domain": {"name": "other"}}, format="json"), 403)


# --- Projects ---------------------------------------------------------------------------------


def test_project_create_show_update_delete(admin, world):
    resp = admin.post(
        f"{V3}/projects", {"project": {"name": "gamma", "description": "G", "domain_id": "default"}}, format="json"
    )
    assert resp.status_code == 201, resp.content
    body = resp.json()["project"]
    assert set(body) == PROJECT_KEYS
    assert (
        body["name"],
        body["description"],
        body["enabled"],
        body["domain_id"],
        body["parent_id"],
        body["is_domain"],
    ) == ("gamma", "G", True, "default", "default", False)
    self_link(body, f"projects/{body['id']}")
    project = Project.objects.get(name="gamma")
    assert Quota.objects.filter(project=project).count() == 11  # default quotas
    assert admin.get(f"{V3}/projects/{body['id']}").json()["project"] == body

    patched = admin.patch(
        f"{V3}/projects/{body['id']}", {"project": {"description": "new", "enabled": False}}, format="json"
    )
    assert patched.status_code == 200
    assert (patched.json()["project"]["description"], patched.json()["project"]["enabled"]) == ("new", False)
    assert admin.delete(f"{V3}/projects/{body['id']}").status_code == 204
    error(admin.get(f"{V3}/projects/{body['id']}"), 404)
    error(admin.delete(f"{V3}/projects/{body['id']}"), 404)


def test_project_errors(admin, world):
    msg = error(admin.post(f"{V3}/projects", {"project": {"name": "alpha"}}, format="json"), 409)
    assert "Duplicate entry" in msg and "alpha" in msg
    error(admin.post(f"{V3}/projects", {"project": {}}, format="json"), 400)
    error(admin.post(f"{V3}/projects", {"project": {"name": "x", "domain_id": "other"}}, format="json"), 400)
    error(admin.post(f"{V3}/projects", {"project": {"name": "x", "is_domain": True}}, format="json"), 400)
    error(admin.post(f"{V3}/projects", {"name": "x"}, format="json"), 400)
    error(admin.get(f"{V3}/projects/not-an-id"), 404)
    error(admin.get(f"{V3}/projects/alpha"), 404)  # by id only, as Keystone: clients fall back to ?name=
    rename = admin.patch(f"{V3}/projects/{world.project.pk.hex}", {"project": {"name": "beta"}}, format="json")
    error(rename, 409)
    # alpha owns an image (a PROTECTed reference): 409 until it is gone.
    error(admin.delete(f"{V3}/projects/{world.project.pk.hex}"), 409)
    assert Project.objects.filter(pk=world.project.pk).exists()


def test_the_admin_project_and_parents_are_guarded(admin):
    ops = services.project_ensure(name="admin")
    error(admin.delete(f"{V3}/projects/{ops.pk.hex}"), 403)
    error(admin.patch(f"{V3}/projects/{ops.pk.hex}", {"project": {"enabled": False}}, format="json"), 403)
    error(admin.patch(f"{V3}/projects/{ops.pk.hex}", {"project": {"name": "ops"}}, format="json"), 403)
    parent = admin.post(f"{V3}/projects", {"project": {"name": "parent"}}, format="json").json()["project"]
    child = admin.post(f"{V3}/projects", {"project": {"name": "child", "parent_id": parent["id"]}}, format="json")
    assert child.status_code == 201 and child.json()["project"]["parent_id"] == parent["id"]
    error(admin.delete(f"{V3}/projects/{parent['id']}"), 403)
    listed = admin.get(f"{V3}/projects?parent_id={parent['id']}").json()["projects"]
    assert [p["name"] for p in listed] == ["child"]
    error(admin.post(f"{V3}/projects", {"project": {"name": "orphan", "parent_id": "f" * 32}}, format="json"), 404)


def test_project_list_filters_and_links(admin, world):
    services.project_update(project=world.other_project, enabled=False)
    body = admin.get(f"{V3}/projects?enabled=true").json()
    assert [p["name"] for p in body["projects"]] == ["alpha"]
    assert body["links"]["self"].endswith(f"{V3}/projects?enabled=true")
    assert body["links"]["previous"] is None and body["links"]["next"] is None
    assert [p["name"] for p in admin.get(f"{V3}/projects?name=beta").json()["projects"]] == ["beta"]
    assert len(admin.get(f"{V3}/projects?domain_id=default").json()["projects"]) == 2
    assert admin.get(f"{V3}/projects?domain_id=other").json()["projects"] == []
    assert [p["name"] for p in admin.get(f"{V3}/projects?parent_id=default").json()["projects"]] == ["alpha", "beta"]
    error(admin.get(f"{V3}/projects?enabled=maybe"), 400)


def test_a_member_sees_only_their_projects(alice, world):
    assert [p["name"] for p in alice.get(f"{V3}/projects").json()["projects"]] == ["alpha"]
    assert alice.get(f"{V3}/projects?name=beta").json()["projects"] == []
    assert alice.get(f"{V3}/projects/{world.project.pk.hex}").status_code == 200
    error(alice.get(f"{V3}/projects/{world.other_project.pk.hex}"), 403)


def test_list_endpoints_cost_a_fixed_number_of_queries(admin, world):
    for i in range(5):
        services.project_create(name=f"p{i}")
        services.user_create(username=f"u{i}", password=f"a-Long-pass-{i}")
    for path in ("projects", "users", "role_assignments?include_names", "groups", "roles"):
        admin.get(f"{V3}/{path}")
        with CaptureQueriesContext(connection) as few:
            admin.get(f"{V3}/{path}")
        for i in range(5, 10):
            project = services.project_create(name=f"p{i}")
            user = services.user_create(username=f"u{i}", password=f"a-Long-pass-{i}")
            services.role_grant(user=user, project=project, role=Role.MEMBER)
        with CaptureQueriesContext(connection) as more:
            admin.get(f"{V3}/{path}")
        assert len(more) == len(few), path
        Project.objects.filter(name__in=[f"p{i}" for i in range(5, 10)]).delete()
        User.objects.filter(username__in=[f"u{i}" for i in range(5, 10)]).delete()


# --- Users ------------------------------------------------------------------------------------


def test_user_create_show_update_delete(admin, world):
    resp = admin.post(
        f"{V3}/users",
        {
            "user": {
                "name": "carol",
                "password": "Carol-pass-123",
                "email": "c@example.com",
                "default_project_id": world.project.pk.hex,
            }
        },
        format="json",
    )
    assert resp.status_code == 201, resp.content
    body = resp.json()["user"]
    assert USER_KEYS <= set(body) and "password" not in body
    assert (body["name"], body["email"], body["enabled"], body["default_project_id"]) == (
        "carol",
        "c@example.com",
        True,
        world.project.pk.hex,
    )
    self_link(body, f"users/{body['id']}")
    assert login("carol", "Carol-pass-123").status_code == 201
    assert admin.get(f"{V3}/users/{body['id']}").json()["user"] == body

    patched = admin.patch(
        f"{V3}/users/{body['id']}",
        {"user": {"password": "Carol-pass-456", "email": "d@example.com", "name": "caroline"}},
        format="json",
    )
    assert patched.status_code == 200 and patched.json()["user"]["name"] == "caroline"
    assert login("caroline", "Carol-pass-123").status_code == 401
    assert login("caroline", "Carol-pass-456").status_code == 201
    disabled = admin.patch(f"{V3}/users/{body['id']}", {"user": {"enabled": False}}, format="json")
    assert disabled.json()["user"]["enabled"] is False
    assert login("caroline", "Carol-pass-456").status_code == 401

    assert admin.delete(f"{V3}/users/{body['id']}").status_code == 204
    error(admin.get(f"{V3}/users/{body['id']}"), 404)


def test_a_user_who_owns_resources_is_not_deleted(admin, world, host, fake_driver):
    from apps.instances.services import instance_create

    instance_create(user=world.member, project=world.project, name="kept", flavor=world.flavor, image=world.image)
    msg = error(admin.delete(f"{V3}/users/{world.member.pk.hex}"), 409)
    assert msg == f"User {world.member.username} owns instances and cannot be deleted; disable the user instead."
    assert User.objects.filter(pk=world.member.pk).exists()


def test_user_errors_and_filters(admin, world):
    msg = error(
        admin.post(f"{V3}/users", {"user": {"name": "alice", "password": "Another-pass-1"}}, format="json"), 409
    )
    assert "Duplicate entry" in msg
    error(admin.post(f"{V3}/users", {"user": {"name": "dave", "password": "short"}}, format="json"), 400)
    error(admin.post(f"{V3}/users", {"user": {"name": "dave", "email": "not-an-email"}}, format="json"), 400)
    error(admin.post(f"{V3}/users", {"user": {"name": "bad name!"}}, format="json"), 400)
    error(admin.patch(f"{V3}/users/{world.member.pk.hex}", {"user": {"name": "bob"}}, format="json"), 409)
    error(admin.get(f"{V3}/users/{'0' * 32}"), 404)
    no_password = admin.post(f"{V3}/users", {"user": {"name": "eve"}}, format="json")
    assert no_password.status_code == 201
    services.user_update(user=world.reader, enabled=False)
    assert [u["name"] for u in admin.get(f"{V3}/users?name=alice").json()["users"]] == ["alice"]
    assert [u["name"] for u in admin.get(f"{V3}/users?enabled=false").json()["users"]] == ["rita"]
    assert admin.get(f"{V3}/users?domain_id=other").json()["users"] == []


def test_a_user_reads_and_lists_only_themselves(alice, world):
    assert alice.get(f"{V3}/users/{world.member.pk.hex}").json()["user"]["name"] == "alice"
    assert [u["name"] for u in alice.get(f"{V3}/users").json()["users"]] == ["alice"]
    assert alice.get(f"{V3}/users?name=bob").json()["users"] == []
    error(alice.get(f"{V3}/users/{world.outsider.pk.hex}"), 403)


def test_a_user_changes_their_own_password(world):
    path = f"{V3}/users/{world.member.pk.hex}/password"
    body = {"user": {"original_password": "pw-alice-123", "password": "Alice-new-pass-1"}}
    assert client().post(path, body, format="json").status_code == 204  # no token needed, as Keystone
    assert login("alice", "pw-alice-123").status_code == 401
    assert login("alice", "Alice-new-pass-1").status_code == 201
    wrong = {"user": {"original_password": "pw-alice-123", "password": "Alice-new-pass-2"}}
    error(client().post(path, wrong, format="json"), 401)
    weak = {"user": {"original_password": "Alice-new-pass-1", "password": "123"}}
    error(client().post(path, weak, format="json"), 400)
    error(client().post(path, {"user": {"password": "x"}}, format="json"), 400)


def test_user_projects_and_groups(admin, alice, world):
    projects = alice.get(f"{V3}/users/{world.member.pk.hex}/projects").json()
    assert [p["name"] for p in projects["projects"]] == ["alpha"]
    error(alice.get(f"{V3}/users/{world.outsider.pk.hex}/projects"), 403)
    bob_projects = admin.get(f"{V3}/users/{world.outsider.pk.hex}/projects").json()["projects"]
    assert [p["name"] for p in bob_projects] == ["beta"]
    group = services.group_create(name="devs")
    services.group_add_user(group=group, user=world.member)
    assert [g["name"] for g in alice.get(f"{V3}/users/{world.member.pk.hex}/groups").json()["groups"]] == ["devs"]
    error(alice.get(f"{V3}/users/{world.outsider.pk.hex}/groups"), 403)


# --- Groups -----------------------------------------------------------------------------------


def test_groups_and_their_members(admin, world):
    resp = admin.post(f"{V3}/groups", {"group": {"name": "devs", "description": "D"}}, format="json")
    assert resp.status_code == 201
    group = resp.json()["group"]
    assert set(group) == {"id", "name", "description", "domain_id", "links"}
    error(admin.post(f"{V3}/groups", {"group": {"name": "devs"}}, format="json"), 409)
    member = f"{V3}/groups/{group['id']}/users/{world.member.pk.hex}"
    assert admin.head(member).status_code == 404
    assert admin.put(member).status_code == 204
    assert admin.put(member).status_code == 204  # idempotent
    assert admin.head(member).status_code == 204
    assert [u["name"] for u in admin.get(f"{V3}/groups/{group['id']}/users").json()["users"]] == ["alice"]
    assert [g["name"] for g in admin.get(f"{V3}/groups?name=devs").json()["groups"]] == ["devs"]
    patched = admin.patch(f"{V3}/groups/{group['id']}", {"group": {"description": "E"}}, format="json")
    assert patched.json()["group"]["description"] == "E"
    assert admin.delete(member).status_code == 204
    error(admin.delete(member), 404)
    error(admin.put(f"{V3}/groups/{group['id']}/users/{'0' * 32}"), 404)
    assert admin.delete(f"{V3}/groups/{group['id']}").status_code == 204
    error(admin.get(f"{V3}/groups/{group['id']}"), 404)


def test_a_group_role_gives_its_members_the_project(admin, world):
    group = services.group_create(name="beta-team")
    services.group_add_user(group=group, user=world.member)
    grant = f"{V3}/projects/{world.other_project.pk.hex}/groups/{group.pk.hex}/roles/reader"
    assert login("alice", "pw-alice-123", "beta").status_code == 401
    assert admin.put(grant).status_code == 204
    assert admin.head(grant).status_code == 204
    roles = admin.get(f"{V3}/projects/{world.other_project.pk.hex}/groups/{group.pk.hex}/roles").json()["roles"]
    assert [r["id"] for r in roles] == ["reader"]
    token = login("alice", "pw-alice-123", "beta")
    assert token.status_code == 201 and [r["name"] for r in token.json()["token"]["roles"]] == ["reader"]
    assignments = admin.get(f"{V3}/role_assignments?group.id={group.pk.hex}").json()["role_assignments"]
    assert assignments == [
        {
            "scope": {"project": {"id": world.other_project.pk.hex}},
            "role": {"id": "reader"},
            "group": {"id": group.pk.hex},
            "links": {"assignment": assignments[0]["links"]["assignment"]},
        }
    ]
    effective = admin.get(
        f"{V3}/role_assignments?effective&user.id={world.member.pk.hex}&scope.project.id={world.other_project.pk.hex}"
    ).json()["role_assignments"]
    assert effective[0]["user"] == {"id": world.member.pk.hex} and "membership" in effective[0]["links"]
    assert admin.delete(grant).status_code == 204
    error(admin.delete(grant), 404)
    assert login("alice", "pw-alice-123", "beta").status_code == 401


# --- Roles and grants -------------------------------------------------------------------------


def test_roles_default_and_custom(admin, world):
    listed = admin.get(f"{V3}/roles").json()["roles"]
    assert [r["name"] for r in listed] == ["admin", "member", "reader"]
    assert set(listed[0]) == {"id", "name", "domain_id", "description", "options", "links"}
    assert admin.get(f"{V3}/roles/member").json()["role"]["name"] == "member"
    assert [r["name"] for r in admin.get(f"{V3}/roles?name=reader").json()["roles"]] == ["reader"]
    error(admin.get(f"{V3}/roles/nope"), 404)
    created = admin.post(f"{V3}/roles", {"role": {"name": "auditor", "description": "A"}}, format="json")
    assert created.status_code == 201 and created.json()["role"]["id"] == "auditor"
    error(admin.post(f"{V3}/roles", {"role": {"name": "auditor"}}, format="json"), 409)
    error(admin.post(f"{V3}/roles", {"role": {"name": "member"}}, format="json"), 409)
    error(admin.post(f"{V3}/roles", {"role": {"name": "a/b"}}, format="json"), 400)
    patched = admin.patch(f"{V3}/roles/auditor", {"role": {"description": "B"}}, format="json")
    assert patched.json()["role"]["description"] == "B"
    grant = f"{V3}/projects/{world.project.pk.hex}/users/{world.reader.pk.hex}/roles/auditor"
    assert admin.put(grant).status_code == 204
    token = login("rita", "pw-rita-123", "alpha").json()["token"]
    assert [r["name"] for r in token["roles"]] == ["reader", "auditor"]
    assert admin.delete(f"{V3}/roles/auditor").status_code == 204
    assert admin.head(grant).status_code == 404
    error(admin.delete(f"{V3}/roles/member"), 403)
    error(admin.patch(f"{V3}/roles/admin", {"role": {"description": "x"}}, format="json"), 403)


def test_grant_check_list_revoke_a_user_role(admin, world):
    base = f"{V3}/projects/{world.other_project.pk.hex}/users/{world.member.pk.hex}/roles"
    assert admin.head(f"{base}/member").status_code == 404
    assert admin.put(f"{base}/member").status_code == 204
    assert admin.put(f"{base}/reader").status_code == 204
    assert admin.put(f"{base}/reader").status_code == 204  # idempotent
    assert admin.head(f"{base}/member").status_code == 204
    assert admin.get(f"{base}/member").status_code == 204
    listed = admin.get(base).json()
    assert [r["id"] for r in listed["roles"]] == ["member", "reader"]
    self_link(listed, f"projects/{world.other_project.pk.hex}/users/{world.member.pk.hex}/roles")
    assert admin.delete(f"{base}/reader").status_code == 204
    error(admin.delete(f"{base}/reader"), 404)
    assert [r["id"] for r in admin.get(base).json()["roles"]] == ["member"]
    error(admin.put(f"{base}/nope"), 404)
    error(admin.put(f"{V3}/projects/{'0' * 32}/users/{world.member.pk.hex}/roles/member"), 404)
    error(admin.put(f"{V3}/projects/{world.project.pk.hex}/users/{'0' * 32}/roles/member"), 404)


def test_role_assignments_filters_and_names(admin, world):
    body = admin.get(f"{V3}/role_assignments").json()
    assert len(body["role_assignments"]) == 3 and set(body["links"]) == {"self", "previous", "next"}
    mine = admin.get(f"{V3}/role_assignments?user.id={world.member.pk.hex}").json()["role_assignments"]
    assert mine == [
        {
            "scope": {"project": {"id": world.project.pk.hex}},
            "role": {"id": "member"},
            "user": {"id": world.member.pk.hex},
            "links": {"assignment": mine[0]["links"]["assignment"]},
        }
    ]
    assert mine[0]["links"]["assignment"].endswith(
        f"{V3}/projects/{world.project.pk.hex}/users/{world.member.pk.hex}/roles/member"
    )
    named = admin.get(
        f"{V3}/role_assignments?include_names=true&scope.project.id={world.project.pk.hex}&role.id=reader"
    ).json()["role_assignments"]
    assert named == [
        {
            "scope": {
                "project": {"id": world.project.pk.hex, "name": "alpha", "domain": {"id": "default", "name": "Default"}}
            },
            "role": {"id": "reader", "name": "reader"},
            "user": {"id": world.reader.pk.hex, "name": "rita", "domain": {"id": "default", "name": "Default"}},
            "links": named[0]["links"],
        }
    ]
    effective = admin.get(f"{V3}/role_assignments?effective=true&user.id={world.member.pk.hex}").json()
    assert sorted(a["role"]["id"] for a in effective["role_assignments"]) == ["member", "reader"]
    assert admin.get(f"{V3}/role_assignments?scope.domain.id=default").json()["role_assignments"] == []
    error(admin.get(f"{V3}/role_assignments?user.id={'0' * 32}"), 404)
    error(admin.get(f"{V3}/role_assignments?role.id=nope"), 404)


# --- Application credentials ------------------------------------------------------------------


def creds_path(user, cred_id=None):
    return f"{V3}/users/{user.pk.hex}/application_credentials" + (f"/{cred_id}" if cred_id else "")


def test_application_credential_lifecycle(alice, world):
    resp = alice.post(
        creds_path(world.member),
        {"application_credential": {"name": "ci", "description": "CI", "expires_at": "2099-01-01T00:00:00"}},
        format="json",
    )
    assert resp.status_code == 201, resp.content
    created = resp.json()["application_credential"]
    assert set(created) == APP_CRED_KEYS | {"secret"}
    assert len(created["secret"]) >= 80 and created["unrestricted"] is False
    assert created["expires_at"] == "2099-01-01T00:00:00.000000Z"
    assert created["project_id"] == world.project.pk.hex
    assert [r["name"] for r in created["roles"]] == ["reader", "member"]  # by default, the creator's roles
    stored = ApplicationCredential.objects.get(pk=created["id"])
    assert created["secret"] not in stored.secret_hash

    shown = alice.get(creds_path(world.member, created["id"])).json()["application_credential"]
    assert set(shown) == APP_CRED_KEYS  # the secret is shown once only
    listed = alice.get(creds_path(world.member)).json()
    assert [c["name"] for c in listed["application_credentials"]] == ["ci"]
    assert alice.get(creds_path(world.member) + "?name=other").json()["application_credentials"] == []

    token = client().post(
        f"{V3}/auth/tokens",
        {
            "auth": {
                "identity": {
                    "methods": ["application_credential"],
                    "application_credential": {"id": created["id"], "secret": created["secret"]},
                }
            }
        },
        format="json",
    )
    key = token["X-Subject-Token"]
    assert client(key).get("/compute/v2.1/servers").status_code == 200
    assert alice.delete(creds_path(world.member, created["id"])).status_code == 204
    assert client(key).get("/compute/v2.1/servers").status_code == 401  # its tokens die with it
    error(alice.get(creds_path(world.member, created["id"])), 404)


def test_application_credential_roles_secret_and_errors(alice, world):
    own = alice.post(
        creds_path(world.member),
        {"application_credential": {"name": "ro", "secret": "my-own-secret", "roles": [{"name": "reader"}]}},
        format="json",
    )
    assert own.status_code == 201 and own.json()["application_credential"]["secret"] == "my-own-secret"
    assert [r["id"] for r in own.json()["application_credential"]["roles"]] == ["reader"]
    by_id = alice.post(
        creds_path(world.member), {"application_credential": {"name": "rw", "roles": [{"id": "member"}]}}, format="json"
    )
    assert [r["id"] for r in by_id.json()["application_credential"]["roles"]] == ["reader", "member"]
    error(
        alice.post(
            creds_path(world.member),
            {"application_credential": {"name": "root", "roles": [{"name": "admin"}]}},
            format="json",
        ),
        400,
    )
    error(alice.post(creds_path(world.member), {"application_credential": {"name": "ro"}}, format="json"), 409)
    error(
        alice.post(
            creds_path(world.member),
            {"application_credential": {"name": "old", "expires_at": "2000-01-01T00:00:00Z"}},
            format="json",
        ),
        400,
    )
    error(
        alice.post(
            creds_path(world.member),
            {
                "application_credential": {
                    "name": "rules",
                    "access_rules": [{"path": "/v2.1/servers", "method": "GET", "service": "compute"}],
                }
            },
            format="json",
        ),
        400,
    )
    error(
        alice.post(
            creds_path(world.member),
            {"application_credential": {"name": "x", "roles": [{"name": "nope"}]}},
            format="json",
        ),
        404,
    )


def test_application_credentials_are_their_owners(alice, admin, world):
    _, bobs = services.application_credential_create(user=world.outsider, project=world.other_project, name="bobs")
    # Another user's credential under your own path is not found ...
    error(alice.get(creds_path(world.member, bobs.pk.hex)), 404)
    error(alice.delete(creds_path(world.member, bobs.pk.hex)), 404)
    # ... and another user's path is forbidden.
    error(alice.get(creds_path(world.outsider)), 403)
    error(alice.get(creds_path(world.outsider, bobs.pk.hex)), 403)
    error(alice.post(creds_path(world.outsider), {"application_credential": {"name": "x"}}, format="json"), 403)
    # A cloud admin may list and delete anyone's, but creates only their own.
    assert [c["name"] for c in admin.get(creds_path(world.outsider)).json()["application_credentials"]] == ["bobs"]
    error(admin.post(creds_path(world.outsider), {"application_credential": {"name": "x"}}, format="json"), 403)
    assert admin.delete(creds_path(world.outsider, bobs.pk.hex)).status_code == 204


def test_application_credentials_need_a_project_token_and_an_unrestricted_one(world):
    unscoped = client().post(
        f"{V3}/auth/tokens",
        {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "alice", "domain": {"id": "default"}, "password": "pw-alice-123"}},
                }
            }
        },
        format="json",
    )
    c = client(unscoped["X-Subject-Token"])
    error(c.post(creds_path(world.member), {"application_credential": {"name": "x"}}, format="json"), 403)
    secret, cred = services.application_credential_create(user=world.member, project=world.project, name="ci")
    token = client().post(
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
    via_cred = client(token["X-Subject-Token"])
    error(via_cred.post(creds_path(world.member), {"application_credential": {"name": "y"}}, format="json"), 403)
    error(via_cred.delete(creds_path(world.member, cred.pk.hex)), 403)
    assert via_cred.get(creds_path(world.member)).status_code == 200


# --- Services, endpoints, regions, and unknown paths -------------------------------------------


def test_catalog_resources(admin, alice):
    services_ = admin.get(f"{V3}/services").json()["services"]
    assert {"identity", "compute"} <= {s["type"] for s in services_}
    endpoints = admin.get(f"{V3}/endpoints?interface=public").json()["endpoints"]
    assert {e["interface"] for e in endpoints} == {"public"}
    assert {e["service_id"] for e in endpoints} == {s["id"] for s in services_}
    assert admin.get(f"{V3}/endpoints/{endpoints[0]['id']}").status_code == 200
    assert admin.get(f"{V3}/services/{services_[0]['id']}").status_code == 200
    assert [r["id"] for r in admin.get(f"{V3}/regions").json()["regions"]] == ["RegionOne"]
    error(admin.get(f"{V3}/regions/Elsewhere"), 404)
    error(alice.get(f"{V3}/endpoints"), 403)


def test_unknown_identity_paths_are_keystone_404s(admin):
    error(admin.get(f"{V3}/OS-FEDERATION/identity_providers"), 404)
    error(client().get(f"{V3}/credentials"), 404)


def test_a_revoked_tokens_row_is_kept_until_it_expires(world):
    key = world.token(world.member)
    services.token_revoke(token=Token.objects.get(key_hash=services.hash_token(key)))
    assert services.tokens_purge() == 0
    from django.utils import timezone

    Token.objects.update(expires_at=timezone.now())
    assert services.tokens_purge() >= 1
