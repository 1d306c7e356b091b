#!/usr/bin/env python
"""Server list benchmark: `GET /compute/v2.1/servers/detail` with 10,000 servers in the project,
pages of 100 (walking the pages with `marker`), in-process (Django's test client, SQLite by
default or DATABASE_URL), in the default order and with non-default sort keys. Prints p50/p95 per
page (wall clock, and this process's CPU time: with SQLite the database runs in it, so that one
holds on a loaded machine) and the SQL queries per page (constant).

    .venv/bin/python bench/api_list.py [-n 10000] [--page 100] [--pages 50]
"""

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.stats import percentile  # noqa: E402

# Non-default sorts, walked with markers like the default one (keyset pagination in SQL): a unique
# key, and a key with many ties (every 50th server is in ERROR) followed by a second key.
SORTS = ("&sort_key=display_name&sort_dir=asc", "&sort_key=vm_state&sort_dir=desc&sort_key=display_name&sort_dir=asc")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="servers in the project (default 10000)")
    parser.add_argument("--page", type=int, default=100, help="page size (default 100)")
    parser.add_argument("--pages", type=int, default=50, help="pages to fetch (default 50)")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="cloudmgr-bench-list-"))
    os.environ["CLOUDMGR_DATA_DIR"] = str(data_dir)
    os.environ["CLOUDMGR_LOG_LEVEL"] = "WARNING"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudmgr.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone
    from rest_framework.test import APIClient

    from apps.hosts.models import Host, HostState
    from apps.images.models import Image, ImageStatus, Visibility
    from apps.instances.models import Flavor, Instance, InstanceFault
    from apps.instances.states import PowerState, VmState
    from apps.tenants.models import Role, User
    from apps.tenants.services import project_create, role_grant, token_issue

    settings.ALLOWED_HOSTS = ["*"]
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    try:
        call_command("migrate", verbosity=0)
        project = project_create(name="bench")
        user = User.objects.create_user("bench", password="bench-pw-123")
        role_grant(user=user, project=project, role=Role.MEMBER)
        flavor = Flavor.objects.create(id="b1", name="bench.nano", vcpus=1, ram=128, disk=1)
        image = Image.objects.create(project=project, name="bench", status=ImageStatus.ACTIVE, disk_format="qcow2",
                                     visibility=Visibility.PUBLIC, size=1 << 20, virtual_size=1 << 30)
        hosts = Host.objects.bulk_create([Host(hostname=f"h{i}", queue=f"host.h{i}", vcpus=1000, memory_mib=10**7,
                                               disk_gb=10**6, state=HostState.UP, last_heartbeat=timezone.now())
                                          for i in range(10)])
        now = timezone.now()
        instances = Instance.objects.bulk_create([
            Instance(project=project, user=user, name=f"vm{i:05d}", flavor=flavor, image=image, vcpus=1,
                     memory_mib=128, root_gb=1, host=hosts[i % 10], vm_state=VmState.ERROR if i % 50 == 0 else
                     VmState.ACTIVE, power_state=PowerState.RUNNING, launched_at=now, metadata={"i": str(i)})
            for i in range(args.n)
        ], batch_size=1000)
        InstanceFault.objects.bulk_create([InstanceFault(instance=i, message="boom") for i in instances[::50]])
        del instances
        # The setup's objects are not what a web server holds: keep the collector from walking them
        # (gen-2 collections over them were the p95 of every page).
        gc.collect()
        gc.freeze()
        key, _ = token_issue(user=user, project=project)
        client = APIClient()
        client.credentials(HTTP_X_AUTH_TOKEN=key)
        print(f"database: {connection.vendor}; servers in the project: {args.n}; page size {args.page}")

        runs = [(path, "") for path in ("/compute/v2.1/servers/detail", "/compute/v2.1/servers")]
        runs += [("/compute/v2.1/servers/detail", sort) for sort in SORTS]
        for path, sort in runs:
            times, cpu_times, queries, marker, seen = [], [], [], None, set()
            client.get(f"{path}?limit={args.page}{sort}")  # warm up
            for _ in range(args.pages):
                url = f"{path}?limit={args.page}{sort}" + (f"&marker={marker}" if marker else "")
                count = [0]

                def counter(execute, sql, params, many, context, count=count):
                    count[0] += 1
                    return execute(sql, params, many, context)

                with connection.execute_wrapper(counter):
                    t0, cpu0 = time.perf_counter(), time.process_time()
                    resp = client.get(url)
                    times.append(time.perf_counter() - t0)
                    cpu_times.append(time.process_time() - cpu0)
                assert resp.status_code == 200, resp.content[:200]
                servers = resp.json()["servers"]
                assert len(servers) == args.page
                ids = {server["id"] for server in servers}
                assert not ids & seen, "a server was listed twice while walking the pages"
                seen |= ids
                marker = servers[-1]["id"]
                queries.append(count[0])
            if os.environ.get("BENCH_VERBOSE"):
                print([round(t * 1000) for t in times])
            print(f"GET {path}?limit={args.page}{sort}: {args.pages} pages, p50 {percentile(times, 50) * 1000:.1f} ms, "
                  f"p95 {percentile(times, 95) * 1000:.1f} ms (this process's CPU: p50 "
                  f"{percentile(cpu_times, 50) * 1000:.1f} ms, p95 {percentile(cpu_times, 95) * 1000:.1f} ms); "
                  f"SQL queries per page min {min(queries)} max {max(queries)}")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
