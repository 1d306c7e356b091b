"""Lifecycle actions through the service layer and the API: allow-lists, CAS, faults, actions."""

import pytest
from rest_framework.test import APIClient

from apps.hosts.models import Host
from apps.instances import services
from apps.instances.models import Flavor, Instance, Migration
from apps.images.models import Image, ImageStatus, Visibility
from apps.instances.selectors import host_usage
from apps.instances.states import PowerState, TaskState, VmState, api_status
from apps.tenants.models import Quota
from cloudmgr.exceptions import InvalidState, NoValidHost, ValidationError
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)


def create(world, name="vm1", user=None):
    instance = services.instance_create(user=user or world.member, project=world.project, name=name,
                                        flavor=world.flavor, image=world.image)
    return Instance.objects.select_related("host", "project", "flavor", "image").get(pk=instance.pk)


def fresh(instance):
    return Instance.objects.select_related("host", "project", "flavor", "image").get(pk=instance.pk)


def states(instance):
    i = fresh(instance)
    return i.vm_state, i.task_state, i.power_state


def usage(project):
    return {q.resource: q.in_use for q in Quota.objects.filter(project=project)}


@pytest.fixture
def vm(world):
    make_host()
    return create(world)


def test_stop_start(world, vm, fake_driver):
    services.instance_stop(instance=vm, user=world.member)
    assert states(vm) == (VmState.STOPPED, None, PowerState.SHUTDOWN)
    assert api_status(VmState.STOPPED) == "SHUTOFF"
    services.instance_start(instance=fresh(vm), user=world.member)
    assert states(vm) == (VmState.ACTIVE, None, PowerState.RUNNING)
    actions = list(fresh(vm).actions.order_by("created_at").values_list("action", "result"))
    assert actions == [("create", "Success"), ("stop", "Success"), ("start", "Success")]
    stop = fresh(vm).actions.get(action="stop")
    assert list(stop.events.values_list("event", "result")) == [("compute_stop_instance", "Success")]


def test_allow_list_refuses_with_a_clear_message(world, vm):
    with pytest.raises(InvalidState, match="Cannot 'start' instance .* vm_state active"):
        services.instance_start(instance=vm, user=world.member)
    with pytest.raises(InvalidState, match="unpause"):
        services.instance_unpause(instance=vm, user=world.member)
    with pytest.raises(InvalidState, match="confirmResize"):
        services.instance_resize_confirm(instance=vm, user=world.member)


def test_compare_and_swap_refuses_a_second_action_in_progress(world, vm):
    Instance.objects.filter(pk=vm.pk).update(task_state=TaskState.POWERING_OFF)
    stale = vm  # still thinks task_state is None
    assert stale.task_state is None
    with pytest.raises(InvalidState, match="task_state powering-off"):
        services.instance_reboot(instance=stale, user=world.member)


def test_reboot_soft_and_hard(world, vm, fake_driver):
    services.instance_reboot(instance=vm, user=world.member)
    services.instance_reboot(instance=fresh(vm), user=world.member, hard=True)
    assert states(vm) == (VmState.ACTIVE, None, PowerState.RUNNING)
    assert fake_driver.boots[str(vm.id)] == 3
    services.instance_stop(instance=fresh(vm), user=world.member)
    with pytest.raises(InvalidState):
        services.instance_reboot(instance=fresh(vm), user=world.member)  # SOFT only from ACTIVE
    services.instance_reboot(instance=fresh(vm), user=world.member, hard=True)
    assert states(vm) == (VmState.ACTIVE, None, PowerState.RUNNING)


def test_pause_unpause_suspend_resume(world, vm):
    services.instance_pause(instance=vm, user=world.member)
    assert states(vm) == (VmState.PAUSED, None, PowerState.PAUSED)
    services.instance_unpause(instance=fresh(vm), user=world.member)
    assert states(vm)[0] == VmState.ACTIVE
    services.instance_suspend(instance=fresh(vm), user=world.member)
    assert states(vm)[0] == VmState.SUSPENDED
    services.instance_resume(instance=fresh(vm), user=world.member)
    assert states(vm) == (VmState.ACTIVE, None, PowerState.RUNNING)


