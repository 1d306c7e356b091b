"""The fake compute driver forgets what a destroyed domain had, as the libvirt driver's destroy
(undefine, instance directory removed) leaves nothing behind: no hot-plugged volume survives it."""

import pytest

from agents.compute.fake import FakeDriver
from agents.specs import VolumeAttachSpec, VolumeConnection
from agents.storage.volumes import reset_volume_driver
from agents.storage.volumes.fake import FakeVolumeDriver
from apps.instances import services as compute
from apps.instances.models import Instance
from apps.volumes import services
from apps.volumes.models import Volume
from apps.volumes.states import VolumeStatus
from tests.unit.conftest import make_host

INSTANCE = "6f1c2a8e-0000-4000-8000-000000000001"
VOLUME = "6f1c2a8e-0000-4000-8000-0000000000aa"


def attach_spec(instance_id: str, volume_id: str, device: str) -> VolumeAttachSpec:
    return VolumeAttachSpec(instance_id=instance_id, volume_id=volume_id, device=device,
                            connection=VolumeConnection(driver="file", path=f"/fake/volume-{volume_id}.qcow2",
                                                        format="qcow2"))


def test_destroy_forgets_the_instances_attached_volumes(fake_driver: FakeDriver):
    other = "6f1c2a8e-0000-4000-8000-000000000002"
    for instance_id in (INSTANCE, other):
        fake_driver.set_power_state(instance_id, 1)
        fake_driver.volume_attach(attach_spec(instance_id, VOLUME, "vdb"))
    fake_driver.destroy(INSTANCE)
    assert INSTANCE not in fake_driver.attached_volumes
    assert fake_driver.attached_volumes[other] == {VOLUME: "vdb"}  # only the destroyed one's
    # A domain of the same id defined again starts with no volumes: vdb is free for another.
    fake_driver.set_power_state(INSTANCE, 1)
    fake_driver.volume_attach(attach_spec(INSTANCE, "6f1c2a8e-0000-4000-8000-0000000000bb", "vdb"))
    assert fake_driver.attached_volumes[INSTANCE] == {"6f1c2a8e-0000-4000-8000-0000000000bb": "vdb"}


@pytest.mark.django_db(transaction=True)
def test_deleting_a_server_leaves_no_volume_on_its_fake_domain(world, fake_driver):
    """Through the services: a server deleted with a volume hot-attached keeps the volume
    (available again) and its destroyed domain keeps no trace of it."""
    reset_volume_driver(FakeVolumeDriver(hostname="node1"))
    try:
        make_host("node1")
        vm = compute.instance_create(user=world.member, project=world.project, name="vm1", flavor=world.flavor,
                                     image=world.image)
        volume = services.volume_create(user=world.member, project=world.project, size=1)
        services.volume_attach(volume=Volume.objects.get(pk=volume.pk), instance=Instance.objects.get(pk=vm.pk),
                               user=world.member)
        assert fake_driver.attached_volumes[str(vm.pk)] == {str(volume.pk): "vdb"}
        compute.instance_delete(instance=Instance.objects.get(pk=vm.pk), user=world.member)
        assert ("destroy", str(vm.pk)) in fake_driver.calls
        assert str(vm.pk) not in fake_driver.attached_volumes
        assert Volume.objects.get(pk=volume.pk).status == VolumeStatus.AVAILABLE
    finally:
        reset_volume_driver()
