"""Administrative state, MTU changes and gratuitous ARP against the real kernel.

The "guest" of a port is this test itself: it opens the agent's tap the way QEMU does (TUNSETIFF
on /dev/net/tun) and reads and writes Ethernet frames on it. Neighbours on a bridge are test
namespaces (``guests``) whose frames are captured with a raw AF_PACKET socket.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import select
import socket
import struct
import time
from dataclasses import replace

import pytest
from pyroute2 import netns

from agents import names
from agents.network import linux, router
from agents.specs import FloatingIPSpec, NicSpec, RouterSpec
from tests.agents.test_network_router import ext_address, external_network, leg
from tests.agents.test_network_support import (  # noqa: F401 - fixtures
    compute_ports,
    dnsmasq_pid,
    driver,
    guests,
    link_info,
    make_network,
    net_config,
    new_id,
    random_mac,
    sh,
    state_dir,
    wait_until,
)

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def arp_frame(op: int, src_mac: str, src_ip: str, dst_ip: str, dst_mac: bytes = BROADCAST) -> bytes:
    """An Ethernet frame carrying an ARP request (op 1) or reply (op 2)."""
    target_hw = bytes(6) if op == 1 else dst_mac
    return (dst_mac + mac_bytes(src_mac) + struct.pack("!H", ETH_P_ARP)
            + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac_bytes(src_mac) + socket.inet_aton(src_ip)
            + target_hw + socket.inet_aton(dst_ip))


def parse_arp(frame: bytes) -> dict | None:
    if len(frame) < 42 or frame[12:14] != struct.pack("!H", ETH_P_ARP):
        return None
    op = struct.unpack("!H", frame[20:22])[0]
    return {"dst": frame[0:6], "op": op, "sha": frame[22:28].hex(":"), "spa": socket.inet_ntoa(frame[28:32]),
            "tpa": socket.inet_ntoa(frame[38:42])}


def frames(fd_or_sock, timeout: float, until=None) -> list[dict]:
    """The ARP frames read within ``timeout`` seconds (or until ``until(arps)`` is true)."""
    arps: list[dict] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd_or_sock], [], [], left)
        if not ready:
            break
        data = os.read(fd_or_sock, 2048) if isinstance(fd_or_sock, int) else fd_or_sock.recv(2048)
        arp = parse_arp(data)
        if arp is not None:
            arps.append(arp)
            if until is not None and until(arps):
                break
    return arps


@contextlib.contextmanager
def attached(tap: str):
    """The tap opened the way QEMU opens it (a persistent tap made by the agent, no packet info)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", tap.encode(), IFF_TAP | IFF_NO_PI))
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def capture(namespace: str, interface: str = "eth0"):
    """A raw socket receiving every ARP frame of ``interface`` in ``namespace``."""
    sock = netns.create_socket(namespace, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP), flags=0)
    try:
        sock.bind((interface, ETH_P_ARP))
        yield sock
    finally:
        sock.close()


def drain(fd_or_sock) -> None:
    frames(fd_or_sock, 0.05)


# --- admin_state_up ---------------------------------------------------------------------------


def test_admin_down_port_keeps_its_tap_link_down_and_no_frame_passes(driver, guests):
    spec = make_network("10.61.0.0/24", ports=1, dhcp=False)
    driver.network_sync(spec)
    (port,) = compute_ports(spec)
    tap = names.tap_name(port.id)
    guest_ip, peer_ip = "10.61.0.11", "10.61.0.5"
    peer = guests(names.bridge_name(spec.id))
    peer.address(f"{peer_ip}/24")

    def exchange(fd) -> bool:
        """The tap's guest asks for the peer's MAC: a reply proves frames pass both ways."""
        drain(fd)
        with contextlib.suppress(OSError):  # a tap that is down may refuse the write
            os.write(fd, arp_frame(1, port.mac_address, guest_ip, peer_ip))
        return any(a["op"] == 2 and a["spa"] == peer_ip and a["tpa"] == guest_ip
                   for a in frames(fd, 3, until=lambda arps: any(a["op"] == 2 for a in arps)))

    driver.port_sync(port)
    with attached(tap) as fd:
        assert link_info(tap)["up"]
        assert exchange(fd)

        down = replace(port, admin_state_up=False)
        assert driver.port_sync(down) == {"device": tap}
        info = link_info(tap)
        assert not info["up"] and info["master"] == names.bridge_name(spec.id)  # still plugged, link-down
        assert not exchange(fd)
        # Neither way: what the guest sends never reaches the peer, and the peer's broadcasts never
        # reach the guest.
        with capture(peer.namespace) as sniffer:
            drain(sniffer)
            with contextlib.suppress(OSError):
                os.write(fd, arp_frame(1, port.mac_address, guest_ip, "10.61.0.99"))
            assert not [a for a in frames(sniffer, 1.5) if a["spa"] == guest_ip]
        drain(fd)
        peer.run("arping -c 1 -w 1 -I eth0 10.61.0.98", check=False)
        assert not [a for a in frames(fd, 0.5) if a["spa"] == peer_ip]
        driver.port_sync(down)  # repeated: still down
        assert not link_info(tap)["up"]

        assert driver.port_sync(port) == {"device": tap}  # admin_state_up back to true
        assert link_info(tap)["up"] and link_info(tap)["index"] == info["index"]  # the same tap, up again
        assert wait_until(lambda: exchange(fd), timeout=15, interval=0.2)


