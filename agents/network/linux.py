"""Kernel primitives of the data plane.

Links, addresses, routes and namespaces go through pyroute2 (netlink); nftables scripts through
libnftables in this process (``nft``, with nftables' own Python binding: about 0.1 ms where an
``nft`` command costs 3-10 ms); sysctls inside a namespace and daemons run as commands under
``ip netns exec``. A netlink socket inside a namespace is made by a short-lived thread that enters
it (``in_namespace``; a socket keeps the namespace it was made in): about 1 ms, where pyroute2's
own ``netns=`` forks the whole agent (~20 ms). Every ``ensure_*`` makes only what is missing or
different, so calling it again changes nothing. Failures surface as
:class:`~agents.network.NetworkError` (the driver turns netlink errors into it).

Host-side tenant interfaces (bridges, taps, the bridge ends of veth pairs) get IPv6 disabled while
they are still down: up first, they would take a link-local address and could learn routes from a
guest's router advertisements.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from nftables import Nftables
from pyroute2 import IPRoute, netns
from pyroute2.netlink import NETLINK_ROUTE
from pyroute2.netlink.exceptions import NetlinkError

from agents.network import NetworkError

__all__ = [
    "IFF_UP",
    "NETNS_DIR",
    "delete_link",
    "delete_namespace",
    "disable_ipv6",
    "ensure_bridge",
    "ensure_tap",
    "ensure_veth",
    "in_namespace",
    "iproute",
    "kill_processes",
    "link",
    "link_names",
    "list_namespaces",
    "namespace",
    "namespace_exists",
    "namespace_pids",
    "namespace_tag",
    "netlink_fd",
    "nft",
    "run",
    "set_link",
    "sync_addresses",
    "sync_routes",
]

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
IFF_UP = 0x1
IFA_F_NODAD = 0x02
RTPROT_STATIC = 4  # the routes we add carry this protocol, so stale ones can be told from the kernel's
RT_TABLE_MAIN = 254
COMMAND_TIMEOUT = 30


# -- commands ---------------------------------------------------------------------------------


def run(argv: list[str], *, namespace: str | None = None, input: str | None = None) -> str:
    """Run a command (inside ``namespace`` if given); its stdout, or NetworkError with its stderr."""
    if namespace:
        argv = ["ip", "netns", "exec", namespace, *argv]
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"{argv[0]} could not run: {exc}") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-600:]
        raise NetworkError(f"{' '.join(argv[:6])} failed (exit {proc.returncode}): {detail}")
    return proc.stdout


# libnftables documents no thread safety: one script at a time in this process (each takes well
# under a millisecond to a few milliseconds).
_nft_lock = threading.Lock()


def nft(script: str, *, namespace: str | None = None, json_output: bool = False) -> str:
    """Run an nftables script (what ``nft -f`` reads; one transaction) inside ``namespace`` if
    given; its output (JSON with ``json_output``), or NetworkError with nft's message."""

    def call() -> tuple[int, str, str]:
        context = Nftables()  # per call: its netlink socket opens in the calling thread's namespace
        context.set_json_output(json_output)
        return context.cmd(script)

    with _nft_lock:
        code, output, error = in_namespace(namespace, call) if namespace else call()
    if code != 0:
        raise NetworkError(f"nft failed: {error.strip()[-2000:] or f'exit {code}'}")
    return output


# -- namespaces -------------------------------------------------------------------------------


_libc = ctypes.CDLL(None, use_errno=True)


def _enter_namespace(path: Path) -> None:
    """Move the calling thread (only it) into the network namespace at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NetworkError(f"network namespace {path.name} does not exist") from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def in_namespace(namespace: str, work):
    """Run ``work()`` in a throwaway thread inside ``namespace`` and return what it returns; the
    sockets it makes stay in that namespace. NetworkError if the namespace does not exist."""
    path = NETNS_DIR / namespace
    outcome: dict = {}

    def target() -> None:
        try:
            _enter_namespace(path)
            outcome["value"] = work()
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{namespace[:20]}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def netlink_fd(namespace: str, protocol: int) -> int:
    """The file descriptor of a new netlink socket of ``protocol`` inside ``namespace`` (which
    must exist), for pyroute2's ``fileno=``; the pyroute2 object that takes it closes it."""
    sock = in_namespace(namespace, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, protocol))
    return sock.detach()


@contextlib.contextmanager
def iproute(namespace: str | None = None) -> Iterator[IPRoute]:
    """A netlink socket in the host's namespace or in ``namespace`` (which must exist)."""
    ipr = IPRoute() if namespace is None else IPRoute(fileno=netlink_fd(namespace, NETLINK_ROUTE))
    try:
        yield ipr
    finally:
        ipr.close()


def namespace_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def list_namespaces() -> list[str]:
    return sorted(netns.listnetns())


