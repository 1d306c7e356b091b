"""The portal's network pages with Django's test client (agents in-process on the fake drivers):
what a member sees (their project's networks, and the shared and external ones), that a reader
cannot write, that another project's objects are 404, the forms of every page, the topology
picture, and the instance page's addresses."""

import re

import pytest

from apps.instances import services as instance_services
from apps.networks import services
from apps.networks.models import FloatingIP, Network, Router, RouterInterface, SecurityGroup, SecurityGroupRule, Subnet
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)


def public(world):
    """The external network, owned by the other project (as an operator's would be)."""
    network = services.network_create(user=world.admin, project=world.other_project, name="public", external=True,
                                      is_default=True, network_type="flat", physical_network="public")
    services.subnet_create(user=world.admin, project=world.other_project, network=network, cidr="172.24.4.0/24",
                           enable_dhcp=False)
    return network


def private(world, name="alpha-net", cidr="10.0.0.0/24", user=None, project=None):
    user, project = user or world.member, project or world.project
    network = services.network_create(user=user, project=project, name=name)
    subnet = services.subnet_create(user=user, project=project, network=network, cidr=cidr)
    return network, subnet


def text(response) -> str:
    return response.content.decode()


def messages_of(response) -> str:
    return " ".join(str(m) for m in response.context["messages"]) if response.context else ""


@pytest.fixture
def alpha(world):
    """public; alpha's network with a router to public; beta's own network and router."""
    ext = public(world)
    network, subnet = private(world)
    router = services.router_create(user=world.member, project=world.project, name="alpha-router",
                                    external_gateway_info={"network_id": str(ext.pk)})
    services.router_interface_add(router=router, user=world.member, project=world.project, subnet_id=subnet.pk)
    beta_net, beta_subnet = private(world, name="beta-net", cidr="10.0.0.0/24", user=world.outsider,
                                    project=world.other_project)
    beta_router = services.router_create(user=world.outsider, project=world.other_project, name="beta-router")
    return {"ext": ext, "network": network, "subnet": subnet, "router": router, "beta_net": beta_net,
            "beta_subnet": beta_subnet, "beta_router": beta_router}


# --- visibility ------------------------------------------------------------------------------


def test_a_member_sees_their_projects_networks_and_the_external_one_only(client, world, alpha):
    client.force_login(world.member)
    page = text(client.get("/networks/"))
    assert 'data-name="alpha-net"' in page and 'data-name="public"' in page
    assert "beta-net" not in page
    assert page.index('data-name="public"') < page.index('data-name="alpha-net"')  # external first
    routers = text(client.get("/networks/routers/"))
    assert "alpha-router" in routers and "beta-router" not in routers
    # The menu leads to every network page.
    for name in ("/networks/", "/networks/routers/", "/networks/floating-ips/", "/networks/security-groups/",
                 "/networks/topology/"):
        assert f'href="{name}"' in page

    client.force_login(world.outsider)
    page = text(client.get("/networks/"))
    assert 'data-name="beta-net"' in page and 'data-name="public"' in page and "alpha-net" not in page


