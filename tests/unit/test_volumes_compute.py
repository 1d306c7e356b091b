"""Volumes on servers through Nova's API: os-volume_attachments (the same service as Cinder's
attachments API), volumes_attached in the server body, boot from volume with
block_device_mapping_v2, and what deleting the server does to its volumes."""

import pytest
from rest_framework.test import APIClient

from apps.instances import services as compute
from apps.instances.models import Instance
from apps.volumes import services
from apps.volumes.models import Attachment, Volume
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)

NOVA = "/compute/v2.1"


@pytest.fixture(autouse=True)
def storage(fake_storage):
    return fake_storage


def nova(token, version: str | None = None) -> APIClient:
    c = APIClient()
    headers = {"HTTP_X_AUTH_TOKEN": token}
    if version:
        headers["HTTP_OPENSTACK_API_VERSION"] = f"compute {version}"
    c.credentials(**headers)
    return c


def cinder(token, version: str = "3.42") -> APIClient:
    c = APIClient()
    c.credentials(HTTP_X_AUTH_TOKEN=token, HTTP_OPENSTACK_API_VERSION=f"volume {version}")
    return c


@pytest.fixture
def setup(world):
    make_host("node1")
    vm = compute.instance_create(user=world.member, project=world.project, name="vm1", flavor=world.flavor,
                                 image=world.image)
    volume = services.volume_create(user=world.member, project=world.project, size=1, name="data")
    return Instance.objects.get(pk=vm.pk), Volume.objects.get(pk=volume.pk)


def test_attach_show_list_and_detach_through_nova(world, setup, fake_driver):
    vm, volume = setup
    alice = nova(world.token(world.member))
    url = f"{NOVA}/servers/{vm.pk}/os-volume_attachments"
    resp = alice.post(url, {"volumeAttachment": {"volumeId": str(volume.pk)}}, format="json")
    assert resp.status_code == 200, resp.content
    expected = {"id": str(volume.pk), "serverId": str(vm.pk), "volumeId": str(volume.pk), "device": "/dev/vdb"}
    assert resp.json() == {"volumeAttachment": expected}
    assert Volume.objects.get(pk=volume.pk).status == "in-use"
    assert alice.get(url).json() == {"volumeAttachments": [expected]}
    assert alice.get(f"{url}/{volume.pk}").json() == {"volumeAttachment": expected}
    # Cinder's view of the same attachment.
    cinder_body = cinder(world.token(world.member)).get(
        f"/volume/v3/{world.project.pk.hex}/volumes/{volume.pk}").json()["volume"]
    assert cinder_body["status"] == "in-use"
    assert cinder_body["attachments"][0]["server_id"] == str(vm.pk)
    assert cinder_body["attachments"][0]["device"] == "/dev/vdb"
    # Again: the volume is in use (Cinder's InvalidVolume: 400 through Nova too).
    again = alice.post(url, {"volumeAttachment": {"volumeId": str(volume.pk)}}, format="json")
    assert again.status_code == 400 and "badRequest" in again.json()
    assert alice.delete(f"{url}/{volume.pk}").status_code == 202
    assert Volume.objects.get(pk=volume.pk).status == "available"
    assert alice.get(f"{url}/{volume.pk}").status_code == 404
    assert fake_driver.attached_volumes[str(vm.pk)] == {}


def test_cinder_attachments_api_ends_in_the_same_service(world, setup, fake_driver):
    vm, volume = setup
    c = cinder(world.token(world.member))
    url = f"/volume/v3/{world.project.pk.hex}/attachments"
    resp = c.post(url, {"attachment": {"volume_uuid": str(volume.pk), "instance_uuid": str(vm.pk),
                                       "connector": {"host": "node1"}}}, format="json")
    assert resp.status_code == 200, resp.content
    body = resp.json()["attachment"]
    assert body["status"] == "attached" and body["instance"] == str(vm.pk) and body["attach_mode"] == "rw"
    assert body["connection_info"]["driver_volume_type"] == "file"
    assert fake_driver.attached_volumes[str(vm.pk)] == {str(volume.pk): "vdb"}
    nova_view = nova(world.token(world.member)).get(f"{NOVA}/servers/{vm.pk}/os-volume_attachments").json()
    assert nova_view["volumeAttachments"][0]["volumeId"] == str(volume.pk)
    left = c.delete(f"{url}/{body['id']}")
    assert left.status_code == 200 and left.json() == {"attachments": []}
    assert Volume.objects.get(pk=volume.pk).status == "available"


