#!/usr/bin/env python
"""Identity benchmark: what Keystone's token API costs on cloudmgr.

Against a running web server (one keep-alive HTTP connection, requests one at a time), it prints
p50/p95 of:

1. token issue by password (POST /identity/v3/auth/tokens, project-scoped), beside the time of one
   bare password hash check of the same stored hash in-process (django.contrib.auth.hashers):
   target p95 within 1.5x one hash check;
2. token issue by re-scope (the `token` method, unscoped -> project): target p95 under 20 ms;
3. the latency a token validation adds to an API call: authenticated cheap GETs
   (GET /identity/v3/domains/default, GET /compute/v2.1/flavors) against the unauthenticated version
   documents of the same services (GET /identity/v3, GET /compute/v2.1), interleaved; and
   GET /identity/v3/auth/tokens (validate a token, full body with catalog) for reference:
   target overhead under 2 ms.

By default it starts a private cloud (as `make run` runs one: gunicorn, workers, in its own data
dir) and removes it afterwards; --url/--password target a running one (the hash check then uses a
fresh hash made with this checkout's hasher settings, since the stored one is out of reach).

    .venv/bin/python bench/identity.py [-n 200] [--password-n 100]
"""

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.stats import percentile  # noqa: E402
from tests.e2e.cloud import Cloud, make_cloud  # noqa: E402


