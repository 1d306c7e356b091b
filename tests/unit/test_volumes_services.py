"""The block storage services with the agents in-process on fake drivers: lifecycles, allow-lists,
quotas, failures that leave a visible status with a reason, and the compute side (attach,
detach, boot from volume, delete on termination)."""

import pytest

from apps.images.models import Image
from apps.instances import services as compute
from apps.instances.models import Instance
from apps.instances.states import VmState
from apps.tenants.models import Quota
from apps.tenants.services import quota_set
from apps.volumes import selectors, services
from apps.volumes.models import Attachment, Backup, Message, Snapshot, Transfer, Volume
from apps.volumes.states import AttachStatus, BackupStatus, SnapshotStatus, VolumeStatus
from cloudmgr.exceptions import InvalidState, NotFound, PermissionDenied, QuotaExceeded, ValidationError
from tests.unit.conftest import fresh

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def storage(fake_storage):
    """The storage agent in-process on the fake backend; node1 is storage and compute host."""
    return fake_storage


def usage(project) -> dict[str, int]:
    return {q.resource: q.in_use for q in Quota.objects.filter(project=project)}


def make(world, size=1, **kwargs) -> Volume:
    return fresh(services.volume_create(user=world.member, project=world.project, size=size, **kwargs))


def server(world, name="vm1") -> Instance:
    instance = compute.instance_create(user=world.member, project=world.project, name=name, flavor=world.flavor,
                                       image=world.image)
    return Instance.objects.select_related("host", "project").get(pk=instance.pk)


def messages(obj) -> list[str]:
    return list(Message.objects.filter(resource_uuid=obj.pk).values_list("user_message", flat=True))


# --- create, delete ---------------------------------------------------------------------------


def test_an_empty_volume_is_created_on_the_storage_host_and_counted(world, host, storage):
    volume = make(world, size=2, name="data", metadata={"k": "v"})
    assert volume.status == VolumeStatus.AVAILABLE
    assert volume.host == host and volume.backend == "file" and volume.volume_type.name == "__DEFAULT__"
    assert storage.volumes[str(volume.pk)].size_gb == 2
    assert usage(world.project)["volumes"] == 1 and usage(world.project)["gigabytes"] == 2
    services.volume_delete(volume=volume, user=world.member)
    assert not Volume.objects.filter(pk=volume.pk).exists()
    assert str(volume.pk) not in storage.volumes
    assert usage(world.project)["volumes"] == 0 and usage(world.project)["gigabytes"] == 0


def test_a_volume_from_an_image_is_bootable_and_keeps_the_images_metadata(world, host, storage):
    world.image.properties = {"os_distro": "busybox"}
    world.image.save()
    volume = make(world, image=world.image)  # 64 MiB virtual: 1 GiB
    assert volume.status == VolumeStatus.AVAILABLE and volume.bootable and volume.size == 1
    assert volume.image_metadata["image_id"] == str(world.image.pk)
    assert volume.image_metadata["os_distro"] == "busybox"
    assert storage.volumes[str(volume.pk)].source == f"image:{world.image.pk}"


def test_an_image_larger_than_the_volume_is_refused(world, host):
    world.image.virtual_size = 3 * 1024**3
    world.image.save()
    with pytest.raises(ValidationError, match="Image virtual size is 3GB and doesn't fit in a volume of size 2GB"):
        make(world, size=2, image=world.image)
    assert usage(world.project)["volumes"] == 0


def test_a_failed_create_ends_in_error_with_the_reason_and_keeps_its_quota_until_deleted(world, host, storage):
    storage.fail_next("volume_create", "the pool is full")
    volume = make(world, size=3)
    assert volume.status == VolumeStatus.ERROR
    assert messages(volume) == ["create volume: the pool is full"]
    assert str(volume.pk) not in storage.volumes
    assert usage(world.project)["gigabytes"] == 3
    services.volume_delete(volume=volume, user=world.member)
    assert not Volume.objects.filter(pk=volume.pk).exists() and usage(world.project)["gigabytes"] == 0


