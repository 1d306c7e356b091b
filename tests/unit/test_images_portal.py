"""The portal's image pages with Django's test client."""

import hashlib

import pytest

from apps.images import services
from apps.images.models import Image, ImageMember, ImageStatus, MemberStatus
from tests.unit import test_images_crafted as crafted

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def image_store(settings, tmp_path):
    settings.IMAGE_STORE_DIR = tmp_path / "store"
    return settings.IMAGE_STORE_DIR


def login(client, user):
    client.force_login(user)
    return client


def create_form(**fields):
    return {"name": "disk", "source": "file", "disk_format": "qcow2", "visibility": "private", "min_disk": 0,
            "min_ram": 0, **fields}


def test_list_tabs(client, world):
    mine = services.image_create(user=world.member, project=world.project, attrs={"name": "mine-img"})
    theirs = services.image_create(user=world.outsider, project=world.other_project, attrs={"name": "theirs-img"})
    services.image_member_create(user=world.outsider, project=world.other_project, image=theirs,
                                 member_id=world.project.pk.hex)
    login(client, world.member)
    page = client.get("/images/").content.decode()
    assert "mine-img" in page and "testvm" in page and "theirs-img" not in page  # pending: not in the default list
    assert "Images" in page and 'href="/images/create/"' in page
    assert "theirs-img" in client.get("/images/?show=shared").content.decode()
    mine_tab = client.get("/images/?show=mine").content.decode()
    assert "mine-img" in mine_tab and "theirs-img" not in mine_tab
    public = client.get("/images/?show=public").content.decode()
    assert "testvm" in public and "mine-img" not in public
    assert client.get(f"/images/{mine.pk}/").status_code == 200


def test_browser_upload_flow(client, world, tmp_path):
    login(client, world.member)
    assert client.get("/images/create/").status_code == 200
    resp = client.post("/images/create/", create_form(), HTTP_ACCEPT="application/json")
    assert resp.status_code == 201, resp.content
    created = resp.json()
    data = crafted.qemu_img(tmp_path / "d.qcow2", "qcow2", "8M")
    resp = client.put(created["upload_url"], data, content_type="application/octet-stream")
    assert resp.status_code == 204, resp.content
    image = Image.objects.get(pk=created["id"])
    assert image.status == ImageStatus.ACTIVE and image.checksum == hashlib.md5(data).hexdigest()
    page = client.get(created["detail_url"]).content.decode()
    assert "active" in page and image.checksum in page
    resp = client.get(f"/images/{image.pk}/download/")
    assert int(resp["Content-Length"]) == len(data) and "attachment" in resp["Content-Disposition"]
    assert b"".join(resp.streaming_content) == data


def test_browser_upload_refused_by_the_inspector_says_why(client, world, tmp_path):
    login(client, world.member)
    created = client.post("/images/create/", create_form(), HTTP_ACCEPT="application/json").json()
    resp = client.put(created["upload_url"], crafted.qcow2_with_backing(tmp_path), content_type="application/octet-stream")
    assert resp.status_code == 400
    assert "backing file" in resp.json()["error"]
    assert Image.objects.get(pk=created["id"]).status == ImageStatus.QUEUED
    page = client.get(created["detail_url"]).content.decode()
    assert 'id="image-upload-form"' in page  # try again from the image's page


def test_create_form_errors_as_json(client, world):
    login(client, world.member)
    resp = client.post("/images/create/", create_form(name=""), HTTP_ACCEPT="application/json")
    assert resp.status_code == 400 and "Name" in resp.json()["error"]
    resp = client.post("/images/create/", create_form(source="url", url=""))
    assert resp.status_code == 200 and b"Give the URL" in resp.content


def test_import_from_a_refused_url(client, world, settings):
    settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_HOSTS = ["*"]
    login(client, world.member)
    resp = client.post("/images/create/", create_form(source="url", url="http://127.0.0.1/x.qcow2"))
    assert resp.status_code == 200 and b"internal address" in resp.content
    assert not Image.objects.filter(name="disk").exists()


