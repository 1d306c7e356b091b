"""The portal's action menu and action log on the instance page."""

import pytest

from apps.instances import services
from apps.instances.models import Instance
from apps.instances.states import VmState
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def vm(world):
    make_host()
    return services.instance_create(user=world.member, project=world.project, name="vm1", flavor=world.flavor,
                                    image=world.image)


def test_action_menu_follows_the_state_and_actions_run(client, world, vm):
    client.force_login(world.member)
    page = client.get(f"/instances/{vm.pk}/").content.decode()
    assert 'data-action="stop"' in page and 'data-action="start"' not in page
    assert "Action log" in page
    r = client.post(f"/instances/{vm.pk}/action/stop/")
    assert r.status_code == 302
    assert Instance.objects.get(pk=vm.pk).vm_state == VmState.STOPPED
    overview = client.get(f"/instances/{vm.pk}/overview/").content.decode()
    assert 'data-action="start"' in overview and 'data-action="stop"' not in overview
    assert ">stop<" in overview  # the action log
    r = client.post(f"/instances/{vm.pk}/action/unpause/", follow=True)
    assert "Cannot &#x27;unpause&#x27;" in r.content.decode() or "Cannot 'unpause'" in r.content.decode()


def test_trigger_crash_dump_from_the_menu(client, world, vm, fake_driver):
    client.force_login(world.member)
    page = client.get(f"/instances/{vm.pk}/").content.decode()
    assert 'data-action="trigger_crash_dump"' in page and "Send vm1 an NMI?" in page  # with a confirmation
    assert client.post(f"/instances/{vm.pk}/action/trigger_crash_dump/").status_code == 302
    assert ("trigger_crash_dump", str(vm.pk)) in fake_driver.calls
    assert Instance.objects.get(pk=vm.pk).vm_state == VmState.ACTIVE
    assert ">trigger_crash_dump<" in client.get(f"/instances/{vm.pk}/overview/").content.decode()


def test_snapshot_and_backup_from_the_instance_page(client, world, vm, fake_driver):
    from apps.images.models import Image, ImageStatus

    def live():
        return set(Image.objects.exclude(status=ImageStatus.DELETED).values_list("name", flat=True))

    client.force_login(world.member)
    page = client.get(f"/instances/{vm.pk}/").content.decode()
    assert 'id="snapshot-form"' in page and 'value="vm1-backup"' in page
    r = client.post(f"/instances/{vm.pk}/image/snapshot/", {"name": "portal-snap"}, follow=True)
    assert "Image portal-snap of vm1 is being made" in r.content.decode()
    for name in ("daily-1", "daily-2"):
        r = client.post(f"/instances/{vm.pk}/image/backup/", {"name": name, "backup_type": "daily", "rotation": "1"})
        assert r.status_code == 302 and r["Location"] == f"/instances/{vm.pk}/#images"
    assert live() == {world.image.name, "portal-snap", "daily-2"}
    assert Image.objects.get(name="daily-2").properties["backup_type"] == "daily"
    r = client.post(f"/instances/{vm.pk}/image/backup/", {"name": "x", "backup_type": "daily", "rotation": "-1"},
                    follow=True)
    assert "Nothing was made: Keep:" in r.content.decode()
    Instance.objects.filter(pk=vm.pk).update(task_state="rebooting_hard")
    r = client.post(f"/instances/{vm.pk}/image/snapshot/", {"name": "busy"}, follow=True)
    assert "Cannot &#x27;createImage&#x27;" in r.content.decode()
    assert live() == {world.image.name, "portal-snap", "daily-2"}

    client.force_login(world.reader)
    assert 'id="snapshot-form"' not in client.get(f"/instances/{vm.pk}/").content.decode()
    client.post(f"/instances/{vm.pk}/image/snapshot/", {"name": "by-a-reader"})
    assert "by-a-reader" not in live()


def test_readers_get_no_menu_and_cannot_act(client, world, vm):
    client.force_login(world.reader)
    assert 'data-action="stop"' not in client.get(f"/instances/{vm.pk}/").content.decode()
    r = client.post(f"/instances/{vm.pk}/action/stop/")
    assert r.status_code in (302, 403)
    assert Instance.objects.get(pk=vm.pk).vm_state == VmState.ACTIVE


