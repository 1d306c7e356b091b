"""The volume commands: thin doors on the same services (agents in-process on fake drivers)."""

import pytest
from django.core.management import CommandError, call_command

from apps.instances import services as compute
from apps.volumes.models import Backup, Snapshot, Volume, VolumeType
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def storage(fake_storage):
    return fake_storage


def run(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.fixture
def actor(world):
    make_host("node1")
    return ["--user", "alice", "--project", "alpha"]


def test_volume_lifecycle_through_the_commands(world, actor, storage):
    out = run("volume_create", "data", "--size", "1", "--wait", *actor)
    assert "available" in out
    volume = Volume.objects.get(name="data")
    vm = compute.instance_create(user=world.member, project=world.project, name="web", flavor=world.flavor,
                                 image=world.image)
    assert "/dev/vdb in-use" in run("volume_attach", "data", "web", "--wait", *actor)
    assert "2 GiB in-use" in run("volume_extend", "data", "2", "--wait", *actor)
    assert "available" in run("snapshot_create", "data", "--name", "s1", "--force", "--wait", *actor)
    assert "available" in run("backup_create", "data", "--name", "b1", "--force", "--wait", *actor)
    assert "available" in run("volume_detach", "data", str(vm.pk), "--wait", *actor)
    listed = run("volume_list", *actor)
    assert str(volume.pk) in listed and "2GiB available" in listed
    assert "restored" in run("backup_restore", "b1", "--name", "restored", "--wait", *actor)
    assert Volume.objects.get(name="restored").status == "available"
    with pytest.raises(CommandError, match="have snapshots"):
        run("volume_delete", "data", *actor)
    run("volume_delete", "data", "--cascade", "--wait", *actor)
    assert not Volume.objects.filter(pk=volume.pk).exists() and not Snapshot.objects.exists()
    assert Backup.objects.count() == 1


def test_a_failure_is_a_command_error_with_the_reason(world, actor, storage):
    storage.fail_next("volume_create", "the pool is full")
    with pytest.raises(CommandError, match="error: create volume: the pool is full"):
        run("volume_create", "doomed", "--size", "1", "--wait", *actor)
    with pytest.raises(CommandError, match="needs --size"):
        run("volume_create", "empty", *actor)


def test_volume_type_create(world):
    out = run("volume_type_create", "thin", "--backend", "lvm", "--multiattach")
    vtype = VolumeType.objects.get(name="thin")
    assert vtype.backend == "lvm" and vtype.multiattach and "thin" in out
    with pytest.raises(CommandError, match="already exists"):
        run("volume_type_create", "thin")
