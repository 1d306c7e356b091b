"""Nova's ``config_drive`` flag of server create: parsed as Nova's boolean (400 for anything
else), stored on the instance, shown as ``"True"`` or ``""``, and a config drive in the spawn spec
whenever it was asked for, also on a network that serves metadata; the rule that gives one to an
instance on a network without metadata stays."""

import base64
import io
import json

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from apps.instances import services
from apps.instances.models import Instance
from apps.networks import services as network_services
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)

SERVERS = "/compute/v2.1/servers"


@pytest.fixture
def private(world, settings):
    """A network with a DHCP-enabled IPv4 subnet: it serves metadata, so no drive is needed."""
    settings.CLOUDMGR_FORCE_CONFIG_DRIVE = False
    make_host()
    network = network_services.network_create(user=world.member, project=world.project, name="private")
    network_services.subnet_create(user=world.member, project=world.project, network=network, cidr="10.0.0.0/24")
    return network


def _client(world):
    c = APIClient()
    c.credentials(HTTP_X_AUTH_TOKEN=world.token(world.member))
    return c


def _boot(c, world, **extra):
    return c.post(SERVERS, {"server": {"name": "vm", "imageRef": str(world.image.id), "flavorRef": world.flavor.id,
                                       **extra}}, format="json")


def _drive(fake_driver, server_id) -> dict | None:
    return fake_driver.specs[str(server_id)].config_drive


@pytest.mark.parametrize("value", [True, "True", "true", "1", "yes", "ON"])
def test_nova_true_values_give_a_drive_on_a_network_that_serves_metadata(world, private, fake_driver, value):
    c = _client(world)
    resp = _boot(c, world, config_drive=value)
    assert resp.status_code == 202, resp.content
    server_id = resp.json()["server"]["id"]
    assert Instance.objects.get(pk=server_id).config_drive is True
    assert c.get(f"{SERVERS}/{server_id}").json()["server"]["config_drive"] == "True"
    files = _drive(fake_driver, server_id)
    assert files is not None, "asked for: a drive even though the network serves metadata"
    assert json.loads(base64.b64decode(files["openstack/latest/meta_data.json"]))["uuid"] == server_id


@pytest.mark.parametrize("extra", [{}, {"config_drive": False}, {"config_drive": "False"}, {"config_drive": "no"}])
def test_not_asked_is_no_drive_on_a_network_that_serves_metadata(world, private, fake_driver, extra):
    c = _client(world)
    resp = _boot(c, world, **extra)
    assert resp.status_code == 202, resp.content
    server_id = resp.json()["server"]["id"]
    assert Instance.objects.get(pk=server_id).config_drive is False
    assert c.get(f"{SERVERS}/{server_id}").json()["server"]["config_drive"] == ""
    detail = c.get(f"{SERVERS}/detail").json()["servers"]
    assert [s["config_drive"] for s in detail] == [""]
    assert _drive(fake_driver, server_id) is None


@pytest.mark.parametrize("value", [None, 1, 0, "maybe", "", "t", "y", {"x": 1}, [True],
                                   "8a3c1b5e-9f7d-4e2a-b6c4-0d1e2f3a4b5c"])
def test_other_values_are_400_and_make_nothing(world, private, value):
    resp = _boot(_client(world), world, config_drive=value)
    assert resp.status_code == 400, (value, resp.content)
    assert resp.json()["badRequest"]["code"] == 400
    assert "config_drive" in resp.json()["badRequest"]["message"]
    assert not Instance.objects.exists()


def test_what_the_openstack_cli_posts(world, private, fake_driver):
    """`openstack server create --config-drive True` (and `--use-config-drive`) post JSON true;
    the detail list shows it as Nova does."""
    c = _client(world)
    resp = c.post(SERVERS, {"server": {"name": "cli", "imageRef": str(world.image.id), "flavorRef": world.flavor.id,
                                       "min_count": 1, "max_count": 1, "networks": "auto",
                                       "config_drive": True}}, format="json")
    assert resp.status_code == 202, resp.content
    server_id = resp.json()["server"]["id"]
    servers = c.get(f"{SERVERS}/detail").json()["servers"]
    assert [(s["id"], s["config_drive"]) for s in servers] == [(server_id, "True")]
    assert _drive(fake_driver, server_id) is not None


def test_a_network_without_metadata_still_gets_a_drive_unasked(world, settings, fake_driver):
    settings.CLOUDMGR_FORCE_CONFIG_DRIVE = False
    make_host()
    network = network_services.network_create(user=world.member, project=world.project, name="static")
    network_services.subnet_create(user=world.member, project=world.project, network=network, cidr="10.9.0.0/24",
                                   enable_dhcp=False)
    instance = services.instance_create(user=world.member, project=world.project, name="static", flavor=world.flavor,
                                        image=world.image, networks=[{"uuid": str(network.pk)}])
    assert instance.config_drive is False
    assert _drive(fake_driver, instance.pk) is not None


def test_rebuild_keeps_the_drive(world, private, fake_driver):
    c = _client(world)
    server_id = _boot(c, world, config_drive=True).json()["server"]["id"]
    fake_driver.specs.clear()
    resp = c.post(f"{SERVERS}/{server_id}/action", {"rebuild": {"imageRef": str(world.image.id)}}, format="json")
    assert resp.status_code == 202, resp.content
    assert _drive(fake_driver, server_id) is not None
    assert c.get(f"{SERVERS}/{server_id}").json()["server"]["config_drive"] == "True"


def test_portal_launch_form_has_the_checkbox(client, world, private, fake_driver):
    client.force_login(world.member)
    page = client.get("/instances/launch/").content.decode()
    assert 'name="config_drive"' in page and "Config drive" in page
    form = {"name": "web", "image": str(world.image.pk), "flavor": world.flavor.pk, "count": 1}
    assert client.post("/instances/launch/", {**form, "config_drive": "on"}).status_code == 302
    assert client.post("/instances/launch/", {**form, "name": "plain"}).status_code == 302
    made = {i.name: i for i in Instance.objects.all()}
    assert made["web"].config_drive is True and _drive(fake_driver, made["web"].pk) is not None
    assert made["plain"].config_drive is False and _drive(fake_driver, made["plain"].pk) is None


def test_instance_create_command_takes_config_drive(world, private, fake_driver):
    call_command("instance_create", "cmd", "--flavor", world.flavor.name, "--image", world.image.name,
                 "--config-drive", "--user", world.member.username, "--project", world.project.name,
                 stdout=io.StringIO())
    instance = Instance.objects.get(name="cmd")
    assert instance.config_drive is True and _drive(fake_driver, instance.pk) is not None
