"""Shelve and unshelve: the root disk kept as an image, the host left and found again."""

import pytest

from apps.images.models import Image, ImageStatus
from apps.instances import services
from apps.instances.models import Instance
from apps.instances.states import PowerState, VmState, api_status
from apps.networks import services as network_services
from apps.networks.models import Port
from cloudmgr.exceptions import InvalidState
from tests.unit.conftest import make_host
from tests.unit.test_instances_actions import act, api, create, fresh, states, usage

pytestmark = pytest.mark.django_db(transaction=True)


def uploaded(image):
    """The fake host uploads no data: make the shelved image what a real upload leaves."""
    Image.objects.filter(pk=image.pk).update(status=ImageStatus.ACTIVE, size=1 << 20, virtual_size=1 << 30)


def private_network(world):
    network = network_services.network_create(user=world.member, project=world.project, name="private")
    network_services.subnet_create(user=world.member, project=world.project, network=network, cidr="10.0.0.0/24")


def shelve(world, vm):
    services.instance_shelve(instance=fresh(vm), user=world.member)
    image = fresh(vm).shelved_image
    uploaded(image)
    return Image.objects.get(pk=image.pk)


def test_shelve_uploads_the_disk_and_leaves_the_host_then_unshelve_boots_from_it(world, fake_driver, net):
    host = make_host(vcpus=1, memory_mib=world.flavor.ram)  # room for exactly one server
    private_network(world)
    vm = create(world)
    [port] = Port.objects.filter(device_id=str(vm.id))
    address = port.fixed_ips.get().ip_address
    assert str(port.pk) in net.ports
    assert fresh(vm).host == host
    quota_before = usage(world.project)

    services.instance_shelve(instance=vm, user=world.member)
    shelved = fresh(vm)
    assert states(vm) == (VmState.SHELVED_OFFLOADED, None, PowerState.NOSTATE)
    assert api_status(shelved.vm_state) == "SHELVED_OFFLOADED"
    assert shelved.host is None
    image = shelved.shelved_image
    assert (image.name, image.status, image.project) == ("vm1-shelved", ImageStatus.QUEUED, world.project)
    assert {k: image.properties[k] for k in ("image_type", "instance_uuid", "base_image_ref")} == {
        "image_type": "snapshot", "instance_uuid": str(vm.id), "base_image_ref": str(world.image.pk)}
    calls = [op for op, iid in fake_driver.calls if iid == str(vm.id)]
    assert calls[-3:] == ["stop", "snapshot", "destroy"] and str(vm.id) not in fake_driver.domains
    assert fake_driver.uploads[-1].endswith(f"/image/v2/images/{image.pk}/file")
    assert usage(world.project) == quota_before  # a shelved server still counts (Nova)
    port = Port.objects.get(pk=port.pk)  # kept, with its address, unbound: its host dropped its filter
    assert (port.host, port.status, port.fixed_ips.get().ip_address) == (None, "DOWN", address)
    assert str(port.pk) not in net.ports
    shelve_action = shelved.actions.get(action="shelve")
    assert shelve_action.result == "Success"
    assert list(shelve_action.events.values_list("event", "result")) == [("compute_shelve_instance", "Success")]

    # Its room on the host is free: another server takes it, and the unshelve finds no host.
    uploaded(image)
    other = create(world, name="vm2")
    assert fresh(other).host == host
    services.instance_unshelve(instance=fresh(vm), user=world.member)
    assert states(vm) == (VmState.SHELVED_OFFLOADED, None, PowerState.NOSTATE)
    assert fresh(vm).host is None
    assert "No valid host" in fresh(vm).faults.order_by("-created_at").first().message
    assert fresh(vm).actions.get(action="unshelve").result == "Error"

    services.instance_delete(instance=fresh(other), user=world.member)
    services.instance_unshelve(instance=fresh(vm), user=world.member)
    back = fresh(vm)
    assert states(vm) == (VmState.ACTIVE, None, PowerState.RUNNING)
    assert back.host == host and back.shelved_image is None and back.image == world.image
    assert fake_driver.specs[str(vm.id)].disks[0].image.id == str(image.pk)  # booted from the shelved disk
    assert Image.objects.get(pk=image.pk).status == ImageStatus.DELETED
    port = Port.objects.get(pk=port.pk)
    assert (port.host, port.status, port.fixed_ips.get().ip_address) == (host, "ACTIVE", address)
    assert str(port.pk) in net.ports
    unshelve = back.actions.filter(action="unshelve").order_by("-created_at").first()
    assert unshelve.result == "Success"
    assert list(unshelve.events.values_list("event", "host")) == [("compute_unshelve_instance", host.hostname)]


