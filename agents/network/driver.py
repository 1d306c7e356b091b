"""The network driver: what the agent's tasks (and the compute spawn path) call.

Each method applies one whole desired state and is idempotent, so a redelivered or repeated task
changes nothing, and :meth:`NetworkDriver.resync` after an agent restart is the same calls for
everything plus the removal of this agent's leftovers.

Other parts of the data plane (security groups, metadata) plug in as :class:`NetworkExtension`\\ s:
the driver calls each extension's hooks under its locks, with the same spec (a sync hook after
the driver's own step, a delete hook before it). An extension registers itself by its dotted
path in :data:`EXTENSIONS`.

Locking: the agent runs many tasks at once (a boot storm sends each host a network, port and
security group message per server). Kernel objects are made create-or-reuse, so steps on
different objects run in parallel: a network's steps (its DHCP namespace and dnsmasq) hold that
network's lock, a router's its own, a port's its own, and the spawn path's tap plugging none. A
resync holds the driver exclusively, so that it never races the steps it converges with.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import logging
import shutil
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from agents import names
from agents.config import safe_component
from agents.locks import KeyedLocks, SharedExclusiveLock
from agents.network import NetworkError, dhcp, l2, linux, router
from agents.network.config import NetworkConfig, get_network_config
from agents.specs import HostNetworkState, NetworkSpec, NicSpec, PortSpec, RouterSpec, SecurityGroupMembersSpec

__all__ = [
    "EXTENSIONS",
    "LinuxNetworkDriver",
    "NetworkDriver",
    "NetworkExtension",
    "get_network_driver",
    "reset_network_driver",
]

log = logging.getLogger(__name__)

#: Dotted paths of the :class:`NetworkExtension` classes the Linux driver runs, in order.
EXTENSIONS: tuple[str, ...] = ("agents.network.firewall.SecurityGroupExtension",
                               "agents.network.metadata.MetadataExtension")

DHCP_NAMESPACE_PREFIX = names.dhcp_namespace("")
ROUTER_NAMESPACE_PREFIX = names.router_namespace("")


class NetworkExtension:
    """A part of the data plane that follows the driver's steps (security groups, metadata).

    A sync hook runs after the driver has made its kernel objects (the port's tap, the network's
    bridge and DHCP namespace); a delete hook runs before the driver removes them; ``resync``
    runs last and removes the extension's own leftovers. Hooks must be idempotent; whatever
    they raise fails the task with its message (as a :class:`~agents.network.NetworkError`).
    """

    def __init__(self, config: NetworkConfig) -> None:
        self.config = config

    def network_sync(self, spec: NetworkSpec) -> None:
        """The network's bridge exists, and its DHCP namespace if ``spec.dhcp_port``."""

    def network_delete(self, network_id: str) -> None:
        """The network is about to go from this host."""

    def port_sync(self, spec: PortSpec) -> None:
        """The port's tap (``names.tap_name``) exists on its network's bridge."""

    def port_delete(self, port_id: str, network_id: str) -> None:
        """The port's tap is about to go."""

    def security_group_members(self, spec: SecurityGroupMembersSpec) -> None:
        """A security group's members changed (the rules naming it match other addresses now)."""

    def resync(self, state: HostNetworkState) -> None:
        """Everything in ``state`` was synced; remove this extension's things that are not in it."""


class NetworkDriver(abc.ABC):
    """What a host's agent does with networks; every method is idempotent."""

    name = "abstract"

    @abc.abstractmethod
    def network_sync(self, spec: NetworkSpec) -> dict[str, Any]:
        """Bridge (and uplink), DHCP namespace and dnsmasq: ``{"bridge", "dhcp": bool}``."""

    @abc.abstractmethod
    def network_delete(self, network_id: str) -> None:
        """Remove the network's DHCP namespace, dnsmasq and bridge; a missing network is fine."""

    @abc.abstractmethod
    def port_sync(self, spec: PortSpec) -> dict[str, Any]:
        """The port's tap on its network's bridge: ``{"device": tap name or None}`` (ports of
        routers and DHCP are plugged by their router's and network's syncs)."""

    @abc.abstractmethod
    def port_delete(self, port_id: str, network_id: str) -> None:
        """Remove the port's tap; a missing one is fine."""

    @abc.abstractmethod
    def security_group_members(self, spec: SecurityGroupMembersSpec) -> dict[str, Any]:
        """The group's members into every filter whose rules name it: ``{}``."""

    @abc.abstractmethod
    def router_sync(self, spec: RouterSpec) -> None:
        """Namespace, legs, gateway, routes, NAT and floating IPs."""

    @abc.abstractmethod
    def router_delete(self, router_id: str) -> None:
        """Remove the router's namespace and legs; a missing router is fine."""

    @abc.abstractmethod
    def plug_nics(self, nics: Sequence[NicSpec]) -> None:
        """The taps of a guest about to be defined (the compute spawn path)."""

    @abc.abstractmethod
    def resync(self, state: HostNetworkState) -> dict[str, Any]:
        """Converge to ``state`` and remove this agent's things that are not in it:
        ``{"removed": [names], "errors": [messages]}`` (one failing item does not stop the rest)."""