def test_without_a_storage_host_the_volume_is_in_error_saying_so(world):
    volume = make(world)
    assert volume.status == VolumeStatus.ERROR and volume.host is None
    assert "No valid backend was found" in messages(volume)[0]
    services.volume_delete(volume=volume, user=world.member)  # nothing on any host: gone at once
    assert usage(world.project)["volumes"] == 0


def test_a_delete_that_fails_leaves_error_deleting_and_can_be_retried(world, host, storage):
    volume = make(world)
    storage.fail_next("volume_delete", "device busy")
    services.volume_delete(volume=volume, user=world.member)
    assert fresh(volume).status == VolumeStatus.ERROR_DELETING
    assert "delete volume: device busy" in messages(volume)
    with pytest.raises(InvalidState):
        services.volume_delete(volume=fresh(volume), user=world.member)
    with pytest.raises(PermissionDenied):
        services.volume_delete(volume=fresh(volume), user=world.member, force=True)
    services.volume_delete(volume=fresh(volume), user=world.admin, force=True)
    assert not Volume.objects.filter(pk=volume.pk).exists()


def test_quotas_refuse_what_would_exceed_them(world, host):
    quota_set(project=world.project, resource="gigabytes", limit=5)
    make(world, size=4)
    with pytest.raises(QuotaExceeded, match="gigabytes"):
        make(world, size=2)
    quota_set(project=world.project, resource="volumes", limit=1)
    with pytest.raises(QuotaExceeded, match="volumes"):
        make(world, size=1)


# --- snapshots, clones ------------------------------------------------------------------------


def test_snapshots_and_volumes_made_from_them_and_from_volumes(world, host, storage):
    volume = make(world, size=2)
    snapshot = fresh(services.snapshot_create(volume=volume, user=world.member, name="s1"))
    assert snapshot.status == SnapshotStatus.AVAILABLE and snapshot.size == 2
    assert usage(world.project)["snapshots"] == 1 and usage(world.project)["gigabytes"] == 4
    from_snapshot = make(world, size=None, snapshot=snapshot)
    assert from_snapshot.size == 2 and from_snapshot.snapshot_id == snapshot.pk
    assert storage.volumes[str(from_snapshot.pk)].source == f"snapshot:{snapshot.pk}"
    with pytest.raises(ValidationError, match="cannot be smaller than the snapshot size 2GB"):
        make(world, size=1, snapshot=snapshot)
    clone = make(world, size=3, source_volume=volume)
    assert clone.status == VolumeStatus.AVAILABLE and storage.volumes[str(clone.pk)].source == f"volume:{volume.pk}"
    with pytest.raises(ValidationError, match="at most one source"):
        make(world, snapshot=snapshot, source_volume=volume)


def test_deleting_a_volume_with_snapshots_needs_cascade(world, host, storage):
    volume = make(world)
    snapshot = services.snapshot_create(volume=volume, user=world.member)
    with pytest.raises(InvalidState, match="have snapshots"):
        services.volume_delete(volume=volume, user=world.member)
    services.volume_delete(volume=fresh(volume), user=world.member, cascade=True)
    assert not Volume.objects.filter(pk=volume.pk).exists() and not Snapshot.objects.filter(pk=snapshot.pk).exists()
    assert storage.snapshots == {} and storage.volumes == {}
    assert usage(world.project)["snapshots"] == 0
    assert usage(world.project)["gigabytes"] == 0


def test_a_failed_snapshot_is_in_error_with_the_reason(world, host, storage):
    volume = make(world)
    storage.fail_next("snapshot_create", "no space for the snapshot")
    snapshot = fresh(services.snapshot_create(volume=volume, user=world.member))
    assert snapshot.status == SnapshotStatus.ERROR
    assert messages(snapshot) == ["create snapshot: no space for the snapshot"]
    services.snapshot_delete(snapshot=snapshot, user=world.member)
    assert usage(world.project)["snapshots"] == 0


