"""Routers against the real kernel: namespaces, legs, SNAT, floating IPs and the external bridge
of a single box, with test namespaces standing in for guests and for the world beyond the host."""

from __future__ import annotations

import secrets
import subprocess
import time

import pytest

from agents import names
from agents.network import NetworkError, linux, router
from agents.network.l2 import external_table, uplink_names
from agents.specs import FloatingIPSpec, NetworkSpec, RouterInterfaceSpec, RouterSpec, SubnetSpec
from tests.agents.test_network_support import (  # noqa: F401 - fixtures
    compute_ports,
    driver,
    guests,
    ipv6_disabled,
    link_info,
    make_network,
    net_config,
    new_id,
    random_mac,
    sh,
    state_dir,
)


def external_network(config) -> NetworkSpec:
    """The external network as the control plane describes it: flat, on physical network public."""
    cidr = config.external_cidr
    return NetworkSpec(id=new_id(), network_type="flat", physical_network="public", subnets=[
        SubnetSpec(id=new_id(), cidr=str(cidr.network), gateway_ip=str(cidr.ip), enable_dhcp=False)])


def leg(network: NetworkSpec, address: str) -> RouterInterfaceSpec:
    return RouterInterfaceSpec(port_id=new_id(), network_id=network.id, mac_address=random_mac(), ip_address=address,
                               cidr=network.subnets[0].cidr, network=network)


def ext_address(config, host: int) -> str:
    return str(config.external_cidr.network[host])


@pytest.fixture
def topology(driver, guests, net_config):
    """A tenant network with one guest (DHCP), a router on it with a gateway on the external network."""
    tenant = make_network("10.41.0.0/24", ports=1)
    external = external_network(net_config)
    driver.network_sync(tenant)
    driver.network_sync(external)
    spec = RouterSpec(id=new_id(), interfaces=[leg(tenant, "10.41.0.1")],
                      gateway=leg(external, ext_address(net_config, 10)), gateway_ip=str(net_config.external_cidr.ip))
    driver.router_sync(spec)
    (port,) = compute_ports(tenant)
    guest = guests(names.bridge_name(tenant.id), port.mac_address)
    assert guest.dhcp()["ip"] == "10.41.0.11"
    return tenant, external, spec, guest


def host_ping(address: str) -> bool:
    return sh(f"ping -n -c 1 -W 1 {address}", check=False).returncode == 0


def test_router_snat_gives_guests_the_outside(topology, net_config, driver):
    tenant, external, spec, guest = topology
    host = str(net_config.external_cidr.ip)
    # The host has no route to 10.41.0.0/24: its answer can only come back through the SNAT.
    assert guest.ping(host)
    spec.enable_snat = False
    driver.router_sync(spec)
    assert not guest.ping(host)


def test_floating_ip_answers_the_host_until_disassociated(topology, net_config, driver):
    tenant, external, spec, guest = topology
    floating, host = ext_address(net_config, 50), str(net_config.external_cidr.ip)
    assert not host_ping(floating)
    spec.floating_ips = [FloatingIPSpec(floating_ip_address=floating, fixed_ip_address="10.41.0.11")]
    driver.router_sync(spec)
    assert host_ping(floating)
    # The guest's own traffic leaves with its floating IP, not the router's address.
    assert guest.ping(host)
    assert f"src={floating} dst={host} type=8" in sh("cat /proc/net/nf_conntrack").stdout

    # A ping running while the floating IP goes is not answered any more: its NATed flow is
    # forgotten with the address, not left to live until it times out.
    pinger = subprocess.Popen(["ping", "-D", "-n", "-i", "0.2", "-w", "4", floating], stdout=subprocess.PIPE,
                              text=True)
    try:
        time.sleep(1)
        spec.floating_ips = []
        driver.router_sync(spec)
        disassociated = time.time()
        out, _ = pinger.communicate(timeout=10)
    finally:
        pinger.kill()
    answered = [float(line[1:].split("]")[0]) for line in out.splitlines() if "bytes from" in line]
    assert answered, out
    assert max(answered) < disassociated + 0.3, out
    assert not host_ping(floating)
    gateway = link_info(names.router_gateway(spec.gateway.port_id), names.router_namespace(spec.id))
    assert f"{floating}/32" not in gateway["addresses"]


