#!/usr/bin/env python
"""Scheduler benchmark: 1,000 placements across 1,000 simulated hosts (SQLite by default, or
DATABASE_URL), then the same with anti-affinity groups of 10 (target: each within 2 s).

A placement is what the scheduler does for one instance: its select (filters and weighers in
one query) and its claim (one conditional statement that places it on the host if the host still
has room), in a transaction of its own, committed. The instance records, their group memberships and the
groups are made beforehand, untimed. Each simulated host's row holds what a heartbeat stores: a
CPU description the size of this machine's (72 features) and the domain list of a host running
20 guests (--bare-hosts leaves both empty). Prints the total, placements per second, p50/p95 per
placement, the SQL statements per placement, and this process's CPU time (with SQLite the
database runs in it, so on a busy machine that is the steadier figure). The second run starts
with the first run's 1,000 instances still placed.

Then, labelled apart, the whole create path (``instance_create``: quota, records, actions,
the same placement, the spawn on the in-process fake driver and its callback) for -c instances.
Finally it checks that no host is over capacity, that every group kept one member per host,
and that the hosts' usage counters equal a recount of the instances.

A PostgreSQL DATABASE_URL is used only to reach the server: the benchmark runs in a database
of its own (``cloudmgr_bench_scheduler``), dropped at the end.

    .venv/bin/python bench/scheduler.py [-n 1000] [--hosts 1000] [-c 200] [--bare-hosts]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.stats import percentile  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="placements per scheduler run (default 1000)")
    parser.add_argument("--hosts", type=int, default=1000, help="simulated hosts (default 1000)")
    parser.add_argument("-c", "--creates", type=int, default=200,
                        help="whole instance_create calls, printed apart (default 200; 0 skips)")
    parser.add_argument("--bare-hosts", action="store_true", help="hosts without a heartbeat's CPU and domains")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="cloudmgr-bench-scheduler-"))
    os.environ["CLOUDMGR_DATA_DIR"] = str(data_dir)
    os.environ["CLOUDMGR_AGENTS_IN_PROCESS"] = "true"
    os.environ["CLOUDMGR_COMPUTE_DRIVER"] = "fake"
    os.environ["CLOUDMGR_LOG_LEVEL"] = "WARNING"
    os.environ["CLOUDMGR_LIMIT_SERVER_GROUPS"] = "-1"  # one project holds the 100 groups of 10
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudmgr.settings")
    import logging

    import django

    django.setup()
    logging.disable(logging.INFO)
    from django.db import connection, transaction
    from django.db.models import Count, Q, Sum
    from django.utils import timezone

    if connection.vendor != "sqlite":
        connection.settings_dict["TEST"]["NAME"] = "cloudmgr_bench_scheduler"
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)

    from agents.compute.driver import reset_driver
    from agents.compute.fake import FakeDriver
    from apps.hosts.models import Host, HostClaimed, HostReleased, HostState
    from apps.images.models import Image, ImageStatus, Visibility
    from apps.instances import scheduler, services
    from apps.instances.models import Flavor, Instance
    from apps.instances.states import TaskState, VmState
    from apps.tenants.models import Role, User
    from apps.tenants.services import project_create, quota_set, role_grant

    try:
        reset_driver(FakeDriver())
        project = project_create(name="bench")
        user = User.objects.create_user("bench", password="bench-pw-123")
        role_grant(user=user, project=project, role=Role.MEMBER)
        for resource in ("instances", "cores", "ram"):
            quota_set(project=project, resource=resource, limit=-1)
        flavor = Flavor.objects.create(id="b1", name="bench.nano", vcpus=1, ram=128, disk=1)
        image = Image.objects.create(project=project, name="bench", status=ImageStatus.ACTIVE, disk_format="qcow2",
                                     visibility=Visibility.PUBLIC, size=1 << 20, virtual_size=1 << 30)
        now = timezone.now()
        cpu_info, domains = {}, {}
        if not args.bare_hosts:
            cpu_info = {"arch": "x86_64", "model": "EPYC-Rome", "vendor": "AMD",
                        "topology": {"cells": 1, "sockets": 1, "cores": 32, "threads": 2},
                        "features": [f"feature-{i:02d}" for i in range(72)]}
            domains = {str(uuid.uuid4()): 1 for _ in range(20)}
        Host.objects.bulk_create([
            Host(hostname=f"sim{i:05d}", queue=f"host.sim{i:05d}", vcpus=64, memory_mib=256 * 1024, disk_gb=10_000,
                 state=HostState.UP, last_heartbeat=now, cpu_info=cpu_info, domains=domains)
            for i in range(args.hosts)
        ])

        def settle():
            """On PostgreSQL, what autovacuum keeps up in a running cloud: the planner's statistics
            and the visibility map that index-only scans need (the rows here were all just made)."""
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("VACUUM ANALYZE")

        settle()
        print(f"database: {connection.vendor}; hosts: {args.hosts}"
              f"{' (bare)' if args.bare_hosts else ', each with a heartbeat CPU and 20 domains'}; "
              f"placements per run: {args.n}")

        def counted(fn):
            """Run fn, returning (its result, seconds, SQL statements)."""
            count = [0]

            def counter(execute, sql, params, many, context):
                count[0] += 1
                return execute(sql, params, many, context)

            t0 = time.perf_counter()
            with connection.execute_wrapper(counter):
                result = fn()
            return result, time.perf_counter() - t0, count[0]

        def report(label, times, queries, total, cpu, commits=None):
            committing = f", of which COMMIT p50 {percentile(commits, 50) * 1000:.2f} ms" if commits else ""
            print(f"{label}: {len(times)} in {total:.2f} s ({len(times) / total:.0f}/s, "
                  f"this process's CPU {cpu:.2f} s); p50 {percentile(times, 50) * 1000:.2f} ms{committing}, "
                  f"p95 {percentile(times, 95) * 1000:.2f} ms; "
                  f"SQL statements per placement median {statistics.median(queries):.0f}, max {max(queries)}")

        def placements(label, group_size=0):
            instances = Instance.objects.bulk_create([
                Instance(project=project, user=user, name=f"{label}{i}", flavor=flavor, image=image,
                         vcpus=flavor.vcpus, memory_mib=flavor.ram, root_gb=flavor.disk, vm_state=VmState.BUILDING,
                         task_state=TaskState.SCHEDULING, availability_zone="nova")
                for i in range(args.n)
            ])
            groups = [None] * args.n
            for start in range(0, args.n, group_size or args.n):
                if group_size:
                    members = instances[start:start + group_size]
                    group = services.server_group_create(user=user, project=project, name=f"{label}{start}",
                                                         policy="anti-affinity")
                    group.members.add(*members)
                    groups[start:start + group_size] = [group] * len(members)
            settle()
            times, queries, commits = [], [], []
            start, cpu = time.perf_counter(), time.process_time()
            for instance, group in zip(instances, groups):
                def place(instance=instance, group=group):
                    with transaction.atomic():
                        host = scheduler.claim(instance, group)
                        committing = time.perf_counter()
                    commits.append(time.perf_counter() - committing)
                    return host

                host, seconds, statements = counted(place)
                assert host is not None, "no valid host"
                times.append(seconds)
                queries.append(statements)
            report(f"placements, {label} (select + claim)", times, queries, time.perf_counter() - start,
                   time.process_time() - cpu, commits)

        placements("plain")
        placements("anti-affinity", group_size=10)

        if args.creates:
            times, queries = [], []
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(args.creates):
                instance, seconds, statements = counted(lambda i=i: services.instance_create(
                    user=user, project=project, name=f"create{i}", flavor=flavor, image=image))
                assert instance.host is not None, "no valid host"
                times.append(seconds)
                queries.append(statements)
            report("whole instance_create path, not the scheduler's figure (quota, records, actions, placement, "
                   "fake spawn + callback)", times, queries, time.perf_counter() - start, time.process_time() - cpu)

        live = Q(instances__deleted_at__isnull=True)
        recount = Host.objects.annotate(v=Sum("instances__vcpus", filter=live, default=0),
                                        m=Sum("instances__memory_mib", filter=live, default=0),
                                        d=Sum("instances__root_gb", filter=live, default=0))
        released = {r.host_id: r for r in HostReleased.objects.all()}
        usage = {c.host_id: (c.vcpus - released[c.host_id].vcpus, c.memory_mib - released[c.host_id].memory_mib,
                             c.disk_gb - released[c.host_id].disk_gb) for c in HostClaimed.objects.all()}
        assert all(usage[h.pk] == (h.v, h.m, h.d) for h in recount), "usage counters differ from a recount"
        assert all(h.v <= h.vcpus * h.cpu_allocation_ratio and h.m <= h.memory_mib * h.ram_allocation_ratio
                   for h in recount), "a host is over capacity"
        per_host = (Instance.objects.filter(server_groups__isnull=False, host__isnull=False)
                    .values("server_groups", "host").annotate(n=Count("pk")).filter(n__gt=1))
        assert not per_host.exists(), "an anti-affinity group has two members on one host"
        print("checked: usage counters equal a recount; no host over capacity; anti-affinity held")
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
