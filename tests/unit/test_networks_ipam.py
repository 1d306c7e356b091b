"""The IPAM: pools and gateways, the lowest free address, release and reuse, a full subnet, fixed
addresses asked for, IPv6 (SLAAC's EUI-64 and DHCPv6-stateful), DHCP ports, overlapping CIDRs."""

import ipaddress

import pytest

from apps.networks import ipam, services
from apps.networks.models import IPAllocation, Port
from apps.networks.states import OWNER_DHCP
from cloudmgr.exceptions import ApplicationError

pytestmark = pytest.mark.django_db(transaction=True)


def error_type(exc_info) -> str:
    return getattr(exc_info.value, "neutron_type", "")


# --- arithmetic ------------------------------------------------------------------------------


def test_default_gateway_and_pools():
    net = ipam.parse_cidr("10.0.0.0/24")
    assert ipam.default_gateway(net) == "10.0.0.1"
    assert ipam.default_pools(net, "10.0.0.1") == [{"start": "10.0.0.2", "end": "10.0.0.254"}]
    # A gateway in the middle splits the pool; no gateway leaves every host address.
    assert ipam.default_pools(net, "10.0.0.100") == [{"start": "10.0.0.1", "end": "10.0.0.99"},
                                                     {"start": "10.0.0.101", "end": "10.0.0.254"}]
    assert ipam.default_pools(net, None) == [{"start": "10.0.0.1", "end": "10.0.0.254"}]
    v6 = ipam.parse_cidr("2001:db8::/64", ip_version=6)
    assert ipam.default_gateway(v6) == "2001:db8::1"
    assert ipam.default_pools(v6, "2001:db8::1") == [{"start": "2001:db8::2", "end": "2001:db8::ffff:ffff:ffff:ffff"}]
    assert ipam.pool_size(ipam.default_pools(ipam.parse_cidr("10.0.0.0/30"), "10.0.0.1")) == 1


def test_bad_cidrs_and_pools_are_refused_with_neutron_types():
    with pytest.raises(ApplicationError, match="isn't a recommended CIDR, '10.0.0.0/24' is recommended"):
        ipam.parse_cidr("10.0.0.5/24")
    with pytest.raises(ApplicationError, match="does not match ip_version 6"):
        ipam.parse_cidr("10.0.0.0/24", ip_version=6)
    net = ipam.parse_cidr("10.0.0.0/24")
    with pytest.raises(ApplicationError) as exc:
        ipam.clean_pools(net, [{"start": "10.0.0.2", "end": "10.0.1.9"}], "10.0.0.1")
    assert error_type(exc) == "OutOfBoundsAllocationPool"
    with pytest.raises(ApplicationError) as exc:
        ipam.clean_pools(net, [{"start": "10.0.0.2", "end": "10.0.0.20"}, {"start": "10.0.0.10", "end": "10.0.0.30"}],
                         "10.0.0.1")
    assert error_type(exc) == "OverlappingAllocationPools"
    with pytest.raises(ApplicationError) as exc:
        ipam.clean_pools(net, [{"start": "10.0.0.1", "end": "10.0.0.20"}], "10.0.0.1")
    assert error_type(exc) == "GatewayConflictWithAllocationPools" and exc.value.status_code == 409


def test_eui64_is_the_address_a_slaac_guest_makes():
    assert ipam.eui64(ipam.parse_cidr("2001:db8::/64"), "fa:16:3e:00:00:01") == "2001:db8::f816:3eff:fe00:1"


def test_free_addresses_skip_used_lowest_first():
    used = {int(ipaddress.ip_address(a)) for a in ("10.0.0.2", "10.0.0.3", "10.0.0.5")}
    free = ipam.free_addresses(4, [{"start": "10.0.0.2", "end": "10.0.0.6"}], used)
    assert list(free) == ["10.0.0.4", "10.0.0.6"]


# --- allocation ------------------------------------------------------------------------------


def make_network(world, project=None, cidr="10.0.0.0/24", **subnet):
    project = project or world.project
    network = services.network_create(user=world.member if project == world.project else world.outsider,
                                       project=project, name="net")
    owner = world.member if project == world.project else world.outsider
    sub = services.subnet_create(user=owner, project=project, network=network, cidr=cidr, **subnet)
    return network, sub