def test_edit_properties_and_share(client, world):
    image = services.image_create(user=world.member, project=world.project,
                                  attrs={"name": "edit-me", "os_distro": "debian", "os_version": "12"})
    login(client, world.member)
    resp = client.post(f"/images/{image.pk}/edit/", {
        "name": "edited", "visibility": "shared", "min_disk": 1, "min_ram": 128, "protected": "on",
        "tags": "a, b", "properties": "os_distro=ubuntu\nhw_disk_bus=scsi",
    })
    assert resp.status_code == 302, resp.content
    image.refresh_from_db()
    assert (image.name, image.visibility, image.min_disk, image.protected) == ("edited", "shared", 1, True)
    assert image.properties == {"os_distro": "ubuntu", "hw_disk_bus": "scsi"}
    assert sorted(t.value for t in image.tag_set.all()) == ["a", "b"]
    resp = client.post(f"/images/{image.pk}/edit/", {"name": "x", "visibility": "shared", "min_disk": 0, "min_ram": 0,
                                                       "properties": "no equals sign"})
    assert b"key=value" in resp.content

    resp = client.post(f"/images/{image.pk}/members/", {"project": "beta"})
    assert resp.status_code == 302
    member = ImageMember.objects.get(image=image)
    assert member.project == world.other_project and member.status == MemberStatus.PENDING
    assert "beta" in client.get(f"/images/{image.pk}/").content.decode()

    # The member project accepts it in its portal.
    other = client.__class__()
    login(other, world.outsider)
    page = other.get(f"/images/{image.pk}/").content.decode()
    assert 'id="membership"' in page
    other.post(f"/images/{image.pk}/membership/", {"status": "accepted"})
    member.refresh_from_db()
    assert member.status == MemberStatus.ACCEPTED
    assert "edited" in other.get("/images/").content.decode()
    # ...but cannot change it.
    other.post(f"/images/{image.pk}/edit/", {"name": "stolen", "visibility": "shared", "min_disk": 0, "min_ram": 0})
    assert Image.objects.get(pk=image.pk).name == "edited"

    client.post(f"/images/{image.pk}/members/{world.other_project.pk}/delete/")
    assert not ImageMember.objects.filter(image=image).exists()


def test_delete_with_confirmation(client, world):
    image = services.image_create(user=world.member, project=world.project, attrs={"name": "doomed", "protected": True})
    login(client, world.member)
    assert b"Delete image doomed?" in client.get(f"/images/{image.pk}/delete/").content
    client.post(f"/images/{image.pk}/delete/")
    assert Image.objects.get(pk=image.pk).status != ImageStatus.DELETED  # protected
    Image.objects.filter(pk=image.pk).update(protected=False)
    resp = client.post(f"/images/{image.pk}/delete/")
    assert resp.status_code == 302 and resp["Location"] == "/images/"
    assert Image.objects.get(pk=image.pk).status == ImageStatus.DELETED


def test_reader_cannot_create_or_upload(client, world):
    login(client, world.reader)
    assert client.get("/images/").status_code == 200
    assert client.get("/images/create/").status_code == 302
    image = services.image_create(user=world.member, project=world.project, attrs={"name": "x", "disk_format": "raw",
                                                                                    "container_format": "bare"})
    resp = client.put(f"/images/{image.pk}/upload/", b"\0" * 512, content_type="application/octet-stream")
    assert resp.status_code == 302
    assert Image.objects.get(pk=image.pk).status == ImageStatus.QUEUED


def test_status_fragment(client, world):
    image = services.image_create(user=world.member, project=world.project, attrs={"name": "x"})
    login(client, world.member)
    resp = client.get(f"/images/{image.pk}/status/", HTTP_HX_REQUEST="true")
    assert resp.status_code == 200 and b"queued" in resp.content and resp["HX-Refresh"] == "true"