def test_failure_reverts_the_task_state_and_records_a_fault(world, vm, fake_driver):
    fake_driver.fail_next("stop", "the guest is stubborn")
    services.instance_stop(instance=vm, user=world.member)
    assert states(vm) == (VmState.ACTIVE, None, PowerState.RUNNING)
    assert "stubborn" in fresh(vm).faults.first().message
    action = fresh(vm).actions.get(action="stop")
    assert (action.result, action.events.get().result) == ("Error", "Error")


def test_lock_refuses_non_admins(world, vm):
    services.instance_lock(instance=vm, user=world.member)
    with pytest.raises(InvalidState, match="locked"):
        services.instance_stop(instance=fresh(vm), user=world.member)
    with pytest.raises(InvalidState, match="locked"):
        services.instance_delete(instance=fresh(vm), user=world.member)
    services.instance_stop(instance=fresh(vm), user=world.admin)  # admins may
    services.instance_unlock(instance=fresh(vm), user=world.member)
    services.instance_start(instance=fresh(vm), user=world.member)
    assert states(vm)[0] == VmState.ACTIVE


def test_resize_confirm_and_claims(world, vm, fake_driver):
    big = Flavor.objects.create(id="43", name="m1.micro", vcpus=2, ram=256, disk=2)
    services.instance_resize(instance=vm, flavor=big, user=world.member)
    i = fresh(vm)
    assert (i.vm_state, i.task_state, api_status(i.vm_state)) == (VmState.RESIZED, None, "VERIFY_RESIZE")
    assert (i.vcpus, i.memory_mib, i.root_gb, i.old_flavor_id) == (2, 256, 2, "42")
    assert fake_driver.specs[str(vm.id)].memory_mib == 256
    assert usage(world.project)["ram"] == 256 and usage(world.project)["cores"] == 2
    services.instance_resize_confirm(instance=i, user=world.member)
    i = fresh(vm)
    assert (i.vm_state, i.task_state, i.flavor_id, i.old_flavor_id) == (VmState.ACTIVE, None, "43", None)
    assert usage(world.project)["ram"] == 256


def test_resize_revert_goes_back(world, vm, fake_driver):
    big = Flavor.objects.create(id="43", name="m1.micro", vcpus=2, ram=256, disk=2)
    services.instance_resize(instance=vm, flavor=big, user=world.member)
    services.instance_resize_revert(instance=fresh(vm), user=world.member)
    i = fresh(vm)
    assert (i.vm_state, i.task_state, i.flavor_id, i.memory_mib) == (VmState.ACTIVE, None, "42", 128)
    assert fake_driver.specs[str(vm.id)].memory_mib == 128
    assert usage(world.project)["ram"] == 128 and usage(world.project)["cores"] == 1


def flavor_disks(spec) -> dict[str, tuple]:
    return {d.name: (d.size_gb, d.size_mib, d.fs) for d in spec.disks}


