"""Network reads, with Neutron's visibility: a cloud admin sees everything; anyone else sees their
project's objects, plus shared and external networks (and their subnets) read-only, and the
ports of their own networks. Anything else is 404, as if it did not exist."""

import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Prefetch, Q, QuerySet

from apps.hosts.models import Host, HostStatus
from apps.networks import ipam
from apps.networks.errors import not_found
from apps.networks.models import (
    FloatingIP,
    IPAllocation,
    Network,
    Port,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)
from apps.networks.states import OWNER_COMPUTE
from apps.tenants.models import Project, Quota, Resource, User
from apps.tenants.selectors import is_cloud_admin
from cloudmgr.exceptions import ApplicationError
from cloudmgr.models import checked_regex, filter_pk


def viewer_is_admin(user: User | None) -> bool:
    """A command (no user) acts as the operator."""
    return user is None or is_cloud_admin(user=user)


def _get(queryset: QuerySet, kind: str, object_id):
    obj = filter_pk(queryset, str(object_id)).first()
    if obj is None:
        raise not_found(kind, object_id)
    return obj


def network_host() -> Host | None:
    """The host that runs routers and DHCP: CLOUDMGR_NETWORK_HOST, else the first enabled host
    registered (on a single box, the host that runs the agent)."""
    name = getattr(settings, "CLOUDMGR_NETWORK_HOST", "")
    if name:
        return Host.objects.filter(hostname=name).first()
    return Host.objects.filter(status=HostStatus.ENABLED).order_by("created_at", "hostname").first()


# --- networks --------------------------------------------------------------------------------


def network_list(*, user: User | None, project: Project | None) -> QuerySet[Network]:
    networks = Network.objects.all()
    if not viewer_is_admin(user):
        networks = networks.filter(Q(project=project) | Q(shared=True) | Q(external=True))
    return networks.prefetch_related(Prefetch("subnets", queryset=Subnet.objects.only("id", "network_id")))


def network_get(*, user: User | None, project: Project | None, network_id) -> Network:
    return _get(network_list(user=user, project=project), "Network", network_id)


def networks_available(*, user: User | None, project: Project) -> QuerySet[Network]:
    """The networks a server of the project may be plugged into without naming one (Nova's
    choice): its own and the shared ones, never an external network."""
    return Network.objects.filter(Q(project=project) | Q(shared=True), external=False).order_by("created_at")


def network_default_external() -> Network | None:
    return Network.objects.filter(external=True, is_default=True).first()


# --- subnets ---------------------------------------------------------------------------------


def subnet_list(*, user: User | None, project: Project | None) -> QuerySet[Subnet]:
    subnets = Subnet.objects.all()
    if not viewer_is_admin(user):
        subnets = subnets.filter(Q(project=project) | Q(network__project=project) | Q(network__shared=True)
                                 | Q(network__external=True))
    return subnets


def subnet_get(*, user: User | None, project: Project | None, subnet_id) -> Subnet:
    return _get(subnet_list(user=user, project=project).select_related("network"), "Subnet", subnet_id)


# --- ports -----------------------------------------------------------------------------------

_PORT_FIXED_IPS = Prefetch("fixed_ips", queryset=IPAllocation.objects.order_by("id"))
_PORT_FIXED_IPS_AND_SUBNETS = Prefetch("fixed_ips",
                                       queryset=IPAllocation.objects.select_related("subnet").order_by("id"))
_PORT_GROUPS = Prefetch("security_groups", queryset=SecurityGroup.objects.only("id"))


def port_list(*, user: User | None, project: Project | None) -> QuerySet[Port]:
    ports = Port.objects.all()
    if not viewer_is_admin(user):
        ports = ports.filter(Q(project=project) | Q(network__project=project))
    return ports.select_related("host").prefetch_related(_PORT_FIXED_IPS, _PORT_GROUPS)


def port_get(*, user: User | None, project: Project | None, port_id) -> Port:
    return _get(port_list(user=user, project=project).select_related("network"), "Port", port_id)


def port_find_by_address(*, network_id: str, ip_address: str) -> Port | None:
    """The port that holds this fixed IP on this network (the metadata service asks who a
    request came from by network and source address, never by anything the guest sends)."""
    try:
        address = ipam.canonical(ip_address)
        network_uuid = uuid.UUID(str(network_id))
    except (ValueError, ApplicationError):  # not an address or not an id: nobody holds it
        return None
    allocation = (IPAllocation.objects.filter(network_id=network_uuid, ip_address=address)
                  .select_related("port").first())
    return allocation.port if allocation else None


# --- routers ---------------------------------------------------------------------------------


def router_list(*, user: User | None, project: Project | None) -> QuerySet[Router]:
    routers = Router.objects.all()
    if not viewer_is_admin(user):
        routers = routers.filter(project=project)
    return routers.select_related("gateway_port").prefetch_related(
        Prefetch("gateway_port__fixed_ips", queryset=IPAllocation.objects.order_by("id")))


