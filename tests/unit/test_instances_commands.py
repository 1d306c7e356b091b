"""The lifecycle commands, on the fake driver."""

import pytest
from django.core.management import CommandError, call_command

from apps.instances import services
from apps.instances.models import Flavor, Instance
from apps.instances.states import VmState
from apps.tenants.models import Role
from apps.tenants.services import role_grant
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args):
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def vm(world):
    make_host()
    role_grant(user=world.member, project=world.project, role=Role.MEMBER)
    return services.instance_create(user=world.member, project=world.project, name="vm1", flavor=world.flavor,
                                    image=world.image)


def actor(world):
    return ["--user", world.member.username, "--project", world.project.name]


def test_each_lifecycle_command(world, vm):
    sid, who = str(vm.pk), actor(world)
    assert "SHUTOFF" in run("instance_stop", sid, "--wait", *who)
    assert "ACTIVE" in run("instance_start", sid, "--wait", *who)
    assert "ACTIVE" in run("instance_reboot", sid, "--hard", "--wait", *who)
    assert "PAUSED" in run("instance_pause", sid, "--wait", *who)
    assert "ACTIVE" in run("instance_unpause", sid, "--wait", *who)
    assert "SUSPENDED" in run("instance_suspend", sid, "--wait", *who)
    assert "ACTIVE" in run("instance_resume", sid, "--wait", *who)
    Flavor.objects.create(id="43", name="m1.micro", vcpus=1, ram=192, disk=1)
    assert "VERIFY_RESIZE" in run("instance_resize", sid, "m1.micro", "--wait", *who)
    assert "ACTIVE" in run("instance_resize_confirm", sid, *who)
    assert "ACTIVE" in run("instance_rebuild", sid, "--wait", *who)
    assert "RESCUE" in run("instance_rescue", sid, "--wait", *who)
    assert "ACTIVE" in run("instance_unrescue", sid, "--wait", *who)
    assert "ACTIVE" in run("instance_trigger_crash_dump", sid, *who)
    assert vm.actions.filter(action="trigger_crash_dump", result="Success").exists()
    run("instance_lock", sid, *who)
    with pytest.raises(CommandError, match="locked"):
        run("instance_stop", sid, *who)
    run("instance_unlock", sid, *who)
    assert Instance.objects.get(pk=vm.pk).vm_state == VmState.ACTIVE


def test_instance_reset_state_command(world, vm):
    sid = str(vm.pk)
    Instance.objects.filter(pk=vm.pk).update(task_state="rebooting")
    with pytest.raises(CommandError, match="reset_state"):
        run("instance_reset_state", sid, "--state", "active", *actor(world))
    admin = ["--user", world.admin.username, "--project", world.project.name]
    role_grant(user=world.admin, project=world.project, role=Role.ADMIN)
    assert "ERROR" in run("instance_reset_state", sid, "--state", "error", *admin)
    assert "ACTIVE" in run("instance_reset_state", sid, "--state", "active", *admin)
    assert Instance.objects.get(pk=vm.pk).task_state is None
    assert vm.actions.filter(action="resetState", result="Success").count() == 2
    with pytest.raises(CommandError):
        run("instance_reset_state", sid, "--state", "building", *admin)


def test_instance_create_command_takes_a_description(world, vm):
    run("instance_create", "described", "--flavor", world.flavor.name, "--image", world.image.name,
        "--description", "made by a command", *actor(world))
    assert Instance.objects.get(name="described").description == "made by a command"
    with pytest.raises(CommandError, match="description"):
        run("instance_create", "bad", "--flavor", world.flavor.name, "--image", world.image.name,
            "--description", "x" * 256, *actor(world))