def test_the_flavors_ephemeral_and_swap_disks_through_create_resize_and_revert(world, fake_driver):
    host = make_host(disk_gb=20)
    small = Flavor.objects.create(id="e1", name="eph.small", vcpus=1, ram=128, disk=1, ephemeral=2, swap=512)
    big = Flavor.objects.create(id="e2", name="eph.big", vcpus=1, ram=128, disk=1, ephemeral=4, swap=1536)
    vm = fresh(services.instance_create(user=world.member, project=world.project, name="vm", flavor=small,
                                        image=world.image))
    assert (vm.vm_state, vm.ephemeral_gb, vm.swap_mb, vm.local_gb) == (VmState.ACTIVE, 2, 512, 1 + 2 + 1)
    assert flavor_disks(fake_driver.specs[str(vm.id)]) == {
        "root": (1, None, None), "ephemeral0": (2, None, "ext4"), "swap": (0, 512, "swap")}
    assert host_usage(host=host).disk_gb == 4

    services.instance_resize(instance=vm, flavor=big, user=world.member)
    i = fresh(vm)
    assert (i.ephemeral_gb, i.swap_mb, i.old_ephemeral_gb, i.old_swap_mb) == (4, 1536, 2, 512)
    assert flavor_disks(fake_driver.specs[str(vm.id)])["swap"] == (0, 1536, "swap")
    assert host_usage(host=host).disk_gb == 1 + 4 + 2
    services.instance_resize_revert(instance=i, user=world.member)
    i = fresh(vm)
    assert (i.flavor_id, i.ephemeral_gb, i.swap_mb, i.old_ephemeral_gb, i.old_swap_mb) == ("e1", 2, 512, None, None)
    assert flavor_disks(fake_driver.specs[str(vm.id)])["ephemeral0"] == (2, None, "ext4")
    assert host_usage(host=host).disk_gb == 4

    # An ephemeral disk cannot shrink (its filesystem would not fit); swap may go.
    with pytest.raises(ValidationError, match="smaller ephemeral disk"):
        services.instance_resize(instance=i, flavor=world.flavor, user=world.member)
    no_swap = Flavor.objects.create(id="e3", name="eph.noswap", vcpus=1, ram=128, disk=1, ephemeral=2)
    services.instance_resize(instance=i, flavor=no_swap, user=world.member)
    services.instance_resize_confirm(instance=fresh(vm), user=world.member)
    assert set(flavor_disks(fake_driver.specs[str(vm.id)])) == {"root", "ephemeral0"}
    assert host_usage(host=host).disk_gb == 3

    # A host's disk counts them: 20 GB holds five servers of 4 GB, not six.
    for n in range(4):
        services.instance_create(user=world.member, project=world.project, name=f"f{n}", flavor=small,
                                 image=world.image)
    last = services.instance_create(user=world.member, project=world.project, name="last", flavor=small,
                                    image=world.image)
    assert (fresh(last).vm_state, host_usage(host=host).disk_gb) == (VmState.ERROR, 3 + 16)


def migrations_of(instance) -> list[tuple[str, str, str]]:
    return list(Migration.objects.filter(instance=instance).values_list("status", "old_flavor_ref", "new_flavor_ref"))


def test_each_resize_keeps_a_migration_record(world, fake_driver):
    """Nova's os-migrations statuses: migrating, finished (VERIFY_RESIZE), then confirmed or
    reverting and reverted; error when the host fails; a delete confirms a finished one."""
    make_host()
    big = Flavor.objects.create(id="43", name="m1.micro", vcpus=2, ram=256, disk=2)
    confirmed, reverted, failed, deleted = (create(world, name=n) for n in ("c", "r", "f", "d"))
    services.instance_resize(instance=confirmed, flavor=big, user=world.member)
    assert migrations_of(confirmed) == [("finished", "42", "43")]
    services.instance_resize_confirm(instance=fresh(confirmed), user=world.member)
    assert migrations_of(confirmed) == [("confirmed", "42", "43")]
    services.instance_resize(instance=reverted, flavor=big, user=world.member)
    services.instance_resize_revert(instance=fresh(reverted), user=world.member)
    assert migrations_of(reverted) == [("reverted", "42", "43")]
    fake_driver.fail_next("resize", "no room for the disk")
    services.instance_resize(instance=failed, flavor=big, user=world.member)
    assert migrations_of(failed) == [("error", "42", "43")]
    services.instance_resize(instance=deleted, flavor=big, user=world.member)
    services.instance_delete(instance=fresh(deleted), user=world.member)
    assert migrations_of(deleted) == [("confirmed", "42", "43")]
    migration = Migration.objects.get(instance=confirmed)
    assert (migration.source_compute, migration.dest_compute, migration.migration_type) == ("node1", "node1", "resize")


