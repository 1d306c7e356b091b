"""The Cinder v3 API: the generic checks on every endpoint (401, 403 for reader writes, 404
across projects, error bodies, pinned query counts of lists), Cinder's bodies and status codes,
and each microversion's change just below and at its version."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from apps.volumes import services
from apps.volumes.models import Message, Volume

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def storage(fake_storage):
    return fake_storage


def client(token=None, version: str | None = None) -> APIClient:
    c = APIClient()
    if token:
        c.credentials(HTTP_X_AUTH_TOKEN=token, **({"HTTP_OPENSTACK_API_VERSION": f"volume {version}"}
                                                   if version else {}))
    return c


def base(project) -> str:
    return f"/volume/v3/{project.pk.hex}"


def fault(resp, status: int) -> str:
    """Cinder's error body: ``{"<kind>": {"code", "message"}}`` with a readable message."""
    assert resp.status_code == status, resp.content
    body = resp.json()
    assert len(body) == 1, body
    (inner,) = body.values()
    assert inner["code"] == status and inner["message"], body
    return inner["message"]


@pytest.fixture
def objects(volume_objects):
    return volume_objects


# collection -> (a valid update body or None, a create body)
RESOURCES = {
    "volumes": ({"volume": {"name": "x"}}, {"volume": {"size": 1}}),
    "snapshots": ({"snapshot": {"name": "x"}}, {"snapshot": {"volume_id": "placeholder"}}),
    "backups": ({"backup": {"name": "x"}}, {"backup": {"volume_id": "placeholder"}}),
    "attachments": ({"attachment": {"connector": {}}}, {"attachment": {"volume_uuid": "placeholder"}}),
    "os-volume-transfer": (None, {"transfer": {"volume_id": "placeholder"}}),
    "messages": (None, None),
}
COLLECTIONS = list(RESOURCES)
LATEST = "3.42"


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_no_token_is_401_with_keystones_body(world, objects, collection):
    pk = objects[collection].pk
    url = base(world.project)
    for method, path in [("get", f"{url}/{collection}"), ("post", f"{url}/{collection}"),
                         ("get", f"{url}/{collection}/{pk}"), ("put", f"{url}/{collection}/{pk}"),
                         ("delete", f"{url}/{collection}/{pk}")]:
        resp = getattr(client(), method)(path, {}, format="json")
        assert resp.status_code == 401, (method, path)
        assert resp.json()["error"]["code"] == 401 and resp["WWW-Authenticate"].startswith("Keystone")
    assert client("not-a-token").get(f"{url}/{collection}").status_code == 401


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_reader_reads_but_never_writes(world, objects, collection):
    rita = client(world.token(world.reader), LATEST)
    url, pk = base(world.project), objects[collection].pk
    assert rita.get(f"{url}/{collection}").status_code == 200
    assert rita.get(f"{url}/{collection}/{pk}").status_code == 200
    update, create = RESOURCES[collection]
    fault(rita.post(f"{url}/{collection}", create or {}, format="json"), 403)
    if update:
        fault(rita.put(f"{url}/{collection}/{pk}", update, format="json"), 403)
    fault(rita.delete(f"{url}/{collection}/{pk}"), 403)


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_another_projects_object_is_404_on_every_method(world, objects, collection):
    bob = client(world.token(world.outsider, world.other_project), LATEST)
    url, pk = base(world.other_project), objects[collection].pk
    assert "could not be found" in fault(bob.get(f"{url}/{collection}/{pk}"), 404)
    update, _ = RESOURCES[collection]
    if update:
        fault(bob.put(f"{url}/{collection}/{pk}", update, format="json"), 404)
    fault(bob.delete(f"{url}/{collection}/{pk}"), 404)
    listed = bob.get(f"{url}/{collection}").json()
    key = "transfers" if collection == "os-volume-transfer" else collection
    assert listed[key] == []
    fault(bob.get(f"{url}/{collection}/not-a-uuid"), 404)


