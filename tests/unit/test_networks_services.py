"""The network services: routers, floating IPs, security groups, quotas and policy, and the desired
state each change sends to the agents (the fake network driver records what it was given)."""

import time

import pytest
from django.db import transaction

from agents.specs import HostReport
from apps.hosts.services import host_heartbeat
from apps.networks import dataplane, services
from apps.networks.models import FloatingIP, Network, NetworkAgent, Port, Router, SecurityGroup
from apps.networks.states import OWNER_DHCP, OWNER_ROUTER_GATEWAY, OWNER_ROUTER_INTERFACE, Status
from apps.tenants.models import Quota
from apps.tenants.services import quota_set
from cloudmgr.exceptions import ApplicationError
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)


def kind(exc_info) -> str:
    return getattr(exc_info.value, "neutron_type", "")


def public(world):
    network = services.network_create(user=world.admin, project=world.project, name="public", external=True,
                                      is_default=True, network_type="flat", physical_network="public")
    services.subnet_create(user=world.admin, project=world.project, network=network, cidr="172.24.4.0/24",
                           enable_dhcp=False)
    return network


def private(world, cidr="10.0.0.0/24", project=None, user=None):
    project, user = project or world.project, user or world.member
    network = services.network_create(user=user, project=project, name="private")
    subnet = services.subnet_create(user=user, project=project, network=network, cidr=cidr)
    return network, subnet


def topology(world):
    """public, private, and a router between them."""
    ext = public(world)
    network, subnet = private(world)
    router = services.router_create(user=world.member, project=world.project, name="r1",
                                    external_gateway_info={"network_id": str(ext.pk)})
    services.router_interface_add(router=router, user=world.member, project=world.project, subnet_id=subnet.pk)
    return ext, network, subnet, Router.objects.get(pk=router.pk)


# --- networks --------------------------------------------------------------------------------


def test_tenant_networks_are_vxlan_with_a_vni_and_admins_set_provider_attributes(world):
    network = services.network_create(user=world.member, project=world.project, name="n")
    assert network.network_type == "vxlan" and network.segmentation_id == 1 and network.mtu == 1450
    with pytest.raises(ApplicationError) as exc:
        services.network_create(user=world.member, project=world.project, name="x", network_type="flat",
                                physical_network="public")
    assert exc.value.status_code == 403
    for flag in ("shared", "external"):
        with pytest.raises(ApplicationError) as exc:
            services.network_create(user=world.member, project=world.project, **{flag: True})
        assert exc.value.status_code == 403
    vlan = services.network_create(user=world.admin, project=world.project, network_type="vlan",
                                   physical_network="physnet1", segmentation_id=100)
    with pytest.raises(ApplicationError) as exc:
        services.network_create(user=world.admin, project=world.project, network_type="vlan",
                                physical_network="physnet1", segmentation_id=100)
    assert exc.value.status_code == 409 and kind(exc) == "SegmentationIdInUse"
    assert vlan.mtu == 1500
    with pytest.raises(ApplicationError, match="MTU 9000"):
        services.network_create(user=world.member, project=world.project, mtu=9000)


def test_network_quota_is_counted_and_released(world):
    quota_set(project=world.project, resource="networks", limit=1)
    network = services.network_create(user=world.member, project=world.project)
    with pytest.raises(ApplicationError) as exc:
        services.network_create(user=world.member, project=world.project)
    assert exc.value.status_code == 409 and kind(exc) == "OverQuota"
    services.network_delete(network=network, user=world.member, project=world.project)
    assert Quota.objects.get(project=world.project, resource="networks").in_use == 0
    services.network_create(user=world.member, project=world.project)


def test_network_in_use_cannot_be_deleted(world):
    network, _ = private(world)
    port = services.port_create(user=world.member, project=world.project, network=network)
    with pytest.raises(ApplicationError) as exc:
        services.network_delete(network=network, user=world.member, project=world.project)
    assert exc.value.status_code == 409 and kind(exc) == "NetworkInUse"
    services.port_delete(port=port, user=world.member, project=world.project)
    services.network_delete(network=network, user=world.member, project=world.project)  # its DHCP port goes too
    assert not Network.objects.filter(pk=network.pk).exists()