def test_another_projects_objects_are_not_found_on_every_page_and_action(client, world, alpha):
    fip = services.floating_ip_create(user=world.member, project=world.project, floating_network_id=alpha["ext"].pk)
    group = services.security_group_create(user=world.member, project=world.project, name="alpha-web")
    rule = group.rules.first()
    client.force_login(world.outsider)
    gets = [f"/networks/{alpha['network'].pk}/", f"/networks/routers/{alpha['router'].pk}/",
            f"/networks/security-groups/{group.pk}/"]
    for url in gets:
        r = client.get(url)
        assert r.status_code == 404, url
        assert "could not be found" in text(r) and "alpha" not in text(r).split("could not be found")[0][-200:]
    posts = [
        (f"/networks/{alpha['network'].pk}/delete/", {}),
        (f"/networks/{alpha['network'].pk}/subnets/", {"cidr": "10.9.0.0/24"}),
        (f"/networks/subnets/{alpha['subnet'].pk}/delete/", {}),
        (f"/networks/routers/{alpha['router'].pk}/gateway/", {"clear": "1"}),
        (f"/networks/routers/{alpha['router'].pk}/interfaces/", {"subnet": str(alpha["beta_subnet"].pk)}),
        (f"/networks/routers/{alpha['router'].pk}/interfaces/{alpha['router'].interfaces.get().port_id}/remove/", {}),
        (f"/networks/routers/{alpha['router'].pk}/delete/", {}),
        (f"/networks/floating-ips/{fip.pk}/disassociate/", {}),
        (f"/networks/floating-ips/{fip.pk}/release/", {}),
        (f"/networks/security-groups/{group.pk}/delete/", {}),
        (f"/networks/security-groups/{group.pk}/rules/", {"direction": "ingress", "ethertype": "IPv4"}),
        (f"/networks/security-groups/rules/{rule.pk}/delete/", {}),
    ]
    for url, data in posts:
        r = client.post(url, data)
        assert r.status_code == 404, url
    # Nothing of alpha's changed.
    assert Network.objects.filter(pk=alpha["network"].pk).exists()
    assert Subnet.objects.filter(network=alpha["network"]).count() == 1
    assert Router.objects.get(pk=alpha["router"].pk).gateway_network_id == alpha["ext"].pk
    assert RouterInterface.objects.filter(router=alpha["router"]).count() == 1
    assert FloatingIP.objects.filter(pk=fip.pk).exists()
    assert SecurityGroupRule.objects.filter(pk=rule.pk).exists() and SecurityGroup.objects.filter(pk=group.pk).exists()
    # Nor does beta's floating IP list or topology show alpha's things.
    assert fip.floating_ip_address not in text(client.get("/networks/floating-ips/"))
    topology = text(client.get("/networks/topology/"))
    assert "alpha-router" not in topology and "alpha-net" not in topology and "beta-router" in topology

    # A stale button (htmx) of a thing that went: back to the list, with the message.
    r = client.post(f"/networks/routers/{alpha['router'].pk}/delete/", HTTP_HX_REQUEST="true")
    assert r.status_code == 200 and r["HX-Redirect"] == "/networks/routers/"


def test_a_shared_or_external_network_is_read_only_to_other_projects(client, world, alpha):
    client.force_login(world.member)
    page = text(client.get(f"/networks/{alpha['ext'].pk}/"))
    assert "172.24.4.0/24" in page and "Delete network" not in page and "Add subnet" not in page
    r = client.post(f"/networks/{alpha['ext'].pk}/delete/", follow=True)
    assert "Policy does not allow" in messages_of(r)
    assert Network.objects.filter(pk=alpha["ext"].pk).exists()


def test_a_reader_sees_the_pages_but_cannot_write(client, world, alpha):
    client.force_login(world.reader)
    for url in ("/networks/", f"/networks/{alpha['network'].pk}/", "/networks/routers/",
                f"/networks/routers/{alpha['router'].pk}/", "/networks/floating-ips/", "/networks/security-groups/",
                "/networks/topology/"):
        r = client.get(url)
        assert r.status_code == 200, url
        page = text(r)
        assert "<form method=\"post\" action=\"/networks" not in page, url  # no forms, no delete buttons
    assert "alpha-net" in text(client.get("/networks/"))
    writes = [
        ("/networks/create/", {"name": "sneaky"}),
        (f"/networks/{alpha['network'].pk}/delete/", {}),
        (f"/networks/{alpha['network'].pk}/subnets/", {"cidr": "10.7.0.0/24"}),
        (f"/networks/routers/{alpha['router'].pk}/gateway/", {"clear": "1"}),
        ("/networks/floating-ips/allocate/", {"floating_network": str(alpha["ext"].pk)}),
        ("/networks/security-groups/create/", {"name": "sneaky"}),
    ]
    for url, data in writes:
        r = client.post(url, data, follow=True)
        assert "allows viewing only" in messages_of(r), url
    assert not Network.objects.filter(name="sneaky").exists()
    assert Network.objects.filter(pk=alpha["network"].pk).exists()
    assert Router.objects.get(pk=alpha["router"].pk).gateway_network_id == alpha["ext"].pk
    assert not FloatingIP.objects.exists() and not SecurityGroup.objects.filter(name="sneaky").exists()


