"""Fixtures and helpers of the data-plane tests (no tests here): a Linux network driver with its
own owner tag, external bridge and range, and test namespaces standing in for guests.

Every kernel object gets a random name (or is named from random ids), so these tests can run
next to other tests and clouds on the same machine; each fixture removes what it made.
"""

from __future__ import annotations

import ipaddress
import os
import random
import secrets
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agents import names
from agents.network import linux
from agents.network.config import NetworkConfig
from agents.network.driver import LinuxNetworkDriver
from agents.network.l2 import external_table
from agents.specs import FixedIPSpec, HostNetworkState, NetworkSpec, PortSpec, SubnetSpec

REPO = Path(__file__).resolve().parents[2]

# The guest side of a DHCP lease: udhcpc calls this with the lease in its environment. It records
# the lease and configures the interface as a guest would (classless routes win over the router).
UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || exit 0
env | grep -E '^(ip|mask|router|dns|staticroutes|mtu|hostname|serverid)=' | sort > "$LEASE_FILE"
ip addr add "$ip/$mask" dev "$interface"
if [ -n "$staticroutes" ]; then
    set -- $staticroutes
    while [ $# -ge 2 ]; do ip route add "$1" via "$2" dev "$interface"; shift 2; done
elif [ -n "$router" ]; then
    ip route add default via "${router%% *}" dev "$interface"
fi
"""


def sh(command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{command!r} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def new_id() -> str:
    return str(uuid.uuid4())


def random_mac() -> str:
    return "fa:16:3e:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))


@pytest.fixture
def state_dir():
    """A data dir dnsmasq (which drops root) can read: under the repo's var/, not pytest's 0700 tmp."""
    parent = REPO / "var"
    parent.mkdir(exist_ok=True)
    path = parent / f"test-network-{secrets.token_hex(4)}"
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def net_config(state_dir) -> NetworkConfig:
    suffix = secrets.token_hex(3)
    bridge = f"brx-{suffix}"
    # A random /24 of 100.64.0.0/10 (shared address space): nothing else on this host routes it.
    cidr = ipaddress.IPv4Interface(f"100.{random.randrange(64, 128)}.{random.randrange(256)}.1/24")
    return NetworkConfig(state_dir=state_dir / "network", owner=f"test-{suffix}", external_bridge=bridge,
                         external_cidr=cidr, bridge_mappings={"public": bridge})


@pytest.fixture
def driver(net_config):
    """A Linux network driver; afterwards everything it made is removed (a resync to nothing)."""
    drv = LinuxNetworkDriver(net_config, extensions=[])
    yield drv
    outcome = drv.resync(HostNetworkState())
    with linux.iproute() as ipr:
        linux.delete_link(ipr, net_config.external_bridge)
    sh(f"nft delete table ip {external_table(net_config.external_bridge)}", check=False)
    assert not outcome["errors"], outcome


@dataclass
class Guest:
    """A namespace with one interface (``eth0``) on a bridge: a guest with the port's MAC."""

    namespace: str
    host_end: str
    mac: str
    work: Path
    leases: int = 0

    def run(self, command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return sh(f"ip netns exec {self.namespace} {command}", check=check, timeout=timeout)

    def dhcp(self, tries: int = 3) -> dict[str, str] | None:
        """Ask for a lease the way the test guest image does (busybox udhcpc); the lease's
        variables, or None when no server answered. The interface is configured from it."""
        self.leases += 1
        lease = self.work / f"lease-{self.namespace}-{self.leases}"
        script = self.work / "udhcpc.sh"
        if not script.exists():
            script.write_text(UDHCPC_SCRIPT)
            script.chmod(0o755)
        self.run("ip addr flush dev eth0", check=False)
        proc = self.run(
            f"env LEASE_FILE={lease} busybox udhcpc -i eth0 -n -q -f -t {tries} -T 1 -A 1 "
            f"-O staticroutes -O mtu -s {script}",
            check=False,
        )
        if not lease.exists():
            assert "no lease" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
            return None
        return dict(line.split("=", 1) for line in lease.read_text().splitlines())

    def ping(self, address: str, count: int = 1, timeout: int = 2) -> bool:
        return self.run(f"ping -n -c {count} -W {timeout} {address}", check=False).returncode == 0

    def address(self, interface: str, gateway: str | None = None) -> None:
        """Configure an address by hand (no DHCP)."""
        self.run(f"ip addr add {interface} dev eth0")
        if gateway:
            self.run(f"ip route add default via {gateway}")


@dataclass
class Guests:
    work: Path
    made: list[Guest] = field(default_factory=list)

    def __call__(self, bridge: str, mac: str | None = None) -> Guest:
        suffix = secrets.token_hex(4)
        guest = Guest(namespace=f"tguest-{suffix}", host_end=f"tg{suffix}", mac=mac or random_mac(), work=self.work)
        self.made.append(guest)
        sh(f"ip netns add {guest.namespace}")
        sh(f"ip link add {guest.host_end} type veth peer name eth0 netns {guest.namespace}")
        sh(f"echo 1 > /proc/sys/net/ipv6/conf/{guest.host_end}/disable_ipv6")
        sh(f"ip link set {guest.host_end} master {bridge} up")
        guest.run(f"ip link set eth0 address {guest.mac} up")
        guest.run("ip link set lo up")
        return guest

    def remove(self) -> None:
        for guest in self.made:
            sh(f"ip link del {guest.host_end}", check=False)
            sh(f"ip netns del {guest.namespace}", check=False)


@pytest.fixture
def guests(tmp_path):
    made = Guests(work=tmp_path)
    yield made
    made.remove()


def make_network(
    cidr: str = "10.20.0.0/24",
    *,
    ports: int = 2,
    dhcp: bool = True,
    metadata: bool = True,
    mtu: int = 1500,
    dns: tuple[str, ...] = ("192.0.2.53",),
    host_routes: tuple[dict[str, str], ...] = (),
    **fields,
) -> NetworkSpec:
    """A network with one subnet, a DHCP port at .2 (when ``dhcp``) and ``ports`` ports from .11."""
    network_id = new_id()
    net = ipaddress.ip_network(cidr)
    subnet = SubnetSpec(id=new_id(), cidr=cidr, gateway_ip=str(net[1]), dns_nameservers=list(dns),
                        host_routes=list(host_routes))
    spec = NetworkSpec(id=network_id, mtu=mtu, subnets=[subnet], metadata=metadata, **fields)
    if dhcp:
        spec.dhcp_port = PortSpec(id=new_id(), network_id=network_id, mac_address=random_mac(),
                                  fixed_ips=[FixedIPSpec(subnet.id, str(net[2]))], device_owner="network:dhcp")
        spec.ports.append(spec.dhcp_port)
    for i in range(ports):
        add_port(spec, str(net[11 + i]), hostname=f"vm-{i + 1}")
    return spec


def add_port(spec: NetworkSpec, address: str, mac: str | None = None, **fields) -> PortSpec:
    port = PortSpec(id=new_id(), network_id=spec.id, mac_address=mac or random_mac(), mtu=spec.mtu,
                    fixed_ips=[FixedIPSpec(spec.subnets[0].id, address)], device_owner="compute:nova", **fields)
    spec.ports.append(port)
    return port


def compute_ports(spec: NetworkSpec) -> list[PortSpec]:
    return [p for p in spec.ports if p.device_owner.startswith("compute:")]


def dnsmasq_pid(config: NetworkConfig, network_id: str) -> int | None:
    path = config.dhcp_dir / network_id / "pid"
    try:
        pid = int(path.read_text())
    except (OSError, ValueError):
        return None
    return pid if os.path.exists(f"/proc/{pid}") and _comm(pid) == "dnsmasq" else None


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return ""
    return "" if stat.rsplit(")", 1)[1].split()[0] == "Z" else stat.split("(", 1)[1].rsplit(")", 1)[0]


def link_info(name: str, namespace: str | None = None) -> dict | None:
    with linux.iproute(namespace) as ipr:
        msg = linux.link(ipr, name)
        if msg is None:
            return None
        master = msg.get("master")
        return {
            "index": msg["index"],
            "kind": msg.get(("linkinfo", "kind")),
            "master": ipr.get_links(master)[0].get("ifname") if master else None,
            "mtu": msg.get("mtu"),
            "up": bool(msg["flags"] & linux.IFF_UP),
            "address": msg.get("address"),
            "alias": msg.get("ifalias"),
            "addresses": sorted(f"{a.get('address')}/{a['prefixlen']}" for a in ipr.get_addr(index=msg["index"])),
        }


def ipv6_disabled(name: str) -> bool:
    return Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").read_text().strip() == "1"


def wait_until(predicate, timeout: float = 10, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


__all__ = [
    "Guest", "add_port", "compute_ports", "dnsmasq_pid", "driver", "guests", "ipv6_disabled", "link_info",
    "make_network", "names", "net_config", "new_id", "random_mac", "sh", "state_dir", "wait_until",
]