def test_os_migrations_lists_them_for_admins(world, fake_driver):
    make_host()
    big = Flavor.objects.create(id="43", name="m1.micro", vcpus=2, ram=256, disk=2)
    first, second = create(world, name="a"), create(world, name="b")
    services.instance_resize(instance=first, flavor=big, user=world.member)
    services.instance_resize(instance=second, flavor=big, user=world.member)
    services.instance_resize_confirm(instance=fresh(second), user=world.member)
    admin = api(world, world.admin)
    listed = admin.get("/compute/v2.1/os-migrations").json()["migrations"]
    assert [(m["instance_uuid"], m["status"]) for m in listed] == [(str(second.id), "confirmed"),
                                                                   (str(first.id), "finished")]
    assert set(listed[0]) == {"id", "status", "instance_uuid", "source_compute", "source_node", "dest_compute",
                              "dest_node", "dest_host", "old_instance_type_id", "new_instance_type_id",
                              "created_at", "updated_at"}
    assert isinstance(listed[0]["id"], int) and listed[0]["old_instance_type_id"] == "42"
    typed = admin.get("/compute/v2.1/os-migrations", HTTP_OPENSTACK_API_VERSION="compute 2.23").json()
    assert {m["migration_type"] for m in typed["migrations"]} == {"resize"}
    for query, expected in [(f"instance_uuid={first.id}", 1), ("status=finished", 1), ("host=node1", 2),
                            ("host=other", 0), ("source_compute=node1", 2), ("migration_type=live-migration", 0),
                            ("instance_uuid=not-a-uuid", 0)]:
        assert len(admin.get(f"/compute/v2.1/os-migrations?{query}").json()["migrations"]) == expected, query
    assert api(world, world.member).get("/compute/v2.1/os-migrations").status_code == 403


def test_resize_refusals(world, vm):
    with pytest.raises(ValidationError, match="change flavor"):
        services.instance_resize(instance=vm, flavor=world.flavor, user=world.member)
    huge = Flavor.objects.create(id="44", name="huge", vcpus=1, ram=100_000, disk=1)
    Quota.objects.filter(project=world.project, resource="ram").update(limit=1_000_000)
    with pytest.raises(NoValidHost):
        services.instance_resize(instance=vm, flavor=huge, user=world.member)
    assert states(vm)[:2] == (VmState.ACTIVE, None)
    assert usage(world.project)["ram"] == 128  # the reservation rolled back


def test_rebuild(world, vm, fake_driver):
    services.instance_rebuild(instance=vm, image=world.image, user=world.member, name="renamed")
    i = fresh(vm)
    assert (i.vm_state, i.task_state, i.name) == (VmState.ACTIVE, None, "renamed")
    assert ("rebuild", str(vm.id)) in fake_driver.calls


def test_a_resize_holds_the_larger_flavor_until_confirmed_so_a_revert_has_room(world, fake_driver):
    host = make_host(vcpus=3, memory_mib=1024)
    big = Flavor.objects.create(id="b2", name="big", vcpus=2, ram=512, disk=1)
    vm = fresh(services.instance_create(user=world.member, project=world.project, name="vm", flavor=big,
                                        image=world.image))
    services.instance_resize(instance=vm, flavor=world.flavor, user=world.member)  # down to 1 vCPU, 128 MiB
    assert (fresh(vm).vcpus, host_usage(host=host).vcpus, host_usage(host=host).memory_mib) == (1, 2, 512)
    # The vCPU the resize gave up is not free yet: another 2-vCPU server does not fit beside it.
    other = services.instance_create(user=world.member, project=world.project, name="other", flavor=big,
                                     image=world.image)
    assert fresh(other).vm_state == VmState.ERROR
    services.instance_resize_revert(instance=fresh(vm), user=world.member)
    assert (fresh(vm).vcpus, host_usage(host=host).vcpus) == (2, 2)
    services.instance_resize(instance=fresh(vm), flavor=world.flavor, user=world.member)
    services.instance_resize_confirm(instance=fresh(vm), user=world.member)
    assert (host_usage(host=host).vcpus, host_usage(host=host).memory_mib) == (1, 128)  # now it is free


