"""The Nova-compatible API over the service layer: bodies, status codes, the tenancy wall."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from apps.instances.models import Instance
from apps.tenants.services import quota_set
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)

# Nova's GET /servers/{id} keys at 2.1 (required and allowed), see docs/openstack-wire.md.
REQUIRED = {"id", "name", "status", "image", "flavor", "user_id", "tenant_id", "created", "updated",
            "metadata", "links", "addresses", "hostId"}
ALLOWED = REQUIRED | {
    "OS-EXT-STS:vm_state", "OS-EXT-STS:task_state", "OS-EXT-STS:power_state", "OS-EXT-AZ:availability_zone",
    "OS-EXT-SRV-ATTR:host", "OS-EXT-SRV-ATTR:hypervisor_hostname", "OS-EXT-SRV-ATTR:instance_name",
    "OS-SRV-USG:launched_at", "OS-SRV-USG:terminated_at", "OS-DCF:diskConfig", "accessIPv4", "accessIPv6",
    "key_name", "config_drive", "progress", "security_groups", "os-extended-volumes:volumes_attached", "fault",
}


def client(token=None):
    c = APIClient()
    if token:
        c.credentials(HTTP_X_AUTH_TOKEN=token)
    return c


def boot(c, world, name="vm1"):
    return c.post("/compute/v2.1/servers", {"server": {"name": name, "imageRef": str(world.image.id),
                                                       "flavorRef": world.flavor.id}}, format="json")


def test_server_create_show_delete(world):
    make_host()
    c = client(world.token(world.member))
    resp = boot(c, world)
    assert resp.status_code == 202, resp.content
    server_id = resp.json()["server"]["id"]
    assert {"id", "links"} <= set(resp.json()["server"])

    body = c.get(f"/compute/v2.1/servers/{server_id}").json()["server"]
    assert REQUIRED <= set(body) <= ALLOWED
    assert body["status"] == "ACTIVE" and body["OS-EXT-STS:task_state"] is None
    assert body["flavor"]["id"] == "42" and body["image"]["id"] == str(world.image.id)
    assert (body["user_id"], body["tenant_id"]) == (world.member.pk.hex, world.project.pk.hex)
    assert all(set(link) == {"rel", "href"} for link in body["links"])
    assert "OS-EXT-SRV-ATTR:host" not in body  # admin-only

    assert c.delete(f"/compute/v2.1/servers/{server_id}").status_code == 204
    gone = c.get(f"/compute/v2.1/servers/{server_id}")
    assert gone.status_code == 404
    assert gone.json()["itemNotFound"]["code"] == 404


def test_error_server_shows_its_fault(world, fake_driver):
    make_host()
    fake_driver.fail_next_spawn("no room in the inn")
    c = client(world.token(world.member))
    server_id = boot(c, world).json()["server"]["id"]
    body = c.get(f"/compute/v2.1/servers/{server_id}").json()["server"]
    assert body["status"] == "ERROR"
    assert "no room in the inn" in body["fault"]["message"]


def test_no_token_is_401_with_keystone_error_body(world):
    for method, path in [("get", "/compute/v2.1/servers"), ("post", "/compute/v2.1/servers"),
                         ("get", "/compute/v2.1/flavors/detail"), ("delete", "/compute/v2.1/servers/x"),
                         ("get", "/compute/v2.1/servers/x/tags"), ("put", "/compute/v2.1/servers/x/tags/red"),
                         ("get", "/compute/v2.1/os-simple-tenant-usage"),
                         ("get", "/compute/v2.1/os-simple-tenant-usage/x")]:
        resp = getattr(client(), method)(path)
        assert resp.status_code == 401, path
        assert resp.json()["error"]["code"] == 401
        assert resp["WWW-Authenticate"].startswith("Keystone")
    assert client("not-a-token").get("/compute/v2.1/servers").status_code == 401


def test_revoked_token_is_401(world):
    from apps.tenants.models import Token
    from django.utils import timezone

    token = world.token(world.member)
    Token.objects.update(revoked_at=timezone.now())
    assert client(token).get("/compute/v2.1/servers").status_code == 401


def test_other_projects_server_is_404_on_every_method(world):
    make_host()
    server_id = boot(client(world.token(world.member)), world).json()["server"]["id"]
    bob = client(world.token(world.outsider, world.other_project))
    assert bob.get(f"/compute/v2.1/servers/{server_id}").status_code == 404
    assert bob.delete(f"/compute/v2.1/servers/{server_id}").status_code == 404
    resp = bob.post(f"/compute/v2.1/servers/{server_id}/action", {"os-getConsoleOutput": {}}, format="json")
    assert resp.status_code == 404
    assert bob.get("/compute/v2.1/servers/detail").json()["servers"] == []
    assert Instance.objects.get(pk=server_id).deleted_at is None


def test_token_for_a_project_without_role_is_refused(world):
    from apps.tenants.services import token_issue
    from cloudmgr.exceptions import NotAuthenticated

    with pytest.raises(NotAuthenticated):
        token_issue(user=world.outsider, project=world.project)


def test_reader_can_list_but_not_create_or_delete(world):
    make_host()
    server_id = boot(client(world.token(world.member)), world).json()["server"]["id"]
    rita = client(world.token(world.reader))
    assert rita.get("/compute/v2.1/servers").status_code == 200
    resp = boot(rita, world)
    assert resp.status_code == 403 and "forbidden" in resp.json()
    assert rita.delete(f"/compute/v2.1/servers/{server_id}").status_code == 403


def test_admin_sees_all_tenants_and_host_attributes(world):
    make_host()
    boot(client(world.token(world.outsider, world.other_project)), world, name="bobs")
    admin = client(world.token(world.admin))
    assert admin.get("/compute/v2.1/servers").json()["servers"] == []
    servers = admin.get("/compute/v2.1/servers/detail?all_tenants=1").json()["servers"]
    assert [s["name"] for s in servers] == ["bobs"]
    assert servers[0]["OS-EXT-SRV-ATTR:host"] == "node1"


def test_bad_bodies_are_400_never_500(world):
    make_host()
    c = client(world.token(world.member))
    for body in [{}, {"server": "x"}, {"server": {"name": "x"}}, {"server": {"name": "", "imageRef": "a", "flavorRef": "b"}}]:
        resp = c.post("/compute/v2.1/servers", body, format="json")
        assert resp.status_code == 400, body
        assert resp.json()["badRequest"]["message"]
    resp = c.post("/compute/v2.1/servers", {"server": {"name": "x", "imageRef": "nope", "flavorRef": "42"}}, format="json")
    assert resp.status_code == 404  # Nova: image not found is 400 in newer releases; OSC resolves names first
    resp = c.post("/compute/v2.1/servers", "{not json", content_type="application/json")
    assert resp.status_code == 400
    resp = c.post(f"/compute/v2.1/servers/{'0' * 32}/action", {"nope": {}}, format="json")
    assert resp.status_code in (400, 404)


def test_quota_exceeded_is_403_with_message(world):
    make_host()
    quota_set(project=world.project, resource="instances", limit=0)
    resp = boot(client(world.token(world.member)), world)
    assert resp.status_code == 403
    assert "Quota exceeded" in resp.json()["forbidden"]["message"]


def test_microversion_headers(world):
    c = client(world.token(world.member))
    resp = c.get("/compute/v2.1/flavors", HTTP_OPENSTACK_API_VERSION="compute 2.1", HTTP_X_OPENSTACK_NOVA_API_VERSION="2.1")
    assert resp["OpenStack-API-Version"] == "compute 2.1"
    assert resp["X-OpenStack-Nova-API-Version"] == "2.1"
    assert "OpenStack-API-Version" in resp["Vary"]
    assert c.get("/compute/v2.1/flavors").status_code == 200
    resp = c.get("/compute/v2.1/flavors", HTTP_OPENSTACK_API_VERSION="compute 2.99")
    assert resp.status_code == 406


def test_version_documents_need_no_token(db):
    root = client().get("/compute/")
    assert root.status_code == 200
    assert [v["id"] for v in root.json()["versions"]] == ["v2.0", "v2.1"]
    v21 = client().get("/compute/v2.1").json()["version"]
    assert v21["version"] == "2.28" and v21["min_version"] == "2.1"
    identity = client().get("/identity/")
    assert identity.status_code == 300
    assert identity.json()["versions"]["values"][0]["id"].startswith("v3")


def test_flavor_detail_keys(world):
    flavors = client(world.token(world.member)).get("/compute/v2.1/flavors/detail?is_public=True").json()["flavors"]
    assert set(flavors[0]) == {"id", "name", "ram", "vcpus", "disk", "swap", "links", "OS-FLV-EXT-DATA:ephemeral",
                               "OS-FLV-DISABLED:disabled", "os-flavor-access:is_public", "rxtx_factor"}


def test_server_list_query_count_is_constant_and_paging_works(world):
    make_host(vcpus=64, memory_mib=65536)
    quota_set(project=world.project, resource="instances", limit=100)
    c = client(world.token(world.member))
    boot(c, world, "first")

    def count_queries():
        with CaptureQueriesContext(connection) as ctx:
            assert c.get("/compute/v2.1/servers/detail").status_code == 200
        return len(ctx.captured_queries)

    one = count_queries()
    for i in range(5):
        boot(c, world, f"vm{i}")
    assert count_queries() == one

    page = c.get("/compute/v2.1/servers?limit=4").json()
    assert len(page["servers"]) == 4
    next_url = page["servers_links"][0]["href"]
    rest = c.get(next_url).json()["servers"]
    assert len(rest) == 2
    assert not {s["id"] for s in page["servers"]} & {s["id"] for s in rest}


def test_password_token_flow(world):
    resp = client().post("/identity/v3/auth/tokens", {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": "alice", "domain": {"name": "Default"}, "password": "pw-alice-123"}}},
        "scope": {"project": {"name": "alpha", "domain": {"name": "Default"}}}}}, format="json")
    assert resp.status_code == 201
    token = resp["X-Subject-Token"]
    body = resp.json()["token"]
    assert body["project"]["name"] == "alpha"
    assert body["user"]["id"] == world.member.pk.hex and body["project"]["id"] == world.project.pk.hex
    assert body["expires_at"] > body["issued_at"] and len(body["expires_at"]) == len(body["issued_at"])
    assert {e["interface"] for svc in body["catalog"] for e in svc["endpoints"]} == {"public", "internal", "admin"}
    assert client(token).get("/compute/v2.1/servers").status_code == 200

    wrong = client().post("/identity/v3/auth/tokens", {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": "alice", "domain": {"name": "Default"}, "password": "nope"}}}}},
        format="json")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == 401
    no_role = client().post("/identity/v3/auth/tokens", {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": "alice", "domain": {"name": "Default"}, "password": "pw-alice-123"}}},
        "scope": {"project": {"name": "beta", "domain": {"name": "Default"}}}}}, format="json")
    assert no_role.status_code == 401
