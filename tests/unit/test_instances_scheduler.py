"""Scheduler: weighers, server-group policies, image properties, retry on another host."""

import pytest
from django.db import connection, transaction

from apps.hosts.models import Host
from apps.instances import scheduler, services
from apps.hosts import services as host_services
from apps.instances.models import Flavor, Instance
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
    make_host("arm", architecture="aarch64")  # as its heartbeat reports it (cpu_info's arch)
    world.image.properties = {"architecture": "arm64"}
    world.image.save()
    assert host_of(create(world, "on-arm")) == "arm"
    world.image.properties = {}  # any host
    world.image.save()
    assert {host_of(create(world, f"any{i}")) for i in range(4)} == {"x86", "arm"}


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


def test_candidates_are_the_best_few(world):
    for i in range(8):
        make_host(f"h{i:03d}", memory_mib=1024 * (i + 1))
    best = scheduler.candidates(scheduler.Request(1, 128, 1), limit=3)
    assert [h.hostname for h in best] == ["h007", "h006", "h005"]
    host = Host.objects.get(hostname="h007")  # a candidate holds what the host may take: capacity x ratio
    assert (best[0].pk, best[0].memory_mib) == (host.pk, host.memory_mib * host.ram_allocation_ratio)


def test_availability_zone_and_exclusions(world):
    a = make_host("a", memory_mib=4096)
    b = make_host("b", availability_zone="az2")
    c = make_host("c", availability_zone="az2")
    assert host_of(create(world, "z", availability_zone="az2")) == "b"
    in_az2 = scheduler.Request(1, 128, 1, "az2", exclude=frozenset({b.pk}))
    assert [h.pk for h in scheduler.candidates(in_az2)] == [c.pk]
    assert [h.pk for h in scheduler.candidates(scheduler.Request(1, 128, 1, exclude=frozenset({b.pk, c.pk})))] == [a.pk]


def test_anti_affinity_allows_max_server_per_host(world):
    make_host("a")
    group = services.server_group_create(user=world.member, project=world.project, name="g",
                                         policy="anti-affinity", rules={"max_server_per_host": 2})
    placed = [Instance.objects.get(pk=create(world, f"g{i}", server_group=group).pk) for i in range(3)]
    assert [i.host.hostname if i.host else None for i in placed] == ["a", "a", None]
    assert "No valid host" in placed[2].faults.first().message


def test_a_flavors_aggregate_extra_specs_keep_its_servers_to_matching_aggregates(world):
    """Nova's AggregateInstanceExtraSpecsFilter: aggregate_instance_extra_specs:KEY=VALUE."""
    make_host("roomy", memory_mib=16384)
    make_host("fast")
    make_host("both")
    ssd = host_services.aggregate_create(name="ssd")
    host_services.aggregate_set_metadata(aggregate=ssd, metadata={"disk": "ssd", "tier": "gold"})
    for hostname in ("fast", "both"):
        host_services.aggregate_add_host(aggregate=ssd, hostname=hostname)
    mixed = host_services.aggregate_create(name="mixed")
    host_services.aggregate_set_metadata(aggregate=mixed, metadata={"disk": "hdd, nvme"})
    host_services.aggregate_add_host(aggregate=mixed, hostname="both")

    def placed(name, **specs):
        flavor = Flavor.objects.create(name=name, vcpus=1, ram=128, disk=1, extra_specs={
            **{f"aggregate_instance_extra_specs:{key}": value for key, value in specs.items()},
            "hw:cpu_policy": "shared"})  # other scopes are not the filter's
        instance = services.instance_create(user=world.member, project=world.project, name=name, flavor=flavor,
                                            image=world.image)
        instance = Instance.objects.select_related("host").get(pk=instance.pk)
        return instance.host.hostname if instance.host else instance.faults.first().message

    assert placed("plain") == "roomy"  # no such spec: the most free RAM
    assert placed("ssd", disk="ssd") in ("fast", "both")
    assert placed("ssd-gold", disk="ssd", tier="gold") in ("fast", "both")
    assert placed("nvme", disk="nvme") == "both"  # one of a comma-separated list; its other aggregate
    assert placed("nvme-gold", disk="nvme", tier="gold") == "both"  # every key, from any of its aggregates
    assert "No valid host" in placed("tape", disk="tape")
    assert "No valid host" in placed("silver", tier="silver")


def test_affinity_keeps_to_the_members_host(world):
    make_host("a", memory_mib=4096)
    b = make_host("b", memory_mib=2048)
    group = services.server_group_create(user=world.member, project=world.project, name="g", policy="affinity")
    assert host_of(create(world, "first", server_group=group)) == "a"
    Host.objects.filter(pk=b.pk).update(memory_mib=65536)  # b now has far more room
    assert host_of(create(world, "second", server_group=group)) == "a"