# --- networks, subnets, routers --------------------------------------------------------------


def test_network_subnet_and_router_through_the_forms(client, world):
    ext = public(world)
    client.force_login(world.member)
    # A network: to its page.
    r = client.post("/networks/create/", {"name": "web", "admin_state_up": "on"})
    network = Network.objects.get(name="web")
    assert r.status_code == 302 and r["Location"] == f"/networks/{network.pk}/"
    assert network.project == world.project and network.admin_state_up and not network.shared
    assert "shared" not in text(client.get("/networks/"))  # sharing is for cloud admins: no checkbox

    # Subnets: a bad CIDR is the form's error; what the service refuses is the form's error too.
    r = client.post(f"/networks/{network.pk}/subnets/", {"cidr": "10.1.0.0"})
    assert "prefix length" in text(r) and not Subnet.objects.filter(network=network).exists()
    r = client.post(f"/networks/{network.pk}/subnets/", {"cidr": "10.1.0.0/24", "allocation_pools": "10.1.0.1"})
    assert "is not a range" in text(r)
    r = client.post(f"/networks/{network.pk}/subnets/", {
        "name": "web-v4", "cidr": "10.1.0.0/24", "enable_dhcp": "on",
        "allocation_pools": "10.1.0.10-10.1.0.99\r\n10.1.0.150 - 10.1.0.160", "dns_nameservers": "9.9.9.9, 1.1.1.1",
        "host_routes": "192.168.0.0/16,10.1.0.254"})
    assert r.status_code == 302
    subnet = Subnet.objects.get(network=network)
    assert (subnet.cidr, subnet.gateway_ip, subnet.enable_dhcp) == ("10.1.0.0/24", "10.1.0.1", True)
    assert subnet.allocation_pools == [{"start": "10.1.0.10", "end": "10.1.0.99"},
                                       {"start": "10.1.0.150", "end": "10.1.0.160"}]
    assert subnet.dns_nameservers == ["9.9.9.9", "1.1.1.1"]
    assert subnet.host_routes == [{"destination": "192.168.0.0/16", "nexthop": "10.1.0.254"}]
    r = client.post(f"/networks/{network.pk}/subnets/", {"cidr": "10.1.0.128/25"})
    assert r.status_code == 200 and "overlaps with another subnet" in text(r)
    r = client.post(f"/networks/{network.pk}/subnets/", {"cidr": "fd00:1::/64", "ipv6_mode": "slaac",
                                                         "no_gateway": "on"})
    v6 = Subnet.objects.get(network=network, ip_version=6)
    assert (v6.gateway_ip, v6.ipv6_address_mode, v6.ipv6_ra_mode) == (None, "slaac", "slaac")
    page = text(client.get(f"/networks/{network.pk}/"))
    assert "10.1.0.10" in page and "fd00:1::/64" in page and "DHCP server" in page  # its DHCP port
    assert 'hx-confirm="Delete subnet fd00:1::/64?"' in page

    # A router with a gateway, then a leg on the subnet.
    r = client.post("/networks/routers/create/", {"name": "edge", "external_network": str(ext.pk)})
    router = Router.objects.get(name="edge")
    assert r["Location"] == f"/networks/routers/{router.pk}/" and router.gateway_network == ext
    r = client.post(f"/networks/routers/{router.pk}/interfaces/", {"subnet": str(subnet.pk)})
    assert r.status_code == 302
    interface = RouterInterface.objects.get(router=router)
    page = text(client.get(f"/networks/routers/{router.pk}/"))
    assert 'data-cidr="10.1.0.0/24"' in page and "10.1.0.1" in page and "172.24.4." in page
    # The same subnet again: the service's refusal, on the form.
    r = client.post(f"/networks/routers/{router.pk}/interfaces/", {"subnet": str(subnet.pk)})
    assert "already has a port on subnet" in text(r)
    # A network with a router leg cannot go; the message says why.
    r = client.post(f"/networks/{network.pk}/delete/", follow=True)
    assert "ports still in use" in messages_of(r)

    # Clear the gateway and set it again; remove the leg, delete the router, the subnet, the network.
    r = client.post(f"/networks/routers/{router.pk}/gateway/", {"clear": "1"}, HTTP_HX_REQUEST="true")
    assert r["HX-Redirect"] == f"/networks/routers/{router.pk}/"
    assert Router.objects.get(pk=router.pk).gateway_network is None
    client.post(f"/networks/routers/{router.pk}/gateway/", {"external_network": str(ext.pk)})
    assert Router.objects.get(pk=router.pk).gateway_network == ext
    r = client.post(f"/networks/routers/{router.pk}/delete/", follow=True)
    assert "still has ports" in messages_of(r)
    client.post(f"/networks/routers/{router.pk}/interfaces/{interface.port_id}/remove/")
    assert not RouterInterface.objects.filter(router=router).exists()
    r = client.post(f"/networks/routers/{router.pk}/delete/", follow=True)
    assert "Router edge deleted." in messages_of(r) and not Router.objects.filter(pk=router.pk).exists()
    client.post(f"/networks/subnets/{v6.pk}/delete/")
    assert not Subnet.objects.filter(pk=v6.pk).exists()
    r = client.post(f"/networks/{network.pk}/delete/", HTTP_HX_REQUEST="true")
    assert r["HX-Redirect"] == "/networks/" and not Network.objects.filter(pk=network.pk).exists()


