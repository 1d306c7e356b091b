#!/usr/bin/env python
"""Network benchmark, control plane: 50 concurrent port creates on one subnet (SQLite by default,
or DATABASE_URL), repeated -r times.

Each round releases -n threads at once on ``port_create`` (the whole service: quota under its
row lock, the MAC, the address from the IPAM under the subnet's lock, the default security group,
and the desired state sent in-process to a fake network agent, whose DHCP entries list every port
of the network). Prints, per round, the wall time, ports per second, the p50/p95 of one create,
the failures, and the number of duplicate addresses (the figure that must be 0), then the range
over the rounds. The subnet is a /16, so later rounds allocate above earlier ones.

Then a second part, on the real data plane of this host (needs root): the time from a port's
DHCP entry being written by the agent to dnsmasq's answer; and a third, on a whole cloud with a
real guest: the time from a floating IP associate to its first answered ping (see below).

A PostgreSQL DATABASE_URL is used only to reach the server: the benchmark runs in a database of
its own (``cloudmgr_bench_network``), dropped at the end.

    .venv/bin/python bench/network.py [-n 50] [-r 5]
"""

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.stats import percentile  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="concurrent port creates per round (default 50)")
    parser.add_argument("-r", "--rounds", type=int, default=5, help="rounds (default 5)")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="cloudmgr-bench-network-"))
    os.environ["CLOUDMGR_DATA_DIR"] = str(data_dir)
    os.environ["CLOUDMGR_AGENTS_IN_PROCESS"] = "true"
    os.environ["CLOUDMGR_COMPUTE_DRIVER"] = "fake"
    os.environ["CLOUDMGR_NETWORK_DRIVER"] = "fake"
    os.environ["CLOUDMGR_HOSTNAME"] = "bench-network"
    os.environ["CLOUDMGR_LOG_LEVEL"] = "WARNING"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudmgr.settings")
    import logging

    import django

    django.setup()
    logging.disable(logging.INFO)
    from django.db import connection, connections
    from django.db.models import Count
    from django.utils import timezone

    if connection.vendor != "sqlite":
        connection.settings_dict["TEST"]["NAME"] = "cloudmgr_bench_network"
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)

    from agents.network.driver import reset_network_driver
    from agents.network.fake import FakeNetworkDriver
    from apps.hosts.models import Host, HostState
    from apps.networks import services
    from apps.networks.models import IPAllocation, Network, Port
    from apps.tenants.models import Role, User
    from apps.tenants.services import project_create, quota_set, role_grant

    try:
        agent = FakeNetworkDriver()
        reset_network_driver(agent)
        Host.objects.create(hostname="bench-network", queue="host.bench-network", state=HostState.UP,
                            last_heartbeat=timezone.now())
        project = project_create(name="bench")
        user = User.objects.create_user("bench", password="bench-pw-123")
        role_grant(user=user, project=project, role=Role.MEMBER)
        quota_set(project=project, resource="ports", limit=-1)
        network = services.network_create(user=user, project=project, name="bench")
        services.subnet_create(user=user, project=project, network=network, cidr="10.100.0.0/16")
        print(f"database: {connection.vendor}; {args.n} concurrent port creates per round, {args.rounds} rounds")

        rates = []
        for round_number in range(1, args.rounds + 1):
            barrier = threading.Barrier(args.n)
            lock = threading.Lock()
            times, errors = [], []

            def create(i: int) -> None:
                try:
                    barrier.wait()
                    t0 = time.perf_counter()
                    services.port_create(user=user, project=project, network=Network.objects.get(pk=network.pk),
                                         name=f"r{round_number}p{i}")
                    with lock:
                        times.append(time.perf_counter() - t0)
                except Exception as exc:  # counted and printed: a failure is a result here
                    with lock:
                        errors.append(exc)
                finally:
                    connections.close_all()

            threads = [threading.Thread(target=create, args=(i,)) for i in range(args.n)]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - start
            duplicates = (IPAllocation.objects.filter(network=network).values("subnet", "ip_address")
                          .annotate(n=Count("id")).filter(n__gt=1).count())
            rates.append(len(times) / wall)
            print(f"round {round_number}: {len(times)} ports in {wall:.2f} s ({rates[-1]:.1f} ports/s); "
                  f"one create p50 {percentile(times, 50) * 1000:.0f} ms, p95 {percentile(times, 95) * 1000:.0f} ms; "
                  f"failures {len(errors)}{': ' + repr(errors[0]) if errors else ''}; "
                  f"duplicate addresses {duplicates}")
        ports = Port.objects.filter(network=network).exclude(device_owner="network:dhcp").count()
        addresses = IPAllocation.objects.filter(network=network).values("ip_address").distinct().count()
        served = len(agent.networks[str(network.pk)].ports)
        print(f"ports/s over {args.rounds} rounds: min {min(rates):.1f}, max {max(rates):.1f}; "
              f"{ports} ports, {addresses} distinct addresses (with the DHCP server's), "
              f"{served} DHCP entries in the agent's last network spec")
    finally:
        reset_network_driver()
        connection.creation.destroy_test_db(old_name, verbosity=0)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()


