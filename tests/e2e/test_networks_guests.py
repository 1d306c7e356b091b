"""Issue 6's networks with real guests, on a whole running cloud: QEMU test guests on the agent's
bridges and taps, the network's dnsmasq, the router's namespace and NAT, nftables security groups,
the metadata service, config drives, and the agent's resync after a restart.

Three tiny guests boot once for the module, at once: A (with user data) and B on the bootstrap's
`private` network of the admin project, and C on another project's network with the same CIDR, at
an address that nobody holds on `private`. The tests run in order and share them; what a guest
itself sees comes from its serial console (markers, and shell commands typed into its pty).
"""

from __future__ import annotations

import base64
import ipaddress
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import pytest

from agents import names
from tests.agents.test_volumes_guest import Console
from tests.conftest import REPO
from tests.e2e.cloud import Cloud, make_cloud

BOOT_TIMEOUT = 300  # three TCG guests booting at once on a busy 2-core machine
SYNC_TIMEOUT = 60
USER_DATA = f"nete2e-user-data-{secrets.token_hex(4)}"


@dataclass
class Guest:
    name: str
    id: str = ""
    ip: str = ""  # what its console says it leased
    fixed_ip: str = ""  # what its port holds
    port_id: str = ""
    console: Console | None = None


@dataclass
class World:
    cloud: Cloud
    token: str
    private_id: str
    router_id: str
    public_id: str
    other_network_id: str
    other_dhcp_ip: str
    a: Guest
    b: Guest
    c: Guest
    group_id: str  # the admin project's default security group (A's and B's)
    icmp_rule_id: str = ""
    consoles: list[Console] = field(default_factory=list)


@pytest.fixture(scope="module")
def cloud(testvm_image):
    """A cloud of its own: every guest also gets a config drive, and the agent runs apart from
    honcho so that a test can kill it and start it again."""
    cloud = make_cloud(REPO / "var" / "e2e")
    cloud.separate_agent = True
    cloud.env["CLOUDMGR_FORCE_CONFIG_DRIVE"] = "1"
    try:
        cloud.start(testvm_image)
        yield cloud
    except Exception:
        print(cloud.log_tail())
        raise
    finally:
        cloud.stop()
        shutil.rmtree(cloud.data_dir, ignore_errors=True)


def call(cloud: Cloud, method: str, path: str, body: dict | None = None, *, token: str, status: int = 200) -> dict:
    response = cloud.request(method, path, body, token=token)
    assert response.status == status, f"{method} {path}: {response.status} {response.body}"
    return response.body


def only(cloud: Cloud, path: str, collection: str, token: str) -> dict:
    [item] = call(cloud, "GET", path, token=token)[collection]
    return item


def marker(log: str, name: str) -> str | None:
    """The last value of a marker line (markers may follow a prompt on the same line)."""
    found = re.findall(rf"CLOUDMGR_TESTVM_{name}=(\S*)", log)
    return found[-1] if found else None


def pings(address: str, namespace: str | None = None, count: int = 1) -> bool:
    command = ["ping", "-n", "-c", str(count), "-W", "1", address]
    if namespace:
        command = ["ip", "netns", "exec", namespace, *command]
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


def guest_pings(guest: Guest, address: str, tries: int) -> bool:
    """Whether ``address`` answered one of ``tries`` pings sent from inside the guest."""
    out = guest.console.run(f"R=SILENT; for i in $(seq {tries}); do ping -c 1 -W 1 {address} >/dev/null 2>&1 "
                            f"&& R=ANSWERED && break; done; echo $R", timeout=tries * 3 + 60)
    assert "ANSWERED" in out or "SILENT" in out, out
    return "ANSWERED" in out


def addresses(world: World, guest: Guest) -> set[tuple[str, str]]:
    """The server's addresses on `private` as Nova shows them: (address, fixed | floating)."""
    server = call(world.cloud, "GET", f"/compute/v2.1/servers/{guest.id}", token=world.token)["server"]
    return {(a["addr"], a["OS-EXT-IPS:type"]) for a in server["addresses"]["private"]}


def dnsmasqs(cloud: Cloud, network_id: str) -> int:
    """Live dnsmasq processes serving the network (the agent's pid file is on their command line)."""
    directory = f"{cloud.data_dir}/network/dhcp/{network_id}/".encode()
    count = 0
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes() if proc.name.isdigit() else b""
        except OSError:
            continue  # gone meanwhile
        count += cmdline.startswith(b"dnsmasq") and directory in cmdline
    return count


