"""Races with real threads against the real database: quotas and host claims must hold.

Run on SQLite (IMMEDIATE transactions) in the main suite and on PostgreSQL (row locks) by
`make test`, which runs `pytest -m concurrency` once more with DATABASE_URL set.
"""

import threading

import pytest
from django.db import connection, connections, transaction

from apps.instances import services
from apps.instances.models import Instance
from apps.tenants.models import Quota
from apps.tenants.services import quota_release, quota_reserve, quota_set
from cloudmgr.exceptions import ApplicationError, QuotaExceeded
from tests.unit.conftest import make_host

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.concurrency]

THREADS = 50
ROUNDS = 25  # reservations per thread where a race needs many turns to show


@pytest.fixture
def unlimited_group_members(settings):
    """Groups of more than Nova's default 10 servers (the races below need 25 and 50)."""
    settings.CLOUDMGR_COMPUTE_LIMITS = {**settings.CLOUDMGR_COMPUTE_LIMITS, "server_group_members": -1}


def race(fn, n=THREADS):
    """Run fn(i) in n threads released at once; returns (results, errors)."""
    barrier = threading.Barrier(n)
    results, errors = [], []
    lock = threading.Lock()

    def run(i):
        try:
            barrier.wait()
            value = fn(i)
            with lock:
                results.append(value)
        except Exception as exc:  # collected and asserted on by the test
            with lock:
                errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_database_in_use(db):
    print("concurrency tests run on", connection.vendor)


def test_concurrent_creates_never_exceed_the_quota(world):
    make_host(vcpus=1000, memory_mib=10**6, disk_gb=10**4)
    quota_set(project=world.project, resource="instances", limit=7)
    results, errors = race(lambda i: services.instance_create(
        user=world.member, project=world.project, name=f"vm{i}", flavor=world.flavor, image=world.image))
    assert len(results) == 7
    assert len(errors) == THREADS - 7
    assert all(isinstance(e, QuotaExceeded) and "instances" in e.message for e in errors), errors[:3]
    assert Instance.objects.filter(project=world.project, deleted_at__isnull=True).count() == 7
    assert Quota.objects.get(project=world.project, resource="instances").in_use == 7


def test_concurrent_creates_never_overcommit_a_host(world):
    """Two hosts with room for exactly 20 nano instances in all; 50 try. No quota in the way."""
    for resource in ("instances", "cores", "ram"):
        quota_set(project=world.project, resource=resource, limit=-1)
    a = make_host("a", vcpus=12, memory_mib=12 * 128)
    b = make_host("b", vcpus=8, memory_mib=8 * 128)
    results, errors = race(lambda i: services.instance_create(
        user=world.member, project=world.project, name=f"vm{i}", flavor=world.flavor, image=world.image))
    assert not errors, errors[:3]
    placed = Instance.objects.filter(host__isnull=False, deleted_at__isnull=True)
    assert placed.filter(host=a).count() == 12
    assert placed.filter(host=b).count() == 8
    losers = Instance.objects.filter(host__isnull=True)
    assert losers.count() == THREADS - 20
    assert all("No valid host" in i.faults.first().message for i in losers)


def test_concurrent_deletes_release_quota_once(world):
    make_host()
    instance = services.instance_create(
        user=world.member, project=world.project, name="once", flavor=world.flavor, image=world.image)
    results, errors = race(lambda i: services.instance_delete(
        instance=Instance.objects.get(pk=instance.pk), user=world.member), n=10)
    assert all(isinstance(e, ApplicationError) for e in errors), errors[:3]
    quotas = {q.resource: q.in_use for q in Quota.objects.filter(project=world.project)}
    assert quotas["instances"] == 0 and quotas["ram"] == 0


def test_reservations_of_the_same_resources_never_deadlock(world):
    """Each reservation locks several quota rows: taken in differing orders (PostgreSQL's physical
    order moves with every update), two of them deadlock and one fails with an OperationalError."""
    resources = ("volumes", "gigabytes", "snapshots")
    for resource in resources:
        quota_set(project=world.project, resource=resource, limit=-1)

    def reserve_and_release(i):
        for _ in range(ROUNDS):
            with transaction.atomic():
                quota_reserve(project=world.project, deltas=dict.fromkeys(resources[:: 1 if i % 2 else -1], 1))
            quota_release(project=world.project, deltas=dict.fromkeys(resources, 1))

    _, errors = race(reserve_and_release, n=20)
    assert errors == [], errors[:3]
    assert {q.resource: q.in_use for q in Quota.objects.filter(project=world.project, resource__in=resources)} \
        == dict.fromkeys(resources, 0)