def namespace_tag(name: str) -> str | None:
    """The owner tag of a namespace: the alias of its ``lo``."""
    try:
        with iproute(name) as ipr:
            lo = link(ipr, "lo")
            return lo.get("ifalias") if lo is not None else None
    except (NetworkError, OSError):
        return None  # deleted meanwhile, or not a namespace we can enter


@contextlib.contextmanager
def namespace(name: str, tag: str, sysctls: dict[str, str] | None = None) -> Iterator[IPRoute]:
    """The namespace, made if missing (``lo`` up, ``sysctls`` set), with a netlink socket in it.
    The tag is written last, so a namespace whose set-up was cut short is finished next time."""
    if not namespace_exists(name):
        try:
            netns.create(name)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
    with iproute(name) as nsr:
        lo = link(nsr, "lo")
        if lo.get("ifalias") != tag or not lo["flags"] & IFF_UP:
            if sysctls:  # /proc/sys/net shows the namespace of whoever opens it: write from inside
                writes = " && ".join(f"echo {value} > /proc/sys/{key.replace('.', '/')}"
                                     for key, value in sysctls.items())
                run(["sh", "-c", writes], namespace=name)
            nsr.link("set", index=lo["index"], state="up", ifalias=tag)
        yield nsr


def namespace_pids(name: str) -> list[int]:
    """Processes whose network namespace is ``name`` (as ``ip netns pids``)."""
    try:
        target = os.stat(NETNS_DIR / name)
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry))
    return pids


def kill_processes(pids: Iterable[int], timeout: float = 3.0) -> None:
    """SIGTERM, then SIGKILL whatever still runs after ``timeout`` seconds."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        if pids:
            time.sleep(0.02)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has finished
    except (OSError, IndexError):
        return False


def delete_namespace(name: str) -> None:
    """Stop every process in it, delete its links (a veth's bridge end goes with them at once,
    not when the kernel gets round to the namespace), then the namespace. Missing is fine."""
    if not namespace_exists(name):
        return
    kill_processes(namespace_pids(name))
    with contextlib.suppress(NetworkError), iproute(name) as ipr:
        for msg in ipr.get_links():
            if msg.get("ifname") != "lo":
                with contextlib.suppress(NetlinkError):
                    ipr.link("del", index=msg["index"])
    with contextlib.suppress(FileNotFoundError):
        netns.remove(name)


# -- links ------------------------------------------------------------------------------------


def link(ipr: IPRoute, name: str):
    """The link message of ``name``, or None."""
    try:
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise


def link_names(ipr: IPRoute, *, tag: str | None = None, kind: str | None = None) -> list[str]:
    names = []
    for msg in ipr.get_links():
        if tag is not None and msg.get("ifalias") != tag:
            continue
        if kind is not None and msg.get(("linkinfo", "kind")) != kind:
            continue
        names.append(msg.get("ifname"))
    return names


def delete_link(ipr: IPRoute, name: str) -> bool:
    msg = link(ipr, name)
    if msg is None:
        return False
    try:
        ipr.link("del", index=msg["index"])
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise
    return True


def disable_ipv6(name: str) -> None:
    """In the host's namespace; a host without IPv6 has nothing to disable."""
    path = Path("/proc/sys/net/ipv6/conf") / name / "disable_ipv6"
    with contextlib.suppress(FileNotFoundError):
        if path.read_text().strip() != "1":
            path.write_text("1")


def set_link(ipr: IPRoute, msg, **wanted) -> None:
    """Set the attributes of ``wanted`` that differ (``state="up"``, ``master``, ``mtu``,
    ``address``, ``ifalias``)."""
    changes = {}
    for key, value in wanted.items():
        if value is None:
            continue
        if key == "state":
            if bool(msg["flags"] & IFF_UP) != (value == "up"):
                changes[key] = value
        elif key == "address":
            if (msg.get("address") or "").lower() != value.lower():
                changes[key] = value
        elif msg.get(key) != value:
            changes[key] = value
    if changes:
        ipr.link("set", index=msg["index"], **changes)


def _add_link(ipr: IPRoute, name: str, **spec):
    try:
        ipr.link("add", ifname=name, **spec)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:
            raise
    msg = link(ipr, name)
    if msg is None:
        raise NetworkError(f"{name} vanished right after it was created")
    return msg


def ensure_bridge(ipr: IPRoute, name: str, *, mtu: int | None = None, tag: str | None = None) -> int:
    """A Linux bridge (no STP: nothing loops on one host), IPv6 off, up, with ``mtu`` (also on a
    bridge that exists: a network's MTU may change). Returns its index."""
    msg = link(ipr, name)
    if msg is None:
        msg = _add_link(ipr, name, kind="bridge")
        disable_ipv6(name)
        # Pin the MAC: a bridge otherwise takes its lowest port's, which changes as ports come and go.
        ipr.link("set", index=msg["index"], address=msg.get("address"))
    elif msg.get(("linkinfo", "kind")) != "bridge":
        raise NetworkError(f"{name} exists and is not a bridge")
    disable_ipv6(name)
    set_link(ipr, msg, mtu=mtu, ifalias=tag, state="up")
    return msg["index"]