def _other_project(cloud: Cloud, token: str, cidr: str) -> tuple[str, str]:
    """A second project with a member, a network of the same CIDR as `private`, and ICMP allowed
    in its default group (so C answers whoever can reach it). Returns (its token, network id)."""
    name = f"nete2e-{secrets.token_hex(3)}"
    project = call(cloud, "POST", "/identity/v3/projects", {"project": {"name": name, "domain_id": "default"}},
                   token=token, status=201)["project"]
    password = secrets.token_urlsafe(18) + "aA1!"
    user = call(cloud, "POST", "/identity/v3/users",
                {"user": {"name": name, "password": password, "domain_id": "default"}}, token=token,
                status=201)["user"]
    member = only(cloud, "/identity/v3/roles?name=member", "roles", token)
    call(cloud, "PUT", f"/identity/v3/projects/{project['id']}/users/{user['id']}/roles/{member['id']}", token=token,
         status=204)
    other = cloud.token(name, password, name)
    network = call(cloud, "POST", "/network/v2.0/networks", {"network": {"name": "nete2e-other"}}, token=other,
                   status=201)["network"]
    call(cloud, "POST", "/network/v2.0/subnets",
         {"subnet": {"network_id": network["id"], "ip_version": 4, "cidr": cidr}}, token=other, status=201)
    group = only(cloud, "/network/v2.0/security-groups?name=default", "security_groups", other)
    call(cloud, "POST", "/network/v2.0/security-group-rules", {"security_group_rule": {
        "security_group_id": group["id"], "direction": "ingress", "ethertype": "IPv4", "protocol": "icmp"}},
        token=other, status=201)
    return other, network["id"]


@pytest.fixture(scope="module")
def world(cloud):
    token = cloud.token()
    private = only(cloud, "/network/v2.0/networks?name=private", "networks", token)
    cidr = only(cloud, f"/network/v2.0/subnets?network_id={private['id']}", "subnets", token)["cidr"]
    router = only(cloud, "/network/v2.0/routers?name=router1", "routers", token)
    public = only(cloud, "/network/v2.0/networks?name=public", "networks", token)
    image = only(cloud, "/image/v2/images?name=testvm", "images", token)
    flavor = next(f for f in call(cloud, "GET", "/compute/v2.1/flavors", token=token)["flavors"]
                  if f["name"] == "m1.nano")
    group = only(cloud, "/network/v2.0/security-groups?name=default", "security_groups", token)
    other_token, other_network = _other_project(cloud, token, cidr)
    # An address of the shared CIDR that no port of `private` holds (they take the lowest ones).
    c_address = str(ipaddress.ip_network(cidr)[-2])

    a, b, c = Guest("nete2e-a"), Guest("nete2e-b"), Guest("nete2e-c")
    boots = [(a, token, {"uuid": private["id"]}, USER_DATA), (b, token, {"uuid": private["id"]}, None),
             (c, other_token, {"uuid": other_network, "fixed_ip": c_address}, None)]
    for guest, owner, nic, user_data in boots:
        server = {"name": guest.name, "imageRef": image["id"], "flavorRef": flavor["id"], "networks": [nic]}
        if user_data:
            server["user_data"] = base64.b64encode(f"{user_data}\nsecond line\n".encode()).decode()
        created = call(cloud, "POST", "/compute/v2.1/servers", {"server": server}, token=owner, status=202)
        guest.id = created["server"]["id"]

    def booted() -> bool:
        for guest, owner, _, _ in boots:
            if not guest.ip:
                guest.ip = marker(cloud.console_output(guest.id, owner), "IP") or ""
        return all(guest.ip for guest, *_ in boots)

    try:
        cloud.wait_for(booted, BOOT_TIMEOUT, interval=2, what="the three guests' DHCP leases")
    except TimeoutError as exc:
        report = [str(exc)]
        for guest, owner, _, _ in boots:
            if not guest.ip:
                server = call(cloud, "GET", f"/compute/v2.1/servers/{guest.id}", token=owner)["server"]
                tail = cloud.console_output(guest.id, owner)[-1500:]
                report.append(f"{guest.name}: {server['status']} {server.get('fault')}\n{tail}")
        raise AssertionError("\n\n".join(report + [cloud.log_tail(40)])) from None
    for guest, *_ in boots:
        [port] = call(cloud, "GET", f"/network/v2.0/ports?device_id={guest.id}", token=token)["ports"]
        guest.port_id = port["id"]
        guest.fixed_ip = port["fixed_ips"][0]["ip_address"]
    [other_dhcp] = call(cloud, "GET", f"/network/v2.0/ports?network_id={other_network}&device_owner=network:dhcp",
                        token=token)["ports"]
    world = World(cloud=cloud, token=token, private_id=private["id"], router_id=router["id"], public_id=public["id"],
                  other_network_id=other_network, other_dhcp_ip=other_dhcp["fixed_ips"][0]["ip_address"],
                  a=a, b=b, c=c, group_id=group["id"])
    conn = libvirt.open("qemu:///system")
    try:
        for guest in (a, c):
            guest.console = Console(conn.lookupByName(names.domain_name(guest.id)))
            world.consoles.append(guest.console)
        yield world
    finally:
        for console in world.consoles:
            console.close()
        conn.close()


