"""Reads shaped for the portal's network pages.

Neutron's visibility rules live in ``apps.networks.selectors``; these start from them and narrow
them to the project the portal acts in (a cloud admin too: the portal is a project's view, as
Horizon's Project > Network), join what a page shows (which instance holds a port), and lay out
the topology picture.
"""

from dataclasses import dataclass, field

from django.db.models import Prefetch, Q, QuerySet

from apps.instances.selectors import instance_list
from apps.instances.states import api_status
from apps.networks import selectors
from apps.networks.errors import not_found
from apps.networks.models import FloatingIP, IPAllocation, Network, Port, Router, RouterInterface, Subnet
from apps.networks.states import (
    OWNER_COMPUTE,
    OWNER_DHCP,
    OWNER_FLOATINGIP,
    OWNER_ROUTER_GATEWAY,
    OWNER_ROUTER_INTERFACE,
)
from apps.tenants.models import Project, User
from cloudmgr.models import filter_pk

_SUBNETS = Prefetch("subnets", queryset=Subnet.objects.order_by("created_at"))


def _get(queryset: QuerySet, kind: str, object_id):
    obj = filter_pk(queryset, str(object_id)).first()
    if obj is None:
        raise not_found(kind, object_id)
    return obj


def _in_project(project: Project) -> Q:
    """The networks a project works with: its own, and the shared and external ones."""
    return Q(project=project) | Q(shared=True) | Q(external=True)


def network_portal_list(*, user: User, project: Project) -> QuerySet[Network]:
    """External networks first (where floating IPs come from), then by age."""
    networks = selectors.network_list(user=user, project=project).filter(_in_project(project))
    return (networks.prefetch_related(None).prefetch_related(_SUBNETS).select_related("project")
            .order_by("-external", "created_at"))


def network_portal_get(*, user: User, project: Project, network_id) -> Network:
    """A network of the project's view (anything else is not found), with its subnets."""
    return _get(network_portal_list(user=user, project=project), "Network", network_id)


def network_portal_external(*, user: User, project: Project) -> QuerySet[Network]:
    """The external networks a router's gateway and floating IPs may come from."""
    return network_portal_list(user=user, project=project).filter(external=True)


def instance_names(*, user: User, project: Project) -> dict[str, str]:
    """{instance id: name} of the project's instances (a port's device_id names its instance)."""
    return {str(pk): name for pk, name in instance_list(user=user, project=project).values_list("pk", "name")}


@dataclass(frozen=True)
class PortRow:
    port: Port
    addresses: list[str]
    # What the port belongs to: ("instance" | "router" | "dhcp" | "floatingip" | "", id, label).
    owner_kind: str
    owner_id: str
    owner_label: str


def _owner(port: Port, names: dict[str, str], project: Project) -> tuple[str, str, str]:
    """Links only to what the project's pages show: its instances and its routers."""
    owner = port.device_owner
    if owner.startswith("compute:"):
        if port.device_id in names:
            return "instance", port.device_id, names[port.device_id]
        return "", "", "an instance of another project"
    if owner in (OWNER_ROUTER_INTERFACE, OWNER_ROUTER_GATEWAY):
        label = "router interface" if owner == OWNER_ROUTER_INTERFACE else "router gateway"
        return ("router" if port.project_id == project.pk else ""), port.device_id, label
    if owner == OWNER_DHCP:
        return "dhcp", "", "DHCP server"
    if owner == OWNER_FLOATINGIP:
        return "floatingip", port.device_id, "floating IP"
    return "", port.device_id, port.device_id or port.name or "—"


def network_portal_ports(*, user: User, project: Project, network: Network) -> list[PortRow]:
    """The ports of a network that the viewer may see, with what each is attached to."""
    ports = (selectors.port_list(user=user, project=project).filter(network=network)
             .filter(Q(project=project) | Q(network__project=project)).order_by("created_at"))
    names = instance_names(user=user, project=project)
    rows = []
    for port in ports:
        kind, owner_id, label = _owner(port, names, project)
        rows.append(PortRow(port, [a.ip_address for a in port.fixed_ips.all()], kind, owner_id, label))
    return rows


def subnet_portal_get(*, user: User, project: Project, subnet_id) -> Subnet:
    subnets = selectors.subnet_list(user=user, project=project).filter(network__in=Network.objects.filter(
        _in_project(project)))
    return _get(subnets.select_related("network"), "Subnet", subnet_id)


def subnet_portal_choices(*, user: User, project: Project) -> QuerySet[Subnet]:
    """Subnets a router of the project may get a leg on: of its own or shared networks, not
    external (the services decide the rest: a gateway address, no overlap)."""
    return (selectors.subnet_list(user=user, project=project)
            .filter(Q(network__project=project) | Q(network__shared=True), network__external=False)
            .select_related("network").order_by("network__created_at", "created_at"))


# --- routers ---------------------------------------------------------------------------------

