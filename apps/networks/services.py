"""Network writes: networks, subnets and the IPAM, ports, routers, floating IPs, security groups,
quotas, the ports of servers, and the data plane's desired state.

Every front door (the Neutron API, the compute API for a server's ports, the commands) calls these.
They check policy on the object (Neutron's: the owner or an admin changes a thing, shared and
external networks are read-only to others), validate, write in one transaction, and register the
agent messages for after the commit (``dataplane.Sync``).

IPAM: an address is taken by inserting an ``IPAllocation`` row while holding the subnet's row
lock (``SELECT ... FOR UPDATE``; on SQLite the IMMEDIATE transaction holds the database's write
lock), and the unique constraint on (subnet, address) refuses a duplicate whatever happens; a
refused insert moves on to the next free address. Deleting the port releases the rows.
"""

import ipaddress
import logging
import re
import secrets
import uuid

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.hosts.models import Host
from apps.networks import ipam, selectors
from apps.networks.dataplane import Sync, batched_sync, host_resync
from apps.networks.errors import bad_request, conflict, forbidden, invalid_input, not_found
from apps.networks.models import (
    FloatingIP,
    IPAllocation,
    Network,
    NetworkAgent,
    Port,
    Router,
    RouterInterface,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from apps.networks.states import (
    AUTO_ADDRESS_MODES,
    DEFAULT_MTU,
    ICMP_PROTOCOLS,
    MAX_MTU,
    NETWORK_OWNER_PREFIX,
    OWNER_COMPUTE,
    OWNER_DHCP,
    OWNER_FLOATINGIP,
    OWNER_ROUTER_GATEWAY,
    OWNER_ROUTER_INTERFACE,
    PORT_RANGE_PROTOCOLS,
    PROTOCOLS,
    VLAN_RANGE,
    VXLAN_MAX_VNI,
    Direction,
    EtherType,
    Ipv6Mode,
    NetworkType,
    Status,
)
from apps.tenants.models import Project, Resource, User
from apps.tenants.services import quota_release, quota_reserve, quota_set
from cloudmgr.exceptions import Conflict, NotFound, QuotaExceeded, ValidationError
from cloudmgr.models import filter_pk

logger = logging.getLogger(__name__)

UNSET = object()
MAX_ROUTES = 30
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_HOSTNAME_CHARS = re.compile(r"[^a-z0-9-]+")


# --- helpers ---------------------------------------------------------------------------------


def _admin(user: User | None) -> bool:
    return selectors.viewer_is_admin(user)


def _require_admin(user: User | None, what: str) -> None:
    if not _admin(user):
        raise forbidden(f"(rule:{what}) is disallowed by policy.")


def _require_owner(user: User | None, project: Project | None, obj, kind: str) -> None:
    """Only the owner (or an admin) changes an object; others who can see it get 403, as Neutron."""
    if not _admin(user) and obj.project_id != getattr(project, "pk", None):
        raise forbidden(f"Policy does not allow this operation to be performed on {kind} {obj.pk}.")


def _text(value, what: str, max_length: int = 255) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid_input(f"'{value}' is not a valid string for {what}.")
    if len(value) > max_length:
        raise invalid_input(f"'{value[:20]}...' exceeds maximum length of {max_length} for {what}.")
    return value


def _bool(value, what: str) -> bool:
    if isinstance(value, bool):
        return value
    raise invalid_input(f"'{value}' is not a valid boolean value for {what}.")


def _save(obj, fields: list[str]) -> None:
    """Save changed fields and bump the revision (standard-attr-revisions)."""
    obj.revision_number += 1
    obj.save(update_fields=[*fields, "revision_number", "updated_at"])


def _reserve(project: Project, resource: str, neutron_name: str, count: int = 1) -> None:
    """Neutron's quota errors are 409 OverQuota."""
    try:
        quota_reserve(project=project, deltas={resource: count})
    except QuotaExceeded as exc:
        raise conflict("OverQuota", f"Quota exceeded for resources: ['{neutron_name}']. {exc.message}") from exc


def _counted(device_owner: str) -> bool:
    """The cloud's own ports (DHCP, router legs, floating IP holders) use no port quota."""
    return not device_owner.startswith(NETWORK_OWNER_PREFIX)


def _hostname(name: str) -> str:
    """A DHCP host name from a server name (RFC 1123 label)."""
    label = _HOSTNAME_CHARS.sub("-", name.lower()).strip("-")[:63].strip("-")
    return label or "host"


# --- networks --------------------------------------------------------------------------------


def _vni_range() -> tuple[int, int]:
    low, _, high = str(getattr(settings, "CLOUDMGR_VXLAN_VNI_RANGE", "1:1000")).partition(":")
    return max(1, int(low)), min(VXLAN_MAX_VNI, int(high or low))


def _check_segment(network_type: str, physical_network: str, segmentation_id) -> None:
    if network_type not in NetworkType.values:
        raise invalid_input(f"provider:network_type {network_type} is not supported: use one of "
                            f"{', '.join(NetworkType.values)}.")
    if network_type in (NetworkType.FLAT, NetworkType.VLAN) and not physical_network:
        raise invalid_input(f"provider:physical_network is required for {network_type} networks.")
    if network_type in (NetworkType.LOCAL, NetworkType.VXLAN) and physical_network:
        raise invalid_input(f"provider:physical_network is not allowed for {network_type} networks.")
    if network_type in (NetworkType.LOCAL, NetworkType.FLAT) and segmentation_id is not None:
        raise invalid_input(f"provider:segmentation_id is not allowed for {network_type} networks.")
    if network_type == NetworkType.VLAN:
        if segmentation_id is None or not VLAN_RANGE[0] <= segmentation_id <= VLAN_RANGE[1]:
            raise invalid_input(f"provider:segmentation_id must be a VLAN id from {VLAN_RANGE[0]} to {VLAN_RANGE[1]}.")
    if network_type == NetworkType.VXLAN and segmentation_id is not None and not 1 <= segmentation_id <= VXLAN_MAX_VNI:
        raise invalid_input(f"provider:segmentation_id must be a VNI from 1 to {VXLAN_MAX_VNI}.")


def _save_new_network(network: Network) -> None:
    """Insert; a VXLAN network without a VNI takes the lowest free one of the range (the unique
    constraint on the segment settles a race, the loser takes the next)."""
    if network.network_type != NetworkType.VXLAN or network.segmentation_id is not None:
        try:
            with transaction.atomic():
                network.save(force_insert=True)
        except IntegrityError as exc:
            raise conflict("SegmentationIdInUse", f"Unable to create the network. The {network.network_type} "
                           f"segment {network.segmentation_id} is in use.") from exc
        return
    low, high = _vni_range()
    used = set(Network.objects.filter(network_type=NetworkType.VXLAN, segmentation_id__isnull=False)
               .values_list("segmentation_id", flat=True))
    for vni in range(low, high + 1):
        if vni in used:
            continue
        network.segmentation_id = vni
        try:
            with transaction.atomic():
                network.save(force_insert=True)
            return
        except IntegrityError:
            used.add(vni)
    raise conflict("NoNetworkAvailable", "Unable to create the network. No tenant network is available for allocation.")


def network_create(
    *, user: User | None, project: Project, name: str = "", description: str = "", admin_state_up: bool = True,
    shared: bool = False, external: bool = False, is_default: bool = False, mtu: int | None = None,
    network_type: str | None = None, physical_network: str | None = None, segmentation_id: int | None = None,
    port_security_enabled: bool = True, auto_allocated: bool = False,
) -> Network:
    """A network. shared, router:external, is_default and the provider attributes are for admins;
    a tenant network is of CLOUDMGR_TENANT_NETWORK_TYPE with the next free segment."""
    name, description = _text(name, "name"), _text(description, "description")
    if shared or external or is_default:
        _require_admin(user, "create_network:shared/router:external")
    if network_type is not None or physical_network is not None or segmentation_id is not None:
        _require_admin(user, "create_network:provider:network_type")
    if is_default and not external:
        raise invalid_input("is_default is only for external networks.")
    if network_type is None:
        network_type = NetworkType.FLAT if physical_network else settings.CLOUDMGR_TENANT_NETWORK_TYPE
    physical_network = physical_network or ""
    _check_segment(network_type, physical_network, segmentation_id)
    limit = MAX_MTU[network_type]
    mtu = DEFAULT_MTU[network_type] if mtu is None else mtu
    if not isinstance(mtu, int) or not 68 <= mtu <= limit:
        raise invalid_input(f"Requested MTU {mtu} is not between 68 and {limit} (the {network_type} maximum).")
    with transaction.atomic():
        _reserve(project, Resource.NETWORKS, "network")
        if is_default and Network.objects.filter(is_default=True).exists():
            raise conflict("DefaultExternalNetworkExists", "A default external network already exists.")
        network = Network(
            project=project, name=name, description=description, admin_state_up=_bool(admin_state_up, "admin_state_up"),
            shared=shared, external=external, is_default=is_default, mtu=mtu, network_type=network_type,
            physical_network=physical_network, segmentation_id=segmentation_id,
            port_security_enabled=_bool(port_security_enabled, "port_security_enabled"), auto_allocated=auto_allocated,
        )
        _save_new_network(network)
    logger.info("network %s (%s, %s %s) created", network.pk, network.name, network.network_type,
                network.segmentation_id or network.physical_network)
    return network


_NETWORK_UPDATABLE = {"name", "description", "admin_state_up", "shared", "external", "is_default", "mtu",
                      "port_security_enabled"}
IPV6_MIN_MTU = 1280  # RFC 8200


def network_update(*, network: Network, user: User | None, project: Project | None, changes: dict) -> Network:
    _require_owner(user, project, network, "network")
    unknown = set(changes) - _NETWORK_UPDATABLE
    if unknown:
        raise bad_request(f"Cannot update read-only attribute {', '.join(sorted(unknown))}.")
    if {"shared", "external", "is_default"} & set(changes):
        _require_admin(user, "update_network:shared/router:external")
    sync = Sync().network(network)
    with transaction.atomic():
        network = Network.objects.select_for_update().get(pk=network.pk)
        fields = []
        for key in ("name", "description"):
            if key in changes:
                setattr(network, key, _text(changes[key], key))
                fields.append(key)
        for key in ("admin_state_up", "port_security_enabled"):
            if key in changes:
                setattr(network, key, _bool(changes[key], key))
                fields.append(key)
        if "mtu" in changes:
            mtu = changes["mtu"]
            limit = MAX_MTU[network.network_type]
            if not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= limit:
                raise invalid_input(f"Requested MTU {mtu} is not between 68 and {limit}.")
            # Below IPv6's minimum link MTU the kernel drops every IPv6 address of the router's
            # and the DHCP server's interfaces on the network.
            if mtu < IPV6_MIN_MTU and network.subnets.filter(ip_version=6).exists():
                raise invalid_input(f"Requested MTU {mtu} is below {IPV6_MIN_MTU}, the minimum of the network's IPv6 "
                                    "subnets.")
            network.mtu = mtu
            fields.append("mtu")
        if "shared" in changes:
            shared = _bool(changes["shared"], "shared")
            if not shared and network.shared and network.ports.exclude(project=network.project).exclude(
                    device_owner__startswith=NETWORK_OWNER_PREFIX).exists():
                raise conflict("InvalidSharedSetting", f"Unable to reconfigure sharing settings for network "
                               f"{network.pk}. Multiple tenants are using it.")
            network.shared = shared
            fields.append("shared")
        if "external" in changes:
            external = _bool(changes["external"], "router:external")
            if not external and network.external and Router.objects.filter(gateway_network=network).exists():
                raise conflict("ExternalNetworkInUse", f"External network {network.pk} cannot be updated, as it is "
                               "used by one or more router gateways.")
            network.external = external
            fields.append("external")
        if "is_default" in changes:
            is_default = _bool(changes["is_default"], "is_default")
            if is_default and not network.external:
                raise invalid_input("is_default is only for external networks.")
            if is_default and Network.objects.filter(is_default=True).exclude(pk=network.pk).exists():
                raise conflict("DefaultExternalNetworkExists", "A default external network already exists.")
            network.is_default = is_default
            fields.append("is_default")
        if fields:
            _save(network, fields)
        if {"admin_state_up", "mtu"} & set(fields):
            # The taps of its bound ports follow its admin state and MTU (their specs carry both);
            # its bridge, DHCP veth and router legs take the MTU from the network's and routers' specs.
            sync.bound_ports_of(network)
        if "mtu" in fields:
            sync.routers_on(network)
        sync.send()
    return network


def network_delete(*, network: Network, user: User | None, project: Project | None) -> None:
    """Refused while ports other than its DHCP port use it (NetworkInUse); its subnets go too."""
    _require_owner(user, project, network, "network")
    with transaction.atomic():
        network = Network.objects.select_for_update().get(pk=network.pk)
        if network.ports.exclude(device_owner=OWNER_DHCP).exists():
            raise conflict("NetworkInUse", f"Unable to complete operation on network {network.pk}. There are one or "
                           "more ports still in use on the network.")
        sync = Sync().network_deleted(network)
        network.ports.all().delete()
        Subnet.objects.filter(network=network).delete()
        network.delete()
        quota_release(project=network.project, deltas={Resource.NETWORKS: 1})
        sync.send()
    logger.info("network %s deleted", network.pk)


# --- subnets ---------------------------------------------------------------------------------


def _clean_nameservers(value, version: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_input("dns_nameservers must be a list of IP addresses.")
    cleaned = []
    for item in value:
        address = ipam.parse_address(item, what="nameserver")
        if str(address) in cleaned:
            raise invalid_input(f"Duplicate nameserver '{item}'.")
        cleaned.append(str(address))
    return cleaned


def _clean_routes(value, version: int | None, what: str = "host_routes") -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_input(f"{what} must be a list of {{destination, nexthop}}.")
    cleaned: list[dict[str, str]] = []
    for route in value:
        if not isinstance(route, dict) or set(route) != {"destination", "nexthop"}:
            raise invalid_input(f"Each of {what} needs exactly 'destination' and 'nexthop'.")
        destination = ipam.parse_cidr(route["destination"], strict=False)
        nexthop = ipam.parse_address(route["nexthop"], what="nexthop")
        if destination.version != nexthop.version or (version is not None and destination.version != version):
            raise invalid_input(f"Route {route['destination']} via {route['nexthop']} mixes IP versions.")
        entry = {"destination": str(destination), "nexthop": str(nexthop)}
        if entry in cleaned:
            raise invalid_input(f"Duplicate route {entry['destination']} via {entry['nexthop']}.")
        cleaned.append(entry)
    return cleaned


def _clean_gateway(cidr, gateway_ip) -> str | None:
    if gateway_ip is None:
        return None
    gateway = ipam.parse_address(gateway_ip, what="gateway_ip")
    first, last = ipam.host_bounds(cidr)
    if gateway.version != cidr.version or not first <= int(gateway) <= last:
        raise invalid_input(f"Gateway IP {gateway_ip} is not a usable address of subnet {cidr}.")
    return str(gateway)


def _check_ipv6_modes(ip_version: int, cidr, ra_mode, address_mode) -> None:
    if ip_version == 4:
        if ra_mode or address_mode:
            raise invalid_input("ipv6_ra_mode and ipv6_address_mode are for IPv6 subnets only.")
        return
    for value, what in ((ra_mode, "ipv6_ra_mode"), (address_mode, "ipv6_address_mode")):
        if value is not None and value not in Ipv6Mode.values:
            raise invalid_input(f"{what} {value} is not one of {', '.join(Ipv6Mode.values)}.")
    if ra_mode and address_mode and ra_mode != address_mode:
        raise invalid_input(f"ipv6_ra_mode set to '{ra_mode}' with ipv6_address_mode set to '{address_mode}' is not "
                            "valid. If both attributes are set, they must be the same value.")
    if (address_mode in AUTO_ADDRESS_MODES or ra_mode in AUTO_ADDRESS_MODES) and cidr.prefixlen != 64:
        raise invalid_input(f"Invalid CIDR {cidr} for IPv6 address mode. OpenStack uses the EUI-64 address format, "
                            "which requires the prefix to be /64.")


def _auto_address(subnet: Subnet) -> bool:
    return subnet.ip_version == 6 and subnet.ipv6_address_mode in AUTO_ADDRESS_MODES


def subnet_create(
    *, user: User | None, project: Project, network: Network, cidr: str, ip_version: int = 4, name: str = "",
    description: str = "", gateway_ip=UNSET, allocation_pools: list | None = None,
    dns_nameservers: list | None = None, host_routes: list | None = None, enable_dhcp: bool = True,
    ipv6_ra_mode: str | None = None, ipv6_address_mode: str | None = None,
) -> Subnet:
    """A subnet of a network the caller owns. Its CIDR may overlap other networks' (another
    project's), never another subnet of the same network. With DHCP on, the network's DHCP port
    takes an address in it; an automatic-address IPv6 subnet gives every port of the network its
    EUI-64 address."""
    _require_owner(user, project, network, "network")
    name, description = _text(name, "name"), _text(description, "description")
    if ip_version not in (4, 6):
        raise invalid_input(f"{ip_version} is not in [4, 6] for ip_version.")
    if cidr is None:
        raise bad_request("A subnet needs a cidr (subnet pools are not offered).")
    net = ipam.parse_cidr(cidr, ip_version=ip_version)
    _check_ipv6_modes(ip_version, net, ipv6_ra_mode, ipv6_address_mode)
    gateway = ipam.default_gateway(net) if gateway_ip is UNSET else _clean_gateway(net, gateway_ip)
    pools = (ipam.default_pools(net, gateway) if allocation_pools is None
             else ipam.clean_pools(net, allocation_pools, gateway))
    with transaction.atomic():
        network = Network.objects.select_for_update().get(pk=network.pk)  # one subnet change at a time
        for other in network.subnets.all():
            if ipam.parse_cidr(other.cidr).overlaps(net):
                raise invalid_input(f"Requested subnet with cidr: {net} for network: {network.pk} overlaps with "
                                    f"another subnet ({other.cidr}).")
        subnet = Subnet.objects.create(
            project=project, network=network, name=name, description=description, ip_version=ip_version, cidr=str(net),
            gateway_ip=gateway, allocation_pools=pools, dns_nameservers=_clean_nameservers(dns_nameservers, ip_version),
            host_routes=_clean_routes(host_routes, ip_version), enable_dhcp=_bool(enable_dhcp, "enable_dhcp"),
            ipv6_ra_mode=ipv6_ra_mode, ipv6_address_mode=ipv6_address_mode,
        )
        sync = Sync().network(network)
        if _auto_address(subnet):
            for port in network.ports.exclude(device_owner__in=(OWNER_ROUTER_INTERFACE, OWNER_DHCP)):
                _allocate(subnet, port, ipam.eui64(net, port.mac_address))
                sync.port(port)
        _dhcp_port_sync(network, sync)
        sync.send()
    logger.info("subnet %s (%s) created on network %s", subnet.pk, subnet.cidr, network.pk)
    return subnet


_SUBNET_UPDATABLE = {"name", "description", "gateway_ip", "allocation_pools", "dns_nameservers", "host_routes",
                     "enable_dhcp"}


def subnet_update(*, subnet: Subnet, user: User | None, project: Project | None, changes: dict) -> Subnet:
    _require_owner(user, project, subnet, "subnet")
    unknown = set(changes) - _SUBNET_UPDATABLE
    if unknown:
        raise bad_request(f"Cannot update read-only attribute {', '.join(sorted(unknown))}.")
    net = ipam.parse_cidr(subnet.cidr)
    with transaction.atomic():
        network = Network.objects.select_for_update().get(pk=subnet.network_id)
        subnet = Subnet.objects.select_for_update().get(pk=subnet.pk)
        fields = []
        for key in ("name", "description"):
            if key in changes:
                setattr(subnet, key, _text(changes[key], key))
                fields.append(key)
        if "gateway_ip" in changes:
            gateway = _clean_gateway(net, changes["gateway_ip"])
            if gateway is not None and subnet.allocations.filter(ip_address=gateway).exclude(
                    port__device_owner=OWNER_ROUTER_INTERFACE).exists():
                raise conflict("GatewayIpInUse", f"Gateway ip {gateway} conflicts with an allocated IP address.")
            if subnet.router_interfaces.exists():
                raise conflict("SubnetInUse", f"Unable to complete operation on subnet {subnet.pk}: its gateway is "
                               "a router's interface.")
            subnet.gateway_ip = gateway
            fields.append("gateway_ip")
        if "allocation_pools" in changes or "gateway_ip" in changes:
            pools = changes.get("allocation_pools", subnet.allocation_pools)
            subnet.allocation_pools = ipam.clean_pools(net, pools, subnet.gateway_ip)
            fields.append("allocation_pools")
        if "dns_nameservers" in changes:
            subnet.dns_nameservers = _clean_nameservers(changes["dns_nameservers"], subnet.ip_version)
            fields.append("dns_nameservers")
        if "host_routes" in changes:
            subnet.host_routes = _clean_routes(changes["host_routes"], subnet.ip_version)
            fields.append("host_routes")
        if "enable_dhcp" in changes:
            subnet.enable_dhcp = _bool(changes["enable_dhcp"], "enable_dhcp")
            fields.append("enable_dhcp")
        if fields:
            _save(subnet, fields)
        sync = Sync().network(network)
        _dhcp_port_sync(network, sync)
        for interface in subnet.router_interfaces.select_related("router"):
            sync.router(interface.router)
        sync.send()
    return subnet


def subnet_delete(*, subnet: Subnet, user: User | None, project: Project | None) -> None:
    """Refused while a port other than the DHCP port has an address in it (SubnetInUse); an
    automatic IPv6 address of a server port goes with the subnet, as Neutron's."""
    _require_owner(user, project, subnet, "subnet")
    with transaction.atomic():
        network = Network.objects.select_for_update().get(pk=subnet.network_id)
        in_use = subnet.allocations.exclude(port__device_owner=OWNER_DHCP)
        if not _auto_address(subnet) or subnet.router_interfaces.exists():
            if in_use.exists():
                raise conflict("SubnetInUse", f"Unable to complete operation on subnet {subnet.pk}: One or more "
                               "ports have an IP allocation from this subnet.")
        sync = Sync().network(network)
        for port_id in set(in_use.values_list("port_id", flat=True)):
            sync.port(Port(pk=port_id, network_id=network.pk))
        subnet.allocations.all().delete()
        subnet.delete()
        _dhcp_port_sync(network, sync)
        sync.send()
    logger.info("subnet %s deleted", subnet.pk)


# --- IPAM ------------------------------------------------------------------------------------


def _allocate(subnet: Subnet, port: Port, address: str | None = None) -> IPAllocation:
    """Give ``port`` ``address`` in ``subnet`` (409 if taken), or the lowest free address of the
    subnet's pools (409 IpAddressGenerationFailure when there is none). Runs in the caller's
    transaction, under the subnet's row lock."""
    list(Subnet.objects.select_for_update().filter(pk=subnet.pk).values_list("pk", flat=True))
    if address is not None:
        value = ipam.parse_address(address)
        net = ipam.parse_cidr(subnet.cidr)
        first, last = ipam.host_bounds(net)
        if value.version != net.version or not first <= int(value) <= last:
            raise bad_request(f"IP address {address} is not a valid IP for the specified subnet.", "InvalidIpForSubnet")
        if str(value) == subnet.gateway_ip and port.device_owner != OWNER_ROUTER_INTERFACE:
            raise conflict("IpAddressInUse", f"IP address {value} is the gateway of subnet {subnet.pk}.")
        try:
            with transaction.atomic():
                return IPAllocation.objects.create(port=port, subnet=subnet, network_id=subnet.network_id,
                                                   ip_address=str(value))
        except IntegrityError as exc:
            raise conflict("IpAddressAlreadyAllocated", f"IP address {value} already allocated in subnet "
                           f"{subnet.pk}") from exc
    used = {int(ipaddress.ip_address(a)) for a in
            IPAllocation.objects.filter(subnet=subnet).values_list("ip_address", flat=True)}
    if subnet.gateway_ip:
        used.add(int(ipaddress.ip_address(subnet.gateway_ip)))
    attempts = 0
    for candidate in ipam.free_addresses(subnet.ip_version, subnet.allocation_pools, used):
        try:
            with transaction.atomic():
                return IPAllocation.objects.create(port=port, subnet=subnet, network_id=subnet.network_id,
                                                   ip_address=candidate)
        except IntegrityError:
            # Taken by a writer that did not hold the lock: the constraint refused the duplicate.
            attempts += 1
            if attempts >= 10:
                raise
    raise conflict("IpAddressGenerationFailure", f"No more IP addresses available on network {subnet.network_id}.")


def _requested_ips(network: Network, fixed_ips, *, user: User | None, project: Project | None,
                   device_owner: str) -> list[tuple[Subnet, str | None]]:
    """Neutron's fixed_ips request: [{subnet_id?, ip_address?}], resolved to (subnet, address)."""
    if not isinstance(fixed_ips, list):
        raise invalid_input("fixed_ips must be a list of {subnet_id, ip_address}.")
    subnets = {str(s.pk): s for s in network.subnets.all()}
    plan: list[tuple[Subnet, str | None]] = []
    for entry in fixed_ips:
        if not isinstance(entry, dict) or not entry or set(entry) - {"subnet_id", "ip_address"}:
            raise invalid_input("Each of fixed_ips needs a subnet_id, an ip_address, or both.")
        address = entry.get("ip_address")
        if address is not None:
            if not (_admin(user) or network.project_id == getattr(project, "pk", None)
                    or device_owner.startswith(NETWORK_OWNER_PREFIX)):
                raise forbidden("(rule:create_port:fixed_ips:ip_address) is disallowed by policy.")
            address = str(ipam.parse_address(address))
        if entry.get("subnet_id") is not None:
            subnet = subnets.get(str(entry["subnet_id"]))
            if subnet is None:
                raise invalid_input(f"Failed to create port on network {network.pk}, because fixed_ips included "
                                    f"invalid subnet {entry['subnet_id']}.")
        else:
            subnet = next((s for s in subnets.values()
                           if ipaddress.ip_address(address) in ipam.parse_cidr(s.cidr)), None)
            if subnet is None:
                raise bad_request(f"IP address {address} is not a valid IP for any subnet of network {network.pk}.",
                                  "InvalidIpForNetwork")
        if address is None and _auto_address(subnet):
            raise invalid_input(f"IPv6 address of subnet {subnet.pk} is made from the MAC address (automatic "
                                "mode): name the subnet only with an ip_address of another subnet, or leave it out.")
        plan.append((subnet, address))
    return plan


def _allocate_in_first_with_room(subnets: list[Subnet], port: Port) -> IPAllocation | None:
    """An address for ``port`` from the first of ``subnets`` with a free one (None if there are
    no subnets); the last subnet's IpAddressGenerationFailure (409) if none has room."""
    for subnet in subnets:
        try:
            with transaction.atomic():
                return _allocate(subnet, port)
        except Exception as exc:
            if getattr(exc, "neutron_type", "") != "IpAddressGenerationFailure" or subnet is subnets[-1]:
                raise
    return None


def _allocate_port(port: Port, network: Network, plan: list[tuple[Subnet, str | None]] | None) -> None:
    if plan is not None:
        for subnet, address in plan:
            _allocate(subnet, port, address)
        return
    # Neutron's default: one IPv4 address, one stateful IPv6 address (the first subnet with room),
    # and the EUI-64 address of every automatic-address IPv6 subnet.
    subnets = list(network.subnets.order_by("created_at"))
    for version in (4, 6):
        _allocate_in_first_with_room([s for s in subnets if s.ip_version == version and not _auto_address(s)], port)
    for subnet in subnets:
        if _auto_address(subnet):
            _allocate(subnet, port, ipam.eui64(ipam.parse_cidr(subnet.cidr), port.mac_address))


def _dhcp_port_sync(network: Network, sync: Sync) -> None:
    """The network's DHCP port: present while a subnet has DHCP on, with one address in each such
    subnet; its server runs on the network host."""
    dhcp_subnets = list(network.subnets.filter(enable_dhcp=True).order_by("created_at"))
    port = network.ports.filter(device_owner=OWNER_DHCP).first()
    if not dhcp_subnets:
        if port is not None:
            sync.port_deleted(port)
            port.delete()
        return
    if network.dhcp_host_id is None:
        network.dhcp_host = selectors.network_host()
        network.save(update_fields=["dhcp_host", "updated_at"])
    if port is None:
        port = _new_port(project=network.project, network=network, device_owner=OWNER_DHCP,
                         device_id=f"dhcp-{network.pk}", host=network.dhcp_host, port_security_enabled=False)
    have = {a.subnet_id: a for a in port.fixed_ips.all()}
    for subnet_id, allocation in have.items():
        if subnet_id not in {s.pk for s in dhcp_subnets}:
            allocation.delete()
    for subnet in dhcp_subnets:
        if subnet.pk in have:
            continue
        address = ipam.eui64(ipam.parse_cidr(subnet.cidr), port.mac_address) if _auto_address(subnet) else None
        try:
            with transaction.atomic():
                _allocate(subnet, port, address)
        except Exception as exc:
            if getattr(exc, "neutron_type", "") != "IpAddressGenerationFailure":
                raise
            logger.warning("subnet %s has no address left for its DHCP server", subnet.pk)
    if network.dhcp_host_id and port.host_id != network.dhcp_host_id:
        port.host_id = network.dhcp_host_id
        port.save(update_fields=["host", "updated_at"])
    sync.port(port)


def _random_mac() -> str:
    """Neutron's base MAC (fa:16:3e) with three random octets."""
    return "fa:16:3e:" + ":".join(f"{secrets.randbelow(256):02x}" for _ in range(3))


def _clean_mac(value) -> str:
    mac = str(value).strip().lower().replace("-", ":")
    if not _MAC.match(mac) or int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise invalid_input(f"'{value}' is not a valid unicast MAC address.")
    return mac


def _new_port(*, project: Project, network: Network, device_owner: str = "", device_id: str = "",
              mac_address: str | None = None, **fields) -> Port:
    """Insert a port with its MAC (random ones retried on the per-network unique constraint)."""
    for _ in range(8):
        port = Port(project=project, network=network, device_owner=device_owner, device_id=device_id,
                    mac_address=mac_address or _random_mac(), **fields)
        try:
            with transaction.atomic():
                port.save(force_insert=True)
            return port
        except IntegrityError as exc:
            if mac_address:
                raise conflict("MacAddressInUse", f"Unable to complete operation for network {network.pk}. The mac "
                               f"address {mac_address} is in use.") from exc
    raise conflict("MacAddressGenerationFailure", f"Unable to generate unique mac on network {network.pk}.")


# --- ports -----------------------------------------------------------------------------------


def _clean_pairs(value, port_security: bool) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_input("allowed_address_pairs must be a list of {ip_address, mac_address}.")
    if value and not port_security:
        raise conflict("AddressPairAndPortSecurityRequired", "Port Security must be enabled in order to have allowed "
                       "address pairs on a port.")
    cleaned: list[dict[str, str]] = []
    for pair in value:
        if not isinstance(pair, dict) or "ip_address" not in pair or set(pair) - {"ip_address", "mac_address"}:
            raise invalid_input("Each allowed address pair needs an ip_address (and may have a mac_address).")
        network = ipam.parse_cidr(pair["ip_address"], strict=False)
        address = str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)
        entry = {"ip_address": address}
        if pair.get("mac_address"):
            entry["mac_address"] = _clean_mac(pair["mac_address"])
        if entry in cleaned:
            raise bad_request(f"Request contains duplicate address pair: {entry}.", "DuplicateAddressPairInRequest")
        cleaned.append(entry)
    return cleaned


def _groups(project: Project, group_ids, *, user: User | None) -> list[SecurityGroup]:
    if not isinstance(group_ids, list):
        raise invalid_input("security_groups must be a list of security group ids.")
    groups = []
    for group_id in group_ids:
        group = selectors.security_group_get(user=user, project=project, group_id=group_id)
        if group.project_id != project.pk and not _admin(user):
            raise not_found("SecurityGroup", group_id)
        groups.append(group)
    return groups


def _host_by_name(user: User | None, hostname) -> Host | None:
    if hostname in (None, ""):
        return None
    _require_admin(user, "create_port:binding:host_id")
    host = Host.objects.filter(hostname=str(hostname)).first()
    if host is None:
        raise invalid_input(f"binding:host_id {hostname} is not a host of this cloud.")
    return host


def port_create(
    *, user: User | None, project: Project, network: Network, name: str = "", description: str = "",
    fixed_ips: list | None = None, mac_address: str | None = None, admin_state_up: bool = True,
    device_id: str = "", device_owner: str = "", security_groups: list | None = None,
    port_security_enabled: bool | None = None, allowed_address_pairs: list | None = None,
    host_id: str | None = None, hostname: str = "", delete_with_device: bool = False,
) -> Port:
    """A port with its MAC and addresses (see _allocate_port), the project's default security
    group unless others are named, counted in the port quota (unless the cloud's own)."""
    name, description = _text(name, "name"), _text(description, "description")
    device_id, device_owner = _text(device_id, "device_id"), _text(device_owner, "device_owner")
    owner = _admin(user) or network.project_id == project.pk
    if network.project_id != project.pk and not network.shared and not _admin(user):
        if network.external:
            raise forbidden("(rule:create_port) is disallowed by policy: the network is external.")
        raise not_found("Network", network.pk)
    if device_owner.startswith(NETWORK_OWNER_PREFIX) and not _admin(user):
        raise forbidden("(rule:create_port:device_owner) is disallowed by policy.")
    if mac_address is not None:
        if not owner:
            raise forbidden("(rule:create_port:mac_address) is disallowed by policy.")
        mac_address = _clean_mac(mac_address)
    host = _host_by_name(user, host_id)
    port_security = network.port_security_enabled if port_security_enabled is None else _bool(
        port_security_enabled, "port_security_enabled")
    pairs = _clean_pairs(allowed_address_pairs, port_security)
    with transaction.atomic():
        if security_groups is None:
            groups = [security_group_default(project=project)] if port_security and _counted(device_owner) else []
        else:
            groups = _groups(project, security_groups, user=user)
        if groups and not port_security:
            raise bad_request("Port security must be enabled and port must have an IP address in order to use "
                              "security groups.", "PortSecurityAndIPRequiredForSecurityGroups")
        if _counted(device_owner):
            _reserve(project, Resource.PORTS, "port")
        plan = None if fixed_ips is None else _requested_ips(network, fixed_ips, user=user, project=project,
                                                             device_owner=device_owner)
        port = _new_port(project=project, network=network, device_owner=device_owner, device_id=device_id,
                         mac_address=mac_address, name=name, description=description,
                         admin_state_up=_bool(admin_state_up, "admin_state_up"), host=host,
                         port_security_enabled=port_security, allowed_address_pairs=pairs, hostname=hostname,
                         delete_with_device=delete_with_device)
        _allocate_port(port, network, plan)
        if groups:
            port.security_groups.set(groups)
        Sync().port(port).members_changed(g.pk for g in groups).send()
    return port


_PORT_UPDATABLE = {"name", "description", "admin_state_up", "fixed_ips", "mac_address", "device_id", "device_owner",
                   "security_groups", "port_security_enabled", "allowed_address_pairs", "host_id"}


def port_update(*, port: Port, user: User | None, project: Project | None, changes: dict) -> Port:
    _require_owner(user, project, port, "port")
    unknown = set(changes) - _PORT_UPDATABLE
    if unknown:
        raise bad_request(f"Cannot update read-only attribute {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        port = Port.objects.select_for_update().select_related("network").get(pk=port.pk)
        network = port.network
        old_groups = set(port.security_groups.values_list("pk", flat=True))
        old_host = port.host_id
        was_counted = _counted(port.device_owner)
        fields = []
        for key in ("name", "description", "device_id"):
            if key in changes:
                setattr(port, key, _text(changes[key], key))
                fields.append(key)
        if "device_owner" in changes:
            owner = _text(changes["device_owner"], "device_owner")
            if (owner.startswith(NETWORK_OWNER_PREFIX) or port.device_owner.startswith(NETWORK_OWNER_PREFIX)) \
                    and not _admin(user):
                raise forbidden("(rule:update_port:device_owner) is disallowed by policy.")
            port.device_owner = owner
            fields.append("device_owner")
        if "admin_state_up" in changes:
            port.admin_state_up = _bool(changes["admin_state_up"], "admin_state_up")
            fields.append("admin_state_up")
        if "mac_address" in changes:
            if not (_admin(user) or network.project_id == getattr(project, "pk", None)):
                raise forbidden("(rule:update_port:mac_address) is disallowed by policy.")
            if port.host_id is not None:
                raise conflict("PortBound", f"Unable to complete operation on port {port.pk}, port is already bound, "
                               f"port type: bridge, old_mac {port.mac_address}, new_mac {changes['mac_address']}.")
            port.mac_address = _clean_mac(changes["mac_address"])
            fields.append("mac_address")
        if "host_id" in changes:
            port.host = _host_by_name(user, changes["host_id"])
            fields.append("host")
        if "port_security_enabled" in changes:
            port.port_security_enabled = _bool(changes["port_security_enabled"], "port_security_enabled")
            fields.append("port_security_enabled")
        groups = None
        if "security_groups" in changes:
            groups = _groups(port.project, changes["security_groups"] or [], user=user)
        final_groups = old_groups if groups is None else {g.pk for g in groups}
        if final_groups and not port.port_security_enabled:
            raise conflict("PortSecurityPortHasSecurityGroup", "Port has security group associated. Cannot disable "
                           "port security or ip address until security group is removed.")
        if "allowed_address_pairs" in changes or "port_security_enabled" in changes:
            pairs = changes.get("allowed_address_pairs", port.allowed_address_pairs)
            port.allowed_address_pairs = _clean_pairs(pairs, port.port_security_enabled)
            fields.append("allowed_address_pairs")
        if fields:
            try:
                with transaction.atomic():
                    _save(port, fields)
            except IntegrityError as exc:
                raise conflict("MacAddressInUse", f"Unable to complete operation for network {network.pk}. The mac "
                               f"address {port.mac_address} is in use.") from exc
        if "fixed_ips" in changes:
            plan = _requested_ips(network, changes["fixed_ips"] or [], user=user, project=project,
                                  device_owner=port.device_owner)
            # As Neutron: a new fixed_ips must name every address a floating IP is NATed to, or the
            # update is refused (400) rather than leave the floating IP on an address the port lost.
            named = {address for _, address in plan if address is not None}
            if any(fip.fixed_ip_address and fip.fixed_ip_address not in named for fip in port.floating_ips.all()):
                raise bad_request(f"Bad port request: Cannot update the fixed_ips of the port {port.pk}, because its "
                                  "original fixed_ip has been associated to a floating ip.", "BadRequest")
            current = {(a.subnet_id, a.ip_address): a for a in port.fixed_ips.all()}
            keep = {(s.pk, addr) for s, addr in plan if addr is not None and (s.pk, addr) in current}
            for key, allocation in current.items():
                if key not in keep and not any(s.pk == key[0] and addr is None for s, addr in plan):
                    allocation.delete()
            held = {a.subnet_id for a in port.fixed_ips.all()}
            for subnet, address in plan:
                if address is None and subnet.pk in held:
                    continue
                if (subnet.pk, address) not in keep:
                    _allocate(subnet, port, address)
        if groups is not None:
            port.security_groups.set(groups)
        now_counted = _counted(port.device_owner)
        if now_counted and not was_counted:
            _reserve(port.project, Resource.PORTS, "port")
        elif was_counted and not now_counted:
            quota_release(project=port.project, deltas={Resource.PORTS: 1})
        sync = Sync().port(port).members_changed(old_groups | final_groups)
        if old_host != port.host_id:
            sync.port_unbound(port, old_host)
        for fip in port.floating_ips.select_related("router"):
            if fip.router:
                sync.router(fip.router)
        sync.send()
    return port


def port_delete(*, port: Port, user: User | None, project: Project | None) -> None:
    """Ports of routers and floating IPs go with them, never directly (409 L3PortInUse)."""
    _require_owner(user, project, port, "port")
    if port.device_owner in (OWNER_ROUTER_INTERFACE, OWNER_ROUTER_GATEWAY, OWNER_FLOATINGIP):
        raise conflict("L3PortInUse", f"Port {port.pk} cannot be deleted directly via the port API: has device owner "
                       f"{port.device_owner}.")
    with transaction.atomic():
        _port_remove(Port.objects.select_for_update().select_related("network").get(pk=port.pk))


def _port_remove(port: Port, sync: Sync | None = None) -> None:
    """Delete a port in the caller's transaction: its floating IPs are disassociated, its
    addresses released, its quota given back, the hosts told."""
    own = sync is None
    sync = Sync() if own else sync
    groups = set(port.security_groups.values_list("pk", flat=True))
    for fip in FloatingIP.objects.filter(port=port).select_related("router"):
        if fip.router:
            sync.router(fip.router)
        FloatingIP.objects.filter(pk=fip.pk).update(port=None, fixed_ip_address=None, router=None,
                                                    status=Status.DOWN, updated_at=timezone.now())
    sync.port_deleted(port).members_changed(groups)
    port.delete()
    if _counted(port.device_owner):
        quota_release(project=port.project, deltas={Resource.PORTS: 1})
    if own:
        sync.send()


# --- security groups -------------------------------------------------------------------------


def _default_rules(group: SecurityGroup, *, ingress_from_self: bool) -> None:
    """Neutron's rules of a new group: all egress, IPv4 and IPv6; the default group also lets in
    whatever comes from its own members."""
    rules = [SecurityGroupRule(project_id=group.project_id, security_group=group, direction=Direction.EGRESS,
                               ethertype=ethertype) for ethertype in EtherType.values]
    if ingress_from_self:
        rules += [SecurityGroupRule(project_id=group.project_id, security_group=group, direction=Direction.INGRESS,
                                    ethertype=ethertype, remote_group=group) for ethertype in EtherType.values]
    SecurityGroupRule.objects.bulk_create(rules)


def security_group_default(*, project: Project) -> SecurityGroup:
    """The project's `default` group, made on first use with Neutron's default rules. It is the
    project's own plumbing: it uses no security group quota. Two first uses at once make one
    group (a unique constraint; the loser reads the winner's)."""
    group = SecurityGroup.objects.filter(project=project, is_default=True).first()
    if group is not None:
        return group
    try:
        with transaction.atomic():
            group = SecurityGroup.objects.create(project=project, name="default", is_default=True,
                                                 description="Default security group")
            _default_rules(group, ingress_from_self=True)
            return group
    except IntegrityError:
        return SecurityGroup.objects.get(project=project, is_default=True)


def security_group_create(*, user: User | None, project: Project, name: str, description: str = "") -> SecurityGroup:
    name, description = _text(name, "name"), _text(description, "description")
    if name == "default":
        raise conflict("SecurityGroupDefaultAlreadyExists", "Default security group already exists.")
    with transaction.atomic():
        _reserve(project, Resource.SECURITY_GROUPS, "security_group")
        group = SecurityGroup.objects.create(project=project, name=name, description=description)
        _default_rules(group, ingress_from_self=False)
    return group


def security_group_update(*, group: SecurityGroup, user: User | None, project: Project | None,
                          changes: dict) -> SecurityGroup:
    _require_owner(user, project, group, "security group")
    unknown = set(changes) - {"name", "description"}
    if unknown:
        raise bad_request(f"Cannot update read-only attribute {', '.join(sorted(unknown))}.")
    if group.is_default and changes.get("name", "default") != "default":
        raise conflict("SecurityGroupCannotUpdateDefault", "Updating default security group not allowed.")
    if not group.is_default and changes.get("name") == "default":
        raise conflict("SecurityGroupDefaultAlreadyExists", "Default security group already exists.")
    fields = []
    for key in ("name", "description"):
        if key in changes:
            setattr(group, key, _text(changes[key], key))
            fields.append(key)
    if fields:
        _save(group, fields)
    return group


def security_group_delete(*, group: SecurityGroup, user: User | None, project: Project | None) -> None:
    _require_owner(user, project, group, "security group")
    if group.is_default and not _admin(user):
        raise conflict("SecurityGroupCannotRemoveDefault", "Insufficient rights for removing default security group.")
    with transaction.atomic():
        if group.ports.exists():
            raise conflict("SecurityGroupInUse", f"Security Group {group.pk} in use.")
        # Rules of other groups that name this one go with it (cascade): their ports' filters change.
        naming = SecurityGroupRule.objects.filter(remote_group=group).values_list("security_group_id", flat=True)
        sync = Sync().rules_changed(set(naming) - {group.pk})
        group.delete()
        if not group.is_default:
            quota_release(project=group.project, deltas={Resource.SECURITY_GROUPS: 1})
        sync.send()


def _clean_protocol(protocol, ethertype: str) -> str | None:
    if protocol in (None, "", "any"):
        return None
    value = str(protocol).lower()
    if value.isdigit():
        if not 0 <= int(value) <= 255:
            raise bad_request(f"Security group rule protocol {protocol} not supported. Only protocol values "
                              f"[{', '.join(sorted(PROTOCOLS))}] and integer representations [0 to 255] are supported.",
                              "SecurityGroupRuleInvalidProtocol")
        return value
    if value not in PROTOCOLS:
        raise bad_request(f"Security group rule protocol {protocol} not supported. Only protocol values "
                          f"[{', '.join(sorted(PROTOCOLS))}] and integer representations [0 to 255] are supported.",
                          "SecurityGroupRuleInvalidProtocol")
    if ethertype == EtherType.IPV6 and value in ("icmp", "icmpv6"):
        return "ipv6-icmp"
    if ethertype == EtherType.IPV4 and value in ("ipv6-icmp", "icmpv6"):
        raise bad_request(f"Protocol {value} is not supported with ethertype IPv4.",
                          "SecurityGroupEthertypeConflictWithProtocol")
    return value


def _clean_port_range(protocol: str | None, low, high) -> tuple[int | None, int | None]:
    for value, what in ((low, "port_range_min"), (high, "port_range_max")):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise invalid_input(f"'{value}' is not an integer for {what}.")
    if low is None and high is None:
        return None, None
    if protocol is None:
        raise bad_request("Must also specify protocol if port range is given.", "SecurityGroupProtocolRequiredWithPorts")
    if protocol in PORT_RANGE_PROTOCOLS:
        if low is None or high is None:
            low = high = low if high is None else high
        if not 1 <= low <= 65535 or not 1 <= high <= 65535:
            raise bad_request(f"Invalid value for port {low if not 1 <= low <= 65535 else high}.",
                              "SecurityGroupInvalidPortValue")
        if low > high:
            raise bad_request("For TCP/UDP protocols, port_range_min must be <= port_range_max.",
                              "SecurityGroupInvalidPortRange")
        return low, high
    if protocol in ICMP_PROTOCOLS:
        if low is None and high is not None:
            raise bad_request(f"ICMP code (port-range-max) {high} is provided but ICMP type (port-range-min) is "
                              "missing.", "SecurityGroupMissingIcmpType")
        for value, what in ((low, "type"), (high, "code")):
            if value is not None and not 0 <= value <= 255:
                raise bad_request(f"Invalid value for ICMP {what} {value}: 0 to 255.", "SecurityGroupInvalidIcmpValue")
        return low, high
    raise bad_request(f"Port ranges are not supported for protocol {protocol}.", "SecurityGroupInvalidPortRange")


def security_group_rule_create(
    *, user: User | None, project: Project, group: SecurityGroup, direction: str, ethertype: str = "IPv4",
    protocol=None, port_range_min=None, port_range_max=None, remote_ip_prefix: str | None = None,
    remote_group_id: str | None = None, description: str = "",
) -> SecurityGroupRule:
    """A rule of the caller's group; the group's ports (and the ports of groups that name it as
    remote group) get their filters again."""
    _require_owner(user, project, group, "security group")
    if direction not in Direction.values:
        raise invalid_input(f"{direction} is not in [ingress, egress] for direction.")
    if ethertype not in EtherType.values:
        raise invalid_input(f"{ethertype} is not in [IPv4, IPv6] for ethertype.")
    protocol = _clean_protocol(protocol, ethertype)
    low, high = _clean_port_range(protocol, port_range_min, port_range_max)
    if remote_ip_prefix is not None and remote_group_id is not None:
        raise bad_request("Only remote_ip_prefix or remote_group_id may be provided.",
                          "SecurityGroupRemoteGroupAndRemoteIpPrefix")
    if remote_ip_prefix is not None:
        prefix = ipam.parse_cidr(remote_ip_prefix, strict=False)
        if f"IPv{prefix.version}" != ethertype:
            raise bad_request(f"Conflicting value ethertype {ethertype} for CIDR {remote_ip_prefix}.",
                              "SecurityGroupRuleParameterConflict")
        remote_ip_prefix = str(prefix)
    remote = None
    if remote_group_id is not None:
        remote = selectors.security_group_get(user=user, project=group.project, group_id=remote_group_id)
    description = _text(description, "description")
    with transaction.atomic():
        SecurityGroup.objects.select_for_update().filter(pk=group.pk).first()
        duplicate = SecurityGroupRule.objects.filter(
            security_group=group, direction=direction, ethertype=ethertype, protocol=protocol, port_range_min=low,
            port_range_max=high, remote_ip_prefix=remote_ip_prefix, remote_group=remote).first()
        if duplicate is not None:
            raise conflict("SecurityGroupRuleExists", f"Security group rule already exists. Rule id is {duplicate.pk}.")
        rule = SecurityGroupRule.objects.create(
            project=group.project, security_group=group, direction=direction, ethertype=ethertype, protocol=protocol,
            port_range_min=low, port_range_max=high, remote_ip_prefix=remote_ip_prefix, remote_group=remote,
            description=description)
        SecurityGroup.objects.filter(pk=group.pk).update(updated_at=timezone.now())
        Sync().rules_changed([group.pk]).send()
    return rule


def security_group_rule_delete(*, rule: SecurityGroupRule, user: User | None, project: Project | None) -> None:
    _require_owner(user, project, rule, "security group rule")
    with transaction.atomic():
        sync = Sync().rules_changed([rule.security_group_id])
        rule.delete()
        sync.send()


# --- routers ---------------------------------------------------------------------------------


def _clean_gateway_info(info, *, user: User | None, project: Project | None) -> dict | None:
    """external_gateway_info: None (no gateway) or {network, enable_snat, external_fixed_ips}."""
    if info is None or info == {}:
        return None
    if not isinstance(info, dict) or set(info) - {"network_id", "enable_snat", "external_fixed_ips"}:
        raise invalid_input("external_gateway_info takes network_id, enable_snat and external_fixed_ips.")
    if not info.get("network_id"):
        raise invalid_input("external_gateway_info needs a network_id.")
    if "enable_snat" in info:
        _require_admin(user, "update_router:external_gateway_info:enable_snat")
    if "external_fixed_ips" in info:
        _require_admin(user, "update_router:external_gateway_info:external_fixed_ips")
    network = selectors.network_get(user=user, project=project, network_id=info["network_id"])
    if not network.external:
        raise bad_request(f"Bad router request: Network {network.pk} is not a valid external network.",
                          "BadRequest")
    return {"network": network, "enable_snat": _bool(info.get("enable_snat", True), "enable_snat"),
            "fixed_ips": info.get("external_fixed_ips")}


def _set_gateway(router: Router, gateway: dict | None, sync: Sync, *, user: User | None) -> None:
    """Move the router's gateway (in the caller's transaction): its port on the external network
    is made, kept or removed; floating IPs that NAT through it keep it from going."""
    current = router.gateway_network_id
    wanted = gateway["network"].pk if gateway else None
    if current and (wanted != current) and router.floating_ips.exists():
        raise conflict("RouterExternalGatewayInUseByFloatingIp", f"Gateway cannot be updated for router {router.pk}, "
                       f"since a gateway to external network {current} is required by one or more floating IPs.")
    fields = []
    if current and wanted != current:
        port = router.gateway_port
        router.gateway_port, router.gateway_network = None, None
        fields += ["gateway_port", "gateway_network"]
        router.save(update_fields=["gateway_port", "gateway_network"])
        if port is not None:
            _port_remove(port, sync)
    if gateway is not None:
        if router.enable_snat != gateway["enable_snat"]:
            router.enable_snat = gateway["enable_snat"]
            fields.append("enable_snat")
        network = gateway["network"]
        if wanted != current:
            plan = None
            if gateway["fixed_ips"] is not None:
                plan = _requested_ips(network, gateway["fixed_ips"], user=user, project=None,
                                      device_owner=OWNER_ROUTER_GATEWAY)
            port = _new_port(project=router.project, network=network, device_owner=OWNER_ROUTER_GATEWAY,
                             device_id=str(router.pk), host=router.host, port_security_enabled=False)
            _allocate_port(port, network, plan)
            if not port.fixed_ips.exists():
                raise bad_request(f"Bad router request: external network {network.pk} has no subnet.", "BadRequest")
            router.gateway_port, router.gateway_network = port, network
            fields += ["gateway_port", "gateway_network"]
            sync.port(port)
    if fields:
        _save(router, sorted(set(fields)))
    sync.router(router)


def _router_cidrs(router: Router, *, exclude=None) -> list[tuple[Subnet, object]]:
    interfaces = router.interfaces.select_related("subnet")
    if exclude is not None:
        interfaces = interfaces.exclude(pk=exclude)
    return [(i.subnet, ipam.parse_cidr(i.subnet.cidr)) for i in interfaces]


def _clean_router_routes(router: Router, routes) -> list[dict[str, str]]:
    routes = _clean_routes(routes, None, "routes")
    if len(routes) > MAX_ROUTES:
        raise bad_request(f"Unable to complete operation for {router.pk}. The number of routes exceeds the maximum "
                          f"{MAX_ROUTES}.", "RoutesExhausted")
    connected = [cidr for _, cidr in _router_cidrs(router)]
    own = set()
    for interface in router.interfaces.select_related("port").prefetch_related("port__fixed_ips"):
        own |= {a.ip_address for a in interface.port.fixed_ips.all()}
    if router.gateway_port_id:
        for allocation in IPAllocation.objects.filter(port_id=router.gateway_port_id).select_related("subnet"):
            connected.append(ipam.parse_cidr(allocation.subnet.cidr))
            own.add(allocation.ip_address)
    for route in routes:
        nexthop = ipaddress.ip_address(route["nexthop"])
        if route["nexthop"] in own or not any(nexthop in cidr for cidr in connected):
            raise bad_request(f"Invalid format for routes: {route}, the nexthop is not connected with router.",
                              "InvalidRoutes")
    return routes


def router_create(*, user: User | None, project: Project, name: str = "", description: str = "",
                  admin_state_up: bool = True, external_gateway_info: dict | None = None) -> Router:
    """A router on the network host, with a gateway to an external network if asked."""
    name, description = _text(name, "name"), _text(description, "description")
    gateway = _clean_gateway_info(external_gateway_info, user=user, project=project)
    with transaction.atomic():
        router = Router.objects.create(project=project, name=name, description=description,
                                       admin_state_up=_bool(admin_state_up, "admin_state_up"),
                                       host=selectors.network_host())
        sync = Sync()
        if gateway is not None:
            _set_gateway(router, gateway, sync, user=user)
        sync.router(router).send()
    logger.info("router %s (%s) created on %s", router.pk, router.name, router.host)
    return router


def router_update(*, router: Router, user: User | None, project: Project | None, changes: dict) -> Router:
    _require_owner(user, project, router, "router")
    unknown = set(changes) - {"name", "description", "admin_state_up", "external_gateway_info", "routes"}
    if unknown:
        raise bad_request(f"Cannot update read-only attribute {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        router = Router.objects.select_for_update(of=("self",)).select_related("gateway_port").get(pk=router.pk)
        sync = Sync().router(router)
        fields = []
        for key in ("name", "description"):
            if key in changes:
                setattr(router, key, _text(changes[key], key))
                fields.append(key)
        if "admin_state_up" in changes:
            router.admin_state_up = _bool(changes["admin_state_up"], "admin_state_up")
            fields.append("admin_state_up")
        if fields:
            _save(router, fields)
        if "external_gateway_info" in changes:
            _set_gateway(router, _clean_gateway_info(changes["external_gateway_info"], user=user, project=project),
                         sync, user=user)
        if "routes" in changes:
            router.routes = _clean_router_routes(router, changes["routes"] or [])
            _save(router, ["routes"])
        sync.send()
    return router


def router_routes_change(*, router: Router, user: User | None, project: Project | None, routes, add: bool) -> Router:
    """extraroute-atomic: add routes to (or remove them from) the router's routes."""
    _require_owner(user, project, router, "router")
    with transaction.atomic():
        router = Router.objects.select_for_update().get(pk=router.pk)
        given = _clean_routes(routes, None, "routes")
        if add:
            merged = list(router.routes) + [r for r in given if r not in router.routes]
        else:
            merged = [r for r in router.routes if r not in given]
        router.routes = _clean_router_routes(router, merged)
        _save(router, ["routes"])
        Sync().router(router).send()
    return router


def router_delete(*, router: Router, user: User | None, project: Project | None) -> None:
    _require_owner(user, project, router, "router")
    with transaction.atomic():
        router = Router.objects.select_for_update().get(pk=router.pk)
        if router.interfaces.exists():
            raise conflict("RouterInUse", f"Router {router.pk} still has ports")
        sync = Sync().router_deleted(router)
        port = router.gateway_port
        router.delete()
        if port is not None:
            _port_remove(port, sync)
        sync.send()
    logger.info("router %s deleted", router.pk)


def _interface_info(router: Router, port: Port, subnet: Subnet) -> dict:
    return {"id": str(router.pk), "tenant_id": router.project_id.hex, "project_id": router.project_id.hex,
            "subnet_id": str(subnet.pk), "subnet_ids": [str(subnet.pk)], "port_id": str(port.pk),
            "network_id": str(port.network_id)}


def router_interface_add(*, router: Router, user: User | None, project: Project | None, subnet_id=None,
                         port_id=None) -> dict:
    """A leg of the router on a subnet: a new port holding the subnet's gateway address, or a
    port of the caller's with one address. CIDRs of one router never overlap."""
    _require_owner(user, project, router, "router")
    if (subnet_id is None) == (port_id is None):
        raise bad_request("Bad router request: Either subnet_id or port_id must be specified.", "BadRequest")
    with transaction.atomic():
        router = Router.objects.select_for_update().get(pk=router.pk)
        sync = Sync().router(router)
        if subnet_id is not None:
            subnet = selectors.subnet_get(user=user, project=project, subnet_id=subnet_id)
            network = subnet.network
            if not (_admin(user) or network.project_id == router.project_id or network.shared):
                raise not_found("Subnet", subnet_id)
            if network.external:
                raise bad_request("Bad router request: Router interface on an external network is not allowed; set "
                                  "it as the router's gateway.", "BadRequest")
            if subnet.gateway_ip is None:
                raise bad_request(f"Bad router request: Subnet {subnet.pk} for router interface must have a gateway "
                                  "IP.", "BadRequest")
            _check_router_overlap(router, subnet)
            port = _new_port(project=router.project, network=network, device_owner=OWNER_ROUTER_INTERFACE,
                             device_id=str(router.pk), host=router.host, port_security_enabled=False)
            _allocate(subnet, port, subnet.gateway_ip)
        else:
            port = selectors.port_get(user=user, project=project, port_id=port_id)
            _require_owner(user, project, port, "port")
            port = Port.objects.select_for_update().select_related("network").get(pk=port.pk)
            if port.device_id or port.device_owner:
                raise conflict("PortInUse", f"Unable to complete operation on port {port.pk} for network "
                               f"{port.network_id}. Port already has an attached device {port.device_id}.")
            allocations = list(port.fixed_ips.select_related("subnet"))
            if len(allocations) != 1:
                raise bad_request(f"Bad router request: Router port {port.pk} must have exactly one fixed IP.",
                                  "BadRequest")
            subnet = allocations[0].subnet
            if port.network.external:
                raise bad_request("Bad router request: Router interface on an external network is not allowed.",
                                  "BadRequest")
            _check_router_overlap(router, subnet)
            was_counted = _counted(port.device_owner)
            port.device_owner, port.device_id, port.host = OWNER_ROUTER_INTERFACE, str(router.pk), router.host
            port.port_security_enabled = False
            _save(port, ["device_owner", "device_id", "host", "port_security_enabled"])
            port.security_groups.clear()
            if was_counted:
                quota_release(project=port.project, deltas={Resource.PORTS: 1})
        RouterInterface.objects.create(router=router, port=port, subnet=subnet)
        sync.port(port).send()
    return _interface_info(router, port, subnet)


def _check_router_overlap(router: Router, subnet: Subnet) -> None:
    cidr = ipam.parse_cidr(subnet.cidr)
    for other, other_cidr in _router_cidrs(router):
        if other.pk == subnet.pk:
            raise bad_request(f"Bad router request: Router already has a port on subnet {subnet.pk}.", "BadRequest")
        if other_cidr.overlaps(cidr):
            raise bad_request(f"Bad router request: Cidr {subnet.cidr} of subnet {subnet.pk} overlaps with cidr "
                              f"{other.cidr} of subnet {other.pk}.", "BadRequest")


def router_interface_remove(*, router: Router, user: User | None, project: Project | None, subnet_id=None,
                            port_id=None) -> dict:
    _require_owner(user, project, router, "router")
    if subnet_id is None and port_id is None:
        raise bad_request("Bad router request: Either subnet_id or port_id must be specified.", "BadRequest")
    with transaction.atomic():
        router = Router.objects.select_for_update().get(pk=router.pk)
        interfaces = router.interfaces.select_related("port", "subnet")
        if port_id is not None:
            interface = interfaces.filter(port_id=_uuid(port_id)).first()
            if interface is None:
                raise _not_found_interface(router, f"does not have an interface with id {port_id}")
            if subnet_id is not None and str(interface.subnet_id) != str(subnet_id):
                raise conflict("SubnetMismatchForPort", f"Subnet {subnet_id} on router {router.pk} does not match the "
                               f"subnet of port {port_id}.")
        else:
            interface = interfaces.filter(subnet_id=_uuid(subnet_id)).first()
            if interface is None:
                raise _not_found_interface(router, f"has no interface on subnet {subnet_id}")
        subnet, port = interface.subnet, interface.port
        in_use = router.floating_ips.filter(port__fixed_ips__subnet=subnet).exists()
        if in_use:
            raise conflict("RouterInterfaceInUseByFloatingIP", f"Router interface for subnet {subnet.pk} on router "
                           f"{router.pk} cannot be deleted, as it is required by one or more floating IPs.")
        info = _interface_info(router, port, subnet)
        sync = Sync().router(router)
        interface.delete()
        _port_remove(port, sync)
        sync.send()
    return info


def _not_found_interface(router: Router, what: str):
    exc = not_found("Router", router.pk)
    exc.neutron_type = "RouterInterfaceNotFound"
    exc.message = f"Router {router.pk} {what}."
    exc.args = (exc.message,)
    return exc


def _uuid(value):
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


# --- floating IPs ----------------------------------------------------------------------------


def _fip_target(fip_network: Network, port: Port, fixed_ip_address: str | None) -> tuple[str, Router]:
    """The fixed address a floating IP NATs to, and the router that reaches it from the external
    network (404 ExternalGatewayForFloatingIPNotFound without one, as Neutron)."""
    allocations = [a for a in port.fixed_ips.select_related("subnet") if a.subnet.ip_version == 4]
    if fixed_ip_address is not None:
        fixed = ipam.canonical(fixed_ip_address)
        allocation = next((a for a in allocations if a.ip_address == fixed), None)
        if allocation is None:
            raise bad_request(f"Bad floatingip request: Port {port.pk} does not have fixed ip {fixed_ip_address}.",
                              "BadRequest")
    else:
        if not allocations:
            raise bad_request(f"Bad floatingip request: Port {port.pk} does not have any IPv4 address.",
                              "BadRequest")
        if len(allocations) > 1:
            raise bad_request(f"Bad floatingip request: Port {port.pk} has multiple fixed IPv4 addresses. Must "
                              "provide a specific IPv4 address when assigning a floating IP.", "BadRequest")
        allocation = allocations[0]
    if port.network_id == fip_network.pk:
        raise bad_request("Bad floatingip request: the port is on the floating IP's own external network.",
                          "BadRequest")
    router = (Router.objects.filter(gateway_network=fip_network, interfaces__subnet=allocation.subnet)
              .order_by("created_at").first())
    if router is None:
        exc = not_found("ExternalGatewayForFloatingIP", port.pk)
        exc.message = (f"External network {fip_network.pk} is not reachable from subnet {allocation.subnet_id}.  "
                       f"Therefore, cannot associate Port {port.pk} with a Floating IP.")
        exc.args = (exc.message,)
        raise exc
    return allocation.ip_address, router


def _fip_associate(fip: FloatingIP, port_id, fixed_ip_address, sync: Sync, *, user: User | None,
                   project: Project | None) -> None:
    old_router = fip.router
    if port_id is None:
        fip.port, fip.fixed_ip_address, fip.router, fip.status = None, None, None, Status.DOWN
    else:
        port = selectors.port_get(user=user, project=project, port_id=port_id)
        if port.project_id != fip.project_id and not _admin(user):
            raise not_found("Port", port_id)
        fixed, router = _fip_target(fip.floating_network, port, fixed_ip_address)
        taken = FloatingIP.objects.filter(port=port, fixed_ip_address=fixed).exclude(pk=fip.pk).first()
        if taken is not None:
            raise conflict("FloatingIPPortAlreadyAssociated", f"Cannot associate floating IP "
                           f"{fip.floating_ip_address} ({fip.pk}) with port {port.pk} using fixed IP {fixed}, as that "
                           f"fixed IP already has a floating IP on external network {fip.floating_network_id}.")
        # ACTIVE once the router's host applied the NAT (network_task_done).
        fip.port, fip.fixed_ip_address, fip.router, fip.status = port, fixed, router, Status.DOWN
        sync.router(router)
    if old_router is not None:
        sync.router(old_router)


def floating_ip_create(*, user: User | None, project: Project, floating_network_id, floating_ip_address=None,
                       subnet_id=None, port_id=None, fixed_ip_address=None, description: str = "") -> FloatingIP:
    """An address of an external network for the project (the floating IP quota), held by a port
    of its own; associated with ``port_id`` at once if given."""
    network = selectors.network_get(user=user, project=project, network_id=floating_network_id)
    if not network.external:
        raise bad_request(f"Bad floatingip request: Network {network.pk} is not a valid external network.",
                          "BadRequest")
    if floating_ip_address is not None:
        _require_admin(user, "create_floatingip:floating_ip_address")
    description = _text(description, "description")
    with transaction.atomic():
        _reserve(project, Resource.FLOATING_IPS, "floatingip")
        v4 = list(network.subnets.filter(ip_version=4).order_by("created_at"))
        if subnet_id is not None:
            v4 = [s for s in v4 if str(s.pk) == str(subnet_id)]
            if not v4:
                raise bad_request(f"Bad floatingip request: subnet {subnet_id} is not an IPv4 subnet of network "
                                  f"{network.pk}.", "BadRequest")
        if not v4:
            raise bad_request(f"Bad floatingip request: Network {network.pk} has no IPv4 subnet.", "BadRequest")
        port = _new_port(project=project, network=network, device_owner=OWNER_FLOATINGIP, port_security_enabled=False)
        if floating_ip_address is not None:
            address = ipam.canonical(floating_ip_address)
            subnet = next((s for s in v4 if ipaddress.ip_address(address) in ipam.parse_cidr(s.cidr)), None)
            if subnet is None:
                raise bad_request(f"Bad floatingip request: {floating_ip_address} is not in a subnet of network "
                                  f"{network.pk}.", "BadRequest")
            allocation = _allocate(subnet, port, address)
        else:
            allocation = None
            for subnet in v4:
                try:
                    with transaction.atomic():
                        allocation = _allocate(subnet, port)
                    break
                except Exception as exc:
                    if getattr(exc, "neutron_type", "") != "IpAddressGenerationFailure" or subnet is v4[-1]:
                        raise
        fip = FloatingIP(project=project, floating_network=network, floating_port=port,
                         floating_ip_address=allocation.ip_address, description=description)
        sync = Sync()
        if port_id is not None:
            _fip_associate(fip, port_id, fixed_ip_address, sync, user=user, project=project)
        fip.save(force_insert=True)
        port.device_id = str(fip.pk)
        port.save(update_fields=["device_id", "updated_at"])
        sync.send()
    logger.info("floating IP %s (%s) allocated", fip.pk, fip.floating_ip_address)
    return fip


def floating_ip_update(*, fip: FloatingIP, user: User | None, project: Project | None, changes: dict) -> FloatingIP:
    """Associate (``port_id``, ``fixed_ip_address``), disassociate (``port_id: null``), describe."""
    _require_owner(user, project, fip, "floating IP")
    unknown = set(changes) - {"port_id", "fixed_ip_address", "description"}
    if unknown:
        raise bad_request(f"Cannot update read-only attribute {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        fip = (FloatingIP.objects.select_for_update(of=("self",)).select_related("floating_network", "router")
               .get(pk=fip.pk))
        sync = Sync()
        fields = []
        if "description" in changes:
            fip.description = _text(changes["description"], "description")
            fields.append("description")
        if "port_id" in changes or "fixed_ip_address" in changes:
            port_id = changes.get("port_id", fip.port_id)
            _fip_associate(fip, port_id, changes.get("fixed_ip_address"), sync, user=user, project=project)
            fields += ["port", "fixed_ip_address", "router", "status"]
        if fields:
            try:
                with transaction.atomic():
                    _save(fip, fields)
            except IntegrityError as exc:
                raise conflict("FloatingIPPortAlreadyAssociated", "That fixed IP already has a floating IP.") from exc
        sync.send()
    return fip


def floating_ip_delete(*, fip: FloatingIP, user: User | None, project: Project | None) -> None:
    _require_owner(user, project, fip, "floating IP")
    with transaction.atomic():
        fip = (FloatingIP.objects.select_for_update(of=("self",)).select_related("router", "floating_port")
               .get(pk=fip.pk))
        sync = Sync()
        if fip.router is not None:
            sync.router(fip.router)
        port = fip.floating_port
        fip.delete()
        _port_remove(port, sync)
        quota_release(project=fip.project, deltas={Resource.FLOATING_IPS: 1})
        sync.send()
    logger.info("floating IP %s (%s) released", fip.pk, fip.floating_ip_address)


# --- quotas ----------------------------------------------------------------------------------


def network_quota_update(*, project: Project, limits: dict) -> None:
    """Admin: set the network quotas of a project (Neutron's names: network, port, floatingip,
    security_group). The others Neutron lists are not limited in cloudmgr (-1) and cannot be set."""
    if not isinstance(limits, dict) or not limits:
        raise invalid_input("The quota body must be an object of resource limits.")
    for name, limit in limits.items():
        if name in selectors.FIXED_QUOTAS:
            raise bad_request(f"Quota for {name} is not limited in this cloud (always -1).", "InvalidQuotaValue")
        if name not in selectors.NEUTRON_QUOTAS:
            raise bad_request(f"Unrecognized quota resource {name}.", "QuotaResourceUnknown")
        if isinstance(limit, bool) or not isinstance(limit, (int, str)) or not str(limit).lstrip("-").isdigit():
            raise invalid_input(f"'{limit}' is not an integer for quota {name}.")
        if int(limit) < -1:
            raise invalid_input(f"'{limit}' should be greater than or equal to -1 for quota {name}.")
    with transaction.atomic():
        for name, limit in limits.items():
            quota_set(project=project, resource=selectors.NEUTRON_QUOTAS[name], limit=int(limit))


def network_quota_reset(*, project: Project) -> None:
    with transaction.atomic():
        for resource in selectors.NEUTRON_QUOTAS.values():
            quota_set(project=project, resource=resource, limit=settings.CLOUDMGR_DEFAULT_QUOTAS[resource])


# --- servers' ports --------------------------------------------------------------------------


def _server_network(user: User | None, project: Project, network_id) -> Network:
    try:
        return selectors.network_get(user=user, project=project, network_id=network_id)
    except NotFound as exc:
        raise invalid_input(f"Network {network_id} could not be found.") from exc


def _project_group(project: Project, name: str) -> SecurityGroup | None:
    """A security group of the project by id or name (Nova through Neutron: a name two groups
    share is 409); ``default`` is made on first use."""
    groups = SecurityGroup.objects.filter(project=project)
    group = groups.filter(pk=_uuid(name)).first()
    if group is not None:
        return group
    if name == "default":
        return security_group_default(project=project)
    named = list(groups.filter(name=name)[:2])
    if len(named) > 1:
        raise Conflict(f"Multiple security_group matches found for name '{name}', use an ID to be more specific.")
    return named[0] if named else None


def _server_groups(user: User | None, project: Project, names: list[str] | None) -> list | None:
    """Nova's security_groups of a server, by name or id, in the project."""
    if names is None:
        return None
    found = []
    for name in names:
        group = _project_group(project, name)
        if group is None:
            raise invalid_input(f"Security group {name} not found for project {project.pk.hex}.")
        found.append(str(group.pk))
    return found


def _server_group_ports(project: Project, device_id: str, name: str) -> tuple[SecurityGroup, list[Port]]:
    group = _project_group(project, name)
    if group is None:
        raise NotFound(f"Security group {name} is not found for project {project.pk.hex}")
    # Locked: two changes at once must not each write the groups they read before the other.
    ports = list(Port.objects.select_for_update().filter(device_id=device_id, device_owner=OWNER_COMPUTE)
                 .order_by("created_at", "id"))
    if not ports:
        raise NotFound(f"instance_id {device_id} could not be found as device id on any ports")
    return group, ports


def server_security_group_add(*, user: User | None, project: Project, device_id: str, name: str) -> None:
    """Nova's addSecurityGroup: the group (id or name) joins every port of the server. Every port
    must have port security and an address (400 otherwise, and none changes)."""
    with transaction.atomic(), batched_sync():
        group, ports = _server_group_ports(project, device_id, name)
        if any(not port.port_security_enabled or not port.fixed_ips.exists() for port in ports):
            raise ValidationError("Network requires port_security_enabled and subnet associated in order to apply "
                                  "security groups.")
        for port in ports:
            groups = [str(pk) for pk in port.security_groups.values_list("pk", flat=True)]
            if str(group.pk) not in groups:
                port_update(port=port, user=user, project=project,
                            changes={"security_groups": [*groups, str(group.pk)]})


def server_security_group_remove(*, user: User | None, project: Project, device_id: str, name: str) -> None:
    """Nova's removeSecurityGroup: the group leaves every port of the server that has it (404
    when none has)."""
    with transaction.atomic(), batched_sync():
        group, ports = _server_group_ports(project, device_id, name)
        found = False
        for port in ports:
            groups = [str(pk) for pk in port.security_groups.values_list("pk", flat=True)]
            if str(group.pk) in groups:
                found = True
                groups.remove(str(group.pk))
                port_update(port=port, user=user, project=project, changes={"security_groups": groups})
        if not found:
            raise NotFound(f"Security group {name} not associated with the instance {device_id}")


def _server_port(*, user: User | None, project: Project, device_id: str, hostname: str, entry: dict,
                 groups: list | None) -> Port:
    """One NIC request of Nova: an existing port of the project, or a new port on a network
    (with ``fixed_ip`` if given), deleted with the server."""
    if entry.get("port"):
        try:
            port = selectors.port_get(user=user, project=project, port_id=entry["port"])
        except NotFound as exc:
            raise invalid_input(f"Port {entry['port']} could not be found.") from exc
        if port.project_id != project.pk and not _admin(user):
            raise invalid_input(f"Port {entry['port']} could not be found.")
        port = Port.objects.select_for_update().select_related("network").get(pk=port.pk)
        if port.device_id or port.device_owner:
            raise conflict("PortInUse", f"Port {port.pk} is still in use.")
        port.device_id, port.device_owner, port.hostname = device_id, OWNER_COMPUTE, hostname
        _save(port, ["device_id", "device_owner", "hostname"])
        Sync().port(port).send()
        return port
    network = entry["network"] if isinstance(entry.get("network"), Network) else _server_network(
        user, project, entry.get("uuid"))
    fixed_ips = [{"ip_address": entry["fixed_ip"]}] if entry.get("fixed_ip") else None
    try:
        return port_create(user=user, project=project, network=network, device_id=device_id,
                           device_owner=OWNER_COMPUTE, hostname=hostname, security_groups=groups,
                           fixed_ips=fixed_ips, delete_with_device=True)
    except Exception as exc:
        if getattr(exc, "neutron_type", "") == "OverQuota":
            raise QuotaExceeded("Maximum number of ports exceeded.") from exc
        raise


def _only_network(user: User | None, project: Project) -> Network | None:
    """The network a server gets when none is named: the project's one (own or shared), None
    without any, 409 NetworkAmbiguous with several (as Nova)."""
    available = list(selectors.networks_available(user=user, project=project)[:2])
    if len(available) > 1:
        raise conflict("NetworkAmbiguous", "Multiple possible networks found, use a Network ID to be more specific.")
    return available[0] if available else None


def server_ports_create(*, user: User | None, project: Project, device_id: str, name: str, requested=None,
                        security_groups: list[str] | None = None) -> list[Port]:
    """The ports of a new server, before it is placed (in the caller's transaction). ``requested``
    is Nova's ``networks``: None (the project's one network, if it has exactly one), "none",
    "auto" (that network, or an auto-allocated topology), or [{uuid | port, fixed_ip}]."""
    if requested == "none":
        return []
    hostname = _hostname(name)
    groups = _server_groups(user, project, security_groups)
    if requested is None or requested == "auto":
        network = _only_network(user, project)
        if network is not None:
            entries = [{"network": network}]
        elif requested == "auto":
            entries = [{"network": auto_allocated_topology_get(user=user, project=project)}]
        else:
            return []
    elif isinstance(requested, list):
        entries = requested
    else:
        raise invalid_input("networks must be 'auto', 'none' or a list of {uuid, port, fixed_ip}.")
    return [_server_port(user=user, project=project, device_id=device_id, hostname=hostname, entry=entry,
                         groups=groups) for entry in entries]


def server_ports_bind(*, device_id: str, host: Host) -> None:
    """Bind a server's ports to the host it was placed on: the host gets their network bridges
    and their taps' filters (after the commit)."""
    ports = list(Port.objects.select_for_update().filter(device_id=device_id, device_owner=OWNER_COMPUTE)
                 .select_related("network").order_by("created_at", "id"))
    sync = Sync()
    for port in ports:
        if port.host_id != host.pk:
            old = port.host_id
            port.host = host
            port.save(update_fields=["host", "updated_at"])
            if old:
                sync.port_unbound(port, old)
            else:
                sync.port(port)
        sync.network(port.network)
    sync.send()


def server_ports_unbind(*, device_id: str) -> None:
    """A server left its host and waits for another (shelved): its ports stay, with their
    addresses and floating IPs, unbound and down; the old host drops their taps' filters."""
    with transaction.atomic():
        sync = Sync()
        for port in Port.objects.select_for_update().filter(device_id=device_id, device_owner=OWNER_COMPUTE,
                                                            host__isnull=False).order_by("created_at", "id"):
            old = port.host_id
            port.host, port.status = None, Status.DOWN
            _save(port, ["host", "status"])
            sync.port_unbound(port, old)
        sync.send()


def _server_port_release(port: Port, sync: Sync) -> None:
    if port.delete_with_device:
        _port_remove(port, sync)
        return
    old = port.host_id
    for fip in FloatingIP.objects.filter(port=port).select_related("router"):
        if fip.router:
            sync.router(fip.router)
        FloatingIP.objects.filter(pk=fip.pk).update(port=None, fixed_ip_address=None, router=None,
                                                    status=Status.DOWN, updated_at=timezone.now())
    port.device_id, port.device_owner, port.hostname, port.host = "", "", "", None
    port.status = Status.DOWN
    _save(port, ["device_id", "device_owner", "hostname", "host", "status"])
    sync.port_unbound(port, old)


def server_ports_release(*, device_id: str) -> None:
    """A server is gone: the ports made for it are deleted (their addresses released, their
    floating IPs disassociated), the ports the user handed in are unbound and kept."""
    with transaction.atomic():
        sync = Sync()
        for port in Port.objects.select_for_update().filter(device_id=device_id, device_owner=OWNER_COMPUTE) \
                .select_related("network", "project").order_by("created_at", "id"):
            _server_port_release(port, sync)
        sync.send()


def server_interface_attach(*, user: User | None, project: Project, device_id: str, name: str, host: Host | None,
                            network_id=None, port_id=None, fixed_ip: str | None = None) -> Port:
    """Nova's os-interface attach: a new port on ``network_id`` (or on the project's one network
    when neither is given), or the user's ``port_id``, for the server, bound to its host."""
    if network_id is not None and port_id is not None:
        raise invalid_input("Give net_id or port_id, not both.")
    if port_id is not None:
        entry = {"port": port_id}
    elif network_id is not None:
        entry = {"uuid": network_id, "fixed_ip": fixed_ip}
    else:
        network = _only_network(user, project)
        if network is None:
            raise invalid_input("No network to attach the interface to: give a net_id.")
        entry = {"network": network, "fixed_ip": fixed_ip}
    with transaction.atomic():
        port = _server_port(user=user, project=project, device_id=device_id, hostname=_hostname(name), entry=entry,
                            groups=None)
        if host is not None:
            server_ports_bind(device_id=device_id, host=host)
        port.refresh_from_db()
    return port


def server_interface_detach(*, device_id: str, port: Port) -> None:
    with transaction.atomic():
        port = Port.objects.select_for_update().select_related("network", "project").get(pk=port.pk)
        if port.device_id != device_id:
            raise not_found("Port", port.pk)
        sync = Sync()
        _server_port_release(port, sync)
        sync.send()


def server_fixed_ip_add(*, device_id: str, network_id) -> Port:
    """Nova's addFixedIp: one more address on the server's first port on the network, from the
    first of its subnets with room (what Nova asks of Neutron)."""
    network = filter_pk(Network.objects.all(), str(network_id)).first()
    ports = Port.objects.filter(device_id=device_id, device_owner=OWNER_COMPUTE, network=network)
    with transaction.atomic():
        port = ports.select_for_update().order_by("created_at", "id").first() if network else None
        if port is None:
            raise ValidationError(f"Network could not be found for instance {device_id}.")
        subnets = [s for s in network.subnets.order_by("created_at") if not _auto_address(s)]
        try:
            allocated = _allocate_in_first_with_room(subnets, port)
        except Conflict as exc:
            if getattr(exc, "neutron_type", "") != "IpAddressGenerationFailure":
                raise
            allocated = None
        if allocated is None:
            raise ValidationError(f"No fixed IP addresses available for network: {network.pk}")
        Sync().port(port).members_changed(port.security_groups.values_list("pk", flat=True)).send()
    return port


def server_fixed_ip_remove(*, device_id: str, address: str) -> Port:
    """Nova's removeFixedIp: the address leaves the server's port that holds it (400 if none
    does). As Neutron, not an address a floating IP is NATed to."""
    with transaction.atomic():
        allocation = IPAllocation.objects.filter(port__device_id=device_id, port__device_owner=OWNER_COMPUTE,
                                                 ip_address=address).first()
        if allocation is None:
            raise ValidationError(f"Instance {device_id} doesn't have fixed IP '{address}'.")
        port = Port.objects.select_for_update().get(pk=allocation.port_id)
        if port.floating_ips.filter(fixed_ip_address=address).exists():
            raise bad_request(f"Bad port request: Cannot update the fixed_ips of the port {port.pk}, because its "
                              "original fixed_ip has been associated to a floating ip.", "BadRequest")
        allocation.delete()
        Sync().port(port).members_changed(port.security_groups.values_list("pk", flat=True)).send()
    return port


# --- auto-allocated topology, bootstrap --------------------------------------------------------


def auto_allocated_topology_get(*, user: User | None, project: Project) -> Network:
    """The project's auto-allocated network, made on first ask: a network and subnet
    (CLOUDMGR_PRIVATE_NETWORK_CIDR: overlapping other projects' is fine) and a router to the
    default external network. One per project, even when asked twice at once."""
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        network = Network.objects.filter(project=project, auto_allocated=True).first()
        if network is not None:
            return network
        external = selectors.network_default_external()
        if external is None:
            raise conflict("AutoAllocationFailure", "Deployment error: No default router:external network.")
        network = network_create(user=None, project=project, name="auto_allocated_network", auto_allocated=True)
        subnet = subnet_create(user=None, project=project, network=network, name="auto_allocated_subnet_v4",
                               cidr=settings.CLOUDMGR_PRIVATE_NETWORK_CIDR,
                               dns_nameservers=list(settings.CLOUDMGR_DNS_NAMESERVERS))
        router = router_create(user=None, project=project, name="auto_allocated_router",
                               external_gateway_info={"network_id": str(external.pk)})
        router_interface_add(router=router, user=None, project=project, subnet_id=subnet.pk)
    logger.info("auto-allocated network %s for project %s", network.pk, project.name)
    return network


def auto_allocated_topology_delete(*, user: User | None, project: Project) -> None:
    with transaction.atomic():
        network = Network.objects.filter(project=project, auto_allocated=True).first()
        if network is None:
            raise not_found("AutoAllocatedTopology", project.pk.hex)
        for interface in RouterInterface.objects.filter(port__network=network).select_related("router"):
            router = interface.router
            router_interface_remove(router=router, user=None, project=project, port_id=interface.port_id)
            if router.name == "auto_allocated_router" and not router.interfaces.exists():
                router_delete(router=router, user=None, project=project)
        network_delete(network=network, user=None, project=project)


def network_bootstrap(*, project: Project) -> dict[str, Network]:
    """What a fresh OpenStack install has, idempotently: the external network ``public`` (flat, on
    the external host bridge, CLOUDMGR_PUBLIC_NETWORK_CIDR, the default for auto-allocation), and
    for ``project`` a network ``private`` with a subnet and a router ``router1`` to ``public``."""
    with transaction.atomic():
        public = Network.objects.filter(external=True, name="public").first()
        if public is None:
            public = network_create(user=None, project=project, name="public", external=True,
                                    is_default=not Network.objects.filter(is_default=True).exists(),
                                    network_type=NetworkType.FLAT,
                                    physical_network=settings.CLOUDMGR_PUBLIC_PHYSNET)
            # The host's address on the external bridge is the subnet's gateway (agents: the same
            # CLOUDMGR_EXTERNAL_CIDR), so the host routes to floating IPs itself.
            host_side = ipaddress.ip_interface(settings.CLOUDMGR_EXTERNAL_CIDR)
            subnet_create(user=None, project=project, network=public, name="public-subnet",
                          cidr=str(host_side.network), gateway_ip=str(host_side.ip), enable_dhcp=False)
        private = Network.objects.filter(project=project, name="private").first()
        if private is None:
            private = network_create(user=None, project=project, name="private")
            subnet = subnet_create(user=None, project=project, network=private, name="private-subnet",
                                   cidr=settings.CLOUDMGR_PRIVATE_NETWORK_CIDR,
                                   dns_nameservers=list(settings.CLOUDMGR_DNS_NAMESERVERS))
            router = Router.objects.filter(project=project, name="router1").first() or router_create(
                user=None, project=project, name="router1", external_gateway_info={"network_id": str(public.pk)})
            router_interface_add(router=router, user=None, project=project, subnet_id=subnet.pk)
    return {"public": public, "private": private}


# --- the agents ------------------------------------------------------------------------------


def host_network_resync(*, host: Host) -> None:
    """Send ``host`` its whole network state (after the commit). The network host also takes the
    routers and DHCP servers that have no host yet (made before any host registered)."""
    with transaction.atomic():
        network_host = selectors.network_host()
        if network_host is not None and network_host.pk == host.pk:
            routers = Router.objects.filter(host__isnull=True)
            Port.objects.filter(device_owner__in=(OWNER_ROUTER_INTERFACE, OWNER_ROUTER_GATEWAY),
                                device_id__in=[str(pk) for pk in routers.values_list("pk", flat=True)]) \
                .update(host=host, updated_at=timezone.now())
            routers.update(host=host, updated_at=timezone.now())
            networks = Network.objects.filter(dhcp_host__isnull=True, subnets__enable_dhcp=True)
            Port.objects.filter(device_owner=OWNER_DHCP, network__in=networks).update(host=host,
                                                                                      updated_at=timezone.now())
            Network.objects.filter(pk__in=networks.values("pk")).update(dhcp_host=host, updated_at=timezone.now())
        NetworkAgent.objects.filter(host=host).update(synced_at=timezone.now())
        transaction.on_commit(lambda: host_resync(host))
    logger.info("sending host %s its whole network state", host.hostname)


def network_agent_report(*, host: Host, started_at: float) -> bool:
    """A host's heartbeat said when its agent started: the first heartbeat of a new agent
    process (a restart, or the first start) resyncs the host. True if it did."""
    with transaction.atomic():
        agent, created = NetworkAgent.objects.select_for_update().get_or_create(
            host=host, defaults={"started_at": started_at})
        if not created and agent.started_at == started_at:
            return False
        agent.started_at = started_at
        agent.save(update_fields=["started_at"])
        host_network_resync(host=host)
    return True


def _set_status(queryset, ok: bool) -> None:
    queryset.update(status=Status.ACTIVE if ok else Status.ERROR, updated_at=timezone.now())


def _set_port_status(queryset, ok: bool) -> None:
    """As _set_status, but a port with a tap that is administratively down (or on such a network)
    is DOWN once applied: the agent keeps its tap link-down."""
    if not ok:
        _set_status(queryset, ok)
        return
    tapped = queryset.exclude(device_owner__startswith=NETWORK_OWNER_PREFIX)
    down = set((tapped.filter(admin_state_up=False) | tapped.filter(network__admin_state_up=False))
               .values_list("pk", flat=True))
    _set_status(queryset.exclude(pk__in=down), ok)
    if down:
        Port.objects.filter(pk__in=down).update(status=Status.DOWN, updated_at=timezone.now())


def network_task_done(*, result: dict) -> None:
    """Apply a network agent's result ({task, kind, id, host, ok, error}): what it applied
    becomes ACTIVE (the port, or DOWN when it or its network is administratively down: its tap is
    kept link-down; a router with its ports and the floating IPs it NATs; a network's
    DHCP port; after a resync, everything of the host), what it could not ERROR. Results of
    deletions change nothing (the records are gone)."""
    if not isinstance(result, dict):
        return
    ok = bool(result.get("ok"))
    if not ok:
        logger.warning("network agent on %s: %s of %s %s failed: %s", result.get("host") or "?", result.get("task"),
                       result.get("kind"), result.get("id"), result.get("error"))
    if str(result.get("task", "")).endswith("_delete"):
        return
    kind, object_id = result.get("kind"), _uuid(result.get("id"))
    if kind == "router" and object_id:
        _set_status(Router.objects.filter(pk=object_id), ok)
        _set_status(Port.objects.filter(device_id=str(object_id),
                                        device_owner__in=(OWNER_ROUTER_INTERFACE, OWNER_ROUTER_GATEWAY)), ok)
        _set_status(FloatingIP.objects.filter(router_id=object_id, port__isnull=False), ok)
    elif kind == "port" and object_id:
        _set_port_status(Port.objects.filter(pk=object_id), ok)
    elif kind == "network" and object_id:
        _set_status(Port.objects.filter(network_id=object_id, device_owner=OWNER_DHCP), ok)
    elif kind == "host" and result.get("host"):
        host = Host.objects.filter(hostname=result["host"]).first()
        if host is not None:
            _set_port_status(Port.objects.filter(host=host), ok)
            _set_status(Router.objects.filter(host=host), ok)
            _set_status(FloatingIP.objects.filter(router__host=host, port__isnull=False), ok)