def test_actions_on_another_projects_objects_are_404(world, objects):
    bob = client(world.token(world.outsider, world.other_project), LATEST)
    url = base(world.other_project)
    volume, snapshot, backup = objects["volumes"], objects["snapshots"], objects["backups"]
    fault(bob.post(f"{url}/volumes/{volume.pk}/action", {"os-extend": {"new_size": 2}}, format="json"), 404)
    fault(bob.get(f"{url}/volumes/{volume.pk}/metadata"), 404)
    fault(bob.post(f"{url}/snapshots", {"snapshot": {"volume_id": str(volume.pk)}}, format="json"), 404)
    fault(bob.post(f"{url}/backups", {"backup": {"volume_id": str(volume.pk)}}, format="json"), 404)
    fault(bob.post(f"{url}/backups/{backup.pk}/restore", {"restore": {}}, format="json"), 404)
    fault(bob.post(f"{url}/volumes", {"volume": {"snapshot_id": str(snapshot.pk)}}, format="json"), 404)
    fault(bob.post(f"{url}/volumes", {"volume": {"source_volid": str(volume.pk)}}, format="json"), 404)
    vm = objects["server"]
    fault(bob.post(f"{url}/attachments", {"attachment": {"volume_uuid": str(volume.pk),
                                                          "instance_uuid": str(vm.pk)}}, format="json"), 404)


def test_a_url_naming_another_project_is_400(world, objects):
    alice = client(world.token(world.member))
    assert fault(alice.get(f"{base(world.other_project)}/volumes"), 400) == "Malformed request url"


LIST_URLS = ["volumes", "volumes/detail", "snapshots", "snapshots/detail", "backups", "backups/detail",
             "attachments", "attachments/detail", "os-volume-transfer", "os-volume-transfer/detail", "messages",
             "types"]


@pytest.mark.parametrize("path", LIST_URLS)
def test_list_query_count_does_not_grow_with_the_objects(world, objects, path):
    c = client(world.token(world.member), LATEST)
    url = base(world.project)

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert c.get(f"{url}/{path}").status_code == 200
        return len(ctx.captured_queries)

    one = count()
    vm = objects["server"]
    for i in range(3):
        volume = services.volume_create(user=world.member, project=world.project, size=1, name=f"more{i}")
        services.snapshot_create(volume=volume, user=world.member)
        services.backup_create(volume=Volume.objects.get(pk=volume.pk), user=world.member)
        services.volume_attach(volume=Volume.objects.get(pk=volume.pk), instance=vm, user=world.member)
        services.volume_type_create(name=f"type{i}")
        Message.objects.create(project=world.project, resource_type="VOLUME", event_id="VOLUME_VOLUME_001_001",
                               user_message="x", expires_at="2099-01-01T00:00:00Z")
        spare = services.volume_create(user=world.member, project=world.project, size=1)
        services.transfer_create(volume=spare, user=world.member)
    assert count() == one


# --- versions and microversions ----------------------------------------------------------------


def test_version_documents_need_no_token(world):
    for path in ("/volume", "/volume/"):
        resp = client().get(path)
        assert resp.status_code == 300
        (version,) = resp.json()["versions"]
        assert version["id"] == "v3.0" and version["min_version"] == "3.0" and version["version"] == LATEST
        assert set(version) >= {"id", "status", "updated", "links", "min_version", "version", "media-types"}
    for path in ("/volume/v3/", f"/volume/v3/{world.project.pk.hex}"):
        resp = client().get(path)
        assert resp.status_code == 200 and resp.json()["versions"][0]["status"] == "CURRENT"


def test_microversion_header_is_echoed_and_checked(world, objects):
    token = world.token(world.member)
    resp = client(token, "3.27").get(f"{base(world.project)}/volumes")
    assert resp["OpenStack-API-Version"] == "volume 3.27" and "OpenStack-API-Version" in resp["Vary"]
    assert client(token).get(f"{base(world.project)}/volumes")["OpenStack-API-Version"] == "volume 3.0"
    assert client(token, "latest").get(f"{base(world.project)}/volumes")["OpenStack-API-Version"] == f"volume {LATEST}"
    assert "maximum is 3.42" in fault(client(token, "3.43").get(f"{base(world.project)}/volumes"), 406)