def test_attach_to_a_server_that_is_not_ready_is_409(world, setup):
    vm, volume = setup
    Instance.objects.filter(pk=vm.pk).update(task_state="rebooting")
    resp = nova(world.token(world.member)).post(f"{NOVA}/servers/{vm.pk}/os-volume_attachments",
                                                {"volumeAttachment": {"volumeId": str(volume.pk)}}, format="json")
    assert resp.status_code == 409 and "rebooting" in resp.json()["conflictingRequest"]["message"]


def test_nova_refuses_multiattach_volumes_below_2_60(world, setup):
    vm, _ = setup
    shared = services.volume_type_create(name="shared", extra_specs={"multiattach": "<is> True"})
    volume = services.volume_create(user=world.member, project=world.project, size=1, volume_type=shared)
    resp = nova(world.token(world.member), "2.10").post(f"{NOVA}/servers/{vm.pk}/os-volume_attachments",
                                                        {"volumeAttachment": {"volumeId": str(volume.pk)}},
                                                        format="json")
    assert resp.status_code == 400 and "2.60" in resp.json()["badRequest"]["message"]


def test_another_projects_server_or_volume_is_404(world, setup):
    vm, volume = setup
    bob = nova(world.token(world.outsider, world.other_project))
    assert bob.get(f"{NOVA}/servers/{vm.pk}/os-volume_attachments").status_code == 404
    mine = compute.instance_create(user=world.outsider, project=world.other_project, name="bobs", flavor=world.flavor,
                                   image=world.image)
    resp = bob.post(f"{NOVA}/servers/{mine.pk}/os-volume_attachments",
                    {"volumeAttachment": {"volumeId": str(volume.pk)}}, format="json")
    assert resp.status_code == 404 and "Volume" in resp.json()["itemNotFound"]["message"]


def test_reader_cannot_attach(world, setup):
    vm, volume = setup
    resp = nova(world.token(world.reader)).post(f"{NOVA}/servers/{vm.pk}/os-volume_attachments",
                                                {"volumeAttachment": {"volumeId": str(volume.pk)}}, format="json")
    assert resp.status_code == 403


def test_volumes_attached_with_delete_on_termination_from_2_3(world, setup):
    vm, volume = setup
    services.volume_attach(volume=volume, instance=Instance.objects.select_related("host").get(pk=vm.pk),
                           user=world.member)
    token = world.token(world.member)
    key = "os-extended-volumes:volumes_attached"
    assert nova(token, "2.2").get(f"{NOVA}/servers/{vm.pk}").json()["server"][key] == [{"id": str(volume.pk)}]
    assert nova(token, "2.3").get(f"{NOVA}/servers/{vm.pk}").json()["server"][key] == [
        {"id": str(volume.pk), "delete_on_termination": False}]
    listed = nova(token, "2.3").get(f"{NOVA}/servers/detail").json()["servers"][0]
    assert listed[key] == [{"id": str(volume.pk), "delete_on_termination": False}]


BDM = {"boot_index": 0, "source_type": "image", "destination_type": "volume", "volume_size": 1}


@pytest.mark.parametrize("delete_on_termination", [True, False])
def test_boot_from_volume_through_the_api(world, setup, fake_driver, storage, delete_on_termination):
    token = world.token(world.member)
    body = {"server": {"name": "bfv", "flavorRef": world.flavor.pk, "imageRef": "",
                       "block_device_mapping_v2": [{**BDM, "uuid": str(world.image.pk),
                                                    "delete_on_termination": delete_on_termination}]}}
    resp = nova(token).post(f"{NOVA}/servers", body, format="json")
    assert resp.status_code == 202, resp.content
    server_id = resp.json()["server"]["id"]
    server = nova(token, "2.3").get(f"{NOVA}/servers/{server_id}").json()["server"]
    assert server["status"] == "ACTIVE" and server["image"] == ""
    (attached,) = server["os-extended-volumes:volumes_attached"]
    assert attached["delete_on_termination"] is delete_on_termination
    volume = Volume.objects.get(pk=attached["id"])
    assert volume.status == "in-use" and volume.bootable and volume.size == 1
    assert fake_driver.specs[server_id].disks[0].connection is not None
    assert nova(token).delete(f"{NOVA}/servers/{server_id}").status_code == 204
    assert Volume.objects.filter(pk=volume.pk).exists() is not delete_on_termination
    assert not Attachment.objects.exists()


