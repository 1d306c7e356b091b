"""A port's and a network's admin_state_up, and a network's MTU change: what the control plane
sends to the (fake) agents, and the ports' status once the agent applied it."""

import pytest
from rest_framework.test import APIClient

from agents.specs import DomainSpec, NicSpec, PortSpec
from apps.networks import dataplane, services
from apps.networks.models import Port
from apps.networks.states import OWNER_ROUTER_INTERFACE, Status
from cloudmgr.exceptions import ApplicationError
from tests.unit.conftest import make_routed_network

pytestmark = pytest.mark.django_db(transaction=True)

API = "/network/v2.0"


@pytest.fixture
def cloud(world):
    """A host; the public network; project alpha's network with a subnet and a router on both."""
    return make_routed_network(world)


def bound_port(world, cloud, **fields) -> Port:
    return services.port_create(user=world.admin, project=world.project, network=cloud["network"],
                                host_id=cloud["host"].hostname, **fields)


def status(port) -> str:
    return Port.objects.get(pk=port.pk).status


def client(token):
    c = APIClient()
    c.credentials(HTTP_X_AUTH_TOKEN=token)
    return c


# --- admin_state_up ---------------------------------------------------------------------------


def test_a_port_set_down_sends_its_tap_down_and_reads_down_until_set_up(world, cloud, net):
    port = bound_port(world, cloud)
    assert net.ports[str(port.pk)].admin_state_up and status(port) == Status.ACTIVE

    services.port_update(port=port, user=world.member, project=world.project, changes={"admin_state_up": False})
    assert net.ports[str(port.pk)].admin_state_up is False  # the agent keeps its tap link-down
    assert status(port) == Status.DOWN  # applied by the agent, and down

    services.port_update(port=port, user=world.member, project=world.project, changes={"admin_state_up": True})
    assert net.ports[str(port.pk)].admin_state_up is True
    assert status(port) == Status.ACTIVE


def test_a_port_made_down_is_down_from_the_start(world, cloud, net):
    port = bound_port(world, cloud, admin_state_up=False)
    assert net.ports[str(port.pk)].admin_state_up is False and status(port) == Status.DOWN


def test_a_network_set_down_sends_its_bound_ports_down(world, cloud, net):
    network = cloud["network"]
    first, second = bound_port(world, cloud), bound_port(world, cloud)
    unbound = services.port_create(user=world.member, project=world.project, network=network)
    elsewhere = services.port_create(user=world.admin, project=world.project, network=cloud["external"],
                                     host_id=cloud["host"].hostname)
    net.calls.clear()

    services.network_update(network=network, user=world.member, project=world.project,
                            changes={"admin_state_up": False})
    synced = {object_id for op, object_id in net.calls if op == "port_sync"}
    assert synced == {str(first.pk), str(second.pk)}  # the bound ports of this network, no other
    assert ("network_sync", str(network.pk)) in net.calls
    assert not net.ports[str(first.pk)].admin_state_up and not net.ports[str(second.pk)].admin_state_up
    assert status(first) == status(second) == Status.DOWN
    assert status(unbound) == Status.DOWN  # never applied anywhere: as it was
    assert status(elsewhere) == Status.ACTIVE and net.ports[str(elsewhere.pk)].admin_state_up
    # The router's leg has no tap: the router still serves the network.
    leg = Port.objects.get(network=network, device_owner=OWNER_ROUTER_INTERFACE)
    assert leg.status == Status.ACTIVE
    # A port's own state cannot bring it up on a network that is down.
    services.port_update(port=first, user=world.member, project=world.project, changes={"admin_state_up": True})
    assert not net.ports[str(first.pk)].admin_state_up and status(first) == Status.DOWN

    services.network_update(network=network, user=world.member, project=world.project,
                            changes={"admin_state_up": True})
    assert net.ports[str(first.pk)].admin_state_up and net.ports[str(second.pk)].admin_state_up
    assert status(first) == status(second) == Status.ACTIVE


def test_a_resync_keeps_admin_down_ports_down(world, cloud, net):
    down = bound_port(world, cloud, admin_state_up=False)
    up = bound_port(world, cloud)
    state = dataplane.host_state(cloud["host"])
    assert {p.id: p.admin_state_up for p in state.ports} == {str(down.pk): False, str(up.pk): True}
    services.network_task_done(result={"task": "agents.network.resync", "kind": "host",
                                       "host": cloud["host"].hostname, "ok": True})
    assert status(down) == Status.DOWN and status(up) == Status.ACTIVE
    router_leg = Port.objects.get(network=cloud["network"], device_owner=OWNER_ROUTER_INTERFACE)
    assert router_leg.status == Status.ACTIVE
    services.network_task_done(result={"task": "agents.network.resync", "kind": "host",
                                       "host": cloud["host"].hostname, "ok": False, "error": "boom"})
    assert status(down) == status(up) == Status.ERROR


def test_a_servers_nic_carries_the_admin_state_to_the_spawn_path(world, cloud, fake_driver):
    port = services.port_create(user=world.member, project=world.project, network=cloud["network"],
                                admin_state_up=False)
    c = client(world.token(world.member))
    resp = c.post("/compute/v2.1/servers", {"server": {
        "name": "vm1", "imageRef": str(world.image.id), "flavorRef": world.flavor.id,
        "networks": [{"port": str(port.pk)}]}}, format="json")
    assert resp.status_code == 202, resp.content
    [nic] = fake_driver.specs[resp.json()["server"]["id"]].nics
    assert nic.port_id == str(port.pk) and nic.admin_state_up is False
    services.network_update(network=cloud["network"], user=world.member, project=world.project,
                            changes={"admin_state_up": False})
    services.port_update(port=port, user=world.member, project=world.project, changes={"admin_state_up": True})
    assert dataplane.nic_spec(Port.objects.select_related("network").get(pk=port.pk)).admin_state_up is False
    services.network_update(network=cloud["network"], user=world.member, project=world.project,
                            changes={"admin_state_up": True})
    assert dataplane.nic_spec(Port.objects.select_related("network").get(pk=port.pk)).admin_state_up is True


