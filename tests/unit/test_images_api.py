"""The Glance-compatible image API over the service layer: bodies, status codes, the tenancy wall,
sharing and visibility, data upload/download, format safety."""

import hashlib
import json
import os

import pytest
from rest_framework.test import APIClient

from apps.images.models import Image, ImageStatus, Visibility
from apps.images.stores import get_store
from apps.images.uploads import CHUNK
from apps.tenants.models import Role
from apps.tenants.services import role_grant
from tests.unit import test_images_crafted as crafted

pytestmark = pytest.mark.django_db(transaction=True)

PATCH = "application/openstack-images-v2.1-json-patch"
PATCH_V20 = "application/openstack-images-v2.0-json-patch"
IMAGE_KEYS = {
    "id", "name", "status", "visibility", "protected", "os_hidden", "checksum", "os_hash_algo", "os_hash_value",
    "owner", "size", "virtual_size", "min_ram", "min_disk", "disk_format", "container_format", "created_at",
    "updated_at", "tags", "self", "file", "schema",
}


@pytest.fixture(autouse=True)
def image_store(settings, tmp_path):
    settings.IMAGE_STORE_DIR = tmp_path / "store"
    return settings.IMAGE_STORE_DIR


def client(token=None):
    c = APIClient()
    if token:
        c.credentials(HTTP_X_AUTH_TOKEN=token)
    return c


def create(c, **attrs):
    body = {"name": "img", "disk_format": "raw", "container_format": "bare", **attrs}
    resp = c.post("/image/v2/images", body, format="json")
    assert resp.status_code == 201, resp.content
    return resp.json()


def upload(c, image_id, data: bytes):
    return c.put(f"/image/v2/images/{image_id}/file", data, content_type="application/octet-stream")


def patch(c, image_id, ops, content_type=PATCH):
    return c.generic("PATCH", f"/image/v2/images/{image_id}", json.dumps(ops), content_type=content_type)


def store_files(image_store):
    return sorted(p.name for p in image_store.rglob("*") if p.is_file()) if image_store.exists() else []


def test_version_documents():
    resp = client().get("/image/")
    assert resp.status_code == 300
    versions = resp.json()["versions"]
    assert versions[0]["status"] == "CURRENT" and all(v["id"].startswith("v2.") for v in versions)
    assert versions[0]["links"][0]["href"].endswith("/image/v2/")
    assert client().get("/image/versions").status_code == 200
    assert client().get("/image/v2/").status_code == 300


def test_no_token_is_401_everywhere(world):
    image = world.image
    for method, path in [
        ("get", "/image/v2/images"), ("post", "/image/v2/images"), ("get", f"/image/v2/images/{image.id}"),
        ("delete", f"/image/v2/images/{image.id}"), ("put", f"/image/v2/images/{image.id}/file"),
        ("get", f"/image/v2/images/{image.id}/file"), ("get", "/image/v2/schemas/image"),
        ("get", f"/image/v2/images/{image.id}/members"),
    ]:
        resp = getattr(client(), method)(path)
        assert resp.status_code == 401, (method, path)
        assert resp.json()["error"]["code"] == 401
    assert client("bogus").get("/image/v2/images").status_code == 401


def test_unknown_path_is_a_json_404(world):
    resp = client(world.token(world.member)).get("/image/v2/nothing-here")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == 404