def port(world, network, **kwargs):
    return services.port_create(user=world.member, project=world.project, network=network, **kwargs)


def addresses(p: Port) -> list[str]:
    return [a.ip_address for a in p.fixed_ips.all()]


def test_ports_take_the_lowest_free_address_and_release_it(world):
    network, subnet = make_network(world)
    dhcp = Port.objects.get(network=network, device_owner=OWNER_DHCP)
    assert addresses(dhcp) == ["10.0.0.2"]  # the DHCP server's, first; the gateway .1 is never given
    a, b, c = (port(world, network) for _ in range(3))
    assert [addresses(p) for p in (a, b, c)] == [["10.0.0.3"], ["10.0.0.4"], ["10.0.0.5"]]
    services.port_delete(port=b, user=world.member, project=world.project)
    assert not IPAllocation.objects.filter(ip_address="10.0.0.4").exists()
    assert addresses(port(world, network)) == ["10.0.0.4"]  # released, then given again


def test_a_full_subnet_is_409_ip_address_generation_failure(world):
    network, subnet = make_network(world, cidr="10.0.0.0/29", enable_dhcp=False)  # .2 - .6: five addresses
    for _ in range(5):
        port(world, network)
    with pytest.raises(ApplicationError) as exc:
        port(world, network)
    assert exc.value.status_code == 409 and error_type(exc) == "IpAddressGenerationFailure"
    assert f"No more IP addresses available on network {network.pk}" in exc.value.message
    assert Port.objects.filter(network=network).count() == 5  # the failed port was not kept
    quota = world.project.quotas.get(resource="ports")
    assert quota.in_use == 5


def test_a_second_subnet_takes_over_when_the_first_is_full(world):
    network, first = make_network(world, cidr="10.0.0.0/30", enable_dhcp=False)  # one address: .2
    second = services.subnet_create(user=world.member, project=world.project, network=network, cidr="10.0.1.0/24",
                                    enable_dhcp=False)
    assert addresses(port(world, network)) == ["10.0.0.2"]
    p = port(world, network)
    assert [(a.subnet_id, a.ip_address) for a in p.fixed_ips.all()] == [(second.pk, "10.0.1.2")]


def test_fixed_addresses_asked_for(world):
    network, subnet = make_network(world)
    p = port(world, network, fixed_ips=[{"ip_address": "10.0.0.50"}])
    assert addresses(p) == ["10.0.0.50"]
    with pytest.raises(ApplicationError) as exc:
        port(world, network, fixed_ips=[{"subnet_id": str(subnet.pk), "ip_address": "10.0.0.50"}])
    assert exc.value.status_code == 409 and error_type(exc) == "IpAddressAlreadyAllocated"
    with pytest.raises(ApplicationError) as exc:
        port(world, network, fixed_ips=[{"ip_address": "10.9.9.9"}])
    assert exc.value.status_code == 400 and error_type(exc) == "InvalidIpForNetwork"
    with pytest.raises(ApplicationError) as exc:
        port(world, network, fixed_ips=[{"ip_address": "10.0.0.1"}])  # the gateway
    assert exc.value.status_code == 409
    # An address outside the pools but inside the subnet is fine when asked for (as Neutron).
    services.subnet_update(subnet=subnet, user=world.member, project=world.project,
                           changes={"allocation_pools": [{"start": "10.0.0.100", "end": "10.0.0.110"}]})
    assert addresses(port(world, network, fixed_ips=[{"ip_address": "10.0.0.20"}])) == ["10.0.0.20"]
    assert addresses(port(world, network)) == ["10.0.0.100"]


def test_changing_a_ports_fixed_ips_releases_the_old_address(world):
    network, subnet = make_network(world)
    p = port(world, network)
    services.port_update(port=p, user=world.member, project=world.project,
                         changes={"fixed_ips": [{"subnet_id": str(subnet.pk), "ip_address": "10.0.0.77"}]})
    assert addresses(Port.objects.get(pk=p.pk)) == ["10.0.0.77"]
    assert addresses(port(world, network)) == ["10.0.0.3"]