def test_a_rebuild_that_grows_the_root_disk_needs_room_on_the_host(world, fake_driver):
    host = make_host(disk_gb=2)
    any_disk = Flavor.objects.create(id="d0", name="any-disk", vcpus=1, ram=128, disk=0)  # the image's size
    vm = fresh(services.instance_create(user=world.member, project=world.project, name="vm", flavor=any_disk,
                                        image=world.image))
    assert (vm.root_gb, host_usage(host=host).disk_gb) == (1, 1)
    large = Image.objects.create(project=world.project, name="large", status=ImageStatus.ACTIVE, disk_format="qcow2",
                                 visibility=Visibility.PUBLIC, size=1 << 20, virtual_size=3 << 30)
    with pytest.raises(NoValidHost, match="has no room for the 3 GB root disk of image large"):
        services.instance_rebuild(instance=vm, image=large, user=world.member)
    assert (fresh(vm).vm_state, fresh(vm).task_state, fresh(vm).root_gb) == (VmState.ACTIVE, None, 1)
    Host.objects.filter(pk=host.pk).update(disk_gb=3)
    services.instance_rebuild(instance=fresh(vm), image=large, user=world.member)
    assert (fresh(vm).root_gb, host_usage(host=host).disk_gb) == (3, 3)


def test_delete_from_every_state(world, fake_driver):
    make_host()
    for prepare in ["stop", "pause", "suspend", "resize", None]:
        i = create(world, name=f"from-{prepare}")
        if prepare == "resize":
            big = Flavor.objects.get_or_create(id="43", defaults={
                "name": "m1.micro", "vcpus": 1, "ram": 192, "disk": 1})[0]
            services.instance_resize(instance=i, flavor=big, user=world.member)
        elif prepare:
            getattr(services, f"instance_{prepare}")(instance=i, user=world.member)
        services.instance_delete(instance=fresh(i), user=world.member)
        assert fresh(i).vm_state == VmState.DELETED, prepare
    # a task in progress does not stop a delete; the late result is ignored
    i = create(world, name="busy")
    Instance.objects.filter(pk=i.pk).update(task_state=TaskState.POWERING_OFF)
    services.instance_delete(instance=fresh(i), user=world.member)
    services.instance_operation_done(result={"instance_id": str(i.id), "ok": True, "operation": "stop",
                                             "power_state": 4})
    assert fresh(i).vm_state == VmState.DELETED
    assert fake_driver.list_domains() == {}
    assert usage(world.project) == {k: 0 for k in usage(world.project)}


def test_reconciler_fixes_a_guest_that_powered_itself_off(world, vm, fake_driver):
    other_cloud = "0b7a3c55-0000-4000-8000-000000000000"
    Instance.objects.filter(pk=vm.pk).update(updated_at=vm.updated_at.replace(year=2000))
    Host.objects.filter(pk=vm.host_id).update(domains={str(vm.id): PowerState.SHUTDOWN, other_cloud: 1})
    busy = create(world, name="busy")
    Instance.objects.filter(pk=busy.pk).update(task_state=TaskState.REBOOTING,
                                               updated_at=vm.updated_at.replace(year=2000))
    out = services.instances_reconcile()
    assert out["fixed"] == [str(vm.id)] and out["unknown"] == [other_cloud]
    assert states(vm) == (VmState.STOPPED, None, PowerState.SHUTDOWN)
    assert fresh(busy).task_state == TaskState.REBOOTING  # skipped: a task is in progress
    assert fake_driver.list_domains()  # nothing destroyed


# --- API ----------------------------------------------------------------------------------------


def api(world, user, project=None):
    c = APIClient()
    c.credentials(HTTP_X_AUTH_TOKEN=world.token(user, project))
    return c


def act(c, server_id, body):
    return c.post(f"/compute/v2.1/servers/{server_id}/action", body, format="json")


