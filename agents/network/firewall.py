"""Security groups and anti-spoofing for instance ports: stateful nftables rules per tap.

Why a ``bridge`` table *and* an ``inet`` table
----------------------------------------------
Tested on this host (kernel 6.18, nftables 1.0.6), with test namespaces standing in for guests:

* The ``bridge`` family sees each frame with its bridge ports (``iifname``/``oifname`` are the
  taps), but ``ct`` expressions there fail with "Protocol error": conntrack for the bridge family
  needs ``nf_conntrack_bridge`` (``CONFIG_NF_CONNTRACK_BRIDGE``), which this kernel lacks.
* br_netfilter (built in; ``net.bridge.bridge-nf-call-ip{,6}tables=1``) passes bridged IPv4/IPv6
  through the ``inet`` hooks, with conntrack and its zones working, but there ``iifname`` and
  ``oifname`` are the *bridge*, not the tap (nftables has no ``physdev`` match).

So each family does what only it can, and the skb mark carries the port between them. For a
frame from tap A to tap B::

    bridge prerouting (-300)   A's anti-spoofing chain (MAC, ARP, source IP, DHCP/RA servers);
                               mark := owner tag | index(A)
    inet prerouting raw        ct zone := the bridge's zone (one per network: overlapping
                               CIDRs of two networks never share a connection entry)
    inet prerouting mangle     after conntrack: that mark -> A's egress rules; mark := 0
    bridge forward (-200)      mark := owner tag | TO | index(B)  (the output tap is known here)
    inet forward filter        that mark -> B's ingress rules; mark := 0

Egress is checked in prerouting, so it covers traffic to the host and to other bridge ports
alike; ingress is checked in forward. Traffic the host itself sends onto a bridge does not pass
the bridge's forward hook and is not filtered by ingress rules (tenant bridges carry no host
address; only the external network's host bridge does).

Each agent owns a pair of tables, ``bridge`` and ``inet`` ``cloudmgr_sg_<owner>`` (the owner is the
agent's host name: several test clouds share one kernel, and one agent's resync must never touch
another's filters). Its marks carry an 18-bit hash of the owner, so that two agents' marks never
meet, and its conntrack zones start at an offset derived from the owner. Per port
(``tap`` = :func:`agents.names.tap_name`): bridge chain ``spoof_<tap>``, inet chains
``eg_<tap>`` and ``in_<tap>``, and a named set per remote group and IP version
(``rg4_<tap>_<group>``) filled from ``PortSpec.remote_groups``. Sets belong to one port, so that
one port's update can never change another port's filter. Port indexes and network zones are
allocated lowest-free and kept only in the kernel's maps, so an agent restart finds them again;
every change of a port is one nftables transaction (in-process, ``linux.nft``). A digest of the
port's rules sits in the comment of its ingress chain's first rule: re-applying an unchanged port
does nothing, and a changed filter also deletes the port's conntrack entries, so that a removed
rule cuts the connections it allowed (an allowed TCP connection is picked up again by the next
packet).

The digest covers the rules and the names of the sets, not their members: when a group gains or
loses a port, :meth:`Firewall.update_group_members` refills that group's sets of every tap in one
transaction (``security_group_members`` task), without rewriting any chain. A boot that adds a
port to the default group so costs its host one set update, not a re-sync of every other port in
the group. A member that leaves also loses the connections it had with the ports it was allowed
to reach. Messages race on the agent's threads, so each set remembers the generation of the
state it holds and never goes back to an older one.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from agents import names
from agents.locks import KeyedLocks
from agents.network import NetworkError, linux
from agents.network.driver import NetworkExtension
from agents.specs import HostNetworkState, PortSpec, SecurityGroupMembersSpec, SecurityRuleSpec

__all__ = ["Firewall", "FirewallError", "SecurityGroupExtension", "link_local_address", "table_name"]

log = logging.getLogger(__name__)

TABLE_PREFIX = "cloudmgr_sg_"
# An skb mark of ours: bit 31 set, 18 bits of the owner's hash, a direction bit, a port index.
INDEX_BITS = 12
MAX_INDEX = (1 << INDEX_BITS) - 1  # filtered ports per host
TO_PORT = 1 << INDEX_BITS
DIRECTION_MASK = 0xFFFFF000
MAX_ZONE = 0xFFFF
DIGEST_PREFIX = "cloudmgr:"

# Neutron's protocol names (neutron_lib.constants.IP_PROTOCOL_MAP).
PROTOCOLS = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "hopopt": 0, "icmp": 1, "igmp": 2, "ipip": 4,
    "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "icmpv6": 58, "ipv6-nonxt": 59, "ipv6-opts": 60,
    "ipv6-route": 43, "ospf": 89, "pgm": 113, "rsvp": 46, "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136,
    "vrrp": 112,
}
ANY_PROTOCOL = ("", "any", "0")
PORT_PROTOCOLS = (6, 17, 33, 132, 136)  # the protocols whose rules take port ranges
ICMP = {4: 1, 6: 58}
FAMILY = {"IPv4": 4, "IPv6": 6}

# ICMPv6 that IPv6 needs whatever the rules say (Neutron's ICMPV6_ALLOWED_*_TYPES).
ICMPV6_EGRESS = "nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld2-listener-report"
ICMPV6_INGRESS = "mld-listener-query, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert"
# Sent from "::" while an address is tentative (duplicate address detection, RFC 4862).
ICMPV6_UNSPECIFIED = "nd-neighbor-solicit, nd-router-solicit, mld-listener-report, mld2-listener-report"


class FirewallError(NetworkError):
    """A filter could not be applied; the message says what and why."""


def link_local_address(mac: str) -> ipaddress.IPv6Address:
    """The IPv6 link-local address a guest derives from its MAC (modified EUI-64, RFC 4291)."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    return ipaddress.IPv6Address(bytes([0xFE, 0x80] + [0] * 6 + eui))