def test_concurrent_creates_exactly_full_capacity_quota_and_anti_affinity(world, unlimited_group_members):
    """50 creates at once: 30 hosts with room for exactly one nano each... and an anti-affinity
    group, with a quota of 25 instances: exactly 25 accepted, at most one member per host, no
    host over capacity, and the quota never exceeded."""
    from apps.instances.models import ServerGroup
    from apps.instances.services import server_group_create

    quota_set(project=world.project, resource="instances", limit=25)
    for resource in ("cores", "ram"):
        quota_set(project=world.project, resource=resource, limit=-1)
    hosts = [make_host(f"h{i:02d}", vcpus=1, memory_mib=128, disk_gb=1) for i in range(30)]
    group = server_group_create(user=world.member, project=world.project, name="spread", policy="anti-affinity")
    results, errors = race(lambda i: services.instance_create(
        user=world.member, project=world.project, name=f"vm{i}", flavor=world.flavor, image=world.image,
        server_group=ServerGroup.objects.get(pk=group.pk)))
    assert len(results) == 25, errors[:3]
    assert all(isinstance(e, QuotaExceeded) for e in errors), errors[:3]
    live = Instance.objects.filter(project=world.project, deleted_at__isnull=True)
    assert live.count() == 25
    assert Quota.objects.get(project=world.project, resource="instances").in_use == 25
    per_host = {}
    for host_id in live.filter(host__isnull=False).values_list("host_id", flat=True):
        per_host[host_id] = per_host.get(host_id, 0) + 1
    assert len(per_host) == 25 and max(per_host.values()) == 1  # anti-affinity and capacity held
    assert set(per_host) <= {h.pk for h in hosts}


def test_concurrent_anti_affinity_with_fewer_hosts_than_members(world, unlimited_group_members):
    """10 hosts with plenty of room, 50 creates in one anti-affinity group: 10 placed, one per
    host; the other 40 find no valid host."""
    from apps.instances.models import ServerGroup
    from apps.instances.services import server_group_create

    for resource in ("instances", "cores", "ram"):
        quota_set(project=world.project, resource=resource, limit=-1)
    for i in range(10):
        make_host(f"n{i}")
    group = server_group_create(user=world.member, project=world.project, name="aa", policy="anti-affinity")
    _results, errors = race(lambda i: services.instance_create(
        user=world.member, project=world.project, name=f"vm{i}", flavor=world.flavor, image=world.image,
        server_group=ServerGroup.objects.get(pk=group.pk)))
    assert not errors, errors[:3]
    placed = list(Instance.objects.filter(host__isnull=False).values_list("host_id", flat=True))
    assert len(placed) == 10 and len(set(placed)) == 10
    assert Instance.objects.filter(host__isnull=True, vm_state="error").count() == 40


def test_concurrent_tag_adds_never_pass_the_per_server_limit(world):
    make_host()
    vm = services.instance_create(user=world.member, project=world.project, name="tagged", flavor=world.flavor,
                                  image=world.image)
    Instance.objects.filter(pk=vm.pk).update(vm_state="active")
    services.instance_tags_replace(instance=vm, tags=[f"old{i}" for i in range(40)])
    results, errors = race(lambda i: services.instance_tag_add(instance=vm, tag=f"new{i}"), n=30)
    assert results == [True] * 10  # room for ten more
    assert len(errors) == 20 and all("per-server limit 50" in str(e) for e in errors), errors[:3]
    assert vm.tags.count() == 50


def test_concurrent_creates_never_pass_the_group_member_limit(world):
    from apps.tenants.services import quota_set

    make_host(vcpus=1000, memory_mib=10**6, disk_gb=10**4)
    quota_set(project=world.project, resource="instances", limit=100)
    group = services.server_group_create(user=world.member, project=world.project, name="g", policy="affinity")
    results, errors = race(lambda i: services.instance_create(
        user=world.member, project=world.project, name=f"vm{i}", flavor=world.flavor, image=world.image,
        server_group=group), n=16)
    assert len(results) == services.compute_limit("server_group_members") == 10
    assert len(errors) == 6 and all("too many servers in group" in str(e) for e in errors), errors[:3]
    assert group.members.count() == 10 and Instance.objects.count() == 10
