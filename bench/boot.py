#!/usr/bin/env python
"""Boot benchmark: API-accept-to-ACTIVE of N instances through the compute API, one at a time and
then C at a time (target: p50 within 1 s and p95 within 2 s at concurrency 5), with where the time
went.

Each boot is what a user does: POST /compute/v2.1/servers (its 202 is "accepted"; with the
cloud's default networks unless --networks says otherwise), then poll GET /servers/{id} every
--poll seconds until ACTIVE. Then the server is deleted and its client thread waits until it is
gone before booting the next, so a round at concurrency C never has more than C servers (it
prints how many it had at most).

accept->ACTIVE ends when the server became ACTIVE: its ``OS-SRV-USG:launched_at``, which the
cloud stamps in the update that makes it ACTIVE (same machine, same clock as the client's). The
poll that saw it is printed too ("seen by a poll"), but it only says how often the client asked:
polling fast enough to time ACTIVE by itself (every 0.05 s: 100 GETs a second from 5 clients, a
third of a core of the web server) loads the cloud it measures.

Each server is deleted as soon as it is ACTIVE, except that the first --markers boots of the
sequential round first wait for the guest's boot marker (its first console line from userspace,
via os-getConsoleOutput: accept->marker, the guest's own boot time, one guest at a time).
Letting every guest boot first would keep C TCG guests emulating their kernels on the host's 2
cores for tens of seconds each (about 40 s each on the shared machine): that measures QEMU's
emulator, not the path from the API to ACTIVE that the target is about, and KVM guests would not
eat the host that way.

The breakdown per stage (p50/p95 over the round) comes from the control worker's "spawn timings"
log line (agent and callback clocks) and the client's own clock:

    api        POST sent -> 202 received (quota, scheduler claim, records, the on_commit send)
    to agent   202 received -> the agent task began (negative: it began before the 202 arrived)
    lock, prepare, image, disk, (config_drive,) (plug,) define, turn, start
               the agent's stages: instance lock; spec and directory; image cache lookup (no
               re-hash: the digest is recorded); qcow2 overlay; taps (behind the network agent's
               lock); libvirt define; the wait for one of the host's start slots
               (CLOUDMGR_MAX_CONCURRENT_STARTS); libvirt start
    result     agent finished -> the control worker's callback began (broker round trip)
    callback   the callback's database update to ACTIVE
    seen       callback finished -> the client's poll saw ACTIVE (up to --poll late)

Each round also prints the API requests its clients made, the machine's load average and CPU
busy share, and the CPU seconds the cloud's processes, libvirtd, the guests' QEMU processes
(every QEMU on the machine, read every 0.1 s) and this bench itself (its clients and samplers,
on the same cores) used, so a reader can tell a busy machine from a slow cloud (the machine is
shared: run it several times and report the range), what one boot and delete cost in all (the
cloud's processes, libvirtd and QEMU: with both cores busy this sets how fast the clients cycle),
and how many tasks of each kind the network
agent ran in the round and the seconds they took. Finally the peak RSS of the control-plane
processes (web server, control worker, beat).

--networks none boots servers without ports: the compute path alone. With the default networks
each boot also waits for the network agent's syncs (docs/compute.md, "Boot performance").

By default it starts a private cloud (the same way `make run` runs one, in its own data dir,
Redis database and host name) and removes it afterwards (if a round fails, its log is kept and
its path printed); --url/--password target a running one (then only the client's figures are
printed).

    .venv/bin/python bench/boot.py [-n 20] [-c 5] [--poll 0.5] [--markers 5] [--networks none]
"""

import argparse
import os
import re
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.stats import percentile  # noqa: E402
from tests.e2e.cloud import Cloud, make_cloud  # noqa: E402

MARKER = "CLOUDMGR_TESTVM_BOOTED"
TIMINGS = re.compile(r"spawn timings instance=(\S+) (.*)$")
NETWORK_TASK = re.compile(r"Task agents\.network\.(\w+)\[[^\]]+\] succeeded in ([0-9.]+)s")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _role(cmdline: str) -> str | None:
    if "gunicorn" in cmdline:
        return "web"
    if "-A cloudmgr worker" in cmdline:
        return "control"
    if "-A agents.worker worker" in cmdline:
        return "agent"
    if "-A cloudmgr beat" in cmdline:
        return "beat"
    return None


