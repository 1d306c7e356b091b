"""Server list sorting with Nova's sort_key/sort_dir pairs and keyset pagination: walking the
pages with markers lists every server once, in the order asked, for both directions, with ties
on the keys (broken by created_at, then id, as Nova), NULLs and several keys."""

import functools
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from apps.instances.models import Instance
from apps.instances.selectors import server_sort
from apps.instances.states import PowerState, TaskState, VmState
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)

V = "/compute/v2.1"

# API sort key -> how to read it from an Instance (the test's own idea of the order).
READ = {
    "display_name": lambda i: i.name,
    "created_at": lambda i: i.created_at,
    "updated_at": lambda i: i.updated_at,
    "launched_at": lambda i: i.launched_at,
    "task_state": lambda i: i.task_state,
    "key_name": lambda i: i.key_name,
    "vm_state": lambda i: i.vm_state,
    "power_state": lambda i: i.power_state,
    "host": lambda i: i.host.hostname if i.host else None,
    "root_device_name": lambda i: "/dev/vda" if i.host_id else None,
    "uuid": lambda i: str(i.pk),
}


def api(world, user):
    c = APIClient()
    c.credentials(HTTP_X_AUTH_TOKEN=world.token(user))
    return c


@pytest.fixture
def servers(world):
    """14 servers of the project with many ties (3 names, 4 creation times, 2 update times) and
    NULLs (launched_at, task_state, key_name, host); plus one deleted and one of another project,
    which no listing may show."""
    hosts = [make_host("h1"), make_host("h2")]
    base = timezone.now().replace(microsecond=0) - timedelta(days=1)
    rows = []
    for n in range(14):
        rows.append(Instance(
            project=world.project, user=world.member, flavor=world.flavor, image=world.image, vcpus=1,
            memory_mib=128, root_gb=1, name="bca"[n % 3], host=[None, hosts[0], hosts[1]][n % 3 if n % 4 else 0],
            vm_state=[VmState.ACTIVE, VmState.STOPPED, VmState.ERROR][n % 5 % 3],
            power_state=PowerState.RUNNING if n % 2 else PowerState.SHUTDOWN,
            task_state=TaskState.POWERING_OFF if n % 6 == 1 else None,
            key_name=None if n % 4 == 0 else f"k{n % 2}",
            launched_at=None if n % 5 == 0 else base + timedelta(minutes=n % 2),
        ))
    Instance.objects.bulk_create(rows)
    for n, row in enumerate(rows):  # ties on created_at and updated_at, in an order unlike the ids'
        Instance.objects.filter(pk=row.pk).update(created_at=base + timedelta(seconds=(n * 7) % 4),
                                                  updated_at=base + timedelta(hours=n % 2))
    hidden = [
        Instance(project=world.project, user=world.member, flavor=world.flavor, vcpus=1, memory_mib=128, root_gb=1,
                 name="a", deleted_at=timezone.now()),
        Instance(project=world.other_project, user=world.outsider, flavor=world.flavor, vcpus=1, memory_mib=128,
                 root_gb=1, name="a"),
    ]
    Instance.objects.bulk_create(hidden)
    return list(Instance.objects.filter(project=world.project, deleted_at__isnull=True).select_related("host"))


def _compare(a, b) -> int:
    if a == b:
        return 0
    if a is None:  # NULL is the smallest value
        return -1
    if b is None:
        return 1
    return -1 if a < b else 1


def expected_order(instances, pairs) -> list[str]:
    """The ids in the order Nova defines: each (key, direction), then created_at and id in the
    first direction."""
    first = pairs[0][1]
    keys = pairs + [(key, first) for key in ("created_at", "uuid") if key not in dict(pairs)]

    def cmp(x, y):
        for key, direction in keys:
            result = _compare(READ[key](x), READ[key](y))
            if result:
                return -result if direction == "desc" else result
        return 0

    return [str(i.pk) for i in sorted(instances, key=functools.cmp_to_key(cmp))]


def walk(c, query: str, limit: int) -> list[str]:
    """Every page, following the next links (as clients do) until there is none."""
    ids, url = [], f"{V}/servers/detail?limit={limit}&{query}"
    for _ in range(50):
        resp = c.get(url)
        assert resp.status_code == 200, resp.content
        body = resp.json()
        ids += [s["id"] for s in body["servers"]]
        if "servers_links" not in body:
            return ids
        url = body["servers_links"][0]["href"]
    raise AssertionError("the page walk did not end")


def _query(pairs) -> str:
    return "&".join(f"sort_key={key}&sort_dir={direction}" for key, direction in pairs)


SORTS = [
    [("display_name", "asc")],
    [("display_name", "desc")],
    [("created_at", "asc")],
    [("created_at", "desc")],
    [("updated_at", "asc")],
    [("updated_at", "desc")],
    [("launched_at", "asc")],
    [("launched_at", "desc")],
    [("task_state", "desc")],
    [("key_name", "asc")],
    [("vm_state", "desc"), ("display_name", "asc")],
    [("display_name", "asc"), ("updated_at", "desc"), ("launched_at", "asc")],
    [("power_state", "asc"), ("key_name", "desc")],
    [("root_device_name", "desc"), ("launched_at", "desc")],
]


