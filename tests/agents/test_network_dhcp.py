"""DHCP against the real kernel and dnsmasq: test namespaces on the network's bridge stand in for
guests and ask for leases with busybox udhcpc, as the test guest image does."""

from __future__ import annotations

import ipaddress

from agents import names
from agents.network import dhcp, linux
from tests.agents.test_network_support import (  # noqa: F401 - fixtures
    add_port,
    compute_ports,
    dnsmasq_pid,
    driver,
    guests,
    link_info,
    make_network,
    net_config,
    state_dir,
)


def test_each_guest_gets_exactly_its_address_and_they_reach_each_other(driver, guests, net_config):
    spec = make_network("10.31.0.0/24", mtu=1450, dns=("192.0.2.53", "192.0.2.54"),
                        host_routes=({"destination": "198.18.0.0/15", "nexthop": "10.31.0.254"},))
    assert driver.network_sync(spec) == {"bridge": names.bridge_name(spec.id), "dhcp": True}
    bridge = names.bridge_name(spec.id)
    one, two = compute_ports(spec)
    first, second = guests(bridge, one.mac_address), guests(bridge, two.mac_address)

    lease = first.dhcp()
    assert lease == {
        "ip": "10.31.0.11",
        "mask": "24",
        "router": "10.31.0.1",
        "dns": "192.0.2.53 192.0.2.54",
        "mtu": "1450",
        "hostname": "vm-1",
        "serverid": "10.31.0.2",
        # 169.254.169.254 via the DHCP port (metadata), the host route, and the default route.
        "staticroutes": "169.254.169.254/32 10.31.0.2 198.18.0.0/15 10.31.0.254 0.0.0.0/0 10.31.0.1",
    }
    assert second.dhcp()["ip"] == "10.31.0.12"
    assert first.ping("10.31.0.12") and second.ping("10.31.0.11")

    # A MAC the IPAM does not know gets nothing: no dynamic leases.
    stranger = guests(bridge)
    assert stranger.dhcp(tries=1) is None


def test_dhcp_namespace_holds_the_dhcp_port(driver, net_config):
    spec = make_network("10.32.0.0/24", ports=0)
    driver.network_sync(spec)
    namespace = names.dhcp_namespace(spec.id)
    inner = link_info(names.dhcp_device(spec.dhcp_port.id), namespace)
    assert inner["address"] == spec.dhcp_port.mac_address
    assert "10.32.0.2/24" in inner["addresses"] and inner["up"]
    outer = link_info(names.veth_peer(spec.dhcp_port.id))
    assert outer["master"] == names.bridge_name(spec.id) and outer["up"]
    assert not any(":" in a for a in outer["addresses"])  # IPv6 off on the host side
    assert linux.namespace_tag(namespace) == net_config.owner_tag


def test_ports_come_and_go_without_restarting_dnsmasq(driver, guests, net_config):
    spec = make_network("10.33.0.0/24", ports=1)
    driver.network_sync(spec)
    pid = dnsmasq_pid(net_config, spec.id)
    assert pid
    bridge = names.bridge_name(spec.id)
    (old,) = compute_ports(spec)
    old_guest = guests(bridge, old.mac_address)
    assert old_guest.dhcp()["ip"] == "10.33.0.11"

    # A new port: served at once, by the same process.
    new = add_port(spec, "10.33.0.20")
    driver.network_sync(spec)
    assert guests(bridge, new.mac_address).dhcp()["ip"] == "10.33.0.20"

    # The old port goes and its address is reused for another MAC: the old lease is released, so
    # the new owner gets it (dnsmasq would otherwise say "leased to another client").
    spec.ports.remove(old)
    reused = add_port(spec, "10.33.0.11")
    driver.network_sync(spec)
    assert guests(bridge, reused.mac_address).dhcp()["ip"] == "10.33.0.11"
    assert old_guest.dhcp(tries=1) is None  # and the old MAC gets nothing any more

    assert dnsmasq_pid(net_config, spec.id) == pid


def test_repeated_syncs_change_nothing(driver, net_config):
    spec = make_network("10.34.0.0/24")
    driver.network_sync(spec)
    directory = net_config.dhcp_dir / spec.id
    before = {
        "pid": dnsmasq_pid(net_config, spec.id),
        "bridge": link_info(names.bridge_name(spec.id)),
        "peer": link_info(names.veth_peer(spec.dhcp_port.id)),
        "files": {p.name: p.stat().st_mtime_ns for p in directory.iterdir() if p.name != "log"},
    }
    for _ in range(2):
        driver.network_sync(spec)
    after = {
        "pid": dnsmasq_pid(net_config, spec.id),
        "bridge": link_info(names.bridge_name(spec.id)),
        "peer": link_info(names.veth_peer(spec.dhcp_port.id)),
        "files": {p.name: p.stat().st_mtime_ns for p in directory.iterdir() if p.name != "log"},
    }
    assert after == before