# --- attach, detach ---------------------------------------------------------------------------


def test_attach_and_detach_through_the_one_service(world, host, storage, fake_driver):
    vm = server(world)
    volume = make(world)
    attachment = services.volume_attach(volume=volume, instance=vm, user=world.member)
    attachment = fresh(attachment)
    assert attachment.status == AttachStatus.ATTACHED and attachment.device == "/dev/vdb"
    assert attachment.connection == {"driver": "file", "path": f"/fake/volumes/volume-{volume.pk}.qcow2",
                                     "format": "qcow2", "host": None, "port": None, "export": None}
    assert fresh(volume).status == VolumeStatus.IN_USE
    assert fake_driver.attached_volumes[str(vm.pk)] == {str(volume.pk): "vdb"}
    # The server's domain spec now has the volume (a resize or rebuild keeps it attached).
    spec = compute._domain_spec(Instance.objects.select_related("host").get(pk=vm.pk))
    assert [(d.name, d.device) for d in spec.disks] == [("root", None), (str(volume.pk), "vdb")]
    with pytest.raises(InvalidState, match="attached"):
        services.volume_delete(volume=fresh(volume), user=world.member)
    services.volume_detach(attachment=attachment, user=world.member)
    assert fresh(volume).status == VolumeStatus.AVAILABLE and not Attachment.objects.exists()
    assert fake_driver.attached_volumes[str(vm.pk)] == {}
    assert ("volume_unexport", str(volume.pk)) in storage.calls


def test_the_next_attachment_takes_the_next_device(world, host):
    vm = server(world)
    first, second = make(world), make(world)
    services.volume_attach(volume=first, instance=vm, user=world.member)
    assert services.volume_attach(volume=second, instance=vm, user=world.member).device == "/dev/vdc"
    with pytest.raises(InvalidState, match="already attached"):
        services.volume_attach(volume=fresh(first), instance=vm, user=world.member)


def test_a_failed_hot_plug_leaves_the_volume_available_with_the_reason(world, host, fake_driver):
    vm = server(world)
    volume = make(world)
    fake_driver.fail_next("volume_attach", "libvirt said no")
    services.volume_attach(volume=volume, instance=vm, user=world.member)
    assert fresh(volume).status == VolumeStatus.AVAILABLE and not Attachment.objects.exists()
    assert messages(volume) == [f"attach volume: server {vm.pk}: libvirt said no"]


def test_a_guest_that_keeps_the_disk_leaves_it_attached_with_the_reason(world, host, fake_driver):
    vm = server(world)
    volume = make(world)
    attachment = services.volume_attach(volume=volume, instance=vm, user=world.member)
    fake_driver.fail_next("volume_detach", "the guest did not release vdb within 30 s")
    services.volume_detach(attachment=fresh(attachment), user=world.member)
    assert fresh(volume).status == VolumeStatus.IN_USE and fresh(attachment).status == AttachStatus.ATTACHED
    assert "did not release vdb" in messages(volume)[0]


def test_multiattach_only_when_the_type_allows_it(world, host):
    one, two = server(world, "vm1"), server(world, "vm2")
    volume = make(world)
    services.volume_attach(volume=volume, instance=one, user=world.member)
    with pytest.raises(InvalidState, match="multiattach"):
        services.volume_attach(volume=fresh(volume), instance=two, user=world.member)
    shared = services.volume_type_create(name="shared", extra_specs={"multiattach": "<is> True"})
    volume = make(world, volume_type=shared)
    assert volume.multiattach
    services.volume_attach(volume=volume, instance=one, user=world.member)
    services.volume_attach(volume=fresh(volume), instance=two, user=world.member)
    assert fresh(volume).status == VolumeStatus.IN_USE and volume.attachments.count() == 2
    services.volume_detach(attachment=Attachment.objects.get(volume=volume, instance=one), user=world.member)
    assert fresh(volume).status == VolumeStatus.IN_USE  # still on vm2