def test_api_actions(world, vm):
    c = api(world, world.member)
    sid = str(vm.id)
    assert act(c, sid, {"os-stop": None}).status_code == 202
    assert c.get(f"/compute/v2.1/servers/{sid}").json()["server"]["status"] == "SHUTOFF"
    resp = act(c, sid, {"os-stop": None})
    assert resp.status_code == 409
    assert "vm_state stopped" in resp.json()["conflictingRequest"]["message"]
    assert act(c, sid, {"os-start": None}).status_code == 202
    assert act(c, sid, {"reboot": {"type": "HARD"}}).status_code == 202
    assert act(c, sid, {"reboot": {"type": "sideways"}}).status_code == 400
    assert act(c, sid, {"pause": None}).status_code == 202
    assert c.get(f"/compute/v2.1/servers/{sid}").json()["server"]["status"] == "PAUSED"
    assert act(c, sid, {"unpause": None}).status_code == 202
    assert act(c, sid, {"suspend": None}).status_code == 202
    assert c.get(f"/compute/v2.1/servers/{sid}").json()["server"]["status"] == "SUSPENDED"
    assert act(c, sid, {"resume": None}).status_code == 202
    Flavor.objects.create(id="43", name="m1.micro", vcpus=1, ram=256, disk=1)
    assert act(c, sid, {"resize": {"flavorRef": "43"}}).status_code == 202
    assert c.get(f"/compute/v2.1/servers/{sid}").json()["server"]["status"] == "VERIFY_RESIZE"
    assert act(c, sid, {"confirmResize": None}).status_code == 204
    resp = act(c, sid, {"rebuild": {"imageRef": str(world.image.id)}})
    assert resp.status_code == 202 and resp.json()["server"]["id"] == sid
    assert act(c, sid, {"lock": None}).status_code == 202
    assert act(c, sid, {"os-stop": None}).status_code == 409
    assert act(c, sid, {"unlock": None}).status_code == 202
    assert act(c, sid, {"nonsense": None}).status_code == 400


def test_api_reader_cannot_act_and_other_project_is_404(world, vm):
    assert act(api(world, world.reader), str(vm.id), {"os-stop": None}).status_code == 403
    assert act(api(world, world.outsider, world.other_project), str(vm.id), {"os-stop": None}).status_code == 404


def test_create_image_queues_an_image_and_the_host_uploads_it(world, vm, fake_driver):
    from apps.images.models import Image

    c = api(world, world.member)
    resp = act(c, str(vm.id), {"createImage": {"name": "snap", "metadata": {"purpose": "test"}}})
    assert resp.status_code == 202
    image_id = resp["Location"].rsplit("/", 1)[1]
    image = Image.objects.get(pk=image_id)
    assert image.name == "snap" and image.properties["instance_uuid"] == str(vm.id)
    assert fake_driver.uploads == [f"http://testserver/image/v2/images/{image_id}/file"] or \
        fake_driver.uploads[0].endswith(f"/image/v2/images/{image_id}/file")
    assert states(vm)[:2] == (VmState.ACTIVE, None)


def test_create_image_uploads_with_a_ticket_for_that_image_only(world, vm, fake_driver):
    """The host gets an upload ticket, never the user's token: it can PUT this image's data and
    nothing else."""
    from apps.images import tickets

    image = services.instance_create_image(instance=vm, user=world.member, name="snap")
    ticket = fake_driver.upload_tokens[-1]
    assert tickets.ticket_image_id(ticket=ticket, action=tickets.UPLOAD) == str(image.pk)
    c = APIClient()
    resp = c.get("/compute/v2.1/servers", HTTP_X_AUTH_TOKEN=ticket)
    assert resp.status_code == 401


def test_create_image_failure_discards_the_image(world, vm, fake_driver):
    from apps.images.models import Image

    fake_driver.fail_next("snapshot", "disk on fire")
    image = services.instance_create_image(instance=vm, user=world.member, name="snap")
    assert not Image.objects.filter(pk=image.pk).exists()
    assert "disk on fire" in fresh(vm).faults.first().message
    assert states(vm)[:2] == (VmState.ACTIVE, None)


