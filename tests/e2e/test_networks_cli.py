"""The real python-openstackclient builds a tenant's network and reaches a real guest through it:
`network create`, `subnet create`, `router create`, `router add subnet`, `router set
--external-gateway`, `server create --network`, `floating ip create`, `server add floating ip`,
`security group rule create --protocol icmp`, `port list --server`, `server add/remove network`
(os-interface), as a project member on a running cloud (bridges, dnsmasq, a router namespace with
NAT, nftables, libvirt hot-plug)."""

import re
import secrets
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from agents import names
from tests.e2e.test_openstack_cli import cli_env, openstack


@pytest.fixture(scope="module")
def member(live_cloud):
    """A new project and a member of it: what they see is theirs (one `default` group)."""
    suffix = secrets.token_hex(3)
    # The password starts with a letter: the CLI would read "-..." as an option.
    project, user, password = f"net-project-{suffix}", f"net-user-{suffix}", "pw" + secrets.token_urlsafe(16)
    openstack(live_cloud, "project", "create", project, "-f", "json")
    openstack(live_cloud, "user", "create", user, f"--password={password}", "--project", project, "-f", "json")
    openstack(live_cloud, "role", "add", "--project", project, "--user", user, "member")
    return {"OS_USERNAME": user, "OS_PASSWORD": password, "OS_PROJECT_NAME": project}


def pings(address: str) -> bool:
    return subprocess.run(["ping", "-c", "1", "-W", "1", address], capture_output=True, check=False).returncode == 0


def nic_count(server_id: str) -> tuple[int, int]:
    """(NICs of the running domain, NICs of its definition), from libvirt itself."""
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.lookupByName(names.domain_name(server_id))
        live = ET.fromstring(dom.XMLDesc()).findall("./devices/interface")
        defined = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).findall("./devices/interface")
        return len(live), len(defined)
    finally:
        conn.close()


