"""What each host's data plane should have, as ``agents.specs``, and sending it.

The control plane never sends a diff: a change sends the whole desired state of each thing it
touched (a NetworkSpec, a PortSpec, a RouterSpec) to the queue of every host concerned, after the
transaction commits; the agent converges idempotently. When an agent (re)starts it asks for its
host's whole state (``HostNetworkState``, see ``host_state``) and drops what is not in it.

Which hosts are concerned:
- a network: its DHCP host (full spec: DHCP port, static host entries), the hosts with bound
  ports on it and the hosts of the routers with a leg on it (bridge only);
- a port: the host it is bound to (``binding:host_id``), for its tap and its filter; the
  network's DHCP host too, whose static host entries list it;
- a router: its host (the network host);
- a security group whose members changed: the hosts with bound ports whose rules name it as
  their remote group get its members only (``SecurityGroupMembersSpec``): the ports' own specs
  are unchanged, so a boot does not re-send every port of the default group.
"""

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from django.db import transaction
from django.db.models import Q

from agents import names
from agents.specs import (
    FixedIPSpec,
    FloatingIPSpec,
    HostNetworkState,
    NetworkSpec,
    NicSpec,
    PortSpec,
    RouterInterfaceSpec,
    RouterSpec,
    SecurityGroupMembersSpec,
    SecurityRuleSpec,
    SubnetSpec,
)
from apps.hosts.models import Host
from apps.networks.models import IPAllocation, Network, Port, Router, SecurityGroupRule, Subnet
from apps.networks.states import NETWORK_OWNER_PREFIX, OWNER_DHCP
from cloudmgr.rpc import agent_cast

logger = logging.getLogger(__name__)

# --- specs -----------------------------------------------------------------------------------


def subnet_spec(subnet: Subnet) -> SubnetSpec:
    return SubnetSpec(
        id=str(subnet.pk), cidr=subnet.cidr, ip_version=subnet.ip_version, gateway_ip=subnet.gateway_ip,
        enable_dhcp=subnet.enable_dhcp, dns_nameservers=list(subnet.dns_nameservers),
        host_routes=list(subnet.host_routes), ipv6_address_mode=subnet.ipv6_address_mode,
        ipv6_ra_mode=subnet.ipv6_ra_mode,
    )


def _fixed_ips(port: Port) -> list[FixedIPSpec]:
    return [FixedIPSpec(subnet_id=str(a.subnet_id), ip_address=a.ip_address) for a in port.fixed_ips.all()]


def _rule_spec(rule: SecurityGroupRule) -> SecurityRuleSpec:
    return SecurityRuleSpec(
        direction=rule.direction, ethertype=rule.ethertype, protocol=rule.protocol,
        port_range_min=rule.port_range_min, port_range_max=rule.port_range_max,
        remote_ip_prefix=rule.remote_ip_prefix,
        remote_group_id=str(rule.remote_group_id) if rule.remote_group_id else None,
    )


def group_members(group_ids: Iterable) -> dict[str, list[str]]:
    """{group id: the fixed IPs (and allowed address pairs) of its ports}, for remote-group rules."""
    members: dict[str, list[str]] = {str(g): [] for g in group_ids}
    through = Port.security_groups.through
    pairs = through.objects.filter(securitygroup_id__in=list(group_ids)).values_list("securitygroup_id", "port_id")
    by_port: dict = {}
    for group_id, port_id in pairs:
        by_port.setdefault(port_id, []).append(str(group_id))
    for allocation in IPAllocation.objects.filter(port_id__in=list(by_port)).order_by("id"):
        for group_id in by_port[allocation.port_id]:
            members[group_id].append(allocation.ip_address)
    for port_id, pairs_json in Port.objects.filter(pk__in=list(by_port)).values_list("pk", "allowed_address_pairs"):
        for pair in pairs_json or []:
            for group_id in by_port[port_id]:
                members[group_id].append(pair["ip_address"])
    return members


