"""The instance lifecycle through the service layer, agents in-process on the fake driver."""

import pytest

from apps.instances import services
from apps.instances.models import Instance
from apps.instances.selectors import instance_console_log
from apps.instances.states import PowerState, TaskState, VmState
from apps.tenants.models import Quota
from apps.tenants.services import quota_set
from cloudmgr.exceptions import NotFound, QuotaExceeded, ValidationError
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)


def create(world, name="vm1", **kwargs):
    return services.instance_create(
        user=world.member, project=world.project, name=name, flavor=kwargs.pop("flavor", world.flavor),
        image=kwargs.pop("image", world.image), **kwargs,
    )


def usage(project):
    return {q.resource: q.in_use for q in Quota.objects.filter(project=project)}


def test_create_spawns_on_the_host_and_becomes_active(world, fake_driver):
    host = make_host()
    instance = create(world)
    instance.refresh_from_db()
    assert instance.host == host
    assert (instance.vm_state, instance.task_state, instance.power_state) == (VmState.ACTIVE, None, PowerState.RUNNING)
    assert instance.launched_at is not None
    assert fake_driver.list_domains() == {str(instance.id): PowerState.RUNNING}
    assert list(instance.actions.values_list("action", "result")) == [("create", "Success")]
    assert usage(world.project)["instances"] == 1 and usage(world.project)["ram"] == 128


def test_spawn_failure_puts_the_instance_in_error_with_a_readable_fault(world, fake_driver):
    make_host()
    fake_driver.fail_next_spawn("qemu-img: disk is unhappy")
    instance = create(world)
    instance.refresh_from_db()
    assert (instance.vm_state, instance.task_state) == (VmState.ERROR, None)
    assert "qemu-img: disk is unhappy" in instance.faults.first().message
    assert fake_driver.list_domains() == {}


def test_no_host_with_room_gives_error_no_valid_host(world):
    make_host(memory_mib=64)
    instance = create(world)
    instance.refresh_from_db()
    assert instance.vm_state == VmState.ERROR and instance.host is None
    assert "No valid host" in instance.faults.first().message


def test_delete_destroys_the_domain_and_frees_quota(world, fake_driver):
    make_host()
    instance = create(world)
    services.instance_delete(instance=Instance.objects.get(pk=instance.pk), user=world.member)
    instance.refresh_from_db()
    assert instance.vm_state == VmState.DELETED and instance.deleted_at is not None
    assert fake_driver.list_domains() == {}
    assert usage(world.project) == {k: 0 for k in usage(world.project)}
    with pytest.raises(NotFound):
        services.instance_delete(instance=instance, user=world.member)


def test_delete_from_error_and_from_build(world, fake_driver):
    make_host(memory_mib=64)
    never_placed = create(world, name="no-room")
    services.instance_delete(instance=Instance.objects.get(pk=never_placed.pk), user=world.member)
    assert Instance.objects.get(pk=never_placed.pk).vm_state == VmState.DELETED

    make_host("node2")
    building = Instance.objects.create(
        project=world.project, user=world.member, name="b", flavor=world.flavor, image=world.image,
        vcpus=1, memory_mib=128, root_gb=1, host=make_host("node3"), task_state=TaskState.SPAWNING,
    )
    services.instance_delete(instance=building, user=world.member)
    assert Instance.objects.get(pk=building.pk).vm_state == VmState.DELETED


def test_spawn_result_after_delete_sends_destroy_again(world, fake_driver):
    """The destroy may have run before the spawn on the host: the late spawn result must not
    leave a domain behind nor revive the instance."""
    host = make_host()
    instance = Instance.objects.create(
        project=world.project, user=world.member, name="late", flavor=world.flavor, image=world.image,
        vcpus=1, memory_mib=128, root_gb=1, host=host, task_state=TaskState.DELETING,
    )
    fake_driver.spawn(services._domain_spec(instance))  # the spawn that raced the delete
    services.instance_spawn_done(result={"instance_id": str(instance.id), "ok": True, "power_state": 1})
    instance.refresh_from_db()
    assert instance.vm_state == VmState.DELETED
    assert fake_driver.list_domains() == {}


def test_quota_exceeded_is_refused_before_anything_is_recorded(world):
    make_host()
    quota_set(project=world.project, resource="instances", limit=1)
    create(world, name="one")
    with pytest.raises(QuotaExceeded, match="instances"):
        create(world, name="two")
    assert Instance.objects.filter(project=world.project).count() == 1


def test_bad_input_is_a_validation_error(world):
    make_host()
    with pytest.raises(ValidationError):
        create(world, name="   ")
    world.image.min_ram = 4096
    with pytest.raises(ValidationError, match="memory"):
        create(world)


@pytest.mark.parametrize("disk_format", ["vmdk", "vdi", "vhd", "vhdx", "iso"])
def test_an_image_hosts_cannot_boot_is_refused_with_a_clear_error(world, disk_format):
    """Hosts boot qcow2 and raw; anything else is a 400 up front, not an ERROR from the host."""
    make_host()
    world.image.disk_format = disk_format
    world.image.save(update_fields=["disk_format"])
    with pytest.raises(ValidationError, match=f"disk format {disk_format}.*CLOUDMGR_IMAGE_CONVERT_TO"):
        create(world)
    assert not Instance.objects.filter(project=world.project).exists()


def test_console_log_comes_from_the_host(world):
    make_host()
    instance = create(world)
    assert "CLOUDMGR_TESTVM_BOOTED" in instance_console_log(instance=Instance.objects.get(pk=instance.pk))