def test_subnet_changes_restart_and_dhcp_off_removes_the_namespace(driver, guests, net_config):
    spec = make_network("10.35.0.0/24", ports=1)
    driver.network_sync(spec)
    pid = dnsmasq_pid(net_config, spec.id)

    # A second subnet is a new --dhcp-range: dnsmasq restarts and serves both.
    from agents.specs import FixedIPSpec, SubnetSpec

    second = SubnetSpec(id="s2-" + spec.id[:8], cidr="10.36.0.0/24", gateway_ip="10.36.0.1")
    spec.subnets.append(second)
    spec.dhcp_port.fixed_ips.append(FixedIPSpec(second.id, "10.36.0.2"))
    port = add_port(spec, "10.35.0.40")
    port.fixed_ips = [FixedIPSpec(second.id, "10.36.0.40")]
    driver.network_sync(spec)
    assert dnsmasq_pid(net_config, spec.id) not in (None, pid)
    lease = guests(names.bridge_name(spec.id), port.mac_address).dhcp()
    assert (lease["ip"], lease["router"], lease["serverid"]) == ("10.36.0.40", "10.36.0.1", "10.36.0.2")

    # DHCP off everywhere: no dnsmasq; no DHCP port: no namespace either.
    for subnet in spec.subnets:
        subnet.enable_dhcp = False
    driver.network_sync(spec)
    assert dnsmasq_pid(net_config, spec.id) is None
    assert linux.namespace_exists(names.dhcp_namespace(spec.id))
    spec.dhcp_port = None
    assert driver.network_sync(spec)["dhcp"] is False
    assert not linux.namespace_exists(names.dhcp_namespace(spec.id))
    assert link_info(names.bridge_name(spec.id)) is not None


def test_render_without_gateway_dns_or_metadata():
    """No gateway and no DNS servers: the options are sent empty, so dnsmasq does not offer
    itself instead; no metadata and no host routes: no classless routes at all."""
    spec = make_network("10.37.0.0/24", ports=1, metadata=False, dns=())
    spec.subnets[0].gateway_ip = None
    config = dhcp.render(spec)
    tag = f"tag:subnet-{spec.subnets[0].id}"
    assert config.opts.splitlines() == [f"{tag},option:router", f"{tag},option:dns-server", f"{tag},option:mtu,1500"]
    (port,) = compute_ports(spec)
    assert config.hosts == f"{port.mac_address},10.37.0.11,vm-1\n"
    assert config.ranges == (f"set:subnet-{spec.subnets[0].id},10.37.0.0,static,255.255.255.0,86400s",)


def test_render_ipv6_and_hostnames():
    spec = make_network("10.38.0.0/24", ports=0)
    from agents.specs import FixedIPSpec, SubnetSpec

    stateful = SubnetSpec(id="v6a", cidr="2001:db8:1::/64", ip_version=6, ipv6_address_mode="dhcpv6-stateful",
                          dns_nameservers=["2001:db8::53"])
    slaac = SubnetSpec(id="v6b", cidr="2001:db8:2::/64", ip_version=6, ipv6_address_mode="slaac")
    spec.subnets += [stateful, slaac]
    spec.dhcp_port.fixed_ips += [FixedIPSpec("v6a", "2001:db8:1::2"), FixedIPSpec("v6b", "2001:db8:2::2")]
    port = add_port(spec, "10.38.0.11", hostname="Web Server_1!")
    port.fixed_ips += [FixedIPSpec("v6a", "2001:db8:1::11"), FixedIPSpec("v6b", "2001:db8:2::11")]
    v6_only = add_port(spec, "10.38.0.12")
    v6_only.fixed_ips = [FixedIPSpec("v6a", "2001:db8:1::12")]

    config = dhcp.render(spec)
    assert sorted(config.hosts.splitlines()) == sorted([
        f"{port.mac_address},10.38.0.11,[2001:db8:1::11],web-server-1",
        f"{v6_only.mac_address},[2001:db8:1::12],host-2001-db8-1-12",
    ])
    # The SLAAC subnet needs no DHCP server; the stateful one gets a static range and DNS servers.
    assert config.ranges[1:] == ("set:subnet-v6a,2001:db8:1::,static,64,86400s",)
    assert "tag:subnet-v6a,option6:dns-server,[2001:db8::53]" in config.opts.splitlines()
    assert config.leases() == {(port.mac_address, "10.38.0.11")}
    assert ipaddress.ip_interface("2001:db8:2::2/64") in dhcp.dhcp_addresses(spec).values()


def test_dhcp_port_made_again_is_served_again(driver, guests, net_config):
    """Its veth pair deleted (by hand, or half torn down): the next sync makes it again, and
    restarts dnsmasq, whose DHCP socket was bound to the device that went."""
    spec = make_network("10.39.0.0/24", ports=1)
    driver.network_sync(spec)
    pid = dnsmasq_pid(net_config, spec.id)
    with linux.iproute() as ipr:
        linux.delete_link(ipr, names.veth_peer(spec.dhcp_port.id))
    driver.network_sync(spec)
    assert dnsmasq_pid(net_config, spec.id) not in (None, pid)
    (port,) = compute_ports(spec)
    assert guests(names.bridge_name(spec.id), port.mac_address).dhcp()["ip"] == "10.39.0.11"
