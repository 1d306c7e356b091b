"""Resync against the real kernel: it converges to the host's state, rebuilds what was deleted, and
removes this agent's leftovers (and nothing of another agent's on the same machine)."""

from __future__ import annotations

import dataclasses

from agents import names
from agents.network import linux, tasks
from agents.network.driver import LinuxNetworkDriver, reset_network_driver
from agents.specs import FloatingIPSpec, HostNetworkState, RouterSpec
from tests.agents.test_network_router import ext_address, external_network, host_ping, leg
from tests.agents.test_network_support import (  # noqa: F401 - fixtures
    compute_ports,
    dnsmasq_pid,
    driver,
    guests,
    link_info,
    make_network,
    net_config,
    new_id,
    sh,
    state_dir,
)


def build(driver, config, cidr: str):
    """A tenant network with a DHCP port and one bound port, and a router with a floating IP."""
    tenant = make_network(cidr, ports=1)
    external = external_network(config)
    (port,) = compute_ports(tenant)
    router = RouterSpec(id=new_id(), interfaces=[leg(tenant, cidr.replace("0/24", "1"))],
                        gateway=leg(external, ext_address(config, 10)), gateway_ip=str(config.external_cidr.ip),
                        floating_ips=[FloatingIPSpec(ext_address(config, 60), port.fixed_ips[0].ip_address)])
    state = HostNetworkState(networks=[tenant, external], ports=[port], routers=[router])
    return state, tenant, port, router


def snapshot(config, state, tenant, port, router):
    return {
        "pid": dnsmasq_pid(config, tenant.id),
        "tap": link_info(names.tap_name(port.id)),
        "bridge": link_info(names.bridge_name(tenant.id)),
        "leg": link_info(names.router_leg(router.interfaces[0].port_id), names.router_namespace(router.id)),
        "gateway": link_info(names.router_gateway(router.gateway.port_id), names.router_namespace(router.id)),
    }


def test_resync_is_idempotent_and_rebuilds_what_was_deleted(driver, guests, net_config):
    state, tenant, port, router = build(driver, net_config, "10.61.0.0/24")
    first = driver.resync(state)
    assert first == {"removed": [], "errors": []}
    before = snapshot(net_config, state, tenant, port, router)
    assert before["pid"] and before["tap"]["master"] == names.bridge_name(tenant.id)
    assert driver.resync(state) == {"removed": [], "errors": []}
    assert snapshot(net_config, state, tenant, port, router) == before

    # The agent dies; someone deletes its namespaces (dnsmasq with them) and bridges.
    for namespace in (names.dhcp_namespace(tenant.id), names.router_namespace(router.id)):
        linux.delete_namespace(namespace)
    for network in state.networks:
        sh(f"ip link del {names.bridge_name(network.id)}")
    assert dnsmasq_pid(net_config, tenant.id) is None and link_info(names.tap_name(port.id))["master"] is None

    # A new agent process (a new driver) resyncs through its task: everything is back.
    reset_network_driver(LinuxNetworkDriver(net_config, extensions=[]))
    try:
        result = tasks.resync(state.to_dict())
    finally:
        reset_network_driver()
    assert result["ok"] and result["errors"] == [] and result["kind"] == "host", result
    after = snapshot(net_config, state, tenant, port, router)
    assert after["pid"] and after["tap"]["index"] == before["tap"]["index"]  # the guest's tap survived
    assert after["tap"]["master"] == names.bridge_name(tenant.id)
    assert after["leg"]["addresses"] == before["leg"]["addresses"]
    assert after["gateway"]["addresses"] == before["gateway"]["addresses"]

    # A stand-in guest (a veth, since a tap passes nothing without its QEMU) gets DHCP, and its
    # floating IP answers the host again.
    guest = guests(names.bridge_name(tenant.id), port.mac_address)
    assert guest.dhcp()["ip"] == "10.61.0.11"
    assert host_ping(ext_address(net_config, 60))


def test_resync_removes_only_this_agents_leftovers(driver, net_config, state_dir):
    state, tenant, port, router = build(driver, net_config, "10.62.0.0/24")
    assert driver.resync(state)["errors"] == []
    # Another agent (another cloud on this machine) has a network here too.
    other_config = dataclasses.replace(net_config, owner=net_config.owner + "-other", state_dir=state_dir / "other")
    other = LinuxNetworkDriver(other_config, extensions=[])
    foreign = make_network("10.63.0.0/24", ports=0)
    other.network_sync(foreign)
    try:
        # A dnsmasq left behind without its namespace is a leftover too.
        stray = make_network("10.64.0.0/24", ports=0)
        driver.network_sync(stray)
        sh(f"ip netns del {names.dhcp_namespace(stray.id)}")

        kept = HostNetworkState(networks=[state.networks[1]])
        outcome = driver.resync(kept)
        assert outcome["errors"] == []
        assert set(outcome["removed"]) >= {
            names.dhcp_namespace(tenant.id), names.router_namespace(router.id), names.bridge_name(tenant.id),
            names.tap_name(port.id), names.bridge_name(stray.id),
        }
        for network in (tenant, stray):
            assert dnsmasq_pid(net_config, network.id) is None
            assert not (net_config.dhcp_dir / network.id).exists()
        assert not linux.namespace_exists(names.router_namespace(router.id))
        assert link_info(names.tap_name(port.id)) is None
        assert link_info(names.bridge_name(state.networks[1].id)) is not None  # still in the state

        # The other agent's network is untouched.
        assert dnsmasq_pid(other_config, foreign.id)
        assert linux.namespace_exists(names.dhcp_namespace(foreign.id))
        assert link_info(names.bridge_name(foreign.id)) is not None
    finally:
        assert other.resync(HostNetworkState())["errors"] == []
    assert not linux.namespace_exists(names.dhcp_namespace(foreign.id))