def test_an_admin_may_share_a_network(client, world):
    client.force_login(world.admin)
    assert 'name="shared"' in text(client.get("/networks/"))
    client.post("/networks/create/", {"name": "common", "shared": "on", "admin_state_up": "on"})
    assert Network.objects.get(name="common").shared


# --- floating IPs and the instance page ------------------------------------------------------


def test_floating_ip_allocate_associate_disassociate_release(client, world, alpha):
    make_host()
    vm = instance_services.instance_create(user=world.member, project=world.project, name="vm1",
                                           flavor=world.flavor, image=world.image)
    client.force_login(world.member)
    overview = text(client.get(f"/instances/{vm.pk}/overview/"))
    fixed = re.search(r'data-testid="fixed-ip">(10\.0\.0\.\d+)<', overview).group(1)
    assert "alpha-net" in overview and 'data-testid="floating-ip"' not in overview

    r = client.post("/networks/floating-ips/allocate/", {"floating_network": str(alpha["ext"].pk)}, follow=True)
    fip = FloatingIP.objects.get(project=world.project)
    assert f"Floating IP {fip.floating_ip_address} allocated." in messages_of(r)
    page = text(r)
    vm_port = re.search(r'<option value="([0-9a-f-]{36})/' + re.escape(fixed) + '">vm1: ', page)
    assert vm_port, "the instance's address is offered"
    r = client.post(f"/networks/floating-ips/{fip.pk}/associate/", {"target": f"{vm_port.group(1)}/{fixed}"},
                    follow=True)
    assert f"is associated with {fixed}" in messages_of(r)
    fip.refresh_from_db()
    assert str(fip.port_id) == vm_port.group(1) and fip.fixed_ip_address == fixed
    assert fip.router_id == alpha["router"].pk
    page = text(client.get("/networks/floating-ips/"))
    assert f'href="/instances/{vm.pk}/">vm1</a>' in page and "Disassociate" in page
    overview = text(client.get(f"/instances/{vm.pk}/overview/"))
    assert f'data-testid="floating-ip">{fip.floating_ip_address}<' in overview

    # Nothing chosen: a clear message, nothing changes.
    r = client.post(f"/networks/floating-ips/{fip.pk}/disassociate/", HTTP_HX_REQUEST="true")
    assert r["HX-Redirect"] == "/networks/floating-ips/"
    assert FloatingIP.objects.get(pk=fip.pk).port_id is None
    r = client.post(f"/networks/floating-ips/{fip.pk}/associate/", {"target": ""}, follow=True)
    assert "Choose the instance address" in messages_of(r)
    r = client.post(f"/networks/floating-ips/{fip.pk}/release/", follow=True)
    assert f"Floating IP {fip.floating_ip_address} released." in messages_of(r)
    assert not FloatingIP.objects.exists()