def port_spec(port: Port, *, with_filter: bool = True) -> PortSpec:
    """A port as the data plane needs it; ``with_filter`` adds its security group rules and the
    member addresses of the groups they name (the ports of a DHCP spec need neither)."""
    rules: list[SecurityRuleSpec] = []
    remote_groups: dict[str, list[str]] = {}
    if with_filter and port.port_security_enabled:
        seen = set()
        for rule in SecurityGroupRule.objects.filter(security_group__ports=port).order_by("created_at", "id"):
            spec = _rule_spec(rule)
            key = tuple(sorted(vars(spec).items(), key=lambda kv: kv[0]))
            if key not in seen:
                seen.add(key)
                rules.append(spec)
        remote = {r.remote_group_id for r in rules if r.remote_group_id}
        remote_groups = group_members(remote) if remote else {}
    pairs = [{"ip_address": p["ip_address"], "mac_address": p.get("mac_address") or port.mac_address}
             for p in port.allowed_address_pairs or []]
    return PortSpec(
        id=str(port.pk), network_id=str(port.network_id), mac_address=port.mac_address,
        fixed_ips=_fixed_ips(port), device_owner=port.device_owner, device_id=port.device_id,
        mtu=port.network.mtu, port_security_enabled=port.port_security_enabled, allowed_address_pairs=pairs,
        security_rules=rules, remote_groups=remote_groups, hostname=port.hostname,
        admin_state_up=port.admin_state_up and port.network.admin_state_up,
    )


def _dhcp_entries(network: Network) -> list[PortSpec]:
    """Every port of the network with its addresses, as the DHCP server needs them (no filter),
    oldest first. Built from two value queries: this runs on every port change of the network."""
    addresses: dict = {}
    for port_id, subnet_id, address in (IPAllocation.objects.filter(network=network).order_by("id")
                                        .values_list("port_id", "subnet_id", "ip_address")):
        addresses.setdefault(port_id, []).append(FixedIPSpec(subnet_id=str(subnet_id), ip_address=address))
    fields = ("pk", "mac_address", "device_owner", "device_id", "hostname", "port_security_enabled")
    return [
        PortSpec(id=str(pk), network_id=str(network.pk), mac_address=mac, fixed_ips=addresses.get(pk, []),
                 device_owner=owner, device_id=device, mtu=network.mtu, port_security_enabled=secured,
                 hostname=hostname)
        for pk, mac, owner, device, hostname, secured in (Port.objects.filter(network=network)
                                                          .order_by("created_at", "id").values_list(*fields))
    ]


def network_spec(network: Network, host: Host | None, *, bridge_only: bool = False) -> NetworkSpec:
    """The network on ``host``: with its DHCP server and static host entries on its DHCP host,
    the bridge only elsewhere."""
    subnets = [subnet_spec(s) for s in network.subnets.order_by("created_at")]
    spec = NetworkSpec(
        id=str(network.pk), network_type=network.network_type, segmentation_id=network.segmentation_id,
        physical_network=network.physical_network or None, mtu=network.mtu, subnets=subnets, metadata=False,
    )
    serves_dhcp = (not bridge_only and host is not None and network.dhcp_host_id == host.pk
                   and any(s.enable_dhcp for s in subnets))
    if serves_dhcp:
        ports = _dhcp_entries(network)
        dhcp = next((p for p in ports if p.device_owner == OWNER_DHCP), None)
        if dhcp is not None:
            spec.dhcp_port = dhcp
            spec.ports = [p for p in ports if p is not dhcp and p.fixed_ips]
            spec.metadata = any(s.enable_dhcp and s.ip_version == 4 for s in subnets)
    return spec


def _interface_spec(port: Port, subnet: Subnet) -> RouterInterfaceSpec | None:
    address = next((a.ip_address for a in port.fixed_ips.all() if a.subnet_id == subnet.pk), None)
    if address is None:
        return None
    return RouterInterfaceSpec(port_id=str(port.pk), network_id=str(port.network_id), mac_address=port.mac_address,
                               ip_address=address, cidr=subnet.cidr,
                               network=network_spec(port.network, None, bridge_only=True))


