"""The portal's volume, snapshot and backup pages with Django's test client (agents in-process on
the fake drivers): create, attach, detach, extend, snapshot, backup, restore, delete; the polled
fragments; readers and other projects."""

import pytest
from django.test import Client

from apps.instances import services as compute
from apps.instances.models import Instance
from apps.volumes import services
from apps.volumes.models import Attachment, Backup, Snapshot, Volume
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def storage(fake_storage):
    return fake_storage


@pytest.fixture
def alice(world):
    make_host("node1")
    client = Client()
    client.force_login(world.member)
    return client


def page(resp) -> str:
    assert resp.status_code == 200, resp.status_code
    return resp.content.decode()


def follow_messages(resp) -> str:
    return " ".join(str(m) for m in resp.context["messages"]) if resp.context else ""


def test_create_an_empty_volume_and_see_it_in_the_list(world, alice):
    assert "Create volume" in page(alice.get("/volumes/"))
    resp = alice.post("/volumes/create/", {"name": "data", "source": "empty", "size": 2}, follow=True)
    volume = Volume.objects.get(name="data")
    assert resp.redirect_chain[-1][0] == f"/volumes/{volume.pk}/"
    assert "is being created" in follow_messages(resp)
    rows = page(alice.get("/volumes/rows/"))
    assert f'id="volume-{volume.pk}"' in rows and 'data-status="available"' in rows and "2 GiB" in rows


def test_create_from_an_image_and_from_a_snapshot(world, alice):
    alice.post("/volumes/create/", {"name": "boot", "source": "image", "image": world.image.pk, "size": 1})
    volume = Volume.objects.get(name="boot")
    assert volume.bootable and volume.status == "available"
    snapshot = services.snapshot_create(volume=volume, user=world.member, name="snap")
    form = page(alice.get(f"/volumes/create/?snapshot={snapshot.pk}"))
    assert f'value="{snapshot.pk}" selected' in form
    alice.post("/volumes/create/", {"name": "copy", "source": "snapshot", "snapshot": snapshot.pk})
    assert Volume.objects.get(name="copy").snapshot_id == snapshot.pk


def test_a_shelved_server_takes_a_volume_from_the_volume_page(world, alice, fake_driver):
    """Recorded only: the server has no host; its unshelve connects the volume."""
    vm = compute.instance_create(user=world.member, project=world.project, name="parked", flavor=world.flavor,
                                 image=world.image)
    compute.instance_shelve(instance=Instance.objects.select_related("host").get(pk=vm.pk), user=world.member)
    volume = services.volume_create(user=world.member, project=world.project, size=1, name="data")
    assert ">parked<" in page(alice.get(f"/volumes/{volume.pk}/"))
    resp = alice.post(f"/volumes/{volume.pk}/action/attach/", {"instance": vm.pk}, follow=True)
    assert "is being attached to parked" in follow_messages(resp)
    attachment = Attachment.objects.get(volume=volume)
    assert (attachment.status, attachment.host, Volume.objects.get(pk=volume.pk).status) == ("attached", None, "in-use")
    alice.post(f"/volumes/{volume.pk}/action/detach/", {"attachment": attachment.pk})
    assert Volume.objects.get(pk=volume.pk).status == "available" and not Attachment.objects.exists()


def test_form_errors_are_shown_not_raised(world, alice):
    body = page(alice.post("/volumes/create/", {"name": "x", "source": "empty"}))
    assert "An empty volume needs a size." in body
    services.volume_type_default_ensure()
    from apps.tenants.services import quota_set

    quota_set(project=world.project, resource="gigabytes", limit=1)
    body = page(alice.post("/volumes/create/", {"name": "big", "source": "empty", "size": 5}))
    assert "Quota exceeded for gigabytes" in body and not Volume.objects.exists()