def test_launch_form_with_key_pair_user_data_and_count(client, world):
    make_host()
    services.keypair_create(user=world.member, name="mykey")
    client.force_login(world.member)
    page = client.get("/instances/launch/").content.decode()
    assert "mykey" in page and "User data" in page
    r = client.post("/instances/launch/", {"name": "many", "image": str(world.image.pk), "flavor": world.flavor.pk,
                                           "key_name": "mykey", "user_data": "#!/bin/sh\necho hi\n", "count": 2})
    assert r.status_code == 302
    made = Instance.objects.order_by("name")
    assert [i.name for i in made] == ["many-1", "many-2"] and made[0].key_name == "mykey"
    assert made[0].user_data  # base64 of the script
    assert made[0].description is None  # none given
    assert "Description" not in client.get(f"/instances/{made[0].pk}/").content.decode()


def test_launch_form_description_shows_on_the_overview(client, world):
    make_host()
    client.force_login(world.member)
    r = client.post("/instances/launch/", {"name": "described", "description": "runs the web site",
                                           "image": str(world.image.pk), "flavor": world.flavor.pk, "count": 1})
    assert r.status_code == 302
    vm = Instance.objects.get(name="described")
    assert vm.description == "runs the web site"
    page = client.get(f"/instances/{vm.pk}/").content.decode()
    assert 'data-testid="description">runs the web site<' in page


def test_launch_form_puts_the_instance_on_the_chosen_network(client, world):
    """With two networks in the project the service cannot guess: the form offers them (and not
    the external one) and the port lands on the one chosen."""
    from apps.networks.models import Port
    from apps.networks.services import network_create, subnet_create

    make_host()
    nets = []
    for name, cidr in (("front", "10.10.0.0/24"), ("back", "10.20.0.0/24")):
        net = network_create(user=world.member, project=world.project, name=name)
        subnet_create(user=world.member, project=world.project, network=net, cidr=cidr)
        nets.append(net)
    client.force_login(world.member)
    page = client.get("/instances/launch/").content.decode()
    assert "front" in page and "back" in page
    r = client.post("/instances/launch/", {"name": "onback", "image": str(world.image.pk), "flavor": world.flavor.pk,
                                           "network": str(nets[1].pk), "count": 1})
    assert r.status_code == 302
    vm = Instance.objects.get(name="onback")
    port = Port.objects.get(device_id=str(vm.id))
    assert port.network_id == nets[1].pk
    assert port.fixed_ips.get().ip_address.startswith("10.20.0.")


def test_console_button_redirects_to_a_one_time_novnc_url(client, world, vm):
    client.force_login(world.member)
    assert 'data-testid="vnc"' in client.get(f"/instances/{vm.pk}/").content.decode()
    r = client.get(f"/instances/{vm.pk}/vnc/")
    assert r.status_code == 302 and "vnc_lite.html?path=%3Ftoken%3D" in r["Location"]


def test_keypair_pages(client, world):
    client.force_login(world.member)
    r = client.post("/instances/keypairs/", {"name": "k1", "public_key": ""})
    assert r.status_code == 200 and "OPENSSH PRIVATE KEY" in r.content.decode()
    assert "k1" in client.get("/instances/keypairs/").content.decode()
    client.post("/instances/keypairs/k1/delete/")
    assert not world.member.keypairs.exists()


def test_admin_host_and_flavor_pages(client, world):
    from apps.hosts.models import Host

    make_host()
    client.force_login(world.member)
    assert client.get("/instances/hosts/").status_code == 403
    client.force_login(world.admin)
    page = client.get("/instances/hosts/").content.decode()
    assert 'data-host="node1"' in page and "progress-bar" in page
    assert "forced down" not in page
    Host.objects.filter(hostname="node1").update(forced_down=True, state="down")
    assert "forced down" in client.get("/instances/hosts/").content.decode()
    client.post("/instances/hosts/node1/toggle/", {"reason": "maintenance"})
    assert Host.objects.get(hostname="node1").status == "disabled"
    client.post("/instances/hosts/node1/toggle/", {"enable": "1"})
    assert Host.objects.get(hostname="node1").status == "enabled"
    fields = {"name": "x1", "vcpus": 1, "ram": 64, "disk": 1, "ephemeral": 2, "swap": 512, "is_public": "on"}
    r = client.post("/instances/flavors/", {**fields, "ram": 2**31})
    assert r.status_code == 200 and "less than or equal to 2147483647" in r.content.decode()  # the database's int
    r = client.post("/instances/flavors/", fields)
    assert r.status_code == 302
    from apps.instances.models import Flavor

    flavor = Flavor.objects.get(name="x1")
    assert (flavor.ephemeral, flavor.swap) == (2, 512)
    row = client.get("/instances/flavors/").content.decode().split('data-name="x1"')[1].split("</tr>")[0]
    assert "2 GB" in row and "512 MiB" in row
    launch = client.get("/instances/launch/").content.decode()
    assert "x1 (1 vCPU, 64 MiB RAM, 1 GB disk, 2 GB ephemeral, 512 MiB swap)" in launch
    client.post(f"/instances/flavors/{flavor.pk}/delete/")
    assert not Flavor.objects.filter(pk=flavor.pk).exists()


