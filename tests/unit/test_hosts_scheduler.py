"""Hosts (heartbeats, up/down, enable/disable, usage counters) and the scheduler's filters,
weighers and claims."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from agents.specs import HostReport
from apps.hosts import services as host_services
from apps.hosts.models import (Host, HostClaimed, HostReleased, HostState, HostStatus, HostUsageChanged,
                               usage_triggers_drop, usage_triggers_ensure)
from apps.instances import scheduler, services
from apps.instances.models import Instance
from apps.instances.selectors import host_usage
from apps.tenants.services import quota_set
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db


def report(hostname="node9", **fields):
    return HostReport(hostname=hostname, queue=f"host.{hostname}", virt_type="qemu", vcpus=2, memory_mib=4096,
                      disk_gb=50, agent_version="1", **fields)


def test_heartbeat_registers_and_updates_a_host():
    host = host_services.host_heartbeat(report=report())
    assert (host.state, host.queue, host.vcpus, host.memory_mib) == (HostState.UP, "host.node9", 2, 4096)
    cpu = {"arch": "x86_64", "model": "kvm64", "topology": {"cells": 1, "sockets": 1, "cores": 2, "threads": 1}}
    host = host_services.host_heartbeat(report=report(hypervisor_version=7002022, cpu_info=cpu))
    assert (host.hypervisor_version, Host.objects.get().cpu_info, host.architecture) == (7002022, cpu, "x86_64")
    host = host_services.host_heartbeat(report=report(cpu_info={**cpu, "arch": "aarch64"}))
    assert host.architecture == "aarch64"
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


def _hostnames(request: scheduler.Request) -> list[str]:
    return [candidate.hostname for candidate in scheduler.candidates(request)]


def test_a_forced_down_host_stays_down_through_heartbeats_until_lifted(settings):
    settings.CLOUDMGR_HOST_DOWN_AFTER = 30
    host = host_services.host_heartbeat(report=report())
    host = host_services.host_force_down(host=host, forced_down=True)
    assert (host.forced_down, host.state) == (True, HostState.DOWN)
    assert host_services.host_heartbeat(report=report()).state == HostState.DOWN
    assert _hostnames(scheduler.Request(1, 128, 1)) == []

    # Lifted: up at once while its heartbeats are fresh; down if they stopped meanwhile.
    host = host_services.host_force_down(host=host, forced_down=False)
    assert (host.forced_down, host.state) == (False, HostState.UP)
    assert _hostnames(scheduler.Request(1, 128, 1)) == [host.hostname]
    host_services.host_force_down(host=host, forced_down=True)
    Host.objects.update(last_heartbeat=timezone.now() - timedelta(seconds=31))
    assert host_services.host_force_down(host=host, forced_down=False).state == HostState.DOWN
    assert host_services.host_heartbeat(report=report()).state == HostState.UP


def test_host_commands(capsys):
    make_host("node1")
    call_command("host_disable", "node1", "--reason", "maintenance")
    host = Host.objects.get()
    assert (host.status, host.disabled_reason) == (HostStatus.DISABLED, "maintenance")
    call_command("host_list")
    assert "disabled" in capsys.readouterr().out
    call_command("host_enable", "node1")
    assert Host.objects.get().status == HostStatus.ENABLED
    call_command("host_force_down", "node1")
    assert (Host.objects.get().forced_down, Host.objects.get().state) == (True, HostState.DOWN)
    assert "node1 forced down: down" in capsys.readouterr().out
    call_command("host_force_down", "node1", "--clear")
    assert Host.objects.get().forced_down is False
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="could not be found"):
        call_command("host_enable", "nope")


def test_aggregate_commands(capsys):
    from django.core.management.base import CommandError

    from apps.hosts.models import Aggregate

    make_host("node1")
    make_host("node2")
    call_command("aggregate_create", "fast", "--zone", "az1", "--property", "disk=ssd", "--property", "tier=gold")
    call_command("aggregate_set", "fast", "--add-host", "node1", "--add-host", "node2", "--remove-host", "node2",
                 "--property", "disk=nvme", "--unset", "tier")
    aggregate = Aggregate.objects.get(name="fast")
    assert aggregate.metadata == {"availability_zone": "az1", "disk": "nvme"}
    assert [h.hostname for h in aggregate.hosts.all()] == ["node1"]
    assert Host.objects.get(hostname="node1").availability_zone == "az1"
    call_command("aggregate_list")
    out = capsys.readouterr().out
    assert "fast" in out and "az1" in out and "node1" in out and "disk=nvme" in out
    with pytest.raises(CommandError, match="still has hosts"):
        call_command("aggregate_delete", "fast")
    with pytest.raises(CommandError, match="KEY=VALUE"):
        call_command("aggregate_create", "bad", "--property", "no-equals")
    with pytest.raises(CommandError, match="metadata"):  # refused metadata: no aggregate is left behind
        call_command("aggregate_create", "long", "--property", f"k={'x' * 256}")
    assert not Aggregate.objects.filter(name="long").exists()
    with pytest.raises(CommandError, match="could not be found"):
        call_command("aggregate_set", "nope", "--property", "a=b")
    call_command("aggregate_set", str(aggregate.id), "--remove-host", "node1")
    call_command("aggregate_delete", "fast")
    assert not Aggregate.objects.exists()


def _place(world, host, vcpus=1, memory_mib=128, root_gb=1):
    return Instance.objects.create(project=world.project, user=world.member, name="x", flavor=world.flavor,
                                   vcpus=vcpus, memory_mib=memory_mib, root_gb=root_gb, host=host)


def test_filters_skip_down_disabled_and_full_hosts(world):
    make_host("down", state=HostState.DOWN)
    make_host("disabled", status=HostStatus.DISABLED)
    full = make_host("full", memory_mib=1024)
    _place(world, full, memory_mib=1024)
    fits = make_host("fits", memory_mib=256)
    assert _hostnames(scheduler.Request(1, 128, 1)) == [fits.hostname]
    assert _hostnames(scheduler.Request(1, 512, 1)) == []


def test_spread_prefers_the_host_with_most_free_ram(world):
    big = make_host("big", memory_mib=4096)
    small = make_host("small", memory_mib=2048)
    assert _hostnames(scheduler.Request(1, 128, 1)) == [big.hostname, small.hostname]
    _place(world, big, memory_mib=3072)
    assert _hostnames(scheduler.Request(1, 128, 1)) == [small.hostname, big.hostname]


def test_allocation_ratios_apply(world):
    host = make_host("h", vcpus=2)
    host.cpu_allocation_ratio = 2.0
    host.save()
    for _ in range(4):
        _place(world, host)
    assert _hostnames(scheduler.Request(1, 128, 1)) == []
    host.cpu_allocation_ratio = 3.0
    host.save()
    assert _hostnames(scheduler.Request(1, 128, 1)) == [host.hostname]


def test_fractional_capacity_is_never_rounded_up(world):
    host = make_host("h", vcpus=3)
    host.cpu_allocation_ratio = 1.5  # 4.5 vCPUs: room for 4 one-vCPU instances, not 5
    host.save()
    for _ in range(4):
        assert scheduler.claim(_place(world, None)) == host
    assert scheduler.claim(_place(world, None)) is None


# --- Usage counters (HostClaimed - HostReleased), kept by triggers --------------------------


def free_memory(host):
    host = Host.objects.get(pk=host.pk)
    claimed, released = HostClaimed.objects.get(host=host), HostReleased.objects.get(host=host)
    return host.memory_mib * host.ram_allocation_ratio - claimed.memory_mib + released.memory_mib


def weighed_right(host):
    """The scheduler's index holds the host's free RAM, or the host is marked as changed."""
    return (HostClaimed.objects.get(host=host).free_memory_mib == free_memory(host)
            or HostUsageChanged.objects.filter(usage_key=host.usage_key).exists())


def counted(host):
    claimed, released = HostClaimed.objects.get(host=host), HostReleased.objects.get(host=host)
    assert claimed.pk == released.pk == host.usage_key  # the scheduler joins them on it
    assert weighed_right(host)
    return (claimed.vcpus - released.vcpus, claimed.memory_mib - released.memory_mib,
            claimed.disk_gb - released.disk_gb)


def recounted(host):
    used = host_usage(host=host)
    return (used.vcpus, used.memory_mib, used.disk_gb)


def test_usage_counters_follow_every_write_to_instances(world):
    a, b = make_host("a"), make_host("b")
    assert counted(a) == counted(b) == (0, 0, 0)
    x = _place(world, a, vcpus=2, memory_mib=256, root_gb=3)
    y = _place(world, a)
    assert counted(a) == (3, 384, 4)
    steps = [
        ({"host": b}, x),  # moved
        ({"vcpus": 4, "memory_mib": 128}, x),  # resized in place: grows one, shrinks the other
        ({"root_gb": 5}, x),  # rebuilt on a bigger disk
        ({"ephemeral_gb": 2, "swap_mb": 1}, x),  # resized to a flavor with an ephemeral disk and swap
        ({"swap_mb": 1025}, x),  # swap counts in whole GiB, rounded up
        ({"ephemeral_gb": 3, "swap_mb": 0}, x),  # one grows as the other goes
        ({"host": a}, x),  # moved back with all of its disks
        ({"vcpus": 2, "old_vcpus": 4, "old_memory_mib": 128, "old_root_gb": 5, "old_ephemeral_gb": 3,
          "old_swap_mb": 0}, x),  # resized down: the old flavor's amounts stay held until confirmed
        ({"memory_mib": 512}, x),  # ... and the larger of the two counts
        ({"old_vcpus": None, "old_memory_mib": None, "old_root_gb": None, "old_ephemeral_gb": None,
          "old_swap_mb": None}, x),  # confirmed: the new flavor alone
        ({"host": None}, x),  # unplaced (a reschedule)
        ({"deleted_at": timezone.now()}, y),  # soft-deleted
        ({"vcpus": 8}, y),  # a deleted instance no longer counts, whatever it changes
    ]
    for change, instance in steps:
        Instance.objects.filter(pk=instance.pk).update(**change)
        assert (counted(a), counted(b)) == (recounted(a), recounted(b)), change
        if change == {"swap_mb": 1025}:
            assert counted(b)[2] == 5 + 2 + 2
        if change == {"memory_mib": 512}:
            assert counted(a) == (1 + 4, 128 + 512, 1 + 5 + 3)
    assert counted(a) == counted(b) == (0, 0, 0)
    z = _place(world, b)
    z.name = "renamed"
    z.save()  # a full save that changes no usage column
    assert counted(b) == (1, 128, 1)
    z.delete()
    assert counted(b) == (0, 0, 0)
    # Deletes and shrinks go to the released row, placements and growth to the claimed one.
    assert HostReleased.objects.get(host=b).vcpus == HostClaimed.objects.get(host=b).vcpus == 5


def test_a_release_or_a_new_capacity_marks_the_host_and_its_next_claim_weighs_it_anew(world):
    host = make_host("h", memory_mib=4096)
    instance = _place(world, host, memory_mib=1024)
    assert HostClaimed.objects.get(host=host).free_memory_mib == 3072
    assert not HostUsageChanged.objects.exists()
    instance.delete()  # a release leaves the claimed row (a placement may hold it) alone
    assert HostClaimed.objects.get(host=host).free_memory_mib == 3072
    assert list(HostUsageChanged.objects.values_list("usage_key", flat=True)) == [host.usage_key]
    host.save()  # a heartbeat that reports the same capacity changes nothing
    assert HostUsageChanged.objects.count() == 1
    host.memory_mib = 8192
    host.save()
    assert HostUsageChanged.objects.filter(usage_key=host.usage_key).count() == 2
    _place(world, host, memory_mib=512)
    assert HostClaimed.objects.get(host=host).free_memory_mib == 8192 - 512 == free_memory(host)
    assert not HostUsageChanged.objects.exists()


@pytest.mark.parametrize("weigher", ["spread", "pack"])
def test_candidates_are_the_best_hosts_whether_or_not_their_free_ram_changed_since(world, settings, weigher):
    """The select reads hosts in the order of the index on free RAM and weighs the changed ones
    from their counters: either way its answer is the brute-force ranking of every host."""
    settings.CLOUDMGR_SCHEDULER_WEIGHER = weigher
    hosts = [make_host(f"h{i}", memory_mib=1024 * (1 + i % 4)) for i in range(12)]
    make_host("down", memory_mib=16384, state=HostState.DOWN)
    make_host("disabled", memory_mib=16384, status=HostStatus.DISABLED)
    placed = [_place(world, host, memory_mib=256 * (i % 3)) for i, host in enumerate(hosts)]
    for i in (1, 4, 6):
        placed[i].delete()  # their index entries now understate their free RAM
    hosts[9].memory_mib, hosts[2].ram_allocation_ratio = 512, 2.0
    hosts[9].save()
    hosts[2].save()  # one shrank, one grew
    for asked in (128, 1024, 2048):
        fitting = [host for host in hosts if free_memory(host) >= asked]
        ranked = sorted(fitting, key=lambda host: (-free_memory(host) if weigher == "spread" else free_memory(host),
                                                   host.usage_key if weigher == "spread" else -host.usage_key))
        expected = [host.hostname for host in ranked[:scheduler.MAX_CANDIDATES]]
        assert _hostnames(scheduler.Request(1, asked, 1)) == expected, asked
        assert all(weighed_right(host) for host in hosts)


def test_usage_triggers_are_restored_after_a_migration_rebuilt_the_table(world):
    host = make_host()
    usage_triggers_drop(connection)  # as SQLite does when a migration rebuilds instances_instance
    _place(world, host)  # not counted meanwhile
    assert counted(host) == (0, 0, 0)
    call_command("migrate", verbosity=0)  # post_migrate checks the triggers
    assert counted(host) == recounted(host) == (1, 128, 1)
    _place(world, host)
    assert counted(host) == (2, 256, 2)
    assert usage_triggers_ensure(connection) is False  # all there: nothing to redo


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
def test_concurrent_creates_and_deletes_on_one_host_keep_the_counters(world):
    """A create locks its project's quota, then the host; a delete writes its host's usage,
    then locks the quota. On one host in one project they must neither deadlock nor lose a
    count."""
    from tests.unit.test_concurrency import race

    for resource in ("instances", "cores", "ram"):
        quota_set(project=world.project, resource=resource, limit=-1)
    host = make_host("h", vcpus=100, memory_mib=100 * 128, disk_gb=100)
    doomed = [services.instance_create(user=world.member, project=world.project, name=f"old{i}",
                                       flavor=world.flavor, image=world.image) for i in range(20)]

    def create_or_delete(i):
        if i % 2:
            return services.instance_delete(instance=Instance.objects.select_related("host", "project").get(
                pk=doomed[i // 2].pk), user=world.member)
        return services.instance_create(user=world.member, project=world.project, name=f"new{i}",
                                        flavor=world.flavor, image=world.image)

    _results, errors = race(create_or_delete, n=40)
    assert not errors, errors[:3]
    assert Instance.objects.filter(host=host, deleted_at__isnull=True).count() == 20
    assert counted(host) == recounted(host) == (20, 20 * 128, 20)