def test_shelve_from_each_allowed_state_and_the_refusals(world, fake_driver):
    make_host()
    for action in (None, services.instance_stop, services.instance_pause, services.instance_suspend):
        vm = create(world, name=f"from-{action.__name__ if action else 'active'}")
        if action:
            action(instance=vm, user=world.member)
        services.instance_shelve(instance=fresh(vm), user=world.member)
        assert states(vm)[:2] == (VmState.SHELVED_OFFLOADED, None), vm.name
    vm = fresh(vm)
    with pytest.raises(InvalidState, match="Cannot 'shelve' instance .* vm_state shelved_offloaded"):
        services.instance_shelve(instance=vm, user=world.member)
    with pytest.raises(InvalidState, match="Cannot 'start' instance"):
        services.instance_start(instance=vm, user=world.member)
    active = create(world, name="active")
    with pytest.raises(InvalidState, match="Cannot 'unshelve' instance .* vm_state active"):
        services.instance_unshelve(instance=active, user=world.member)
    services.instance_rescue(instance=active, user=world.member)
    with pytest.raises(InvalidState, match="Cannot 'shelve' instance .* vm_state rescued"):
        services.instance_shelve(instance=fresh(active), user=world.member)


def test_a_failed_shelve_keeps_the_server_and_discards_the_image(world, fake_driver):
    make_host()
    vm = create(world)
    fake_driver.fail_next("snapshot", "disk on fire")
    services.instance_shelve(instance=vm, user=world.member)
    after = fresh(vm)
    # the guest was stopped before the upload failed: it stays, stopped, on its host
    assert states(vm) == (VmState.STOPPED, None, PowerState.SHUTDOWN)
    assert after.host is not None and after.shelved_image is None
    assert not Image.objects.filter(name="vm1-shelved").exclude(status=ImageStatus.DELETED).exists()
    assert "disk on fire" in after.faults.first().message
    assert after.actions.get(action="shelve").result == "Error"
    services.instance_start(instance=after, user=world.member)
    assert states(vm)[:2] == (VmState.ACTIVE, None)


def test_a_failed_unshelve_spawn_leaves_it_shelved(world, fake_driver, net):
    make_host()
    private_network(world)
    vm = create(world)
    image = shelve(world, vm)
    fake_driver.fail_next_spawn("no space left on device")
    services.instance_unshelve(instance=fresh(vm), user=world.member)
    after = fresh(vm)
    assert states(vm) == (VmState.SHELVED_OFFLOADED, None, PowerState.NOSTATE)
    assert after.host is None and after.shelved_image == image
    port = Port.objects.get(device_id=str(vm.id))
    assert port.host is None and str(port.pk) not in net.ports
    assert "no space left on device" in after.faults.order_by("-created_at").first().message
    assert Image.objects.get(pk=image.pk).status == ImageStatus.ACTIVE  # kept for the next try
    services.instance_unshelve(instance=after, user=world.member)
    assert states(vm)[:2] == (VmState.ACTIVE, None)