def test_attach_needs_a_server_in_a_state_that_allows_it(world, host):
    vm = server(world)
    compute.instance_pause(instance=vm, user=world.member)
    compute.instance_suspend(instance=Instance.objects.select_related("host").get(pk=vm.pk), user=world.member)
    with pytest.raises(InvalidState, match="vm_state suspended"):
        services.volume_attach(volume=make(world), instance=Instance.objects.select_related("host").get(pk=vm.pk),
                               user=world.member)


# --- extend -----------------------------------------------------------------------------------


def test_extend_an_available_and_an_attached_volume(world, host, storage, fake_driver):
    volume = make(world)
    with pytest.raises(ValidationError, match="must be greater than current size"):
        services.volume_extend(volume=volume, user=world.member, new_size=1)
    services.volume_extend(volume=volume, user=world.member, new_size=2)
    assert (fresh(volume).size, fresh(volume).status) == (2, VolumeStatus.AVAILABLE)
    vm = server(world)
    services.volume_attach(volume=fresh(volume), instance=vm, user=world.member)
    with pytest.raises(InvalidState, match="in-use"):
        services.volume_extend(volume=fresh(volume), user=world.member, new_size=3)  # before 3.42
    services.volume_extend(volume=fresh(volume), user=world.member, new_size=3, in_use=True)
    assert (fresh(volume).size, fresh(volume).status) == (3, VolumeStatus.IN_USE)
    assert ("volume_resized", str(vm.pk)) in fake_driver.calls  # the guest is told
    assert storage.volumes[str(volume.pk)].size_gb == 3 and usage(world.project)["gigabytes"] == 3


def test_a_failed_extend_gives_back_the_quota(world, host, storage):
    volume = make(world)
    storage.fail_next("volume_extend", "the pool is full")
    services.volume_extend(volume=volume, user=world.member, new_size=4)
    assert (fresh(volume).size, fresh(volume).status) == (1, VolumeStatus.ERROR_EXTENDING)
    assert usage(world.project)["gigabytes"] == 1 and messages(volume) == ["extend volume: the pool is full"]


# --- backups ----------------------------------------------------------------------------------


def test_full_and_incremental_backups_restore_and_delete(world, host, storage):
    volume = make(world, size=2)
    with pytest.raises(InvalidState, match="No backups available"):
        services.backup_create(volume=volume, user=world.member, incremental=True)
    full = fresh(services.backup_create(volume=volume, user=world.member, name="full"))
    assert full.status == BackupStatus.AVAILABLE and fresh(volume).status == VolumeStatus.AVAILABLE
    incremental = fresh(services.backup_create(volume=fresh(volume), user=world.member, incremental=True))
    assert incremental.parent_id == full.pk
    assert storage.backups[str(incremental.pk)]["parent_id"] == str(full.pk)
    assert usage(world.project)["backups"] == 2
    with pytest.raises(InvalidState, match="Incremental backups exist"):
        services.backup_delete(backup=full, user=world.member)
    # Restore into a new volume, then into an existing one.
    restored = fresh(services.backup_restore(backup=incremental, user=world.member, project=world.project))
    assert restored.status == VolumeStatus.AVAILABLE and restored.size == 2
    assert storage.volumes[str(restored.pk)].size_gb == 2 and usage(world.project)["volumes"] == 2
    services.backup_restore(backup=fresh(full), user=world.member, project=world.project, volume=restored)
    assert fresh(restored).status == VolumeStatus.AVAILABLE and fresh(full).status == BackupStatus.AVAILABLE
    small = make(world, size=1)
    with pytest.raises(InvalidState, match="too small"):
        services.backup_restore(backup=fresh(full), user=world.member, project=world.project, volume=small)
    services.backup_delete(backup=fresh(incremental), user=world.member)
    services.backup_delete(backup=fresh(full), user=world.member)
    assert not Backup.objects.exists() and storage.backups == {} and usage(world.project)["backups"] == 0