def test_shared_networks_take_other_projects_ports_but_only_the_owner_changes_them(world):
    network, _ = private(world)
    with pytest.raises(ApplicationError) as exc:  # not shared: as if it did not exist
        services.port_create(user=world.outsider, project=world.other_project, network=network)
    assert exc.value.status_code == 404
    network = services.network_update(network=network, user=world.admin, project=world.project,
                                      changes={"shared": True})
    theirs = services.port_create(user=world.outsider, project=world.other_project, network=network)
    with pytest.raises(ApplicationError) as exc:
        services.network_update(network=network, user=world.outsider, project=world.other_project,
                                changes={"name": "mine"})
    assert exc.value.status_code == 403
    with pytest.raises(ApplicationError) as exc:  # a non-owner may not pick an address
        services.port_create(user=world.outsider, project=world.other_project, network=network,
                             fixed_ips=[{"ip_address": "10.0.0.99"}])
    assert exc.value.status_code == 403
    with pytest.raises(ApplicationError) as exc:
        services.network_update(network=network, user=world.admin, project=world.project, changes={"shared": False})
    assert kind(exc) == "InvalidSharedSetting"
    services.port_delete(port=theirs, user=world.outsider, project=world.other_project)


# --- security groups -------------------------------------------------------------------------


def test_default_group_has_neutrons_rules_and_ports_get_it(world):
    network, _ = private(world)
    port = services.port_create(user=world.member, project=world.project, network=network)
    group = SecurityGroup.objects.get(project=world.project, is_default=True)
    assert list(port.security_groups.all()) == [group]
    rules = {(r.direction, r.ethertype, r.remote_group_id) for r in group.rules.all()}
    assert rules == {("egress", "IPv4", None), ("egress", "IPv6", None),
                     ("ingress", "IPv4", group.pk), ("ingress", "IPv6", group.pk)}
    assert Quota.objects.get(project=world.project, resource="security_groups").in_use == 0
    with pytest.raises(ApplicationError) as exc:
        services.security_group_delete(group=group, user=world.member, project=world.project)
    assert kind(exc) == "SecurityGroupCannotRemoveDefault"
    with pytest.raises(ApplicationError) as exc:
        services.security_group_create(user=world.member, project=world.project, name="default")
    assert kind(exc) == "SecurityGroupDefaultAlreadyExists"