def test_unshelve_needs_the_shelved_image(world, fake_driver):
    make_host()
    vm = create(world)
    image = shelve(world, vm)
    Image.objects.filter(pk=image.pk).update(status=ImageStatus.DELETED)
    with pytest.raises(InvalidState, match="its shelved image is gone"):
        services.instance_unshelve(instance=fresh(vm), user=world.member)


def test_deleting_a_shelved_server_deletes_its_image_and_frees_its_quota(world, fake_driver):
    make_host()
    vm = create(world)
    before = usage(world.project)
    image = shelve(world, vm)
    services.instance_delete(instance=fresh(vm), user=world.member)
    assert Instance.objects.get(pk=vm.pk).deleted_at is not None
    assert Image.objects.get(pk=image.pk).status == ImageStatus.DELETED
    assert usage(world.project)["instances"] == before["instances"] - 1
    assert not Port.objects.filter(device_id=str(vm.id)).exists()


def attached_volume(world, vm, name="data"):
    from apps.volumes import services as volumes
    from apps.volumes.models import Volume

    volume = volumes.volume_create(user=world.member, project=world.project, size=1, name=name)
    volumes.volume_attach(volume=Volume.objects.get(pk=volume.pk), instance=fresh(vm), user=world.member)
    return Volume.objects.get(pk=volume.pk)


def test_a_server_keeps_its_volumes_through_shelve_and_unshelve_on_another_host(world, fake_driver, fake_storage):
    from apps.hosts.models import Host, HostStatus
    from apps.volumes.models import Attachment

    node1 = make_host("node1")  # the storage host too: its guests open the volume's file
    node2 = make_host("node2")
    Host.objects.filter(pk=node2.pk).update(status=HostStatus.DISABLED)
    vm = create(world)
    volume = attached_volume(world, vm)
    before = Attachment.objects.get(volume=volume)
    assert (before.host, before.device, before.connection["driver"]) == (node1, "/dev/vdb", "file")

    image = shelve(world, vm)
    assert states(vm) == (VmState.SHELVED_OFFLOADED, None, PowerState.NOSTATE)
    calls = [op for op, iid in fake_driver.calls if iid == str(vm.id)]
    assert calls[-3:] == ["stop", "snapshot", "destroy"]
    kept = Attachment.objects.get(pk=before.pk)  # still attached, its connection gone with the host
    assert (kept.status, kept.host, kept.connection, kept.device) == ("attached", None, None, "/dev/vdb")
    assert volume.__class__.objects.get(pk=volume.pk).status == "in-use"
    assert ("volume_unexport", str(volume.pk)) in fake_storage.calls

    # The server comes back on node2, another host than the storage host: an NBD export.
    Host.objects.filter(pk=node1.pk).update(status=HostStatus.DISABLED)
    Host.objects.filter(pk=node2.pk).update(status=HostStatus.ENABLED)
    services.instance_unshelve(instance=fresh(vm), user=world.member)
    back = fresh(vm)
    assert (back.vm_state, back.host) == (VmState.ACTIVE, node2)
    root, disk = fake_driver.specs[str(vm.id)].disks
    assert root.image.id == str(image.pk)
    assert (disk.name, disk.device, disk.connection.driver) == (str(volume.pk), "vdb", "nbd")
    again = Attachment.objects.get(pk=before.pk)
    assert (again.status, again.host, again.connection["driver"]) == ("attached", node2, "nbd")
    assert str(volume.pk) in fake_storage.exports

    # Shelved again, its NBD export stops: the next host may be the storage host itself.
    shelve(world, vm)
    assert str(volume.pk) not in fake_storage.exports
    assert Attachment.objects.get(pk=before.pk).connection is None