def test_allocating_without_an_external_network_is_a_clear_error(client, world):
    private(world)
    client.force_login(world.member)
    page = text(client.get("/networks/floating-ips/"))
    assert "Allocate IP" in page
    r = client.post("/networks/floating-ips/allocate/", {"floating_network": ""})
    assert "This field is required" in text(r)


# --- security groups -------------------------------------------------------------------------


def test_security_groups_and_their_rules(client, world):
    client.force_login(world.member)
    page = text(client.get("/networks/security-groups/"))
    default = SecurityGroup.objects.get(project=world.project, is_default=True)  # made on first look, as Neutron
    assert 'data-name="default"' in page
    assert "Delete security group" not in text(client.get(f"/networks/security-groups/{default.pk}/"))

    r = client.post("/networks/security-groups/create/", {"name": "web", "description": "front"})
    web = SecurityGroup.objects.get(project=world.project, name="web")
    assert r["Location"] == f"/networks/security-groups/{web.pk}/"
    r = client.post("/networks/security-groups/create/", {"name": "default"})
    assert "Default security group already exists" in text(r)

    url = f"/networks/security-groups/{web.pk}/rules/"
    client.post(url, {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": "22",
                      "remote_ip_prefix": "10.0.0.0/8"})
    client.post(url, {"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp"})
    client.post(url, {"direction": "ingress", "ethertype": "IPv4", "protocol": "other", "protocol_number": "47",
                      "remote_group": str(default.pk)})
    rules = {(r.protocol, r.port_range_min, r.port_range_max, r.remote_ip_prefix, r.remote_group_id)
             for r in web.rules.filter(direction="ingress")}
    assert rules == {("tcp", 22, 22, "10.0.0.0/8", None), ("icmp", None, None, None, None),
                     ("47", None, None, None, default.pk)}
    page = text(client.get(f"/networks/security-groups/{web.pk}/"))
    assert 'data-protocol="tcp"' in page and "10.0.0.0/8" in page
    assert f'href="/networks/security-groups/{default.pk}/"' in page  # the remote group

    # Refusals: the form's own checks, and the service's (with Neutron's words).
    for data, message in [
        ({"protocol": "tcp", "port_range_min": "70000"}, "Invalid value for port 70000"),
        ({"protocol": "tcp", "port_range_min": "22", "remote_ip_prefix": "10.0.0.0/8"},
         "Security group rule already exists"),
        ({"protocol": "", "port_range_min": "22"}, "Must also specify protocol if port range is given"),
        ({"protocol": "other"}, "Give the protocol"),
        ({"remote_ip_prefix": "10.0.0.0/8", "remote_group": str(default.pk)}, "not both"),
        ({"ethertype": "IPv6", "remote_ip_prefix": "10.0.0.0/8"}, "Conflicting value ethertype IPv6"),
        ({"remote_ip_prefix": "not-a-cidr"}, "not-a-cidr"),
    ]:
        body = {"direction": "ingress", "ethertype": "IPv4", **data}
        r = client.post(url, body)
        assert r.status_code == 200 and message in text(r), (data, messages_of(r))
    assert web.rules.count() == 5  # the two egress rules of a new group, and the three above

    tcp = web.rules.get(protocol="tcp")
    r = client.post(f"/networks/security-groups/rules/{tcp.pk}/delete/", HTTP_HX_REQUEST="true")
    assert r["HX-Redirect"] == f"/networks/security-groups/{web.pk}/" and not web.rules.filter(pk=tcp.pk).exists()
    r = client.post(f"/networks/security-groups/{web.pk}/delete/", follow=True)
    assert "Security group web deleted." in messages_of(r) and not SecurityGroup.objects.filter(pk=web.pk).exists()


# --- topology --------------------------------------------------------------------------------