def test_an_attached_volume_is_backed_up_from_a_temporary_snapshot(world, host, storage):
    vm = server(world)
    volume = make(world)
    services.volume_attach(volume=volume, instance=vm, user=world.member)
    with pytest.raises(InvalidState, match="force"):
        services.backup_create(volume=fresh(volume), user=world.member)
    backup = fresh(services.backup_create(volume=fresh(volume), user=world.member, force=True))
    assert backup.status == BackupStatus.AVAILABLE and fresh(volume).status == VolumeStatus.IN_USE
    assert [op for op, _ in storage.calls[-3:]] == ["snapshot_create", "backup_create", "snapshot_delete"]
    assert not Snapshot.objects.exists() and storage.snapshots == {}
    assert usage(world.project)["snapshots"] == 0


def test_a_failed_backup_says_why_and_the_volume_is_back(world, host, storage):
    volume = make(world)
    storage.fail_next("backup_create", "the backup store is full")
    backup = fresh(services.backup_create(volume=volume, user=world.member))
    assert backup.status == BackupStatus.ERROR and backup.fail_reason == "the backup store is full"
    assert fresh(volume).status == VolumeStatus.AVAILABLE


def test_a_failed_restore_leaves_error_restoring(world, host, storage):
    volume = make(world)
    backup = services.backup_create(volume=volume, user=world.member)
    storage.fail_next("backup_restore", "a chunk is corrupt")
    services.backup_restore(backup=fresh(backup), user=world.member, project=world.project, volume=fresh(volume))
    assert fresh(volume).status == VolumeStatus.ERROR_RESTORING
    assert "a chunk is corrupt" in messages(volume)[0]
    assert fresh(backup).status == BackupStatus.AVAILABLE


def test_revert_to_the_latest_snapshot_copies_it_back_through_a_temporary_backup(world, host, storage):
    volume = make(world)
    old = services.snapshot_create(volume=volume, user=world.member)
    latest = services.snapshot_create(volume=fresh(volume), user=world.member)
    with pytest.raises(InvalidState, match="not the latest"):
        services.volume_revert(volume=fresh(volume), snapshot=fresh(old), user=world.member)
    services.volume_revert(volume=fresh(volume), snapshot=fresh(latest), user=world.member)
    assert fresh(volume).status == VolumeStatus.AVAILABLE
    assert [op for op, _ in storage.calls[-3:]] == ["backup_create", "backup_restore", "backup_delete"]
    assert not Backup.objects.exists() and usage(world.project)["backups"] == 0


# --- transfers --------------------------------------------------------------------------------


def test_a_transfer_moves_the_volume_and_its_quota(world, host):
    volume = make(world, size=2)
    services.snapshot_create(volume=volume, user=world.member)
    transfer, key = services.transfer_create(volume=fresh(volume), user=world.member, name="gift")
    assert fresh(volume).status == VolumeStatus.AWAITING_TRANSFER
    assert key not in fresh(transfer).key_hash and len(key) == 16
    with pytest.raises(ValidationError, match="invalid auth key"):
        services.transfer_accept(transfer=transfer, auth_key="wrong", user=world.outsider,
                                 project=world.other_project)
    services.transfer_accept(transfer=transfer, auth_key=key, user=world.outsider, project=world.other_project)
    moved = fresh(volume)
    assert moved.project == world.other_project and moved.status == VolumeStatus.AVAILABLE
    assert Snapshot.objects.get(volume=moved).project == world.other_project
    assert usage(world.project)["volumes"] == 0 and usage(world.project)["gigabytes"] == 0
    assert (usage(world.other_project)["volumes"], usage(world.other_project)["gigabytes"],
            usage(world.other_project)["snapshots"]) == (1, 4, 1)
    assert not Transfer.objects.exists()
    with pytest.raises(NotFound):
        selectors.volume_get(user=world.member, project=world.project, volume_id=volume.pk)


def test_a_deleted_transfer_gives_the_volume_back(world, host):
    volume = make(world)
    transfer, _ = services.transfer_create(volume=volume, user=world.member)
    services.transfer_delete(transfer=transfer)
    assert fresh(volume).status == VolumeStatus.AVAILABLE


