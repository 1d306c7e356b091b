"""IPv6 against the real kernel and dnsmasq: the router advertises (SLAAC, or DHCPv6 for the
addresses) and the network's DHCP namespace answers DHCPv6 with the port's address."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time

from agents import names
from agents.specs import FixedIPSpec, RouterInterfaceSpec, RouterSpec, SubnetSpec
from tests.agents.test_network_support import (  # noqa: F401 - fixtures
    compute_ports,
    driver,
    guests,
    make_network,
    net_config,
    new_id,
    random_mac,
    state_dir,
    wait_until,
)


def eui64(prefix: str, mac: str) -> str:
    """The SLAAC address a MAC gets in a /64."""
    octets = bytes.fromhex(mac.replace(":", ""))
    interface_id = bytes([octets[0] ^ 0x02]) + octets[1:3] + b"\xff\xfe" + octets[3:]
    return str(ipaddress.IPv6Address(ipaddress.IPv6Network(prefix).network_address.packed[:8] + interface_id))


def ipv6_network(cidr6: str, mode: str):
    """A network with an IPv4 subnet (DHCP port .2, one port .11) and an IPv6 subnet in ``mode``."""
    spec = make_network("10.45.0.0/24", ports=1)
    net6 = ipaddress.ip_network(cidr6)
    subnet = SubnetSpec(id=new_id(), cidr=cidr6, ip_version=6, gateway_ip=str(net6[1]), ipv6_address_mode=mode,
                        ipv6_ra_mode=mode, dns_nameservers=["2001:db8::53"])
    spec.subnets.append(subnet)
    spec.dhcp_port.fixed_ips.append(FixedIPSpec(subnet.id, str(net6[2])))
    (port,) = compute_ports(spec)
    address = eui64(cidr6, port.mac_address) if mode == "slaac" else str(net6[0x11])
    port.fixed_ips.append(FixedIPSpec(subnet.id, address))
    router = RouterSpec(id=new_id(), interfaces=[RouterInterfaceSpec(
        port_id=new_id(), network_id=spec.id, mac_address=random_mac(), ip_address=str(net6[1]), cidr=cidr6,
        network=spec)])
    return spec, port, router, address


def test_slaac_guest_configures_itself_from_the_routers_advertisements(driver, guests):
    spec, port, router, address = ipv6_network("fd00:45:1::/64", "slaac")
    driver.network_sync(spec)
    driver.router_sync(router)
    guest = guests(names.bridge_name(spec.id), port.mac_address)  # comes up now: solicits at once
    shown = lambda: guest.run("ip -6 addr show dev eth0").stdout  # noqa: E731
    assert wait_until(lambda: address in shown() and "tentative" not in shown(), timeout=15), shown()
    assert "proto ra" in guest.run("ip -6 route show default").stdout
    assert guest.ping("fd00:45:1::1")
    driver.router_sync(router)  # a repeated sync keeps the advertiser running
    router.interfaces = []
    driver.router_sync(router)
    assert not (driver.config.state_dir / "router" / router.id).exists()


def _solicit(mac: str, transaction: int) -> bytes:
    duid = struct.pack("!HH", 3, 1) + bytes.fromhex(mac.replace(":", ""))  # DUID-LL of the MAC
    options = struct.pack("!HH", 1, len(duid)) + duid  # client identifier
    options += struct.pack("!HHIII", 3, 12, 1, 0, 0)  # IA_NA 1, no times
    options += struct.pack("!HHH", 8, 2, 0)  # elapsed time
    return bytes([1]) + transaction.to_bytes(3, "big") + options


def _advertised_addresses(message: bytes) -> list[str]:
    addresses, offset = [], 4
    while offset + 4 <= len(message):
        code, length = struct.unpack("!HH", message[offset:offset + 4])
        body = message[offset + 4:offset + 4 + length]
        if code == 3:  # IA_NA: its own options follow its 12 bytes
            inner = 12
            while inner + 4 <= len(body):
                icode, ilength = struct.unpack("!HH", body[inner:inner + 4])
                if icode == 5:  # IA address
                    addresses.append(str(ipaddress.IPv6Address(body[inner + 4:inner + 20])))
                inner += 4 + ilength
        offset += 4 + length
    return addresses


def test_stateful_guest_is_told_to_ask_and_gets_its_address_by_dhcpv6(driver, guests):
    spec, port, router, address = ipv6_network("fd00:45:2::/64", "dhcpv6-stateful")
    driver.network_sync(spec)
    driver.router_sync(router)
    guest = guests(names.bridge_name(spec.id), port.mac_address)
    # The advertisement gives the default route but no prefix to configure an address from.
    assert wait_until(lambda: "proto ra" in guest.run("ip -6 route show default").stdout, timeout=15)
    assert "fd00:45:2:" not in guest.run("ip -6 addr show dev eth0 scope global").stdout

    from pyroute2 import netns

    sock = netns.create_socket(guest.namespace, socket.AF_INET6, socket.SOCK_DGRAM, flags=0)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
        wait_until(lambda: "tentative" not in guest.run("ip -6 addr show dev eth0").stdout)
        sock.bind(("::", 546))
        transaction = int.from_bytes(os.urandom(3), "big")
        scope = int(guest.run("cat /sys/class/net/eth0/ifindex").stdout)  # of the link-local group
        sock.sendto(_solicit(port.mac_address, transaction), ("ff02::1:2", 547, 0, scope))
        sock.settimeout(0.2)
        answers, deadline = [], time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                message, sender = sock.recvfrom(2048)
            except TimeoutError:
                continue
            if message[0] == 2 and int.from_bytes(message[1:4], "big") == transaction:  # ADVERTISE
                answers.append((sender[0].split("%")[0], _advertised_addresses(message)))
    finally:
        sock.close()
    # Exactly one server answers, the network's DHCP port, with the port's address; the router's
    # advertiser stays silent.
    dhcp_link_local = eui64("fe80::/64", spec.dhcp_port.mac_address)
    assert answers == [(dhcp_link_local, [address])]
