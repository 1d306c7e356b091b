"""os-simple-tenant-usage: the hours each server ran in a period, as Nova counts them."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.instances.models import Instance
from tests.unit.conftest import make_host
from tests.unit.test_compute_api_microversions import Api, boot, nova_error

pytestmark = pytest.mark.django_db(transaction=True)

FMT = "%Y-%m-%dT%H:%M:%S"


def test_usage_of_a_period(world, fake_driver):
    make_host()
    member, admin = Api(world, world.member), Api(world, world.admin)
    outsider = Api(world, world.outsider, world.other_project)
    t0 = (timezone.now() - timedelta(hours=30)).replace(microsecond=0)
    ran = {name: boot(member, world, name=name) for name in ("before-and-on", "inside", "later", "gone-before")}
    theirs = boot(outsider, world, name="theirs")
    assert member("delete", f"/servers/{ran['inside']}", "2.1").status_code == 204

    def times(sid, launched, terminated=None):
        Instance.objects.filter(pk=sid).update(launched_at=t0 + timedelta(hours=launched),
                                               terminated_at=terminated and t0 + timedelta(hours=terminated))

    times(ran["before-and-on"], -2)  # still running: counted from the period's start to its end
    times(ran["inside"], 2, 5)  # deleted after three hours
    times(ran["later"], 12)  # launched after the period
    times(ran["gone-before"], -5, -1)  # terminated before it
    times(theirs, 1)
    period = f"start={t0.strftime(FMT)}&end={(t0 + timedelta(hours=10)).strftime(FMT)}"

    usage = member("get", f"/os-simple-tenant-usage/{world.project.id.hex}?{period}", "2.26").json()["tenant_usage"]
    vm = Instance.objects.get(pk=ran["inside"])
    assert usage["tenant_id"] == world.project.id.hex
    assert usage["start"] == t0.replace(tzinfo=None).isoformat()
    assert usage["total_hours"] == pytest.approx(13)
    assert usage["total_vcpus_usage"] == pytest.approx(13 * vm.vcpus)
    assert usage["total_memory_mb_usage"] == pytest.approx(13 * vm.memory_mib)
    assert usage["total_local_gb_usage"] == pytest.approx(13 * (vm.root_gb + world.flavor.ephemeral))
    servers = {s["instance_id"]: s for s in usage["server_usages"]}
    assert set(servers) == {ran["before-and-on"], ran["inside"]}
    inside = servers[ran["inside"]]
    assert (inside["hours"], inside["state"], inside["name"], inside["flavor"]) == (
        pytest.approx(3), "terminated", "inside", world.flavor.name)
    assert inside["ended_at"] == (t0 + timedelta(hours=5)).replace(tzinfo=None).isoformat()
    assert inside["uptime"] == 3 * 3600
    assert servers[ran["before-and-on"]]["state"] == "active" and servers[ran["before-and-on"]]["ended_at"] is None
    assert set(inside) == {"instance_id", "name", "tenant_id", "flavor", "hours", "vcpus", "memory_mb", "local_gb",
                           "state", "started_at", "ended_at", "uptime"}

    # Every project's for admins, with the servers only when detailed=1.
    nova_error(member("get", f"/os-simple-tenant-usage?{period}", "2.26"), 403)
    listed = admin("get", f"/os-simple-tenant-usage?{period}", "2.26").json()["tenant_usages"]
    assert {u["tenant_id"]: u["total_hours"] for u in listed} == {
        world.project.id.hex: pytest.approx(13), world.other_project.id.hex: pytest.approx(9)}
    assert all("server_usages" not in u for u in listed)
    for flag in ("1", "True"):  # Nova's, and what openstacksdk sends
        detailed = admin("get", f"/os-simple-tenant-usage?{period}&detailed={flag}", "2.26").json()["tenant_usages"]
        assert sum(len(u["server_usages"]) for u in detailed) == 3

    # A project's own only; an unknown one is empty; bad periods are 400.
    nova_error(outsider("get", f"/os-simple-tenant-usage/{world.project.id.hex}?{period}", "2.26"), 403)
    assert admin("get", f"/os-simple-tenant-usage/{'0' * 32}?{period}", "2.26").json() == {"tenant_usage": {}}
    _, message = nova_error(member("get", f"/os-simple-tenant-usage/{world.project.id.hex}?start=yesterday", "2.1"),
                            400)
    assert "Invalid datetime" in message
    backwards = f"start={(t0 + timedelta(hours=1)).strftime(FMT)}&end={t0.strftime(FMT)}"
    _, message = nova_error(member("get", f"/os-simple-tenant-usage/{world.project.id.hex}?{backwards}", "2.1"), 400)
    assert "start time cannot occur after the end time" in message
    # An open end is now: the running server's hours grow up to it.
    since = member("get", f"/os-simple-tenant-usage/{world.project.id.hex}?start={t0.strftime(FMT)}", "2.1").json()
    hours = {s["instance_id"]: s["hours"] for s in since["tenant_usage"]["server_usages"]}
    assert hours[ran["before-and-on"]] == pytest.approx(30, abs=0.01)
    assert hours[ran["later"]] == pytest.approx(18, abs=0.01)
