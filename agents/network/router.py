"""Routers: a namespace per router (``names.router_namespace``) with forwarding on.

* a leg per attached subnet: a veth pair, ``qr-<port>`` inside with the router port's MAC and
  address, ``ns-<port>`` on the subnet's network bridge;
* a gateway on the external network: ``qg-<port>`` the same way, with the router's external
  address and every floating IP (as /32, so the namespace answers ARP for them), and the default
  route via the external subnet's gateway (the host's address on the external bridge);
* the router's static routes (protocol ``static``, so a sync can tell its own from the kernel's);
* NAT, one nftables table ``ip cloudmgr_nat`` in the namespace, replaced atomically on each sync:
  a DNAT (prerouting, and output for the namespace's own traffic) and SNAT pair per floating IP,
  then SNAT of everything else that leaves through the gateway to the router's external address;
* router advertisements on IPv6 legs whose subnet has an ``ipv6_ra_mode``: a dnsmasq in the
  namespace that advertises only (files under ``<data>/network/router/<router_id>/``).

Removing a floating IP also deletes its connection-tracking entries, so flows already NATed to
it stop at once instead of living on until they time out. An address newly put on the gateway
(the router's external address, a floating IP) is announced with gratuitous ARPs from the
namespace (``arping -U``, in the background, best effort), so the external network's neighbours
(the host first) learn its MAC at once instead of after a failed lookup and ARP's 1 s retry.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterable

from pyroute2 import IPRoute
from pyroute2.conntrack import Conntrack
from pyroute2.netlink import NETLINK_NETFILTER
from pyroute2.netlink.exceptions import NetlinkError

from agents import names
from agents.network import l2, linux
from agents.network.config import NetworkConfig
from agents.network.dhcp import DnsmasqProcess
from agents.specs import NetworkSpec, RouterInterfaceSpec, RouterSpec, SubnetSpec

__all__ = ["ARPING", "GARP_COUNT", "NAT_TABLE", "RA_MODES", "ROUTER_SYSCTLS", "RouterAdvertiser", "advertised",
           "announce", "ensure_router", "leg_network", "remove_router", "render_nat", "send_gratuitous_arps"]

log = logging.getLogger(__name__)

NAT_TABLE = "cloudmgr_nat"
LEG_PREFIXES = ("qr-", "qg-")
ROUTER_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    # Legs' addresses come from the IPAM: no duplicate to detect, and the link-local address
    # router advertisements are sent from is usable at once.
    "net.ipv6.conf.default.accept_dad": "0",
}
# ipv6_ra_mode -> dnsmasq's mode: SLAAC only (A flag); SLAAC and options by DHCPv6 (A, O);
# addresses by DHCPv6 (M).
RA_MODES = {"slaac": "ra-only", "dhcpv6-stateless": "ra-stateless", "dhcpv6-stateful": "static"}
# Gratuitous ARPs per new address, a second apart: the second reaches a neighbour that missed the first.
GARP_COUNT = 2
ARPING = "arping"  # iputils-arping (scripts/host-setup.sh installs it)


def render_nat(spec: RouterSpec) -> str | None:
    """The router's NAT table (nft syntax), or None when it needs none."""
    if spec.gateway is None:
        return None
    gateway = names.router_gateway(spec.gateway.port_id)
    dnat, snat = [], []
    for fip in sorted(spec.floating_ips, key=lambda f: f.floating_ip_address):
        dnat.append(f"ip daddr {fip.floating_ip_address} dnat to {fip.fixed_ip_address}")
        snat.append(f'oifname "{gateway}" ip saddr {fip.fixed_ip_address} snat to {fip.floating_ip_address}')
    if spec.enable_snat:
        snat.append(f'oifname "{gateway}" snat to {spec.gateway.ip_address}')
    if not dnat and not snat:
        return None

    def chain(name: str, hook: str, priority: str, rules: list[str]) -> str:
        body = "".join(f"    {rule}\n" for rule in rules)
        return f"  chain {name} {{\n    type nat hook {hook} priority {priority}; policy accept;\n{body}  }}\n"

    return (
        f"table ip {NAT_TABLE} {{\n"
        + chain("prerouting", "prerouting", "dstnat", dnat)
        + chain("output", "output", "-100", dnat)
        + chain("postrouting", "postrouting", "srcnat", snat)
        + "}\n"
    )


