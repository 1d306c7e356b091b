"""Servers get ports: Nova's ``networks`` at create, NICs in the domain spec, addresses in the
server bodies, os-interface attach/detach, and ports released with the server."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from agents import names
from agents.network.driver import get_network_driver
from apps.instances.models import Instance
from apps.networks import services
from apps.networks.models import FloatingIP, Network, Port
from apps.networks.states import OWNER_COMPUTE, Status
from apps.tenants.services import quota_set
from tests.unit.conftest import make_host, make_routed_network

pytestmark = pytest.mark.django_db(transaction=True)


def client(token):
    c = APIClient()
    c.credentials(HTTP_X_AUTH_TOKEN=token)
    return c


@pytest.fixture
def cloud(world):
    """A host, the public network (the default external one), and project alpha's network
    `private` with a router."""
    return make_routed_network(world, default_external=True)


def boot(c, world, name="vm1", **extra):
    resp = c.post("/compute/v2.1/servers", {"server": {"name": name, "imageRef": str(world.image.id),
                                                       "flavorRef": world.flavor.id, **extra}}, format="json")
    return resp


def server_ports(server_id) -> list[Port]:
    return list(Port.objects.filter(device_id=server_id, device_owner=OWNER_COMPUTE).order_by("created_at"))


def test_a_server_gets_a_port_on_the_projects_network(world, cloud, fake_driver):
    c = client(world.token(world.member))
    resp = boot(c, world)
    assert resp.status_code == 202, resp.content
    server_id = resp.json()["server"]["id"]
    [port] = server_ports(server_id)
    assert port.network == cloud["network"] and port.host == cloud["host"] and port.status == Status.ACTIVE
    assert port.hostname == "vm1" and port.delete_with_device
    assert [g.name for g in port.security_groups.all()] == ["default"]
    # The domain's NIC is that port's tap on the network's bridge; the host got its filter.
    [nic] = fake_driver.specs[server_id].nics
    assert (nic.port_id, nic.mac_address, nic.bridge, nic.mtu) == (
        str(port.pk), port.mac_address, names.bridge_name(str(cloud["network"].pk)), 1450)
    net = get_network_driver()
    assert net.ports[str(port.pk)].security_rules and str(port.pk) in {
        p.id for p in net.networks[str(cloud["network"].pk)].ports}  # its static DHCP entry
    address = port.fixed_ips.get().ip_address
    body = c.get(f"/compute/v2.1/servers/{server_id}").json()["server"]
    assert body["addresses"] == {"private": [{"version": 4, "addr": address, "OS-EXT-IPS:type": "fixed",
                                              "OS-EXT-IPS-MAC:mac_addr": port.mac_address}]}
    listed = c.get("/compute/v2.1/servers/detail").json()["servers"]
    assert listed[0]["addresses"] == body["addresses"]
    assert [s["id"] for s in c.get(f"/compute/v2.1/servers?ip={address}").json()["servers"]] == [server_id]
    assert c.get("/compute/v2.1/servers?ip=10.9.9.9").json()["servers"] == []


def test_floating_ip_shows_in_the_addresses_and_leaves_with_the_server(world, cloud):
    c = client(world.token(world.member))
    server_id = boot(c, world).json()["server"]["id"]
    [port] = server_ports(server_id)
    fip = services.floating_ip_create(user=world.member, project=world.project,
                                      floating_network_id=cloud["external"].pk, port_id=str(port.pk))
    entries = c.get(f"/compute/v2.1/servers/{server_id}").json()["server"]["addresses"]["private"]
    assert [(e["addr"], e["OS-EXT-IPS:type"]) for e in entries] == [
        (port.fixed_ips.get().ip_address, "fixed"), (fip.floating_ip_address, "floating")]
    assert c.delete(f"/compute/v2.1/servers/{server_id}").status_code == 204
    assert server_ports(server_id) == []
    fip.refresh_from_db()
    assert fip.port is None and fip.fixed_ip_address is None  # the address stays the project's
    assert world.project.quotas.get(resource="ports").in_use == 0


def test_add_and_remove_fixed_ip(world, cloud):
    """Nova's multinic actions: one more address on the server's port on that network (its host's
    filter and DHCP entries follow), and an address taken off again."""
    c = client(world.token(world.member))
    server_id = boot(c, world).json()["server"]["id"]
    [port] = server_ports(server_id)
    first = port.fixed_ips.get().ip_address
    action = lambda body: c.post(f"/compute/v2.1/servers/{server_id}/action", body, format="json")
    net = get_network_driver()
    net.calls.clear()
    assert action({"addFixedIp": {"networkId": str(cloud["network"].pk)}}).status_code == 202
    addresses = sorted(a.ip_address for a in port.fixed_ips.all())
    assert len(addresses) == 2 and first in addresses
    assert {("port_sync", str(port.pk)), ("network_sync", str(cloud["network"].pk))} <= set(net.calls)
    assert sorted(f.ip_address for f in net.ports[str(port.pk)].fixed_ips) == addresses  # its filter allows both
    shown = c.get(f"/compute/v2.1/servers/{server_id}").json()["server"]["addresses"]["private"]
    assert sorted(e["addr"] for e in shown) == addresses

    assert action({"removeFixedIp": {"address": first}}).status_code == 202
    assert [a.ip_address for a in port.fixed_ips.all()] == [a for a in addresses if a != first]
    resp = action({"removeFixedIp": {"address": first}})
    assert resp.status_code == 400
    assert resp.json()["badRequest"]["message"] == f"Instance {server_id} doesn't have fixed IP '{first}'."
    for bad in ({"removeFixedIp": {"address": "nope"}}, {"removeFixedIp": {"address": 5}}, {"removeFixedIp": {}},
                {"addFixedIp": {"networkId": True}}, {"addFixedIp": {"networkId": "x", "more": 1}}):
        assert action(bad).status_code == 400, bad
    other = services.network_create(user=world.member, project=world.project, name="no-port-here")
    for network_id in (str(other.pk), 42):
        resp = action({"addFixedIp": {"networkId": network_id}})
        assert resp.status_code == 400
        assert resp.json()["badRequest"]["message"] == f"Network could not be found for instance {server_id}."
    # As Neutron: not an address a floating IP is NATed to.
    services.floating_ip_create(user=world.member, project=world.project, floating_network_id=cloud["external"].pk,
                                port_id=str(port.pk))
    remaining = port.fixed_ips.get().ip_address
    assert action({"removeFixedIp": {"address": remaining}}).status_code == 400
    assert port.fixed_ips.count() == 1
    # Locked: 409 for its owner.
    assert action({"lock": None}).status_code == 202
    assert action({"addFixedIp": {"networkId": str(cloud["network"].pk)}}).status_code == 409
    actions = c.get(f"/compute/v2.1/servers/{server_id}/os-instance-actions").json()["instanceActions"]
    assert [a["action"] for a in actions][:3] == ["lock", "removeFixedIp", "addFixedIp"]


def test_a_create_sends_the_host_each_thing_it_changed_once(world, cloud, monkeypatch):
    """The port is made, then bound to its host, in one transaction: one message per network,
    port and group, not one per step, and sent before the spawn (which plugs the tap)."""
    from apps.instances import services as instance_services
    from apps.networks import dataplane

    sent = []
    for module in (dataplane, instance_services):
        def recording_cast(*, task, real=module.agent_cast, **kwargs):
            sent.append(task)
            return real(task=task, **kwargs)
        monkeypatch.setattr(module, "agent_cast", recording_cast)
    net = get_network_driver()
    net.calls.clear()
    server_id = boot(client(world.token(world.member)), world).json()["server"]["id"]
    [port] = server_ports(server_id)
    group = port.security_groups.get()
    assert sorted(net.calls) == sorted([("network_sync", str(cloud["network"].pk)), ("port_sync", str(port.pk)),
                                        ("security_group_members", str(group.pk))])
    assert sorted(sent[:3]) == sorted([names.TASK_NETWORK_SYNC, names.TASK_PORT_SYNC,
                                       names.TASK_SECURITY_GROUP_MEMBERS])
    assert sent[3:] == [names.TASK_SPAWN]


def test_networks_parameter(world, cloud, fake_driver):
    c = client(world.token(world.member))
    network = cloud["network"]
    none = boot(c, world, "none", networks="none").json()["server"]["id"]
    assert server_ports(none) == [] and fake_driver.specs[none].nics == []
    # An empty list, what `openstack server create` sends without --nic, is the project's network.
    empty = boot(c, world, "empty", networks=[]).json()["server"]["id"]
    assert [port.network for port in server_ports(empty)] == [network]
    fixed = boot(c, world, "fixed", networks=[{"uuid": str(network.pk), "fixed_ip": "10.0.0.42"}])
    assert [a.ip_address for a in server_ports(fixed.json()["server"]["id"])[0].fixed_ips.all()] == ["10.0.0.42"]
    mine = services.port_create(user=world.member, project=world.project, network=network, name="mine")
    by_port = boot(c, world, "byport", networks=[{"port": str(mine.pk)}]).json()["server"]["id"]
    assert server_ports(by_port) == [mine]
    resp = boot(c, world, "again", networks=[{"port": str(mine.pk)}])  # in use by byport
    assert resp.status_code == 409 and "conflictingRequest" in resp.json()
    resp = boot(c, world, "nowhere", networks=[{"uuid": "00000000-0000-0000-0000-000000000000"}])
    assert resp.status_code == 400 and "could not be found" in resp.json()["badRequest"]["message"]
    assert boot(c, world, "bad", networks=[{"fixed_ip": "10.0.0.9"}]).status_code == 400
    assert boot(c, world, "bad", networks="everything").status_code == 400
    # The user's port stays (unbound) when the server goes; the port made for a server goes.
    c.delete(f"/compute/v2.1/servers/{by_port}")
    mine.refresh_from_db()
    assert mine.device_id == "" and mine.device_owner == "" and mine.host is None
    assert Port.objects.filter(pk=mine.pk).exists()


def test_two_networks_and_no_choice_is_409_and_auto_allocates_when_there_is_none(world, cloud):
    c = client(world.token(world.member))
    services.network_create(user=world.member, project=world.project, name="second")
    resp = boot(c, world)
    assert resp.status_code == 409 and "Multiple possible networks found" in resp.json()["conflictingRequest"][
        "message"]
    assert Instance.objects.count() == 0
    bob = client(world.token(world.outsider, world.other_project))
    assert boot(bob, world, "plain").status_code == 202  # no network at all: a server without NICs
    server_id = boot(bob, world, "auto", networks="auto").json()["server"]["id"]
    [port] = server_ports(server_id)
    assert port.network.auto_allocated and port.network.project == world.other_project


def test_security_groups_of_a_new_server(world, cloud):
    c = client(world.token(world.member))
    web = services.security_group_create(user=world.member, project=world.project, name="web")
    server_id = boot(c, world, security_groups=[{"name": "web"}, {"name": "default"}]).json()["server"]["id"]
    assert {g.name for g in server_ports(server_id)[0].security_groups.all()} == {"web", "default"}
    assert web.ports.count() == 1
    resp = boot(c, world, "x", security_groups=[{"name": "nope"}])
    assert resp.status_code == 400 and "Security group nope not found" in resp.json()["badRequest"]["message"]


def test_add_and_remove_security_group_actions(world, cloud):
    c = client(world.token(world.member))
    web = services.security_group_create(user=world.member, project=world.project, name="web")
    server_id = boot(c, world).json()["server"]["id"]
    other = services.network_create(user=world.member, project=world.project, name="other")
    services.subnet_create(user=world.member, project=world.project, network=other, cidr="10.1.0.0/24")
    assert c.post(f"/compute/v2.1/servers/{server_id}/os-interface",
                  {"interfaceAttachment": {"net_id": str(other.pk)}}, format="json").status_code == 200
    action = lambda body: c.post(f"/compute/v2.1/servers/{server_id}/action", body, format="json")
    groups = lambda: [g["name"] for g in c.get(f"/compute/v2.1/servers/{server_id}").json()["server"]["security_groups"]]
    assert groups() == ["default", "default"]  # per port, as Nova

    net = get_network_driver()
    net.calls.clear()
    assert action({"addSecurityGroup": {"name": "web"}}).status_code == 202
    assert [sorted(g.name for g in p.security_groups.all()) for p in server_ports(server_id)] == [["default", "web"]] * 2
    assert groups() == ["default", "web", "default", "web"]
    assert [s["security_groups"] for s in c.get("/compute/v2.1/servers/detail").json()["servers"]] == [
        [{"name": n} for n in ("default", "web", "default", "web")]]
    # The host got each port's new filter, in one message per port.
    assert sorted(call for call in net.calls if call[0] == "port_sync") == sorted(
        ("port_sync", str(p.pk)) for p in server_ports(server_id))
    assert net.ports[str(server_ports(server_id)[0].pk)].security_rules
    assert action({"addSecurityGroup": {"name": str(web.pk)}}).status_code == 202  # by id; already there: no change
    assert web.ports.count() == 2

    assert action({"removeSecurityGroup": {"name": "web"}}).status_code == 202
    assert groups() == ["default", "default"] and web.ports.count() == 0
    resp = action({"removeSecurityGroup": {"name": "web"}})
    assert resp.status_code == 404 and "not associated with the instance" in resp.json()["itemNotFound"]["message"]

    resp = action({"addSecurityGroup": {"name": "nope"}})
    assert resp.status_code == 404 and "Security group nope is not found" in resp.json()["itemNotFound"]["message"]
    for body, message in (({"addSecurityGroup": None}, "Missing parameter dict"),
                          ({"addSecurityGroup": {}}, "Security group not specified"),
                          ({"addSecurityGroup": {"name": " "}}, "Security group name cannot be empty"),
                          ({"removeSecurityGroup": {"name": "web", "x": 1}}, "Additional properties")):
        resp = action(body)
        assert resp.status_code == 400 and message in resp.json()["badRequest"]["message"], body
    # Two groups of one name: 409, use the id.
    services.security_group_create(user=world.member, project=world.project, name="web")
    resp = action({"addSecurityGroup": {"name": "web"}})
    assert resp.status_code == 409 and "Multiple security_group matches" in resp.json()["conflictingRequest"]["message"]
    # A port without port security takes no group: 400, and no port changes.
    [first, second] = server_ports(server_id)
    services.port_update(port=second, user=world.member, project=world.project,
                         changes={"security_groups": [], "port_security_enabled": False})
    resp = action({"addSecurityGroup": {"name": str(web.pk)}})
    assert resp.status_code == 400 and "requires port_security_enabled" in resp.json()["badRequest"]["message"]
    assert web.ports.count() == 0 and groups() == ["default"]
    # A reader may not, another project's user sees no server.
    reader = client(world.token(world.reader))
    assert reader.post(f"/compute/v2.1/servers/{server_id}/action", {"addSecurityGroup": {"name": "default"}},
                       format="json").status_code == 403
    bob = client(world.token(world.outsider, world.other_project))
    assert bob.post(f"/compute/v2.1/servers/{server_id}/action", {"addSecurityGroup": {"name": "default"}},
                    format="json").status_code == 404


def test_server_os_security_groups_shows_each_group_once_in_novas_format(world, cloud):
    c = client(world.token(world.member))
    project = world.project
    web = services.security_group_create(user=world.member, project=project, name="web", description="the web")

    def rule(**kw):
        return services.security_group_rule_create(user=world.member, project=project, group=web, **kw)

    ssh = rule(direction="ingress", protocol="tcp", port_range_min=22, port_range_max=22, remote_ip_prefix="10.0.0.0/8")
    any_udp = rule(direction="ingress", protocol="udp")
    icmp = rule(direction="ingress", protocol="icmp")
    everything = rule(direction="ingress", ethertype="IPv6")
    rule(direction="egress", protocol="tcp")  # Nova shows ingress rules only
    server_id = boot(c, world).json()["server"]["id"]
    other = services.network_create(user=world.member, project=project, name="other")
    services.subnet_create(user=world.member, project=project, network=other, cidr="10.1.0.0/24")
    c.post(f"/compute/v2.1/servers/{server_id}/os-interface", {"interfaceAttachment": {"net_id": str(other.pk)}},
           format="json")
    assert c.post(f"/compute/v2.1/servers/{server_id}/action", {"addSecurityGroup": {"name": "web"}},
                  format="json").status_code == 202

    resp = c.get(f"/compute/v2.1/servers/{server_id}/os-security-groups")
    assert resp.status_code == 200
    default, shown_web = resp.json()["security_groups"]  # each group once though on two ports, by name
    tenant = project.pk.hex
    assert {k: shown_web[k] for k in ("id", "name", "description", "tenant_id")} == {
        "id": str(web.pk), "name": "web", "description": "the web", "tenant_id": tenant}
    parent = str(web.pk)
    assert shown_web["rules"] == [
        {"id": str(ssh.pk), "parent_group_id": parent, "ip_protocol": "tcp", "from_port": 22, "to_port": 22,
         "group": {}, "ip_range": {"cidr": "10.0.0.0/8"}},
        {"id": str(any_udp.pk), "parent_group_id": parent, "ip_protocol": "udp", "from_port": 1, "to_port": 65535,
         "group": {}, "ip_range": {"cidr": "0.0.0.0/0"}},
        {"id": str(icmp.pk), "parent_group_id": parent, "ip_protocol": "icmp", "from_port": -1, "to_port": -1,
         "group": {}, "ip_range": {"cidr": "0.0.0.0/0"}},
        {"id": str(everything.pk), "parent_group_id": parent, "ip_protocol": None, "from_port": None,
         "to_port": None, "group": {}, "ip_range": {"cidr": "0.0.0.0/0"}},
    ]
    # the default group's ingress rules admit its own members: a remote group, no range
    assert default["name"] == "default" and default["rules"]
    assert {(r["ip_protocol"], str(r["group"]), str(r["ip_range"])) for r in default["rules"]} == {
        (None, str({"name": "default", "tenant_id": tenant}), "{}")}

    assert client(world.token(world.reader)).get(f"/compute/v2.1/servers/{server_id}/os-security-groups"
                                                 ).status_code == 200
    bob = client(world.token(world.outsider, world.other_project))
    assert bob.get(f"/compute/v2.1/servers/{server_id}/os-security-groups").status_code == 404


def test_a_server_without_ports_has_no_security_groups_key(world, cloud):
    c = client(world.token(world.member))
    server_id = boot(c, world, networks="none").json()["server"]["id"]
    assert "security_groups" not in c.get(f"/compute/v2.1/servers/{server_id}").json()["server"]
    resp = c.post(f"/compute/v2.1/servers/{server_id}/action", {"addSecurityGroup": {"name": "default"}},
                  format="json")
    assert resp.status_code == 404 and "could not be found as device id" in resp.json()["itemNotFound"]["message"]


def test_port_quota_stops_a_server_with_nova_403(world, cloud):
    quota_set(project=world.project, resource="ports", limit=0)
    resp = boot(client(world.token(world.member)), world)
    assert resp.status_code == 403 and "ports" in resp.json()["forbidden"]["message"]
    assert Instance.objects.count() == 0


def test_os_interface_attach_list_detach(world, cloud, fake_driver):
    c = client(world.token(world.member))
    server_id = boot(c, world).json()["server"]["id"]
    other = services.network_create(user=world.member, project=world.project, name="other")
    services.subnet_create(user=world.member, project=world.project, network=other, cidr="10.1.0.0/24")
    resp = c.post(f"/compute/v2.1/servers/{server_id}/os-interface",
                  {"interfaceAttachment": {"net_id": str(other.pk), "fixed_ips": [{"ip_address": "10.1.0.50"}]}},
                  format="json")
    assert resp.status_code == 200, resp.content
    attachment = resp.json()["interfaceAttachment"]
    assert attachment["net_id"] == str(other.pk) and attachment["fixed_ips"][0]["ip_address"] == "10.1.0.50"
    assert set(attachment) == {"port_state", "port_id", "net_id", "mac_addr", "fixed_ips"}
    # Plugged live: the domain has both NICs, the new one on the other network's bridge.
    assert [n.port_id for n in fake_driver.specs[server_id].nics] == [p["port_id"] for p in c.get(
        f"/compute/v2.1/servers/{server_id}/os-interface").json()["interfaceAttachments"]]
    assert fake_driver.specs[server_id].nics[1].bridge == names.bridge_name(str(other.pk))
    shown = c.get(f"/compute/v2.1/servers/{server_id}/os-interface/{attachment['port_id']}").json()
    assert shown["interfaceAttachment"]["mac_addr"] == attachment["mac_addr"]
    addresses = c.get(f"/compute/v2.1/servers/{server_id}").json()["server"]["addresses"]
    assert set(addresses) == {"private", "other"}
    resp = c.delete(f"/compute/v2.1/servers/{server_id}/os-interface/{attachment['port_id']}")
    assert resp.status_code == 202
    assert len(fake_driver.specs[server_id].nics) == 1 and not Port.objects.filter(pk=attachment["port_id"]).exists()
    assert c.get(f"/compute/v2.1/servers/{server_id}/os-interface/{attachment['port_id']}").status_code == 404
    bob = client(world.token(world.outsider, world.other_project))
    assert bob.get(f"/compute/v2.1/servers/{server_id}/os-interface").status_code == 404
    # Without a network: the project's one network, or 409 when it has several (as at create).
    resp = c.post(f"/compute/v2.1/servers/{server_id}/os-interface", {"interfaceAttachment": {}}, format="json")
    assert resp.status_code == 409 and "Multiple possible networks" in resp.json()["conflictingRequest"]["message"]
    services.network_delete(network=other, user=world.member, project=world.project)
    resp = c.post(f"/compute/v2.1/servers/{server_id}/os-interface", {"interfaceAttachment": {}}, format="json")
    assert resp.status_code == 200 and resp.json()["interfaceAttachment"]["net_id"] == str(cloud["network"].pk)
    assert len(fake_driver.specs[server_id].nics) == 2
    assert c.post(f"/compute/v2.1/servers/{server_id}/os-interface",
                  {"interfaceAttachment": {"net_id": str(other.pk), "port_id": "x"}}, format="json").status_code == 400


def test_a_failed_hot_plug_releases_the_port(world, cloud, fake_driver):
    c = client(world.token(world.member))
    server_id = boot(c, world).json()["server"]["id"]
    fake_driver.fail_next("interfaces", "the guest refused the device")
    resp = c.post(f"/compute/v2.1/servers/{server_id}/os-interface",
                  {"interfaceAttachment": {"net_id": str(cloud["network"].pk)}}, format="json")
    assert resp.status_code == 409 and "the guest refused the device" in resp.json()["conflictingRequest"]["message"]
    assert len(server_ports(server_id)) == 1


def test_server_list_queries_do_not_grow_with_ports(world, cloud):
    c = client(world.token(world.member))
    boot(c, world, "first")

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert c.get("/compute/v2.1/servers/detail").status_code == 200
        return len(ctx.captured_queries)

    one = count()
    for i in range(4):
        server_id = boot(c, world, f"vm{i}").json()["server"]["id"]
        services.floating_ip_create(user=world.member, project=world.project, floating_network_id=cloud["external"].pk,
                                    port_id=str(server_ports(server_id)[0].pk))
    assert count() == one


def test_a_delete_tells_the_host_the_port_is_gone(world, cloud):
    c = client(world.token(world.member))
    server_id = boot(c, world).json()["server"]["id"]
    [port] = server_ports(server_id)
    net = get_network_driver()
    net.calls.clear()
    assert c.delete(f"/compute/v2.1/servers/{server_id}").status_code == 204
    # No group members: no port left on the host names the default group.
    assert sorted(net.calls) == sorted([("port_delete", str(port.pk)), ("network_sync", str(cloud["network"].pk))])
    assert str(port.pk) not in {p.id for p in net.networks[str(cloud["network"].pk)].ports}  # its DHCP entry


def test_showing_a_server_with_a_floating_ip_takes_seven_queries(world, cloud):
    """What every status poll costs: the token, the server (flavor, image, host, user, project
    joined), its ports (network joined), their fixed IPs (subnet joined), their floating IPs,
    their security groups' names, its volumes. An ACTIVE server's faults are not read: Nova shows
    them for ERROR ones only."""
    c = client(world.token(world.member))
    server_id = boot(c, world).json()["server"]["id"]
    services.floating_ip_create(user=world.member, project=world.project, floating_network_id=cloud["external"].pk,
                                port_id=str(server_ports(server_id)[0].pk))
    with CaptureQueriesContext(connection) as ctx:
        resp = c.get(f"/compute/v2.1/servers/{server_id}")
    assert resp.status_code == 200
    assert [a["OS-EXT-IPS:type"] for a in resp.json()["server"]["addresses"]["private"]] == ["fixed", "floating"]
    assert len(ctx.captured_queries) == 7, "\n".join(q["sql"] for q in ctx.captured_queries)


def test_rescheduling_moves_the_ports_to_the_new_host(world, cloud, fake_driver):
    make_host("node2")
    fake_driver.fail_next_spawn("no room after all")
    server_id = boot(client(world.token(world.member)), world).json()["server"]["id"]
    instance = Instance.objects.get(pk=server_id)
    [port] = server_ports(server_id)
    assert port.host == instance.host and instance.vm_state == "active"
    net = get_network_driver()
    assert ("port_delete", str(port.pk)) in net.calls  # told to the host it left
    assert Network.objects.get(pk=cloud["network"].pk).ports.filter(host=instance.host).exists()
    assert FloatingIP.objects.count() == 0