def test_overlapping_cidrs_across_projects_but_not_within_a_network(world):
    ours, _ = make_network(world, cidr="10.0.0.0/24")
    theirs, _ = make_network(world, project=world.other_project, cidr="10.0.0.0/24")
    a = port(world, ours)
    b = services.port_create(user=world.outsider, project=world.other_project, network=theirs)
    assert addresses(a) == addresses(b) == ["10.0.0.3"]  # the same address, on two networks
    with pytest.raises(ApplicationError, match="overlaps with another subnet"):
        services.subnet_create(user=world.member, project=world.project, network=ours, cidr="10.0.0.128/25")


def test_ipv6_slaac_ports_get_their_eui64_address_and_stateful_ports_a_pool_address(world):
    network = services.network_create(user=world.member, project=world.project, name="v6")
    slaac = services.subnet_create(user=world.member, project=world.project, network=network, ip_version=6,
                                   cidr="2001:db8:1::/64", ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    stateful = services.subnet_create(user=world.member, project=world.project, network=network, ip_version=6,
                                      cidr="2001:db8:2::/64", ipv6_ra_mode="dhcpv6-stateful",
                                      ipv6_address_mode="dhcpv6-stateful")
    p = port(world, network)
    got = {a.subnet_id: a.ip_address for a in p.fixed_ips.all()}
    assert got[slaac.pk] == ipam.eui64(ipam.parse_cidr(slaac.cidr), p.mac_address)
    assert got[stateful.pk] == "2001:db8:2::3"  # ::1 the gateway, ::2 the DHCP server
    with pytest.raises(ApplicationError, match="requires the prefix to be /64"):
        services.subnet_create(user=world.member, project=world.project, network=network, ip_version=6,
                               cidr="2001:db8:3::/80", ipv6_address_mode="slaac")
    with pytest.raises(ApplicationError, match="must be the same value"):
        services.subnet_create(user=world.member, project=world.project, network=network, ip_version=6,
                               cidr="2001:db8:4::/64", ipv6_ra_mode="slaac", ipv6_address_mode="dhcpv6-stateful")


def test_a_new_slaac_subnet_gives_existing_ports_their_address(world):
    network, _ = make_network(world)
    p = port(world, network)
    v6 = services.subnet_create(user=world.member, project=world.project, network=network, ip_version=6,
                                cidr="2001:db8::/64", ipv6_address_mode="slaac", ipv6_ra_mode="slaac")
    assert ipam.eui64(ipam.parse_cidr(v6.cidr), p.mac_address) in addresses(Port.objects.get(pk=p.pk))


def test_dhcp_port_follows_the_subnets_with_dhcp(world):
    network, subnet = make_network(world, enable_dhcp=False)
    assert not Port.objects.filter(network=network, device_owner=OWNER_DHCP).exists()
    services.subnet_update(subnet=subnet, user=world.member, project=world.project, changes={"enable_dhcp": True})
    dhcp = Port.objects.get(network=network, device_owner=OWNER_DHCP)
    assert addresses(dhcp) == ["10.0.0.2"] and not dhcp.security_groups.exists()
    assert world.project.quotas.get(resource="ports").in_use == 0  # the cloud's own port
    services.subnet_update(subnet=subnet, user=world.member, project=world.project, changes={"enable_dhcp": False})
    assert not Port.objects.filter(network=network, device_owner=OWNER_DHCP).exists()


def test_subnet_in_use_cannot_be_deleted_and_its_addresses_go_with_it(world):
    network, subnet = make_network(world)
    p = port(world, network)
    with pytest.raises(ApplicationError) as exc:
        services.subnet_delete(subnet=subnet, user=world.member, project=world.project)
    assert exc.value.status_code == 409 and error_type(exc) == "SubnetInUse"
    services.port_delete(port=p, user=world.member, project=world.project)
    services.subnet_delete(subnet=subnet, user=world.member, project=world.project)
    assert not IPAllocation.objects.filter(network=network).exists()
    assert not Port.objects.filter(network=network).exists()  # the DHCP port went too
