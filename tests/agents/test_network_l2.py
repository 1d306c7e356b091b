"""Bridges, taps and uplinks against the real kernel."""

from __future__ import annotations

import pytest

from agents import names
from agents.network import NetworkError, l2, linux
from agents.specs import NetworkSpec, NicSpec, PortSpec
from tests.agents.test_network_support import (  # noqa: F401 - fixtures
    driver,
    ipv6_disabled,
    link_info,
    make_network,
    net_config,
    new_id,
    random_mac,
    sh,
    state_dir,
)


def test_port_tap_is_on_its_bridge_with_ipv6_off(driver, net_config):
    spec = make_network("10.51.0.0/24", ports=1, dhcp=False, mtu=1450)
    driver.network_sync(spec)
    bridge = names.bridge_name(spec.id)
    assert ipv6_disabled(bridge)
    assert link_info(bridge)["addresses"] == []  # no link-local address: it never came up with IPv6
    port = spec.ports[0]

    assert driver.port_sync(port) == {"device": names.tap_name(port.id)}
    tap = link_info(names.tap_name(port.id))
    assert tap["kind"] == "tun" and tap["master"] == bridge and tap["mtu"] == 1450 and tap["up"]
    assert ipv6_disabled(names.tap_name(port.id)) and tap["addresses"] == []
    assert tap["alias"] == net_config.owner_tag
    # The host side never carries the guest's MAC (the bridge would take the guest's frames as its own).
    assert tap["address"] == "fe" + port.mac_address[2:]

    driver.port_sync(port)
    assert link_info(names.tap_name(port.id)) == tap  # repeated: the same device, unchanged

    driver.port_delete(port.id, spec.id)
    assert link_info(names.tap_name(port.id)) is None
    driver.port_delete(port.id, spec.id)  # a missing tap is fine


def test_router_and_dhcp_ports_get_no_tap(driver):
    port = PortSpec(id=new_id(), network_id=new_id(), mac_address=random_mac(), device_owner="network:router_interface")
    assert driver.port_sync(port) == {"device": None}
    assert link_info(names.tap_name(port.id)) is None


def test_port_plugged_before_its_network_gets_the_bridge_made(driver):
    """The compute spawn path may run before the network's sync (the agent runs tasks in parallel)."""
    network_id, port_id = new_id(), new_id()
    driver.plug_nics([NicSpec(port_id=port_id, mac_address=random_mac(), bridge=names.bridge_name(network_id),
                              mtu=1400)])
    tap = link_info(names.tap_name(port_id))
    assert tap["master"] == names.bridge_name(network_id) and tap["mtu"] == 1400
    assert ipv6_disabled(names.bridge_name(network_id))
    # The network's sync then adopts the bridge as it is.
    driver.network_sync(NetworkSpec(id=network_id, mtu=1400))
    assert link_info(names.tap_name(port_id))["index"] == tap["index"]


def test_nic_on_a_foreign_bridge_that_does_not_exist_is_refused(driver):
    nic = NicSpec(port_id=new_id(), mac_address=random_mac(), bridge="br-nonexist0")
    with pytest.raises(NetworkError, match="bridge br-nonexist0 does not exist"):
        driver.plug_nics([nic])
    assert link_info(names.tap_name(nic.port_id)) is None


def test_flat_network_uplinks_to_the_external_bridge(driver, net_config):
    spec = NetworkSpec(id=new_id(), network_type="flat", physical_network="public")
    driver.network_sync(spec)
    inner, outer = l2.uplink_names(spec.id)
    assert link_info(inner)["master"] == names.bridge_name(spec.id)
    assert link_info(outer)["master"] == net_config.external_bridge
    assert ipv6_disabled(inner) and ipv6_disabled(outer)
    external = link_info(net_config.external_bridge)
    assert str(net_config.external_cidr) in external["addresses"] and external["up"]
    assert external["alias"] is None  # the host's bridge is not the agent's to remove
    assert open("/proc/sys/net/ipv4/ip_forward").read().strip() == "1"
    table = sh(f"nft list table ip {l2.external_table(net_config.external_bridge)}").stdout
    assert f"ip saddr {net_config.external_cidr.network}" in table and "masquerade" in table

    # A broken uplink (one end gone) is made again; deleting the network removes both ends.
    sh(f"ip link del {outer}")
    driver.network_sync(spec)
    assert link_info(outer)["master"] == net_config.external_bridge
    driver.network_delete(spec.id)
    assert link_info(inner) is None and link_info(outer) is None and link_info(names.bridge_name(spec.id)) is None
    assert link_info(net_config.external_bridge) is not None
    driver.network_delete(spec.id)


def test_ids_that_are_not_safe_names_are_refused(driver):
    with pytest.raises(NetworkError, match="invalid id"):
        driver.network_delete("../../etc")
    with pytest.raises(NetworkError, match="invalid id"):
        driver.network_sync(NetworkSpec(id="a/b"))


def test_a_namespace_socket_sees_that_namespace_and_leaves_the_caller_where_it_was():
    namespace, bridge = f"cmt-{new_id()[:8]}", f"cmb{new_id()[:8]}"
    sh(f"ip netns add {namespace}")
    try:
        sh(f"ip -n {namespace} link add {bridge} type bridge")
        for _ in range(2):  # the second socket proves the first did not move this thread
            with linux.iproute(namespace) as nsr:
                assert linux.link(nsr, bridge) is not None
                assert sorted(linux.link_names(nsr)) == sorted(["lo", bridge])
            with linux.iproute() as ipr:
                assert linux.link(ipr, bridge) is None
    finally:
        sh(f"ip netns delete {namespace}")
    with pytest.raises(NetworkError, match="does not exist"):
        with linux.iproute(namespace):
            pass


def test_nft_runs_a_script_in_the_namespace_it_is_given():
    namespace, table = f"cmt-{new_id()[:8]}", f"cmt_{new_id()[:8]}"
    sh(f"ip netns add {namespace}")
    try:
        linux.nft(f"table inet {table} {{\n  chain c {{\n  }}\n}}\n", namespace=namespace)
        assert f"table inet {table}" in sh(f"ip netns exec {namespace} nft list tables").stdout
        assert f"table inet {table}" not in sh("nft list tables").stdout
        listed = linux.nft(f"list table inet {table}", namespace=namespace, json_output=True)
        assert '"name": "c"' in listed
        with pytest.raises(NetworkError, match="nft failed: Error: syntax error"):
            linux.nft(f"add rule inet {table} c no such rule\n", namespace=namespace)
    finally:
        sh(f"ip netns delete {namespace}")
    with pytest.raises(NetworkError, match="No such file or directory"):
        linux.nft(f"list table inet {table}")
    with pytest.raises(NetworkError, match=f"network namespace {namespace} does not exist"):
        linux.nft(f"list table inet {table}", namespace=namespace)
