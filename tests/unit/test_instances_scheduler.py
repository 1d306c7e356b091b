"""Scheduler: weighers, server-group policies, image properties, retry on another host."""

import pytest

from apps.instances import scheduler, services
from apps.instances.models import Instance
from apps.instances.states import VmState
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)


def create(world, name="vm", **kwargs):
    return services.instance_create(user=world.member, project=world.project, name=name, flavor=world.flavor,
                                    image=world.image, **kwargs)


def host_of(instance):
    return Instance.objects.get(pk=instance.pk).host.hostname


def test_pack_weigher_fills_the_fullest_host_first(world, settings):
    settings.CLOUDMGR_SCHEDULER_WEIGHER = "pack"
    make_host("big", memory_mib=8192)
    make_host("small", memory_mib=1024)
    assert [host_of(create(world, f"p{i}")) for i in range(3)] == ["small"] * 3


def test_spread_weigher_alternates(world):
    make_host("a", memory_mib=1024)
    make_host("b", memory_mib=1024)
    assert sorted(host_of(create(world, f"s{i}")) for i in range(2)) == ["a", "b"]


@pytest.mark.parametrize("policy,expect_same", [("affinity", True), ("anti-affinity", False),
                                                ("soft-affinity", True), ("soft-anti-affinity", False)])
def test_server_group_policies(world, policy, expect_same):
    make_host("a")
    make_host("b")
    group = services.server_group_create(user=world.member, project=world.project, name="g", policy=policy)
    hosts = [host_of(create(world, f"g{i}", server_group=group)) for i in range(2)]
    assert (hosts[0] == hosts[1]) is expect_same


def test_soft_anti_affinity_still_places_when_hosts_run_out(world):
    make_host("a")
    group = services.server_group_create(user=world.member, project=world.project, name="g",
                                         policy="soft-anti-affinity")
    assert [host_of(create(world, f"g{i}", server_group=group)) for i in range(2)] == ["a", "a"]


def test_image_architecture_filter(world):
    make_host("x86")
    world.image.properties = {"architecture": "aarch64"}
    world.image.save()
    instance = Instance.objects.get(pk=create(world).pk)
    assert instance.vm_state == VmState.ERROR and instance.host is None
    world.image.properties = {"architecture": "amd64"}  # an alias of x86_64
    world.image.save()
    assert host_of(create(world, "ok")) == "x86"


def test_a_failed_spawn_is_retried_on_another_host(world, fake_driver):
    make_host("a", memory_mib=2048)
    make_host("b", memory_mib=1024)
    fake_driver.fail_next_spawn("host a is unwell")
    instance = Instance.objects.get(pk=create(world).pk)
    assert (instance.vm_state, instance.host.hostname) == (VmState.ACTIVE, "b")
    events = list(instance.actions.get(action="create").events.order_by("started_at").values_list("host", "result"))
    assert events == [("a", "Error"), ("b", "Success")]


def test_retries_stop_after_max_attempts(world, fake_driver, settings):
    settings.CLOUDMGR_SCHEDULER_MAX_ATTEMPTS = 2
    for name in "abc":
        make_host(name)
    fake_driver.fail_next_spawn("broken everywhere", times=3)
    instance = Instance.objects.get(pk=create(world).pk)
    assert instance.vm_state == VmState.ERROR
    assert "broken everywhere" in instance.faults.first().message
    assert instance.actions.get(action="create").events.count() == 2


def test_candidates_are_bounded(world):
    for i in range(scheduler.MAX_CANDIDATES + 5):
        make_host(f"h{i:03d}")
    assert len(scheduler.candidates(scheduler.Request(1, 128, 1))) == scheduler.MAX_CANDIDATES
