"""Nova's fixed quotas that cloudmgr enforces: key pairs per user, server groups per project and
servers per group (os-quota-sets and limits show the same numbers)."""

import pytest

from apps.instances.models import Instance, Keypair
from apps.tenants.models import Quota
from apps.tenants.services import quota_set
from tests.unit.conftest import make_host
from tests.unit.test_compute_api_microversions import Api, nova_error

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test"


def test_key_pairs_per_user(world):
    c = Api(world, world.member)
    Keypair.objects.bulk_create(Keypair(user=world.member, name=f"k{i}", public_key=KEY, fingerprint="x")
                                for i in range(99))
    assert c("post", "/os-keypairs", "2.1", {"keypair": {"name": "last", "public_key": KEY}}).status_code == 200
    _, message = nova_error(c("post", "/os-keypairs", "2.1", {"keypair": {"name": "one-more"}}), 403)
    assert message == "Quota exceeded, too many key pairs."
    outsider = Api(world, world.outsider, world.other_project)
    assert outsider("post", "/os-keypairs", "2.2", {"keypair": {"name": "theirs"}}).status_code == 201  # per user
    limits = c("get", "/limits", "2.1").json()["limits"]["absolute"]
    assert limits["maxTotalKeypairs"] == 100


def test_server_groups_per_project(world):
    c = Api(world, world.member)
    for i in range(10):
        body = {"server_group": {"name": f"g{i}", "policies": ["affinity"]}}
        assert c("post", "/os-server-groups", "2.1", body).status_code == 200
    body = {"server_group": {"name": "one-more", "policies": ["affinity"]}}
    _, message = nova_error(c("post", "/os-server-groups", "2.1", body), 403)
    assert message == "Quota exceeded, too many server groups."
    outsider = Api(world, world.outsider, world.other_project)
    assert outsider("post", "/os-server-groups", "2.1", body).status_code == 200  # per project
    quotas = c("get", f"/os-quota-sets/{world.project.id.hex}", "2.1").json()["quota_set"]
    assert (quotas["server_groups"], quotas["server_group_members"]) == (10, 10)


def test_servers_per_group(world, fake_driver):
    make_host(vcpus=64, memory_mib=65536, disk_gb=1000)
    quota_set(project=world.project, resource="instances", limit=20)  # the group's limit comes first
    c = Api(world, world.member)
    group = c("post", "/os-server-groups", "2.1", {"server_group": {"name": "g", "policies": ["affinity"]}})
    hint = {"os:scheduler_hints": {"group": group.json()["server_group"]["id"]}}

    def member(name):
        return c("post", "/servers", "2.1", {"server": {"name": name, "imageRef": str(world.image.id),
                                                        "flavorRef": world.flavor.id}, **hint})

    members = [member(f"m{i}").json()["server"]["id"] for i in range(10)]
    shown = c("get", f"/os-server-groups/{group.json()['server_group']['id']}", "2.1").json()["server_group"]
    assert sorted(shown["members"]) == sorted(members)
    cores = Quota.objects.get(project=world.project, resource="cores").in_use
    _, message = nova_error(member("one-more"), 403)
    assert message == "Quota exceeded, too many servers in group"
    assert not Instance.objects.filter(name="one-more").exists()  # nothing left behind
    assert Quota.objects.get(project=world.project, resource="cores").in_use == cores  # nor reserved
    assert c("delete", f"/servers/{members[0]}", "2.1").status_code == 204
    assert member("one-more").status_code == 202  # a deleted member makes room


def test_the_limits_are_settings(world, settings):
    settings.CLOUDMGR_COMPUTE_LIMITS = {"key_pairs": 1, "server_groups": -1, "server_group_members": 3}
    c = Api(world, world.member)
    assert c("post", "/os-keypairs", "2.2", {"keypair": {"name": "a", "public_key": KEY}}).status_code == 201
    nova_error(c("post", "/os-keypairs", "2.2", {"keypair": {"name": "b", "public_key": KEY}}), 403)
    for i in range(12):  # -1: no limit
        assert c("post", "/os-server-groups", "2.1",
                 {"server_group": {"name": f"g{i}", "policies": ["affinity"]}}).status_code == 200
    quotas = c("get", f"/os-quota-sets/{world.project.id.hex}", "2.1").json()["quota_set"]
    assert (quotas["key_pairs"], quotas["server_groups"], quotas["server_group_members"]) == (1, -1, 3)
