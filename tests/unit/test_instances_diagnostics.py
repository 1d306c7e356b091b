"""Server diagnostics (GET /servers/{id}/diagnostics, admins): the host's counters of the running
domain (fake driver here; libvirt's in tests/e2e/test_compute_actions.py)."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from apps.instances import services
from tests.unit.conftest import make_host
from tests.unit.test_instances_actions import api, create, fresh

pytestmark = pytest.mark.django_db(transaction=True)


def test_admins_read_the_counters_others_are_refused(world, fake_driver):
    make_host()
    vm = create(world)
    url = f"/compute/v2.1/servers/{vm.id}/diagnostics"
    resp = api(world, world.admin, world.project).get(url)
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["cpu0_time"] > 0 and body["memory"] == world.flavor.ram * 1024 and "vda_read" in body
    denied = api(world, world.member).get(url)
    assert denied.status_code == 403 and "os-server-diagnostics" in denied.json()["forbidden"]["message"]
    assert api(world, world.outsider, world.other_project).get(url).status_code == 404
    services.instance_stop(instance=fresh(vm), user=world.member)
    stopped = api(world, world.admin, world.project).get(url)
    assert stopped.status_code == 409 and "vm_state stopped" in stopped.json()["conflictingRequest"]["message"]


def test_the_command(world, fake_driver):
    make_host()
    vm = create(world)
    out = io.StringIO()
    call_command("instance_diagnostics", str(vm.id), "--user", world.admin.username, "--project",
                 world.project.name, stdout=out)
    assert json.loads(out.getvalue())["cpu0_time"] > 0
    with pytest.raises(CommandError, match="os-server-diagnostics"):
        call_command("instance_diagnostics", str(vm.id), "--user", world.member.username, "--project",
                     world.project.name)
