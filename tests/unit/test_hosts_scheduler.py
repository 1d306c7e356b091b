"""Hosts (heartbeats, up/down, enable/disable) and the scheduler's filters, weighers and claims."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from agents.specs import HostReport
from apps.hosts import services as host_services
from apps.hosts.models import Host, HostState, HostStatus
from apps.instances import scheduler
from apps.instances.models import Instance
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db


def report(hostname="node9", **fields):
    return HostReport(hostname=hostname, queue=f"host.{hostname}", virt_type="qemu", vcpus=2, memory_mib=4096,
                      disk_gb=50, agent_version="1", **fields)


def test_heartbeat_registers_and_updates_a_host():
    host = host_services.host_heartbeat(report=report())
    assert (host.state, host.queue, host.vcpus, host.memory_mib) == (HostState.UP, "host.node9", 2, 4096)
    host_services.host_heartbeat(report=report(domains={"x": 1}))
    assert Host.objects.count() == 1


def test_missed_heartbeats_mark_a_host_down_and_a_new_one_brings_it_back(settings):
    settings.CLOUDMGR_HOST_DOWN_AFTER = 30
    host_services.host_heartbeat(report=report())
    assert host_services.hosts_mark_down() == []
    Host.objects.update(last_heartbeat=timezone.now() - timedelta(seconds=31))
    assert host_services.hosts_mark_down() == ["node9"]
    assert Host.objects.get().state == HostState.DOWN
    host_services.host_heartbeat(report=report())
    assert Host.objects.get().state == HostState.UP


def test_host_commands(capsys):
    make_host("node1")
    call_command("host_disable", "node1", "--reason", "maintenance")
    host = Host.objects.get()
    assert (host.status, host.disabled_reason) == (HostStatus.DISABLED, "maintenance")
    call_command("host_list")
    assert "disabled" in capsys.readouterr().out
    call_command("host_enable", "node1")
    assert Host.objects.get().status == HostStatus.ENABLED
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="could not be found"):
        call_command("host_enable", "nope")


def _place(world, host, vcpus=1, memory_mib=128, root_gb=1):
    return Instance.objects.create(project=world.project, user=world.member, name="x", flavor=world.flavor,
                                   vcpus=vcpus, memory_mib=memory_mib, root_gb=root_gb, host=host)


def test_filters_skip_down_disabled_and_full_hosts(world):
    make_host("down", state=HostState.DOWN)
    make_host("disabled", status=HostStatus.DISABLED)
    full = make_host("full", memory_mib=1024)
    _place(world, full, memory_mib=1024)
    fits = make_host("fits", memory_mib=256)
    assert scheduler.candidates(scheduler.Request(1, 128, 1)) == [fits]
    assert scheduler.candidates(scheduler.Request(1, 512, 1)) == []


def test_spread_prefers_the_host_with_most_free_ram(world):
    big = make_host("big", memory_mib=4096)
    small = make_host("small", memory_mib=2048)
    assert scheduler.candidates(scheduler.Request(1, 128, 1)) == [big, small]
    _place(world, big, memory_mib=3072)
    assert scheduler.candidates(scheduler.Request(1, 128, 1)) == [small, big]


def test_allocation_ratios_apply(world):
    host = make_host("h", vcpus=2)
    host.cpu_allocation_ratio = 2.0
    host.save()
    for _ in range(4):
        _place(world, host)
    assert scheduler.candidates(scheduler.Request(1, 128, 1)) == []
    host.cpu_allocation_ratio = 3.0
    host.save()
    assert scheduler.candidates(scheduler.Request(1, 128, 1)) == [host]