def backup(c, server_id, name, rotation, backup_type="daily"):
    return act(c, server_id, {"createBackup": {"name": name, "backup_type": backup_type, "rotation": rotation}})


def live_images():
    from apps.images.models import Image, ImageStatus

    return {image.name: image for image in Image.objects.exclude(status=ImageStatus.DELETED)}


def test_create_backup_keeps_the_newest_backups_of_its_type(world, vm, fake_driver):
    c = api(world, world.member)
    sid = str(vm.id)
    for name in ("daily-1", "daily-2", "daily-3"):
        resp = backup(c, sid, name, 2)
        assert resp.status_code == 202 and resp["Location"].endswith(f"/image/v2/images/{live_images()[name].pk}")
    assert backup(c, sid, "weekly-1", 1, backup_type="weekly").status_code == 202
    services.instance_create_image(instance=fresh(vm), user=world.member, name="snap")
    # the oldest daily backup went once the third was uploaded; other types and snapshots stay
    assert set(live_images()) == {world.image.name, "daily-2", "daily-3", "weekly-1", "snap"}
    latest = live_images()["daily-3"]
    assert {k: latest.properties[k] for k in ("image_type", "backup_type", "instance_uuid")} == {
        "image_type": "backup", "backup_type": "daily", "instance_uuid": sid}
    assert live_images()["snap"].properties["image_type"] == "snapshot"
    assert len(fake_driver.uploads) == 5 and states(vm)[:2] == (VmState.ACTIVE, None)
    action = fresh(vm).actions.filter(action="createBackup").order_by("-created_at").first()
    assert action.result == "Success"
    assert list(action.events.values_list("event", "result")) == [("compute_backup_instance", "Success")]

    # rotation 0 keeps none of the type, the new one included (Nova), and names no image
    resp = backup(c, sid, "daily-0", "0")
    assert resp.status_code == 202 and "Location" not in resp
    assert set(live_images()) == {world.image.name, "weekly-1", "snap"}


def test_a_failed_backup_deletes_no_older_backup(world, vm, fake_driver):
    c = api(world, world.member)
    assert backup(c, str(vm.id), "daily-1", 1).status_code == 202
    fake_driver.fail_next("snapshot", "disk on fire")
    assert backup(c, str(vm.id), "daily-2", 1).status_code == 202
    assert set(live_images()) == {world.image.name, "daily-1"}
    assert "disk on fire" in fresh(vm).faults.first().message
    assert states(vm)[:2] == (VmState.ACTIVE, None)
    assert fresh(vm).actions.filter(action="createBackup").order_by("-created_at").first().result == "Error"


def test_create_backup_bodies_states_and_access(world, vm, fake_driver):
    c = api(world, world.member)
    sid = str(vm.id)
    bad = [
        {"createBackup": None},
        {"createBackup": {"name": "b", "backup_type": "daily"}},
        {"createBackup": {"name": "b", "rotation": 1}},
        {"createBackup": {"backup_type": "daily", "rotation": 1}},
        {"createBackup": {"name": "b", "backup_type": "daily", "rotation": -1}},
        {"createBackup": {"name": "b", "backup_type": "daily", "rotation": 2**31}},  # no column holds it
        {"createBackup": {"name": "b", "backup_type": "daily", "rotation": "one"}},
        {"createBackup": {"name": "b", "backup_type": "daily", "rotation": True}},
        {"createBackup": {"name": "b", "backup_type": 7, "rotation": 1}},
        {"createBackup": {"name": "", "backup_type": "daily", "rotation": 1}},
        {"createBackup": {"name": "b", "backup_type": "daily", "rotation": 1, "metadata": "x"}},
    ]
    for body in bad:
        resp = act(c, sid, body)
        assert resp.status_code == 400, body
        assert resp.json()["badRequest"]["message"]
    resp = act(c, sid, {"createBackup": {"name": "b", "backup_type": "daily", "rotation": 1, "colour": "red"}})
    assert resp.status_code == 400 and "Additional properties" in resp.json()["badRequest"]["message"]
    assert set(live_images()) == {world.image.name}

    services.instance_stop(instance=fresh(vm), user=world.member)
    assert backup(c, sid, "stopped", 1).status_code == 202  # a stopped server is backed up too
    Instance.objects.filter(pk=vm.pk).update(task_state=TaskState.REBOOTING_HARD)
    resp = backup(c, sid, "busy", 1)
    assert resp.status_code == 409 and "createBackup" in resp.json()["conflictingRequest"]["message"]
    Instance.objects.filter(pk=vm.pk).update(task_state=None)
    assert backup(api(world, world.reader), sid, "r", 1).status_code == 403
    assert backup(api(world, world.outsider, world.other_project), sid, "o", 1).status_code == 404
    assert set(live_images()) == {world.image.name, "stopped"}