class Client:
    """One keep-alive HTTP/1.1 connection, so that the figures are the server's, not TCP's."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {
            "Accept": "application/json",
            **({"Content-Type": "application/json"} if data else {}),
            **(headers or {}),
        }
        started = time.perf_counter()
        self.conn.request(method, path, body=data, headers=hdrs)
        resp = self.conn.getresponse()
        raw = resp.read()
        elapsed = time.perf_counter() - started
        return resp.status, resp, raw, elapsed


def password_auth(user: str, password: str, project: str | None) -> dict:
    auth = {
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": user, "domain": {"name": "Default"}, "password": password}},
        }
    }
    if project:
        auth["scope"] = {"project": {"name": project, "domain": {"name": "Default"}}}
    return {"auth": auth}


def timed(label: str, n: int, call) -> list[float]:
    for _ in range(min(10, n)):
        call()  # warm up
    times = [call() for _ in range(n)]
    ms = [t * 1000 for t in times]
    print(f"  {label:<52} p50 {statistics.median(ms):8.2f} ms   p95 {percentile(ms, 95):8.2f} ms   (n={n})")
    return ms


def expect(status, resp, raw, elapsed, code: int):
    if status != code:
        raise RuntimeError(f"expected {code}, got {status}: {raw[:300]!r}")
    return resp, raw, elapsed


def hash_check_seconds(stored_hash: str, password: str, rounds: int = 7) -> float:
    """The median time of one check_password of this hash, in-process."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudmgr.settings")
    import django

    django.setup()
    from django.contrib.auth.hashers import check_password, make_password

    stored_hash = stored_hash or make_password(password)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        assert check_password(password, stored_hash)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def run(cloud: Cloud, args, stored_hash: str) -> None:
    client = Client(cloud.url)
    password, user, project = cloud.admin_password, args.user, args.project

    print(f"identity benchmark against {cloud.url} (user {user}, project {project})")
    hash_s = hash_check_seconds(stored_hash, password)
    print(f"  one bare password hash check (in-process, median of 7): {hash_s * 1000:.2f} ms")

    print("token issue")

    def by_password():
        return expect(*client.request("POST", "/identity/v3/auth/tokens", password_auth(user, password, project)), 201)[
            2
        ]

    issue_ms = timed("by password (project-scoped)", args.password_n, by_password)

    _, resp, _, _ = client.request("POST", "/identity/v3/auth/tokens", password_auth(user, password, None))
    unscoped = resp.getheader("X-Subject-Token")
    rescope_body = {
        "auth": {
            "identity": {"methods": ["token"], "token": {"id": unscoped}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}},
        }
    }

    def by_token():
        return expect(*client.request("POST", "/identity/v3/auth/tokens", rescope_body), 201)[2]

    rescope_ms = timed("by re-scope (token method, unscoped -> project)", args.n, by_token)

    _, resp, _, _ = client.request("POST", "/identity/v3/auth/tokens", password_auth(user, password, project))
    token = resp.getheader("X-Subject-Token")
    auth = {"X-Auth-Token": token}

    print("token validation (interleaved pairs: unauthenticated version document / authenticated cheap GET)")
    pairs = [
        ("GET /identity/v3", "/identity/v3", "GET /identity/v3/domains/default", "/identity/v3/domains/default"),
        ("GET /compute/v2.1", "/compute/v2.1", "GET /compute/v2.1/flavors", "/compute/v2.1/flavors"),
    ]
    overheads = []
    for bare_label, bare_path, auth_label, auth_path in pairs:
        bare, authed = [], []
        for i in range(args.n + 10):
            b = expect(*client.request("GET", bare_path), 200)[2]
            a = expect(*client.request("GET", auth_path, headers=auth), 200)[2]
            if i >= 10:
                bare.append(b * 1000)
                authed.append(a * 1000)
        for label, ms in ((bare_label + " (no token)", bare), (auth_label + " (X-Auth-Token)", authed)):
            print(
                f"  {label:<52} p50 {statistics.median(ms):8.2f} ms   p95 {percentile(ms, 95):8.2f} ms   (n={len(ms)})"
            )
        p50 = statistics.median(authed) - statistics.median(bare)
        p95 = percentile(authed, 95) - percentile(bare, 95)
        overheads.append(p50)
        print(f"  {'  -> overhead of validating the token':<52} p50 {p50:8.2f} ms   p95 {p95:8.2f} ms")

    def validate():
        return expect(
            *client.request("GET", "/identity/v3/auth/tokens", headers={**auth, "X-Subject-Token": token}), 200
        )[2]

    timed("GET /identity/v3/auth/tokens (validate, with catalog)", args.n, validate)

    print("targets")
    p95_issue = percentile(issue_ms, 95)
    print(
        f"  password issue p95 {p95_issue:.2f} ms <= 1.5 x hash check {1.5 * hash_s * 1000:.2f} ms: "
        f"{verdict(p95_issue <= 1.5 * hash_s * 1000)}"
    )
    p95_rescope = percentile(rescope_ms, 95)
    print(f"  re-scope p95 {p95_rescope:.2f} ms < 20 ms: {verdict(p95_rescope < 20)}")
    worst = max(overheads)
    print(f"  validation overhead (p50 difference, worst pair) {worst:.2f} ms < 2 ms: {verdict(worst < 2)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=300, help="requests per cheap measurement (default 300)")
    parser.add_argument(
        "--password-n", type=int, default=100, help="password token issues (each costs a password hash; default 100)"
    )
    parser.add_argument("--url", help="a running cloud's base URL (default: start a private one)")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", help="with --url: the user's password")
    parser.add_argument("--project", default="admin")
    args = parser.parse_args()

    if args.url:
        cloud = Cloud(data_dir=Path("."), env={}, url=args.url.rstrip("/"), admin_password=args.password or "")
        run(cloud, args, stored_hash="")
        return

    image = Path(REPO / "var" / "build" / "testvm.qcow2")
    subprocess.run([str(REPO / "scripts" / "build-testvm.sh"), str(image)], check=True)
    cloud = make_cloud(REPO / "var" / "bench")
    print(f"starting a private cloud in {cloud.data_dir} ...", flush=True)
    try:
        cloud.start(image)
        stored_hash = (
            cloud.manage(
                "shell",
                "--no-imports",
                "-c",
                f"from apps.tenants.models import User; print(User.objects.get(username={args.user!r}).password)",
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        # Use this cloud's settings (data dir, secret key) for the in-process hash check.
        os.environ.update({k: v for k, v in cloud.env.items() if k.startswith("CLOUDMGR_")})
        run(cloud, args, stored_hash=stored_hash)
    finally:
        cloud.stop()
        shutil.rmtree(cloud.data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