# --- boot from volume -------------------------------------------------------------------------


def bfv(world, delete_on_termination: bool, name="bfv") -> Instance:
    devices = [{"source_type": "image", "source": world.image, "boot_index": 0, "volume_size": 1,
                "delete_on_termination": delete_on_termination, "device_name": None, "volume_type": None}]
    instance = compute.instance_create(user=world.member, project=world.project, name=name, flavor=world.flavor,
                                       image=None, block_devices=devices)
    return Instance.objects.select_related("host", "project").get(pk=instance.pk)


@pytest.mark.parametrize("delete_on_termination", [True, False])
def test_boot_from_a_volume_made_from_an_image(world, host, storage, fake_driver, delete_on_termination):
    vm = bfv(world, delete_on_termination)
    assert vm.vm_state == VmState.ACTIVE and vm.image_id is None and vm.root_gb == 0
    volume = selectors.server_boot_volume(instance=vm)
    assert volume.status == VolumeStatus.IN_USE and volume.bootable
    root = fake_driver.specs[str(vm.pk)].disks[0]
    assert root.name == "root" and root.image is None and root.connection.path.endswith(f"{volume.pk}.qcow2")
    assert selectors.servers_volumes(instance_ids=[vm.pk]) == {str(vm.pk): [(str(volume.pk), delete_on_termination)]}
    with pytest.raises(ValidationError, match="root device"):
        services.volume_detach(attachment=Attachment.objects.get(volume=volume), user=world.member)
    # Rebuilt (Nova before 2.93): the guest is made afresh on the same volume, with its own image only.
    other = Image.objects.create(project=world.project, name="other", status=world.image.status,
                                 disk_format="qcow2", visibility="public", size=1 << 20)
    with pytest.raises(ValidationError, match="Unable to rebuild with a different image for a volume-backed server"):
        compute.instance_rebuild(instance=vm, image=other, user=world.member)
    fake_driver.calls.clear()
    compute.instance_rebuild(instance=vm, image=world.image, user=world.member, name="bfv-rebuilt")
    rebuilt = Instance.objects.get(pk=vm.pk)
    assert (rebuilt.vm_state, rebuilt.task_state, rebuilt.name, rebuilt.image_id) == (
        VmState.ACTIVE, None, "bfv-rebuilt", None)
    assert [call[0] for call in fake_driver.calls] == ["rebuild"]
    assert fake_driver.specs[str(vm.pk)].disks[0] == root and fresh(volume).status == VolumeStatus.IN_USE
    with pytest.raises(ValidationError, match="Cannot rescue a volume-backed instance"):
        compute.instance_rescue(instance=rebuilt, user=world.member)
    vm = Instance.objects.select_related("host", "project").get(pk=vm.pk)
    with pytest.raises(ValidationError, match="Backup is not supported for volume-backed instances"):
        compute.instance_create_backup(instance=vm, user=world.member, name="b", backup_type="daily", rotation=1)
    compute.instance_delete(instance=vm, user=world.member)
    if delete_on_termination:
        assert not Volume.objects.filter(pk=volume.pk).exists() and str(volume.pk) not in storage.volumes
    else:
        assert fresh(volume).status == VolumeStatus.AVAILABLE and not Attachment.objects.exists()


def test_a_delete_on_termination_volume_with_snapshots_outlives_its_server(world, host, storage, fake_driver):
    """Cinder refuses to delete a volume with snapshots, and Nova then leaves it: so is it here,
    available, its snapshot usable, and a message tells the user why."""
    vm = bfv(world, True)
    volume = selectors.server_boot_volume(instance=vm)
    snapshot = services.snapshot_create(volume=volume, user=world.member, force=True)
    assert fresh(snapshot).status == SnapshotStatus.AVAILABLE
    compute.instance_delete(instance=vm, user=world.member)
    kept = fresh(volume)
    assert kept.status == VolumeStatus.AVAILABLE and not Attachment.objects.exists()
    assert str(volume.pk) in storage.volumes and fresh(snapshot).status == SnapshotStatus.AVAILABLE
    assert messages(volume) == [(f"delete volume: server {vm.pk} was deleted, but the volume has snapshots or "
                                 "a backup in progress")]