def test_spawn_path_plugs_an_admin_down_nic_link_down(driver):
    network_id, port_id = new_id(), new_id()
    nic = NicSpec(port_id=port_id, mac_address=random_mac(), bridge=names.bridge_name(network_id), mtu=1450,
                  admin_state_up=False)
    driver.plug_nics([nic])
    tap = link_info(names.tap_name(port_id))
    assert tap["master"] == names.bridge_name(network_id) and tap["mtu"] == 1450 and not tap["up"]
    driver.plug_nics([replace(nic, admin_state_up=True)])
    assert link_info(names.tap_name(port_id))["up"]


# --- MTU --------------------------------------------------------------------------------------


def test_an_mtu_change_reaches_every_existing_link_of_the_network_and_its_dhcp(driver, guests, net_config):
    spec = make_network("10.62.0.0/24", ports=1, mtu=1450)
    (port,) = compute_ports(spec)
    tenant_leg = leg(spec, "10.62.0.1")
    router_spec = RouterSpec(id=new_id(), interfaces=[tenant_leg])
    driver.network_sync(spec)
    driver.port_sync(port)
    driver.router_sync(router_spec)
    dhcp_ns, router_ns = names.dhcp_namespace(spec.id), names.router_namespace(router_spec.id)
    links = {  # (name, namespace) of every link of the network
        "bridge": (names.bridge_name(spec.id), None),
        "tap": (names.tap_name(port.id), None),
        "dhcp bridge end": (names.veth_peer(spec.dhcp_port.id), None),
        "dhcp namespace end": (names.dhcp_device(spec.dhcp_port.id), dhcp_ns),
        "router bridge end": (names.veth_peer(tenant_leg.port_id), None),
        "router leg": (names.router_leg(tenant_leg.port_id), router_ns),
    }
    before = {what: link_info(*where) for what, where in links.items()}
    assert {what: info["mtu"] for what, info in before.items()} == dict.fromkeys(links, 1450)
    guest = guests(names.bridge_name(spec.id), port.mac_address)
    assert guest.dhcp()["mtu"] == "1450"
    server = dnsmasq_pid(net_config, spec.id)

    for mtu in (1400, 1500):  # down, then up past the old value
        spec.mtu = port.mtu = mtu  # the leg's network is the same spec
        driver.network_sync(spec)
        driver.port_sync(port)
        driver.router_sync(router_spec)
        after = {what: link_info(*where) for what, where in links.items()}
        assert {what: info["mtu"] for what, info in after.items()} == dict.fromkeys(links, mtu)
        # The same links, changed in place (a guest's tap is never made again under it).
        assert {what: info["index"] for what, info in after.items()} == \
            {what: info["index"] for what, info in before.items()}
        assert all(info["up"] for info in after.values())
        # dnsmasq reread its options (no restart) and offers the new MTU (option 26).
        assert dnsmasq_pid(net_config, spec.id) == server
        assert f"option:mtu,{mtu}" in (net_config.dhcp_dir / spec.id / "opts").read_text()
        assert guest.dhcp()["mtu"] == str(mtu)


def test_the_plug_path_sets_the_mtu_of_an_existing_tap(driver):
    network_id, port_id = new_id(), new_id()
    nic = NicSpec(port_id=port_id, mac_address=random_mac(), bridge=names.bridge_name(network_id), mtu=1450)
    driver.plug_nics([nic])
    driver.plug_nics([replace(nic, mtu=1300)])
    assert link_info(names.tap_name(port_id))["mtu"] == 1300
    assert link_info(names.bridge_name(network_id))["mtu"] == 1300


# --- gratuitous ARP ---------------------------------------------------------------------------