def test_attach_extend_snapshot_backup_detach_and_delete_from_the_volume_page(world, alice, fake_driver):
    vm = compute.instance_create(user=world.member, project=world.project, name="web", flavor=world.flavor,
                                 image=world.image)
    volume = services.volume_create(user=world.member, project=world.project, size=1, name="data")
    detail = page(alice.get(f"/volumes/{volume.pk}/"))
    assert 'id="attach-form"' in detail and ">web<" in detail
    url = f"/volumes/{volume.pk}/action"
    resp = alice.post(f"{url}/attach/", {"instance": vm.pk}, follow=True)
    assert "is being attached to web" in follow_messages(resp)
    attachment = Attachment.objects.get(volume=volume)
    overview = page(alice.get(f"/volumes/{volume.pk}/overview/"))
    assert 'data-status="in-use"' in overview and "/dev/vdb" in overview and f'value="{attachment.pk}"' in overview
    alice.post(f"{url}/extend/", {"new_size": 3})
    assert Volume.objects.get(pk=volume.pk).size == 3
    alice.post(f"{url}/snapshot/", {"name": "s1", "force": "on"})
    assert Snapshot.objects.get(name="s1").status == "available"
    alice.post(f"{url}/backup/", {"name": "b1"})
    assert Backup.objects.get(name="b1").status == "available"
    resp = alice.post(f"{url}/delete/", follow=True)
    assert "attached" in follow_messages(resp) and Volume.objects.filter(pk=volume.pk).exists()
    alice.post(f"{url}/detach/", {"attachment": attachment.pk})
    assert Volume.objects.get(pk=volume.pk).status == "available"
    assert fake_driver.attached_volumes[str(Instance.objects.get(pk=vm.pk).pk)] == {}
    page(alice.get("/volumes/snapshots/"))
    alice.post(f"/volumes/snapshots/{Snapshot.objects.get(name='s1').pk}/delete/")
    alice.post(f"{url}/delete/")
    assert not Volume.objects.filter(pk=volume.pk).exists()
    gone = alice.get(f"/volumes/{volume.pk}/overview/")
    assert gone.status_code == 286 and "has been deleted" in gone.content.decode()  # htmx stops polling


def test_a_failure_shows_its_reason_on_the_volume_page(world, alice, storage):
    storage.fail_next("volume_create", "the pool is full")
    alice.post("/volumes/create/", {"name": "doomed", "source": "empty", "size": 1})
    volume = Volume.objects.get(name="doomed")
    overview = page(alice.get(f"/volumes/{volume.pk}/overview/"))
    assert 'data-status="error"' in overview and "create volume: the pool is full" in overview


def test_restore_a_backup_into_a_new_and_an_existing_volume(world, alice):
    volume = services.volume_create(user=world.member, project=world.project, size=1, name="data")
    backup = services.backup_create(volume=Volume.objects.get(pk=volume.pk), user=world.member, name="b1")
    assert "b1" in page(alice.get("/volumes/backups/rows/"))
    resp = alice.post(f"/volumes/backups/{backup.pk}/restore/", {"target": "new", "name": "again"})
    restored = Volume.objects.get(name="again")
    assert resp.url == f"/volumes/{restored.pk}/" and restored.status == "available"
    alice.post(f"/volumes/backups/{backup.pk}/restore/", {"target": "existing", "volume": restored.pk})
    assert Volume.objects.get(pk=restored.pk).status == "available"
    resp = alice.post(f"/volumes/backups/{backup.pk}/restore/", {"target": "existing"}, follow=True)
    assert "Choose the volume to restore into." in follow_messages(resp)
    alice.post(f"/volumes/backups/{backup.pk}/delete/")
    assert not Backup.objects.exists()


def test_readers_see_but_cannot_change_and_other_projects_see_nothing(world, alice):
    volume = services.volume_create(user=world.member, project=world.project, size=1, name="data")
    rita = Client()
    rita.force_login(world.reader)
    body = page(rita.get(f"/volumes/{volume.pk}/"))
    assert "data" in body and 'id="attach-form"' not in body
    resp = rita.post(f"/volumes/{volume.pk}/action/delete/", follow=True)
    assert "allows viewing only" in follow_messages(resp) and Volume.objects.filter(pk=volume.pk).exists()
    bob = Client()
    bob.force_login(world.outsider)
    assert "data" not in page(bob.get("/volumes/rows/"))
    resp = bob.get(f"/volumes/{volume.pk}/", follow=True)
    assert "could not be found" in follow_messages(resp)
    assert bob.get(f"/volumes/{volume.pk}/overview/").status_code == 286
    resp = bob.post(f"/volumes/{volume.pk}/action/delete/", follow=True)
    assert "could not be found" in follow_messages(resp) and Volume.objects.filter(pk=volume.pk).exists()