def test_rules_are_validated_and_duplicates_refused(world):
    group = services.security_group_create(user=world.member, project=world.project, name="web")
    assert group.rules.count() == 2  # Neutron's egress rules of a new group
    make = lambda **kw: services.security_group_rule_create(user=world.member, project=world.project,  # noqa: E731
                                                           group=group, **kw)
    rule = make(direction="ingress", protocol="tcp", port_range_min=80, port_range_max=80)
    with pytest.raises(ApplicationError) as exc:
        make(direction="ingress", protocol="tcp", port_range_min=80, port_range_max=80)
    assert exc.value.status_code == 409 and kind(exc) == "SecurityGroupRuleExists" and str(rule.pk) in exc.value.message
    cases = [
        (dict(direction="sideways"), "InvalidInput"),
        (dict(direction="ingress", protocol="bogus"), "SecurityGroupRuleInvalidProtocol"),
        (dict(direction="ingress", protocol="tcp", port_range_min=90, port_range_max=80),
         "SecurityGroupInvalidPortRange"),
        (dict(direction="ingress", port_range_min=22, port_range_max=22), "SecurityGroupProtocolRequiredWithPorts"),
        (dict(direction="ingress", protocol="icmp", port_range_max=0), "SecurityGroupMissingIcmpType"),
        (dict(direction="ingress", remote_ip_prefix="10.0.0.0/8", remote_group_id=str(group.pk)),
         "SecurityGroupRemoteGroupAndRemoteIpPrefix"),
        (dict(direction="ingress", ethertype="IPv6", remote_ip_prefix="10.0.0.0/8"),
         "SecurityGroupRuleParameterConflict"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(ApplicationError) as exc:
            make(**kwargs)
        assert exc.value.status_code == 400 and kind(exc) == expected, kwargs
    icmp6 = make(direction="ingress", ethertype="IPv6", protocol="icmp")
    assert icmp6.protocol == "ipv6-icmp"
    assert make(direction="ingress", protocol="icmp", port_range_min=8, port_range_max=0).port_range_min == 8
    assert make(direction="ingress", remote_ip_prefix="192.168.1.7/24").remote_ip_prefix == "192.168.1.0/24"


def test_group_in_use_cannot_be_deleted(world):
    network, _ = private(world)
    group = services.security_group_create(user=world.member, project=world.project, name="web")
    port = services.port_create(user=world.member, project=world.project, network=network,
                                security_groups=[str(group.pk)])
    with pytest.raises(ApplicationError) as exc:
        services.security_group_delete(group=group, user=world.member, project=world.project)
    assert kind(exc) == "SecurityGroupInUse"
    services.port_update(port=port, user=world.member, project=world.project, changes={"security_groups": []})
    services.security_group_delete(group=group, user=world.member, project=world.project)
    assert Quota.objects.get(project=world.project, resource="security_groups").in_use == 0


def web_and_db_groups(world) -> tuple[SecurityGroup, SecurityGroup]:
    """Groups ``web`` and ``db``; db lets web's members in on TCP 5432 (a remote-group rule)."""
    web = services.security_group_create(user=world.member, project=world.project, name="web")
    db = services.security_group_create(user=world.member, project=world.project, name="db")
    services.security_group_rule_create(user=world.member, project=world.project, group=db, direction="ingress",
                                        protocol="tcp", port_range_min=5432, port_range_max=5432,
                                        remote_group_id=str(web.pk))
    return web, db


def test_member_changes_send_the_members_and_rule_changes_resync_the_groups_ports(world, host, net):
    network, _ = private(world)
    web, db = web_and_db_groups(world)
    w = services.port_create(user=world.member, project=world.project, network=network, security_groups=[str(web.pk)],
                             host_id=None)
    d = services.port_create(user=world.admin, project=world.project, network=network, security_groups=[str(db.pk)],
                             host_id=host.hostname)
    assert net.ports[str(d.pk)].remote_groups == {str(web.pk): [a.ip_address for a in w.fixed_ips.all()]}
    # A new member of web changes what db's ports let in: the host of d gets web's members, and
    # d's own spec (its rules) is not sent again.
    net.calls.clear()
    services.port_update(port=w, user=world.admin, project=world.project, changes={"host_id": host.hostname})
    w2 = services.port_create(user=world.admin, project=world.project, network=network, security_groups=[str(web.pk)],
                              host_id=host.hostname)
    assert set(net.group_members[str(web.pk)]) == {a.ip_address for p in (w, w2) for a in p.fixed_ips.all()}
    assert ("port_sync", str(d.pk)) not in net.calls
    assert str(db.pk) not in net.group_members  # no filter names db as its remote group
    # A member leaving is sent too.
    services.port_delete(port=w2, user=world.admin, project=world.project)
    assert set(net.group_members[str(web.pk)]) == {a.ip_address for a in w.fixed_ips.all()}
    # An ICMP rule in web reaches web's ports, and only those.
    net.calls.clear()
    services.security_group_rule_create(user=world.member, project=world.project, group=web, direction="ingress",
                                        protocol="icmp")
    synced = {object_id for op, object_id in net.calls if op == "port_sync"}
    assert synced == {str(w.pk)}
    assert any(r.protocol == "icmp" for r in net.ports[str(w.pk)].security_rules)
    assert not any(r.protocol == "icmp" for r in net.ports[str(d.pk)].security_rules)


def test_deleting_a_group_resyncs_the_ports_whose_rules_named_it(world, host, net):
    network, _ = private(world)
    web, db = web_and_db_groups(world)
    d = services.port_create(user=world.admin, project=world.project, network=network, security_groups=[str(db.pk)],
                             host_id=host.hostname)
    assert any(r.remote_group_id == str(web.pk) for r in net.ports[str(d.pk)].security_rules)
    services.security_group_delete(group=web, user=world.member, project=world.project)
    assert not any(r.remote_group_id for r in net.ports[str(d.pk)].security_rules)


# --- routers and floating IPs ----------------------------------------------------------------


def test_router_gateway_and_interface_reach_the_network_host(world, host, net):
    ext, network, subnet, router = topology(world)
    assert router.host == host
    spec = net.routers[str(router.pk)]
    assert spec.gateway.ip_address == "172.24.4.2" and spec.gateway.cidr == "172.24.4.0/24"
    assert spec.gateway_ip == "172.24.4.1" and spec.enable_snat
    assert [(i.ip_address, i.cidr) for i in spec.interfaces] == [("10.0.0.1", "10.0.0.0/24")]
    assert spec.gateway.network.physical_network == "public"
    leg = Port.objects.get(device_owner=OWNER_ROUTER_INTERFACE)
    assert leg.host == host and leg.status == Status.ACTIVE  # the agent applied the router
    assert Port.objects.get(device_owner=OWNER_ROUTER_GATEWAY).status == Status.ACTIVE
    # The router's host needs both networks' bridges; the private network's DHCP runs there too.
    assert str(network.pk) in net.networks and net.networks[str(network.pk)].dhcp_port is not None
    assert Quota.objects.get(project=world.project, resource="ports").in_use == 0


def test_router_interface_rules(world, host):
    ext, network, subnet, router = topology(world)
    with pytest.raises(ApplicationError, match="already has a port on subnet"):
        services.router_interface_add(router=router, user=world.member, project=world.project, subnet_id=subnet.pk)
    other, other_subnet = private(world, cidr="10.0.0.128/25")
    with pytest.raises(ApplicationError, match="overlaps with cidr"):
        services.router_interface_add(router=router, user=world.member, project=world.project,
                                      subnet_id=other_subnet.pk)
    with pytest.raises(ApplicationError) as exc:
        services.router_delete(router=router, user=world.member, project=world.project)
    assert kind(exc) == "RouterInUse"
    leg = Port.objects.get(device_owner=OWNER_ROUTER_INTERFACE)
    with pytest.raises(ApplicationError) as exc:
        services.port_delete(port=leg, user=world.member, project=world.project)
    assert kind(exc) == "L3PortInUse"
    with pytest.raises(ApplicationError) as exc:
        services.router_interface_remove(router=router, user=world.member, project=world.project,
                                         subnet_id=other_subnet.pk)
    assert exc.value.status_code == 404 and kind(exc) == "RouterInterfaceNotFound"
    info = services.router_interface_remove(router=router, user=world.member, project=world.project,
                                            subnet_id=subnet.pk)
    assert info["port_id"] == str(leg.pk) and not Port.objects.filter(pk=leg.pk).exists()
    services.router_delete(router=router, user=world.member, project=world.project)
    assert not Port.objects.filter(device_owner=OWNER_ROUTER_GATEWAY).exists()


def test_router_interface_by_port(world, host):
    network, subnet = private(world)
    router = services.router_create(user=world.member, project=world.project, name="r")
    port = services.port_create(user=world.member, project=world.project, network=network)
    assert Quota.objects.get(project=world.project, resource="ports").in_use == 1
    info = services.router_interface_add(router=router, user=world.member, project=world.project, port_id=port.pk)
    port.refresh_from_db()
    assert info["port_id"] == str(port.pk) and port.device_owner == OWNER_ROUTER_INTERFACE
    assert not port.security_groups.exists() and not port.port_security_enabled
    assert Quota.objects.get(project=world.project, resource="ports").in_use == 0
    with pytest.raises(ApplicationError) as exc:  # in use by the router now
        services.router_interface_add(router=router, user=world.member, project=world.project, port_id=port.pk)
    assert kind(exc) == "PortInUse"


@pytest.mark.database
def test_static_routes_need_a_connected_nexthop(world, host, net):
    ext, network, subnet, router = topology(world)
    routes = [{"destination": "192.168.50.0/24", "nexthop": "10.0.0.10"}]
    services.router_update(router=router, user=world.member, project=world.project, changes={"routes": routes})
    assert net.routers[str(router.pk)].routes == routes
    with pytest.raises(ApplicationError) as exc:
        services.router_update(router=router, user=world.member, project=world.project,
                               changes={"routes": [{"destination": "0.0.0.0/0", "nexthop": "8.8.8.8"}]})
    assert kind(exc) == "InvalidRoutes"
    more = [{"destination": "192.168.60.0/24", "nexthop": "172.24.4.9"}]
    router = services.router_routes_change(router=router, user=world.member, project=world.project, routes=more,
                                           add=True)
    assert router.routes == routes + more
    router = services.router_routes_change(router=router, user=world.member, project=world.project, routes=routes,
                                           add=False)
    assert router.routes == more


@pytest.mark.database
def test_gateway_attributes_are_for_admins(world, host):
    ext = public(world)
    for info in ({"network_id": str(ext.pk), "enable_snat": False},
                 {"network_id": str(ext.pk), "external_fixed_ips": [{"ip_address": "172.24.4.77"}]}):
        with pytest.raises(ApplicationError) as exc:
            services.router_create(user=world.member, project=world.project, external_gateway_info=info)
        assert exc.value.status_code == 403
    router = services.router_create(user=world.admin, project=world.project, external_gateway_info={
        "network_id": str(ext.pk), "enable_snat": False, "external_fixed_ips": [{"ip_address": "172.24.4.77"}]})
    assert not router.enable_snat
    assert [a.ip_address for a in router.gateway_port.fixed_ips.all()] == ["172.24.4.77"]
    network, _ = private(world)
    with pytest.raises(ApplicationError, match="not a valid external network"):
        services.router_update(router=router, user=world.admin, project=world.project,
                               changes={"external_gateway_info": {"network_id": str(network.pk)}})


@pytest.mark.database
def test_floating_ip_associates_through_the_router_and_goes_active(world, host, net):
    ext, network, subnet, router = topology(world)
    port = services.port_create(user=world.member, project=world.project, network=network)
    fip = services.floating_ip_create(user=world.member, project=world.project, floating_network_id=ext.pk)
    assert fip.floating_ip_address == "172.24.4.3" and fip.status == Status.DOWN  # .2 is the router's gateway
    fip = services.floating_ip_update(fip=fip, user=world.member, project=world.project,
                                      changes={"port_id": str(port.pk)})
    fip.refresh_from_db()
    assert fip.router == router and fip.fixed_ip_address == "10.0.0.3" and fip.status == Status.ACTIVE
    assert [(f.floating_ip_address, f.fixed_ip_address) for f in net.routers[str(router.pk)].floating_ips] == [
        ("172.24.4.3", "10.0.0.3")]
    # A port's floating IP goes with the port; the router forgets the NAT.
    services.port_delete(port=port, user=world.member, project=world.project)
    fip.refresh_from_db()
    assert fip.port is None and fip.router is None and fip.status == Status.DOWN
    assert net.routers[str(router.pk)].floating_ips == []
    services.floating_ip_delete(fip=fip, user=world.member, project=world.project)
    assert Quota.objects.get(project=world.project, resource="floating_ips").in_use == 0
    assert not Port.objects.filter(network=ext, device_owner="network:floatingip").exists()


@pytest.mark.database
def test_floating_ip_needs_a_router_to_the_port_and_one_per_fixed_ip(world, host):
    ext = public(world)
    network, subnet = private(world)
    port = services.port_create(user=world.member, project=world.project, network=network)
    with pytest.raises(ApplicationError) as exc:
        services.floating_ip_create(user=world.member, project=world.project, floating_network_id=ext.pk,
                                    port_id=str(port.pk))
    assert exc.value.status_code == 404 and kind(exc) == "ExternalGatewayForFloatingIPNotFound"
    assert FloatingIP.objects.count() == 0
    router = services.router_create(user=world.member, project=world.project,
                                    external_gateway_info={"network_id": str(ext.pk)})
    services.router_interface_add(router=router, user=world.member, project=world.project, subnet_id=subnet.pk)
    services.floating_ip_create(user=world.member, project=world.project, floating_network_id=ext.pk,
                                port_id=str(port.pk))
    with pytest.raises(ApplicationError) as exc:
        services.floating_ip_create(user=world.member, project=world.project, floating_network_id=ext.pk,
                                    port_id=str(port.pk))
    assert kind(exc) == "FloatingIPPortAlreadyAssociated"
    with pytest.raises(ApplicationError) as exc:  # the interface is what the floating IP needs
        services.router_interface_remove(router=router, user=world.member, project=world.project,
                                         subnet_id=subnet.pk)
    assert kind(exc) == "RouterInterfaceInUseByFloatingIP"
    with pytest.raises(ApplicationError) as exc:
        services.router_update(router=router, user=world.member, project=world.project,
                               changes={"external_gateway_info": None})
    assert kind(exc) == "RouterExternalGatewayInUseByFloatingIp"
    with pytest.raises(ApplicationError) as exc:  # choosing the address is for admins
        services.floating_ip_create(user=world.member, project=world.project, floating_network_id=ext.pk,
                                    floating_ip_address="172.24.4.200")
    assert exc.value.status_code == 403
    fip = services.floating_ip_create(user=world.admin, project=world.project, floating_network_id=ext.pk,
                                      floating_ip_address="172.24.4.200")
    assert fip.floating_ip_address == "172.24.4.200"
    with pytest.raises(ApplicationError) as exc:
        services.floating_ip_create(user=world.member, project=world.project, floating_network_id=network.pk)
    assert "not a valid external network" in exc.value.message


def test_floating_ip_quota(world, host):
    ext = public(world)
    quota_set(project=world.project, resource="floating_ips", limit=1)
    services.floating_ip_create(user=world.member, project=world.project, floating_network_id=ext.pk)
    with pytest.raises(ApplicationError) as exc:
        services.floating_ip_create(user=world.member, project=world.project, floating_network_id=ext.pk)
    assert exc.value.status_code == 409 and kind(exc) == "OverQuota"


@pytest.mark.database
def test_agent_failure_marks_the_router_error(world, host, net):
    ext, network, subnet, router = topology(world)
    net.fail_next("router_sync", "no external bridge")
    services.router_update(router=router, user=world.member, project=world.project, changes={"name": "again"})
    assert Router.objects.get(pk=router.pk).status == Status.ERROR
    services.router_update(router=router, user=world.member, project=world.project, changes={"name": "ok"})
    assert Router.objects.get(pk=router.pk).status == Status.ACTIVE


# --- agents ----------------------------------------------------------------------------------


def report(hostname: str, started_at: float) -> HostReport:
    return HostReport(hostname=hostname, queue=f"host.{hostname}", virt_type="qemu", vcpus=8, memory_mib=8192,
                      disk_gb=100, agent_version="1", started_at=started_at)


def test_a_batch_sends_its_changes_once_and_a_failed_batch_sends_nothing(world, host, net):
    network, _ = private(world)
    port = services.port_create(user=world.admin, project=world.project, network=network, host_id=host.hostname)
    net.calls.clear()
    with transaction.atomic(), dataplane.batched_sync():
        dataplane.Sync().port(port).send()
        with dataplane.batched_sync():  # a nested block joins the outer one
            dataplane.Sync().port(port).network(network).send()
        assert net.calls == []  # nothing before the block ends and the transaction commits
    assert sorted(net.calls) == [("network_sync", str(network.pk)), ("port_sync", str(port.pk))]

    net.calls.clear()
    with pytest.raises(RuntimeError), transaction.atomic(), dataplane.batched_sync():
        dataplane.Sync().port(port).send()
        raise RuntimeError("the service failed")
    assert net.calls == []
    dataplane.Sync().port(port).send()  # later changes are sent as before
    assert net.calls == [("network_sync", str(network.pk)), ("port_sync", str(port.pk))]


def test_a_restarted_agent_gets_its_hosts_whole_state(world, host, net):
    ext, network, subnet, router = topology(world)
    bound = services.port_create(user=world.admin, project=world.project, network=network, host_id=host.hostname)
    host_heartbeat(report=report(host.hostname, 1000.0))  # first heartbeat of an agent: a resync
    assert ("resync", "") in net.calls
    net.reset()  # the host lost everything (a reboot) ...
    host_heartbeat(report=report(host.hostname, 1000.0))  # ... the same agent process: nothing sent
    assert net.calls == []
    host_heartbeat(report=report(host.hostname, 2000.0))  # a new process: the whole state again
    assert net.calls == [("resync", "")]
    assert set(net.routers) == {str(router.pk)}
    assert set(net.ports) == {str(bound.pk)}
    assert {str(ext.pk), str(network.pk)} <= set(net.networks)
    assert NetworkAgent.objects.get(host=host).started_at == 2000.0


def test_the_state_of_a_host(world, host):
    ext, network, subnet, router = topology(world)
    elsewhere = make_host("node2")
    vm_port = services.port_create(user=world.admin, project=world.project, network=network,
                                   host_id=elsewhere.hostname)
    state = dataplane.host_state(elsewhere)
    assert [p.id for p in state.ports] == [str(vm_port.pk)] and state.routers == []
    [spec] = state.networks
    assert spec.id == str(network.pk) and spec.dhcp_port is None  # a bridge only: DHCP runs on node1
    main = dataplane.host_state(host)
    assert [r.id for r in main.routers] == [str(router.pk)] and main.ports == []
    dhcp = next(n for n in main.networks if n.id == str(network.pk))
    assert dhcp.dhcp_port is not None and dhcp.metadata
    assert str(vm_port.pk) in {p.id for p in dhcp.ports}  # its static DHCP entry
    assert [s.id for s in dhcp.subnets] == [str(subnet.pk)]


def test_routers_made_before_any_host_are_taken_by_the_first_host(world, net):
    ext, network, subnet, router = topology(world)
    assert router.host is None and Network.objects.get(pk=network.pk).dhcp_host is None
    node = make_host()
    host_heartbeat(report=report(node.hostname, 1.0))
    assert Router.objects.get(pk=router.pk).host == node
    assert Network.objects.get(pk=network.pk).dhcp_host == node
    assert Port.objects.get(device_owner=OWNER_DHCP, network=network).host == node
    assert str(router.pk) in net.routers


def test_bootstrap_makes_public_private_and_a_router_once(world, host, settings):
    settings.CLOUDMGR_EXTERNAL_CIDR = "172.30.0.1/24"
    settings.CLOUDMGR_PRIVATE_NETWORK_CIDR = "10.5.0.0/26"
    first = services.network_bootstrap(project=world.project)
    again = services.network_bootstrap(project=world.project)
    assert first == again
    pub, priv = first["public"], first["private"]
    assert pub.external and pub.is_default and pub.network_type == "flat" and pub.physical_network == "public"
    [subnet] = pub.subnets.all()
    assert (subnet.cidr, subnet.gateway_ip, subnet.enable_dhcp) == ("172.30.0.0/24", "172.30.0.1", False)
    assert priv.subnets.get().cidr == "10.5.0.0/26"
    router = Router.objects.get(name="router1")
    assert router.gateway_network == pub and router.interfaces.get().subnet == priv.subnets.get()
    assert Network.objects.count() == 2 and Router.objects.count() == 1


def test_auto_allocated_topology_is_made_once(world, host):
    with pytest.raises(ApplicationError) as exc:
        services.auto_allocated_topology_get(user=world.member, project=world.project)
    assert kind(exc) == "AutoAllocationFailure"
    ext = public(world)
    network = services.auto_allocated_topology_get(user=world.member, project=world.project)
    assert services.auto_allocated_topology_get(user=world.member, project=world.project) == network
    router = Router.objects.get(project=world.project)
    assert router.gateway_network == ext and router.interfaces.get().port.network == network
    services.auto_allocated_topology_delete(user=world.member, project=world.project)
    assert not Network.objects.filter(pk=network.pk).exists() and not Router.objects.exists()


def test_unknown_agent_results_change_nothing(world, host):
    network, _ = private(world)
    port = services.port_create(user=world.member, project=world.project, network=network)
    services.network_task_done(result={"task": "agents.network.port_sync", "kind": "port", "id": "not-a-uuid",
                                       "ok": True})
    services.network_task_done(result={"task": "agents.network.port_delete", "kind": "port", "id": str(port.pk),
                                       "ok": True})
    services.network_task_done(result="garbage")
    assert Port.objects.get(pk=port.pk).status == Status.DOWN
    services.network_task_done(result={"task": "agents.network.port_sync", "kind": "port", "id": str(port.pk),
                                       "ok": False, "error": "boom"})
    assert Port.objects.get(pk=port.pk).status == Status.ERROR


def test_the_agent_drops_a_message_older_than_the_state_it_applied(world, host, net):
    """A host runs its tasks on several threads: an older spec that runs last must not win."""
    from agents.network import tasks as agent_tasks

    network = Network.objects.get(pk=private(world)[0].pk)
    older = dataplane.network_spec(network, host)
    port = services.port_create(user=world.member, project=world.project, network=network)
    newer = dataplane.network_spec(network, host)
    assert str(port.pk) in {p.id for p in newer.ports} and str(port.pk) not in {p.id for p in older.ports}
    now = time.time_ns()  # later than what the services' own messages carried
    older.generation, newer.generation = now + 1, now + 2
    assert agent_tasks.network_sync(newer.to_dict())["ok"]
    stale = agent_tasks.network_sync(older.to_dict())
    assert stale["ok"] and stale["stale"]
    assert str(port.pk) in {p.id for p in net.networks[str(network.pk)].ports}  # the newer state stayed
    # A deletion is remembered too: an older sync does not bring the network back.
    assert agent_tasks.network_delete({"network_id": str(network.pk), "generation": now + 3})["ok"]
    assert agent_tasks.network_sync(newer.to_dict()).get("stale")
    assert str(network.pk) not in net.networks
