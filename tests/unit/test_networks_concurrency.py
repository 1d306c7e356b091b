"""IPAM and network quotas under real concurrency: 50 threads creating ports on one subnet at once.

Run on SQLite (IMMEDIATE transactions) in the main suite and on PostgreSQL (the subnet's row lock,
the unique constraint on (subnet, address)) by `make test`, which runs `pytest -m concurrency`
once more with DATABASE_URL set.
"""

import pytest
from django.db import connection

from apps.networks import services
from apps.networks.models import IPAllocation, Network, Port, SecurityGroup
from apps.tenants.models import Quota
from apps.tenants.services import quota_set
from cloudmgr.exceptions import ApplicationError
from tests.unit.test_concurrency import THREADS, race

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.concurrency]


def test_network_concurrency_database(db):
    print("network concurrency tests run on", connection.vendor)


def subnet(world, cidr: str):
    network = services.network_create(user=world.member, project=world.project, name="race")
    services.subnet_create(user=world.member, project=world.project, network=network, cidr=cidr, enable_dhcp=False)
    return network


def create_port(world, network, i):
    return services.port_create(user=world.member, project=world.project, network=Network.objects.get(pk=network.pk),
                                name=f"p{i}")


def test_50_concurrent_port_creates_get_50_distinct_addresses(world):
    network = subnet(world, "10.20.0.0/24")
    results, errors = race(lambda i: create_port(world, network, i))
    assert not errors, errors[:3]
    addresses = list(IPAllocation.objects.filter(network=network).values_list("ip_address", flat=True))
    assert len(addresses) == THREADS and len(set(addresses)) == THREADS
    # The lowest free ones: .2 to .51, none skipped and none given twice.
    assert sorted(addresses, key=lambda a: int(a.rsplit(".", 1)[1])) == [f"10.20.0.{i}" for i in range(2, 52)]
    assert Quota.objects.get(project=world.project, resource="ports").in_use == THREADS


def test_50_concurrent_creates_on_a_small_subnet_fill_it_exactly(world):
    network = subnet(world, "10.21.0.0/27")  # .2 to .30: 29 addresses
    results, errors = race(lambda i: create_port(world, network, i))
    assert len(results) == 29, errors[:3]
    assert len(errors) == THREADS - 29
    assert all(isinstance(e, ApplicationError) and getattr(e, "neutron_type", "") == "IpAddressGenerationFailure"
               and e.status_code == 409 for e in errors), errors[:3]
    addresses = list(IPAllocation.objects.filter(network=network).values_list("ip_address", flat=True))
    assert len(addresses) == len(set(addresses)) == 29
    # A failed create kept nothing: no port without an address, no quota counted for it.
    assert Port.objects.filter(network=network).count() == 29
    assert Quota.objects.get(project=world.project, resource="ports").in_use == 29


def test_concurrent_port_creates_never_exceed_the_port_quota(world):
    network = subnet(world, "10.22.0.0/24")
    quota_set(project=world.project, resource="ports", limit=10)
    results, errors = race(lambda i: create_port(world, network, i))
    assert len(results) == 10
    assert all(getattr(e, "neutron_type", "") == "OverQuota" and e.status_code == 409 for e in errors), errors[:3]
    assert Port.objects.filter(network=network).count() == 10


def test_concurrent_first_uses_make_one_default_security_group(world):
    results, errors = race(lambda i: services.security_group_default(project=world.project), n=20)
    assert not errors, errors[:3]
    assert len({g.pk for g in results}) == 1
    assert SecurityGroup.objects.filter(project=world.project, name="default").count() == 1
    assert SecurityGroup.objects.get(project=world.project).rules.count() == 4


def test_concurrent_network_creates_take_distinct_vnis(world):
    quota_set(project=world.project, resource="networks", limit=-1)
    results, errors = race(lambda i: services.network_create(user=world.member, project=world.project, name=f"n{i}"),
                           n=20)
    assert not errors, errors[:3]
    vnis = [n.segmentation_id for n in results]
    assert len(set(vnis)) == 20 and all(v is not None for v in vnis)
