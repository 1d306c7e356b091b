"""The Neutron v2.0 API: the generic checks on every endpoint (401, 403 for reader writes, 404
across projects, error bodies, pinned query counts), and Neutron's bodies, filters, fields,
sorting, paging and status codes."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from apps.networks import services
from apps.networks.api.views import EXTENSIONS

pytestmark = pytest.mark.django_db(transaction=True)

API = "/network/v2.0"


def client(token=None):
    c = APIClient()
    if token:
        c.credentials(HTTP_X_AUTH_TOKEN=token)
    return c


def neutron_error(resp, status: int, type_: str | None = None) -> dict:
    assert resp.status_code == status, resp.content
    body = resp.json()
    assert set(body) == {"NeutronError"} and set(body["NeutronError"]) == {"type", "message", "detail"}, body
    assert body["NeutronError"]["message"]
    if type_:
        assert body["NeutronError"]["type"] == type_, body
    return body["NeutronError"]


@pytest.fixture
def objects(network_objects):
    return network_objects


# A valid update body per collection (rules cannot be updated: Neutron has no PUT for them).
UPDATES = {
    "networks": {"network": {"name": "x"}}, "subnets": {"subnet": {"name": "x"}}, "ports": {"port": {"name": "x"}},
    "routers": {"router": {"name": "x"}}, "floatingips": {"floatingip": {"description": "x"}},
    "security-groups": {"security_group": {"name": "x"}},
}
COLLECTIONS = ["networks", "subnets", "ports", "routers", "floatingips", "security-groups", "security-group-rules"]
KINDS = {"networks": "Network", "subnets": "Subnet", "ports": "Port", "routers": "Router",
         "floatingips": "FloatingIP", "security-groups": "SecurityGroup", "security-group-rules": "SecurityGroupRule"}


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_no_token_is_401_with_keystones_body(world, objects, collection):
    pk = objects[collection].pk
    for method, path in [("get", f"{API}/{collection}"), ("post", f"{API}/{collection}"),
                         ("get", f"{API}/{collection}/{pk}"), ("put", f"{API}/{collection}/{pk}"),
                         ("delete", f"{API}/{collection}/{pk}")]:
        resp = getattr(client(), method)(path, {}, format="json")
        assert resp.status_code == 401, (method, path)
        assert resp.json()["error"]["code"] == 401 and resp["WWW-Authenticate"].startswith("Keystone")
    assert client("not-a-token").get(f"{API}/{collection}").status_code == 401


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_reader_reads_but_never_writes(world, objects, collection):
    rita = client(world.token(world.reader))
    pk = objects[collection].pk
    assert rita.get(f"{API}/{collection}").status_code == 200
    assert rita.get(f"{API}/{collection}/{pk}").status_code == 200
    neutron_error(rita.post(f"{API}/{collection}", {}, format="json"), 403)
    if collection in UPDATES:
        neutron_error(rita.put(f"{API}/{collection}/{pk}", UPDATES[collection], format="json"), 403)
    neutron_error(rita.delete(f"{API}/{collection}/{pk}"), 403)


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_another_projects_object_is_404_on_every_method(world, objects, collection):
    bob = client(world.token(world.outsider, world.other_project))
    pk = objects[collection].pk
    kind = KINDS[collection]
    neutron_error(bob.get(f"{API}/{collection}/{pk}"), 404, f"{kind}NotFound")
    if collection in UPDATES:
        neutron_error(bob.put(f"{API}/{collection}/{pk}", UPDATES[collection], format="json"), 404,
                      f"{kind}NotFound")
    neutron_error(bob.delete(f"{API}/{collection}/{pk}"), 404, f"{kind}NotFound")
    listed = bob.get(f"{API}/{collection}").json()
    key = collection.replace("-", "_")
    assert str(pk) not in {item["id"] for item in listed[key]}
    neutron_error(bob.get(f"{API}/{collection}/not-a-uuid"), 404)


def test_external_networks_are_seen_by_everyone_but_changed_by_their_owner(world, objects):
    bob = client(world.token(world.outsider, world.other_project))
    ext = objects["external"]
    assert bob.get(f"{API}/networks/{ext.pk}").status_code == 200
    assert [n["name"] for n in bob.get(f"{API}/networks").json()["networks"]] == ["public"]
    assert len(bob.get(f"{API}/subnets").json()["subnets"]) == 1  # the public subnet
    neutron_error(bob.put(f"{API}/networks/{ext.pk}", {"network": {"name": "mine"}}, format="json"), 403)
    neutron_error(bob.post(f"{API}/ports", {"port": {"network_id": str(ext.pk)}}, format="json"), 403)


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_list_query_count_does_not_grow_with_the_objects(world, objects, collection):
    c = client(world.token(world.member))

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert c.get(f"{API}/{collection}").status_code == 200
        return len(ctx.captured_queries)

    one = count()
    network = objects["networks"]
    for i in range(4):
        group = services.security_group_create(user=world.member, project=world.project, name=f"g{i}")
        services.security_group_rule_create(user=world.member, project=world.project, group=group,
                                            direction="ingress", protocol="udp")
        services.port_create(user=world.member, project=world.project, network=network,
                             security_groups=[str(group.pk)])
        n = services.network_create(user=world.member, project=world.project, name=f"n{i}")
        services.subnet_create(user=world.member, project=world.project, network=n, cidr=f"10.{i + 1}.0.0/24")
        router = services.router_create(user=world.member, project=world.project, name=f"r{i}",
                                        external_gateway_info={"network_id": str(objects["external"].pk)})
        services.floating_ip_create(user=world.member, project=world.project,
                                    floating_network_id=objects["external"].pk)
        assert router
    assert count() == one
    assert one <= 8, one


def test_version_documents_resources_and_extensions(world):
    c = client()
    for path in ("/network", "/network/"):
        resp = c.get(path)
        assert resp.status_code == 200
        [version] = resp.json()["versions"]
        assert version["id"] == "v2.0" and version["status"] == "CURRENT"
        assert version["links"][0]["href"].endswith("/network/v2.0/")
    resources = {r["collection"] for r in c.get(f"{API}/").json()["resources"]}
    assert {"networks", "subnets", "ports", "routers", "floatingips", "security-groups"} <= resources
    member = client(world.token(world.member))
    aliases = {e["alias"] for e in member.get(f"{API}/extensions").json()["extensions"]}
    assert aliases == {e[0] for e in EXTENSIONS}
    assert {"security-group", "router", "external-net", "provider", "quotas", "network-ip-availability",
            "auto-allocated-topology", "extraroute", "port-security", "allowed-address-pairs"} <= aliases
    assert member.get(f"{API}/extensions/router").json()["extension"]["alias"] == "router"
    neutron_error(member.get(f"{API}/extensions/trunk"), 404, "ExtensionNotFound")
    neutron_error(member.get(f"{API}/nonsense"), 404)


def test_network_bodies_and_provider_attributes_for_admins(world, objects):
    network = objects["networks"]
    body = client(world.token(world.member)).get(f"{API}/networks/{network.pk}").json()["network"]
    assert {"id", "name", "tenant_id", "project_id", "admin_state_up", "status", "shared", "router:external",
            "mtu", "subnets", "port_security_enabled", "description", "created_at", "updated_at",
            "revision_number", "is_default"} == set(body)
    assert body["subnets"] == [str(objects["subnets"].pk)] and body["tenant_id"] == world.project.pk.hex
    admin = client(world.token(world.admin)).get(f"{API}/networks/{network.pk}").json()["network"]
    assert admin["provider:network_type"] == "vxlan" and admin["provider:segmentation_id"] == network.segmentation_id
    c = client(world.token(world.member))
    neutron_error(c.post(f"{API}/networks", {"network": {"provider:network_type": "flat"}}, format="json"), 403)
    neutron_error(c.post(f"{API}/networks", {"network": {"nonsense": 1}}, format="json"), 400)
    neutron_error(c.put(f"{API}/networks/{network.pk}", {"network": {"provider:network_type": "x"}},
                        format="json"), 400)
    neutron_error(c.post(f"{API}/networks", {"network": {"name": "x", "tenant_id": world.other_project.pk.hex}},
                         format="json"), 400)
    neutron_error(c.post(f"{API}/networks", {"network": {"admin_state_up": "maybe"}}, format="json"), 400)
    resp = c.post(f"{API}/networks", "{nope", content_type="application/json")
    assert resp.status_code == 400 and "NeutronError" in resp.json()


def test_create_update_delete_status_codes_and_bulk(world, objects):
    c = client(world.token(world.member))
    resp = c.post(f"{API}/networks", {"networks": [{"name": "a"}, {"name": "b"}]}, format="json")
    assert resp.status_code == 201 and [n["name"] for n in resp.json()["networks"]] == ["a", "b"]
    a = resp.json()["networks"][0]["id"]
    resp = c.put(f"{API}/networks/{a}", {"network": {"name": "renamed", "mtu": 1400}}, format="json")
    assert resp.status_code == 200 and resp.json()["network"]["mtu"] == 1400
    assert resp.json()["network"]["revision_number"] == 2
    assert c.delete(f"{API}/networks/{a}").status_code == 204
    neutron_error(c.get(f"{API}/networks/{a}"), 404, "NetworkNotFound")
    # A bulk create is all or nothing.
    resp = c.post(f"{API}/networks", {"networks": [{"name": "ok"}, {"name": "bad", "mtu": 99999}]}, format="json")
    neutron_error(resp, 400)
    assert not any(n["name"] == "ok" for n in c.get(f"{API}/networks").json()["networks"])


def test_filters_fields_sorting_and_paging(world, objects):
    c = client(world.token(world.member))
    for i in range(5):
        c.post(f"{API}/networks", {"network": {"name": f"net{i}", "admin_state_up": i % 2 == 0}}, format="json")
    names = lambda resp: [n["name"] for n in resp.json()["networks"]]  # noqa: E731
    assert names(c.get(f"{API}/networks?name=net1&name=net3")) == ["net1", "net3"]
    assert names(c.get(f"{API}/networks?admin_state_up=false")) == ["net1", "net3"]
    assert names(c.get(f"{API}/networks?router:external=true")) == ["public"]
    assert names(c.get(f"{API}/networks?shared=false&name=net0")) == ["net0"]
    assert names(c.get(f"{API}/networks?tenant_id={world.other_project.pk.hex}")) == []
    neutron_error(c.get(f"{API}/networks?colour=blue"), 400)
    neutron_error(c.get(f"{API}/networks?shared=perhaps"), 400)
    assert "out of range" in neutron_error(c.get(f"{API}/networks?mtu={10**30}"), 400)["message"]
    only = c.get(f"{API}/networks?name=net0&fields=id&fields=name").json()["networks"]
    assert only == [{"id": only[0]["id"], "name": "net0"}]
    assert set(c.get(f"{API}/networks/{objects['networks'].pk}?fields=mtu").json()["network"]) == {"mtu"}
    sorted_desc = names(c.get(f"{API}/networks?name=net0&name=net2&name=net4&sort_key=name&sort_dir=desc"))
    assert sorted_desc == ["net4", "net2", "net0"]
    neutron_error(c.get(f"{API}/networks?sort_key=colour"), 400)
    neutron_error(c.get(f"{API}/networks?sort_key=name&sort_dir=up"), 400)
    # Paging: two at a time, following the next links, every network once, in order.
    seen, url = [], f"{API}/networks?limit=2&sort_key=name"
    while url:
        body = c.get(url).json()
        seen += [n["name"] for n in body["networks"]]
        url = next((link["href"] for link in body.get("networks_links", []) if link["rel"] == "next"), None)
    assert seen == sorted(["public", "private", "net0", "net1", "net2", "net3", "net4"])
    page = c.get(f"{API}/networks?limit=2&sort_key=name").json()
    second = c.get(f"{API}/networks?limit=2&sort_key=name&marker={page['networks'][1]['id']}").json()
    assert [link["rel"] for link in second["networks_links"]] == ["next", "previous"]
    back = c.get(f"{API}/networks?limit=2&sort_key=name&marker={second['networks'][0]['id']}&page_reverse=True")
    assert names(back) == [n["name"] for n in page["networks"]]
    neutron_error(c.get(f"{API}/networks?marker=00000000-0000-0000-0000-000000000000"), 400)
    neutron_error(c.get(f"{API}/networks?limit=-1"), 400)


def test_port_filters_and_bodies(world, objects):
    c = client(world.token(world.member))
    port = objects["ports"]
    address = port.fixed_ips.get().ip_address
    ports = c.get(f"{API}/ports?fixed_ips=ip_address={address}").json()["ports"]
    assert [p["id"] for p in ports] == [str(port.pk)]
    body = ports[0]
    assert body["fixed_ips"] == [{"subnet_id": str(objects["subnets"].pk), "ip_address": address}]
    assert "binding:host_id" not in body  # admin only
    assert body["security_groups"] == [str(services.security_group_default(project=world.project).pk)]
    owners = {p["device_owner"] for p in c.get(f"{API}/ports?network_id={objects['networks'].pk}").json()["ports"]}
    assert owners == {"", "network:dhcp", "network:router_interface"}
    assert [p["id"] for p in c.get(f"{API}/ports?device_owner=&name=p1").json()["ports"]] == [str(port.pk)]
    admin = client(world.token(world.admin))
    resp = admin.put(f"{API}/ports/{port.pk}", {"port": {"binding:host_id": "node1"}}, format="json")
    assert resp.status_code == 200 and resp.json()["port"]["binding:host_id"] == "node1"
    assert resp.json()["port"]["binding:vif_type"] == "bridge"
    neutron_error(c.put(f"{API}/ports/{port.pk}", {"port": {"binding:host_id": "node1"}}, format="json"), 403)
    neutron_error(c.put(f"{API}/ports/{port.pk}", {"port": {"network_id": "x"}}, format="json"), 400)
    resp = c.put(f"{API}/ports/{port.pk}", {"port": {"allowed_address_pairs": [{"ip_address": "10.0.0.200"}]}},
                 format="json")
    assert resp.json()["port"]["allowed_address_pairs"] == [{"ip_address": "10.0.0.200",
                                                             "mac_address": port.mac_address}]
    neutron_error(c.put(f"{API}/ports/{port.pk}", {"port": {"port_security_enabled": False}}, format="json"),
                  409, "PortSecurityPortHasSecurityGroup")


def test_subnet_create_full_and_errors(world, objects):
    c = client(world.token(world.member))
    network = objects["networks"]
    resp = c.post(f"{API}/subnets", {"subnet": {
        "network_id": str(network.pk), "ip_version": 6, "cidr": "2001:db8::/64", "ipv6_ra_mode": "slaac",
        "ipv6_address_mode": "slaac", "dns_nameservers": ["2001:4860:4860::8888"],
        "host_routes": [{"destination": "2001:db8:9::/64", "nexthop": "2001:db8::99"}]}}, format="json")
    assert resp.status_code == 201, resp.content
    body = resp.json()["subnet"]
    assert body["gateway_ip"] == "2001:db8::1" and body["ipv6_address_mode"] == "slaac"
    assert body["allocation_pools"] == [{"start": "2001:db8::2", "end": "2001:db8::ffff:ffff:ffff:ffff"}]
    resp = c.post(f"{API}/subnets", {"subnet": {"network_id": str(network.pk), "ip_version": 4,
                                                "cidr": "10.9.0.0/24", "gateway_ip": None}}, format="json")
    assert resp.json()["subnet"]["gateway_ip"] is None
    assert resp.json()["subnet"]["allocation_pools"] == [{"start": "10.9.0.1", "end": "10.9.0.254"}]
    neutron_error(c.post(f"{API}/subnets", {"subnet": {"ip_version": 4, "cidr": "10.8.0.0/24"}}, format="json"), 400)
    neutron_error(c.post(f"{API}/subnets", {"subnet": {"network_id": str(network.pk), "ip_version": 4,
                                                       "cidr": "10.0.0.0/25"}}, format="json"), 400, "InvalidInput")
    neutron_error(c.post(f"{API}/subnets", {"subnet": {"network_id": str(network.pk), "ip_version": 4,
                                                       "cidr": "10.7.0.0/24", "subnetpool_id": "x"}}, format="json"),
                  400)
    bob = client(world.token(world.outsider, world.other_project))
    neutron_error(bob.post(f"{API}/subnets", {"subnet": {"network_id": str(network.pk), "ip_version": 4,
                                                         "cidr": "10.6.0.0/24"}}, format="json"), 404)


@pytest.mark.database
def test_router_actions(world, objects):
    c = client(world.token(world.member))
    router, subnet = objects["routers"], objects["subnets"]
    body = c.get(f"{API}/routers/{router.pk}").json()["router"]
    assert body["external_gateway_info"]["network_id"] == str(objects["external"].pk)
    assert body["external_gateway_info"]["external_fixed_ips"][0]["ip_address"] == "172.24.4.2"
    resp = c.put(f"{API}/routers/{router.pk}/remove_router_interface", {"subnet_id": str(subnet.pk)}, format="json")
    assert resp.status_code == 200 and resp.json()["subnet_id"] == str(subnet.pk)
    resp = c.put(f"{API}/routers/{router.pk}/add_router_interface", {"subnet_id": str(subnet.pk)}, format="json")
    assert resp.status_code == 200 and set(resp.json()) == {"id", "tenant_id", "project_id", "subnet_id",
                                                            "subnet_ids", "port_id", "network_id"}
    neutron_error(c.put(f"{API}/routers/{router.pk}/add_router_interface", {}, format="json"), 400)
    routes = {"router": {"routes": [{"destination": "192.168.9.0/24", "nexthop": "10.0.0.9"}]}}
    resp = c.put(f"{API}/routers/{router.pk}/add_extraroutes", routes, format="json")
    assert resp.json()["router"]["routes"] == routes["router"]["routes"]
    resp = c.put(f"{API}/routers/{router.pk}", {"router": {"external_gateway_info": {}}}, format="json")
    assert resp.status_code == 200 and resp.json()["router"]["external_gateway_info"] is None
    neutron_error(c.post(f"{API}/routers", {"router": {"routes": []}}, format="json"), 400)


@pytest.mark.database
def test_floating_ip_api(world, objects):
    c = client(world.token(world.member))
    ext, port = objects["external"], objects["ports"]
    resp = c.post(f"{API}/floatingips", {"floatingip": {"floating_network_id": str(ext.pk),
                                                        "port_id": str(port.pk)}}, format="json")
    assert resp.status_code == 201, resp.content
    body = resp.json()["floatingip"]
    assert body["fixed_ip_address"] == port.fixed_ips.get().ip_address and body["router_id"] == str(
        objects["routers"].pk)
    found = c.get(f"{API}/floatingips?floating_ip_address={body['floating_ip_address']}").json()["floatingips"]
    assert [f["id"] for f in found] == [body["id"]]
    resp = c.put(f"{API}/floatingips/{body['id']}", {"floatingip": {"port_id": None}}, format="json")
    assert resp.json()["floatingip"]["port_id"] is None and resp.json()["floatingip"]["status"] == "DOWN"
    neutron_error(c.post(f"{API}/floatingips", {"floatingip": {}}, format="json"), 400)
    assert c.delete(f"{API}/floatingips/{body['id']}").status_code == 204


def test_security_group_api_makes_the_default_group_on_first_look(world, objects):
    bob = client(world.token(world.outsider, world.other_project))
    groups = bob.get(f"{API}/security-groups").json()["security_groups"]
    assert [g["name"] for g in groups] == ["default"]
    assert len(groups[0]["security_group_rules"]) == 4
    resp = bob.post(f"{API}/security-group-rules", {"security_group_rule": {
        "security_group_id": groups[0]["id"], "direction": "ingress", "protocol": "icmp"}}, format="json")
    assert resp.status_code == 201 and resp.json()["security_group_rule"]["protocol"] == "icmp"
    neutron_error(bob.post(f"{API}/security-group-rules", {"security_group_rule": {
        "security_group_id": groups[0]["id"], "direction": "ingress", "protocol": "icmp"}}, format="json"),
        409, "SecurityGroupRuleExists")
    neutron_error(bob.post(f"{API}/security-group-rules", {"security_group_rule": {
        "security_group_id": str(objects["security-groups"].pk), "direction": "ingress"}}, format="json"),
        404, "SecurityGroupNotFound")
    neutron_error(bob.put(f"{API}/security-group-rules/{resp.json()['security_group_rule']['id']}",
                          {"security_group_rule": {}}, format="json"), 405)


def test_quotas(world, objects):
    c = client(world.token(world.member))
    quota = c.get(f"{API}/quotas/{world.project.pk.hex}").json()["quota"]
    assert quota["network"] == 100 and quota["port"] == 500 and quota["router"] == -1
    details = c.get(f"{API}/quotas/{world.project.pk.hex}/details").json()["quota"]
    assert details["network"]["used"] == 2 and details["port"]["used"] == 1 and details["floatingip"]["used"] == 1
    assert details["subnet"] == {"limit": -1, "used": 2, "reserved": 0}
    neutron_error(c.put(f"{API}/quotas/{world.project.pk.hex}", {"quota": {"network": 5}}, format="json"), 403)
    neutron_error(c.get(f"{API}/quotas/{world.other_project.pk.hex}"), 403)
    admin = client(world.token(world.admin))
    resp = admin.put(f"{API}/quotas/{world.project.pk.hex}", {"quota": {"network": 2, "port": "3"}}, format="json")
    assert resp.json()["quota"]["network"] == 2 and resp.json()["quota"]["port"] == 3
    neutron_error(c.post(f"{API}/networks", {"network": {"name": "one-too-many"}}, format="json"), 409, "OverQuota")
    neutron_error(admin.put(f"{API}/quotas/{world.project.pk.hex}", {"quota": {"router": 5}}, format="json"), 400)
    too_many = {"quota": {"network": 7, "port": 10**30}}  # all or nothing: the network quota stays 2
    neutron_error(admin.put(f"{API}/quotas/{world.project.pk.hex}", too_many, format="json"), 400)
    assert c.get(f"{API}/quotas/{world.project.pk.hex}").json()["quota"]["network"] == 2
    listed = admin.get(f"{API}/quotas").json()["quotas"]
    assert [q["project_id"] for q in listed] == [world.project.pk.hex]
    assert admin.delete(f"{API}/quotas/{world.project.pk.hex}").status_code == 204
    assert c.get(f"{API}/quotas/{world.project.pk.hex}").json()["quota"]["network"] == 100
    assert admin.get(f"{API}/quotas/{world.project.pk.hex}/default").json()["quota"]["port"] == 500


def test_network_ip_availability_is_for_admins(world, objects):
    neutron_error(client(world.token(world.member)).get(f"{API}/network-ip-availabilities"), 403)
    admin = client(world.token(world.admin))
    body = admin.get(f"{API}/network-ip-availabilities/{objects['networks'].pk}").json()["network_ip_availability"]
    # 10.0.0.0/24: 253 in the pool; used: the DHCP server, the router's leg (the gateway) and p1.
    assert body["total_ips"] == 253 and body["used_ips"] == 3
    assert body["subnet_ip_availability"][0]["cidr"] == "10.0.0.0/24"
    listed = admin.get(f"{API}/network-ip-availabilities?network_name=public").json()["network_ip_availabilities"]
    assert [(n["network_name"], n["used_ips"]) for n in listed] == [("public", 2)]  # gateway and floating IP


def test_auto_allocated_topology(world, objects):
    services.network_update(network=objects["external"], user=world.admin, project=world.project,
                            changes={"is_default": True})
    bob = client(world.token(world.outsider, world.other_project))
    resp = bob.get(f"{API}/auto-allocated-topology/{world.other_project.pk.hex}")
    assert resp.status_code == 200, resp.content
    network_id = resp.json()["auto_allocated_topology"]["id"]
    assert bob.get(f"{API}/auto-allocated-topology/{world.other_project.pk.hex}").json()[
        "auto_allocated_topology"]["id"] == network_id
    neutron_error(bob.get(f"{API}/auto-allocated-topology/{world.project.pk.hex}"), 403)
    neutron_error(client(world.token(world.reader)).get(f"{API}/auto-allocated-topology/{world.project.pk.hex}"),
                  403)
    assert bob.delete(f"{API}/auto-allocated-topology/{world.other_project.pk.hex}").status_code == 204


def test_the_catalog_lists_the_network_service(world):
    from apps.tenants.selectors import service_catalog

    [network] = [s for s in service_catalog(project=world.project) if s["type"] == "network"]
    assert network["name"] == "neutron"
    assert {e["url"].rsplit("/", 1)[-1] for e in network["endpoints"]} == {"network"}
    assert client().get("/network").status_code == 200  # what clients fetch first at that URL