def host_side_mac(mac: str) -> str:
    """The tap's own MAC: the guest's with another first octet (as libvirt does), so the bridge
    never takes the guest's address for its own."""
    first = "fc" if mac.lower().startswith("fe") else "fe"
    return first + mac.lower()[2:]


def ensure_tap(ipr: IPRoute, name: str, *, bridge: int, mac: str, mtu: int, tag: str, up: bool = True) -> int:
    """A persistent tap on ``bridge``, IPv6 off, up (or down: an administratively down port, whose
    bridge port is then disabled, so no frame passes either way): QEMU attaches to it
    (``managed='no'``: libvirt never changes its state). The MTU of an existing tap is set too."""
    msg = link(ipr, name)
    if msg is None:
        # The flags QEMU attaches with (libvirt sets vnet_hdr itself when it opens the tap).
        flags = {"no_pi": True, "one_queue": False, "vnet_hdr": False, "multi_queue": False}
        msg = _add_link(ipr, name, kind="tuntap", mode="tap", ifr=flags)
    elif msg.get(("linkinfo", "kind")) != "tun":
        raise NetworkError(f"{name} exists and is not a tap")
    disable_ipv6(name)
    set_link(ipr, msg, address=host_side_mac(mac), mtu=mtu, master=bridge, ifalias=tag)
    set_link(ipr, link(ipr, name), state="up" if up else "down")
    return msg["index"]


def ensure_veth(
    ipr: IPRoute,
    nsr: IPRoute,
    host_name: str,
    *,
    peer: str,
    namespace: str,
    bridge: int,
    mtu: int,
    tag: str,
    peer_mac: str | None = None,
) -> int:
    """A veth pair: ``host_name`` on ``bridge`` (IPv6 off), ``peer`` inside ``namespace`` (``nsr``
    is a socket there); both up, both with ``mtu`` (also on a pair that exists). A pair with one end
    missing (half torn down) is made again. Returns the index of the end in the namespace."""
    host = link(ipr, host_name)
    inner = link(nsr, peer)
    if (host is None) != (inner is None):
        delete_link(ipr, host_name)
        delete_link(nsr, peer)
        host = None
    if host is None:
        host = _add_link(ipr, host_name, kind="veth", peer={"ifname": peer, "net_ns_fd": namespace})
    inner = link(nsr, peer)
    if inner is None:
        raise NetworkError(f"{peer} did not appear in {namespace}")
    set_link(nsr, inner, address=peer_mac, mtu=mtu, ifalias=tag)
    set_link(nsr, link(nsr, peer), state="up")
    disable_ipv6(host_name)
    set_link(ipr, host, mtu=mtu, master=bridge, ifalias=tag)
    set_link(ipr, link(ipr, host_name), state="up")
    return inner["index"]


# -- addresses and routes ---------------------------------------------------------------------

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def sync_addresses(ipr: IPRoute, index: int, wanted: Iterable[Interface], *,
                   remove_others: bool = True) -> set[Interface]:
    """Make the link's addresses exactly ``wanted``. Link-local ones are left alone: the kernel's
    IPv6 ones, and 169.254.169.254 where the metadata service puts it. Returns those it added."""
    wanted = set(wanted)
    current = set()
    for msg in ipr.get_addr(index=index):
        address = ipaddress.ip_interface(f"{msg.get('address')}/{msg['prefixlen']}")
        if not address.ip.is_link_local:
            current.add(address)
    for address in sorted(wanted - current, key=str):
        flags = IFA_F_NODAD if address.version == 6 else 0  # usable at once: no duplicate on our own link
        ipr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen, flags=flags)
    if remove_others:
        for address in current - wanted:
            with contextlib.suppress(NetlinkError):
                ipr.addr("del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
    return wanted - current


Route = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ipaddress.IPv4Address | ipaddress.IPv6Address]


def sync_routes(ipr: IPRoute, wanted: Iterable[Route]) -> None:
    """Make our routes (protocol static, main table) exactly ``wanted``: (destination, next hop)."""
    wanted = set(wanted)
    current = set()
    for family in (2, 10):  # AF_INET, AF_INET6
        for msg in ipr.get_routes(family=family, table=RT_TABLE_MAIN):
            if msg["proto"] != RTPROT_STATIC or msg.get("gateway") is None:
                continue
            zero = "0.0.0.0" if family == 2 else "::"
            destination = ipaddress.ip_network(f"{msg.get('dst') or zero}/{msg['dst_len']}")
            current.add((destination, ipaddress.ip_address(msg.get("gateway"))))
    for destination, gateway in current - wanted:
        with contextlib.suppress(NetlinkError):
            ipr.route("del", dst=str(destination), gateway=str(gateway), proto=RTPROT_STATIC)
    for destination, gateway in sorted(wanted - current, key=str):
        ipr.route("replace", dst=str(destination), gateway=str(gateway), proto=RTPROT_STATIC)