def _owner_hash(owner: str) -> int:
    return int(hashlib.sha256(owner.encode()).hexdigest()[:12], 16)


def table_name(owner: str) -> str:
    """The name of an agent's two tables (``bridge`` and ``inet``)."""
    clean = re.sub(r"[^a-z0-9]+", "_", owner.lower()).strip("_")[:40]
    return f"{TABLE_PREFIX}{clean}_{_owner_hash(owner) & 0xFFFFFF:06x}"


def _mac(value: str) -> str:
    parts = (value or "").lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise FirewallError(f"invalid MAC address {value!r}")
    return ":".join(parts)


def _network(value: str, what: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=False)
    except (TypeError, ValueError):
        raise FirewallError(f"invalid {what} {value!r}") from None


def _hex_set(networks: Iterable[ipaddress.IPv6Network]) -> str:
    """IPv6 networks as the 128-bit integers (or ranges) that a raw payload match compares."""
    items = []
    for net in networks:
        first, last = int(net.network_address), int(net.broadcast_address)
        items.append(f"0x{first:032x}" if first == last else f"0x{first:032x}-0x{last:032x}")
    return "{ " + ", ".join(items) + " }"


def _elements(items: Iterable[str]) -> str:
    return "{ " + ", ".join(items) + " }"


# ------------------------------------------------------------------------------ the kernel's state

PORT_MAPS = (("bridge", "ports"), ("bridge", "mark_from"), ("bridge", "mark_to"), ("inet", "tap_zones"))


@dataclass
class _State:
    """What of ours the kernel holds (read with ``nft -j``)."""

    maps: dict[str, dict] = field(default_factory=dict)  # "<family>:<map>" -> {key: value}
    chains: set[str] = field(default_factory=set)  # "<family>:<chain>"
    sets: set[str] = field(default_factory=set)  # inet set names
    elements: dict[str, tuple] = field(default_factory=dict)  # set name -> its members as _intervals
    digests: dict[str, str] = field(default_factory=dict)  # tap -> digest of its filter
    tables: set[str] = field(default_factory=set)  # the families whose table exists

    def map(self, family: str, name: str) -> dict:
        return self.maps.get(f"{family}:{name}", {})

    @property
    def indexes(self) -> dict[str, int]:
        return {tap: mark & MAX_INDEX for tap, mark in self.map("bridge", "mark_from").items()}

    @property
    def taps(self) -> set[str]:
        chains = {c.split("_", 1)[1] for c in self.chains if c.startswith(("bridge:spoof_", "inet:eg_", "inet:in_"))}
        return set(self.map("bridge", "mark_from")) | chains

    def port_sets(self, tap: str) -> list[str]:
        return sorted(s for s in self.sets if s.startswith((f"rg4_{tap}_", f"rg6_{tap}_")))


def _elem_value(raw):
    if isinstance(raw, dict) and "elem" in raw:  # an element with a comment or timeout
        return raw["elem"].get("val")
    return raw


def _parse_state(documents: Iterable[dict]) -> _State:
    state = _State()
    for doc in documents:
        for item in doc.get("nftables", []):
            if "table" in item:
                state.tables.add(item["table"]["family"])
            elif "map" in item:
                m = item["map"]
                entries = {}
                for key, value in m.get("elem", []):
                    if isinstance(value, dict) and "jump" in value:
                        value = value["jump"]["target"]
                    entries[_elem_value(key)] = value
                state.maps[f"{m['family']}:{m['name']}"] = entries
            elif "set" in item:
                state.sets.add(item["set"]["name"])
                state.elements[item["set"]["name"]] = _intervals(
                    _kernel_interval(_elem_value(e)) for e in item["set"].get("elem", []))
            elif "chain" in item:
                state.chains.add(f"{item['chain']['family']}:{item['chain']['name']}")
            elif "rule" in item:
                rule = item["rule"]
                comment = rule.get("comment") or ""
                if rule["family"] == "inet" and rule["chain"].startswith("in_") and comment.startswith(DIGEST_PREFIX):
                    state.digests[rule["chain"][3:]] = comment[len(DIGEST_PREFIX):]
    return state