@pytest.mark.database  # JSON key lookups on the image's properties
def test_create_image_of_a_server_booted_from_a_volume_through_the_api(world, setup, fake_driver):
    token = world.token(world.member)
    body = {"server": {"name": "bfv", "flavorRef": world.flavor.pk, "imageRef": "",
                       "block_device_mapping_v2": [{**BDM, "uuid": str(world.image.pk)}]}}
    server_id = nova(token).post(f"{NOVA}/servers", body, format="json").json()["server"]["id"]
    resp = nova(token).post(f"{NOVA}/servers/{server_id}/action", {"createImage": {"name": "golden"}}, format="json")
    assert resp.status_code == 202, resp.content
    image_id = resp["Location"].rsplit("/", 1)[1]
    glance = APIClient()
    glance.credentials(HTTP_X_AUTH_TOKEN=token)
    shown = glance.get(f"/image/v2/images/{image_id}").json()
    assert (shown["status"], shown["size"], shown["bdm_v2"]) == ("active", 0, "True")
    assert glance.get(f"/image/v2/images/{image_id}/file").status_code == 204  # no data: it maps snapshots
    copy = nova(token).post(f"{NOVA}/servers", {"server": {"name": "copy", "flavorRef": world.flavor.pk,
                                                           "imageRef": image_id}}, format="json")
    assert copy.status_code == 202, copy.content
    server = nova(token, "2.3").get(f"{NOVA}/servers/{copy.json()['server']['id']}").json()["server"]
    assert server["status"] == "ACTIVE" and server["image"] == ""
    (attached,) = server["os-extended-volumes:volumes_attached"]
    assert Volume.objects.get(pk=attached["id"]).snapshot is not None


def test_boot_from_an_existing_volume_and_a_blank_second_disk(world, setup, fake_driver):
    _, volume = setup
    Volume.objects.filter(pk=volume.pk).update(bootable=True)
    token = world.token(world.member)
    body = {"server": {"name": "bfv2", "flavorRef": world.flavor.pk, "block_device_mapping_v2": [
        {"boot_index": 0, "source_type": "volume", "destination_type": "volume", "uuid": str(volume.pk)},
        {"boot_index": None, "source_type": "blank", "destination_type": "volume", "volume_size": 2,
         "delete_on_termination": True}]}}
    resp = nova(token).post(f"{NOVA}/servers", body, format="json")
    assert resp.status_code == 202, resp.content
    server_id = resp.json()["server"]["id"]
    disks = fake_driver.specs[server_id].disks
    assert [d.name for d in disks][0] == "root" and disks[1].device == "vdb" and disks[1].size_gb == 2
    assert Volume.objects.get(pk=volume.pk).status == "in-use"


def test_bad_block_device_mappings_are_400(world, setup):
    token = world.token(world.member)
    for bdm, message in [
        ([{**BDM, "uuid": "not-an-image"}], "failed to get image"),
        ([{**BDM, "source_type": "floppy", "uuid": "x"}], "source_type"),
        ([{"boot_index": 0, "source_type": "blank", "destination_type": "volume"}], "volume_size"),
        ([{**BDM, "uuid": str(world.image.pk)}, {**BDM, "uuid": str(world.image.pk)}], "Boot sequence"),
        ([{**BDM, "uuid": str(world.image.pk), "bogus": 1}], "bogus"),
    ]:
        resp = nova(token).post(f"{NOVA}/servers", {"server": {"name": "x", "flavorRef": world.flavor.pk,
                                                               "block_device_mapping_v2": bdm}}, format="json")
        assert resp.status_code == 400, (bdm, resp.content)
        assert message in resp.json()["badRequest"]["message"]
    assert not Volume.objects.exclude(name="data").exists()


def test_cinder_attachments_of_a_shelved_server_are_records_until_it_is_unshelved(world, setup, fake_driver):
    vm, volume = setup
    compute.instance_shelve(instance=Instance.objects.select_related("host").get(pk=vm.pk), user=world.member)
    c = cinder(world.token(world.member))
    url = f"/volume/v3/{world.project.pk.hex}/attachments"
    resp = c.post(url, {"attachment": {"volume_uuid": str(volume.pk), "instance_uuid": str(vm.pk)}}, format="json")
    assert resp.status_code == 200, resp.content
    body = resp.json()["attachment"]
    assert body["status"] == "attached" and body["instance"] == str(vm.pk)
    assert str(vm.pk) not in fake_driver.attached_volumes  # no host to plug it into
    shown = c.get(f"{url}/{body['id']}")
    assert shown.status_code == 200, shown.content
    left = c.delete(f"{url}/{body['id']}")
    assert left.status_code == 200 and Volume.objects.get(pk=volume.pk).status == "available"
