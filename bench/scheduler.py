#!/usr/bin/env python
"""Scheduler benchmark: 1,000 placements across 1,000 simulated hosts (SQLite by default, or
DATABASE_URL), then the same with anti-affinity groups of 10.

Each placement is a whole `instance_create` through the service layer (quota reservation, the
record, the scheduler's filters and weighers, the locked claim); the agents run in-process on the
fake driver, so the figures are the control plane's. Prints total time, placements per second,
p50/p95 per placement and the SQL queries per placement.

    .venv/bin/python bench/scheduler.py [-n 1000] [--hosts 1000]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.stats import percentile  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="placements per run (default 1000)")
    parser.add_argument("--hosts", type=int, default=1000, help="simulated hosts (default 1000)")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="cloudmgr-bench-scheduler-"))
    os.environ["CLOUDMGR_DATA_DIR"] = str(data_dir)
    os.environ["CLOUDMGR_AGENTS_IN_PROCESS"] = "true"
    os.environ["CLOUDMGR_COMPUTE_DRIVER"] = "fake"
    os.environ["CLOUDMGR_LOG_LEVEL"] = "WARNING"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudmgr.settings")
    import logging

    import django

    django.setup()
    logging.disable(logging.INFO)
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from agents.compute.driver import reset_driver
    from agents.compute.fake import FakeDriver
    from apps.hosts.models import Host, HostState
    from apps.images.models import Image, ImageStatus, Visibility
    from apps.instances import services
    from apps.instances.models import Flavor
    from apps.tenants.models import Role, User
    from apps.tenants.services import project_create, quota_set, role_grant

    try:
        call_command("migrate", verbosity=0)
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
        Host.objects.bulk_create([
            Host(hostname=f"sim{i:05d}", queue=f"host.sim{i:05d}", vcpus=64, memory_mib=256 * 1024, disk_gb=10_000,
                 state=HostState.UP, last_heartbeat=now)
            for i in range(args.hosts)
        ])
        print(f"database: {connection.vendor}; hosts: {args.hosts}; placements per run: {args.n}")

        def run(label, group_size=0):
            times, queries = [], []
            group = None
            start = time.perf_counter()
            for i in range(args.n):
                if group_size and i % group_size == 0:
                    group = services.server_group_create(user=user, project=project, name=f"g{i}",
                                                         policy="anti-affinity")
                count = [0]

                def counter(execute, sql, params, many, context, count=count):
                    count[0] += 1
                    return execute(sql, params, many, context)

                with connection.execute_wrapper(counter):
                    t0 = time.perf_counter()
                    instance = services.instance_create(user=user, project=project, name=f"{label}{i}",
                                                        flavor=flavor, image=image, server_group=group)
                    times.append(time.perf_counter() - t0)
                queries.append(count[0])
                assert instance.host is not None, "no valid host"
            total = time.perf_counter() - start
            print(f"{label:>14}: {args.n} placements in {total:.2f} s ({args.n / total:.0f}/s); "
                  f"per placement p50 {percentile(times, 50) * 1000:.1f} ms, p95 {percentile(times, 95) * 1000:.1f} ms; "
                  f"SQL queries per placement median {statistics.median(queries):.0f}, max {max(queries)}")

        run("plain")
        run("anti-affinity", group_size=10)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