def test_a_server_booted_from_a_volume_shelves_without_an_image(world, fake_driver, fake_storage):
    from apps.volumes.models import Attachment, Volume

    make_host()
    vm = services.instance_create(user=world.member, project=world.project, name="bfv", flavor=world.flavor,
                                  image=None, block_devices=[{"boot_index": 0, "source": world.image, "volume_size": 1,
                                                              "delete_on_termination": True}])
    boot = Attachment.objects.get(instance=vm).volume
    images_before = Image.objects.count()
    services.instance_shelve(instance=fresh(vm), user=world.member)
    shelved = fresh(vm)
    assert (shelved.vm_state, shelved.host, shelved.shelved_image) == (VmState.SHELVED_OFFLOADED, None, None)
    assert Image.objects.count() == images_before  # its disk is the volume: nothing to upload
    calls = [op for op, iid in fake_driver.calls if iid == str(vm.id)]
    assert calls[-2:] == ["stop", "destroy"]
    assert Volume.objects.get(pk=boot.pk).status == "in-use"

    services.instance_unshelve(instance=shelved, user=world.member)
    assert fresh(vm).vm_state == VmState.ACTIVE
    (root,) = fake_driver.specs[str(vm.id)].disks
    assert (root.name, root.image, root.connection.driver) == ("root", None, "file")

    shelve_again = services.instance_shelve(instance=fresh(vm), user=world.member)
    services.instance_delete(instance=fresh(shelve_again), user=world.member)
    assert not Volume.objects.filter(pk=boot.pk).exclude(status="deleting").exists()  # delete_on_termination


def test_a_failed_unshelve_leaves_the_volumes_disconnected(world, fake_driver, fake_storage):
    from apps.volumes.models import Attachment

    make_host()
    vm = create(world)
    volume = attached_volume(world, vm)
    shelve(world, vm)
    fake_driver.fail_next_spawn("no room in the inn")
    services.instance_unshelve(instance=fresh(vm), user=world.member)
    after = fresh(vm)
    assert (after.vm_state, after.host) == (VmState.SHELVED_OFFLOADED, None)
    assert after.faults.order_by("-created_at").first().message == "no room in the inn"
    attachment = Attachment.objects.get(volume=volume)
    assert (attachment.status, attachment.connection, attachment.host) == ("attached", None, None)
    services.instance_unshelve(instance=after, user=world.member)
    assert fresh(vm).vm_state == VmState.ACTIVE
    assert Attachment.objects.get(volume=volume).connection is not None


def test_an_unshelve_waits_for_a_busy_volume(world, fake_driver, fake_storage):
    """A volume that is busy (here: being backed up) keeps the server shelved, and says why."""
    from apps.volumes.models import Volume

    make_host()
    vm = create(world)
    volume = attached_volume(world, vm)
    shelve(world, vm)
    Volume.objects.filter(pk=volume.pk).update(status="backing-up")
    services.instance_unshelve(instance=fresh(vm), user=world.member)
    after = fresh(vm)
    assert (after.vm_state, after.task_state, after.host) == (VmState.SHELVED_OFFLOADED, None, None)
    assert after.faults.order_by("-created_at").first().message == (
        f"Volume {volume.pk} is backing-up: the server cannot use it now.")
    Volume.objects.filter(pk=volume.pk).update(status="in-use")
    services.instance_unshelve(instance=after, user=world.member)
    assert fresh(vm).vm_state == VmState.ACTIVE