def _legs(spec: RouterSpec) -> dict[str, RouterInterfaceSpec]:
    legs = {names.router_leg(i.port_id): i for i in spec.interfaces}
    if spec.gateway is not None:
        legs[names.router_gateway(spec.gateway.port_id)] = spec.gateway
    return legs


def leg_network(leg: RouterInterfaceSpec) -> NetworkSpec:
    """The network a leg plugs into (a plain local bridge if the spec did not say)."""
    return leg.network or NetworkSpec(id=leg.network_id)


def _flush_conntrack(namespace: str, addresses: set[str]) -> None:
    """Forget the NATed connections of floating IPs that are gone."""
    if not addresses:
        return
    with contextlib.closing(Conntrack(fileno=linux.netlink_fd(namespace, NETLINK_NETFILTER))) as ct:
        # Read them all first: a request while the dump runs ends the dump.
        stale = [e for e in ct.dump_entries()
                 if e.tuple_orig.daddr in addresses or e.tuple_reply.daddr in addresses]
        for entry in stale:
            with contextlib.suppress(NetlinkError):  # it ended meanwhile
                ct.entry("del", tuple_orig=entry.tuple_orig)


def advertised(spec: RouterSpec) -> list[tuple[str, SubnetSpec]]:
    """(leg device, subnet) of each IPv6 leg whose subnet has the router advertise (``ipv6_ra_mode``)."""
    legs = []
    for leg in spec.interfaces:
        cidr = ipaddress.ip_network(leg.cidr, strict=False)
        if cidr.version != 6 or leg.network is None:
            continue
        legs += [(names.router_leg(leg.port_id), subnet) for subnet in leg.network.subnets
                 if subnet.ipv6_ra_mode in RA_MODES and ipaddress.ip_network(subnet.cidr) == cidr]
    return sorted(legs, key=lambda item: (item[0], item[1].id))


def send_gratuitous_arps(namespace: str, device: str, addresses: Iterable[str], *,
                         count: int = GARP_COUNT) -> list[str]:
    """Announce ``addresses`` (IPv4, on ``device`` in ``namespace``) with ``count`` gratuitous ARP
    requests each (iputils ``arping -U``: sender and target are the address), all addresses at
    once. Best effort: returns the failures, each also logged as a warning."""
    procs = {}
    failures = []
    for address in sorted(set(addresses)):
        argv = ["ip", "netns", "exec", namespace, ARPING, "-U", "-c", str(count), "-w", str(count + 1),
                "-I", device, address]
        try:
            procs[address] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            failures.append(f"gratuitous ARP for {address} on {device} in {namespace} could not run: {exc}")
    for address, proc in procs.items():
        try:
            _, stderr = proc.communicate(timeout=linux.COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"gratuitous ARP for {address} on {device} in {namespace} failed "
                            f"(exit {proc.returncode}): {(stderr or '').strip()[-300:]}")
    for failure in failures:
        log.warning("%s", failure)
    return failures


def announce(namespace: str, device: str, addresses: Iterable[str]) -> threading.Thread | None:
    """Send the gratuitous ARPs of ``addresses`` in a background thread (they take a second or two,
    and the sync must not wait for them); the thread, or None when there is nothing to announce."""
    addresses = sorted(set(addresses))
    if not addresses:
        return None
    thread = threading.Thread(target=send_gratuitous_arps, args=(namespace, device, addresses),
                              name=f"garp-{device}", daemon=True)
    thread.start()
    return thread


class RouterAdvertiser(DnsmasqProcess):
    """A dnsmasq in the router's namespace that only sends router advertisements (as Neutron's
    radvd): the prefix, its flags, and a default route via the router's link-local address."""

    def argv(self, legs: list[tuple[str, SubnetSpec]]) -> list[str]:
        argv = self.common_argv() + [
            "--enable-ra",
            "--quiet-ra",
            "--dhcp-ignore=tag:!known",  # it knows no hosts: the network's DHCP namespace answers DHCPv6
        ]
        argv += [f"--interface={device}" for device in sorted({device for device, _ in legs})]
        for _, subnet in legs:
            network = ipaddress.ip_network(subnet.cidr)
            argv.append(f"--dhcp-range=set:subnet-{subnet.id},{network.network_address},"
                        f"{RA_MODES[subnet.ipv6_ra_mode]},{network.prefixlen}")
        return argv