_INTERFACES = Prefetch(
    "interfaces",
    queryset=RouterInterface.objects.select_related("subnet", "port__network").prefetch_related(
        Prefetch("port__fixed_ips", queryset=IPAllocation.objects.order_by("id"))).order_by("created_at"),
)


def router_portal_list(*, user: User, project: Project) -> QuerySet[Router]:
    return (selectors.router_list(user=user, project=project).filter(project=project)
            .select_related("gateway_network", "host").prefetch_related(_INTERFACES))


def router_portal_get(*, user: User, project: Project, router_id) -> Router:
    return _get(router_portal_list(user=user, project=project), "Router", router_id)


# --- floating IPs ----------------------------------------------------------------------------


def floating_ip_portal_list(*, user: User, project: Project) -> QuerySet[FloatingIP]:
    return (selectors.floating_ip_list(user=user, project=project).filter(project=project)
            .select_related("floating_network", "port", "router").order_by("created_at"))


def floating_ip_portal_get(*, user: User, project: Project, floating_ip_id) -> FloatingIP:
    return _get(floating_ip_portal_list(user=user, project=project), "FloatingIP", floating_ip_id)


@dataclass(frozen=True)
class PortTarget:
    """A fixed IPv4 address of an instance's port, which a floating IP can be associated with."""

    port_id: str
    fixed_ip: str
    label: str

    @property
    def value(self) -> str:
        return f"{self.port_id}/{self.fixed_ip}"


def floating_ip_portal_targets(*, user: User, project: Project) -> list[PortTarget]:
    """The fixed IPv4 addresses of the project's instances that have no floating IP yet."""
    names = instance_names(user=user, project=project)
    ports = (selectors.port_list(user=user, project=project)
             .filter(project=project, device_owner=OWNER_COMPUTE, device_id__in=list(names))
             .select_related("network").prefetch_related("fixed_ips__subnet", "floating_ips").order_by("created_at"))
    targets = []
    for port in ports:
        taken = {fip.fixed_ip_address for fip in port.floating_ips.all()}
        for allocation in port.fixed_ips.all():
            if allocation.subnet.ip_version == 4 and allocation.ip_address not in taken:
                label = f"{names[port.device_id]}: {allocation.ip_address} ({port.network.name or port.network_id})"
                targets.append(PortTarget(str(port.pk), allocation.ip_address, label))
    return sorted(targets, key=lambda t: t.label)


@dataclass(frozen=True)
class FloatingIPRow:
    fip: FloatingIP
    instance_id: str  # the instance it leads to ("" when none)
    instance_name: str


def floating_ip_portal_rows(*, user: User, project: Project) -> list[FloatingIPRow]:
    """The project's floating IPs, each with the instance it leads to."""
    names = instance_names(user=user, project=project)
    rows = []
    for fip in floating_ip_portal_list(user=user, project=project):
        device = fip.port.device_id if fip.port is not None else ""
        if device in names:
            rows.append(FloatingIPRow(fip, device, names[device]))
        else:  # not associated, or with a port of no instance of the project (an admin's doing)
            rows.append(FloatingIPRow(fip, "", f"port {fip.port_id}" if fip.port_id else ""))
    return rows


# --- security groups -------------------------------------------------------------------------


def security_group_portal_list(*, user: User, project: Project):
    return selectors.security_group_list(user=user, project=project).filter(project=project).order_by(
        "-is_default", "name", "created_at")


def security_group_portal_get(*, user: User, project: Project, group_id):
    groups = security_group_portal_list(user=user, project=project).prefetch_related("rules__remote_group")
    return _get(groups, "SecurityGroup", group_id)


def security_group_rule_portal_get(*, user: User, project: Project, rule_id):
    rules = selectors.security_group_rule_list(user=user, project=project).filter(security_group__project=project)
    return _get(rules.select_related("security_group"), "SecurityGroupRule", rule_id)


# --- the instance page -----------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceAddress:
    network: str
    address: str
    version: int
    mac: str
    floating_ip: str | None


def instance_portal_addresses(*, instance) -> list[InstanceAddress]:
    """The fixed addresses of an instance's ports, each with its floating IP (NIC order)."""
    rows = []
    for port in selectors.server_ports(device_ids=[str(instance.pk)])[str(instance.pk)]:
        floating = {fip.fixed_ip_address: fip.floating_ip_address for fip in port.floating_ips.all()}
        for allocation in port.fixed_ips.all():
            rows.append(InstanceAddress(port.network.name or str(port.network_id), allocation.ip_address,
                                        allocation.subnet.ip_version, port.mac_address,
                                        floating.get(allocation.ip_address)))
    return rows


# --- topology --------------------------------------------------------------------------------

# The picture's geometry (SVG user units): networks are vertical bars in columns; each router and
# instance has a row, its box right of the bar of the leftmost network it is on, and a horizontal
# link to every network it is on, labelled with its address there.
COLUMN = 340
MARGIN = 24
BAR_WIDTH = 14
BAR_TOP = 52
ROW = 56
BOX_OFFSET = 110  # from the bar's left edge to the box
BOX_WIDTH = 130
BOX_HEIGHT = 38


