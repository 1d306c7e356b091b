"""Races with real threads against the real database: quotas and host claims must hold.

Run on SQLite (IMMEDIATE transactions) in the main suite and on PostgreSQL (row locks) by
`make test`, which runs `pytest -m concurrency` once more with DATABASE_URL set.
"""

import threading

import pytest
from django.db import connection, connections

from apps.instances import services
from apps.instances.models import Instance
from apps.tenants.models import Quota
from apps.tenants.services import quota_set
from cloudmgr.exceptions import ApplicationError, QuotaExceeded
from tests.unit.conftest import make_host

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.concurrency]

THREADS = 50


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
