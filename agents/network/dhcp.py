"""DHCP for one network: a dnsmasq in the network's namespace (``names.dhcp_namespace``).

The namespace holds one end of a veth pair (``names.dhcp_device``) with the DHCP port's MAC and
addresses; the other end (``names.veth_peer``) is a port of the network's bridge. dnsmasq serves
only what the control plane's IPAM decided:

* one ``--dhcp-range=...,static`` per DHCP subnet, so no client ever gets a dynamic lease;
* a static host entry per port (MAC -> its fixed addresses, host name) in ``host``;
* per subnet: the gateway, the DNS servers, the MTU and the classless static routes (the subnet's
  host routes, 169.254.169.254/32 via the DHCP port when this namespace serves metadata, and the
  default route, since a client that takes option 121 ignores option 3) in ``opts``.

A port added, changed or removed rewrites ``host`` and sends SIGHUP (dnsmasq rereads it, no
restart), and the lease of a removed MAC/address pair is released with a DHCPRELEASE sent from
inside the namespace: dnsmasq would otherwise refuse that address to the next port that gets it
("leased to another client") until the old lease expired. A change of subnets (the ranges are
command-line options) restarts dnsmasq. ``--no-ping`` skips the ~1 s ping before each offer (the
IPAM guarantees no duplicates); ``--port=0``: no DNS server (the subnet's DNS servers are handed
out instead).

IPv6: subnets in ``dhcpv6-stateful`` mode get their addresses by DHCPv6 (static host entries
too); ``dhcpv6-stateless`` subnets get options only; ``slaac`` subnets need no DHCP server.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from agents.network import NetworkError, linux
from agents.specs import NetworkSpec, PortSpec, SubnetSpec

__all__ = ["METADATA_ADDRESS", "DhcpConfig", "Dnsmasq", "DnsmasqProcess", "render", "send_release"]

METADATA_ADDRESS = "169.254.169.254"
# DHCPv6 answers from the link-local address: usable at once, not after duplicate detection.
DHCP_SYSCTLS = {"net.ipv6.conf.default.accept_dad": "0"}
LEASE_SECONDS = 86400
STATEFUL, STATELESS = "dhcpv6-stateful", "dhcpv6-stateless"

_HOSTNAME_BAD = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class DhcpConfig:
    """What one network's dnsmasq serves: its files and the ranges on its command line."""

    hosts: str
    opts: str
    ranges: tuple[str, ...]

    def leases(self) -> set[tuple[str, str]]:
        """The (MAC, IPv4 address) pairs of the host entries: what a client may hold a lease on."""
        pairs = set()
        for line in self.hosts.splitlines():
            mac, _, rest = line.partition(",")
            for item in rest.split(","):
                with contextlib.suppress(ValueError):
                    if ipaddress.ip_address(item).version == 4:
                        pairs.add((mac, item))
        return pairs


def _tag(subnet: SubnetSpec) -> str:
    return "subnet-" + subnet.id