def router_get(*, user: User | None, project: Project | None, router_id) -> Router:
    return _get(router_list(user=user, project=project), "Router", router_id)


# --- floating IPs ----------------------------------------------------------------------------


def floating_ip_list(*, user: User | None, project: Project | None) -> QuerySet[FloatingIP]:
    fips = FloatingIP.objects.all()
    if not viewer_is_admin(user):
        fips = fips.filter(project=project)
    return fips


def floating_ip_get(*, user: User | None, project: Project | None, floating_ip_id) -> FloatingIP:
    return _get(floating_ip_list(user=user, project=project), "FloatingIP", floating_ip_id)


# --- security groups -------------------------------------------------------------------------


def security_group_list(*, user: User | None, project: Project | None) -> QuerySet[SecurityGroup]:
    groups = SecurityGroup.objects.all()
    if not viewer_is_admin(user):
        groups = groups.filter(project=project)
    return groups.prefetch_related(Prefetch("rules", queryset=SecurityGroupRule.objects.order_by("created_at")))


def security_group_get(*, user: User | None, project: Project | None, group_id) -> SecurityGroup:
    return _get(security_group_list(user=user, project=project), "SecurityGroup", group_id)


def security_group_rule_list(*, user: User | None, project: Project | None) -> QuerySet[SecurityGroupRule]:
    rules = SecurityGroupRule.objects.all()
    if not viewer_is_admin(user):
        rules = rules.filter(Q(project=project) | Q(security_group__project=project))
    return rules


def security_group_rule_get(*, user: User | None, project: Project | None, rule_id) -> SecurityGroupRule:
    return _get(security_group_rule_list(user=user, project=project), "SecurityGroupRule", rule_id)


# --- IP availability -------------------------------------------------------------------------


@dataclass(frozen=True)
class SubnetAvailability:
    subnet: Subnet
    total_ips: int
    used_ips: int


def network_ip_availability(*, networks: QuerySet[Network]) -> dict:
    """{network id: [SubnetAvailability]}: pool sizes and allocations, in two queries."""
    subnets = (Subnet.objects.filter(network__in=networks).annotate(used=Count("allocations"))
               .order_by("created_at"))
    result: dict = {}
    for subnet in subnets:
        result.setdefault(subnet.network_id, []).append(
            SubnetAvailability(subnet, ipam.pool_size(subnet.allocation_pools), subnet.used))
    return result


# --- servers ---------------------------------------------------------------------------------


def server_ports(*, device_ids: list[str]) -> dict[str, list[Port]]:
    """The ports of these servers, oldest first (NIC order), with addresses and floating IPs."""
    ports = (Port.objects.filter(device_id__in=device_ids, device_owner__startswith="compute:")
             .select_related("network").prefetch_related(_PORT_FIXED_IPS_AND_SUBNETS, "floating_ips")
             .order_by("created_at", "id"))
    found: dict[str, list[Port]] = {device_id: [] for device_id in device_ids}
    for port in ports:
        found.setdefault(port.device_id, []).append(port)
    return found


def server_addresses(*, device_ids: list[str]) -> dict[str, dict]:
    """Nova's ``addresses`` of each server: {network name: [{version, addr, OS-EXT-IPS:type,
    OS-EXT-IPS-MAC:mac_addr}]}, fixed addresses first, each followed by its floating IP."""
    addresses: dict[str, dict] = {}
    for device_id, ports in server_ports(device_ids=device_ids).items():
        body: dict[str, list] = {}
        for port in ports:
            entries = body.setdefault(port.network.name or str(port.network_id), [])
            floating = {fip.fixed_ip_address: fip for fip in port.floating_ips.all()}
            for allocation in port.fixed_ips.all():
                version = allocation.subnet.ip_version
                entries.append({"version": version, "addr": allocation.ip_address, "OS-EXT-IPS:type": "fixed",
                                "OS-EXT-IPS-MAC:mac_addr": port.mac_address})
                fip = floating.get(allocation.ip_address)
                if fip is not None:
                    entries.append({"version": 4, "addr": fip.floating_ip_address, "OS-EXT-IPS:type": "floating",
                                    "OS-EXT-IPS-MAC:mac_addr": port.mac_address})
        addresses[device_id] = body
    return addresses


def server_security_groups(*, device_ids: list[str]) -> dict[str, list[dict]]:
    """Nova's ``security_groups`` of each server: ``{"name": ...}`` for each group of each of its
    ports (a group on two ports comes twice, as in Nova), in one query."""
    found: dict[str, list[dict]] = {device_id: [] for device_id in device_ids}
    rows = (Port.security_groups.through.objects
            .filter(port__device_id__in=device_ids, port__device_owner__startswith="compute:")
            .order_by("port__created_at", "port_id", "securitygroup__name", "securitygroup_id")
            .values_list("port__device_id", "securitygroup__name", "securitygroup_id"))
    for device_id, name, group_id in rows:
        found.setdefault(device_id, []).append({"name": name or str(group_id)})
    return found


