"""A port update that drops the address a floating IP is NATed to is refused, as Neutron does
(``prevent_internal_ip_change_for_fip``: 400 BadRequest unless the new fixed_ips name that
address), so no floating IP is ever left pointing at an address its port no longer has."""

import pytest
from rest_framework.test import APIClient

from apps.networks import services
from apps.networks.models import FloatingIP, Port, Router
from apps.networks.states import Status
from cloudmgr.exceptions import ApplicationError
from tests.unit.conftest import make_routed_network

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.database]  # row locks: also on PostgreSQL

API = "/network/v2.0"


@pytest.fixture
def floating(world, net):
    """A port with two addresses (10.0.0.3 and 10.0.0.10) behind a router, a floating IP NATed
    to the first."""
    cloud = make_routed_network(world)
    ext, network, subnet, router = cloud["external"], cloud["network"], cloud["subnet"], cloud["router"]
    port = services.port_create(user=world.member, project=world.project, network=network, name="vm",
                                fixed_ips=[{"ip_address": "10.0.0.3"}, {"ip_address": "10.0.0.10"}])
    fip = services.floating_ip_create(user=world.member, project=world.project, floating_network_id=ext.pk)
    services.floating_ip_update(fip=fip, user=world.member, project=world.project,
                                changes={"port_id": str(port.pk), "fixed_ip_address": "10.0.0.3"})
    return {"port": port, "fip": FloatingIP.objects.get(pk=fip.pk), "router": Router.objects.get(pk=router.pk),
            "subnet": subnet}


def _addresses(port) -> list[str]:
    return sorted(a.ip_address for a in Port.objects.get(pk=port.pk).fixed_ips.all())


def _dnat(net, floating) -> list[tuple[str, str]]:
    return [(f.floating_ip_address, f.fixed_ip_address) for f in net.routers[str(floating["router"].pk)].floating_ips]


def _still_associated(net, floating) -> None:
    fip = FloatingIP.objects.get(pk=floating["fip"].pk)
    assert (fip.port_id, fip.fixed_ip_address, fip.router_id, fip.status) == (
        floating["port"].pk, "10.0.0.3", floating["router"].pk, Status.ACTIVE)
    assert _dnat(net, floating) == [(fip.floating_ip_address, "10.0.0.3")]


def test_dropping_the_floating_ips_address_is_refused_with_neutrons_400(world, net, floating):
    port = floating["port"]
    resp = APIClient().put(f"{API}/ports/{port.pk}", {"port": {"name": "renamed",
                                                               "fixed_ips": [{"ip_address": "10.0.0.10"}]}},
                           format="json", HTTP_X_AUTH_TOKEN=world.token(world.member))
    assert resp.status_code == 400, resp.content
    error = resp.json()["NeutronError"]
    assert error["type"] == "BadRequest"
    assert error["message"] == (f"Bad port request: Cannot update the fixed_ips of the port {port.pk}, because its "
                                "original fixed_ip has been associated to a floating ip.")
    # Nothing of the request was applied, and the router keeps its DNAT to the address.
    assert _addresses(port) == ["10.0.0.10", "10.0.0.3"]
    assert Port.objects.get(pk=port.pk).name == "vm"
    _still_associated(net, floating)


def test_a_subnet_only_entry_does_not_name_the_address_so_it_is_refused_too(world, net, floating):
    port = floating["port"]
    with pytest.raises(ApplicationError) as exc:
        services.port_update(port=port, user=world.member, project=world.project,
                             changes={"fixed_ips": [{"subnet_id": str(floating["subnet"].pk)}]})
    assert exc.value.status_code == 400 and exc.value.neutron_type == "BadRequest"
    with pytest.raises(ApplicationError):
        services.port_update(port=port, user=world.member, project=world.project, changes={"fixed_ips": []})
    assert _addresses(port) == ["10.0.0.10", "10.0.0.3"]
    _still_associated(net, floating)


def test_other_addresses_change_freely_while_the_floating_ips_address_stays(world, net, floating):
    port = floating["port"]
    resp = APIClient().put(f"{API}/ports/{port.pk}", {"port": {"fixed_ips": [{"ip_address": "10.0.0.3"},
                                                                             {"ip_address": "10.0.0.20"}]}},
                           format="json", HTTP_X_AUTH_TOKEN=world.token(world.member))
    assert resp.status_code == 200, resp.content
    assert sorted(ip["ip_address"] for ip in resp.json()["port"]["fixed_ips"]) == ["10.0.0.20", "10.0.0.3"]
    assert _addresses(port) == ["10.0.0.20", "10.0.0.3"]
    _still_associated(net, floating)


def test_once_disassociated_the_address_may_go(world, net, floating):
    port, fip = floating["port"], floating["fip"]
    services.floating_ip_update(fip=fip, user=world.member, project=world.project, changes={"port_id": None})
    assert _dnat(net, floating) == []
    services.port_update(port=port, user=world.member, project=world.project,
                         changes={"fixed_ips": [{"ip_address": "10.0.0.10"}]})
    assert _addresses(port) == ["10.0.0.10"]
    fip.refresh_from_db()
    assert fip.port_id is None and fip.fixed_ip_address is None and fip.status == Status.DOWN