def test_attachments_exist_from_3_27(world, objects):
    token, url = world.token(world.member), base(world.project)
    fault(client(token, "3.26").get(f"{url}/attachments"), 404)
    assert client(token, "3.27").get(f"{url}/attachments").status_code == 200


def test_messages_from_3_3_and_their_paging_from_3_5(world, objects):
    token, url = world.token(world.member), base(world.project)
    fault(client(token, "3.2").get(f"{url}/messages"), 404)
    body = client(token, "3.3").get(f"{url}/messages").json()["messages"]
    assert body[0]["user_message"] == "create volume: boom" and body[0]["resource_type"] == "VOLUME"
    Message.objects.create(project=world.project, resource_type="VOLUME", event_id="E", user_message="y",
                           expires_at="2099-01-01T00:00:00Z")
    assert len(client(token, "3.3").get(f"{url}/messages?limit=1").json()["messages"]) == 2  # no paging yet
    paged = client(token, "3.5").get(f"{url}/messages?limit=1").json()
    assert len(paged["messages"]) == 1 and paged["messages_links"][0]["rel"] == "next"


def test_summary_from_3_12_with_metadata_from_3_36(world, objects):
    token, url = world.token(world.member), base(world.project)
    fault(client(token, "3.11").get(f"{url}/volumes/summary"), 404)
    assert client(token, "3.12").get(f"{url}/volumes/summary").json() == {
        "volume-summary": {"total_count": 3, "total_size": 3}}
    assert "metadata" in client(token, "3.36").get(f"{url}/volumes/summary").json()["volume-summary"]


def test_snapshot_user_id_from_3_41_and_group_snapshot_id_from_3_14(world, objects):
    token, url, pk = world.token(world.member), base(world.project), objects["snapshots"].pk
    old = client(token, "3.13").get(f"{url}/snapshots/{pk}").json()["snapshot"]
    assert "user_id" not in old and "group_snapshot_id" not in old
    assert "user_id" not in client(token, "3.40").get(f"{url}/snapshots/{pk}").json()["snapshot"]
    new = client(token, "3.41").get(f"{url}/snapshots/{pk}").json()["snapshot"]
    assert new["user_id"] == world.member.pk.hex and new["group_snapshot_id"] is None


def test_backup_project_attribute_from_3_18_and_update_from_3_9(world, objects):
    token, url, pk = world.token(world.member), base(world.project), objects["backups"].pk
    assert "os-backup-project-attr:project_id" not in client(token, "3.17").get(f"{url}/backups/{pk}").json()["backup"]
    body = client(token, "3.18").get(f"{url}/backups/{pk}").json()["backup"]
    assert body["os-backup-project-attr:project_id"] == world.project.pk.hex
    fault(client(token, "3.8").put(f"{url}/backups/{pk}", {"backup": {"name": "n"}}, format="json"), 404)
    assert client(token, "3.9").put(f"{url}/backups/{pk}", {"backup": {"name": "n"}},
                                    format="json").json()["backup"]["name"] == "n"


def test_filters_like_from_3_34_and_unknown_refused_from_3_31(world, objects):
    token, url = world.token(world.member), base(world.project)
    names = lambda resp: sorted(v["name"] for v in resp.json()["volumes"])  # noqa: E731
    assert names(client(token, "3.30").get(f"{url}/volumes?colour=red")) == ["attached", "spare", "v1"]
    assert "colour" in fault(client(token, "3.31").get(f"{url}/volumes?colour=red"), 400)
    assert names(client(token, "3.0").get(f"{url}/volumes?name=v1")) == ["v1"]
    assert names(client(token, "3.34").get(f"{url}/volumes?name~=tac")) == ["attached"]
    fault(client(token, "3.33").get(f"{url}/volumes?name~=tac"), 400)  # not a filter yet at 3.33
    resp = client(token, "3.33").get(f"{url}/resource_filters?resource=volume")
    assert "name" in resp.json()["resource_filters"][0]["filters"]
    fault(client(token, "3.32").get(f"{url}/resource_filters"), 404)


