"""changePassword: the host's QEMU guest agent sets the password of the image's admin user while
the caller waits (fake driver; the real guest agent runs in tests/e2e/test_compute_password.py)."""

import pytest

from apps.images.models import Image
from apps.instances import services
from apps.instances.states import TaskState, VmState
from cloudmgr.exceptions import InvalidState, ValidationError
from tests.unit.conftest import make_host
from tests.unit.test_instances_actions import act, api, create, fresh

pytestmark = pytest.mark.django_db(transaction=True)


def agent_image(world, **properties):
    Image.objects.filter(pk=world.image.pk).update(
        properties={**world.image.properties, "hw_qemu_guest_agent": "yes", **properties})
    world.image.refresh_from_db()


def test_the_guest_agent_sets_the_admin_password(world, fake_driver):
    make_host()
    agent_image(world)
    vm = create(world)
    assert fake_driver.specs[str(vm.id)].guest_agent is True  # the domain has the agent's channel
    c = api(world, world.member)
    resp = act(c, str(vm.id), {"changePassword": {"adminPass": "n3w:Secret"}})
    assert resp.status_code == 202, resp.content
    assert fake_driver.passwords[str(vm.id)] == ("root", "n3w:Secret")
    after = fresh(vm)
    assert (after.vm_state, after.task_state) == (VmState.ACTIVE, None)
    action = after.actions.get(action="changePassword")
    assert action.result == "Success"
    assert list(action.events.values_list("event", "result")) == [("compute_set_admin_password", "Success")]


@pytest.mark.parametrize("properties,user", [({"os_admin_user": "debian"}, "debian"),
                                             ({"os_type": "windows"}, "Administrator")])
def test_the_admin_user_comes_from_the_image(world, fake_driver, properties, user):
    make_host()
    agent_image(world, **properties)
    vm = create(world)
    services.instance_change_password(instance=fresh(vm), user=world.member, password="pw")
    assert fake_driver.passwords[str(vm.id)] == (user, "pw")


def test_an_image_without_the_guest_agent_is_409(world, fake_driver):
    make_host()
    vm = create(world)
    assert fake_driver.specs[str(vm.id)].guest_agent is False
    resp = act(api(world, world.member), str(vm.id), {"changePassword": {"adminPass": "pw"}})
    assert resp.status_code == 409
    assert "QEMU guest agent is not enabled" in resp.json()["conflictingRequest"]["message"]
    assert not fresh(vm).actions.filter(action="changePassword").exists()


def test_a_guest_whose_domain_lacks_the_channel_fails_with_the_hosts_reason(world, fake_driver):
    """The property was set after the guest started: its domain has no channel (libvirt says so)."""
    make_host()
    vm = create(world)
    agent_image(world)
    resp = act(api(world, world.member), str(vm.id), {"changePassword": {"adminPass": "Zq9-hidden"}})
    assert resp.status_code == 409
    assert "QEMU guest agent is not configured" in resp.json()["conflictingRequest"]["message"]
    after = fresh(vm)
    assert after.task_state is None
    action = after.actions.get(action="changePassword")
    fault = after.faults.get().message
    assert action.result == "Error" and "QEMU guest agent is not configured" in fault
    assert "Zq9-hidden" not in fault + action.message + resp.content.decode()


def test_refusals(world, fake_driver):
    make_host()
    agent_image(world)
    vm = create(world)
    sid = str(vm.id)
    member = api(world, world.member)
    for body, status in [({"changePassword": {}}, 400), ({"changePassword": {"adminPass": 5}}, 400),
                         ({"changePassword": {"adminPass": "a\nroot:b"}}, 400),
                         ({"changePassword": {"adminPass": "x", "other": 1}}, 400),
                         ({"changePassword": None}, 400)]:
        assert act(member, sid, body).status_code == status, body
    assert act(api(world, world.reader), sid, {"changePassword": {"adminPass": "x"}}).status_code == 403
    services.instance_stop(instance=fresh(vm), user=world.member)
    with pytest.raises(InvalidState, match="vm_state stopped"):
        services.instance_change_password(instance=fresh(vm), user=world.member, password="x")
    with pytest.raises(ValidationError, match="must be a string"):
        services.instance_change_password(instance=fresh(vm), user=world.member, password=None)
    assert str(vm.id) not in fake_driver.passwords and fresh(vm).task_state != TaskState.UPDATING_PASSWORD


def test_the_command_reads_the_password_from_stdin(world, fake_driver, monkeypatch):
    import io

    from django.core.management import CommandError, call_command

    make_host()
    agent_image(world)
    vm = create(world)
    who = ["--user", world.member.username, "--project", world.project.name]
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin: yes\n"))
    out = io.StringIO()
    call_command("instance_change_password", str(vm.id), *who, stdout=out)
    assert "password set" in out.getvalue()
    assert fake_driver.passwords[str(vm.id)] == ("root", "from stdin: yes")
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    with pytest.raises(CommandError, match="No password given"):
        call_command("instance_change_password", str(vm.id), *who)


def test_the_portal_password_tab(client, world, fake_driver):
    make_host()
    plain = create(world, "plain")
    client.force_login(world.member)
    assert 'id="password-form"' not in client.get(f"/instances/{plain.id}/").content.decode()
    r = client.post(f"/instances/{plain.id}/password/", {"password": "x", "confirm": "x"}, follow=True)
    assert "QEMU guest agent is not enabled" in r.content.decode()
    agent_image(world)
    vm = create(world)
    assert 'id="password-form"' in client.get(f"/instances/{vm.id}/").content.decode()
    r = client.post(f"/instances/{vm.id}/password/", {"password": "a b:c", "confirm": "a b:c"}, follow=True)
    assert "was changed" in r.content.decode()
    assert fake_driver.passwords[str(vm.id)] == ("root", "a b:c")
    r = client.post(f"/instances/{vm.id}/password/", {"password": "one", "confirm": "two"}, follow=True)
    assert "The two passwords differ." in r.content.decode() and fake_driver.passwords[str(vm.id)][1] == "a b:c"
    client.force_login(world.reader)
    assert 'id="password-form"' not in client.get(f"/instances/{vm.id}/").content.decode()
    client.post(f"/instances/{vm.id}/password/", {"password": "r", "confirm": "r"})
    assert fake_driver.passwords[str(vm.id)][1] == "a b:c"


def test_a_broker_failure_leaves_no_task_state(world, fake_driver, monkeypatch):
    make_host()
    agent_image(world)
    vm = create(world)

    def broken(**kwargs):
        raise ConnectionError("the broker is gone")

    monkeypatch.setattr(services, "agent_call", broken)
    with pytest.raises(ConnectionError):
        services.instance_change_password(instance=fresh(vm), user=world.member, password="x")
    after = fresh(vm)
    assert after.task_state is None and after.actions.get(action="changePassword").result == "Error"