def test_create_upload_show_download_delete(world, image_store, tmp_path):
    c = client(world.token(world.member))
    data = crafted.qemu_img(tmp_path / "disk.qcow2", "qcow2", "32M")
    body = create(c, name="disk", disk_format="qcow2", min_ram=64, os_distro="debian", tags=["a", "b"])
    assert IMAGE_KEYS <= set(body)
    assert body["status"] == "queued" and body["visibility"] == "shared" and body["owner"] == world.project.pk.hex
    assert body["os_distro"] == "debian" and body["tags"] == ["a", "b"] and body["size"] is None
    assert body["self"] == f"/v2/images/{body['id']}" and body["schema"] == "/v2/schemas/image"

    resp = upload(c, body["id"], data)
    assert resp.status_code == 204, resp.content
    shown = c.get(f"/image/v2/images/{body['id']}").json()
    assert shown["status"] == "active"
    assert shown["size"] == len(data) and shown["virtual_size"] == 32 * crafted.MiB
    assert shown["checksum"] == hashlib.md5(data).hexdigest()
    assert (shown["os_hash_algo"], shown["os_hash_value"]) == ("sha512", hashlib.sha512(data).hexdigest())

    resp = c.get(f"/image/v2/images/{body['id']}/file")
    assert resp.status_code == 200 and b"".join(resp.streaming_content) == data
    assert resp["Content-MD5"] == shown["checksum"] and int(resp["Content-Length"]) == len(data)

    assert upload(c, body["id"], data).status_code == 409  # active: no second upload
    assert c.delete(f"/image/v2/images/{body['id']}").status_code == 204
    assert c.get(f"/image/v2/images/{body['id']}").status_code == 404
    assert store_files(image_store) == []


def test_download_is_sent_in_large_chunks(world, image_store):
    """The store's reader has no fileno (no sendfile): the response must read it in CHUNK pieces,
    not FileResponse's 4 KiB ones (a million writes for a 4 GiB image)."""
    c = client(world.token(world.member))
    data = os.urandom(3 * crafted.MiB + 5)
    image = create(c, disk_format="raw")
    assert upload(c, image["id"], data).status_code == 204
    resp = c.get(f"/image/v2/images/{image['id']}/file")
    pieces = list(resp.streaming_content)
    assert [len(p) for p in pieces] == [CHUNK, CHUNK, CHUNK, 5] and b"".join(pieces) == data
    assert resp["Content-MD5"] == hashlib.md5(data).hexdigest() and int(resp["Content-Length"]) == len(data)


def test_upload_needs_formats_and_octet_stream(world):
    c = client(world.token(world.member))
    image = create(c, disk_format=None, container_format=None)
    resp = upload(c, image["id"], b"x" * 1024)
    assert resp.status_code == 400 and "disk_format" in resp.json()["error"]["message"]
    image = create(c)
    resp = c.put(f"/image/v2/images/{image['id']}/file", b"{}", content_type="application/json")
    assert resp.status_code == 415


def test_image_without_data_downloads_as_204(world):
    c = client(world.token(world.member))
    image = create(c)
    assert c.get(f"/image/v2/images/{image['id']}/file").status_code == 204


@pytest.mark.parametrize(
    "name, make, declared, reason",
    [
        ("backing file", lambda t: crafted.qcow2_with_backing(t), "qcow2", "backing file"),
        ("data file", lambda t: crafted.qcow2_with_data_file(t), "qcow2", "external data file"),
        ("vmdk descriptor", lambda t: crafted.vmdk_flat_descriptor(), "vmdk", "descriptor"),
        ("vmdk flat extent", lambda t: crafted.sparse_vmdk_with_flat_extent(t), "vmdk", "extent"),
        ("raw as qcow2", lambda t: b"\0" * (2 * crafted.MiB), "qcow2", "not the declared qcow2"),
        ("qcow2 as raw", lambda t: crafted.qemu_img(t / "q.qcow2", "qcow2"), "raw", "not the declared raw"),
        ("truncated qcow2", lambda t: crafted.truncated_qcow2(t), "qcow2", "truncated"),
        ("vmdk descriptor as raw", lambda t: crafted.vmdk_flat_descriptor(), "raw", "not the declared raw"),
    ],
)
def test_crafted_images_are_refused(world, image_store, tmp_path, name, make, declared, reason):
    c = client(world.token(world.member))
    image = create(c, disk_format=declared)
    resp = upload(c, image["id"], make(tmp_path))
    assert resp.status_code == 400, (name, resp.content)
    assert reason in resp.json()["error"]["message"], resp.json()
    shown = c.get(f"/image/v2/images/{image['id']}").json()
    assert shown["status"] == "queued" and shown["size"] is None and shown["checksum"] is None
    assert store_files(image_store) == []
    assert Image.objects.get(pk=image["id"]).reserved_bytes == 0


