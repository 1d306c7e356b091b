#!/usr/bin/env python
"""Image transfer benchmark: upload and download of a 1 GiB and a 4 GiB file through the image
API, beside a plain `cp` of the same file on the same disk, and the web server's RSS.

For each size it prints the throughput of `PUT /image/v2/images/{id}/file` (the server streams,
MD5- and SHA-512-hashes, inspects, writes with direct I/O, fsyncs and publishes the file) and of
`GET .../file` (the client writes what it receives to disk, as `cp` does), each beside a `cp`
timed just before it and as a ratio to that `cp`, the machine's load average and CPU busy share
during the transfer, and the web server's CPU seconds (an upload costs at least ~2.3 CPU seconds
per GiB of hashing: MD5 alone is one core's work at ~650 MiB/s). Then the web server's (gunicorn's)
RSS when idle and at its peak during the transfers. Targets: >= 0.8x cp; peak RSS < 100 MB above
idle. Each cp and each transfer starts with the page cache dropped (as root), so that both read
from the disk: the server stores with direct I/O, so a download always reads the disk, and a cp
of a file still cached from writing it would compare memory with disk. The machine is shared: --repeat runs the transfers several times, and the summary gives the
range.

By default it starts a private cloud (the same way `make run` runs one, in its own data dir,
Redis database and host name; no image quotas) and removes it and every file afterwards;
--url/--password target a running one (its RSS and CPU are then not measured).

    .venv/bin/python bench/images.py [--sizes 1,4] [--repeat 1]
"""

import argparse
import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.stats import percentile  # noqa: E402
from tests.e2e.cloud import Cloud, make_cloud  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20


class WebRss(threading.Thread):
    """Samples the RSS of the web server (gunicorn's processes) under the cloud's runner."""

    def __init__(self, root_pid: int):
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.peak = 0
        self.stop_event = threading.Event()

    def _gunicorn_pids(self) -> list[int]:
        parents: dict[int, list[int]] = {}
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                parents.setdefault(ppid, []).append(int(proc.name))
        found, todo = [], [self.root_pid]
        while todo:
            for child in parents.get(todo.pop(), []):
                todo.append(child)
                try:
                    cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"gunicorn" in cmdline and not cmdline.startswith(b"/bin/sh"):
                    found.append(child)
        return found

    def sample(self) -> int:
        total = 0
        for pid in self._gunicorn_pids():
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * 4096
            except (OSError, IndexError, ValueError):
                pass
        self.peak = max(self.peak, total)
        return total

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.sample()
            time.sleep(0.05)


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class Machine:
    """What the machine and the web server did during one transfer."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.start = (machine_jiffies(), cpu_seconds(pids))

    def report(self) -> str:
        (busy0, total0), web0 = self.start
        busy1, total1 = machine_jiffies()
        text = f"load {os.getloadavg()[0]:4.1f}, {100 * (busy1 - busy0) / max(total1 - total0, 1):3.0f}% busy"
        if self.pids:
            text += f", web {cpu_seconds(self.pids) - web0:4.1f} CPU s"
        return text


def make_file(path: Path, size: int) -> None:
    """`size` bytes of incompressible data (a random 64 MiB block, repeated)."""
    block = os.urandom(64 * MiB)
    with path.open("wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
    subprocess.run(["sync"], check=True)


def drop_page_cache() -> None:
    """Write dirty pages out and drop clean ones, so the next read comes from the disk."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError as err:  # not root: the figures then mix cached and disk reads
        print(f"warning: cannot drop the page cache ({err})", file=sys.stderr)


def timed_cp(src: Path, dest: Path) -> float:
    drop_page_cache()
    start = time.perf_counter()
    subprocess.run(["cp", str(src), str(dest)], check=True)
    elapsed = time.perf_counter() - start
    dest.unlink()
    return elapsed


def _host_port(cloud: Cloud) -> tuple[str, int]:
    parts = urlsplit(cloud.url)
    return parts.hostname, parts.port or 80


def create_image(cloud: Cloud, token: str, name: str) -> str:
    resp = cloud.request("POST", "/image/v2/images",
                         {"name": name, "disk_format": "raw", "container_format": "bare"}, token)
    if resp.status != 201:
        raise RuntimeError(f"create failed: {resp.status} {resp.body}")
    return resp.body["id"]