def router_spec(router: Router) -> RouterSpec:
    spec = RouterSpec(id=str(router.pk), enable_snat=router.enable_snat, routes=list(router.routes or []))
    interfaces = router.interfaces.select_related("port__network", "subnet").prefetch_related("port__fixed_ips")
    for interface in interfaces.order_by("created_at"):
        leg = _interface_spec(interface.port, interface.subnet)
        if leg is not None:
            spec.interfaces.append(leg)
    gateway = router.gateway_port
    if gateway is not None:
        allocations = list(gateway.fixed_ips.select_related("subnet").order_by("id"))
        v4 = next((a for a in allocations if a.subnet.ip_version == 4), None)
        if v4 is not None:
            spec.gateway = _interface_spec(gateway, v4.subnet)
            spec.gateway_ip = v4.subnet.gateway_ip
        for fip in router.floating_ips.filter(port__isnull=False).order_by("created_at"):
            spec.floating_ips.append(FloatingIPSpec(floating_ip_address=fip.floating_ip_address,
                                                    fixed_ip_address=fip.fixed_ip_address))
    return spec


def nic_spec(port: Port) -> NicSpec:
    """A server's NIC: its tap joins the port's network bridge."""
    return NicSpec(port_id=str(port.pk), mac_address=port.mac_address, bridge=names.bridge_name(str(port.network_id)),
                   mtu=port.network.mtu, admin_state_up=port.admin_state_up and port.network.admin_state_up)


# --- which hosts -----------------------------------------------------------------------------


def _bound_ports():
    return Port.objects.exclude(device_owner__startswith=NETWORK_OWNER_PREFIX).filter(host__isnull=False)


def _routers_on(network: Network):
    """The routers with a leg or their gateway on ``network``."""
    return Router.objects.filter(Q(interfaces__port__network=network) | Q(gateway_port__network=network))


def network_hosts(network: Network) -> set:
    """The ids of the hosts that need this network's bridge (and, for one, its DHCP server)."""
    hosts = set(_bound_ports().filter(network=network).values_list("host_id", flat=True))
    hosts |= set(_routers_on(network).filter(host__isnull=False).values_list("host_id", flat=True))
    if network.dhcp_host_id:
        hosts.add(network.dhcp_host_id)
    return hosts


def host_networks(host: Host) -> list[Network]:
    networks = Network.objects.filter(
        Q(dhcp_host=host)
        | Q(pk__in=_bound_ports().filter(host=host).values("network_id"))
        | Q(pk__in=Router.objects.filter(host=host).values("interfaces__port__network_id"))
        | Q(pk__in=Router.objects.filter(host=host).values("gateway_port__network_id"))
    )
    return list(networks.distinct().order_by("created_at"))


def host_state(host: Host) -> HostNetworkState:
    """Everything ``host`` should have: what its agent converges to after a restart. Each spec
    is stamped (``generation``), so that older messages still queued are dropped after it."""
    generation = time.time_ns()
    ports = _bound_ports().filter(host=host).select_related("network").prefetch_related("fixed_ips")
    state = HostNetworkState(
        networks=[network_spec(n, host) for n in host_networks(host)],
        routers=[router_spec(r) for r in Router.objects.filter(host=host).select_related("gateway_port")
                 .order_by("created_at")],
        ports=[port_spec(p) for p in ports.order_by("created_at")],
    )
    for spec in (*state.networks, *state.routers, *state.ports):
        spec.generation = generation
    return state


# --- sending ---------------------------------------------------------------------------------


def _cast(host: Host, task: str, payload: dict) -> None:
    agent_cast(queue=host.queue, task=task, payload=payload, callback=names.CALLBACK_NETWORK_DONE)


_batch = threading.local()