def sdk_server_security_groups(cloud, server: str, as_member) -> list[dict]:
    """openstacksdk's ``fetch_server_security_groups`` (Nova's ``GET /servers/{id}/os-security-groups``),
    run as the member from the same environment the CLI gets."""
    script = ("import json, sys, openstack; c = openstack.connect(); "
              "s = c.compute.find_server(sys.argv[1], ignore_missing=False); "
              "print(json.dumps(c.compute.fetch_server_security_groups(s).security_groups))")
    result = subprocess.run([sys.executable, "-c", script, server], env=cli_env(cloud, **as_member),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def console(cloud, server_id, as_member) -> str:
    result = openstack(cloud, "console", "log", "show", server_id, check=False, **as_member)
    return result.stdout if result.returncode == 0 else ""


def test_a_tenant_network_end_to_end_with_the_cli(live_cloud, member):
    cloud = live_cloud

    def osc(*args):
        return openstack(cloud, *args, **member)

    network = osc("network", "create", "cli-net", "-f", "json")
    assert network["name"] == "cli-net" and network["status"] == "ACTIVE" and network["mtu"] == 1450
    subnet = osc("subnet", "create", "--network", "cli-net", "--subnet-range", "10.20.0.0/24", "cli-subnet",
                 "-f", "json")
    assert subnet["gateway_ip"] == "10.20.0.1" and subnet["cidr"] == "10.20.0.0/24"
    router = osc("router", "create", "cli-router", "-f", "json")
    assert osc("router", "add", "subnet", "cli-router", "cli-subnet") is None
    assert osc("router", "set", "--external-gateway", "public", "cli-router") is None
    shown = osc("router", "show", router["id"], "-f", "json")
    gateway = shown["external_gateway_info"]
    assert gateway["network_id"] == osc("network", "show", "public", "-f", "json")["id"]
    assert gateway["external_fixed_ips"][0]["ip_address"]
    assert "10.20.0.1" in str(shown["interfaces_info"])

    server = osc("server", "create", "--image", "testvm", "--flavor", "m1.nano", "--network", "cli-net", "--wait",
                 "cli-net-vm", "-f", "json")
    assert server["status"] == "ACTIVE"
    [port] = osc("port", "list", "--server", "cli-net-vm", "-f", "json")
    fixed = port["Fixed IP Addresses"][0]["ip_address"] if isinstance(port["Fixed IP Addresses"], list) else (
        re.search(r"ip_address='([\d.]+)'", str(port["Fixed IP Addresses"])).group(1))
    assert fixed.startswith("10.20.0.")
    # The guest gets exactly its port's address from the network's dnsmasq.
    cloud.wait_for(lambda: f"CLOUDMGR_TESTVM_IP={fixed}" in console(cloud, server["id"], member), 120,
                   interval=2, what=f"the guest's DHCP lease of {fixed}")

    fip = osc("floating", "ip", "create", "public", "-f", "json")
    address = fip["floating_ip_address"]
    assert osc("server", "add", "floating", "ip", "cli-net-vm", address) is None
    associated = osc("floating", "ip", "show", address, "-f", "json")
    assert associated["fixed_ip_address"] == fixed and associated["port_id"] == port["ID"]
    addresses = osc("server", "show", "cli-net-vm", "-f", "json")["addresses"]
    assert fixed in str(addresses) and address in str(addresses)

    # The default group lets nothing in from outside it: no answer until ICMP is allowed.
    assert not pings(address)
    # A group allowing ICMP, added to the running server (Nova's addSecurityGroup), then removed.
    osc("security", "group", "create", "cli-ping", "-f", "json")
    osc("security", "group", "rule", "create", "--protocol", "icmp", "cli-ping", "-f", "json")
    assert osc("server", "add", "security", "group", "cli-net-vm", "cli-ping") is None
    groups = osc("server", "show", "cli-net-vm", "-f", "json")["security_groups"]
    assert sorted(g["name"] for g in groups) == ["cli-ping", "default"]
    detailed = {g["name"]: g for g in sdk_server_security_groups(cloud, "cli-net-vm", member)}
    assert sorted(detailed) == ["cli-ping", "default"]
    assert [(r["ip_protocol"], r["from_port"], r["to_port"], r["ip_range"]) for r in detailed["cli-ping"]["rules"]
            ] == [("icmp", -1, -1, {"cidr": "0.0.0.0/0"})]
    cloud.wait_for(lambda: pings(address), 60, interval=1, what=f"the added group to let ping reach {address}")
    assert osc("server", "remove", "security", "group", "cli-net-vm", "cli-ping") is None
    assert [g["name"] for g in osc("server", "show", "cli-net-vm", "-f", "json")["security_groups"]] == ["default"]
    cloud.wait_for(lambda: not pings(address), 60, interval=1, what=f"ping to {address} to be blocked again")
    rule = osc("security", "group", "rule", "create", "--protocol", "icmp", "default", "-f", "json")
    assert rule["protocol"] == "icmp" and rule["direction"] == "ingress"
    cloud.wait_for(lambda: pings(address), 60, interval=1, what=f"the floating IP {address} to answer ping")

    # os-interface: a second network's NIC is hot-plugged into the running domain and unplugged.
    osc("network", "create", "cli-net2", "-f", "json")
    osc("subnet", "create", "--network", "cli-net2", "--subnet-range", "10.21.0.0/24", "cli-subnet2", "-f", "json")
    assert osc("server", "add", "network", "cli-net-vm", "cli-net2") is None
    assert len(osc("port", "list", "--server", "cli-net-vm", "-f", "json")) == 2
    assert nic_count(server["id"]) == (2, 2)
    assert osc("server", "remove", "network", "cli-net-vm", "cli-net2") is None
    assert len(osc("port", "list", "--server", "cli-net-vm", "-f", "json")) == 1
    cloud.wait_for(lambda: nic_count(server["id"]) == (1, 1), 60, interval=1, what="the NIC to be unplugged")

    osc("server", "delete", "--wait", "cli-net-vm")
    assert osc("port", "list", "--network", "cli-net", "--device-owner", "compute:nova", "-f", "json") == []
    assert osc("floating", "ip", "show", address, "-f", "json")["port_id"] is None
