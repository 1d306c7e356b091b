"""Nova API breadth: flavors, keypairs, limits, zones, hypervisors, services, quotas, server
groups, server metadata/update/actions, list filters, query counts."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from apps.hosts.models import Host
from apps.images.models import Image, ImageStatus, Visibility
from apps.instances.models import Flavor, Instance
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)

V = "/compute/v2.1"
FLAVOR_KEYS = {"id", "name", "ram", "vcpus", "disk", "swap", "links", "OS-FLV-EXT-DATA:ephemeral",
               "OS-FLV-DISABLED:disabled", "os-flavor-access:is_public", "rxtx_factor"}


def api(world, user, project=None):
    c = APIClient()
    c.credentials(HTTP_X_AUTH_TOKEN=world.token(user, project))
    return c


def boot(c, world, name="vm1", **extra):
    resp = c.post(f"{V}/servers", {"server": {"name": name, "imageRef": str(world.image.id),
                                              "flavorRef": world.flavor.id, **extra}}, format="json")
    assert resp.status_code == 202, resp.content
    return resp.json()["server"]["id"]


def test_flavor_admin_create_extra_specs_private_access_delete(world):
    admin, member = api(world, world.admin), api(world, world.member)
    body = {"flavor": {"name": "tiny.private", "ram": 64, "vcpus": 1, "disk": 1, "id": "p1",
                       "os-flavor-access:is_public": False}}
    assert member.post(f"{V}/flavors", body, format="json").status_code == 403
    resp = admin.post(f"{V}/flavors", body, format="json")
    assert resp.status_code == 200 and set(resp.json()["flavor"]) == FLAVOR_KEYS
    assert admin.post(f"{V}/flavors", body, format="json").status_code == 409
    too_big = {"flavor": {**body["flavor"], "id": "big", "name": "big", "ram": 2**31}}
    resp = admin.post(f"{V}/flavors", too_big, format="json")
    assert resp.status_code == 400 and "at most 2147483647" in resp.json()["badRequest"]["message"]
    disks = {"swap": 512, "OS-FLV-EXT-DATA:ephemeral": 2}
    resp = admin.post(f"{V}/flavors", {"flavor": {**body["flavor"], "id": "x", "name": "x", **disks}}, format="json")
    assert resp.status_code == 200 and {k: resp.json()["flavor"][k] for k in disks} == disks
    assert {k: admin.get(f"{V}/flavors/x").json()["flavor"][k] for k in disks} == disks
    resp = admin.post(f"{V}/flavors", {"flavor": {**body["flavor"], "id": "y", "name": "y", "swap": -1}}, format="json")
    assert resp.status_code == 400
    assert member.get(f"{V}/flavors/p1").status_code == 404  # private, not shared
    resp = admin.post(f"{V}/flavors/p1/action", {"addTenantAccess": {"tenant": world.project.pk.hex}}, format="json")
    assert resp.json()["flavor_access"] == [{"flavor_id": "p1", "tenant_id": world.project.pk.hex}]
    assert member.get(f"{V}/flavors/p1").status_code == 200
    assert "p1" in [f["id"] for f in member.get(f"{V}/flavors/detail?is_public=True").json()["flavors"]]
    assert admin.post(f"{V}/flavors/p1/os-extra_specs", {"extra_specs": {"hw:cpu_policy": "shared"}},
                      format="json").json() == {"extra_specs": {"hw:cpu_policy": "shared"}}
    assert member.get(f"{V}/flavors/p1/os-extra_specs/hw:cpu_policy").json() == {"hw:cpu_policy": "shared"}
    assert admin.delete(f"{V}/flavors/p1/os-extra_specs/hw:cpu_policy").status_code == 202
    assert admin.delete(f"{V}/flavors/p1").status_code == 202
    assert admin.get(f"{V}/flavors/p1").status_code == 404


def test_keypairs_generate_import_fingerprint_per_user(world):
    c = api(world, world.member)
    resp = c.post(f"{V}/os-keypairs", {"keypair": {"name": "gen"}}, format="json")
    assert resp.status_code == 200
    kp = resp.json()["keypair"]
    assert set(kp) == {"name", "public_key", "fingerprint", "user_id", "private_key"}
    assert kp["public_key"].startswith("ssh-ed25519 ") and "OPENSSH PRIVATE KEY" in kp["private_key"]
    assert kp["user_id"] == world.member.pk.hex and len(kp["fingerprint"].split(":")) == 16
    assert "private_key" not in c.get(f"{V}/os-keypairs/gen").json()["keypair"]  # returned once only

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pub = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    resp = c.post(f"{V}/os-keypairs", {"keypair": {"name": "imported", "public_key": pub + " me@box"}}, format="json")
    assert resp.status_code == 200 and "private_key" not in resp.json()["keypair"]
    assert c.post(f"{V}/os-keypairs", {"keypair": {"name": "imported", "public_key": pub}},
                  format="json").status_code == 409
    assert c.post(f"{V}/os-keypairs", {"keypair": {"name": "bad", "public_key": "ssh-rsa nonsense"}},
                  format="json").status_code == 400
    names = [k["keypair"]["name"] for k in c.get(f"{V}/os-keypairs").json()["keypairs"]]
    assert names == ["gen", "imported"]
    assert api(world, world.reader).get(f"{V}/os-keypairs").json()["keypairs"] == []  # per user
    sid = boot(c, world, key_name="gen")
    assert c.get(f"{V}/servers/{sid}").json()["server"]["key_name"] == "gen"
    assert c.post(f"{V}/servers", {"server": {"name": "x", "imageRef": str(world.image.id), "flavorRef": "42",
                                              "key_name": "nope"}}, format="json").status_code == 400
    assert c.delete(f"{V}/os-keypairs/gen").status_code == 202
    assert c.get(f"{V}/os-keypairs/gen").status_code == 404


def test_limits_zones_quota_sets(world):
    make_host()
    c = api(world, world.member)
    boot(c, world)
    absolute = c.get(f"{V}/limits").json()["limits"]["absolute"]
    assert absolute["totalInstancesUsed"] == 1 and absolute["totalRAMUsed"] == 128
    assert absolute["maxTotalInstances"] == 10
    zones = c.get(f"{V}/os-availability-zone").json()["availabilityZoneInfo"]
    assert zones == [{"zoneName": "nova", "zoneState": {"available": True}, "hosts": None}]
    pid = world.project.pk.hex
    assert c.get(f"{V}/os-quota-sets/{pid}").json()["quota_set"]["instances"] == 10
    assert c.get(f"{V}/os-quota-sets/{pid}/detail").json()["quota_set"]["instances"]["in_use"] == 1
    assert c.put(f"{V}/os-quota-sets/{pid}", {"quota_set": {"instances": 3}}, format="json").status_code == 403
    admin = api(world, world.admin)
    assert admin.put(f"{V}/os-quota-sets/{pid}", {"quota_set": {"instances": 3}},
                     format="json").json()["quota_set"]["instances"] == 3
    resp = admin.put(f"{V}/os-quota-sets/{pid}", {"quota_set": {"cores": 2**31}}, format="json")
    assert resp.status_code == 400 and "-1 (unlimited) or 0 to 2147483647" in resp.json()["badRequest"]["message"]
    assert c.get(f"{V}/os-quota-sets/{world.other_project.pk.hex}").status_code == 403


def test_hypervisors_and_services_for_admins(world):
    host = make_host()
    assert api(world, world.member).get(f"{V}/os-hypervisors").status_code == 403
    admin = api(world, world.admin)
    hv = admin.get(f"{V}/os-hypervisors/detail").json()["hypervisors"][0]
    assert hv["hypervisor_hostname"] == "node1" and hv["memory_mb"] == 8192
    services = admin.get(f"{V}/os-services").json()["services"]
    assert [(s["host"], s["binary"], s["status"], s["state"]) for s in services] == [
        ("node1", "nova-compute", "enabled", "up")]
    resp = admin.put(f"{V}/os-services/disable-log-reason",
                     {"host": "node1", "binary": "nova-compute", "disabled_reason": "maintenance"}, format="json")
    assert resp.json()["service"]["status"] == "disabled"
    host.refresh_from_db()
    assert host.status == "disabled"
    c = api(world, world.member)
    sid = boot(c, world)
    assert c.get(f"{V}/servers/{sid}").json()["server"]["status"] == "ERROR"  # no enabled host
    admin.put(f"{V}/os-services/enable", {"host": "node1", "binary": "nova-compute"}, format="json")
    host.refresh_from_db()
    assert host.status == "enabled"


def test_hypervisor_uptime_search_and_servers(world):
    """What `openstack hypervisor show` and `hypervisor list --matching` ask below 2.53 and 2.88."""
    import re

    make_host("node1")
    make_host("node2", state="down")
    admin = api(world, world.admin)
    sid = boot(api(world, world.member), world)
    node1 = admin.get(f"{V}/os-hypervisors/node1").json()["hypervisor"]
    uptime = admin.get(f"{V}/os-hypervisors/{node1['id']}/uptime").json()["hypervisor"]
    assert set(uptime) == {"id", "hypervisor_hostname", "state", "status", "uptime"}
    # The regex python-openstackclient parses it with (procps' format).
    assert re.match(r"\s*(.+)\sup\s+(.+),\s+(.+)\susers?,\s+load average:\s(.+)", uptime["uptime"])
    resp = admin.get(f"{V}/os-hypervisors/node2/uptime")
    assert resp.status_code == 400
    assert resp.json()["badRequest"]["message"] == "Compute service of node2 is unavailable at this time."
    found = admin.get(f"{V}/os-hypervisors/NODE/search").json()["hypervisors"]
    assert [(h["hypervisor_hostname"], h["state"]) for h in found] == [("node1", "up"), ("node2", "down")]
    with_servers = admin.get(f"{V}/os-hypervisors/node/servers").json()["hypervisors"]
    assert with_servers[0]["servers"] == [{"uuid": sid, "name": "vm1"}] and "servers" not in with_servers[1]
    resp = admin.get(f"{V}/os-hypervisors/zzz/search")
    assert resp.status_code == 404 and "No hypervisor matching 'zzz'" in resp.json()["itemNotFound"]["message"]
    for path in ("node1/uptime", "node/search", "node/servers"):
        assert api(world, world.member).get(f"{V}/os-hypervisors/{path}").status_code == 403


def test_os_hosts_list_show_and_enable(world):
    """Nova's os-hosts (`openstack host list/show/set`): totals, use, and each project's share."""
    make_host("node1", vcpus=4, memory_mib=4096, disk_gb=50)
    make_host("node2", availability_zone="london")
    boot(api(world, world.member), world)
    admin = api(world, world.admin)
    assert admin.get(f"{V}/os-hosts").json()["hosts"] == [
        {"host_name": "node1", "service": "compute", "zone": "nova"},
        {"host_name": "node2", "service": "compute", "zone": "london"}]
    assert [h["host_name"] for h in admin.get(f"{V}/os-hosts?zone=london").json()["hosts"]] == ["node2"]
    rows = [r["resource"] for r in admin.get(f"{V}/os-hosts/node1").json()["host"]]
    flavor = world.flavor
    assert [(r["project"], r["cpu"], r["memory_mb"], r["disk_gb"]) for r in rows] == [
        ("(total)", 4, 4096, 50), ("(used_now)", flavor.vcpus, flavor.ram, flavor.disk),
        ("(used_max)", flavor.vcpus, flavor.ram, flavor.disk),
        (world.project.pk.hex, flavor.vcpus, flavor.ram, flavor.disk)]
    assert admin.get(f"{V}/os-hosts/nowhere").status_code == 404
    resp = admin.put(f"{V}/os-hosts/node2", {"status": "disable"}, format="json")
    assert resp.json() == {"host": "node2", "status": "disabled"}
    assert Host.objects.get(hostname="node2").status == "disabled"
    assert admin.put(f"{V}/os-hosts/node2", {"status": "enable"}, format="json").json()["status"] == "enabled"
    resp = admin.put(f"{V}/os-hosts/node2", {"maintenance_mode": "enable"}, format="json")
    assert resp.status_code == 501 and resp.json()["notImplemented"]["message"] == (
        "Virt driver does not implement host maintenance mode.")
    for body in ({}, {"status": "on"}, {"status": "enable", "zone": "x"}, [1]):
        assert admin.put(f"{V}/os-hosts/node2", body, format="json").status_code == 400, body
    for action in ("startup", "shutdown", "reboot"):  # Nova's libvirt driver powers no host either
        resp = admin.get(f"{V}/os-hosts/node2/{action}")
        assert resp.status_code == 501
        assert resp.json()["notImplemented"]["message"] == "The requested functionality is not supported."
        assert admin.get(f"{V}/os-hosts/nowhere/{action}").status_code == 404
        assert api(world, world.member).get(f"{V}/os-hosts/node2/{action}").status_code == 403
    assert api(world, world.member).get(f"{V}/os-hosts").status_code == 403


def test_aggregates_put_hosts_in_availability_zones(world):
    """Nova's os-aggregates: an aggregate's availability_zone is its hosts' zone, which the
    scheduler and the zone list follow; a host is in one zone, and one with instances stays."""
    make_host("node1")
    make_host("node2")
    admin = api(world, world.admin)

    def call(method, path, body=None, expect=200):
        resp = getattr(admin, method)(f"{V}/os-aggregates{path}", body, format="json")
        assert resp.status_code == expect, resp.content
        return resp.json() if resp.content else None

    def zone_of(hostname):
        return Host.objects.get(hostname=hostname).availability_zone

    created = call("post", "", {"aggregate": {"name": "london-racks", "availability_zone": "london"}})["aggregate"]
    assert set(created) == {"id", "name", "availability_zone", "created_at", "updated_at", "deleted", "deleted_at"}
    agg = created["id"]
    assert isinstance(agg, int) and created["availability_zone"] == "london"
    shown = call("post", f"/{agg}/action", {"add_host": {"host": "node2"}})["aggregate"]
    assert (shown["hosts"], shown["metadata"], zone_of("node2")) == (["node2"], {"availability_zone": "london"},
                                                                     "london")
    assert call("get", "")["aggregates"] == [call("get", f"/{agg}")["aggregate"]]
    zones = admin.get(f"{V}/os-availability-zone").json()["availabilityZoneInfo"]
    assert {z["zoneName"] for z in zones} == {"nova", "london"}
    # The scheduler places a server asking for the zone on its host.
    server = admin.post(f"{V}/servers", {"server": {"name": "in-london", "imageRef": str(world.image.id),
                                                    "flavorRef": world.flavor.id, "availability_zone": "london"}},
                        format="json").json()["server"]["id"]
    assert Instance.objects.get(pk=server).host.hostname == "node2"

    # Refused: a second zone for a host, moving a host with instances, a duplicate, a non-empty delete.
    other = call("post", "", {"aggregate": {"name": "paris-racks", "availability_zone": "paris"}})["aggregate"]["id"]
    call("post", f"/{other}/action", {"add_host": {"host": "node2"}}, expect=409)
    call("post", f"/{agg}/action", {"remove_host": {"host": "node2"}}, expect=409)
    call("put", f"/{agg}", {"aggregate": {"availability_zone": "berlin"}}, expect=400)
    call("post", "", {"aggregate": {"name": "london-racks"}}, expect=409)
    call("post", "", {"aggregate": {"name": "x", "availability_zone": "a:b"}}, expect=400)
    call("post", "", {"aggregate": {"name": "x", "zone": "a"}}, expect=400)
    call("delete", f"/{agg}", expect=400)
    call("post", f"/{agg}/action", {"add_host": {"host": "nope"}}, expect=404)
    call("post", f"/{agg}/action", {"add_host": {"host": "node2"}}, expect=409)
    call("post", f"/{agg}/action", {"evacuate": {}}, expect=400)
    call("get", "/99999", expect=404)
    for bad in ({"aggregate": {"name": 5}}, {"aggregate": {"name": " "}}, {"aggregate": []}, [1]):
        call("post", "", bad, expect=400)
    for bad in ({"aggregate": {}}, {"aggregate": {"name": None}}, {"aggregate": {"uuid": "x"}}):
        call("put", f"/{agg}", bad, expect=400)
    for bad in ({"add_host": {"host": 5}}, {"add_host": "node1"}, {"set_metadata": {"metadata": []}},
                {"set_metadata": {"metadata": {"k": {"a": 1}}}}, {"set_metadata": {"metadata": {"": "v"}}},
                {"add_host": {"host": "node1"}, "remove_host": {"host": "node1"}}):
        call("post", f"/{agg}/action", bad, expect=400)
    call("get", "/not-a-number", expect=404)
    assert zone_of("node2") == "london"

    # Metadata: set and removed by null; an aggregate without a zone leaves its hosts in "nova".
    shown = call("post", f"/{other}/action", {"set_metadata": {"metadata": {"ssd": "true", "availability_zone": None}}})
    assert shown["aggregate"]["metadata"] == {"ssd": "true"} and shown["aggregate"]["availability_zone"] is None
    call("post", f"/{other}/action", {"add_host": {"host": "node1"}})
    assert zone_of("node1") == "nova"
    call("put", f"/{other}", {"aggregate": {"name": "rack-7", "availability_zone": "paris"}})
    assert (zone_of("node1"), call("get", f"/{other}")["aggregate"]["name"]) == ("paris", "rack-7")
    call("post", f"/{other}/action", {"remove_host": {"host": "node1"}})
    assert zone_of("node1") == "nova"
    assert call("delete", f"/{other}") is None
    call("get", f"/{other}", expect=404)
    assert api(world, world.member).get(f"{V}/os-aggregates").status_code == 403
    assert api(world, world.member).post(f"{V}/os-aggregates", {"aggregate": {"name": "m"}},
                                         format="json").status_code == 403


def test_server_groups_anti_affinity(world):
    make_host("a")
    make_host("b")
    c = api(world, world.member)
    resp = c.post(f"{V}/os-server-groups", {"server_group": {"name": "g", "policies": ["anti-affinity"]}},
                  format="json")
    assert resp.status_code == 200
    group = resp.json()["server_group"]
    assert set(group) == {"id", "name", "policies", "members", "metadata"}
    ids = []
    for i in range(3):
        resp = c.post(f"{V}/servers", {"server": {"name": f"g{i}", "imageRef": str(world.image.id), "flavorRef": "42"},
                                       "os:scheduler_hints": {"group": group["id"]}}, format="json")
        ids.append(resp.json()["server"]["id"])
    hosts = [Instance.objects.get(pk=i).host for i in ids]
    assert hosts[0] != hosts[1] and hosts[2] is None  # two hosts, the third has nowhere to go
    assert sorted(c.get(f"{V}/os-server-groups/{group['id']}").json()["server_group"]["members"]) == sorted(ids)
    # Nova's schema: the hints are an object, and the group a group's UUID (`--hint group=g` is 400).
    for hints, message in (({"group": "g"}, "'g' is not a 'uuid'"), ({"group": 5}, "'5' is not a 'uuid'"),
                           ([group["id"]], "os:scheduler_hints: it must be an object")):
        resp = c.post(f"{V}/servers", {"server": {"name": "h", "imageRef": str(world.image.id), "flavorRef": "42"},
                                       "os:scheduler_hints": hints}, format="json")
        assert resp.status_code == 400 and message in resp.json()["badRequest"]["message"], hints
    assert Instance.objects.count() == 3
    assert c.delete(f"{V}/os-server-groups/{group['id']}").status_code == 204


def test_server_update_metadata_actions_and_filters(world):
    make_host()
    c = api(world, world.member)
    sid = boot(c, world, metadata={"a": "1"})
    assert c.get(f"{V}/servers/{sid}/metadata").json() == {"metadata": {"a": "1"}}
    assert c.post(f"{V}/servers/{sid}/metadata", {"metadata": {"b": "2"}}, format="json").json() == {
        "metadata": {"a": "1", "b": "2"}}
    assert c.put(f"{V}/servers/{sid}/metadata/c", {"meta": {"c": "3"}}, format="json").json() == {"meta": {"c": "3"}}
    assert c.delete(f"{V}/servers/{sid}/metadata/a").status_code == 204
    assert c.put(f"{V}/servers/{sid}/metadata", {"metadata": {"z": "9"}}, format="json").json() == {
        "metadata": {"z": "9"}}
    resp = c.put(f"{V}/servers/{sid}", {"server": {"name": "renamed"}}, format="json")
    assert resp.status_code == 200 and resp.json()["server"]["name"] == "renamed"
    for bad in (5, ["x"], " "):
        resp = c.put(f"{V}/servers/{sid}", {"server": {"name": bad}}, format="json")
        assert resp.status_code == 400 and "needs a name" in resp.json()["badRequest"]["message"]
    c.post(f"{V}/servers/{sid}/action", {"os-stop": None}, format="json")
    actions = c.get(f"{V}/servers/{sid}/os-instance-actions").json()["instanceActions"]
    assert [a["action"] for a in actions] == ["stop", "create"]
    detail = c.get(f"{V}/servers/{sid}/os-instance-actions/{actions[0]['request_id']}").json()["instanceAction"]
    assert detail["events"][0]["event"] == "compute_stop_instance" and detail["events"][0]["result"] == "Success"
    boot(c, world, name="other")
    names = lambda q: [s["name"] for s in c.get(f"{V}/servers/detail{q}").json()["servers"]]
    assert names("?name=^ren") == ["renamed"]
    assert names("?status=SHUTOFF") == ["renamed"]
    assert names("?limit=1") == ["other"]
    assert len(names("?changes-since=2000-01-01T00:00:00Z")) == 2
    assert c.get(f"{V}/servers?changes-since=yesterday").status_code == 400


def test_server_list_image_and_flavor_filters(world):
    make_host(vcpus=100, memory_mib=100_000)
    Flavor.objects.create(id="43", name="m1.other", vcpus=1, ram=128, disk=1)
    other_image = Image.objects.create(project=world.project, name="other", status=ImageStatus.ACTIVE,
                                       disk_format="qcow2", visibility=Visibility.PUBLIC, size=1, virtual_size=1)
    c = api(world, world.member)
    boot(c, world, name="a")
    boot(c, world, name="b", flavorRef="43")
    boot(c, world, name="c", imageRef=str(other_image.id))
    names = lambda q: sorted(s["name"] for s in c.get(f"{V}/servers{q}").json()["servers"])
    assert names("?flavor=43") == ["b"]
    assert names(f"?image={other_image.id}") == ["c"]
    assert names(f"?image={world.image.id}&flavor=42") == ["a"]
    assert names("?flavor=nope") == [] and names("?image=not-an-id") == []  # Nova: no such flavor, no servers
    resp = c.get(f"{V}/servers?name=[")
    assert resp.status_code == 400 and "Invalid regular expression for name" in resp.json()["badRequest"]["message"]


@pytest.mark.database
def test_a_regex_the_database_refuses_is_a_400(world):
    """PostgreSQL's regex dialect refuses patterns Python's takes: they are 400s there too, never 500s."""
    admin, member = api(world, world.admin), api(world, world.member)
    boot(member, world, name="a+b")
    refused = ["["] + (["a++", "(?P<n>x)"] if connection.vendor == "postgresql" else [])
    filters = ((member, "name", {}), (admin, "hostname", {"all_tenants": 1}), (member, "ip", {}))
    for pattern in refused:
        for client, name, extra in filters:
            resp = client.get(f"{V}/servers/detail", {**extra, name: pattern})
            assert resp.status_code == 400, (pattern, name, resp.content)
            assert f"Invalid regular expression for {name}" in resp.json()["badRequest"]["message"]
    # the request's transaction survives a refused pattern: the next filter still answers
    assert [s["name"] for s in member.get(f"{V}/servers", {"name": "a.b"}).json()["servers"]] == ["a+b"]


def test_server_list_admin_only_filters(world):
    make_host("node1", vcpus=100, memory_mib=100_000)
    make_host("node2", vcpus=100, memory_mib=100_000)
    member, admin = api(world, world.member), api(world, world.admin)
    a, b, c, d = (boot(member, world, name=name) for name in ("a", "b", "c", "d"))
    Instance.objects.filter(pk=a).update(host=Host.objects.get(hostname="node2"), key_name="k1",
                                         description="made by a script", config_drive=True)
    Instance.objects.filter(pk=b).update(host=Host.objects.get(hostname="node1"))
    assert member.post(f"{V}/servers/{b}/action", {"os-stop": None}, format="json").status_code == 202
    assert member.post(f"{V}/servers/{c}/action", {"lock": None}, format="json").status_code == 202
    assert member.delete(f"{V}/servers/{d}").status_code == 204

    def names(client, query):
        resp = client.get(f"{V}/servers/detail?all_tenants=1&{query}")
        assert resp.status_code == 200, resp.content
        return sorted(s["name"] for s in resp.json()["servers"])

    # A non-admin's are dropped (Nova before 2.83), so every live server of the project is listed.
    for query in ("host=node2", "key_name=k1", "config_drive=True", "vm_state=stopped", "deleted=true"):
        assert names(member, query) == ["a", "b", "c"], query
    assert names(admin, "host=node2") == ["a"]
    assert names(admin, "node=^node[12]$") == ["a", "b", "c"]
    assert names(admin, f"uuid={b}") == ["b"] and names(admin, "uuid=nope") == []
    assert names(admin, f"user_id={world.member.pk.hex}") == ["a", "b", "c"]
    assert names(admin, f"user_id={world.admin.pk.hex}") == []
    assert names(admin, "vm_state=stopped") == ["b"]
    assert names(admin, "power_state=^4$") == ["b"]  # shutdown
    assert names(admin, "task_state=deleting") == []
    assert names(admin, "locked_by=owner") == ["c"]
    assert names(admin, "key_name=^k") == ["a"]
    assert names(admin, "description=script$") == ["a"] and names(admin, "display_description=^made") == ["a"]
    assert names(admin, "display_name=^[ab]$") == ["a", "b"]
    assert names(admin, "availability_zone=^nova$") == ["a", "b", "c"]
    assert names(admin, f"image_ref={world.image.id}") == ["a", "b", "c"]
    assert names(admin, "launch_index=0") == ["a", "b", "c"]
    # Nova matches config_drive against the "True" or "" it stores: "False" matches nothing.
    assert names(admin, "config_drive=True") == ["a"]
    assert names(admin, "config_drive=False") == []
    assert names(admin, "deleted=true") == ["d"] and names(admin, "deleted=false") == ["a", "b", "c"]
    assert names(admin, "status=DELETED") == ["d"]
    resp = member.get(f"{V}/servers?status=DELETED")
    assert resp.status_code == 403 and "Only administrators" in resp.json()["forbidden"]["message"]
    resp = admin.get(f"{V}/servers?key_name=(")
    assert resp.status_code == 400 and "key_name" in resp.json()["badRequest"]["message"]


def test_reset_state_is_for_admins_and_clears_the_task(world):
    make_host()
    member, admin = api(world, world.member), api(world, world.admin)
    sid = boot(member, world)
    Instance.objects.filter(pk=sid).update(task_state="deleting")  # stuck, say its host died mid-delete
    reset = lambda client, body: client.post(f"{V}/servers/{sid}/action", {"os-resetState": body}, format="json")
    resp = reset(member, {"state": "active"})
    assert resp.status_code == 403 and "reset_state" in resp.json()["forbidden"]["message"]
    for body in ({"state": "building"}, {}, {"state": "error", "x": 1}, None):
        assert reset(admin, body).status_code == 400, body
    assert Instance.objects.get(pk=sid).task_state == "deleting"  # nothing changed
    assert reset(admin, {"state": "error"}).status_code == 202
    instance = Instance.objects.get(pk=sid)
    assert (instance.vm_state, instance.task_state, instance.power_state) == ("error", None, 1)
    assert member.get(f"{V}/servers/{sid}").json()["server"]["status"] == "ERROR"
    assert reset(admin, {"state": "active"}).status_code == 202
    assert member.get(f"{V}/servers/{sid}").json()["server"]["status"] == "ACTIVE"
    actions = member.get(f"{V}/servers/{sid}/os-instance-actions").json()["instanceActions"]
    assert [a["action"] for a in actions][:2] == ["resetState", "resetState"]
    # Now the member can act on it again.
    assert member.post(f"{V}/servers/{sid}/action", {"os-stop": None}, format="json").status_code == 202
    assert member.delete(f"{V}/servers/{sid}").status_code == 204
    assert reset(admin, {"state": "active"}).status_code == 404


def test_force_delete_deletes_and_restore_is_409(world):
    """Deletes are never deferred: forceDelete (`openstack server delete --force`) is a delete from
    any state, and restore finds nothing soft deleted (Nova's answers for both)."""
    make_host()
    member, admin = api(world, world.member), api(world, world.admin)
    action = lambda client, sid, body: client.post(f"{V}/servers/{sid}/action", body, format="json")
    sid = boot(member, world)
    resp = action(member, sid, {"restore": None})
    assert resp.status_code == 409
    assert resp.json()["conflictingRequest"]["message"] == f"Cannot 'restore' instance {sid} while it is in vm_state active."
    Instance.objects.filter(pk=sid).update(task_state="rebooting")  # a task in progress does not stop it
    assert action(member, sid, {"lock": None}).status_code == 202
    resp = action(member, sid, {"forceDelete": None})
    assert resp.status_code == 409 and "is locked" in resp.json()["conflictingRequest"]["message"]
    assert action(admin, sid, {"forceDelete": None}).status_code == 202
    assert member.get(f"{V}/servers/{sid}").status_code == 404
    actions = member.get(f"{V}/servers/{sid}/os-instance-actions", HTTP_OPENSTACK_API_VERSION="compute 2.21")
    assert actions.json()["instanceActions"][0]["action"] == "delete"
    assert action(admin, sid, {"forceDelete": None}).status_code == 404
    assert action(member, sid, {"restore": None}).status_code == 404


def test_multiple_create(world):
    make_host()
    c = api(world, world.member)
    boot(c, world, name="many", min_count=2, max_count=3)
    assert sorted(Instance.objects.values_list("name", flat=True)) == ["many-1", "many-2", "many-3"]


@pytest.mark.parametrize("path", ["/servers", "/servers/detail"])
def test_server_list_query_count_is_constant(world, path):
    make_host(vcpus=100, memory_mib=100_000)
    c = api(world, world.member)
    boot(c, world, name="first")

    def count():
        with CaptureQueriesContext(connection) as ctx:
            assert c.get(f"{V}{path}").status_code == 200
        return len(ctx.captured_queries)

    one = count()
    for i in range(5):
        boot(c, world, name=f"more{i}")
    assert count() == one


def test_server_list_sorting_with_marker(world):
    make_host()
    c = api(world, world.member)
    for name in ("b", "c", "a"):
        boot(c, world, name=name)
    names = lambda q: [s["name"] for s in c.get(f"{V}/servers{q}").json()["servers"]]
    assert names("?sort_key=display_name&sort_dir=asc") == ["a", "b", "c"]
    assert names("?sort_key=display_name&sort_dir=desc") == ["c", "b", "a"]
    first = c.get(f"{V}/servers?sort_key=display_name&sort_dir=asc&limit=1").json()
    assert [s["name"] for s in first["servers"]] == ["a"] and first["servers_links"][0]["rel"] == "next"
    assert names(f"?sort_key=display_name&sort_dir=asc&marker={first['servers'][0]['id']}") == ["b", "c"]
    assert c.get(f"{V}/servers?sort_key=password").status_code == 400


# Every new endpoint: 401 without a token; a reader may read but not write; another project's
# server is 404.
ENDPOINTS = [
    ("get", "/os-keypairs"), ("post", "/os-keypairs"), ("get", "/limits"), ("get", "/os-availability-zone"),
    ("get", "/os-hypervisors"), ("get", "/os-services"), ("get", "/os-server-groups"),
    ("post", "/os-server-groups"), ("get", "/flavors/42/os-extra_specs"), ("post", "/flavors"),
]


@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_new_endpoints_need_a_token(world, method, path):
    resp = getattr(APIClient(), method)(f"{V}{path}", {}, format="json")
    assert resp.status_code == 401 and resp.json()["error"]["code"] == 401


def test_reader_cannot_write_and_other_projects_servers_are_404(world):
    make_host()
    reader = api(world, world.reader)
    assert reader.get(f"{V}/os-keypairs").status_code == 200
    assert reader.post(f"{V}/os-keypairs", {"keypair": {"name": "r"}}, format="json").status_code == 403
    assert reader.post(f"{V}/os-server-groups", {"server_group": {"name": "g", "policies": ["affinity"]}},
                       format="json").status_code == 403
    sid = boot(api(world, world.member), world)
    assert reader.put(f"{V}/servers/{sid}", {"server": {"name": "x"}}, format="json").status_code == 403
    assert reader.post(f"{V}/servers/{sid}/metadata", {"metadata": {"a": "b"}}, format="json").status_code == 403
    outsider = api(world, world.outsider, world.other_project)
    for path in (f"/servers/{sid}", f"/servers/{sid}/metadata", f"/servers/{sid}/os-instance-actions"):
        resp = outsider.get(f"{V}{path}")
        assert resp.status_code == 404 and "itemNotFound" in resp.json(), path
    assert outsider.put(f"{V}/servers/{sid}", {"server": {"name": "x"}}, format="json").status_code == 404
    group = api(world, world.member).post(f"{V}/os-server-groups", {"server_group": {
        "name": "g", "policies": ["affinity"]}}, format="json").json()["server_group"]["id"]
    assert outsider.get(f"{V}/os-server-groups/{group}").status_code == 404
    assert outsider.delete(f"{V}/os-server-groups/{group}").status_code == 404