def test_instance_image_and_backup_commands(world, vm, fake_driver):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("instance_image_create", str(vm.id), "--name", "cmd-snap", "--wait", "--user", world.member.username,
                 "--project", world.project.name, stdout=out)
    assert f"image cmd-snap {live_images()['cmd-snap'].pk}" in out.getvalue()
    for n in (1, 2):
        call_command("instance_backup", str(vm.id), "--name", f"cmd-b{n}", "--type", "daily", "--rotation", "1",
                     "--wait", "--user", world.member.username, "--project", world.project.name, stdout=out)
    assert set(live_images()) == {world.image.name, "cmd-snap", "cmd-b2"}
    assert f"instance {vm.name} {vm.id} ACTIVE" in out.getvalue()


def test_empty_accept_header_is_any(world, vm):
    """openstacksdk sends server actions with an empty Accept header."""
    c = api(world, world.member)
    resp = c.post(f"/compute/v2.1/servers/{vm.id}/action", {"os-getConsoleOutput": {}}, format="json",
                  HTTP_ACCEPT="")
    assert resp.status_code == 200
    resp = act(c, str(vm.id), {"os-getConsoleOutput": {"length": 5, "lines": 5}})
    assert resp.status_code == 400 and "'lines'" in resp.json()["badRequest"]["message"]


def test_vnc_console_url_has_a_one_time_token(world, vm):
    from urllib.parse import unquote

    from apps.instances.consoles import console_token_consume

    resp = act(api(world, world.member), str(vm.id), {"os-getVNCConsole": {"type": "novnc"}})
    assert resp.status_code == 200
    url = resp.json()["console"]["url"]
    assert resp.json()["console"]["type"] == "novnc" and "vnc_lite.html" in url
    token = unquote(url).split("token=")[1]
    assert console_token_consume(token) == {"instance_id": str(vm.id), "host": "127.0.0.1", "port": 5900}
    assert console_token_consume(token) is None  # one time


def test_rescue_and_unrescue(world, vm, fake_driver):
    c = api(world, world.member)
    for junk in ([1], "x", {"adminPass": 1}, {"rescue_image_ref": [1]}, {"password": "p"}):
        resp = act(c, str(vm.id), {"rescue": junk})
        assert resp.status_code == 400, junk
    assert states(vm)[:2] == (VmState.ACTIVE, None)
    resp = act(c, str(vm.id), {"rescue": None})
    assert resp.status_code == 200
    assert c.get(f"/compute/v2.1/servers/{vm.id}").json()["server"]["status"] == "RESCUE"
    spec = fake_driver.specs[str(vm.id)]
    assert spec.rescue and [d.name for d in spec.disks] == ["rescue", "root"]
    assert act(c, str(vm.id), {"rescue": None}).status_code == 409
    assert act(c, str(vm.id), {"unrescue": None}).status_code == 202
    assert states(vm)[:2] == (VmState.ACTIVE, None)
    assert not fake_driver.specs[str(vm.id)].rescue