def test_overview_shows_the_tags(client, world, vm):
    client.force_login(world.member)
    assert 'data-testid="tags"' not in client.get(f"/instances/{vm.pk}/").content.decode()
    Instance.objects.filter(pk=vm.pk).update(vm_state=VmState.ACTIVE)
    services.instance_tags_replace(instance=vm, tags=["web", "<prod>"])
    page = client.get(f"/instances/{vm.pk}/").content.decode()
    assert 'data-testid="tags"><span class="badge text-bg-light border me-1 text-break">&lt;prod&gt;</span>' in page
    assert ">web</span>" in page


def test_admins_reset_a_stuck_instance_from_the_menu(client, world, vm):
    from apps.tenants.models import Role
    from apps.tenants.services import role_grant

    Instance.objects.filter(pk=vm.pk).update(task_state="rebooting")  # its host died mid-reboot
    client.force_login(world.member)
    page = client.get(f"/instances/{vm.pk}/").content.decode()
    assert 'data-action="reset_active"' not in page and 'data-action="stop"' not in page  # nothing while busy
    client.post(f"/instances/{vm.pk}/action/reset_active/")
    assert Instance.objects.get(pk=vm.pk).task_state == "rebooting"  # a member may not

    role_grant(user=world.admin, project=world.project, role=Role.ADMIN)
    client.force_login(world.admin)
    page = client.get(f"/instances/{vm.pk}/").content.decode()
    assert 'data-action="reset_active"' in page and 'data-action="reset_error"' in page
    assert "Reset vm1 to active with no task?" in page  # with a confirmation
    assert 'data-action="reset_error"' in client.get("/instances/").content.decode()  # the list's menus too
    r = client.post(f"/instances/{vm.pk}/action/reset_active/", follow=True)
    assert "Reset state to active: requested for vm1" in r.content.decode()
    vm.refresh_from_db()
    assert (vm.vm_state, vm.task_state) == (VmState.ACTIVE, None)
    assert ">resetState<" in client.get(f"/instances/{vm.pk}/overview/").content.decode()


def test_usage_page_shows_this_months_hours(client, world, vm):
    from datetime import UTC, timedelta

    from django.utils import timezone

    now = timezone.now()
    month_start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    Instance.objects.filter(pk=vm.pk).update(launched_at=max(month_start, now - timedelta(hours=2)))
    other = services.instance_create(user=world.outsider, project=world.other_project, name="theirs",
                                     flavor=world.flavor, image=world.image)
    Instance.objects.filter(pk=other.pk).update(launched_at=now - timedelta(hours=1))
    client.force_login(world.member)
    page = client.get("/instances/usage/").content.decode()
    assert f'data-id="{vm.pk}"' in page and "theirs" not in page
    assert f'href="/instances/{vm.pk}/"' in page
    assert 'data-testid="usage-servers">1<' in page
    hours = (now - max(month_start, now - timedelta(hours=2))).total_seconds() / 3600
    assert f'data-testid="usage-vcpu-hours">{hours * vm.vcpus:.2f}<' in page

    # Other days: the instance ran in none of last year's.
    last_year = now.year - 1
    page = client.get(f"/instances/usage/?start={last_year}-01-01&end={last_year}-12-31").content.decode()
    assert "No instance ran in this period." in page and 'data-testid="usage-servers">0<' in page
    page = client.get(f"/instances/usage/?start={last_year}-12-31&end={last_year}-01-01").content.decode()
    assert "The start cannot come after the end." in page and "usage-table" not in page
