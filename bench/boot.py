#!/usr/bin/env python
"""Boot benchmark: N instances through the compute API, one at a time and then C at a time.

Prints p50/p95 of API-accept-to-ACTIVE and of API-accept-to-boot-marker (the guest's first
console line from userspace), and the peak RSS of the control-plane processes (web server,
control worker, beat) sampled while it runs.

By default it starts a private cloud (the same way `make run` runs one, in its own data dir,
Redis database and host name) and removes it afterwards; --url/--password target a running one
(its control-plane RSS is then not measured).

    .venv/bin/python bench/boot.py [-n 10] [-c 5]
"""

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.stats import percentile  # noqa: E402
from tests.e2e.cloud import Cloud, make_cloud  # noqa: E402

MARKER = "CLOUDMGR_TESTVM_BOOTED"


class RssSampler(threading.Thread):
    """Samples the summed RSS of the control-plane processes started under the cloud's runner."""

    def __init__(self, root_pid: int):
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.peak_total = 0
        self.peak_by_role: dict[str, int] = {}
        self.stop_event = threading.Event()

    @staticmethod
    def _role(cmdline: str) -> str | None:
        if "gunicorn" in cmdline:
            return "web"
        if "-A cloudmgr worker" in cmdline:
            return "control"
        if "-A cloudmgr beat" in cmdline:
            return "beat"
        return None

    def _descendants(self) -> list[Path]:
        parents: dict[int, list[Path]] = {}
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                parents.setdefault(ppid, []).append(proc)
        found, todo = [], [self.root_pid]
        while todo:
            for child in parents.get(todo.pop(), []):
                found.append(child)
                todo.append(int(child.name))
        return found

    def sample(self) -> None:
        total, by_role = 0, {}
        for proc in self._descendants():
            try:
                role = self._role((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
                if role is None or (proc / "cmdline").read_bytes().startswith(b"/bin/sh"):
                    continue
                rss = int((proc / "statm").read_text().split()[1]) * 4096
            except (OSError, IndexError, ValueError):
                continue
            total += rss
            by_role[role] = by_role.get(role, 0) + rss
        self.peak_total = max(self.peak_total, total)
        for role, rss in by_role.items():
            self.peak_by_role[role] = max(self.peak_by_role.get(role, 0), rss)

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            time.sleep(0.2)


def boot_one(cloud: Cloud, token: str, name: str, flavor: str, image: str) -> tuple[float, float]:
    """(accept->ACTIVE, accept->marker) in seconds, then delete and wait until gone."""
    resp = cloud.request("POST", "/compute/v2.1/servers",
                         {"server": {"name": name, "imageRef": image, "flavorRef": flavor}}, token)
    accepted = time.monotonic()
    if resp.status != 202:
        raise RuntimeError(f"create failed: {resp.status} {resp.body}")
    server_id = resp.body["server"]["id"]
    path = f"/compute/v2.1/servers/{server_id}"
    active_at = marker_at = None
    deadline = accepted + 300
    while marker_at is None and time.monotonic() < deadline:
        if active_at is None:
            body = cloud.request("GET", path, token=token).body["server"]
            if body["status"] == "ERROR":
                raise RuntimeError(f"{name} went ERROR: {body.get('fault')}")
            if body["status"] == "ACTIVE":
                active_at = time.monotonic()
            else:
                time.sleep(0.05)
                continue
        out = cloud.request("POST", path + "/action", {"os-getConsoleOutput": {}}, token).body["output"]
        if MARKER in out:
            marker_at = time.monotonic()
        else:
            time.sleep(0.1)
    if marker_at is None:
        raise RuntimeError(f"{name} printed no boot marker within 300 s")
    cloud.request("DELETE", path, token=token)
    cloud.wait_for(lambda: cloud.request("GET", path, token=token).status == 404, 120, what=f"{name} deleted")
    return active_at - accepted, marker_at - accepted


def run_round(cloud, token, label, n, concurrency, flavor, image):
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda i: boot_one(cloud, token, f"bench-{label}-{i}", flavor, image), range(n)))
    active = [r[0] for r in results]
    marker = [r[1] for r in results]
    print(f"{label}: {n} boots at concurrency {concurrency}")
    print(f"  accept->ACTIVE   p50 {statistics.median(active):6.2f} s   p95 {percentile(active, 95):6.2f} s"
          f"   max {max(active):6.2f} s")
    print(f"  accept->marker   p50 {statistics.median(marker):6.2f} s   p95 {percentile(marker, 95):6.2f} s"
          f"   max {max(marker):6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=10, help="boots per round (default 10)")
    parser.add_argument("-c", type=int, default=5, help="concurrency of the second round (default 5)")
    parser.add_argument("--flavor", default="m1.nano")
    parser.add_argument("--image", default="testvm")
    parser.add_argument("--url", help="a running cloud's base URL (default: start a private one)")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", help="with --url: the user's password")
    parser.add_argument("--project", default="admin")
    args = parser.parse_args()

    sampler = None
    if args.url:
        cloud = Cloud(data_dir=Path("."), env={}, url=args.url.rstrip("/"), admin_password=args.password or "")
    else:
        import subprocess

        image = Path(REPO / "var" / "build" / "testvm.qcow2")
        subprocess.run([str(REPO / "scripts" / "build-testvm.sh"), str(image)], check=True)
        cloud = make_cloud(REPO / "var" / "bench")
        print(f"starting a private cloud in {cloud.data_dir} ...", flush=True)
        cloud.start(image)
        sampler = RssSampler(cloud.process.pid)
        sampler.start()
    try:
        token = cloud.token(args.user, args.password, args.project)
        run_round(cloud, token, "sequential", args.n, 1, args.flavor, args.image)
        run_round(cloud, token, "concurrent", args.n, args.c, args.flavor, args.image)
        if sampler:
            sampler.sample()
            roles = ", ".join(f"{role} {rss / 2**20:.0f} MiB" for role, rss in sorted(sampler.peak_by_role.items()))
            print(f"control-plane peak RSS: {sampler.peak_total / 2**20:.0f} MiB in all ({roles})")
    finally:
        if sampler:
            sampler.stop_event.set()
            cloud.stop()
            import shutil

            shutil.rmtree(cloud.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
