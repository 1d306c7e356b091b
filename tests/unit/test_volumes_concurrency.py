"""Volume quotas and attachments under real concurrency (threads released at once).

Run on SQLite (IMMEDIATE transactions) in the main suite and on PostgreSQL (row locks) by
`make test`, which runs `pytest -m concurrency` once more with DATABASE_URL set.
"""

import pytest

from apps.instances import services as compute
from apps.instances.models import Instance
from apps.tenants.models import Quota
from apps.tenants.services import quota_set
from apps.volumes import services
from apps.volumes.models import Attachment, Snapshot, Volume
from cloudmgr.exceptions import ApplicationError, InvalidState, QuotaExceeded
from tests.unit.conftest import make_host
from tests.unit.test_concurrency import THREADS, race

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.concurrency]


@pytest.fixture(autouse=True)
def storage(fake_storage):
    return fake_storage


def in_use(project, resource: str) -> int:
    return Quota.objects.get(project=project, resource=resource).in_use


def test_concurrent_creates_never_exceed_the_volume_quotas(world, storage):
    make_host("node1")
    services.volume_type_default_ensure()
    quota_set(project=world.project, resource="volumes", limit=7)
    results, errors = race(lambda i: services.volume_create(user=world.member, project=world.project, size=2,
                                                            name=f"v{i}"))
    assert len(results) == 7 and len(errors) == THREADS - 7
    assert all(isinstance(e, QuotaExceeded) for e in errors), errors[:3]
    assert Volume.objects.count() == 7 == len(storage.volumes)
    assert (in_use(world.project, "volumes"), in_use(world.project, "gigabytes")) == (7, 14)


def test_concurrent_creates_never_exceed_the_gigabytes(world):
    make_host("node1")
    services.volume_type_default_ensure()
    quota_set(project=world.project, resource="gigabytes", limit=10)
    results, errors = race(lambda i: services.volume_create(user=world.member, project=world.project, size=1))
    assert len(results) == 10 and all(isinstance(e, QuotaExceeded) for e in errors)
    assert in_use(world.project, "gigabytes") == 10 == Volume.objects.count()


def test_one_volume_raced_to_ten_servers_is_attached_to_one(world):
    make_host("node1")
    servers = [compute.instance_create(user=world.member, project=world.project, name=f"vm{i}", flavor=world.flavor,
                                       image=world.image) for i in range(10)]
    volume = services.volume_create(user=world.member, project=world.project, size=1)

    def attach(i):
        instance = Instance.objects.select_related("host").get(pk=servers[i].pk)
        return services.volume_attach(volume=Volume.objects.get(pk=volume.pk), instance=instance, user=world.member)

    results, errors = race(attach, n=10)
    assert len(results) == 1 and len(errors) == 9
    assert all(isinstance(e, InvalidState) for e in errors), errors[:3]
    assert Attachment.objects.count() == 1 and Volume.objects.get(pk=volume.pk).status == "in-use"


def test_snapshots_raced_with_the_delete_never_outlive_their_volume(world):
    make_host("node1")
    volume = services.volume_create(user=world.member, project=world.project, size=1)

    def act(i):
        fresh = Volume.objects.get(pk=volume.pk)
        if i == 0:
            return services.volume_delete(volume=fresh, user=world.member)
        return services.snapshot_create(volume=fresh, user=world.member)

    results, errors = race(act, n=20)
    assert all(isinstance(e, (ApplicationError, Volume.DoesNotExist)) for e in errors), errors[:3]
    if Volume.objects.filter(pk=volume.pk).exists():  # snapshots came first: the delete was refused
        assert Snapshot.objects.filter(volume_id=volume.pk).count() == len(results)
    else:
        assert not Snapshot.objects.exists() and in_use(world.project, "snapshots") == 0
    assert in_use(world.project, "snapshots") == Snapshot.objects.count()


def test_a_transfer_is_accepted_once(world):
    make_host("node1")
    volume = services.volume_create(user=world.member, project=world.project, size=3)
    transfer, key = services.transfer_create(volume=Volume.objects.get(pk=volume.pk), user=world.member)
    results, errors = race(lambda i: services.transfer_accept(transfer=transfer, auth_key=key, user=world.outsider,
                                                              project=world.other_project), n=10)
    assert len(results) == 1 and len(errors) == 9
    assert (in_use(world.other_project, "volumes"), in_use(world.other_project, "gigabytes")) == (1, 3)
    assert (in_use(world.project, "volumes"), in_use(world.project, "gigabytes")) == (0, 0)