def upload(cloud: Cloud, token: str, image_id: str, src: Path) -> float:
    """PUT the file with a Content-Length; the client sends with sendfile (no client overhead)."""
    host, port = _host_port(cloud)
    size = src.stat().st_size
    head = (
        f"PUT /image/v2/images/{image_id}/file HTTP/1.1\r\nHost: {host}:{port}\r\nX-Auth-Token: {token}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port)) as sock, src.open("rb") as f:
        start = time.perf_counter()
        sock.sendall(head)
        sock.sendfile(f)
        status_line = sock.makefile("rb").readline()
        elapsed = time.perf_counter() - start
    if b" 204 " not in status_line:
        raise RuntimeError(f"upload failed: {status_line!r}")
    return elapsed


def download(cloud: Cloud, token: str, image_id: str, dest: Path) -> float:
    host, port = _host_port(cloud)
    conn = http.client.HTTPConnection(host, port, timeout=600)
    buf = bytearray(4 * MiB)
    view = memoryview(buf)
    start = time.perf_counter()
    conn.request("GET", f"/image/v2/images/{image_id}/file", headers={"X-Auth-Token": token})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"download failed: {resp.status} {resp.read()[:200]!r}")
    with dest.open("wb", buffering=0) as f:
        while n := resp.readinto(buf):
            f.write(view[:n])
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def rate(size: int, seconds: float) -> str:
    return f"{size / seconds / MiB:7.0f} MiB/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,4", help="file sizes in GiB, comma-separated (default 1,4)")
    parser.add_argument("--repeat", type=int, default=1, help="transfers of each size (default 1)")
    parser.add_argument("--url", help="a running cloud's base URL (default: start a private one)")
    parser.add_argument("--password", help="with --url: admin's password")
    args = parser.parse_args()
    sizes = [int(float(s) * GiB) for s in args.sizes.split(",")]

    sampler = None
    if args.url:
        cloud = Cloud(data_dir=REPO / "var" / "bench", env={}, url=args.url.rstrip("/"),
                      admin_password=args.password or "")
        cloud.data_dir.mkdir(parents=True, exist_ok=True)
        workdir = cloud.data_dir
    else:
        image = REPO / "var" / "build" / "testvm.qcow2"
        subprocess.run([str(REPO / "scripts" / "build-testvm.sh"), str(image)], check=True)
        cloud = make_cloud(REPO / "var" / "bench")
        cloud.env.update(CLOUDMGR_IMAGE_QUOTA_BYTES="-1", CLOUDMGR_IMAGE_SIZE_CAP="-1")
        print(f"starting a private cloud in {cloud.data_dir} ...", flush=True)
        cloud.start(image)
        sampler = WebRss(cloud.process.pid)
        workdir = cloud.data_dir
    ratios: dict[tuple[str, int], list[float]] = {}
    try:
        token = cloud.token("admin", args.password)
        idle, web_pids = 0, []
        if sampler:
            time.sleep(1)
            idle = sampler.sample()
            sampler.peak = idle
            web_pids = sampler._gunicorn_pids()
            sampler.start()
        print(f"{'size':>6}  {'cp':>9}  {'upload (API)':>24}  {'':38}  {'cp':>9}  {'download (API)':>24}")
        for size in sizes:
            src, out = workdir / f"bench-{size}.raw", workdir / f"bench-{size}.out"
            make_file(src, size)
            try:
                for _ in range(args.repeat):
                    cp_up = timed_cp(src, workdir / f"bench-{size}.cp")
                    image_id = create_image(cloud, token, f"bench-{size // GiB}g")
                    drop_page_cache()
                    machine = Machine(web_pids)
                    up = upload(cloud, token, image_id, src)
                    up_machine = machine.report()
                    cp_down = timed_cp(src, workdir / f"bench-{size}.cp")
                    drop_page_cache()
                    machine = Machine(web_pids)
                    down = download(cloud, token, image_id, out)
                    down_machine = machine.report()
                    ok = out.stat().st_size == size and md5(out) == md5(src)
                    out.unlink()
                    cloud.request("DELETE", f"/image/v2/images/{image_id}", token=token)
                    ratios.setdefault(("upload", size), []).append(cp_up / up)
                    ratios.setdefault(("download", size), []).append(cp_down / down)
                    print(f"{size // GiB:>4} GiB  {rate(size, cp_up)}  {rate(size, up)} ({cp_up / up:4.2f}x cp)  "
                          f"[{up_machine}]  {rate(size, cp_down)}  {rate(size, down)} ({cp_down / down:4.2f}x cp)  "
                          f"[{down_machine}]  {'bytes match' if ok else 'BYTES DIFFER'}", flush=True)
            finally:
                for path in (src, out):
                    path.unlink(missing_ok=True)
        if args.repeat > 1:
            for (what, size), values in ratios.items():
                print(f"{what:>8} {size // GiB} GiB: {min(values):.2f}x .. {max(values):.2f}x cp "
                      f"(median {percentile(values, 50):.2f}x over {len(values)})")
        if sampler:
            sampler.sample()
            print(f"web server RSS: idle {idle / MiB:.0f} MiB, peak during the transfers {sampler.peak / MiB:.0f} MiB "
                  f"(+{(sampler.peak - idle) / MiB:.0f} MiB)")
    finally:
        if sampler:
            sampler.stop_event.set()
            cloud.stop()
            shutil.rmtree(cloud.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