@pytest.fixture
def external(driver, guests, net_config):
    """The external network with a neighbour on it (a namespace on the external bridge)."""
    spec = external_network(net_config)
    driver.network_sync(spec)
    neighbour = guests(net_config.external_bridge)
    neighbour.address(f"{ext_address(net_config, 200)}/24")
    return spec, neighbour


def announcements(arps: list[dict], mac: str) -> dict[str, int]:
    """Gratuitous ARP requests from ``mac`` (sender = target address, broadcast): address -> count."""
    counts: dict[str, int] = {}
    for a in arps:
        if a["op"] == 1 and a["spa"] == a["tpa"] and a["sha"] == mac and a["dst"] == BROADCAST:
            counts[a["spa"]] = counts.get(a["spa"], 0) + 1
    return counts


def test_new_gateway_and_floating_addresses_are_announced_once(driver, external, net_config):
    ext_spec, neighbour = external
    tenant = make_network("10.63.0.0/24", ports=0, dhcp=False)
    driver.network_sync(tenant)
    gateway = leg(ext_spec, ext_address(net_config, 10))
    spec = RouterSpec(id=new_id(), interfaces=[leg(tenant, "10.63.0.1")], gateway=gateway,
                      gateway_ip=str(net_config.external_cidr.ip))
    fip1, fip2 = ext_address(net_config, 21), ext_address(net_config, 22)

    with capture(neighbour.namespace) as sniffer:
        drain(sniffer)
        driver.router_sync(spec)  # the gateway's own address is new
        seen = announcements(frames(sniffer, 10, until=lambda arps: announcements(arps, gateway.mac_address).get(
            gateway.ip_address, 0) >= router.GARP_COUNT), gateway.mac_address)
        assert seen == {gateway.ip_address: router.GARP_COUNT}

        # The neighbour has a stale, wrong entry for the floating IP (a former owner): the
        # announcement corrects it without the neighbour asking.
        neighbour.run(f"ip neigh replace {fip1} lladdr 02:00:00:00:00:01 dev eth0 nud stale")
        spec.floating_ips = [FloatingIPSpec(floating_ip_address=fip1, fixed_ip_address="10.63.0.11")]
        drain(sniffer)
        driver.router_sync(spec)
        arps = frames(sniffer, 10, until=lambda arps: announcements(arps, gateway.mac_address).get(fip1, 0) >= 2)
        assert announcements(arps, gateway.mac_address) == {fip1: router.GARP_COUNT}
        assert f"lladdr {gateway.mac_address}" in neighbour.run(f"ip neigh show {fip1} dev eth0").stdout

        # Only what is new: a second floating IP is announced, the first and the gateway are not again.
        spec.floating_ips.append(FloatingIPSpec(floating_ip_address=fip2, fixed_ip_address="10.63.0.12"))
        drain(sniffer)
        driver.router_sync(spec)
        arps = frames(sniffer, router.GARP_COUNT + 2)  # everything arping sends within its deadline, and more
        assert announcements(arps, gateway.mac_address) == {fip2: router.GARP_COUNT}

        drain(sniffer)
        driver.router_sync(spec)  # nothing new: silence
        assert announcements(frames(sniffer, 2), gateway.mac_address) == {}


def test_a_failing_announcement_only_logs_a_warning(driver, external, net_config, caplog, monkeypatch):
    ext_spec, _ = external
    spec = RouterSpec(id=new_id(), gateway=leg(ext_spec, ext_address(net_config, 11)),
                      gateway_ip=str(net_config.external_cidr.ip),
                      floating_ips=[FloatingIPSpec(floating_ip_address=ext_address(net_config, 23),
                                                   fixed_ip_address="10.64.0.11")])
    monkeypatch.setattr(router, "ARPING", "/nonexistent/arping")
    with caplog.at_level(logging.WARNING, logger=router.__name__), linux.iproute() as ipr:
        thread = router.ensure_router(ipr, net_config, spec)
        assert thread is not None
        thread.join(timeout=60)
    failures = [r.getMessage() for r in caplog.records if "gratuitous ARP" in r.getMessage()]
    assert len(failures) == 2 and all("failed" in f for f in failures), failures
    # The router itself is complete: addresses and NAT in place.
    namespace = names.router_namespace(spec.id)
    addresses = link_info(names.router_gateway(spec.gateway.port_id), namespace)["addresses"]
    assert f"{ext_address(net_config, 23)}/32" in addresses
    prefix = ipaddress.ip_network(spec.gateway.cidr).prefixlen
    assert f"{spec.gateway.ip_address}/{prefix}" in addresses
    assert "dnat to 10.64.0.11" in sh(f"ip netns exec {namespace} nft list table ip {router.NAT_TABLE}").stdout