def test_patch_both_dialects(world):
    c = client(world.token(world.member))
    image = create(c, os_distro="debian")
    ops = [
        {"op": "replace", "path": "/name", "value": "renamed"},
        {"op": "add", "path": "/hw_disk_bus", "value": "scsi"},
        {"op": "replace", "path": "/os_distro", "value": "ubuntu"},
        {"op": "replace", "path": "/tags", "value": ["x", "y", "x"]},
        {"op": "replace", "path": "/min_disk", "value": 2},
        {"op": "replace", "path": "/protected", "value": True},
        {"op": "add", "path": "/a~1b", "value": "slash"},
    ]
    resp = patch(c, image["id"], ops)
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert (body["name"], body["hw_disk_bus"], body["os_distro"], body["tags"]) == ("renamed", "scsi", "ubuntu", ["x", "y"])
    assert body["min_disk"] == 2 and body["protected"] is True and body["a/b"] == "slash"

    resp = patch(c, image["id"], [{"remove": "/os_distro"}, {"replace": "/name", "value": "old-style"}], PATCH_V20)
    assert resp.status_code == 200, resp.content
    assert "os_distro" not in resp.json() and resp.json()["name"] == "old-style"

    assert patch(c, image["id"], [{"op": "remove", "path": "/nope"}]).status_code == 409
    assert patch(c, image["id"], [{"op": "replace", "path": "/nope", "value": "x"}]).status_code == 409
    for key in ("status", "size", "checksum", "id"):
        resp = patch(c, image["id"], [{"op": "replace", "path": f"/{key}", "value": "x"}])
        assert resp.status_code == 403 and "read-only" in resp.json()["error"]["message"]
    assert patch(c, image["id"], [{"op": "add", "path": "/os_glance_x", "value": "x"}]).status_code == 403
    assert patch(c, image["id"], [{"op": "remove", "path": "/name"}]).status_code == 403
    assert patch(c, image["id"], [{"op": "move", "path": "/name"}]).status_code == 400
    assert patch(c, image["id"], [{"op": "add", "path": "/n", "value": 5}]).status_code == 400
    assert patch(c, image["id"], [{"op": "replace", "path": "/visibility", "value": "sideways"}]).status_code == 400
    assert patch(c, image["id"], [], content_type="application/json").status_code == 415


def test_protected_image_cannot_be_deleted(world):
    c = client(world.token(world.member))
    image = create(c, protected=True)
    resp = c.delete(f"/image/v2/images/{image['id']}")
    assert resp.status_code == 403 and "protected" in resp.json()["error"]["message"]
    patch(c, image["id"], [{"op": "replace", "path": "/protected", "value": False}])
    assert c.delete(f"/image/v2/images/{image['id']}").status_code == 204


def test_read_only_attributes_on_create(world):
    c = client(world.token(world.member))
    for key in ("status", "checksum", "size"):
        resp = c.post("/image/v2/images", {"name": "x", key: "y"}, format="json")
        assert resp.status_code == 403 and key in resp.json()["error"]["message"]
    assert c.post("/image/v2/images", {"name": "x", "deleted": True}, format="json").status_code == 403
    assert c.post("/image/v2/images", {"name": "x", "disk_format": "floppy"}, format="json").status_code == 400
    assert c.post("/image/v2/images", ["nope"], format="json").status_code == 400
    image_id = "f0000000-0000-4000-8000-000000000001"
    assert create(c, id=image_id)["id"] == image_id
    assert c.post("/image/v2/images", {"id": image_id}, format="json").status_code == 409


def test_only_admins_publicize(world):
    c = client(world.token(world.member))
    resp = c.post("/image/v2/images", {"name": "x", "visibility": "public"}, format="json")
    assert resp.status_code == 403 and "publicize_image" in resp.json()["error"]["message"]
    admin = client(world.token(world.admin))
    assert create(admin, visibility="public")["visibility"] == "public"