def test_bootable_filter_is_strict_from_3_2(world, objects):
    token, url = world.token(world.member), base(world.project)
    assert len(client(token, "3.1").get(f"{url}/volumes?bootable=false").json()["volumes"]) == 0  # any value: true
    assert len(client(token, "3.2").get(f"{url}/volumes?bootable=false").json()["volumes"]) == 3
    fault(client(token, "3.2").get(f"{url}/volumes?bootable=maybe"), 400)


def test_extend_in_use_from_3_42(world, objects):
    token, url, volume = world.token(world.member), base(world.project), objects["attachments"].volume
    message = fault(client(token, "3.41").post(f"{url}/volumes/{volume.pk}/action", {"os-extend": {"new_size": 2}},
                                               format="json"), 400)
    assert "in-use" in message
    assert client(token, "3.42").post(f"{url}/volumes/{volume.pk}/action", {"os-extend": {"new_size": 2}},
                                      format="json").status_code == 202
    assert Volume.objects.get(pk=volume.pk).size == 2


def test_revert_from_3_40(world, objects):
    token, url = world.token(world.member), base(world.project)
    volume, snapshot = objects["volumes"], objects["snapshots"]
    body = {"revert": {"snapshot_id": str(snapshot.pk)}}
    assert "no such action" in fault(client(token, "3.39").post(f"{url}/volumes/{volume.pk}/action", body,
                                                                format="json"), 400)
    assert client(token, "3.40").post(f"{url}/volumes/{volume.pk}/action", body, format="json").status_code == 202
    assert Volume.objects.get(pk=volume.pk).status == "available"


def test_force_delete_query_from_3_23_for_admins(world, objects):
    url, volume = base(world.project), objects["volumes"]
    Volume.objects.filter(pk=volume.pk).update(status="error_deleting")
    admin = client(world.token(world.admin), "3.23")
    fault(client(world.token(world.admin), "3.22").delete(f"{url}/volumes/{volume.pk}?force=true&cascade=true"), 400)
    fault(client(world.token(world.member), "3.23").delete(f"{url}/volumes/{volume.pk}?force=true"), 403)
    assert admin.delete(f"{url}/volumes/{volume.pk}?force=true&cascade=true").status_code == 202
    assert not Volume.objects.filter(pk=volume.pk).exists()


# --- bodies and status codes --------------------------------------------------------------------


def test_volume_create_show_update_and_delete_bodies(world, objects):
    c, url = client(world.token(world.member), LATEST), base(world.project)
    resp = c.post(f"{url}/volumes", {"volume": {"size": 1, "name": "new", "metadata": {"a": "b"}}}, format="json")
    assert resp.status_code == 202, resp.content
    body = resp.json()["volume"]
    # In-process agents have made it by the time the body is written; a real cloud says creating.
    assert body["status"] in ("creating", "available") and body["size"] == 1 and body["metadata"] == {"a": "b"}
    assert body["volume_type"] == "__DEFAULT__" and body["bootable"] == "false" and body["attachments"] == []
    assert body["os-vol-tenant-attr:tenant_id"] == world.project.pk.hex and "os-vol-host-attr:host" not in body
    shown = c.get(f"{url}/volumes/{body['id']}").json()["volume"]
    assert shown["status"] == "available" and shown["links"][0]["rel"] == "self"
    updated = c.put(f"{url}/volumes/{body['id']}", {"volume": {"name": "renamed"}}, format="json").json()["volume"]
    assert updated["name"] == "renamed"
    assert c.post(f"{url}/volumes/{body['id']}/metadata", {"metadata": {"c": "d"}},
                  format="json").json() == {"metadata": {"a": "b", "c": "d"}}
    assert c.delete(f"{url}/volumes/{body['id']}").status_code == 202
    fault(c.get(f"{url}/volumes/{body['id']}"), 404)


