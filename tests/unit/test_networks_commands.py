"""The network commands: thin doors on the same services as the API."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from agents.network.driver import get_network_driver
from apps.networks.models import FloatingIP, Network, Router, SecurityGroupRule
from apps.tenants.models import Role
from apps.tenants.services import role_grant
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_a_topology_from_the_commands(world):
    make_host()
    role_grant(user=world.admin, project=world.project, role=Role.ADMIN)
    actor = ["--user", "root", "--project", "alpha"]
    run("network_create", "public", "--external", "--physical-network", "public", *actor)
    run("subnet_create", "public", "172.24.4.0/24", "--no-dhcp", *actor)
    assert "network private" in run("network_create", "private", *actor)
    assert "gateway 10.0.0.1" in run("subnet_create", "private", "10.0.0.0/24", "--name", "private-subnet", *actor)
    run("router_create", "r1", "--external-gateway", "public", *actor)
    assert "on subnet 10.0.0.0/24" in run("router_interface_add", "r1", "private-subnet", *actor)
    assert "floating ip 172.24.4.3" in run("floating_ip_create", *actor)
    assert "ingress icmp" in run("security_group_rule_create", "default", "--protocol", "icmp", *actor)
    listed = run("network_list", *actor)
    assert "public" in listed and "10.0.0.0/24" in listed and "external" in listed
    router = Router.objects.get(name="r1")
    assert router.gateway_network == Network.objects.get(name="public") and router.interfaces.count() == 1
    assert FloatingIP.objects.count() == 1 and SecurityGroupRule.objects.filter(protocol="icmp").count() == 1
    net = get_network_driver()
    net.reset()
    assert "sent host node1" in run("network_resync", "node1")
    assert net.calls == [("resync", "")] and str(router.pk) in net.routers
    with pytest.raises(CommandError, match="ports still in use"):
        run("network_delete", "private", *actor)
    with pytest.raises(CommandError, match="could not be found"):
        run("network_delete", "nowhere", *actor)
    with pytest.raises(CommandError, match="disallowed by policy"):
        run("network_create", "ext2", "--external", "--user", "alice", "--project", "alpha")