def test_reader_cannot_write(world):
    c = client(world.token(world.reader))
    assert c.get("/image/v2/images").status_code == 200
    assert c.post("/image/v2/images", {"name": "x"}, format="json").status_code == 403
    image = create(client(world.token(world.member)))
    assert c.delete(f"/image/v2/images/{image['id']}").status_code == 403
    assert upload(c, image["id"], b"x").status_code == 403
    assert patch(c, image["id"], [{"op": "replace", "path": "/name", "value": "y"}]).status_code == 403


def test_deactivate_reactivate(world, tmp_path):
    c = client(world.token(world.member))
    image = create(c)
    assert c.post(f"/image/v2/images/{image['id']}/actions/deactivate").status_code == 403  # queued
    upload(c, image["id"], b"\0" * 4096)
    assert c.post(f"/image/v2/images/{image['id']}/actions/deactivate").status_code == 204
    assert c.get(f"/image/v2/images/{image['id']}").json()["status"] == "deactivated"
    resp = c.get(f"/image/v2/images/{image['id']}/file")
    assert resp.status_code == 403 and "deactivated" in resp.json()["error"]["message"]
    admin = client(world.token(world.admin))
    assert admin.get(f"/image/v2/images/{image['id']}/file").status_code == 200
    assert c.post(f"/image/v2/images/{image['id']}/actions/reactivate").status_code == 204
    assert c.get(f"/image/v2/images/{image['id']}/file").status_code == 200


def test_tags(world):
    c = client(world.token(world.member))
    image = create(c)
    assert c.put(f"/image/v2/images/{image['id']}/tags/web").status_code == 204
    assert c.put(f"/image/v2/images/{image['id']}/tags/web").status_code == 204
    assert c.put(f"/image/v2/images/{image['id']}/tags/db").status_code == 204
    assert c.get(f"/image/v2/images/{image['id']}").json()["tags"] == ["db", "web"]
    assert [i["id"] for i in c.get("/image/v2/images?tag=web&tag=db").json()["images"]] == [image["id"]]
    assert c.delete(f"/image/v2/images/{image['id']}/tags/web").status_code == 204
    assert c.delete(f"/image/v2/images/{image['id']}/tags/web").status_code == 404
    assert c.get("/image/v2/images?tag=web").json()["images"] == []


def test_list_filters_sort_and_paging(world):
    c = client(world.token(world.member))
    ids = [create(c, name=f"img-{i}", min_disk=i % 2)["id"] for i in range(5)]
    body = c.get("/image/v2/images").json()
    assert set(body) >= {"images", "first", "schema"} and body["schema"] == "/v2/schemas/images"
    listed = [i["id"] for i in body["images"]]
    assert listed[:5] == ids[::-1]  # newest first; the world's public image comes last
    assert [i["name"] for i in c.get("/image/v2/images?name=img-3").json()["images"]] == ["img-3"]
    assert c.get("/image/v2/images?status=active").json()["images"][0]["id"] == str(world.image.id)
    by_name = c.get("/image/v2/images?sort_key=name&sort_dir=asc&owner=" + world.project.pk.hex).json()["images"]
    assert [i["name"] for i in by_name] == sorted(i["name"] for i in by_name)
    assert c.get("/image/v2/images?sort_key=bogus").status_code == 400
    assert c.get("/image/v2/images?status=bogus").status_code == 400

    seen, url = [], "/v2/images?limit=2&sort=min_disk:asc,name:desc"
    while url:
        page = c.get("/image" + url).json()
        assert len(page["images"]) <= 2
        seen += [i["id"] for i in page["images"]]
        url = page.get("next")
    assert len(seen) == len(set(seen)) == 6
    assert c.get("/image/v2/images?marker=00000000-0000-4000-8000-000000000000").status_code == 400


