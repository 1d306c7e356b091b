"""Security groups on the real kernel: nftables, br_netfilter, conntrack.

Each test builds a private "host" namespace holding a bridge (named as a network's) and guest
namespaces plugged into it through veth pairs whose host ends are named as the ports' taps, so
the firewall works on exactly the names it uses in production, without touching the machine's
own namespace. Everything is removed afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass, field

import pytest

from agents import names
from agents.network.firewall import (
    Firewall,
    FirewallError,
    _interval_difference,
    _rule_text,
    link_local_address,
    table_name,
)
from agents.specs import FixedIPSpec, PortSpec, SecurityRuleSpec

EGRESS_ANY = [SecurityRuleSpec("egress", "IPv4"), SecurityRuleSpec("egress", "IPv6")]
ICMP_IN = SecurityRuleSpec("ingress", "IPv4", protocol="icmp")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {proc.stderr}")
    return proc


@pytest.fixture(scope="module", autouse=True)
def _needs_root_and_tools():
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    for tool in ("nft", "ip", "ping"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/host-setup.sh")


@dataclass
class Guest:
    namespace: str
    port: PortSpec

    @property
    def ip(self) -> str:
        return self.port.fixed_ips[0].ip_address


@dataclass
class Lab:
    """A host namespace with one network's bridge, and guests on it."""

    host: str
    network_id: str
    firewall: Firewall
    guests: list[Guest] = field(default_factory=list)
    suffix: str = ""

    def guest(self, ip: str, rules=(), *, mac: str | None = None, ip6: str | None = None, **port) -> Guest:
        index = len(self.guests) + 1
        namespace = f"fwg{index}-{self.suffix}"
        port_id = str(uuid.uuid4())
        mac = mac or f"fa:16:3e:{self.suffix[:2]}:{self.suffix[2:4]}:{index:02x}"
        fixed = [FixedIPSpec("subnet4", ip)] + ([FixedIPSpec("subnet6", ip6)] if ip6 else [])
        spec = PortSpec(id=port_id, network_id=self.network_id, mac_address=mac, fixed_ips=fixed,
                        device_owner="compute:nova", security_rules=list(rules), **port)
        run("ip", "netns", "add", namespace)
        tap = names.tap_name(port_id)
        run("ip", "-n", self.host, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        run("ip", "-n", self.host, "link", "set", tap, "master", names.bridge_name(self.network_id), "up")
        run("ip", "-n", namespace, "link", "set", "eth0", "address", mac)
        run("ip", "-n", namespace, "addr", "add", f"{ip}/24", "dev", "eth0")
        if ip6:
            run("ip", "-n", namespace, "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
        run("ip", "-n", namespace, "link", "set", "eth0", "up")
        run("ip", "-n", namespace, "link", "set", "lo", "up")
        guest = Guest(namespace, spec)
        self.guests.append(guest)
        self.firewall.apply_port(spec)
        return guest

    def update(self, guest: Guest, **changes) -> bool:
        for key, value in changes.items():
            setattr(guest.port, key, value)
        return self.firewall.apply_port(guest.port)

    def ruleset(self) -> str:
        return run("ip", "netns", "exec", self.host, "nft", "list", "ruleset").stdout


def ping(source: Guest, address: str, *, via: str | None = None, count: int = 1) -> bool:
    argv = ["ip", "netns", "exec", source.namespace, "ping", "-n", "-c", str(count), "-W", "0.6"]
    if via:
        argv += ["-I", via]
    if ":" in address:
        argv.append("-6")
    return run(*argv, address, check=False).returncode == 0


def in_namespace(namespace: str, code: str, timeout: float = 15) -> str:
    proc = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def lab():
    suffix = uuid.uuid4().hex[:6]
    host = f"fwh-{suffix}"
    network_id = str(uuid.uuid4())
    run("ip", "netns", "add", host)
    bridge = names.bridge_name(network_id)
    run("ip", "-n", host, "link", "add", bridge, "type", "bridge")
    run("ip", "-n", host, "link", "set", bridge, "up")
    lab = Lab(host=host, network_id=network_id, firewall=Firewall(owner=f"test-{suffix}", netns=host), suffix=suffix)
    yield lab
    for guest in lab.guests:
        run("ip", "netns", "del", guest.namespace, check=False)
    run("ip", "netns", "del", host, check=False)


# ------------------------------------------------------------------------------------- on the kernel


def test_icmp_rule_lets_ping_in_and_removing_it_blocks_it_again(lab):
    a = lab.guest("10.50.0.11", EGRESS_ANY)
    b = lab.guest("10.50.0.12", EGRESS_ANY)
    assert not ping(a, b.ip), "default deny ingress: no ICMP rule, no ping"

    assert lab.update(b, security_rules=EGRESS_ANY + [ICMP_IN])
    assert ping(a, b.ip)
    # Stateful: B's echo replies leave through its egress, and A's replies to B's own pings come
    # back in as established although A has no ingress rule.
    assert not ping(b, a.ip), "A has no ICMP rule"

    assert lab.update(b, security_rules=EGRESS_ANY)
    assert not ping(a, b.ip)


def test_egress_rules_are_enforced_and_replies_come_back(lab):
    a = lab.guest("10.50.0.21", [ICMP_IN])  # no egress rule at all
    b = lab.guest("10.50.0.22", EGRESS_ANY + [ICMP_IN])
    assert ping(b, a.ip), "A answers: its replies are established, not new egress"
    assert not ping(a, b.ip), "A may not start anything"
    lab.update(a, security_rules=[ICMP_IN, SecurityRuleSpec("egress", protocol="icmp", remote_ip_prefix=f"{b.ip}/32")])
    assert ping(a, b.ip)


def test_spoofed_source_address_is_dropped(lab):
    a = lab.guest("10.50.0.31", EGRESS_ANY)
    b = lab.guest("10.50.0.32", EGRESS_ANY + [ICMP_IN])
    run("ip", "-n", a.namespace, "addr", "add", "10.50.0.99/24", "dev", "eth0")
    assert ping(a, b.ip, via=a.ip)
    assert not ping(a, b.ip, via="10.50.0.99"), "a source address that is not the port's"


def test_spoofed_mac_is_dropped(lab):
    a = lab.guest("10.50.0.41", EGRESS_ANY)
    b = lab.guest("10.50.0.42", EGRESS_ANY + [ICMP_IN])
    assert ping(a, b.ip)
    run("ip", "-n", b.namespace, "neigh", "flush", "all")
    run("ip", "-n", a.namespace, "neigh", "flush", "all")
    run("ip", "-n", a.namespace, "link", "set", "eth0", "address", "fa:16:3e:66:66:66")
    assert not ping(a, b.ip)
    run("ip", "-n", a.namespace, "link", "set", "eth0", "address", a.port.mac_address)
    assert ping(a, b.ip)


ARP_REQUEST = """
    import socket, struct
    mac = bytes.fromhex("{mac}".replace(":", ""))
    sender, target = socket.inet_aton("{sender}"), socket.inet_aton("{target}")
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, sender, b"\\0" * 6, target)
    frame = b"\\xff" * 6 + mac + b"\\x08\\x06" + arp
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    s.send(frame)
"""


def neighbour(guest: Guest, address: str) -> str:
    return run("ip", "-n", guest.namespace, "neigh", "show", address, "dev", "eth0").stdout.strip()


def test_arp_claiming_another_address_is_dropped(lab):
    a = lab.guest("10.50.0.51", EGRESS_ANY)
    b = lab.guest("10.50.0.52", EGRESS_ANY)
    # A request "who has B? tell <sender>": B learns the sender's address -> A's MAC if it passes.
    in_namespace(a.namespace, ARP_REQUEST.format(mac=a.port.mac_address, sender="10.50.0.77", target=b.ip))
    in_namespace(a.namespace, ARP_REQUEST.format(mac=a.port.mac_address, sender=a.ip, target=b.ip))
    deadline = time.monotonic() + 5
    while not neighbour(b, a.ip) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a.port.mac_address in neighbour(b, a.ip), "the honest request went through"
    assert neighbour(b, "10.50.0.77") == "", "the spoofed one did not"


DHCP_SERVER_REPLY = """
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("{source}", {sport}))
    for _ in range(3):
        s.sendto(b"{payload}", ("{target}", 68))
"""

UDP_LISTEN = """
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 68))
    s.settimeout({timeout})
    got = []
    try:
        while True:
            got.append(s.recv(100).decode())
    except socket.timeout:
        pass
    print(",".join(sorted(set(got))))
"""


def test_dhcp_server_replies_from_a_guest_are_dropped(lab):
    a = lab.guest("10.50.0.61", EGRESS_ANY)
    # B lets UDP to port 68 in from anywhere, so only A's anti-spoofing can stop the reply.
    b = lab.guest("10.50.0.62", EGRESS_ANY + [SecurityRuleSpec("ingress", protocol="udp", port_range_min=68,
                                                               port_range_max=68)])
    listener = subprocess.Popen(["ip", "netns", "exec", b.namespace, sys.executable, "-c",
                                 textwrap.dedent(UDP_LISTEN.format(timeout=2))], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    in_namespace(a.namespace, DHCP_SERVER_REPLY.format(source=a.ip, sport=67, payload="server", target=b.ip))
    in_namespace(a.namespace, DHCP_SERVER_REPLY.format(source=a.ip, sport=5067, payload="other", target=b.ip))
    out, _ = listener.communicate(timeout=15)
    assert out.strip() == "other"


def test_remote_group_sets_follow_their_members(lab):
    group = str(uuid.uuid4())
    from_group = SecurityRuleSpec("ingress", protocol="icmp", remote_group_id=group)
    a = lab.guest("10.50.0.71", EGRESS_ANY)
    c = lab.guest("10.50.0.73", EGRESS_ANY)
    b = lab.guest("10.50.0.72", EGRESS_ANY + [from_group], remote_groups={group: [a.ip, "10.50.0.72"]})
    assert f"rg4_{names.tap_name(b.port.id)}_{uuid.UUID(group).hex}" in lab.ruleset()
    assert ping(a, b.ip)
    assert not ping(c, b.ip), "C is not in the group"

    lab.update(b, remote_groups={group: [c.ip]})
    assert ping(c, b.ip)
    assert not ping(a, b.ip), "A left the group"

    lab.update(b, remote_groups={group: []})
    assert not ping(c, b.ip), "an empty group matches nobody"


def test_group_member_updates_refill_the_sets_without_rewriting_the_filters(lab):
    group = str(uuid.uuid4())
    from_group = SecurityRuleSpec("ingress", protocol="icmp", remote_group_id=group)
    a = lab.guest("10.50.0.74", EGRESS_ANY)
    c = lab.guest("10.50.0.76", EGRESS_ANY)
    b = lab.guest("10.50.0.75", EGRESS_ANY + [from_group], remote_groups={group: []}, generation=10)
    d = lab.guest("10.50.0.77", EGRESS_ANY + [from_group], remote_groups={group: []}, generation=10)
    assert not ping(a, b.ip), "an empty group matches nobody"
    digest_line = [line for line in lab.ruleset().splitlines() if "cloudmgr:" in line]

    taps = lab.firewall.update_group_members(group, [a.ip, b.ip, d.ip], generation=20)
    assert taps == sorted([names.tap_name(b.port.id), names.tap_name(d.port.id)])
    assert ping(a, b.ip) and ping(a, d.ip), "A joined the group: both filters naming it let A in"
    assert not ping(c, b.ip)
    assert [line for line in lab.ruleset().splitlines() if "cloudmgr:" in line] == digest_line, \
        "only the sets changed, not the chains"
    assert lab.firewall.update_group_members(group, [b.ip, a.ip, d.ip], generation=21) == [], "same members: no-op"

    # A port's message read before the member update must not take the members back.
    assert not lab.firewall.apply_port(b.port)
    assert ping(a, b.ip), "the older port spec (generation 10) left the newer members in place"
    # An older member update is dropped too; a newer port spec wins.
    assert lab.firewall.update_group_members(group, [], generation=15) == []
    assert ping(a, b.ip)
    assert lab.update(b, remote_groups={group: [c.ip]}, generation=30)
    assert ping(c, b.ip) and not ping(a, b.ip)
    assert ping(a, d.ip), "another port's sets are its own"


def connections_between(lab: Lab, source: str, destination: str) -> int:
    """Conntrack entries of the lab's host from ``source`` to ``destination``."""
    import socket as sock

    from pyroute2 import Conntrack

    with Conntrack(nfgen_family=sock.AF_INET, netns=lab.host) as ct:
        return sum(1 for entry in ct.dump_entries()
                   if (entry.tuple_orig.saddr, entry.tuple_orig.daddr) == (source, destination))


def test_a_member_joining_keeps_the_connections_of_the_others_and_one_leaving_loses_its_own(lab):
    group = str(uuid.uuid4())
    from_group = SecurityRuleSpec("ingress", protocol="icmp", remote_group_id=group)
    a = lab.guest("10.50.0.121", EGRESS_ANY)
    b = lab.guest("10.50.0.122", EGRESS_ANY + [from_group], remote_groups={group: [a.ip]})
    assert ping(a, b.ip)
    assert connections_between(lab, a.ip, b.ip) == 1

    # The kernel merges .121 and the new .123 (around .122) into one interval: A must not count as gone.
    assert lab.firewall.update_group_members(group, [a.ip, b.ip, "10.50.0.123"], generation=2)
    assert connections_between(lab, a.ip, b.ip) == 1, "a member joining cut A's connection"

    assert lab.firewall.update_group_members(group, [b.ip, "10.50.0.123"], generation=3)
    assert connections_between(lab, a.ip, b.ip) == 0, "A left the group but kept its connection"
    assert not ping(a, b.ip)


def test_allowed_address_pairs_may_be_used(lab):
    a = lab.guest("10.50.0.81", EGRESS_ANY, allowed_address_pairs=[{"ip_address": "10.50.0.96/30"}])
    b = lab.guest("10.50.0.82", EGRESS_ANY + [ICMP_IN])
    run("ip", "-n", a.namespace, "addr", "add", "10.50.0.97/24", "dev", "eth0")
    run("ip", "-n", a.namespace, "addr", "add", "10.50.0.101/24", "dev", "eth0")
    assert ping(a, b.ip, via="10.50.0.97"), "inside the pair's prefix"
    assert not ping(a, b.ip, via="10.50.0.101"), "outside it"


def test_port_security_disabled_means_no_filter(lab):
    a = lab.guest("10.50.0.91", EGRESS_ANY)
    b = lab.guest("10.50.0.92", EGRESS_ANY)
    assert not ping(a, b.ip)
    assert lab.update(b, port_security_enabled=False)
    assert names.tap_name(b.port.id) not in lab.ruleset()
    assert ping(a, b.ip)
    run("ip", "-n", b.namespace, "addr", "add", "10.50.0.120/24", "dev", "eth0")
    lab.update(a, security_rules=EGRESS_ANY + [ICMP_IN])
    assert ping(b, a.ip, via="10.50.0.120"), "an unfiltered port may use any address"


def test_removing_a_rule_cuts_the_connections_it_allowed(lab):
    web = SecurityRuleSpec("ingress", protocol="tcp", port_range_min=8080, port_range_max=8080)
    a = lab.guest("10.50.0.101", EGRESS_ANY)
    b = lab.guest("10.50.0.102", EGRESS_ANY + [web])
    server = subprocess.Popen(["ip", "netns", "exec", b.namespace, sys.executable, "-c", textwrap.dedent("""
        import socket
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 8080)); s.listen(1)
        c, _ = s.accept(); c.settimeout(20)
        while True:
            data = c.recv(100)
            if not data:
                break
            c.sendall(data)
    """)])
    client = subprocess.Popen(["ip", "netns", "exec", a.namespace, sys.executable, "-u", "-c", textwrap.dedent(f"""
        import socket, sys
        for _ in range(50):
            try:
                c = socket.create_connection(("{b.ip}", 8080), timeout=2)
                break
            except OSError:
                import time; time.sleep(0.1)
        c.settimeout(2)
        for line in sys.stdin:
            c.sendall(b"x")
            try:
                print("echo" if c.recv(10) == b"x" else "closed", flush=True)
            except socket.timeout:
                print("timeout", flush=True)
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        client.stdin.write("1\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "echo"
        lab.update(b, security_rules=EGRESS_ANY)
        client.stdin.write("2\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "timeout", "the connection outlived its rule"
    finally:
        client.kill()
        server.kill()


def test_ipv6_neighbour_discovery_passes_and_rules_apply(lab):
    a = lab.guest("10.50.0.111", EGRESS_ANY, ip6="fd00:50::11")
    b = lab.guest("10.50.0.112", EGRESS_ANY, ip6="fd00:50::12")
    assert not ping(a, "fd00:50::12")
    lab.update(b, security_rules=EGRESS_ANY + [SecurityRuleSpec("ingress", "IPv6", protocol="icmp")])
    assert ping(a, "fd00:50::12"), "ND (NS/NA) and the ICMPv6 rule"
    for guest in (a, b):  # link-local addresses are usable once duplicate address detection ends
        deadline = time.monotonic() + 10
        while run("ip", "-n", guest.namespace, "-6", "addr", "show", "dev", "eth0", "tentative").stdout.strip():
            assert time.monotonic() < deadline, "duplicate address detection did not end"
            time.sleep(0.1)
    assert ping(a, f"{link_local_address(b.port.mac_address)}%eth0"), "link-local addresses are the port's"
    run("ip", "-n", a.namespace, "addr", "add", "fd00:50::99/64", "dev", "eth0", "nodad")
    assert not ping(a, "fd00:50::12", via="fd00:50::99")


def test_apply_is_idempotent_and_delete_leaves_nothing(lab):
    a = lab.guest("10.50.0.121", EGRESS_ANY + [ICMP_IN], remote_groups={})
    group = str(uuid.uuid4())
    b = lab.guest("10.50.0.122", EGRESS_ANY + [SecurityRuleSpec("ingress", remote_group_id=group)],
                  remote_groups={group: [a.ip]})
    before = lab.ruleset()
    assert lab.firewall.apply_port(b.port) is False
    assert lab.ruleset() == before
    assert lab.firewall.filtered_ports() == {names.tap_name(a.port.id), names.tap_name(b.port.id)}

    assert lab.firewall.remove_port(b.port.id) is True
    assert lab.firewall.remove_port(b.port.id) is False
    text = lab.ruleset()
    assert names.tap_name(b.port.id) not in text
    assert uuid.UUID(group).hex not in text
    assert names.tap_name(a.port.id) in text
    lab.firewall.remove_port(a.port.id)
    text = lab.ruleset()
    assert '"tap' not in text and "_tap" not in text, "no element, chain or set of a port is left"
    assert "map zones" in text and '"brq' not in text, "the network's zone went with its last port"


def test_a_tap_made_after_its_filter_is_filtered(lab):
    a = lab.guest("10.50.0.131", EGRESS_ANY)
    port = PortSpec(id=str(uuid.uuid4()), network_id=lab.network_id, mac_address="fa:16:3e:00:13:32",
                    fixed_ips=[FixedIPSpec("s", "10.50.0.132")], security_rules=EGRESS_ANY)
    lab.firewall.apply_port(port)  # before the tap exists, as when the agent plugs a new guest
    lab.firewall.apply_port(port)
    b = Guest(f"fwgx-{lab.suffix}", port)
    lab.guests.append(b)
    run("ip", "netns", "add", b.namespace)
    tap = names.tap_name(port.id)
    run("ip", "-n", lab.host, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", b.namespace)
    run("ip", "-n", lab.host, "link", "set", tap, "master", names.bridge_name(lab.network_id), "up")
    run("ip", "-n", b.namespace, "link", "set", "eth0", "address", port.mac_address)
    run("ip", "-n", b.namespace, "addr", "add", "10.50.0.132/24", "dev", "eth0")
    run("ip", "-n", b.namespace, "link", "set", "eth0", "up")
    assert not ping(a, "10.50.0.132")
    lab.update(b, security_rules=EGRESS_ANY + [ICMP_IN])
    assert ping(a, "10.50.0.132")


def test_sync_converges_and_leaves_other_agents_alone(lab):
    a = lab.guest("10.50.0.141", EGRESS_ANY)
    b = lab.guest("10.50.0.142", EGRESS_ANY + [ICMP_IN])
    other = Firewall(owner=f"other-{lab.suffix}", netns=lab.host)
    foreign = PortSpec(id=str(uuid.uuid4()), network_id=str(uuid.uuid4()), mac_address="fa:16:3e:00:00:99",
                       fixed_ips=[FixedIPSpec("s", "10.60.0.9")])
    other.apply_port(foreign)

    removed = lab.firewall.sync([b.port])  # A's port went while the agent was down
    assert removed == [names.tap_name(a.port.id)]
    assert lab.firewall.filtered_ports() == {names.tap_name(b.port.id)}
    assert other.filtered_ports() == {names.tap_name(foreign.id)}, "another agent's filters are its own"
    assert ping(a, b.ip), "B's filter still applies (and A has none left)"
    assert lab.firewall.sync([b.port]) == []

    assert lab.firewall.sync([]) == [names.tap_name(b.port.id)]
    assert lab.firewall.table not in lab.ruleset(), "nothing left to filter: no table either"
    assert other.table in lab.ruleset()


# ---------------------------------------------------------------------------------- rule rendering


@pytest.mark.parametrize("old, new, left", [
    ([(2, 10)], [(2, 22)], []),  # joined next to the others: nobody left
    ([(2, 10)], [(2, 5)], [(6, 10)]),
    ([(2, 10)], [(4, 5), (8, 8)], [(2, 3), (6, 7), (9, 10)]),
    ([(2, 10), (20, 30)], [(0, 1), (25, 40)], [(2, 10), (20, 24)]),
    ([(5, 5)], [], [(5, 5)]),
])
def test_the_addresses_that_left_a_set(old, new, left):
    assert _interval_difference(old, new) == left


@pytest.mark.parametrize("networks, families", [
    (["10.50.0.7/32"], ["AF_INET"]),
    (["fd00:50::7/128"], ["AF_INET6"]),
    (["10.50.0.7/32", "fd00:50::7/128"], ["AF_INET", "AF_INET6"]),
    ([], []),
])
def test_forgetting_connections_walks_only_the_families_of_the_addresses(monkeypatch, networks, families):
    """Each family's pass walks the kernel's whole conntrack table: an IPv4-only port needs one."""
    import ipaddress
    import socket as sock

    import pyroute2

    walked = []

    class RecordingConntrack:
        def __init__(self, nfgen_family, **kwargs):
            walked.append(sock.AddressFamily(nfgen_family).name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def dump_entries(self, zone):
            return []

    monkeypatch.setattr(pyroute2, "Conntrack", RecordingConntrack)
    Firewall(owner="unit")._forget_connections(7, [ipaddress.ip_network(n) for n in networks])
    assert walked == families


@pytest.mark.parametrize("rule, text", [
    (SecurityRuleSpec("ingress", protocol="tcp", port_range_min=22, port_range_max=22),
     "meta nfproto ipv4 meta l4proto 6 th dport 22"),
    (SecurityRuleSpec("ingress", protocol="udp", port_range_min=1000, port_range_max=2000,
                      remote_ip_prefix="192.0.2.7/24"),
     "meta nfproto ipv4 ip saddr 192.0.2.0/24 meta l4proto 17 th dport 1000-2000"),
    (SecurityRuleSpec("egress", "IPv6", protocol="icmp", port_range_min=128, remote_ip_prefix="::/0"),
     "meta nfproto ipv6 meta l4proto 58 icmpv6 type 128"),
    (SecurityRuleSpec("ingress", protocol="icmp", port_range_min=8, port_range_max=0),
     "meta nfproto ipv4 meta l4proto 1 icmp type 8 icmp code 0"),
    (SecurityRuleSpec("ingress", protocol="112"), "meta nfproto ipv4 meta l4proto 112"),
    (SecurityRuleSpec("egress", protocol="any"), "meta nfproto ipv4"),
    (SecurityRuleSpec("ingress", remote_ip_prefix="2001:db8::/32"), None),  # an IPv6 prefix in an IPv4 rule
])
def test_rule_texts(rule, text):
    assert _rule_text(rule, "tap0") == text


@pytest.mark.parametrize("rule", [
    SecurityRuleSpec("ingress", protocol="smtp"),
    SecurityRuleSpec("ingress", protocol="300"),
    SecurityRuleSpec("ingress", protocol="tcp", port_range_min=90, port_range_max=80),
    SecurityRuleSpec("ingress", ethertype="IPX"),
    SecurityRuleSpec("sideways"),
    SecurityRuleSpec("ingress", remote_ip_prefix="not-an-address"),
])
def test_bad_rules_are_refused_with_a_reason(rule):
    with pytest.raises(FirewallError):
        _rule_text(rule, "tap0")


def test_link_local_address_and_table_names():
    assert str(link_local_address("fa:16:3e:12:34:56")) == "fe80::f816:3eff:fe12:3456"
    assert table_name("host-1.example") != table_name("host-1_example")
    assert table_name("a").startswith("cloudmgr_sg_a_")