def _descendants(root_pid: int) -> list[Path]:
    parents: dict[int, list[Path]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(proc)
    found, todo = [], [root_pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(int(child.name))
    return found


def _cloud_processes(root_pid: int) -> list[tuple[str, Path]]:
    """(role, /proc/<pid>) of the cloud's Python processes (not the /bin/sh honcho wraps them in)."""
    out = []
    for proc in _descendants(root_pid):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        role = _role(cmdline.replace(b"\0", b" ").decode(errors="replace"))
        if role and not cmdline.startswith(b"/bin/sh"):
            out.append((role, proc))
    return out


def _cpu_seconds(proc: Path) -> float:
    """User + system CPU seconds of a process (all its threads; children that were waited for too)."""
    return _stat_cpu_seconds((proc / "stat").read_text())


def _stat_cpu_seconds(stat: str) -> float:
    """The CPU seconds of a /proc/<pid>/stat line (see ``_cpu_seconds``)."""
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _libvirtd() -> Path | None:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == "libvirtd":
                    return proc
            except OSError:
                continue
    return None


class QemuCpuSampler(threading.Thread):
    """The CPU seconds of each guest's QEMU process, read every 0.1 s (each process's last
    tenth of a second is missed): libvirt daemonizes them, so no parent's counters keep them."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seconds: dict[str, float] = {}  # pid -> its last reading
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    try:
                        stat = (proc / "stat").read_text()
                        if stat.split(" ", 2)[1].startswith("(qemu-system"):
                            self.seconds[proc.name] = _stat_cpu_seconds(stat)
                    except (OSError, IndexError, ValueError):
                        continue
            time.sleep(0.1)


class CpuMeter:
    """CPU used during a round: the machine's busy share, and the seconds of the cloud's processes,
    libvirtd and the guests' QEMU processes."""

    def __init__(self, root_pid: int, qemu: QemuCpuSampler):
        self.root_pid = root_pid
        self.qemu = qemu
        self.start = self._snapshot()

    def _snapshot(self) -> dict:
        snap = {"machine": _machine_jiffies(), "load": os.getloadavg()[0], "roles": {},
                "qemu": dict(self.qemu.seconds), "bench": time.process_time()}
        procs = _cloud_processes(self.root_pid)
        libvirtd = _libvirtd()
        if libvirtd:
            procs.append(("libvirtd", libvirtd))
        for role, proc in procs:
            try:
                snap["roles"][role] = snap["roles"].get(role, 0.0) + _cpu_seconds(proc)
            except (OSError, IndexError, ValueError):
                continue
        return snap

    def report(self, boots: int) -> str:
        """The round's CPU, and what one boot and delete cost the cloud, libvirtd and QEMU (when
        the cores are busy, what a round at concurrency C takes: C * that / cores per cycle)."""
        end = self._snapshot()
        busy = end["machine"][0] - self.start["machine"][0]
        total = end["machine"][1] - self.start["machine"][1]
        used = {role: seconds - self.start["roles"].get(role, 0.0) for role, seconds in sorted(end["roles"].items())}
        roles = ", ".join(f"{role} {seconds:.1f}" for role, seconds in used.items())
        qemu = {pid: seconds - self.start["qemu"].get(pid, 0.0) for pid, seconds in end["qemu"].items()}
        qemu = {pid: seconds for pid, seconds in qemu.items() if seconds > 0}
        bench = end["bench"] - self.start["bench"]
        roles += f", QEMU {sum(qemu.values()):.1f} ({len(qemu)} processes), this bench {bench:.1f}"
        per_boot = (sum(used.values()) + sum(qemu.values())) / max(boots, 1)
        return (f"  machine: {os.cpu_count()} CPUs {100 * busy / max(total, 1):.0f}% busy, load average "
                f"{self.start['load']:.1f} -> {end['load']:.1f}; CPU seconds: {roles}\n"
                f"  per boot and delete: {per_boot:.2f} CPU-s (the cloud's processes, libvirtd and QEMU)")


class RssSampler(threading.Thread):
    """Samples the summed RSS of the control-plane processes started under the cloud's runner."""

    def __init__(self, root_pid: int):
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.peak_total = 0
        self.peak_by_role: dict[str, int] = {}
        self.stop_event = threading.Event()

    def sample(self) -> None:
        total, by_role = 0, {}
        for role, proc in _cloud_processes(self.root_pid):
            if role == "agent":
                continue  # the agent runs on every host, not in the control plane
            try:
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


@dataclass
class Boot:
    server_id: str
    posted: float  # wall clock (time.time()): compared with the cloud's log
    accepted: float
    active: float = 0.0  # the server's launched_at
    seen: float = 0.0  # when the client's poll saw ACTIVE
    marker: float | None = None


@dataclass
class Round:
    label: str
    concurrency: int
    boots: list[Boot] = field(default_factory=list)
    existing: int = 0
    peak_existing: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def server_exists(self, delta: int) -> None:
        with self.lock:
            self.existing += delta
            self.peak_existing = max(self.peak_existing, self.existing)

    def request(self, cloud: Cloud, *args, **kwargs):
        with self.lock:
            self.requests += 1
        return cloud.request(*args, **kwargs)


def boot_one(cloud: Cloud, token: str, rnd: Round, name: str, server: dict, poll: float,
             wait_marker: bool) -> Boot:
    """Create a server, wait until ACTIVE (and the boot marker if asked), delete it, wait until gone."""
    posted = time.time()
    resp = rnd.request(cloud, "POST", "/compute/v2.1/servers", {"server": {"name": name, **server}}, token)
    if resp.status != 202:
        raise RuntimeError(f"create failed: {resp.status} {resp.body}")
    boot = Boot(server_id=resp.body["server"]["id"], posted=posted, accepted=time.time())
    rnd.server_exists(+1)
    path = f"/compute/v2.1/servers/{boot.server_id}"
    deadline = boot.accepted + 300
    try:
        while True:
            body = rnd.request(cloud, "GET", path, token=token).body["server"]
            if body["status"] == "ACTIVE":
                boot.seen = time.time()
                boot.active = launched_at(body)
                break
            if body["status"] == "ERROR":
                raise RuntimeError(f"{name} went ERROR: {body.get('fault')}")
            if time.time() > deadline:
                raise RuntimeError(f"{name} was not ACTIVE within 300 s")
            time.sleep(poll)
        while wait_marker:
            out = rnd.request(cloud, "POST", path + "/action", {"os-getConsoleOutput": {}}, token).body["output"]
            if MARKER in out:
                boot.marker = time.time()
                break
            if time.time() > deadline:
                raise RuntimeError(f"{name} printed no boot marker within 300 s")
            time.sleep(0.1)
    finally:
        rnd.request(cloud, "DELETE", path, token=token)
        cloud.wait_for(lambda: rnd.request(cloud, "GET", path, token=token).status == 404, 120,
                       what=f"{name} deleted")
        rnd.server_exists(-1)
    return boot


def launched_at(server: dict) -> float:
    """The server's ``OS-SRV-USG:launched_at`` (UTC, no zone in Nova's format) as a Unix time."""
    stamp = datetime.fromisoformat(server["OS-SRV-USG:launched_at"])
    return stamp.replace(tzinfo=timezone.utc).timestamp()


def read_timings(cloud: Cloud) -> dict[str, dict[str, float]]:
    """{instance id: {field: value}} from the control worker's "spawn timings" log lines."""
    log = cloud.data_dir / "cloud.log"
    found: dict[str, dict[str, float]] = {}
    if not log.exists():
        return found
    for line in log.read_text(errors="replace").splitlines():
        match = TIMINGS.search(line)
        if match:
            values = dict(pair.split("=", 1) for pair in match.group(2).split())
            values.pop("ok", None)
            found[match.group(1)] = {k: float(v) for k, v in values.items()}
    return found


def log_size(cloud: Cloud) -> int:
    log = cloud.data_dir / "cloud.log"
    return log.stat().st_size if log.exists() else 0


def network_tasks(cloud: Cloud, since: int) -> dict[str, list[float]]:
    """{network agent task: [seconds each took]} from the cloud's log after byte ``since``."""
    log = cloud.data_dir / "cloud.log"
    found: dict[str, list[float]] = {}
    if not log.exists():
        return found
    with open(log, "rb") as f:
        f.seek(since)
        for line in f.read().decode(errors="replace").splitlines():
            match = NETWORK_TASK.search(line)
            if match:
                found.setdefault(match.group(1), []).append(float(match.group(2)))
    return found


def breakdown(boots: list[Boot], timings: dict[str, dict[str, float]]) -> list[tuple[str, list[float]]]:
    rows: dict[str, list[float]] = {}
    for boot in boots:
        t = timings.get(boot.server_id)
        if not t:
            continue
        stages = {k: v for k, v in t.items() if not k.startswith(("agent_", "callback_"))}
        for name, value in [
            ("api", boot.accepted - boot.posted),
            ("to agent", t["agent_received"] - boot.accepted),
            *stages.items(),
            ("result", t["callback_started"] - t["agent_finished"]),
            ("callback", t["callback_finished"] - t["callback_started"]),
            ("seen", boot.seen - t["callback_finished"]),
        ]:
            rows.setdefault(name, []).append(value)
    return list(rows.items())


def run_round(cloud, token, label, n, concurrency, server, poll, markers, root_pid, qemu):
    rnd = Round(label=label, concurrency=concurrency)
    meter = CpuMeter(root_pid, qemu) if root_pid else None  # a --url cloud may run elsewhere
    log_start = log_size(cloud)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        rnd.boots = list(pool.map(
            lambda i: boot_one(cloud, token, rnd, f"bench-{label}-{i}", server, poll, i < markers), range(n)))
    elapsed = time.monotonic() - started
    active = [b.active - b.accepted for b in rnd.boots]
    seen = [b.seen - b.accepted for b in rnd.boots]
    print(f"{label}: {n} boots at concurrency {concurrency} (at most {rnd.peak_existing} servers at once; "
          f"{rnd.requests} API requests in {elapsed:.0f} s)")
    print(f"  accept->ACTIVE   p50 {statistics.median(active):6.2f} s   p95 {percentile(active, 95):6.2f} s"
          f"   max {max(active):6.2f} s")
    print(f"  seen by a poll   p50 {statistics.median(seen):6.2f} s   p95 {percentile(seen, 95):6.2f} s"
          f"   max {max(seen):6.2f} s   (polling every {poll} s)")
    marker = [b.marker - b.accepted for b in rnd.boots if b.marker is not None]
    if marker:
        print(f"  accept->marker   p50 {statistics.median(marker):6.2f} s   p95 {percentile(marker, 95):6.2f} s"
              f"   max {max(marker):6.2f} s   (first {len(marker)} boots)")
    if meter:
        print(meter.report(n))
        time.sleep(0.5)  # the log line of the last callback
        rows = breakdown(rnd.boots, read_timings(cloud))
        if rows:
            print("  where the time went (s)     p50      p95")
            for name, values in rows:
                print(f"    {name:22} {statistics.median(values):8.3f} {percentile(values, 95):8.3f}")
        tasks = network_tasks(cloud, log_start)
        if tasks:
            print("  network agent tasks: " + ", ".join(
                f"{name} {len(times)} ({sum(times):.2f} s, max {max(times):.2f} s)" for name, times in sorted(tasks.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20, help="boots per round (default 20)")
    parser.add_argument("-c", type=int, default=5, help="concurrency of the second round (default 5)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between status polls (default 0.5)")
    parser.add_argument("--markers", type=int, default=5,
                        help="sequential boots that also wait for the guest's boot marker (default 5)")
    parser.add_argument("--networks", help='Nova\'s "networks" of each server, e.g. "none" (default: not sent)')
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
        cloud.env.pop("CLOUDMGR_HEARTBEAT_INTERVAL")  # the tests' 2 s; `make run` keeps the default (5 s)
        print(f"starting a private cloud in {cloud.data_dir} ...", flush=True)
        cloud.start(image)
        sampler = RssSampler(cloud.process.pid)
        sampler.start()
    root_pid = cloud.process.pid if sampler else None
    qemu = QemuCpuSampler()  # every QEMU on this machine: run it on a quiet one
    if root_pid:
        qemu.start()
    server = {"imageRef": args.image, "flavorRef": args.flavor}
    if args.networks:
        server["networks"] = args.networks
    failed = True
    try:
        token = cloud.token(args.user, args.password, args.project)
        run_round(cloud, token, "sequential", args.n, 1, server, args.poll, args.markers, root_pid, qemu)
        run_round(cloud, token, "concurrent", args.n, args.c, server, args.poll, 0, root_pid, qemu)
        if sampler:
            sampler.sample()
            roles = ", ".join(f"{role} {rss / 2**20:.0f} MiB" for role, rss in sorted(sampler.peak_by_role.items()))
            print(f"control-plane peak RSS: {sampler.peak_total / 2**20:.0f} MiB in all ({roles})")
        failed = False
    finally:
        qemu.stop_event.set()
        if sampler:
            sampler.stop_event.set()
            cloud.stop()
            if failed:
                print(f"the cloud's log is kept for a look: {cloud.data_dir / 'cloud.log'}", file=sys.stderr)
            else:
                import shutil

                shutil.rmtree(cloud.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