# ------------------------------------------------------------------------------------------------
# Second part (the agent's data plane, no cloud): the time from a port's DHCP entry being written
# to dnsmasq's answer. A network with 100 ports already served gets one more port per
# round: a stand-in guest (a namespace on the bridge, with the new port's MAC) broadcasts a
# DHCPDISCOVER every 5 ms from before the write; the clock starts when the agent's network_sync
# begins (it rewrites the hosts file and sends SIGHUP) and stops at the DHCPOFFER of the port's
# address. Also timed: the sync itself, and a whole lease (busybox udhcpc, as the test guest
# does) started once the sync has returned. Needs root (namespaces, bridges, dnsmasq).
#
# 20 rounds on a network serving 100 ports, after the first part.

import ipaddress  # noqa: E402
import secrets  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import uuid  # noqa: E402


def _dhcp_discover(mac: str, xid: int) -> bytes:
    chaddr = bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0")
    packet = struct.pack("!4BIHH16s16s64s128s4s", 1, 1, 6, 0, xid, 0, 0x8000,  # broadcast the answer
                          bytes(16), chaddr, bytes(64), bytes(128), b"\x63\x82\x53\x63")
    return packet + bytes([53, 1, 1, 255])


class _Discoverer(threading.Thread):
    """Broadcasts DHCPDISCOVERs from a namespace until an offer of ``expected`` arrives."""

    def __init__(self, namespace: str, mac: str, expected: str) -> None:
        super().__init__(daemon=True)
        from pyroute2 import netns

        self.sock = netns.create_socket(namespace, socket.AF_INET, socket.SOCK_DGRAM, flags=0)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
        self.sock.bind(("0.0.0.0", 68))
        self.sock.settimeout(0.005)
        self.mac, self.expected = mac, ipaddress.IPv4Address(expected).packed
        self.xid = int.from_bytes(os.urandom(4), "big")
        self.offered_at: float | None = None

    def run(self) -> None:
        packet = _dhcp_discover(self.mac, self.xid)
        deadline = time.monotonic() + 10
        try:
            while self.offered_at is None and time.monotonic() < deadline:
                self.sock.sendto(packet, ("255.255.255.255", 67))
                try:
                    answer = self.sock.recv(2048)
                except TimeoutError:
                    continue
                if len(answer) > 20 and struct.unpack("!I", answer[4:8])[0] == self.xid and answer[16:20] == self.expected:
                    self.offered_at = time.monotonic()
        finally:
            self.sock.close()


def _sh(command: str) -> None:
    subprocess.run(command, shell=True, check=True, capture_output=True)


