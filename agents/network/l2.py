"""Layer 2 of a host: a bridge per network, its uplink, taps, and the external host bridge.

Every network has its own bridge on every host that needs it, ``brq<id>`` (``names.bridge_name``),
whatever its type, so a tap, a DHCP port or a router leg always plugs into the same name. What
connects that bridge beyond the host depends on the type:

* ``local``, and ``vlan`` / ``vxlan`` on a single box: nothing (the bridge is the whole network);
* ``flat``: a veth pair, ``up-<id>`` on the network's bridge and ``ph-<id>`` on the bridge of its
  physical network (``CLOUDMGR_BRIDGE_MAPPINGS``, e.g. ``public`` -> ``br-ex``), as Neutron's
  Linux bridge agent enslaves a physical interface;
* ``vxlan`` across hosts (a later issue): a VXLAN device ``vxlan-<VNI>`` (``names.vxlan_device``,
  VNI = segmentation id) joins the network's bridge in the same place as the flat uplink.

The external bridge (``CLOUDMGR_EXTERNAL_BRIDGE``) carries the host's own address on the external
network (``CLOUDMGR_EXTERNAL_CIDR``); the host routes for it and masquerades what leaves the range
(an nftables table ``ip cloudmgr_ext_<bridge>``), so floating IPs answer the host itself and
routers reach the world through it.
"""

from __future__ import annotations

import re

from pyroute2 import IPRoute

from agents import names
from agents.network import NetworkError, linux
from agents.network.config import NetworkConfig
from agents.specs import NetworkSpec

__all__ = ["ensure_external", "ensure_network_bridge", "external_table", "plug_tap", "remove_network_bridge",
           "uplink_names"]

BRIDGE_PREFIX = "brq"
UPLINK_PREFIXES = ("up-", "ph-")


def uplink_names(network_id: str) -> tuple[str, str]:
    """(the end on the network's bridge, the end on the physical bridge) of a flat network's uplink."""
    hexid = network_id.replace("-", "").lower()
    return tuple((prefix + hexid)[: names.IFNAME_MAX - 1] for prefix in UPLINK_PREFIXES)


def external_table(bridge: str) -> str:
    return "cloudmgr_ext_" + re.sub(r"[^A-Za-z0-9_]", "_", bridge)


def ensure_external(ipr: IPRoute, config: NetworkConfig) -> int:
    """The external bridge with the host's address on it, forwarding on, and the host's NAT for
    the range. Returns the bridge's index."""
    if config.external_cidr is None:
        raise NetworkError("this host has no external network (CLOUDMGR_EXTERNAL_CIDR is empty)")
    cidr = config.external_cidr
    index = linux.ensure_bridge(ipr, config.external_bridge)  # not tagged: resync never removes it
    linux.sync_addresses(ipr, index, [cidr], remove_others=False)
    # The host routes the external network's traffic to the world (as devstack's host does).
    with open("/proc/sys/net/ipv4/ip_forward", "r+") as forward:
        if forward.read().strip() != "1":
            forward.seek(0)
            forward.write("1")
    table = external_table(config.external_bridge)
    network = cidr.network
    # br_netfilter passes bridged frames through these hooks too, with the bridge as their output
    # device: a floating IP's DNATed packet from the host crossing a tenant bridge must not be
    # masqueraded there (its answer would go straight to the host, around the router's NAT).
    linux.nft(
        f"table ip {table}\n"
        f"delete table ip {table}\n"
        f"table ip {table} {{\n"
        f"  chain postrouting {{\n"
        f"    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    ip saddr {network} ip daddr != {network} oifname != "{BRIDGE_PREFIX}*"'
        f' oifname != "{config.external_bridge}" masquerade\n'
        f"  }}\n"
        f"}}\n"
    )
    return index


def _physical_bridge(ipr: IPRoute, config: NetworkConfig, spec: NetworkSpec) -> int:
    bridge = config.bridge_mappings.get(spec.physical_network or "")
    if bridge is None:
        raise NetworkError(
            f"physical network {spec.physical_network!r} of network {spec.id} is not mapped to a bridge on this "
            f"host (CLOUDMGR_BRIDGE_MAPPINGS: {', '.join(f'{k}:{v}' for k, v in config.bridge_mappings.items())})"
        )
    if bridge == config.external_bridge and config.external_cidr is not None:
        return ensure_external(ipr, config)
    msg = linux.link(ipr, bridge)
    if msg is None:
        raise NetworkError(f"bridge {bridge} of physical network {spec.physical_network!r} does not exist")
    return msg["index"]


def ensure_network_bridge(ipr: IPRoute, config: NetworkConfig, spec: NetworkSpec) -> int:
    """The network's bridge, with its uplink for a flat network. Returns the bridge's index."""
    index = linux.ensure_bridge(ipr, names.bridge_name(spec.id), mtu=spec.mtu, tag=config.owner_tag)
    if spec.network_type == "flat":
        physical = _physical_bridge(ipr, config, spec)
        inner, outer = uplink_names(spec.id)
        if linux.link(ipr, inner) is None or linux.link(ipr, outer) is None:
            linux.delete_link(ipr, inner)
            linux.delete_link(ipr, outer)
            ipr.link("add", ifname=inner, kind="veth", peer={"ifname": outer})
        for end, bridge in ((inner, index), (outer, physical)):
            linux.disable_ipv6(end)
            linux.set_link(ipr, linux.link(ipr, end), mtu=spec.mtu, master=bridge, ifalias=config.owner_tag)
            linux.set_link(ipr, linux.link(ipr, end), state="up")
    return index


def remove_network_bridge(ipr: IPRoute, network_id: str) -> None:
    for end in uplink_names(network_id):
        linux.delete_link(ipr, end)
    linux.delete_link(ipr, names.bridge_name(network_id))


def plug_tap(ipr: IPRoute, config: NetworkConfig, *, bridge: str, port_id: str, mac: str, mtu: int,
             admin_state_up: bool = True) -> str:
    """A port's tap on ``bridge``, IPv6 off, with ``mtu``, up, or link-down when the port (or its
    network) is administratively down. A network's bridge (``brq...``) is made if missing, so a
    guest can be plugged before its network's sync has run; any other bridge must exist. Returns
    the tap's name."""
    if bridge.startswith(BRIDGE_PREFIX):
        index = linux.ensure_bridge(ipr, bridge, mtu=mtu, tag=config.owner_tag)
    else:
        msg = linux.link(ipr, bridge)
        if msg is None or msg.get(("linkinfo", "kind")) != "bridge":
            raise NetworkError(f"bridge {bridge} does not exist")
        index = msg["index"]
    tap = names.tap_name(port_id)
    linux.ensure_tap(ipr, tap, bridge=index, mac=mac, mtu=mtu, tag=config.owner_tag, up=admin_state_up)
    return tap