def test_attached_volume_delete_is_400_and_quota_is_413(world, objects):
    c, url = client(world.token(world.member), LATEST), base(world.project)
    attached = objects["attachments"].volume
    assert "attached" in fault(c.delete(f"{url}/volumes/{attached.pk}"), 400)
    from apps.tenants.services import quota_set

    quota_set(project=world.project, resource="gigabytes", limit=5)
    resp = c.post(f"{url}/volumes", {"volume": {"size": 5}}, format="json")
    assert resp.status_code == 413 and resp.json()["overLimit"]["retryAfter"] == "0"
    assert "gigabytes" in resp.json()["overLimit"]["message"]
    assert "multiattach" in fault(c.post(f"{url}/volumes", {"volume": {"size": 1, "multiattach": True}},
                                         format="json"), 400)
    assert "size" in fault(c.post(f"{url}/volumes", {"volume": {"name": "x"}}, format="json"), 400)
    assert "Additional properties" in fault(c.post(f"{url}/volumes", {"volume": {"size": 1, "colour": "red"}},
                                                   format="json"), 400)


def test_snapshot_backup_restore_and_transfer_bodies(world, objects):
    c, url = client(world.token(world.member), LATEST), base(world.project)
    volume = objects["volumes"]
    snap = c.post(f"{url}/snapshots", {"snapshot": {"volume_id": str(volume.pk), "name": "s2"}}, format="json")
    assert snap.status_code == 202 and snap.json()["snapshot"]["name"] == "s2"
    backup = c.post(f"{url}/backups", {"backup": {"volume_id": str(volume.pk), "name": "b2", "incremental": True}},
                    format="json")
    assert backup.status_code == 202 and set(backup.json()["backup"]) == {"id", "name", "links"}
    detail = c.get(f"{url}/backups/{backup.json()['backup']['id']}").json()["backup"]
    assert detail["is_incremental"] is True and detail["status"] == "available"
    assert c.get(f"{url}/backups/{objects['backups'].pk}").json()["backup"]["has_dependent_backups"] is True
    restore = c.post(f"{url}/backups/{objects['backups'].pk}/restore", {"restore": {"name": "back"}}, format="json")
    assert restore.status_code == 202 and restore.json()["restore"]["volume_name"] == "back"
    transfer = c.post(f"{url}/os-volume-transfer", {"transfer": {"volume_id": restore.json()["restore"]["volume_id"],
                                                                 "name": "gift"}}, format="json")
    assert transfer.status_code == 202 and len(transfer.json()["transfer"]["auth_key"]) == 16
    transfer_id = transfer.json()["transfer"]["id"]
    assert "auth_key" not in c.get(f"{url}/os-volume-transfer/{transfer_id}").json()["transfer"]
    bob = client(world.token(world.outsider, world.other_project), LATEST)
    other = base(world.other_project)
    assert "invalid auth key" in fault(bob.post(f"{other}/os-volume-transfer/{transfer_id}/accept",
                                                {"accept": {"auth_key": "nope"}}, format="json"), 400)
    accepted = bob.post(f"{other}/os-volume-transfer/{transfer_id}/accept",
                        {"accept": {"auth_key": transfer.json()["transfer"]["auth_key"]}}, format="json")
    assert accepted.status_code == 202
    assert bob.get(f"{other}/volumes/{restore.json()['restore']['volume_id']}").status_code == 200