def dhcp_benchmark(rounds: int, ports: int) -> None:
    from agents import names
    from agents.network.config import NetworkConfig
    from agents.network.driver import LinuxNetworkDriver
    from agents.specs import FixedIPSpec, HostNetworkState, NetworkSpec, PortSpec, SubnetSpec

    suffix = secrets.token_hex(3)
    state_dir = REPO / "var" / f"bench-network-{suffix}"
    state_dir.mkdir(parents=True, mode=0o755)
    os.chmod(state_dir, 0o755)  # dnsmasq reads its hosts file after dropping root
    config = NetworkConfig(state_dir=state_dir, owner=f"bench-{suffix}", external_cidr=None, bridge_mappings={})
    driver = LinuxNetworkDriver(config, extensions=[])
    network = ipaddress.ip_network("10.99.0.0/20")
    subnet = SubnetSpec(id=str(uuid.uuid4()), cidr=str(network), gateway_ip=str(network[1]))
    spec = NetworkSpec(id=str(uuid.uuid4()), subnets=[subnet])

    def port(index: int) -> PortSpec:
        mac = "fa:16:3e:%02x:%02x:%02x" % (index >> 16 & 255, index >> 8 & 255, index & 255)
        return PortSpec(id=str(uuid.uuid4()), network_id=spec.id, mac_address=mac,
                        fixed_ips=[FixedIPSpec(subnet.id, str(network[10 + index]))])

    spec.dhcp_port = port(0)
    spec.dhcp_port.device_owner = "network:dhcp"
    spec.ports = [spec.dhcp_port] + [port(i) for i in range(1, ports + 1)]
    bridge = names.bridge_name(spec.id)
    guest = f"tbench-{suffix}"
    script = state_dir / "udhcpc.sh"
    script.write_text("#!/bin/sh\n[ \"$1\" = bound ] && ip addr add \"$ip/$mask\" dev \"$interface\"\nexit 0\n")
    script.chmod(0o755)
    offer, sync, lease = [], [], []
    try:
        driver.network_sync(spec)
        _sh(f"ip netns add {guest}")
        _sh(f"ip link add tb{suffix} type veth peer name eth0 netns {guest}")
        _sh(f"echo 1 > /proc/sys/net/ipv6/conf/tb{suffix}/disable_ipv6; ip link set tb{suffix} master {bridge} up")
        _sh(f"ip -n {guest} link set lo up")
        for i in range(ports + 1, ports + 1 + rounds):
            new = port(i)
            _sh(f"ip -n {guest} addr flush dev eth0; ip -n {guest} link set eth0 down; "
                f"ip -n {guest} link set eth0 address {new.mac_address} up")
            client = _Discoverer(guest, new.mac_address, new.fixed_ips[0].ip_address)
            client.start()
            time.sleep(0.02)  # unanswered DISCOVERs are already flowing
            spec.ports.append(new)
            start = time.monotonic()
            driver.network_sync(spec)
            synced = time.monotonic()
            client.join()
            if client.offered_at is None:
                raise SystemExit(f"no DHCP offer for {new.mac_address} within 10 s")
            offer.append(client.offered_at - start)
            sync.append(synced - start)
            _sh(f"ip -n {guest} addr flush dev eth0")
            began = time.monotonic()
            _sh(f"ip netns exec {guest} busybox udhcpc -i eth0 -n -q -f -t 3 -T 1 -s {script}")
            lease.append(time.monotonic() - began)
    finally:
        subprocess.run(f"ip link del tb{suffix}; ip netns del {guest}", shell=True, capture_output=True)
        driver.resync(HostNetworkState())
        shutil.rmtree(state_dir, ignore_errors=True)

    def ms(values: list[float], pct: float) -> str:
        return f"{percentile(values, pct) * 1000:.1f}"

    print(f"\nDHCP, agent side: {rounds} ports added one at a time to a network already serving {ports}")
    print(f"  entry written -> DHCPOFFER       p50 {ms(offer, 50)} ms  p95 {ms(offer, 95)} ms  max {ms(offer, 100)} ms")
    print(f"  network_sync (files + SIGHUP)    p50 {ms(sync, 50)} ms  p95 {ms(sync, 95)} ms")
    print(f"  udhcpc after the sync: lease     p50 {ms(lease, 50)} ms  p95 {ms(lease, 95)} ms")


if __name__ == "__main__":
    dhcp_benchmark(rounds=20, ports=100)


# ------------------------------------------------------------------------------------------------
# Third part (a whole cloud, as `make run` runs it, with a real guest): the time from a floating IP
# associate (the PUT that sets its port) to the first echo reply from it at the host. One test
# guest boots on the bootstrap's `private` network, its default group lets ICMP in, and one
# floating IP from `public` is associated with it and disassociated again, -- rounds times. From
# before each PUT, the host sends an echo request to the floating IP every 10 ms from a raw socket;
# the figure is PUT sent -> first reply (the API's answer, the router sync on the agent, the NAT
# rules, ARP). After each disassociation the next round waits until the address has been silent
# for a second. Needs root (the raw socket, the cloud's data plane).
#
# 10 rounds, after the second part.

import base64  # noqa: E402
import re  # noqa: E402


def _icmp_echo(ident: int, seq: int) -> bytes:
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    payload = b"cloudmgr-bench-fip"
    data = header + payload
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    checksum = ~(total + (total >> 16)) & 0xFFFF
    return struct.pack("!BBHHH", 8, 0, checksum, ident, seq) + payload