def test_a_placement_costs_the_same_few_statements_whatever_the_hosts(world, django_assert_num_queries):
    hosts = [make_host(f"h{i:02d}") for i in range(30)]
    Instance.objects.bulk_create([
        Instance(project=world.project, user=world.member, name=f"on{i}", flavor=world.flavor, vcpus=1,
                 memory_mib=128, root_gb=1, host=hosts[i % 30]) for i in range(90)])
    group = services.server_group_create(user=world.member, project=world.project, name="g", policy="anti-affinity")
    row_locks = connection.features.has_select_for_update  # PostgreSQL: the group's lock, a savepoint
    # The candidates, the claim, the chosen host's row.
    for in_group, statements in ((None, 4 if row_locks else 3), (group, 5 if row_locks else 3)):
        instance = Instance.objects.create(project=world.project, user=world.member, name="new", flavor=world.flavor,
                                           image=world.image, vcpus=1, memory_mib=128, root_gb=1)
        if in_group:
            in_group.members.add(instance)
        with transaction.atomic(), django_assert_num_queries(statements):
            assert scheduler.claim(instance, in_group) is not None


@pytest.mark.skipif(connection.vendor != "sqlite", reason="reads SQLite's query plan")
@pytest.mark.parametrize("policy", [None, "anti-affinity", "soft-affinity"])
def test_the_host_filter_reads_the_best_hosts_first_and_never_every_hosts_row(world, policy):
    """The candidates query reads the claimed rows in the order of the index on free RAM,
    stopping at the best few, and the changed hosts by their keys; soft (anti-)affinity, which
    must weigh every host, reads them from the index of the columns it filters and weighs by, not
    from the hosts' rows, which carry their heartbeat's JSON (domains, CPU)."""
    make_host("a")
    group = policy and services.server_group_create(user=world.member, project=world.project, name="g",
                                                     policy=policy)
    request = scheduler.Request(vcpus=1, memory_mib=128, disk_gb=1, availability_zone="nova", architecture="x86_64")
    statements = []

    def capture(execute, sql, params, many, context):
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        assert [h.hostname for h in scheduler.candidates(request, group or None)] == ["a"]
    [(sql, params)] = statements
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        plan = [row[-1] for row in cursor.fetchall()]
    if policy == "soft-affinity":
        assert any(step.startswith("SEARCH h USING") and "INDEX hosts_host_scheduler" in step for step in plan), plan
    else:
        assert "SEARCH c USING INDEX hosts_claimed_free_memory (free_memory_mib>?)" in plan, plan
        assert "SEARCH c USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan  # the changed hosts
        assert "SEARCH h USING INDEX sqlite_autoindex_hosts_host_3 (usage_key=?)" in plan, plan
    assert not [step for step in plan if step.split()[:2] in (["SCAN", "h"], ["SCAN", "c"], ["SCAN", "r"])], plan


def test_a_claim_asks_again_when_its_best_hosts_filled_meanwhile(world, monkeypatch):
    for name, memory in (("a", 1024), ("b", 768), ("c", 512)):
        make_host(name, vcpus=64, memory_mib=memory)
    monkeypatch.setattr(scheduler, "MAX_CANDIDATES", 2)
    real, asked = scheduler.candidates, []

    def racing(request, group=None, **kwargs):
        """The candidates, then other creates take all their room before the claim locks them."""
        found = real(request, group, **kwargs)
        asked.append([h.hostname for h in found])
        for host in found if len(asked) == 1 else ():
            Instance.objects.bulk_create([
                Instance(project=world.project, user=world.member, name="other", flavor=world.flavor, vcpus=1,
                         memory_mib=128, root_gb=1, host_id=host.pk) for _ in range(int(host.memory_mib) // 128)])
        return found

    monkeypatch.setattr(scheduler, "candidates", racing)
    assert host_of(create(world)) == "c"
    assert asked == [["a", "b"], ["c"]]


def test_resize_room_is_checked_on_the_instance_host(world):
    make_host("a", vcpus=2)
    instance = Instance.objects.select_related("host").get(pk=create(world).pk)
    disks = {"root_gb": 1, "ephemeral_gb": 0, "swap_mb": 0}
    with transaction.atomic():
        assert scheduler.fits_growth(instance, {"vcpus": 2, "memory_mib": 256, **disks})
        assert not scheduler.fits_growth(instance, {"vcpus": 3, "memory_mib": 128, **disks})