def test_the_api_shows_a_port_down_while_its_admin_state_is_down(world, cloud):
    port = bound_port(world, cloud)
    c = client(world.token(world.member))
    resp = c.put(f"{API}/ports/{port.pk}", {"port": {"admin_state_up": False}}, format="json")
    assert resp.status_code == 200, resp.content
    body = c.get(f"{API}/ports/{port.pk}").json()["port"]
    assert body["admin_state_up"] is False and body["status"] == "DOWN"
    assert [p["id"] for p in c.get(f"{API}/ports?status=DOWN&network_id={cloud['network'].pk}").json()["ports"]] \
        == [str(port.pk)]
    c.put(f"{API}/ports/{port.pk}", {"port": {"admin_state_up": True}}, format="json")
    body = c.get(f"{API}/ports/{port.pk}").json()["port"]
    assert body["admin_state_up"] is True and body["status"] == "ACTIVE"


def test_specs_from_older_messages_are_up():
    port = PortSpec(id="p", network_id="n", mac_address="fa:16:3e:00:00:01").to_dict()
    del port["admin_state_up"]
    assert PortSpec.from_dict(port).admin_state_up is True
    nic = NicSpec(port_id="p", mac_address="fa:16:3e:00:00:01", bridge="brq").__dict__.copy()
    del nic["admin_state_up"]
    domain = DomainSpec(instance_id="i", display_name="vm", vcpus=1, memory_mib=64).to_dict()
    domain["nics"] = [nic]
    assert DomainSpec.from_dict(domain).nics[0].admin_state_up is True


# --- MTU --------------------------------------------------------------------------------------


def test_an_mtu_change_reaches_the_network_its_bound_ports_and_its_routers(world, cloud, net):
    network, router = cloud["network"], cloud["router"]
    port = bound_port(world, cloud)
    other = services.port_create(user=world.admin, project=world.project, network=cloud["external"],
                                 host_id=cloud["host"].hostname)
    assert net.networks[str(network.pk)].mtu == 1450 and net.ports[str(port.pk)].mtu == 1450
    net.calls.clear()

    updated = services.network_update(network=network, user=world.member, project=world.project,
                                      changes={"mtu": 1400})
    assert updated.mtu == 1400
    spec = net.networks[str(network.pk)]
    assert spec.mtu == 1400 and spec.dhcp_port is not None  # the bridge and the DHCP veth; option 26 from it
    assert net.ports[str(port.pk)].mtu == 1400  # its tap
    legs = net.routers[str(router.pk)].interfaces
    assert [leg.network.mtu for leg in legs] == [1400]  # the router's leg on it
    assert net.routers[str(router.pk)].gateway.network.mtu == 1500  # the other network's: unchanged
    assert ("port_sync", str(other.pk)) not in net.calls
    assert status(port) == Status.ACTIVE

    # A change of the external network reaches the routers with a gateway on it.
    net.calls.clear()
    services.network_update(network=cloud["external"], user=world.admin, project=world.project,
                            changes={"mtu": 1480})
    assert ("router_sync", str(router.pk)) in net.calls
    assert net.routers[str(router.pk)].gateway.network.mtu == 1480
    assert net.ports[str(other.pk)].mtu == 1480


def test_a_name_change_sends_no_port(world, cloud, net):
    bound_port(world, cloud)
    net.calls.clear()
    services.network_update(network=cloud["network"], user=world.member, project=world.project,
                            changes={"name": "renamed"})
    assert not [call for call in net.calls if call[0] in ("port_sync", "router_sync")]


@pytest.mark.parametrize("mtu", [67, 1451, True, "1400", None])
def test_an_mtu_out_of_range_is_refused(world, cloud, mtu):
    with pytest.raises(ApplicationError) as exc:
        services.network_update(network=cloud["network"], user=world.member, project=world.project,
                                changes={"mtu": mtu})
    assert exc.value.status_code == 400


def test_an_ipv6_subnet_needs_an_mtu_of_1280(world, cloud):
    network = cloud["network"]
    services.network_update(network=network, user=world.member, project=world.project, changes={"mtu": 1000})
    services.network_update(network=network, user=world.member, project=world.project, changes={"mtu": 1450})
    services.subnet_create(user=world.member, project=world.project, network=network, cidr="fd00:1::/64",
                           ip_version=6, ipv6_ra_mode="slaac", ipv6_address_mode="slaac")
    with pytest.raises(ApplicationError, match="1280") as exc:
        services.network_update(network=network, user=world.member, project=world.project, changes={"mtu": 1279})
    assert exc.value.status_code == 400
    assert services.network_update(network=network, user=world.member, project=world.project,
                                   changes={"mtu": 1280}).mtu == 1280


def test_the_api_updates_the_mtu(world, cloud, net):
    c = client(world.token(world.member))
    resp = c.put(f"{API}/networks/{cloud['network'].pk}", {"network": {"mtu": 1300}}, format="json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["network"]["mtu"] == 1300
    assert net.networks[str(cloud["network"].pk)].mtu == 1300
    resp = c.put(f"{API}/networks/{cloud['network'].pk}", {"network": {"mtu": 9000}}, format="json")
    assert resp.status_code == 400