def server_security_group_details(*, device_id: str) -> list[SecurityGroup]:
    """The security groups of a server's ports, each once, with their rules and each rule's
    remote group (Nova's ``GET /servers/{id}/os-security-groups``), in two queries."""
    rules = SecurityGroupRule.objects.select_related("remote_group").order_by("created_at", "id")
    groups = (SecurityGroup.objects.filter(ports__device_id=device_id, ports__device_owner=OWNER_COMPUTE)
              .distinct().prefetch_related(Prefetch("rules", queryset=rules)))
    return list(groups)


def server_port_get(*, device_id: str, port_id) -> Port:
    ports = Port.objects.filter(device_id=device_id, device_owner=OWNER_COMPUTE)
    port = filter_pk(ports.prefetch_related(_PORT_FIXED_IPS), str(port_id)).first()
    if port is None:
        raise not_found("Port", port_id)
    return port


def server_nics(*, device_id: str) -> list:
    """The NICs of a server's domain (``agents.specs.NicSpec``), in the order its ports came."""
    from apps.networks.dataplane import nic_spec

    ports = Port.objects.filter(device_id=device_id, device_owner=OWNER_COMPUTE).select_related("network")
    return [nic_spec(port) for port in ports.order_by("created_at", "id")]


def server_on_network_without_metadata(*, device_id: str) -> bool:
    """A port of the server is on a network that serves no metadata: as the data plane decides
    (``dataplane.network_spec``), one without a DHCP-enabled IPv4 subnet. One query."""
    serving = Subnet.objects.filter(enable_dhcp=True, ip_version=4).values("network_id")
    ports = Port.objects.filter(device_id=device_id, device_owner__startswith="compute:")
    return ports.exclude(network_id__in=serving).exists()


# --- quotas ----------------------------------------------------------------------------------

# Neutron's quota names that cloudmgr limits (apps.tenants quotas), and those it does not.
NEUTRON_QUOTAS = {"network": Resource.NETWORKS, "port": Resource.PORTS, "floatingip": Resource.FLOATING_IPS,
                  "security_group": Resource.SECURITY_GROUPS}
FIXED_QUOTAS = ("subnet", "router", "security_group_rule", "rbac_policy", "subnetpool")


def network_quota(*, project: Project) -> dict[str, tuple[int, int]]:
    """{Neutron quota name: (limit, used)}; -1 is unlimited."""
    quotas = {q.resource: q for q in Quota.objects.filter(project=project, resource__in=NEUTRON_QUOTAS.values())}
    body = {}
    for name, resource in NEUTRON_QUOTAS.items():
        quota = quotas.get(resource)
        body[name] = (quota.limit, quota.in_use) if quota else (settings.CLOUDMGR_DEFAULT_QUOTAS[resource], 0)
    counts = {"subnet": Subnet.objects.filter(project=project).count(),
              "router": Router.objects.filter(project=project).count(),
              "security_group_rule": SecurityGroupRule.objects.filter(project=project).count()}
    for name in FIXED_QUOTAS:
        body[name] = (-1, counts.get(name, 0))
    return body


def network_quota_defaults() -> dict[str, int]:
    return {**{name: settings.CLOUDMGR_DEFAULT_QUOTAS[resource] for name, resource in NEUTRON_QUOTAS.items()},
            **{name: -1 for name in FIXED_QUOTAS}}


def network_quota_projects() -> QuerySet[Project]:
    """Projects whose network quotas differ from the defaults (Neutron's GET /quotas)."""
    differ = Q()
    for resource in NEUTRON_QUOTAS.values():
        differ |= Q(quotas__resource=resource) & ~Q(quotas__limit=settings.CLOUDMGR_DEFAULT_QUOTAS[resource])
    return Project.objects.filter(differ).distinct().order_by("name")


def server_ids_by_address(*, ip: str | None = None, ip6: str | None = None) -> set[uuid.UUID]:
    """The servers with a fixed IPv4 address matching the regex ``ip`` and an IPv6 one matching
    ``ip6`` (Nova's list filters; either may be None)."""
    found: set[uuid.UUID] | None = None
    for version, pattern in ((4, ip), (6, ip6)):
        if pattern is None:
            continue
        checked_regex("ip6" if version == 6 else "ip", pattern)
        devices = (IPAllocation.objects.filter(port__device_owner=OWNER_COMPUTE, subnet__ip_version=version,
                                               ip_address__regex=pattern).values_list("port__device_id", flat=True))
        ids = set()
        for device_id in devices:
            try:
                ids.add(uuid.UUID(device_id))
            except ValueError:
                continue
        found = ids if found is None else found & ids
    return found or set()