@pytest.mark.parametrize("pairs", SORTS, ids=lambda pairs: ",".join(f"{k}:{d}" for k, d in pairs))
@pytest.mark.parametrize("limit", [1, 4, 7])
def test_walking_the_pages_lists_every_server_once_in_order(world, servers, pairs, limit):
    listed = walk(api(world, world.member), _query(pairs), limit)
    assert len(listed) == len(set(listed)) == len(servers)
    assert listed == expected_order(servers, pairs)


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_admins_sort_by_host(world, servers, direction):
    listed = walk(api(world, world.admin), f"sort_key=host&sort_dir={direction}", 3)
    assert listed == expected_order(servers, [("host", direction)])


def test_default_order_is_newest_first_then_id(world, servers):
    listed = walk(api(world, world.member), "", 5)
    assert listed == expected_order(servers, [("created_at", "desc")])
    # a direction without a key applies to created_at (Nova)
    assert walk(api(world, world.member), "sort_dir=asc", 5) == expected_order(servers, [("created_at", "asc")])


def test_a_key_without_a_direction_takes_the_first_given(world, servers):
    listed = walk(api(world, world.member), "sort_key=vm_state&sort_dir=asc&sort_key=display_name", 4)
    assert listed == expected_order(servers, [("vm_state", "asc"), ("display_name", "asc")])


def test_the_walk_survives_the_deletion_of_the_marker_server(world, servers):
    c = api(world, world.member)
    query = "sort_key=display_name&sort_dir=asc"
    first = c.get(f"{V}/servers?limit=5&{query}").json()
    marker = first["servers"][-1]["id"]
    Instance.objects.filter(pk=marker).update(deleted_at=timezone.now())
    rest = [s["id"] for s in c.get(f"{V}/servers?{query}&marker={marker}").json()["servers"]]
    assert rest == expected_order(servers, [("display_name", "asc")])[5:]


def test_invalid_sort_parameters_are_refused(world, servers):
    c = api(world, world.member)
    assert c.get(f"{V}/servers?sort_key=password").status_code == 400
    assert c.get(f"{V}/servers?sort_key=name").status_code == 400  # Nova's key is display_name
    assert c.get(f"{V}/servers?sort_key=display_name&sort_dir=up").status_code == 400
    assert c.get(f"{V}/servers?sort_key=display_name&sort_dir=asc&sort_dir=desc").status_code == 400
    assert c.get(f"{V}/servers?marker=5d41402a-bc4b-2a76-b971-9d911017c592").status_code == 400
    assert c.get(f"{V}/servers?limit=-1").status_code == 400
    resp = c.get(f"{V}/servers?sort_key=host")
    assert resp.status_code == 403 and "Only administrators can sort servers by host" in resp.content.decode()
    # a marker of another project's server is not one this user can page from
    other = Instance.objects.get(project=world.other_project)
    assert c.get(f"{V}/servers?marker={other.pk}").status_code == 400


def test_keys_nova_ignores_are_dropped_with_their_direction(world, servers):
    c = api(world, world.member)
    listed = walk(c, "sort_key=vcpus&sort_dir=asc&sort_key=display_name&sort_dir=desc", 6)
    assert listed == expected_order(servers, [("display_name", "desc")])
    # a key with the same value for every server orders nothing, but its direction is the default's
    assert walk(c, "sort_key=access_ip_v4&sort_dir=asc", 6) == expected_order(servers, [("created_at", "asc")])


def test_server_sort_completes_the_pairs_as_nova(world):
    member = world.member
    assert server_sort(user=member) == [("created_at", "desc"), ("uuid", "desc")]
    assert server_sort(user=member, sort_keys=["display_name"]) == [
        ("display_name", "desc"), ("created_at", "desc"), ("uuid", "desc")]
    assert server_sort(user=member, sort_keys=["display_name", "vm_state"], sort_dirs=["asc"]) == [
        ("display_name", "asc"), ("vm_state", "asc"), ("created_at", "asc"), ("uuid", "asc")]
    assert server_sort(user=member, sort_keys=["uuid", "created_at"], sort_dirs=["asc", "desc"]) == [
        ("uuid", "asc"), ("created_at", "desc")]
    assert server_sort(user=world.admin, sort_keys=["host", "node"]) == [
        ("host", "desc"), ("created_at", "desc"), ("uuid", "desc")]


def test_a_sorted_page_reads_one_page_whatever_the_number_of_servers(world, servers):
    """Keyset pagination: every query on the instances table is LIMITed (no reading of every id
    to find the marker), and the number of queries per page does not grow with the servers."""
    c = api(world, world.member)
    query = "sort_key=vm_state&sort_dir=desc&sort_key=display_name&sort_dir=asc&limit=3"
    marker = c.get(f"{V}/servers/detail?{query}").json()["servers"][-1]["id"]

    def page_queries():
        with CaptureQueriesContext(connection) as ctx:
            resp = c.get(f"{V}/servers/detail?{query}&marker={marker}")
        assert resp.status_code == 200 and len(resp.json()["servers"]) == 3
        return [q["sql"] for q in ctx.captured_queries]

    before = page_queries()
    instance_reads = [sql for sql in before if 'FROM "instances_instance"' in sql]
    assert len(instance_reads) == 2  # the marker's sort values, the page
    assert all(" LIMIT " in sql for sql in instance_reads), instance_reads

    Instance.objects.bulk_create([
        Instance(project=world.project, user=world.member, flavor=world.flavor, vcpus=1, memory_mib=128, root_gb=1,
                 name=f"more{n}") for n in range(30)
    ])
    assert len(page_queries()) == len(before)