def test_volumes_attach_to_and_detach_from_a_shelved_server_from_2_20(world, fake_driver, fake_storage):
    from apps.volumes import services as volumes
    from apps.volumes.models import Attachment, Volume

    make_host()
    vm = create(world)
    shelve(world, vm)
    volume = Volume.objects.get(pk=attached_volume(world, create(world, "donor"), "spare").pk)
    volumes.volume_detach(attachment=Attachment.objects.get(volume=volume), user=world.member)
    assert Volume.objects.get(pk=volume.pk).status == "available"
    url = f"/compute/v2.1/servers/{vm.id}/os-volume_attachments"
    c = api(world, world.member)
    body = {"volumeAttachment": {"volumeId": str(volume.pk)}}

    c.credentials(HTTP_X_AUTH_TOKEN=world.token(world.member), HTTP_OPENSTACK_API_VERSION="compute 2.19")
    refused = c.post(url, body, format="json")
    assert refused.status_code == 409 and "2.20" in refused.json()["conflictingRequest"]["message"]

    c.credentials(HTTP_X_AUTH_TOKEN=world.token(world.member), HTTP_OPENSTACK_API_VERSION="compute 2.20")
    resp = c.post(url, body, format="json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["volumeAttachment"]["device"] == "/dev/vdb"
    attachment = Attachment.objects.get(volume=volume)  # recorded only: the server has no host
    assert (attachment.status, attachment.host, attachment.connection) == ("attached", None, None)
    assert Volume.objects.get(pk=volume.pk).status == "in-use"
    assert c.delete(f"{url}/{volume.pk}").status_code == 202
    assert Volume.objects.get(pk=volume.pk).status == "available" and not Attachment.objects.filter(
        volume=volume).exists()

    assert c.post(url, body, format="json").status_code == 200
    services.instance_unshelve(instance=fresh(vm), user=world.member)
    assert fresh(vm).vm_state == VmState.ACTIVE
    assert [d.name for d in fake_driver.specs[str(vm.id)].disks] == ["root", str(volume.pk)]


def test_shelve_and_unshelve_through_the_api(world, fake_driver):
    make_host()
    vm = create(world)
    sid = str(vm.id)
    reader = api(world, world.reader)
    assert act(reader, sid, {"shelve": None}).status_code == 403
    assert act(api(world, world.outsider, world.other_project), sid, {"shelve": None}).status_code == 404
    c = api(world, world.member)
    assert act(c, sid, {"shelve": None}).status_code == 202
    body = c.get(f"/compute/v2.1/servers/{sid}").json()["server"]
    assert (body["status"], body["OS-EXT-STS:vm_state"], body["OS-EXT-STS:task_state"]) == (
        "SHELVED_OFFLOADED", "shelved_offloaded", None)
    listed = c.get("/compute/v2.1/servers", {"status": "SHELVED_OFFLOADED"}).json()["servers"]
    assert [s["id"] for s in listed] == [sid]
    resp = act(c, sid, {"shelve": {}})
    assert resp.status_code == 409 and "vm_state shelved_offloaded" in resp.json()["conflictingRequest"]["message"]
    uploaded(fresh(vm).shelved_image)
    assert act(c, sid, {"unshelve": None}).status_code == 202
    assert c.get(f"/compute/v2.1/servers/{sid}").json()["server"]["status"] == "ACTIVE"
    events = c.get(f"/compute/v2.1/servers/{sid}/os-instance-actions").json()["instanceActions"]
    assert {"shelve", "unshelve"} <= {a["action"] for a in events}


def test_shelve_and_unshelve_commands(world, fake_driver):
    from io import StringIO

    from django.core.management import call_command

    make_host()
    vm = create(world)
    out = StringIO()
    call_command("instance_shelve", str(vm.id), "--user", world.member.username, "--project", world.project.name,
                 "--wait", stdout=out)
    assert out.getvalue().strip() == f"instance vm1 {vm.id} SHELVED_OFFLOADED"
    uploaded(fresh(vm).shelved_image)
    out = StringIO()
    call_command("instance_unshelve", str(vm.id), "--user", world.member.username, "--project", world.project.name,
                 "--wait", stdout=out)
    assert out.getvalue().strip() == f"instance vm1 {vm.id} ACTIVE"


def test_portal_offers_shelve_then_unshelve(world, fake_driver):
    from apps.instances.selectors import instance_allowed_actions

    make_host()
    vm = create(world)
    assert "shelve" in [key for key, _, _ in instance_allowed_actions(instance=vm)]
    shelve(world, vm)
    assert [key for key, _, _ in instance_allowed_actions(instance=fresh(vm))] == ["unshelve", "lock"]