@dataclass
class TopologyNetwork:
    id: str
    name: str
    cidrs: list[str]
    external: bool
    shared: bool
    own: bool
    status: str
    x: int = 0

    @property
    def center(self) -> int:
        return self.x + BAR_WIDTH // 2


@dataclass
class TopologyLink:
    network_id: str
    kind: str  # interface, gateway (a router's), port (an instance's)
    addresses: list[str]
    x1: int = 0
    x2: int = 0
    y: int = 0
    label_x: int = 0
    label_anchor: str = "start"
    junction_x: int = 0


@dataclass
class TopologyDevice:
    kind: str  # router, instance
    id: str
    name: str
    status: str
    links: list[TopologyLink] = field(default_factory=list)
    x: int = 0
    y: int = 0

    @property
    def center_y(self) -> int:
        return self.y + BOX_HEIGHT // 2


@dataclass
class Topology:
    networks: list[TopologyNetwork]
    devices: list[TopologyDevice]
    width: int = 0
    height: int = 0
    bar_top: int = BAR_TOP
    bar_height: int = 0
    box_width: int = BOX_WIDTH
    box_height: int = BOX_HEIGHT
    bar_width: int = BAR_WIDTH

    def links(self) -> list[tuple[TopologyDevice, TopologyLink]]:
        return [(device, link) for device in self.devices for link in device.links]


def network_topology(*, user: User, project: Project) -> Topology:
    """The project's networks (with the shared and external ones), its routers and instances,
    and which network each is on: a router by its interfaces and its gateway, an instance by its
    ports. Links to networks outside the picture (another project's) are left out."""
    networks = [
        TopologyNetwork(str(n.pk), n.name or str(n.pk), [s.cidr for s in n.subnets.all()], n.external, n.shared,
                        n.project_id == project.pk, n.status)
        for n in network_portal_list(user=user, project=project)
    ]
    shown = {n.id for n in networks}
    devices = []
    for router in router_portal_list(user=user, project=project):
        device = TopologyDevice("router", str(router.pk), router.name or str(router.pk), router.status)
        if router.gateway_network_id and str(router.gateway_network_id) in shown:
            addresses = ([a.ip_address for a in router.gateway_port.fixed_ips.all()]
                         if router.gateway_port is not None else [])
            device.links.append(TopologyLink(str(router.gateway_network_id), "gateway", addresses))
        for interface in router.interfaces.all():
            if str(interface.port.network_id) in shown:
                device.links.append(TopologyLink(str(interface.port.network_id), "interface",
                                                 [a.ip_address for a in interface.port.fixed_ips.all()]))
        devices.append(device)
    instances = list(instance_list(user=user, project=project).order_by("name", "created_at"))
    ports = selectors.server_ports(device_ids=[str(i.pk) for i in instances])
    for instance in instances:
        device = TopologyDevice("instance", str(instance.pk), instance.name,
                                api_status(instance.vm_state, instance.task_state))
        for port in ports.get(str(instance.pk), []):
            if str(port.network_id) in shown:
                device.links.append(TopologyLink(str(port.network_id), "port",
                                                 [a.ip_address for a in port.fixed_ips.all()]))
        devices.append(device)
    return _layout(Topology(networks, devices))


def _layout(topology: Topology) -> Topology:
    column = {}
    for i, network in enumerate(topology.networks):
        network.x = MARGIN + i * COLUMN
        column[network.id] = i
    unlinked = len(topology.networks)
    # Rows grouped by where they hang: routers first, then instances, each by their leftmost network.
    order = {"router": 0, "instance": 1}
    topology.devices.sort(key=lambda d: (order[d.kind], min((column[link.network_id] for link in d.links),
                                                            default=unlinked)))
    right_edge = MARGIN + max(len(topology.networks) - 1, 0) * COLUMN + BAR_WIDTH
    for row, device in enumerate(topology.devices):
        device.links.sort(key=lambda link: column[link.network_id])
        home = column[device.links[0].network_id] if device.links else max(unlinked - 1, 0)
        device.x = MARGIN + home * COLUMN + BOX_OFFSET
        device.y = BAR_TOP + 20 + row * ROW
        right_edge = max(right_edge, device.x + BOX_WIDTH)
        for link in device.links:
            bar = topology.networks[column[link.network_id]].center
            link.y, link.junction_x = device.center_y, bar
            if bar < device.x:  # the box is right of this network: the label sits by the bar
                link.x1, link.x2, link.label_x, link.label_anchor = bar, device.x, bar + 10, "start"
            else:
                link.x1, link.x2, link.label_x, link.label_anchor = device.x + BOX_WIDTH, bar, bar - 10, "end"
    rows = len(topology.devices)
    topology.bar_height = 20 + max(rows, 1) * ROW
    topology.width = right_edge + MARGIN
    topology.height = BAR_TOP + topology.bar_height + MARGIN
    return topology