def icmp_rule(world: World) -> None:
    """Lets ping in to A and B from anywhere (their default group), once."""
    if not world.icmp_rule_id:
        world.icmp_rule_id = call(world.cloud, "POST", "/network/v2.0/security-group-rules", {"security_group_rule": {
            "security_group_id": world.group_id, "direction": "ingress", "ethertype": "IPv4", "protocol": "icmp"}},
            token=world.token, status=201)["security_group_rule"]["id"]


def test_a_guest_gets_its_ports_address_by_dhcp_and_its_user_data_from_metadata_and_config_drive(world):
    for guest in (world.a, world.b, world.c):
        assert guest.ip == guest.fixed_ip, f"{guest.name} leased {guest.ip}, its port has {guest.fixed_ip}"
    assert world.c.ip not in (world.a.ip, world.b.ip)
    # The agent applied the port (status comes from its result) and Nova's addresses show it.
    port = call(world.cloud, "GET", f"/network/v2.0/ports/{world.a.port_id}", token=world.token)["port"]
    assert port["status"] == "ACTIVE" and port["binding:host_id"] == world.cloud.env["CLOUDMGR_HOSTNAME"]
    assert addresses(world, world.a) == {(world.a.ip, "fixed")}

    wanted = ("INSTANCE", "USERDATA", "CONFIGDRIVE_INSTANCE", "CONFIGDRIVE_USERDATA")

    def metadata_read() -> str | None:
        log = world.cloud.console_output(world.a.id, world.token)
        assert "CLOUDMGR_TESTVM_METADATA=unreachable" not in log
        assert "CLOUDMGR_TESTVM_CONFIGDRIVE=unreadable" not in log
        return log if all(marker(log, name) for name in wanted) else None

    log = world.cloud.wait_for(metadata_read, 120, interval=2, what="A's metadata and config drive markers")
    # From the metadata service (169.254.169.254 in the network's DHCP namespace) and from the drive.
    assert marker(log, "INSTANCE") == world.a.id and marker(log, "USERDATA") == USER_DATA
    assert marker(log, "CONFIGDRIVE_INSTANCE") == world.a.id and marker(log, "CONFIGDRIVE_USERDATA") == USER_DATA
    # B has no user data: the service answers its instance and a 404 for the rest.
    b_log = world.cloud.wait_for(lambda: (lambda log: log if marker(log, "INSTANCE") else None)(
        world.cloud.console_output(world.b.id, world.token)), 120, interval=2, what="B's metadata marker")
    assert marker(b_log, "INSTANCE") == world.b.id and marker(b_log, "USERDATA") is None


def test_two_guests_on_one_network_reach_each_other_but_not_another_projects_network(world):
    assert guest_pings(world.a, world.b.ip, tries=30), "A never reached B on their network"
    # C is up and answers on its own network (from its DHCP server's namespace) ...
    other_dhcp = names.dhcp_namespace(world.other_network_id)
    world.cloud.wait_for(lambda: pings(world.c.ip, other_dhcp), SYNC_TIMEOUT, what="C answering on its network")
    assert guest_pings(world.c, world.other_dhcp_ip, tries=10), "C cannot reach its network's DHCP port"
    # ... but the same CIDR on another project's network is another segment: neither side reaches the other.
    assert not guest_pings(world.a, world.c.ip, tries=3)
    assert not guest_pings(world.c, world.a.ip, tries=3)
    assert not guest_pings(world.c, world.b.ip, tries=3)


def test_an_icmp_rule_opens_and_closes_ping_from_the_router(world):
    cloud, router = world.cloud, names.router_namespace(world.router_id)
    # The default group lets in only its own members: the router's leg is none.
    assert not pings(world.a.ip, router, count=2)
    rule = call(cloud, "POST", "/network/v2.0/security-group-rules", {"security_group_rule": {
        "security_group_id": world.group_id, "direction": "ingress", "ethertype": "IPv4", "protocol": "icmp"}},
        token=world.token, status=201)["security_group_rule"]
    # Each member port is synced by its own task: the rule reaches A's and B's filters one by one.
    cloud.wait_for(lambda: pings(world.a.ip, router) and pings(world.b.ip, router), SYNC_TIMEOUT,
                   what="ping to pass the new ICMP rule")
    call(cloud, "DELETE", f"/network/v2.0/security-group-rules/{rule['id']}", token=world.token, status=204)
    cloud.wait_for(lambda: not pings(world.a.ip, router) and not pings(world.b.ip, router), SYNC_TIMEOUT,
                   what="ping to be blocked again")
    assert not pings(world.a.ip, router, count=2) and not pings(world.b.ip, router, count=2)