def test_host_routes_and_masquerades_the_external_network(topology, net_config):
    """A namespace beyond the host (the world) answers the guest: the router SNATs to its gateway
    address, the host forwards and masquerades to its own address on the world's link."""
    tenant, external, spec, guest = topology
    suffix = secrets.token_hex(3)
    world, host_end = f"tworld-{suffix}", f"tw{suffix}"
    sh(f"ip netns add {world}")
    try:
        sh(f"ip link add {host_end} type veth peer name eth0 netns {world}")
        sh(f"ip addr add 198.51.100.1/30 dev {host_end} && ip link set {host_end} up")
        sh(f"ip -n {world} addr add 198.51.100.2/30 dev eth0 && ip -n {world} link set eth0 up")
        assert guest.ping("198.51.100.2")
        assert external_table(net_config.external_bridge) in sh("nft list tables").stdout
    finally:
        sh(f"ip link del {host_end}", check=False)
        sh(f"ip netns del {world}", check=False)


def test_router_namespace_legs_routes_and_nat(topology, net_config, driver):
    tenant, external, spec, guest = topology
    namespace = names.router_namespace(spec.id)
    assert linux.namespace_tag(namespace) == net_config.owner_tag
    leg_name, peer_name = names.router_leg(spec.interfaces[0].port_id), names.veth_peer(spec.interfaces[0].port_id)
    inner = link_info(leg_name, namespace)
    assert inner["address"] == spec.interfaces[0].mac_address and "10.41.0.1/24" in inner["addresses"]
    peer = link_info(peer_name)
    assert peer["master"] == names.bridge_name(tenant.id) and ipv6_disabled(peer_name)
    # The external network's bridge uplinks to the host's external bridge.
    up, ph = uplink_names(external.id)
    assert link_info(up)["master"] == names.bridge_name(external.id)
    assert link_info(ph)["master"] == net_config.external_bridge
    assert str(net_config.external_cidr) in link_info(net_config.external_bridge)["addresses"]

    spec.routes = [{"destination": "172.31.0.0/16", "nexthop": "10.41.0.11"}]
    driver.router_sync(spec)
    routes = sh(f"ip -n {namespace} route show proto static").stdout
    assert f"default via {net_config.external_cidr.ip}" in routes and "172.31.0.0/16 via 10.41.0.11" in routes
    nat = sh(f"ip netns exec {namespace} nft list table ip {router.NAT_TABLE}").stdout
    assert f'oifname "{names.router_gateway(spec.gateway.port_id)}" snat to {spec.gateway.ip_address}' in nat

    # Idempotent: a repeated sync keeps every device (same indexes) and the same routes and rules.
    def snapshot():
        return (link_info(leg_name, namespace)["index"], link_info(peer_name)["index"],
                sh(f"ip -n {namespace} route show").stdout,
                sh(f"ip netns exec {namespace} nft list table ip {router.NAT_TABLE}").stdout)

    before = snapshot()
    driver.router_sync(spec)
    assert snapshot() == before

    # Route removed, leg detached (its bridge end goes too), no gateway: no NAT table, no routes.
    spec.routes, spec.interfaces, spec.gateway = [], [], None
    driver.router_sync(spec)
    assert link_info(leg_name, namespace) is None and link_info(peer_name) is None
    assert sh(f"ip -n {namespace} route show proto static").stdout.strip() == ""
    assert router.NAT_TABLE not in sh(f"ip netns exec {namespace} nft list tables").stdout
    assert not guest.ping("10.41.0.1")

    driver.router_delete(spec.id)
    driver.router_delete(spec.id)  # a missing router is fine
    assert not linux.namespace_exists(namespace)


def test_unmapped_physical_network_is_refused(driver):
    spec = NetworkSpec(id=new_id(), network_type="flat", physical_network="datacentre")
    with pytest.raises(NetworkError, match="physical network 'datacentre'.*not mapped"):
        driver.network_sync(spec)


def test_render_nat_pairs_each_floating_ip():
    spec = RouterSpec(id="r", gateway=RouterInterfaceSpec(port_id="gw", network_id="ext", mac_address="fa:16:3e:0:0:1",
                                                          ip_address="203.0.113.10", cidr="203.0.113.0/24"),
                      enable_snat=False,
                      floating_ips=[FloatingIPSpec("203.0.113.50", "10.0.0.5")])
    nat = router.render_nat(spec)
    gateway = names.router_gateway("gw")
    assert "ip daddr 203.0.113.50 dnat to 10.0.0.5" in nat
    assert f'oifname "{gateway}" ip saddr 10.0.0.5 snat to 203.0.113.50' in nat
    assert "snat to 203.0.113.10" not in nat  # SNAT off: only the floating IP's pair
    spec.floating_ips = []
    assert router.render_nat(spec) is None