def _advertiser(config: NetworkConfig, router_id: str) -> RouterAdvertiser:
    return RouterAdvertiser(names.router_namespace(router_id), config.state_dir / "router" / router_id)


def ensure_router(ipr: IPRoute, config: NetworkConfig, spec: RouterSpec) -> threading.Thread | None:
    """Converge the router to ``spec``. Returns the thread announcing the gateway's new addresses
    (gratuitous ARP, best effort), or None when no address was added there."""
    namespace = names.router_namespace(spec.id)
    legs = _legs(spec)
    floating = {f.floating_ip_address for f in spec.floating_ips}
    removed_fips: set[str] = set()
    new_external: set[str] = set()  # addresses put on the gateway now: to announce
    replaced = False  # a leg made (again) now: the advertiser must bind to the new device
    with linux.namespace(namespace, config.owner_tag, ROUTER_SYSCTLS) as nsr:
        for msg in nsr.get_links():
            name = msg.get("ifname")
            if name.startswith(LEG_PREFIXES) and name not in legs:
                nsr.link("del", index=msg["index"])  # a detached leg (its bridge end goes with it)
        for device, leg in legs.items():
            network = leg_network(leg)
            bridge = l2.ensure_network_bridge(ipr, config, network)
            before = linux.link(nsr, device)
            index = linux.ensure_veth(ipr, nsr, names.veth_peer(leg.port_id), peer=device, namespace=namespace,
                                      bridge=bridge, mtu=network.mtu, tag=config.owner_tag, peer_mac=leg.mac_address)
            replaced = replaced or before is None or before["index"] != index
            prefix = ipaddress.ip_network(leg.cidr, strict=False).prefixlen
            wanted = [ipaddress.ip_interface(f"{leg.ip_address}/{prefix}")]
            if leg is spec.gateway:
                wanted += [ipaddress.ip_interface(f"{address}/32") for address in floating]
                removed_fips = {
                    str(a.get("address")) for a in nsr.get_addr(index=index, family=socket.AF_INET)
                    if a["prefixlen"] == 32 and a.get("address") not in floating
                }
            added = linux.sync_addresses(nsr, index, wanted)
            if leg is spec.gateway:
                new_external = {str(a.ip) for a in added if a.version == 4}
        routes = []
        if spec.gateway is not None and spec.gateway_ip:
            zero = "0.0.0.0/0" if ipaddress.ip_address(spec.gateway_ip).version == 4 else "::/0"
            routes.append((ipaddress.ip_network(zero), ipaddress.ip_address(spec.gateway_ip)))
        routes += [(ipaddress.ip_network(r["destination"]), ipaddress.ip_address(r["nexthop"])) for r in spec.routes]
        linux.sync_routes(nsr, routes)

    nat = render_nat(spec)
    script = f"table ip {NAT_TABLE}\ndelete table ip {NAT_TABLE}\n" + (nat or "")
    linux.nft(script, namespace=namespace)
    _flush_conntrack(namespace, removed_fips)

    advertiser = _advertiser(config, spec.id)
    legs6 = advertised(spec)
    if legs6:
        if replaced:
            advertiser.stop()
        advertiser.prepare()
        advertiser.start(advertiser.argv(legs6))
    else:
        advertiser.stop()
        shutil.rmtree(advertiser.directory, ignore_errors=True)

    # Last, once the NAT is in place for what the announcement draws in.
    if spec.gateway is not None:
        return announce(namespace, names.router_gateway(spec.gateway.port_id), new_external)
    return None


def remove_router(config: NetworkConfig, router_id: str) -> None:
    advertiser = _advertiser(config, router_id)
    advertiser.stop()
    linux.delete_namespace(names.router_namespace(router_id))
    shutil.rmtree(advertiser.directory, ignore_errors=True)