def test_a_floating_ip_answers_ping_from_the_host_until_disassociated(world):
    cloud = world.cloud
    icmp_rule(world)
    fip = call(cloud, "POST", "/network/v2.0/floatingips", {"floatingip": {"floating_network_id": world.public_id}},
               token=world.token, status=201)["floatingip"]
    address = fip["floating_ip_address"]
    assert not pings(address), "a floating IP of no port answered"
    associated = call(cloud, "PUT", f"/network/v2.0/floatingips/{fip['id']}",
                      {"floatingip": {"port_id": world.a.port_id}}, token=world.token)["floatingip"]
    assert associated["fixed_ip_address"] == world.a.fixed_ip and associated["router_id"] == world.router_id
    cloud.wait_for(lambda: pings(address), SYNC_TIMEOUT, what=f"the floating IP {address} to answer ping")
    assert addresses(world, world.a) == {(world.a.ip, "fixed"), (address, "floating")}
    # The guest's metadata names it too (EC2's public-ipv4).
    public = world.a.console.run("timeout 5 wget -q -O - http://169.254.169.254/latest/meta-data/public-ipv4",
                                 timeout=60)
    assert public.strip() == address
    call(cloud, "PUT", f"/network/v2.0/floatingips/{fip['id']}", {"floatingip": {"port_id": None}}, token=world.token)
    cloud.wait_for(lambda: not pings(address), SYNC_TIMEOUT, what=f"the floating IP {address} to stop answering")
    assert not pings(address, count=2)
    assert addresses(world, world.a) == {(world.a.ip, "fixed")}
    call(cloud, "DELETE", f"/network/v2.0/floatingips/{fip['id']}", token=world.token, status=204)


def test_an_agent_restart_rebuilds_deleted_namespaces_and_bridges(world):
    cloud = world.cloud
    icmp_rule(world)
    namespaces = [names.dhcp_namespace(world.private_id), names.dhcp_namespace(world.other_network_id),
                  names.router_namespace(world.router_id)]
    bridges = [names.bridge_name(n) for n in (world.private_id, world.other_network_id, world.public_id)]
    router = names.router_namespace(world.router_id)
    cloud.wait_for(lambda: pings(world.a.ip, router), SYNC_TIMEOUT, what="the router reaching A before the restart")

    assert all(dnsmasqs(cloud, n) == 1 for n in (world.private_id, world.other_network_id))
    cloud.kill_agent()
    for namespace in namespaces:
        subprocess.run(["ip", "netns", "delete", namespace], check=True)
    for bridge in bridges:
        subprocess.run(["ip", "link", "delete", bridge], check=True)
    assert not guest_pings(world.a, world.b.ip, tries=2), "A reached B with their bridge gone"

    cloud.start_agent()

    def rebuilt() -> bool:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
        return all(re.search(rf"^{n}\b", listed, re.M) for n in namespaces) and all(f" {b}:" in links for b in bridges)

    cloud.wait_for(rebuilt, SYNC_TIMEOUT * 2, what="the resync to make the namespaces and bridges again")
    assert guest_pings(world.a, world.b.ip, tries=60), "A never reached B again after the resync"
    cloud.wait_for(lambda: pings(world.a.ip, router), SYNC_TIMEOUT, what="the router reaching A again")
    # The network's dnsmasq and metadata service are back for the guests too.
    lease = world.a.console.run("udhcpc -i eth0 -n -q -t 5 -T 2 -s /bin/true 2>&1", timeout=120)
    assert f"lease of {world.a.ip} obtained" in lease, lease
    user_data = world.a.console.run("timeout 5 wget -q -O - http://169.254.169.254/openstack/latest/user_data",
                                    timeout=60)
    assert user_data.splitlines()[0] == USER_DATA
    # C's network came back on its own bridge, still apart from `private`.
    cloud.wait_for(lambda: pings(world.c.ip, names.dhcp_namespace(world.other_network_id)), SYNC_TIMEOUT,
                   what="C answering on its network again")
    assert not guest_pings(world.a, world.c.ip, tries=2)
    # One dnsmasq per network: the ones left in the deleted namespaces were stopped, not leaked.
    for network_id in (world.private_id, world.other_network_id):
        assert dnsmasqs(cloud, network_id) == 1