def test_hidden_images_are_left_out_unless_asked(world):
    c = client(world.token(world.member))
    image = create(c, os_hidden=True)
    assert image["id"] not in [i["id"] for i in c.get("/image/v2/images").json()["images"]]
    assert [i["id"] for i in c.get("/image/v2/images?os_hidden=true").json()["images"]] == [image["id"]]


def _visible_ids(c, query=""):
    return {i["id"] for i in c.get("/image/v2/images" + query).json()["images"]}


def test_private_shared_community_and_the_wall(world):
    owner = client(world.token(world.member))
    other = client(world.token(world.outsider, world.other_project))
    private = create(owner, name="private", visibility="private")
    shared = create(owner, name="shared")
    community = create(owner, name="community", visibility="community")

    # B sees none of A's private or shared images, not even by id.
    for image in (private, shared):
        assert other.get(f"/image/v2/images/{image['id']}").status_code == 404
        assert other.delete(f"/image/v2/images/{image['id']}").status_code == 404
        assert other.get(f"/image/v2/images/{image['id']}/file").status_code == 404
    assert _visible_ids(other) == {str(world.image.id)}

    # Community: by id and with visibility=community, never in the default list; not B's to change.
    assert other.get(f"/image/v2/images/{community['id']}").status_code == 200
    assert community["id"] not in _visible_ids(other)
    assert community["id"] in _visible_ids(other, "?visibility=community")
    assert community["id"] in _visible_ids(other, "?visibility=all")
    assert community["id"] in _visible_ids(owner)  # its owner sees it
    resp = patch(other, community["id"], [{"op": "replace", "path": "/name", "value": "mine"}])
    assert resp.status_code == 403
    assert other.delete(f"/image/v2/images/{community['id']}").status_code == 403

    # Sharing: only shared images have members; B sees it once a member, lists it once accepted.
    beta = world.other_project.pk.hex
    resp = owner.post(f"/image/v2/images/{private['id']}/members", {"member": beta}, format="json")
    assert resp.status_code == 403
    resp = owner.post(f"/image/v2/images/{shared['id']}/members", {"member": beta}, format="json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["status"] == "pending" and resp.json()["member_id"] == beta
    assert owner.post(f"/image/v2/images/{shared['id']}/members", {"member": beta}, format="json").status_code == 409
    assert other.get(f"/image/v2/images/{shared['id']}").status_code == 200
    assert shared["id"] not in _visible_ids(other)
    assert shared["id"] in _visible_ids(other, "?member_status=pending")

    # The owner cannot accept for B; B accepts.
    member_url = f"/image/v2/images/{shared['id']}/members/{beta}"
    assert owner.put(member_url, {"status": "accepted"}, format="json").status_code == 403
    resp = other.put(member_url, {"status": "accepted"}, format="json")
    assert resp.status_code == 200 and resp.json()["status"] == "accepted"
    assert shared["id"] in _visible_ids(other)
    assert shared["id"] in _visible_ids(other, "?visibility=shared")
    assert other.put(member_url, {"status": "maybe"}, format="json").status_code == 400

    # B may read it but not change, share or delete it.
    assert patch(other, shared["id"], [{"op": "replace", "path": "/name", "value": "x"}]).status_code == 403
    assert other.delete(f"/image/v2/images/{shared['id']}").status_code == 403
    gamma = world.project.pk.hex
    assert other.post(f"/image/v2/images/{shared['id']}/members", {"member": gamma}, format="json").status_code == 403
    assert other.put(f"/image/v2/images/{shared['id']}/tags/x").status_code == 403
    # B sees only its own membership; the owner sees all.
    assert [m["member_id"] for m in other.get(f"/image/v2/images/{shared['id']}/members").json()["members"]] == [beta]
    assert len(owner.get(f"/image/v2/images/{shared['id']}/members").json()["members"]) == 1

    # Removing the member hides it again.
    assert owner.delete(member_url).status_code == 204
    assert other.get(f"/image/v2/images/{shared['id']}").status_code == 404


def test_admin_sees_everything_but_others_community_by_default(world):
    owner = client(world.token(world.member))
    private = create(owner, visibility="private")
    community = create(owner, visibility="community")
    role_grant(user=world.admin, project=world.other_project, role=Role.ADMIN)
    admin = client(world.token(world.admin, world.other_project))
    assert private["id"] in _visible_ids(admin)
    assert community["id"] not in _visible_ids(admin)
    assert admin.get(f"/image/v2/images/{private['id']}").status_code == 200


def test_schemas_and_import_info(world):
    c = client(world.token(world.reader))
    schema = c.get("/image/v2/schemas/image").json()
    assert schema["name"] == "image" and "disk_format" in schema["properties"]
    assert schema["additionalProperties"] == {"type": "string"}
    assert c.get("/image/v2/schemas/images").json()["name"] == "images"
    assert c.get("/image/v2/schemas/member").json()["name"] == "member"
    assert c.get("/image/v2/schemas/members").json()["name"] == "members"
    assert c.get("/image/v2/schemas/nope").status_code == 404
    methods = c.get("/image/v2/info/import").json()["import-methods"]["value"]
    assert "glance-direct" in methods


def test_create_answers_import_methods_header(world):
    resp = client(world.token(world.member)).post("/image/v2/images", {"name": "x"}, format="json")
    assert "glance-direct" in resp["OpenStack-image-import-methods"]
    assert resp["Location"].endswith(f"/image/v2/images/{resp.json()['id']}")


def test_glance_direct_import(world, image_store, tmp_path):
    c = client(world.token(world.member))
    data = crafted.qemu_img(tmp_path / "d.qcow2", "qcow2", "8M")
    image = create(c, disk_format="qcow2")
    resp = c.put(f"/image/v2/images/{image['id']}/stage", data, content_type="application/octet-stream")
    assert resp.status_code == 204, resp.content
    assert c.get(f"/image/v2/images/{image['id']}").json()["status"] == "uploading"
    resp = c.post(f"/image/v2/images/{image['id']}/import", {"method": {"name": "glance-direct"}}, format="json")
    assert resp.status_code == 202, resp.content
    body = c.get(f"/image/v2/images/{image['id']}").json()
    assert body["status"] == "active" and body["checksum"] == hashlib.md5(data).hexdigest()
    assert store_files(image_store) == [image["id"]]


def test_glance_direct_import_refuses_a_crafted_file(world, image_store, tmp_path):
    c = client(world.token(world.member))
    image = create(c, disk_format="qcow2")
    # The header alone passes (a plain qcow2 start) but the whole file is cut short.
    data = crafted.qemu_img(tmp_path / "d.qcow2", "qcow2", "8M")[:100 * 1024]
    assert c.put(f"/image/v2/images/{image['id']}/stage", data, content_type="application/octet-stream").status_code == 204
    c.post(f"/image/v2/images/{image['id']}/import", {"method": {"name": "glance-direct"}}, format="json")
    row = Image.objects.get(pk=image["id"])
    assert row.status == ImageStatus.QUEUED and "truncated" in row.import_error
    assert store_files(image_store) == []
    resp = c.post(f"/image/v2/images/{image['id']}/import", {"method": {"name": "glance-direct"}}, format="json")
    assert resp.status_code == 409


def test_nova_boots_a_shared_image_once_visible(world):
    from tests.unit.conftest import make_host

    make_host()
    owner = client(world.token(world.member))
    image = create(owner)
    upload(owner, image["id"], b"\0" * 4096)
    other = client(world.token(world.outsider, world.other_project))
    boot = {"server": {"name": "vm", "imageRef": image["id"], "flavorRef": world.flavor.id}}
    assert other.post("/compute/v2.1/servers", boot, format="json").status_code == 404
    owner.post(f"/image/v2/images/{image['id']}/members", {"member": world.other_project.pk.hex}, format="json")
    assert other.post("/compute/v2.1/servers", boot, format="json").status_code == 202
    assert Image.objects.get(pk=image["id"]).visibility == Visibility.SHARED
    assert get_store().exists(image["id"])