@contextmanager
def batched_sync() -> Iterator[None]:
    """Inside the block (inside the caller's transaction), every ``Sync.send()`` joins one Sync,
    registered for after the commit where the first one was sent (so it keeps its place among
    the transaction's other on-commit sends: a server's ports before its spawn): a service made
    of several steps (a server's ports made, then bound to its host) sends each host one message
    per thing it changed, not one per step. Nested blocks join the outermost."""
    if getattr(_batch, "sync", None) is not None:
        yield
        return
    _batch.sync = Sync()
    try:
        yield
    finally:
        _batch.sync = None


class Sync:
    """The things one service call changed. ``send()`` registers, for after the commit, the
    whole desired state of each of them to every host concerned (read fresh at that moment);
    inside ``batched_sync()`` it joins the block's Sync instead."""

    def __init__(self) -> None:
        self.networks: set = set()
        self.ports: set = set()
        self.routers: set = set()
        self.member_groups: set = set()  # security groups whose members changed
        self.deleted_ports: dict = {}  # port id -> (network id, host id)
        self.deleted_routers: dict = {}  # router id -> host id
        self.deleted_networks: dict = {}  # network id -> host ids
        self.network_hosts_before: dict = {}  # network id -> host ids, to drop bridges no longer needed

    def network(self, network: Network) -> "Sync":
        self.networks.add(network.pk)
        self.network_hosts_before.setdefault(network.pk, network_hosts(network))
        return self

    def port(self, port: Port) -> "Sync":
        """A port changed: its host's tap and filter, and its network's DHCP entries."""
        self.ports.add(port.pk)
        self.networks.add(port.network_id)
        return self

    def bound_ports_of(self, network: Network) -> "Sync":
        """The network's bound ports (their taps carry its admin state and MTU)."""
        self.ports |= set(_bound_ports().filter(network=network).values_list("pk", flat=True))
        return self

    def routers_on(self, network: Network) -> "Sync":
        """The routers with a leg or their gateway on the network (their legs carry its MTU)."""
        self.routers |= set(_routers_on(network).values_list("pk", flat=True))
        return self

    def rules_changed(self, group_ids: Iterable) -> "Sync":
        """These groups' rules changed: the filters of their member ports."""
        self.ports |= set(_bound_ports().filter(security_groups__in=list(group_ids)).values_list("pk", flat=True))
        return self

    def members_changed(self, group_ids: Iterable) -> "Sync":
        """These groups gained or lost an address: the remote-group sets that name them."""
        self.member_groups |= set(group_ids)
        return self

    def router(self, router: Router) -> "Sync":
        self.routers.add(router.pk)
        return self

    def port_deleted(self, port: Port) -> "Sync":
        self.deleted_ports[port.pk] = (port.network_id, port.host_id)
        self.networks.add(port.network_id)
        self.network_hosts_before.setdefault(port.network_id, network_hosts(port.network))
        return self

    def port_unbound(self, port: Port, host_id) -> "Sync":
        """The port left ``host_id`` (a server deleted, or moved by the scheduler)."""
        if host_id is not None:
            self.deleted_ports[port.pk] = (port.network_id, host_id)
            self.network_hosts_before.setdefault(port.network_id, set()).add(host_id)
        return self.port(port)

    def router_deleted(self, router: Router) -> "Sync":
        if router.host_id:
            self.deleted_routers[router.pk] = router.host_id
        return self

    def network_deleted(self, network: Network) -> "Sync":
        self.deleted_networks[network.pk] = network_hosts(network)
        return self

    def _merge(self, other: "Sync") -> None:
        self.networks |= other.networks
        self.ports |= other.ports
        self.routers |= other.routers
        self.member_groups |= other.member_groups
        self.deleted_ports.update(other.deleted_ports)
        self.deleted_routers.update(other.deleted_routers)
        self.deleted_networks.update(other.deleted_networks)
        # Hosts that had a network before any step, or lost a port on it in one: each is told to
        # drop the bridge if it no longer needs it.
        for network_id, host_ids in other.network_hosts_before.items():
            self.network_hosts_before.setdefault(network_id, set()).update(host_ids)

    def send(self) -> None:
        batch = getattr(_batch, "sync", None)
        if batch is not None and batch is not self:
            first = not batch.has_changes()
            batch._merge(self)
            if first and batch.has_changes():
                batch.send()
            return
        if self.has_changes():
            transaction.on_commit(self._flush)

    def has_changes(self) -> bool:
        return any((self.networks, self.ports, self.routers, self.member_groups,
                    self.deleted_ports, self.deleted_routers, self.deleted_networks))

    def _flush(self) -> None:
        # Stamped before reading: a flush that starts later reads every commit of those that
        # started earlier, so the agent may drop whatever is older than the newest it applied.
        generation = time.time_ns()

        def cast(host: Host, task: str, payload: dict) -> None:
            _cast(host, task, {**payload, "generation": generation})

        hosts: dict = {h.pk: h for h in Host.objects.all()}
        for port_id, (network_id, host_id) in self.deleted_ports.items():
            host = hosts.get(host_id)
            if host is not None:
                cast(host, names.TASK_PORT_DELETE, {"port_id": str(port_id), "network_id": str(network_id)})
        for router_id, host_id in self.deleted_routers.items():
            if host_id in hosts:
                cast(hosts[host_id], names.TASK_ROUTER_DELETE, {"router_id": str(router_id)})
        for network_id, host_ids in self.deleted_networks.items():
            for host_id in host_ids:
                if host_id in hosts:
                    cast(hosts[host_id], names.TASK_NETWORK_DELETE, {"network_id": str(network_id)})
        for network in Network.objects.filter(pk__in=self.networks - set(self.deleted_networks)):
            needed = network_hosts(network)
            for host_id in needed:
                if host_id in hosts:
                    cast(hosts[host_id], names.TASK_NETWORK_SYNC, network_spec(network, hosts[host_id]).to_dict())
            for host_id in self.network_hosts_before.get(network.pk, set()) - needed:
                if host_id in hosts:
                    cast(hosts[host_id], names.TASK_NETWORK_DELETE, {"network_id": str(network.pk)})
        ports = _bound_ports().filter(pk__in=self.ports).select_related("network").prefetch_related("fixed_ips")
        for port in ports:
            if port.host_id in hosts:
                cast(hosts[port.host_id], names.TASK_PORT_SYNC, port_spec(port).to_dict())
        routers = Router.objects.filter(pk__in=self.routers, host__isnull=False).select_related("gateway_port")
        for router in routers:
            if router.host_id in hosts:
                cast(hosts[router.host_id], names.TASK_ROUTER_SYNC, router_spec(router).to_dict())
        if self.member_groups:
            members = group_members(self.member_groups)
            for host_id, group_ids in _hosts_naming(self.member_groups).items():
                for group_id in sorted(group_ids, key=str):
                    if host_id in hosts:
                        spec = SecurityGroupMembersSpec(id=str(group_id), members=members[str(group_id)])
                        cast(hosts[host_id], names.TASK_SECURITY_GROUP_MEMBERS, spec.to_dict())


def _hosts_naming(group_ids: set) -> dict:
    """{host id: the groups of ``group_ids`` that the rules of its filtered ports name as remote}."""
    remote_of: dict = {}
    for group_id, remote_id in (SecurityGroupRule.objects.filter(remote_group_id__in=list(group_ids))
                                .values_list("security_group_id", "remote_group_id")):
        remote_of.setdefault(group_id, set()).add(remote_id)
    through = Port.security_groups.through
    rows = through.objects.filter(
        securitygroup_id__in=list(remote_of),
        port__in=_bound_ports().filter(port_security_enabled=True),
    ).values_list("port__host_id", "securitygroup_id").distinct()
    hosts: dict = {}
    for host_id, group_id in rows:
        hosts.setdefault(host_id, set()).update(remote_of[group_id])
    return hosts


def host_resync(host: Host) -> None:
    """Send a host its whole network state (after its agent (re)started)."""
    _cast(host, names.TASK_HOST_NETWORK_RESYNC, host_state(host).to_dict())