def _check_ids(*ids: str) -> None:
    """Ids become device, namespace and directory names: refuse anything but a safe alphabet."""
    for value in ids:
        try:
            safe_component(value, "id")
        except ValueError as exc:
            raise NetworkError(str(exc)) from None


@contextlib.contextmanager
def _kernel(action: str) -> Iterator[None]:
    """Turn netlink and OS errors raised while doing ``action`` into NetworkError."""
    try:
        yield
    except NetlinkError as exc:
        raise NetworkError(f"{action} failed: {exc.args[1] if len(exc.args) > 1 else exc}") from None
    except OSError as exc:
        raise NetworkError(f"{action} failed: {exc.strerror or exc}") from None


class LinuxNetworkDriver(NetworkDriver):
    """The data plane in this host's kernel (see :mod:`agents.network`)."""

    name = "linux"

    def __init__(self, config: NetworkConfig, extensions: Sequence[NetworkExtension] | None = None) -> None:
        self.config = config
        if extensions is None:
            extensions = [_import(path)(config) for path in EXTENSIONS]
        self.extensions = list(extensions)
        self._resync_lock = SharedExclusiveLock()  # shared by every step, exclusive for a resync
        self._object_locks = KeyedLocks()

    @contextlib.contextmanager
    def _holding(self, key: str | None = None) -> Iterator[None]:
        """The driver in shared mode, and the lock of one object (``"network:<id>"``) if given."""
        with self._resync_lock.shared():
            if key is None:
                yield
            else:
                with self._object_locks(key):
                    yield

    def _extension(self, extension: NetworkExtension, hook: str, *args) -> None:
        try:
            getattr(extension, hook)(*args)
        except NetworkError:
            raise
        except Exception as exc:  # an extension's own error: the task reports it like ours
            log.warning("%s.%s failed", type(extension).__name__, hook, exc_info=True)
            raise NetworkError(f"{type(extension).__name__}: {exc}") from exc

    def _extensions(self, hook: str, *args) -> None:
        for extension in self.extensions:
            self._extension(extension, hook, *args)

    # -- networks ----------------------------------------------------------------------------

    def _dnsmasq(self, network_id: str, dhcp_port_id: str = "") -> dhcp.Dnsmasq:
        return dhcp.Dnsmasq(names.dhcp_namespace(network_id), names.dhcp_device(dhcp_port_id),
                            self.config.dhcp_dir / network_id)

    def _ensure_dhcp(self, ipr, spec: NetworkSpec, bridge: int) -> bool:
        namespace = names.dhcp_namespace(spec.id)
        port = spec.dhcp_port
        device = names.dhcp_device(port.id)
        addresses = dhcp.dhcp_addresses(spec)
        with linux.namespace(namespace, self.config.owner_tag, dhcp.DHCP_SYSCTLS) as nsr:
            for name in linux.link_names(nsr, kind="veth"):
                if name != device:
                    linux.delete_link(nsr, name)  # the end of a DHCP port that was replaced
            before = linux.link(nsr, device)
            index = linux.ensure_veth(ipr, nsr, names.veth_peer(port.id), peer=device, namespace=namespace,
                                      bridge=bridge, mtu=spec.mtu, tag=self.config.owner_tag,
                                      peer_mac=port.mac_address)
            linux.sync_addresses(nsr, index, addresses.values())
        server = self._dnsmasq(spec.id, port.id)
        if before is None or before["index"] != index:
            server.stop()  # its DHCP socket is bound to the device that was replaced
        config = dhcp.render(spec)
        if not config.ranges:
            server.stop()
            return False
        servers = {a.network: str(a.ip) for a in addresses.values() if a.version == 4}
        server.ensure(config, servers)
        return True

    def _remove_dhcp(self, network_id: str) -> None:
        self._dnsmasq(network_id).stop()
        linux.delete_namespace(names.dhcp_namespace(network_id))
        shutil.rmtree(self.config.dhcp_dir / network_id, ignore_errors=True)

    def network_sync(self, spec: NetworkSpec) -> dict[str, Any]:
        _check_ids(spec.id, *([spec.dhcp_port.id] if spec.dhcp_port else []))
        with self._holding(f"network:{spec.id}"):
            with _kernel(f"syncing network {spec.id}"), linux.iproute() as ipr:
                bridge = l2.ensure_network_bridge(ipr, self.config, spec)
                if spec.dhcp_port is None:
                    self._remove_dhcp(spec.id)
                    serving = False
                else:
                    serving = self._ensure_dhcp(ipr, spec, bridge)
            self._extensions("network_sync", spec)
        return {"bridge": names.bridge_name(spec.id), "dhcp": serving}

    def network_delete(self, network_id: str) -> None:
        _check_ids(network_id)
        with self._holding(f"network:{network_id}"):
            self._extensions("network_delete", network_id)
            with _kernel(f"deleting network {network_id}"), linux.iproute() as ipr:
                self._remove_dhcp(network_id)
                l2.remove_network_bridge(ipr, network_id)

    # -- ports -------------------------------------------------------------------------------

    def port_sync(self, spec: PortSpec) -> dict[str, Any]:
        _check_ids(spec.id, spec.network_id)
        device = None
        with self._holding(f"port:{spec.id}"):
            if not spec.device_owner.startswith("network:"):
                with _kernel(f"plugging port {spec.id}"), linux.iproute() as ipr:
                    device = l2.plug_tap(ipr, self.config, bridge=names.bridge_name(spec.network_id), port_id=spec.id,
                                         mac=spec.mac_address, mtu=spec.mtu, admin_state_up=spec.admin_state_up)
            self._extensions("port_sync", spec)
        return {"device": device}

    def port_delete(self, port_id: str, network_id: str) -> None:
        _check_ids(port_id, network_id)
        with self._holding(f"port:{port_id}"):
            self._extensions("port_delete", port_id, network_id)
            with _kernel(f"unplugging port {port_id}"), linux.iproute() as ipr:
                msg = linux.link(ipr, names.tap_name(port_id))
                if msg is not None and msg.get(("linkinfo", "kind")) == "tun":
                    linux.delete_link(ipr, names.tap_name(port_id))

    def plug_nics(self, nics: Sequence[NicSpec]) -> None:
        _check_ids(*(nic.port_id for nic in nics))
        with self._holding(), _kernel("plugging the instance's NICs"), linux.iproute() as ipr:
            for nic in nics:
                l2.plug_tap(ipr, self.config, bridge=nic.bridge, port_id=nic.port_id, mac=nic.mac_address,
                            mtu=nic.mtu, admin_state_up=nic.admin_state_up)

    def security_group_members(self, spec: SecurityGroupMembersSpec) -> dict[str, Any]:
        _check_ids(spec.id)
        with self._holding(f"security_group:{spec.id}"):
            self._extensions("security_group_members", spec)
        return {}

    # -- routers -----------------------------------------------------------------------------

    def router_sync(self, spec: RouterSpec) -> None:
        legs = [*spec.interfaces, *([spec.gateway] if spec.gateway else [])]
        _check_ids(spec.id, *(leg.port_id for leg in legs), *(leg.network_id for leg in legs))
        with self._holding(f"router:{spec.id}"), _kernel(f"syncing router {spec.id}"), linux.iproute() as ipr:
            router.ensure_router(ipr, self.config, spec)

    def router_delete(self, router_id: str) -> None:
        _check_ids(router_id)
        with self._holding(f"router:{router_id}"), _kernel(f"deleting router {router_id}"):
            router.remove_router(self.config, router_id)

    # -- resync ------------------------------------------------------------------------------

    def _wanted_links(self, state: HostNetworkState) -> set[str]:
        """The host-side links the state needs (bridges, uplinks, taps, namespace peers)."""
        wanted: set[str] = set()

        def network(spec: NetworkSpec) -> None:
            wanted.add(names.bridge_name(spec.id))
            if spec.network_type == "flat":
                wanted.update(l2.uplink_names(spec.id))

        for spec in state.networks:
            network(spec)
            if spec.dhcp_port is not None:
                wanted.add(names.veth_peer(spec.dhcp_port.id))
        for port in state.ports:
            wanted.update((names.bridge_name(port.network_id), names.tap_name(port.id)))
        for spec in state.routers:
            for leg in [*spec.interfaces, *([spec.gateway] if spec.gateway else [])]:
                network(router.leg_network(leg))
                wanted.add(names.veth_peer(leg.port_id))
        return wanted

    def _remove_leftovers(self, state: HostNetworkState) -> list[str]:
        tag = self.config.owner_tag
        removed = []
        wanted_ns = {names.dhcp_namespace(n.id) for n in state.networks if n.dhcp_port is not None}
        wanted_ns |= {names.router_namespace(r.id) for r in state.routers}
        for namespace in linux.list_namespaces():
            if (namespace.startswith((DHCP_NAMESPACE_PREFIX, ROUTER_NAMESPACE_PREFIX)) and namespace not in wanted_ns
                    and linux.namespace_tag(namespace) == tag):
                if namespace.startswith(DHCP_NAMESPACE_PREFIX):
                    self._remove_dhcp(namespace[len(DHCP_NAMESPACE_PREFIX):])
                else:
                    router.remove_router(self.config, namespace[len(ROUTER_NAMESPACE_PREFIX):])
                removed.append(namespace)
        # A dnsmasq whose namespace went without it (deleted by hand) still has its directory.
        for directory, remove, namespace_of in (
            (self.config.dhcp_dir, self._remove_dhcp, names.dhcp_namespace),
            (self.config.state_dir / "router", lambda i: router.remove_router(self.config, i), names.router_namespace),
        ):
            if directory.is_dir():
                for entry in directory.iterdir():
                    if namespace_of(entry.name) not in wanted_ns:
                        remove(entry.name)
        wanted = self._wanted_links(state)
        with linux.iproute() as ipr:
            for name in linux.link_names(ipr, tag=tag):
                if name not in wanted and linux.delete_link(ipr, name):
                    removed.append(name)
        return removed

    def resync(self, state: HostNetworkState) -> dict[str, Any]:
        errors: list[str] = []

        def attempt(what: str, call, *args) -> None:
            try:
                call(*args)
            except NetworkError as exc:
                errors.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - one broken item must not stop the others
                log.exception("resync: %s failed", what)
                errors.append(f"{what} failed: {exc.__class__.__name__}: {exc}")

        with self._resync_lock.exclusive():
            removed: list[str] = []

            def remove() -> None:
                with _kernel("removing leftovers"):
                    removed.extend(self._remove_leftovers(state))

            attempt("removing leftovers", remove)
            for spec in state.networks:
                attempt(f"syncing network {spec.id}", self.network_sync, spec)
            for port in state.ports:
                attempt(f"syncing port {port.id}", self.port_sync, port)
            for spec in state.routers:
                attempt(f"syncing router {spec.id}", self.router_sync, spec)
            for extension in self.extensions:
                attempt(f"resync of {type(extension).__name__}", self._extension, extension, "resync", state)
        return {"removed": removed, "errors": errors}


def _import(path: str) -> type[NetworkExtension]:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


_driver: NetworkDriver | None = None
_driver_lock = threading.Lock()


def _make_driver() -> NetworkDriver:
    config = get_network_config()
    if config.driver == "fake":
        from agents.network.fake import FakeNetworkDriver

        return FakeNetworkDriver()
    return LinuxNetworkDriver(config)


def get_network_driver() -> NetworkDriver:
    """The process's driver, chosen by ``CLOUDMGR_NETWORK_DRIVER`` and made on first use."""
    global _driver
    with _driver_lock:
        if _driver is None:
            _driver = _make_driver()
        return _driver


def reset_network_driver(driver: NetworkDriver | None = None) -> None:
    """Forget the process's driver (the next call makes a new one), or install ``driver``."""
    global _driver
    with _driver_lock:
        _driver = driver