def _kernel_interval(value) -> tuple[int, int]:
    """A set element as nft -j prints it (an address, a prefix or a range) as (first, last)."""
    if isinstance(value, dict) and "prefix" in value:
        net = ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}", strict=False)
        return int(net.network_address), int(net.broadcast_address)
    if isinstance(value, dict) and "range" in value:
        first, last = value["range"]
        return int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last))
    address = int(ipaddress.ip_address(value))
    return address, address


def _intervals(pairs: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Address intervals merged where they touch: how nft's auto-merge stores them, so that the
    kernel's elements and the wanted members compare equal whatever their spelling."""
    merged: list[list[int]] = []
    for first, last in sorted(pairs):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return tuple((first, last) for first, last in merged)


def _member_intervals(members: Iterable[str]) -> tuple[tuple[int, int], ...]:
    """Members (addresses, prefixes, or ``first-last`` ranges as the kernel keeps them) as _intervals."""
    pairs = []
    for member in members:
        if "-" in member:
            first, last = member.split("-", 1)
            pairs.append((int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last))))
        else:
            net = ipaddress.ip_network(member, strict=False)
            pairs.append((int(net.network_address), int(net.broadcast_address)))
    return _intervals(pairs)


def _interval_difference(old: Iterable[tuple[int, int]], new: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of the ``old`` intervals that no ``new`` interval covers (both merged and
    sorted): the addresses that left. A member joining next to others merges into their
    interval, so whole intervals cannot be compared."""
    new = list(new)
    left = []
    for first, last in old:
        start = first
        for new_first, new_last in new:
            if new_last < start or new_first > last:
                continue
            if new_first > start:
                left.append((start, new_first - 1))
            start = new_last + 1
            if start > last:
                break
        if start <= last:
            left.append((start, last))
    return left


def _interval_text(pair: tuple[int, int], version: int) -> str:
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    first, last = pair
    return str(make(first)) if first == last else f"{make(first)}-{make(last)}"


def _interval_networks(first: int, last: int, version: int) -> list:
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    return list(ipaddress.summarize_address_range(make(first), make(last)))


def _free_number(used: Iterable[int], start: int, limit: int, what: str) -> int:
    """The first number from ``start`` (wrapping to 1 after ``limit``) that is not in ``used``."""
    taken = set(used)
    for offset in range(limit):
        candidate = (start - 1 + offset) % limit + 1
        if candidate not in taken:
            return candidate
    raise FirewallError(f"no free {what} left on this host (all {limit} are in use)")


# ------------------------------------------------------------------------------------- rule texts


@dataclass(frozen=True)
class _Addresses:
    """Who a port may be on the wire: (IP network, MAC) pairs, and its MACs."""

    pairs: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]
    macs: tuple[str, ...]

    @classmethod
    def of(cls, spec: PortSpec) -> _Addresses:
        mac = _mac(spec.mac_address)
        pairs = [(_network(f.ip_address, "fixed IP"), mac) for f in spec.fixed_ips]
        for pair in spec.allowed_address_pairs:
            pairs.append((_network(pair.get("ip_address", ""), "allowed address pair"),
                          _mac(pair.get("mac_address") or mac)))
        macs = sorted({mac} | {m for _, m in pairs})
        pairs += [(ipaddress.ip_network(link_local_address(m)), m) for m in macs]
        return cls(pairs=tuple(dict.fromkeys(pairs)), macs=tuple(macs))

    def of_version(self, version: int) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]:
        return [(net, mac) for net, mac in self.pairs if net.version == version]


def _spoof_rules(addresses: _Addresses) -> list[str]:
    """The bridge chain for frames *from* the guest: anything not its own is dropped."""
    rules = [f"ether saddr != {_elements(addresses.macs)} drop"]
    arp = [f"{net} . {mac}" for net, mac in addresses.of_version(4)] + [f"0.0.0.0 . {m}" for m in addresses.macs]
    rules += [
        f"ether type arp arp saddr ip . arp saddr ether != {_elements(arp)} drop",
        "ether type arp return",
        # A guest never answers as a DHCP server, on either IP version, nor advertises routes.
        "ether type ip udp sport 67 udp dport 68 drop",
        "ether type ip6 udp sport 547 udp dport 546 drop",
        "ether type ip6 icmpv6 type { nd-router-advert, nd-redirect } drop",
    ]
    v4 = addresses.of_version(4)
    if v4:
        rules.append(f"ip saddr . ether saddr {_elements(f'{n} . {m}' for n, m in v4)} return")
    rules.append("ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return")  # DHCPDISCOVER
    v6 = addresses.of_version(6)
    # A neighbour advertisement may only claim the guest's own addresses (its target, bits 64-191).
    rules.append(f"icmpv6 type nd-neighbor-advert @th,64,128 != {_hex_set(n for n, _ in v6)} drop")
    rules.append(f"ip6 saddr . ether saddr {_elements(f'{n} . {m}' for n, m in v6)} return")
    rules.append(f"ip6 saddr :: icmpv6 type {{ {ICMPV6_UNSPECIFIED} }} return")
    rules.append("drop")
    return rules


def _protocol(rule: SecurityRuleSpec, version: int) -> int | None:
    raw = "" if rule.protocol is None else str(rule.protocol).strip().lower()
    if raw in ANY_PROTOCOL:
        return None
    if raw.isdigit():
        number = int(raw)
        if not 0 <= number <= 255:
            raise FirewallError(f"protocol number {number} is out of range 0-255")
    elif raw in PROTOCOLS:
        number = PROTOCOLS[raw]
    else:
        raise FirewallError(f"unknown protocol {rule.protocol!r}")
    if number == 1 and version == 6:
        number = 58  # Neutron: "icmp" in an IPv6 rule means ICMPv6
    return number


def _port_value(value: int | None, what: str, limit: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or not 0 <= value <= limit:
        raise FirewallError(f"{what} {value!r} is out of range 0-{limit}")
    return value


def _group_key(group_id: str) -> str:
    """A group id as nft can name it (hex), whatever its spelling."""
    try:
        return uuid.UUID(str(group_id)).hex
    except ValueError:
        return hashlib.sha256(str(group_id).encode()).hexdigest()[:32]


def _set_name(tap: str, group_id: str, version: int) -> str:
    """``rg4_<tap>_<group>``."""
    return f"rg{version}_{tap}_{_group_key(group_id)}"


def _set_tap(name: str) -> str:
    return name.split("_")[1]


def _set_version(name: str) -> int:
    return 4 if name.startswith("rg4_") else 6


def _rule_text(rule: SecurityRuleSpec, tap: str) -> str | None:
    """One security group rule as an nft rule (without verdict), or None if it can never match."""
    version = FAMILY.get(rule.ethertype)
    if version is None:
        raise FirewallError(f"ethertype {rule.ethertype!r} is neither IPv4 nor IPv6")
    if rule.direction not in ("ingress", "egress"):
        raise FirewallError(f"direction {rule.direction!r} is neither ingress nor egress")
    ip = "ip" if version == 4 else "ip6"
    # The remote end: the source of ingress traffic, the destination of egress traffic.
    remote = f"{ip} saddr" if rule.direction == "ingress" else f"{ip} daddr"
    parts = [f"meta nfproto ipv{version}"]
    if rule.remote_ip_prefix:
        prefix = _network(rule.remote_ip_prefix, "remote IP prefix")
        if prefix.version != version:
            log.warning("port %s: rule %s has an IPv%d prefix in an %s rule; it can never match",
                        tap, rule, prefix.version, rule.ethertype)
            return None
        if prefix.prefixlen:
            parts.append(f"{remote} {prefix}")
    if rule.remote_group_id:
        parts.append(f"{remote} @{_set_name(tap, rule.remote_group_id, version)}")
    protocol = _protocol(rule, version)
    low = _port_value(rule.port_range_min, "port_range_min", 65535)
    high = _port_value(rule.port_range_max, "port_range_max", 65535)
    if protocol is not None:
        parts.append(f"meta l4proto {protocol}")
        if protocol in PORT_PROTOCOLS and (low is not None or high is not None):
            low = 1 if low is None else low
            high = 65535 if high is None else high
            if low > high:
                raise FirewallError(f"port range {low}-{high} is empty")
            parts.append(f"th dport {low}" if low == high else f"th dport {low}-{high}")
        elif protocol == ICMP[version] and low is not None:
            # Neutron: for ICMP, port_range_min is the type and port_range_max the code.
            icmp = "icmp" if version == 4 else "icmpv6"
            parts.append(f"{icmp} type {_port_value(low, 'ICMP type', 255)}")
            if high is not None:
                parts.append(f"{icmp} code {_port_value(high, 'ICMP code', 255)}")
    return " ".join(parts)


def _group_sets(spec: PortSpec, tap: str) -> dict[str, list[str]]:
    """Named set -> its elements, per remote group referenced by a rule and IP version. Every
    referenced group has both sets, empty or not: its members may come later, and only the sets
    are refilled then (an empty set matches nobody)."""
    wanted = {rule.remote_group_id for rule in spec.security_rules if rule.remote_group_id}
    sets: dict[str, list[str]] = {}
    for group_id in sorted(wanted):
        members = [_network(ip, f"member of remote group {group_id}") for ip in spec.remote_groups.get(group_id, [])]
        for version in (4, 6):
            nets = ipaddress.collapse_addresses(n for n in members if n.version == version)
            sets[_set_name(tap, group_id, version)] = [str(n) for n in nets]
    return sets


def _chain_rules(spec: PortSpec, tap: str) -> tuple[list[str], list[str]]:
    """(egress rules, ingress rules) of a port: state first, what IP needs, the group's rules, drop."""
    egress = [
        "ct state invalid drop",
        "ct state established,related return",
        "meta nfproto ipv4 udp sport 68 udp dport 67 return",
        "meta nfproto ipv6 udp sport 546 udp dport 547 return",
        f"icmpv6 type {{ {ICMPV6_EGRESS} }} return",
    ]
    ingress = [
        "ct state invalid drop",
        "ct state established,related return",
        "meta nfproto ipv4 udp sport 67 udp dport 68 return",  # DHCP answers (guests cannot send them)
        "meta nfproto ipv6 udp sport 547 udp dport 546 return",
        f"icmpv6 type {{ {ICMPV6_INGRESS} }} return",
    ]
    for rule in spec.security_rules:
        text = _rule_text(rule, tap)
        if text is not None:
            (ingress if rule.direction == "ingress" else egress).append(f"{text} return")
    egress.append("drop")
    ingress.append("drop")
    return egress, ingress


# ------------------------------------------------------------------------------------- the driver


_table_locks = KeyedLocks()


class Firewall:
    """The security group filters of one agent's ports on this host (or in a network namespace,
    for tests). Every method is idempotent and safe to call from several threads."""

    def __init__(self, owner: str, netns: str | None = None) -> None:
        self.owner = owner
        self.netns = netns
        self.table = table_name(owner)
        digest = _owner_hash(owner)
        self.tag = 0x80000000 | ((digest & 0x3FFFF) << (INDEX_BITS + 1))
        self.zone_start = (digest >> 18) % MAX_ZONE + 1
        # set name -> the generation of the member state it holds (see the module's docstring)
        self._generations: dict[str, int] = {}

    def mark_from(self, index: int) -> int:
        return self.tag | index

    def mark_to(self, index: int) -> int:
        return self.tag | TO_PORT | index

    # -- plumbing ---------------------------------------------------------------------------

    def _apply(self, script: list[str]) -> None:
        text = "\n".join(script) + "\n"
        try:
            linux.nft(text, namespace=self.netns)
        except NetworkError as exc:
            log.debug("nft script that failed:\n%s", text)
            raise FirewallError(f"nft refused the filter: {exc}") from None

    def _read(self) -> _State:
        docs = []
        for family in ("bridge", "inet"):
            try:
                output = linux.nft(f"list table {family} {self.table}", namespace=self.netns, json_output=True)
            except NetworkError as exc:
                if "No such file or directory" in str(exc):
                    continue  # not made yet
                raise FirewallError(f"cannot read the {family} filter table: {exc}") from None
            try:
                docs.append(json.loads(output))
            except ValueError as exc:
                raise FirewallError(f"nft printed JSON that cannot be read: {exc}") from None
        return _parse_state(docs)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with _table_locks(f"{self.netns or ''}/{self.table}"):
            yield

    def _ensure_bridge_netfilter(self) -> None:
        """br_netfilter must hand bridged IP to the inet hooks, or no stateful rule would apply."""
        for key in ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"):
            path = "/proc/sys/" + key.replace(".", "/")
            if self.netns is None and os.path.exists(path):
                with open(path) as f:
                    if f.read().strip() == "1":
                        continue
            try:
                linux.run(["sysctl", "-q", "-w", f"{key}=1"], namespace=self.netns)
            except NetworkError as exc:
                raise FirewallError(f"cannot set {key}=1 (is br_netfilter available?): {exc}") from None

    def _base(self) -> list[str]:
        """The two tables with their maps and hook chains (declared and refilled: idempotent)."""
        t = self.table
        from_, to = f"0x{self.tag:08x}", f"0x{self.tag | TO_PORT:08x}"
        return [
            f"table bridge {t} {{",
            "  map ports { typeof iifname : verdict; }",
            "  map mark_from { typeof iifname : meta mark; }",
            "  map mark_to { typeof oifname : meta mark; }",
            "  chain prerouting { type filter hook prerouting priority -300; policy accept; }",
            "  chain forward { type filter hook forward priority -200; policy accept; }",
            "}",
            f"table inet {t} {{",
            "  map zones { typeof iifname : ct zone; }",
            "  map tap_zones { typeof iifname : ct zone; }",
            "  map egress { typeof meta mark : verdict; }",
            "  map ingress { typeof meta mark : verdict; }",
            "  chain raw_prerouting { type filter hook prerouting priority raw; policy accept; }",
            "  chain raw_output { type filter hook output priority raw; policy accept; }",
            "  chain egress_hook { type filter hook prerouting priority mangle; policy accept; }",
            "  chain ingress_hook { type filter hook forward priority filter; policy accept; }",
            "}",
            f"flush chain bridge {t} prerouting",
            f"add rule bridge {t} prerouting iifname vmap @ports",
            f"add rule bridge {t} prerouting meta mark set iifname map @mark_from",
            f"flush chain bridge {t} forward",
            f"add rule bridge {t} forward meta mark set oifname map @mark_to",
            f"flush chain inet {t} raw_prerouting",
            f"add rule inet {t} raw_prerouting ct zone set iifname map @zones",
            f"flush chain inet {t} raw_output",
            f"add rule inet {t} raw_output ct zone set oifname map @zones",
            f"flush chain inet {t} egress_hook",
            f"add rule inet {t} egress_hook meta mark vmap @egress",
            f"add rule inet {t} egress_hook meta mark & 0x{DIRECTION_MASK:08x} == {from_} meta mark set 0",
            f"flush chain inet {t} ingress_hook",
            f"add rule inet {t} ingress_hook meta mark vmap @ingress",
            f"add rule inet {t} ingress_hook meta mark & 0x{DIRECTION_MASK:08x} == {to} meta mark set 0",
        ]

    # -- ports ------------------------------------------------------------------------------

    def apply_port(self, spec: PortSpec) -> bool:
        """Make the port's filter match ``spec`` (no filter at all without port security).

        Its tap may not exist yet: the rules match it by name. Returns True if anything changed.
        """
        if not spec.port_security_enabled:
            return self.remove_port(spec.id)
        tap = names.tap_name(spec.id)
        bridge = names.bridge_name(spec.network_id)
        addresses = _Addresses.of(spec)
        sets = _group_sets(spec, tap)
        egress, ingress = _chain_rules(spec, tap)
        spoof = _spoof_rules(addresses)
        digest = hashlib.sha256(json.dumps([bridge, spoof, egress, ingress, sorted(sets)]).encode()).hexdigest()
        t = self.table

        with self._locked():
            state = self._read()
            index = state.indexes.get(tap) or _free_number(state.indexes.values(), 1, MAX_INDEX, "port index")
            zones = state.map("inet", "zones")
            zone = zones.get(bridge) or _free_number(zones.values(), self.zone_start, MAX_ZONE, "conntrack zone")
            old_zone = state.map("inet", "tap_zones").get(tap)
            if state.digests.get(tap) == digest and old_zone == zone:
                return self._refill_sets(state, tap, sets, spec.generation, zone)
            self._ensure_bridge_netfilter()
            script = self._base() + self._replace_chain("bridge", f"spoof_{tap}", spoof)
            # The chains are emptied before their old sets go, and filled once the new sets exist.
            script += [f"add chain inet {t} eg_{tap}", f"flush chain inet {t} eg_{tap}",
                       f"add chain inet {t} in_{tap}", f"flush chain inet {t} in_{tap}"]
            script += [f"delete set inet {t} {name}" for name in state.port_sets(tap) if name not in sets]
            for name, members in self._newest_members(state, tap, sets, spec.generation).items():
                kind = f"ipv{_set_version(name)}_addr"
                script.append(f"add set inet {t} {name} {{ type {kind}; flags interval; auto-merge; }}")
                script += self._fill(name, members)
            ingress = [f'{ingress[0]} comment "{DIGEST_PREFIX}{digest}"'] + ingress[1:]
            script += [f"add rule inet {t} eg_{tap} {rule}" for rule in egress]
            script += [f"add rule inet {t} in_{tap} {rule}" for rule in ingress]
            if old_zone is not None and old_zone != zone:
                script.append(f'delete element inet {t} tap_zones {{ "{tap}" }}')
                script += self._release_zone(state, tap, old_zone)
            script += [
                f'add element bridge {t} ports {{ "{tap}" : jump spoof_{tap} }}',
                f'add element bridge {t} mark_from {{ "{tap}" : 0x{self.mark_from(index):08x} }}',
                f'add element bridge {t} mark_to {{ "{tap}" : 0x{self.mark_to(index):08x} }}',
                f"add element inet {t} egress {{ 0x{self.mark_from(index):08x} : jump eg_{tap} }}",
                f"add element inet {t} ingress {{ 0x{self.mark_to(index):08x} : jump in_{tap} }}",
                f'add element inet {t} zones {{ "{bridge}" : {zone} }}',
                f'add element inet {t} tap_zones {{ "{tap}" : {zone} }}',
            ]
            self._apply(script)
            self._remember(tap, sets, spec.generation)
            updated = tap in state.digests
        log.info("port %s: filter %s (%d egress, %d ingress rules)", spec.id, "updated" if updated else "applied",
                 len(egress), len(ingress))
        # Connections that the old filter (or no filter) let through must not outlive it.
        self._forget_connections(zone, [net for net, _ in addresses.pairs])
        return True

    # -- remote group members ---------------------------------------------------------------

    def _fill(self, name: str, members: list[str]) -> list[str]:
        script = [f"flush set inet {self.table} {name}"]
        if members:
            script.append(f"add element inet {self.table} {name} {_elements(members)}")
        return script

    def _newest_members(self, state: _State, tap: str, sets: dict[str, list[str]], generation: int) -> dict:
        """``sets`` with the kernel's members kept where a newer member update than ``generation``
        already filled them (a port's message can be older than its group's)."""
        newest = {}
        for name, members in sets.items():
            if name in state.sets and self._holds_newer(name, generation):
                newest[name] = [_interval_text(pair, _set_version(name)) for pair in state.elements.get(name, ())]
            else:
                newest[name] = members
        return newest

    def _holds_newer(self, name: str, generation: int) -> bool:
        """The set holds members newer than ``generation`` (0: unordered, never older)."""
        return bool(generation) and generation < self._generations.get(name, 0)

    def _note_generation(self, name: str, generation: int) -> None:
        if generation > self._generations.get(name, 0):
            self._generations[name] = generation

    def _remember(self, tap: str, sets: Iterable[str], generation: int) -> None:
        """Note the generation of the members ``tap``'s sets now hold; forget its other sets."""
        sets = set(sets)
        for name in sets:
            self._note_generation(name, generation)
        for name in [n for n in self._generations if _set_tap(n) == tap and n not in sets]:
            del self._generations[name]

    def _refill(self, state: _State, wanted: dict[str, list[str]], generation: int) -> dict[str, list[str]]:
        """Refill, in one transaction, the sets of ``wanted`` whose kernel members differ, and note
        that all of them now hold ``generation``. Returns the sets refilled."""
        changed = {name: members for name, members in wanted.items()
                   if state.elements.get(name, ()) != _member_intervals(members)}
        if changed:
            self._apply([line for name, members in changed.items() for line in self._fill(name, members)])
        for name in wanted:
            self._note_generation(name, generation)
        return changed

    def _refill_sets(self, state: _State, tap: str, sets: dict[str, list[str]], generation: int, zone: int) -> bool:
        """An unchanged filter whose sets' members may differ: refill only those."""
        changed = self._refill(state, self._newest_members(state, tap, sets, generation), generation)
        if not changed:
            return False
        log.info("port %s: remote group members refilled (%d sets)", tap, len(changed))
        self._forget_removed(state, changed, {tap: zone})
        return True

    def update_group_members(self, group_id: str, members: Iterable[str], generation: int = 0) -> list[str]:
        """Refill the sets of ``group_id`` in every tap's filter with ``members`` (its ports'
        addresses), in one transaction; a set that holds a newer state is left alone. Returns
        the taps whose sets changed."""
        nets = [_network(m, f"member of remote group {group_id}") for m in members]
        by_version = {v: [str(n) for n in ipaddress.collapse_addresses(n for n in nets if n.version == v)]
                      for v in (4, 6)}
        suffix = f"_{_group_key(group_id)}"
        with self._locked():
            state = self._read()
            wanted = {name: by_version[_set_version(name)] for name in state.sets
                      if name.startswith(("rg4_", "rg6_")) and name.endswith(suffix)
                      and not self._holds_newer(name, generation)}
            changed = self._refill(state, wanted, generation)
        if not changed:
            return []
        taps = sorted({_set_tap(name) for name in changed})
        log.info("security group %s: members refilled in the filters of %d ports", group_id, len(taps))
        tap_zones = state.map("inet", "tap_zones")
        self._forget_removed(state, changed, {tap: tap_zones[tap] for tap in taps if tap in tap_zones})
        return taps

    def _forget_removed(self, state: _State, refilled: dict[str, list[str]], zones: dict[str, int]) -> None:
        """A member that left a group loses the connections it had through that group's rules
        (one conntrack pass per zone, whatever the number of its taps)."""
        gone_by_zone: dict[int, list] = {}
        for name, members in refilled.items():
            zone = zones.get(_set_tap(name))
            if zone is None:
                continue
            for first, last in _interval_difference(state.elements.get(name, ()), _member_intervals(members)):
                gone_by_zone.setdefault(zone, []).extend(_interval_networks(first, last, _set_version(name)))
        for zone, gone in gone_by_zone.items():
            self._forget_connections(zone, gone)

    def _replace_chain(self, family: str, chain: str, rules: list[str]) -> list[str]:
        head = [f"add chain {family} {self.table} {chain}", f"flush chain {family} {self.table} {chain}"]
        return head + [f"add rule {family} {self.table} {chain} {rule}" for rule in rules]

    def _release_zone(self, state: _State, tap: str, zone: int) -> list[str]:
        """Drop a network's zone once no other tap uses it."""
        if zone in {z for other, z in state.map("inet", "tap_zones").items() if other != tap}:
            return []
        return [f'delete element inet {self.table} zones {{ "{b}" }}'
                for b, z in state.map("inet", "zones").items() if z == zone]

    def _removal(self, state: _State, tap: str) -> list[str]:
        """The commands that remove every trace of ``tap`` that ``state`` holds."""
        t = self.table
        script = [f'delete element {family} {t} {name} {{ "{tap}" }}'
                  for family, name in PORT_MAPS if tap in state.map(family, name)]
        index = state.indexes.get(tap)
        if index is not None:
            for name, mark in (("egress", self.mark_from(index)), ("ingress", self.mark_to(index))):
                if mark in state.map("inet", name):
                    script.append(f"delete element inet {t} {name} {{ 0x{mark:08x} }}")
        zone = state.map("inet", "tap_zones").get(tap)
        if zone is not None:
            script += self._release_zone(state, tap, zone)
        for family, chain in (("bridge", f"spoof_{tap}"), ("inet", f"eg_{tap}"), ("inet", f"in_{tap}")):
            if f"{family}:{chain}" in state.chains:
                script += [f"flush chain {family} {t} {chain}", f"delete chain {family} {t} {chain}"]
        script += [f"delete set inet {t} {name}" for name in state.port_sets(tap)]
        return script

    def _without(self, state: _State, tap: str) -> _State:
        """``state`` as it is once ``tap`` is removed (for several removals in one transaction)."""
        maps = {key: dict(value) for key, value in state.maps.items()}
        zone = maps.get("inet:tap_zones", {}).get(tap)
        index = state.indexes.get(tap)
        for family, name in PORT_MAPS:
            maps.get(f"{family}:{name}", {}).pop(tap, None)
        if index is not None:
            maps.get("inet:egress", {}).pop(self.mark_from(index), None)
            maps.get("inet:ingress", {}).pop(self.mark_to(index), None)
        if zone is not None and zone not in maps.get("inet:tap_zones", {}).values():
            maps["inet:zones"] = {b: z for b, z in maps.get("inet:zones", {}).items() if z != zone}
        return _State(
            maps=maps,
            chains=state.chains - {f"bridge:spoof_{tap}", f"inet:eg_{tap}", f"inet:in_{tap}"},
            sets=state.sets - set(state.port_sets(tap)),
            digests={other: d for other, d in state.digests.items() if other != tap},
            tables=set(state.tables),
        )

    def remove_port(self, port_id: str) -> bool:
        """Remove every trace of the port's filter; True if there was one."""
        with self._locked():
            tap = names.tap_name(port_id)
            script = self._removal(self._read(), tap)
            if not script:
                return False
            self._apply(script)
            self._remember(tap, (), 0)
        log.info("port %s: filter removed", port_id)
        return True

    def filtered_ports(self) -> set[str]:
        """The taps that have a filter."""
        with self._locked():
            return self._read().taps

    def sync(self, ports: Iterable[PortSpec]) -> list[str]:
        """Converge to exactly ``ports`` (the filtered ports bound to this host): remove the
        filters of other taps, apply each; with no port left, the tables go too. Returns the
        taps whose filters were removed."""
        ports = [p for p in ports if p.port_security_enabled]
        keep = {names.tap_name(p.id) for p in ports}
        with self._locked():
            state = self._read()
            stale = sorted(state.taps - keep)
            if not ports:
                script = [f"delete table {family} {self.table}" for family in sorted(state.tables)]
            else:
                script = []
                for tap in stale:
                    script += self._removal(state, tap)
                    state = self._without(state, tap)
            if script:
                self._apply(script)
            for tap in stale:
                self._remember(tap, (), 0)
        errors = []
        for port in ports:
            try:
                self.apply_port(port)
            except FirewallError as exc:
                errors.append(f"port {port.id}: {exc}")
        if errors:
            raise FirewallError("; ".join(errors))
        return stale

    # -- conntrack --------------------------------------------------------------------------

    def _forget_connections(self, zone: int, networks: list) -> None:
        """Delete the zone's conntrack entries to or from any of ``networks``. Each family's pass
        walks the whole conntrack hash table in the kernel (~15 ms with 262,144 buckets, whatever
        the zone holds), so only the families of ``networks`` are walked."""
        from pyroute2 import Conntrack  # netlink, only needed here
        from pyroute2.netlink import NETLINK_NETFILTER

        def involved(entry) -> bool:
            for tup in (entry.tuple_orig, entry.tuple_reply):
                for address in (tup.saddr, tup.daddr):
                    if address and any(ipaddress.ip_address(address) in net for net in networks):
                        return True
            return False

        family_of = {4: socket.AF_INET, 6: socket.AF_INET6}
        for family in sorted({family_of[net.version] for net in networks}):
            try:
                socket_in_netns = {"fileno": linux.netlink_fd(self.netns, NETLINK_NETFILTER)} if self.netns else {}
                with Conntrack(nfgen_family=family, **socket_in_netns) as ct:
                    for entry in list(ct.dump_entries(zone=zone)):  # the kernel filters on the zone
                        if (entry.zone or 0) == zone and involved(entry):
                            with contextlib.suppress(Exception):  # gone meanwhile
                                ct.entry("del", tuple_orig=entry.tuple_orig, zone=zone)
            except Exception as exc:  # noqa: BLE001 - the filter is in place; stale entries expire
                log.warning("could not clear the connections of zone %d: %s", zone, exc)


class SecurityGroupExtension(NetworkExtension):
    """The network driver's hook (``agents.network.driver.EXTENSIONS``): filters follow ports.

    Only ports with a tap are filtered: the ports of routers and DHCP (``network:*``) are the
    cloud's own, as in Neutron."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.firewall = Firewall(owner=config.owner)

    @staticmethod
    def _has_tap(spec: PortSpec) -> bool:
        return not spec.device_owner.startswith("network:")

    def port_sync(self, spec: PortSpec) -> None:
        if self._has_tap(spec):
            self.firewall.apply_port(spec)

    def port_delete(self, port_id: str, network_id: str) -> None:
        self.firewall.remove_port(port_id)

    def security_group_members(self, spec: SecurityGroupMembersSpec) -> None:
        self.firewall.update_group_members(spec.id, spec.members, spec.generation)

    def resync(self, state: HostNetworkState) -> None:
        self.firewall.sync(p for p in state.ports if self._has_tap(p))