def dhcp_addresses(spec: NetworkSpec) -> dict[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """subnet id -> the DHCP port's address in it, with the subnet's prefix length."""
    if spec.dhcp_port is None:
        return {}
    cidrs = {s.id: ipaddress.ip_network(s.cidr) for s in spec.subnets}
    return {
        f.subnet_id: ipaddress.ip_interface(f"{f.ip_address}/{cidrs[f.subnet_id].prefixlen}")
        for f in spec.dhcp_port.fixed_ips
        if f.subnet_id in cidrs
    }


def served_subnets(spec: NetworkSpec) -> list[SubnetSpec]:
    """The subnets dnsmasq answers on: DHCP on, an address of the DHCP port in it, and (IPv6) a
    DHCPv6 address mode."""
    addresses = dhcp_addresses(spec)
    return [
        s for s in spec.subnets
        if s.enable_dhcp and s.id in addresses and (s.ip_version == 4 or s.ipv6_address_mode in (STATEFUL, STATELESS))
    ]


def hostname(port: PortSpec, address: str) -> str:
    """A valid DHCP host name: the port's (cleaned to a DNS label), else one made of its address."""
    name = _HOSTNAME_BAD.sub("-", port.hostname.lower()).strip("-")[:63].strip("-")
    return name or "host-" + re.sub(r"[.:]+", "-", address).strip("-")


def _host_lines(spec: NetworkSpec, subnets: list[SubnetSpec]) -> list[str]:
    by_id = {s.id: s for s in subnets}
    dhcp_port = spec.dhcp_port.id if spec.dhcp_port else None
    lines = []
    for port in sorted(spec.ports, key=lambda p: p.mac_address):
        if port.id == dhcp_port:
            continue
        mac = port.mac_address.lower()
        v4 = [f.ip_address for f in port.fixed_ips if f.subnet_id in by_id and by_id[f.subnet_id].ip_version == 4]
        v6 = [f"[{f.ip_address}]" for f in port.fixed_ips
              if f.subnet_id in by_id and by_id[f.subnet_id].ipv6_address_mode == STATEFUL]
        if not v4 and not v6:
            continue
        name = hostname(port, (v4 or [f.ip_address for f in port.fixed_ips])[0])
        # One entry per IPv4 address (dnsmasq takes one IPv4 address per entry and picks the
        # entry on the subnet the request came from); the IPv6 ones ride on the first.
        lines.append(",".join([mac, *v4[:1], *v6, name]))
        lines += [f"{mac},{address},{name}" for address in v4[1:]]
    return lines


def _option_lines(spec: NetworkSpec, subnets: list[SubnetSpec]) -> list[str]:
    addresses = dhcp_addresses(spec)
    lines = []
    for subnet in subnets:
        tag = f"tag:{_tag(subnet)}"
        if subnet.ip_version == 6:
            servers = ",".join(f"[{server}]" for server in subnet.dns_nameservers)
            lines.append(f"{tag},option6:dns-server{',' + servers if servers else ''}")
            continue
        # An empty option keeps dnsmasq from offering itself as the router or DNS server.
        lines.append(f"{tag},option:router{',' + subnet.gateway_ip if subnet.gateway_ip else ''}")
        servers = ",".join(subnet.dns_nameservers)
        lines.append(f"{tag},option:dns-server{',' + servers if servers else ''}")
        lines.append(f"{tag},option:mtu,{spec.mtu}")
        routes = []
        if spec.metadata:
            routes.append((f"{METADATA_ADDRESS}/32", str(addresses[subnet.id].ip)))
        routes += [(r["destination"], r["nexthop"]) for r in subnet.host_routes
                   if ipaddress.ip_network(r["destination"]).version == 4]
        if routes:
            if subnet.gateway_ip and not any(ipaddress.ip_network(d).prefixlen == 0 for d, _ in routes):
                routes.append(("0.0.0.0/0", subnet.gateway_ip))
            value = ",".join(f"{d},{n}" for d, n in routes)
            lines.append(f"{tag},option:classless-static-route,{value}")
            lines.append(f"{tag},249,{value}")  # the same, for Windows clients
    return lines


def _range(subnet: SubnetSpec) -> str:
    network = ipaddress.ip_network(subnet.cidr)
    size = str(network.netmask) if network.version == 4 else str(network.prefixlen)
    return f"set:{_tag(subnet)},{network.network_address},static,{size},{LEASE_SECONDS}s"


def render(spec: NetworkSpec) -> DhcpConfig:
    subnets = served_subnets(spec)
    hosts = _host_lines(spec, subnets)
    opts = _option_lines(spec, subnets)
    return DhcpConfig(
        hosts="".join(line + "\n" for line in hosts),
        opts="".join(line + "\n" for line in opts),
        ranges=tuple(_range(s) for s in subnets),
    )


def send_release(namespace: str, server: str, client: str, mac: str) -> None:
    """Send dnsmasq (listening in ``namespace`` on ``server``) a DHCPRELEASE of ``client``'s lease
    of ``mac``, as the client would (RFC 2131 4.4.4). dnsmasq takes it through the loopback."""
    chaddr = bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0")
    packet = struct.pack(
        "!4BIHH4s4s4s4s16s64s128s4s",
        1, 1, 6, 0,  # BOOTREQUEST, Ethernet, 6-byte MAC, no hops
        int.from_bytes(os.urandom(4), "big"), 0, 0,
        ipaddress.IPv4Address(client).packed, bytes(4), bytes(4), bytes(4),
        chaddr, bytes(64), bytes(128), b"\x63\x82\x53\x63",  # the DHCP magic cookie
    )
    packet += bytes([53, 1, 7, 54, 4]) + ipaddress.IPv4Address(server).packed + bytes([255])
    # Made by a thread inside the namespace: pyroute2's netns.create_socket forks the agent.
    sock = linux.in_namespace(namespace, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        sock.sendto(packet, (server, 67))
    finally:
        sock.close()


class DnsmasqProcess:
    """A dnsmasq run in ``namespace`` with its files under ``directory``, found by its pid file."""

    def __init__(self, namespace: str, directory: Path) -> None:
        self.namespace = namespace
        self.directory = directory

    @property
    def pid_file(self) -> Path:
        return self.directory / "pid"

    def common_argv(self) -> list[str]:
        return [
            "dnsmasq",
            "--conf-file=/dev/null",
            "--no-hosts",
            "--no-resolv",
            "--port=0",  # no DNS server
            f"--pid-file={self.pid_file}",
            f"--log-facility={self.directory / 'log'}",
            "--except-interface=lo",
            "--bind-interfaces",
        ]

    def pid(self) -> int | None:
        """The pid of the running dnsmasq, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if f"--pid-file={self.pid_file}".encode() in cmdline else None

    def running_argv(self) -> list[str] | None:
        pid = self.pid()
        if pid is None:
            return None
        with contextlib.suppress(OSError):
            return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        return None

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)  # dnsmasq reads its files after dropping root

    def start(self, argv: list[str]) -> None:
        """Run ``argv`` unless it runs already; a dnsmasq with other arguments is replaced."""
        running = self.running_argv()
        if running == argv:
            return
        if running is not None:
            self.stop()
        linux.run(argv, namespace=self.namespace)  # dnsmasq forks into the background once it serves
        if self.pid() is None:
            raise NetworkError(f"dnsmasq in {self.namespace} did not start (see {self.directory / 'log'})")

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            linux.kill_processes([pid])
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()


class Dnsmasq(DnsmasqProcess):
    """The DHCP server of one network."""

    def __init__(self, namespace: str, device: str, directory: Path) -> None:
        super().__init__(namespace, directory)
        self.device = device

    @property
    def hosts_file(self) -> Path:
        return self.directory / "host"

    @property
    def opts_file(self) -> Path:
        return self.directory / "opts"

    def argv(self, config: DhcpConfig) -> list[str]:
        return self.common_argv() + [
            f"--dhcp-hostsfile={self.hosts_file}",
            f"--dhcp-optsfile={self.opts_file}",
            "--quiet-dhcp",
            "--quiet-dhcp6",
            "--leasefile-ro",  # static entries only: nothing to remember across restarts
            f"--interface={self.device}",
            "--dhcp-authoritative",
            "--no-ping",
            *(f"--dhcp-range={r}" for r in config.ranges),
        ]

    def _write(self, path: Path, text: str) -> bool:
        """Replace ``path`` atomically if its content differs; True if it changed."""
        with contextlib.suppress(FileNotFoundError):
            if path.read_text() == text:
                return False
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)  # dnsmasq rereads it after dropping root
        os.replace(tmp, path)
        return True

    def _old_config(self) -> DhcpConfig:
        def read(path: Path) -> str:
            with contextlib.suppress(FileNotFoundError):
                return path.read_text()
            return ""

        return DhcpConfig(hosts=read(self.hosts_file), opts=read(self.opts_file), ranges=())

    def ensure(self, config: DhcpConfig, servers: dict[ipaddress.IPv4Network, str]) -> None:
        """Serve ``config``: start dnsmasq, or reload it (SIGHUP) if only the files changed, or
        restart it if its command line changed. ``servers`` maps each IPv4 subnet to the DHCP
        port's address in it (the server of a lease to release)."""
        self.prepare()
        old = self._old_config()
        changed = self._write(self.hosts_file, config.hosts)
        changed = self._write(self.opts_file, config.opts) or changed
        argv = self.argv(config)
        if self.running_argv() == argv:
            if changed:
                os.kill(self.pid(), signal.SIGHUP)
                self._release(old.leases() - config.leases(), servers)
            return
        self.start(argv)

    def _release(self, pairs: set[tuple[str, str]], servers: dict[ipaddress.IPv4Network, str]) -> None:
        for mac, address in sorted(pairs):
            server = next((s for net, s in servers.items() if ipaddress.ip_address(address) in net), None)
            if server is not None:
                send_release(self.namespace, server, address, mac)