def test_topology_draws_networks_routers_instances_and_their_links(client, world, alpha):
    make_host()
    vm = instance_services.instance_create(user=world.member, project=world.project, name="vm1",
                                           flavor=world.flavor, image=world.image)
    ext, network, router = alpha["ext"], alpha["network"], alpha["router"]
    client.force_login(world.member)
    page = text(client.get("/networks/topology/"))
    assert 'hx-get="/networks/topology/picture/"' in page
    svg = text(client.get("/networks/topology/picture/"))
    assert svg.strip().startswith("<svg") and svg.strip().endswith("</svg>")
    for kind, obj, name in (("network", ext, "public"), ("network", network, "alpha-net"),
                            ("router", router, "alpha-router"), ("instance", vm, "vm1")):
        assert f'data-kind="{kind}" data-id="{obj.pk}" data-name="{name}"' in svg
    links = dict(re.findall(r'data-link="([^"]+)" data-kind="(\w+)"', svg))
    assert links == {
        f"router:{router.pk}>network:{ext.pk}": "gateway",
        f"router:{router.pk}>network:{network.pk}": "interface",
        f"instance:{vm.pk}>network:{network.pk}": "port",
    }
    assert ">10.0.0.1<" in svg  # the router's address on the network labels its link
    assert "beta" not in svg

    # The geometry: each link runs from its network's bar to its device's box, on the box's row.
    bars = {m[0]: int(m[1]) for m in re.findall(r'data-id="([^"]+)" data-name="[^"]*"[^>]*>\s*<a[^>]*>\s*<title>[^<]*'
                                                 r'</title>\s*<rect class="bar" x="(\d+)"', svg)}
    assert set(bars) == {str(ext.pk), str(network.pk)} and bars[str(ext.pk)] < bars[str(network.pk)]
    lines = re.findall(r'data-link="(\w+):([^>]+)>network:([^"]+)"[^>]*>\s*<title>[^<]*</title>\s*'
                       r'<line x1="(\d+)" y1="(\d+)" x2="(\d+)" y2="(\d+)"', svg)
    for _kind, _device, network_id, x1, y1, x2, y2 in lines:
        assert y1 == y2 and bars[network_id] + 7 in (int(x1), int(x2))


def test_topology_of_an_empty_project_says_so(client, world):
    client.force_login(world.outsider)
    assert 'data-testid="topology-empty"' in text(client.get("/networks/topology/picture/"))


def test_the_pages_read_a_fixed_number_of_queries_whatever_the_number_of_things(client, world, alpha):
    """No query per row: one more instance, router, network or floating IP costs no query."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    make_host()
    client.force_login(world.member)
    pages = ("/networks/", f"/networks/{alpha['network'].pk}/", "/networks/routers/", "/networks/floating-ips/",
             "/networks/security-groups/", "/networks/topology/picture/", f"/networks/routers/{alpha['router'].pk}/")

    def counts():
        found = {}
        for url in pages:
            with CaptureQueriesContext(connection) as queries:
                assert client.get(url).status_code == 200, url
            found[url] = len(queries)
        return found

    def add_one(i):
        network, subnet = private(world, name=f"extra{i}", cidr=f"10.{10 + i}.0.0/24")
        instance_services.instance_create(user=world.member, project=world.project, name=f"vm{i}",
                                          flavor=world.flavor, image=world.image,
                                          networks=[{"uuid": str(alpha["network"].pk)}, {"uuid": str(network.pk)}])
        router = services.router_create(user=world.member, project=world.project, name=f"r{i}",
                                        external_gateway_info={"network_id": str(alpha["ext"].pk)})
        services.router_interface_add(router=router, user=world.member, project=world.project, subnet_id=subnet.pk)
        second = services.subnet_create(user=world.member, project=world.project, network=network,
                                        cidr=f"10.{20 + i}.0.0/24")
        services.router_interface_add(router=alpha["router"], user=world.member, project=world.project,
                                      subnet_id=second.pk)
        services.floating_ip_create(user=world.member, project=world.project, floating_network_id=alpha["ext"].pk)
        services.security_group_create(user=world.member, project=world.project, name=f"g{i}")

    add_one(1)
    before = counts()
    add_one(2)
    add_one(3)
    assert counts() == before
