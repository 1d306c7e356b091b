"""Neutron's statuses and the fixed vocabularies of the networks domain.

Networks, routers and ports have no transitions a user asks for: their status reports what the
data plane did. A port is DOWN until the agent of its host (or of the network host, for DHCP and
router ports) applied it, then ACTIVE; ERROR when the agent could not. A floating IP is ACTIVE
while it is associated with a port and its router was applied, DOWN otherwise.
"""

from django.db import models


class Status(models.TextChoices):
    ACTIVE = "ACTIVE"
    DOWN = "DOWN"
    BUILD = "BUILD"
    ERROR = "ERROR"


class NetworkType(models.TextChoices):
    """ML2's network types. ``local``: a bridge on one host; ``flat``: the bridge of a physical
    network (the external network's host bridge); ``vlan``/``vxlan``: segmented, the VXLAN
    device of a network joins its bridge when multi-host comes."""

    LOCAL = "local"
    FLAT = "flat"
    VLAN = "vlan"
    VXLAN = "vxlan"


# The MTU of a network type when none is asked for: VXLAN's encapsulation takes 50 bytes.
DEFAULT_MTU = {NetworkType.LOCAL: 1500, NetworkType.FLAT: 1500, NetworkType.VLAN: 1500, NetworkType.VXLAN: 1450}
MAX_MTU = {NetworkType.LOCAL: 9000, NetworkType.FLAT: 1500, NetworkType.VLAN: 1500, NetworkType.VXLAN: 1450}
VLAN_RANGE = (1, 4094)
VXLAN_MAX_VNI = 2**24 - 1


class Direction(models.TextChoices):
    INGRESS = "ingress"
    EGRESS = "egress"


class EtherType(models.TextChoices):
    IPV4 = "IPv4"
    IPV6 = "IPv6"


class Ipv6Mode(models.TextChoices):
    SLAAC = "slaac"
    DHCPV6_STATEFUL = "dhcpv6-stateful"
    DHCPV6_STATELESS = "dhcpv6-stateless"


# IPv6 modes whose addresses the guest makes itself from the prefix and its MAC (EUI-64); the
# IPAM computes the same address instead of taking one from the pools.
AUTO_ADDRESS_MODES = (Ipv6Mode.SLAAC, Ipv6Mode.DHCPV6_STATELESS)

# Neutron's device owners. Ports owned by "network:*" are the cloud's own plumbing: only admins
# make them by hand, and they do not count against the project's port quota.
OWNER_DHCP = "network:dhcp"
OWNER_ROUTER_INTERFACE = "network:router_interface"
OWNER_ROUTER_GATEWAY = "network:router_gateway"
OWNER_FLOATINGIP = "network:floatingip"
OWNER_COMPUTE = "compute:nova"
NETWORK_OWNER_PREFIX = "network:"

# Protocols by name (Neutron's), and the ones whose rules take port ranges.
PROTOCOLS = {
    "ah": 51, "dccp": 33, "egp": 8, "esp": 50, "gre": 47, "icmp": 1, "icmpv6": 58, "igmp": 2, "ipip": 4,
    "ipv6-encap": 41, "ipv6-frag": 44, "ipv6-icmp": 58, "ipv6-nonxt": 59, "ipv6-opts": 60, "ipv6-route": 43,
    "ospf": 89, "pgm": 113, "rsvp": 46, "sctp": 132, "tcp": 6, "udp": 17, "udplite": 136, "vrrp": 112,
}
PORT_RANGE_PROTOCOLS = {"tcp", "udp", "sctp", "udplite", "dccp", "6", "17", "132", "136", "33"}
ICMP_PROTOCOLS = {"icmp", "ipv6-icmp", "icmpv6", "1", "58"}