def test_types_are_for_admins_to_change_and_hide_their_backend_from_users(world, objects):
    url = base(world.project)
    alice = client(world.token(world.member), LATEST)
    fault(alice.post(f"{url}/types", {"volume_type": {"name": "t"}}, format="json"), 403)
    admin = client(world.token(world.admin, world.project), LATEST)
    resp = admin.post(f"{url}/types", {"volume_type": {"name": "thin", "extra_specs": {
        "volume_backend_name": "lvm", "multiattach": "<is> True"}}}, format="json")
    assert resp.status_code == 200, resp.content
    type_id = resp.json()["volume_type"]["id"]
    assert alice.get(f"{url}/types/{type_id}").json()["volume_type"]["extra_specs"] == {"multiattach": "<is> True"}
    assert admin.get(f"{url}/types/{type_id}/extra_specs").json()["extra_specs"]["volume_backend_name"] == "lvm"
    assert alice.get(f"{url}/types/default").json()["volume_type"]["name"] == "__DEFAULT__"
    fault(alice.delete(f"{url}/types/{type_id}"), 403)
    assert "Default volume type" in fault(admin.delete(f"{url}/types/default"), 400)
    assert admin.delete(f"{url}/types/{type_id}").status_code == 202


def test_quota_sets_show_usage_and_only_admins_change_them(world, objects):
    url = base(world.project)
    alice = client(world.token(world.member), LATEST)
    body = alice.get(f"{url}/os-quota-sets/{world.project.pk.hex}?usage=true").json()["quota_set"]
    assert body["volumes"] == {"limit": 10, "in_use": 3, "reserved": 0, "allocated": 0}
    assert body["snapshots"]["in_use"] == 1 and body["backups"]["in_use"] == 1
    fault(alice.get(f"{url}/os-quota-sets/{world.other_project.pk.hex}"), 403)
    fault(alice.put(f"{url}/os-quota-sets/{world.project.pk.hex}", {"quota_set": {"volumes": 5}}, format="json"), 403)
    admin = client(world.token(world.admin, world.project), LATEST)
    resp = admin.put(f"{url}/os-quota-sets/{world.project.pk.hex}", {"quota_set": {"volumes": 5}}, format="json")
    assert resp.json()["quota_set"]["volumes"] == 5
    assert "0 to 2147483647" in fault(admin.put(f"{url}/os-quota-sets/{world.project.pk.hex}",
                                                {"quota_set": {"volumes": 10**30}}, format="json"), 400)
    assert "Bad key" in fault(admin.put(f"{url}/os-quota-sets/{world.project.pk.hex}",
                                        {"quota_set": {"cores": 5}}, format="json"), 400)
    limits = alice.get(f"{url}/limits").json()["limits"]["absolute"]
    assert limits["maxTotalVolumes"] == 5 and limits["totalVolumesUsed"] == 3


def test_other_endpoints_need_a_token(world, objects):
    url = base(world.project)
    for path in ("types", "os-quota-sets/x", "limits", "os-availability-zone", "extensions", "volumes/summary",
                 "resource_filters"):
        assert client().get(f"{url}/{path}").status_code == 401, path
    alice = client(world.token(world.member), LATEST)
    assert alice.get(f"{url}/os-availability-zone").json()["availabilityZoneInfo"][0]["zoneState"]["available"]
    assert {e["alias"] for e in alice.get(f"{url}/extensions").json()["extensions"]} >= {"os-volume-transfer"}


def test_metadata_etag_from_3_15_refuses_a_lost_update(world, objects):
    c, url = client(world.token(world.member), "3.15"), base(world.project)
    path = f"{url}/volumes/{objects['volumes'].pk}/metadata"
    assert "ETag" not in client(world.token(world.member), "3.14").get(path)
    etag = c.get(path)["ETag"]
    assert c.put(path, {"metadata": {"a": "1"}}, format="json", HTTP_IF_MATCH=etag).status_code == 200
    late = c.put(path, {"metadata": {"b": "2"}}, format="json", HTTP_IF_MATCH=etag)  # read before the change
    assert late.status_code == 412 and "changed" in late.json()["preconditionFailed"]["message"]
    assert c.get(path).json() == {"metadata": {"a": "1"}}
    assert c.put(path, {"metadata": {"b": "2"}}, format="json").status_code == 200  # no If-Match: as before