@pytest.mark.database  # JSON key lookups on the image's properties
def test_an_image_of_a_server_booted_from_a_volume_maps_snapshots_and_boots_a_copy(world, host, storage,
                                                                                   fake_driver):
    """Nova's createImage of a volume-backed server: a snapshot of each volume, an image without
    data that maps them; a server booted from the image boots from volumes made from them."""
    import json

    from apps.images.models import Image

    vm = bfv(world, True)
    data = services.volume_create(user=world.member, project=world.project, size=2, name="data")
    services.volume_attach(volume=data, instance=vm, user=world.member)
    image = compute.instance_create_image(instance=fresh(vm), user=world.member, name="golden",
                                          metadata={"purpose": "copies"})
    image = Image.objects.get(pk=image.pk)
    assert (image.status, image.size, image.disk_format, image.visibility) == ("active", 0, "raw", "private")
    props = image.properties
    assert (props["bdm_v2"], props["root_device_name"], props["image_type"], props["instance_uuid"],
            props["purpose"]) == ("True", "/dev/vda", "snapshot", str(vm.pk), "copies")
    mapping = json.loads(props["block_device_mapping"])
    snapshots = {m["boot_index"]: Snapshot.objects.get(pk=m["snapshot_id"]) for m in mapping}
    assert {i: (s.volume_id, s.status) for i, s in snapshots.items()} == {
        0: (selectors.server_boot_volume(instance=vm).pk, "available"), None: (data.pk, "available")}
    assert [(m["device_name"], m["volume_size"]) for m in sorted(mapping, key=lambda m: m["boot_index"] is None)] == [
        ("/dev/vda", 1), ("/dev/vdb", 2)]
    after = fresh(vm)
    assert (after.vm_state, after.task_state) == (VmState.ACTIVE, None)
    assert after.actions.get(action="createImage").result == "Success"

    copy = compute.instance_create(user=world.member, project=world.project, name="copy", flavor=world.flavor,
                                   image=image)
    copy = fresh(copy)
    assert (copy.vm_state, copy.image_id, copy.root_gb) == (VmState.ACTIVE, None, 0)
    made = {a.boot_index: a.volume for a in Attachment.objects.filter(instance=copy).select_related("volume")}
    assert made[0].snapshot_id == snapshots[0].pk and made[None].snapshot_id == snapshots[None].pk
    assert (made[0].size, made[None].size, made[0].status) == (1, 2, "in-use")
    root, second = fake_driver.specs[str(copy.pk)].disks
    assert (root.name, root.image, second.device) == ("root", None, "vdb")
    with pytest.raises(ValidationError, match="maps volume snapshots"):
        services.volume_create(user=world.member, project=world.project, size=1, image=image)


def test_a_failed_snapshot_fails_the_image_of_a_server_booted_from_a_volume(world, host, storage, fake_driver):
    from apps.images.models import Image

    vm = bfv(world, True)
    storage.fail_next("snapshot_create", "the disk is full")
    image = compute.instance_create_image(instance=fresh(vm), user=world.member, name="golden")
    assert Image.objects.get(pk=image.pk).status == "deleted"
    after = fresh(vm)
    assert (after.vm_state, after.task_state) == (VmState.ACTIVE, None)
    assert after.actions.get(action="createImage").result == "Error"
    assert "snapshot of the server's volumes failed" in after.faults.get().message