def _first_reply(address: str, until: float, interval: float = 0.01) -> float | None:
    """Echo requests to ``address`` every ``interval`` s; the monotonic time of the first reply,
    or None if none came before ``until``."""
    ident = int.from_bytes(os.urandom(2), "big")
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        seq = 0
        while time.monotonic() < until:
            seq = (seq + 1) & 0xFFFF
            sent = time.monotonic()
            try:
                sock.sendto(_icmp_echo(ident, seq), (address, 0))
            except OSError:  # EHOSTUNREACH while the host's ARP entry for it has failed: no answer yet
                time.sleep(interval)
                continue
            while (left := sent + interval - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    packet, (source, _) = sock.recvfrom(2048)
                except TimeoutError:
                    break
                start = (packet[0] & 0x0F) * 4  # past the IP header
                kind, _, _, reply_ident, _ = struct.unpack("!BBHHH", packet[start:start + 8])
                if source == address and kind == 0 and reply_ident == ident:
                    return time.monotonic()
    return None


def fip_benchmark(rounds: int) -> None:
    from tests.e2e.cloud import make_cloud

    image = REPO / "var" / "build" / "testvm.qcow2"
    subprocess.run([str(REPO / "scripts" / "build-testvm.sh"), str(image)], check=True, capture_output=True)
    cloud = make_cloud(REPO / "var" / "bench")
    # The first part set these for its in-process fake agents: not for a real cloud.
    for key in ("CLOUDMGR_AGENTS_IN_PROCESS", "CLOUDMGR_COMPUTE_DRIVER", "CLOUDMGR_NETWORK_DRIVER",
                "CLOUDMGR_LOG_LEVEL"):
        cloud.env.pop(key, None)

    def call(method: str, path: str, body: dict | None = None) -> dict:
        response = cloud.request(method, path, body, token=token)
        if response.status >= 300:
            raise SystemExit(f"{method} {path}: {response.status} {response.body}")
        return response.body

    print(f"\nfloating IP, whole cloud: starting a private cloud in {cloud.data_dir} ...", flush=True)
    associate, api = [], []
    try:
        cloud.start(image)
        token = cloud.token()
        [private] = call("GET", "/network/v2.0/networks?name=private")["networks"]
        [public] = call("GET", "/network/v2.0/networks?name=public")["networks"]
        [group] = call("GET", "/network/v2.0/security-groups?name=default")["security_groups"]
        call("POST", "/network/v2.0/security-group-rules", {"security_group_rule": {
            "security_group_id": group["id"], "direction": "ingress", "ethertype": "IPv4", "protocol": "icmp"}})
        [testvm] = call("GET", "/image/v2/images?name=testvm")["images"]
        flavor = next(f for f in call("GET", "/compute/v2.1/flavors")["flavors"] if f["name"] == "m1.nano")
        server = call("POST", "/compute/v2.1/servers", {"server": {
            "name": "bench-fip", "imageRef": testvm["id"], "flavorRef": flavor["id"],
            "networks": [{"uuid": private["id"]}]}})["server"]

        def leased() -> bool:
            output = call("POST", f"/compute/v2.1/servers/{server['id']}/action", {"os-getConsoleOutput": {}})
            return bool(re.search(r"CLOUDMGR_TESTVM_IP=\S+", output.get("output", "")))

        cloud.wait_for(leased, 300, interval=1, what="the guest's DHCP lease")
        [port] = call("GET", f"/network/v2.0/ports?device_id={server['id']}")["ports"]
        fip = call("POST", "/network/v2.0/floatingips", {"floatingip": {"floating_network_id": public["id"]}})
        fip = fip["floatingip"]
        address = fip["floating_ip_address"]
        log_start = (cloud.data_dir / "cloud.log").stat().st_size  # the rounds' syncs only
        for _ in range(rounds):
            outcome: dict[str, float | None] = {}
            prober = threading.Thread(
                target=lambda: outcome.update(reply=_first_reply(address, time.monotonic() + 60)), daemon=True)
            prober.start()
            start = time.monotonic()
            call("PUT", f"/network/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": port["id"]}})
            answered = time.monotonic()
            prober.join()
            if outcome["reply"] is None:
                raise SystemExit(f"the floating IP {address} never answered within 60 s")
            associate.append(outcome["reply"] - start)
            api.append(answered - start)
            call("PUT", f"/network/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": None}})
            deadline = time.monotonic() + 60
            while _first_reply(address, time.monotonic() + 1, interval=0.1) is not None:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the floating IP {address} still answers 60 s after its disassociation")
        # The agent's share: its router syncs (associations and disassociations alike), from its log.
        with open(cloud.data_dir / "cloud.log", "rb") as log:
            log.seek(log_start)
            rounds_log = log.read().decode(errors="replace")
        pattern = r"agents\.network\.router_sync\[\S+\] succeeded in ([\d.]+)s"
        syncs = [float(seconds) for seconds in re.findall(pattern, rounds_log)]
    finally:
        cloud.stop()
        shutil.rmtree(cloud.data_dir, ignore_errors=True)

    def ms(values: list[float], pct: float) -> str:
        return f"{percentile(values, pct) * 1000:.0f}"

    print(f"floating IP associate -> first echo reply at the host, {rounds} rounds:")
    print(f"  PUT sent -> first reply          p50 {ms(associate, 50)} ms  p95 {ms(associate, 95)} ms  "
          f"max {ms(associate, 100)} ms")
    print(f"  each round (ms): {' '.join(f'{value * 1000:.0f}' for value in associate)}")
    print(f"  PUT sent -> its 200              p50 {ms(api, 50)} ms  p95 {ms(api, 95)} ms")
    print(f"  router_sync on the agent         p50 {ms(syncs, 50)} ms  p95 {ms(syncs, 95)} ms  ({len(syncs)} syncs)")


if __name__ == "__main__":
    fip_benchmark(rounds=10)