def test_deleting_a_server_discards_the_image_it_was_still_making(world, host, storage, fake_driver):
    """The snapshots were still being made (here: put back to that state) when the server went."""
    from apps.images.models import Image
    from apps.instances.states import TaskState

    vm = bfv(world, False)
    image = compute.instance_create_image(instance=fresh(vm), user=world.member, name="unfinished")
    Image.objects.filter(pk=image.pk).update(status="queued")
    Instance.objects.filter(pk=vm.pk).update(task_state=TaskState.IMAGE_SNAPSHOT)
    kept = compute.instance_create_image(instance=fresh(server(world, name="other")), user=world.member, name="kept")
    compute.instance_delete(instance=fresh(vm), user=world.member)
    assert not Image.objects.filter(pk=image.pk).exists()
    assert Image.objects.filter(pk=kept.pk).exists()


def test_a_server_booted_from_a_volume_resizes_its_cpus_and_memory(world, host, storage, fake_driver):
    """Nova's resize of a volume-backed server: its root disk stays the volume; the flavor's disk is not used."""
    from apps.instances.models import Flavor

    vm = bfv(world, True)
    volume = selectors.server_boot_volume(instance=vm)
    bigger = Flavor.objects.create(id="43", name="m1.micro", vcpus=2, ram=world.flavor.ram * 2, disk=0)
    compute.instance_resize(instance=vm, flavor=bigger, user=world.member)
    resized = fresh(vm)
    assert (resized.vm_state, resized.vcpus, resized.memory_mib, resized.root_gb) == (
        VmState.RESIZED, 2, world.flavor.ram * 2, 0)
    (root,) = fake_driver.specs[str(vm.pk)].disks  # still its volume, on the same connection
    assert (root.name, root.image, root.connection.path) == ("root", None, f"/fake/volumes/volume-{volume.pk}.qcow2")
    assert fake_driver.specs[str(vm.pk)].memory_mib == world.flavor.ram * 2
    compute.instance_resize_revert(instance=resized, user=world.member)
    reverted = fresh(vm)
    assert (reverted.vm_state, reverted.vcpus, reverted.root_gb) == (VmState.ACTIVE, world.flavor.vcpus, 0)
    assert fake_driver.specs[str(vm.pk)].disks[0].connection is not None
    assert fresh(volume).size == 1


def test_a_boot_volume_that_cannot_be_made_fails_the_server_with_the_reason(world, host, storage):
    storage.fail_next("volume_create", "the image is corrupt")
    vm = bfv(world, True)
    assert vm.vm_state == VmState.ERROR
    assert "the image is corrupt" in vm.faults.first().message


def test_deleting_a_server_keeps_its_hot_attached_volumes(world, host):
    vm = server(world)
    volume = make(world)
    services.volume_attach(volume=volume, instance=vm, user=world.member)
    compute.instance_delete(instance=vm, user=world.member)
    assert fresh(volume).status == VolumeStatus.AVAILABLE and not Attachment.objects.exists()


# --- types ------------------------------------------------------------------------------------


def test_types_name_a_backend_and_cannot_change_under_their_volumes(world, host):
    with pytest.raises(ValidationError, match="volume_backend_name"):
        services.volume_type_create(name="bad", extra_specs={"volume_backend_name": "ceph"})
    lvm = services.volume_type_create(name="thin", extra_specs={"volume_backend_name": "lvm"})
    volume = make(world, volume_type=lvm)
    assert volume.backend == "lvm"
    with pytest.raises(ValidationError, match="cannot change"):
        services.volume_type_extra_specs_set(vtype=lvm, specs={"volume_backend_name": "file"})
    with pytest.raises(ValidationError, match="still in use"):
        services.volume_type_delete(vtype=lvm)
    with pytest.raises(ValidationError, match="Default volume type"):
        services.volume_type_delete(vtype=services.volume_type_default_ensure())


def test_reset_status_sets_the_record_only(world, host, storage):
    storage.fail_next("volume_create", "boom")
    volume = make(world)
    services.volume_reset_status(volume=volume, status="available")
    assert fresh(volume).status == VolumeStatus.AVAILABLE
    with pytest.raises(ValidationError):
        services.volume_reset_status(volume=volume, status="bogus")
