"""The image service in a running cloud: the real python-openstackclient, crafted files, chunked
and interrupted uploads through the real gunicorn, quotas while streaming, web-download through
the control worker, and the agents' image cache."""

import hashlib
import http.client
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO
from tests.e2e.cloud import make_cloud
from tests.e2e.test_openstack_cli import openstack as run_openstack

MiB = 1 << 20


def openstack(cloud, *args, check=True, username=None, password=None, project=None):
    """`openstack ARGS` as the admin, or as this user in this project (tests/e2e/test_openstack_cli.py)."""
    who = {} if username is None else {"OS_USERNAME": username, "OS_PASSWORD": password, "OS_PROJECT_NAME": project}
    return run_openstack(cloud, *args, check=check, timeout=300, **who)


def qcow2(path: Path, size: str = "64M", fill: bool = True) -> bytes:
    """A qcow2 with some real data in it (so that its bytes are not all metadata)."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    if fill:
        raw = path.with_suffix(".raw")
        raw.write_bytes(os.urandom(2 * MiB) + b"\0" * (6 * MiB))
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
        subprocess.run(["qemu-img", "resize", "-q", "-f", "qcow2", str(path), size], check=True)
    return path.read_bytes()


def store_files(cloud) -> list[str]:
    store = cloud.data_dir / "images"
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()) if store.exists() else []


def create_image(cloud, token, **attrs):
    body = {"name": f"e2e-{secrets.token_hex(3)}", "disk_format": "qcow2", "container_format": "bare", **attrs}
    resp = cloud.request("POST", "/image/v2/images", body, token)
    assert resp.status == 201, resp.body
    return resp.body


def put_data(cloud, token, image_id, data: bytes, path="file"):
    """PUT raw bytes (urllib sends a Content-Length)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{cloud.url}/image/v2/images/{image_id}/{path}", data=data, method="PUT")
    req.add_header("Content-Type", "application/octet-stream")
    req.add_header("X-Auth-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def chunked_put(cloud, token, image_id, chunks, path="file") -> tuple[int, bytes]:
    """PUT with Transfer-Encoding: chunked and no Content-Length, as streaming clients do."""
    parts = urlsplit(cloud.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    conn.putrequest("PUT", f"/image/v2/images/{image_id}/{path}")
    conn.putheader("X-Auth-Token", token)
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    try:
        for chunk in chunks:
            conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered early (and stopped reading): read its answer, as urllib3 does
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def wait_status(cloud, token, image_id, statuses, timeout=60):
    def done():
        body = cloud.request("GET", f"/image/v2/images/{image_id}", token=token).body
        return body if body["status"] in statuses else None

    return cloud.wait_for(done, timeout, what=f"image {image_id} to be {statuses}")


# --- the real openstack CLI -------------------------------------------------------------------


@pytest.fixture(scope="module")
def project_b(live_cloud):
    suffix = secrets.token_hex(3)
    # The password starts with a letter: the CLI would read "-..." as an option.
    name, user, password = f"img-b-{suffix}", f"img-user-{suffix}", "pw" + secrets.token_urlsafe(16)
    live_cloud.manage("project_create", name)
    live_cloud.manage("user_create", user, f"--password={password}")
    live_cloud.manage("role_grant", "member", "--user", user, "--project", name)
    return {"project": name, "username": user, "password": password}


def test_openstack_cli_image_lifecycle(live_cloud, project_b, tmp_path):
    data = qcow2(tmp_path / "cli.qcow2")
    name = f"cli-{secrets.token_hex(3)}"
    b = {"username": project_b["username"], "password": project_b["password"], "project": project_b["project"]}

    created = openstack(live_cloud, "image", "create", "--file", str(tmp_path / "cli.qcow2"), "--disk-format", "qcow2",
                        "--container-format", "bare", name, "-f", "json")
    assert created["status"] == "active" and created["checksum"] == hashlib.md5(data).hexdigest()
    assert created["size"] == len(data) and created["virtual_size"] == 64 * MiB
    image_id = created["id"]

    listed = openstack(live_cloud, "image", "list", "-f", "json")
    assert any(i["ID"] == image_id and i["Name"] == name and i["Status"] == "active" for i in listed)
    shown = openstack(live_cloud, "image", "show", name, "-f", "json")
    # OSC prints os_hash_* among the properties (it looks for hash_algo/hash_value at the top).
    hashes = {**shown, **shown.get("properties", {})}
    assert shown["id"] == image_id and hashes["os_hash_algo"] == "sha512", shown
    assert hashes["os_hash_value"] == hashlib.sha512(data).hexdigest()

    out = tmp_path / "saved.qcow2"
    openstack(live_cloud, "image", "save", "--file", str(out), name)
    assert out.read_bytes() == data

    openstack(live_cloud, "image", "set", "--property", "os_distro=debian", "--min-ram", "64", name)
    shown = openstack(live_cloud, "image", "show", name, "-f", "json")
    assert shown["properties"]["os_distro"] == "debian" and shown["min_ram"] == 64

    # Project B cannot see it; A shares it; B sees it by id, lists it once it accepts.
    assert name not in {i["Name"] for i in openstack(live_cloud, "image", "list", "-f", "json", **b)}
    assert openstack(live_cloud, "image", "show", image_id, check=False, **b).returncode != 0
    member = openstack(live_cloud, "image", "add", "project", name, project_b["project"], "-f", "json")
    assert member["status"] == "pending"
    assert openstack(live_cloud, "image", "show", image_id, "-f", "json", **b)["id"] == image_id
    assert name not in {i["Name"] for i in openstack(live_cloud, "image", "list", "-f", "json", **b)}
    openstack(live_cloud, "image", "set", "--accept", image_id, **b)
    assert name in {i["Name"] for i in openstack(live_cloud, "image", "list", "-f", "json", **b)}
    saved_b = tmp_path / "saved-b.qcow2"
    openstack(live_cloud, "image", "save", "--file", str(saved_b), image_id, **b)
    assert saved_b.read_bytes() == data
    # B may not change it.
    refused = openstack(live_cloud, "image", "set", "--name", "stolen", image_id, check=False, **b)
    assert refused.returncode != 0 and "403" in refused.stderr + refused.stdout

    openstack(live_cloud, "image", "set", "--deactivate", name)
    assert openstack(live_cloud, "image", "show", name, "-f", "json")["status"] == "deactivated"
    refused = openstack(live_cloud, "image", "save", "--file", str(tmp_path / "x"), image_id, check=False, **b)
    assert refused.returncode != 0
    openstack(live_cloud, "image", "set", "--activate", name)
    assert openstack(live_cloud, "image", "show", name, "-f", "json")["status"] == "active"

    openstack(live_cloud, "image", "delete", name)
    assert openstack(live_cloud, "image", "show", image_id, check=False).returncode != 0
    assert image_id not in store_files(live_cloud)


def test_openstack_cli_glance_direct_import(live_cloud, tmp_path):
    data = qcow2(tmp_path / "imp.qcow2", "32M")
    name = f"imp-{secrets.token_hex(3)}"
    created = openstack(live_cloud, "image", "create", "--import", "--file", str(tmp_path / "imp.qcow2"),
                        "--disk-format", "qcow2", "--container-format", "bare", name, "-f", "json")
    token = live_cloud.token()
    body = wait_status(live_cloud, token, created["id"], {"active"})
    assert body["checksum"] == hashlib.md5(data).hexdigest()
    openstack(live_cloud, "image", "delete", name)


# --- crafted files through the API ------------------------------------------------------------


def _crafted(tmp: Path) -> dict:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw",
                    str(tmp / "backing.qcow2"), "16M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={tmp / 'data.raw'}",
                    str(tmp / "datafile.qcow2"), "16M"], check=True)
    good = qcow2(tmp / "good.qcow2", "16M", fill=False)
    descriptor = (
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
        'RW 32768 FLAT "/etc/shadow" 0\n'
    ).encode()
    return {
        "backing file": ((tmp / "backing.qcow2").read_bytes(), "qcow2", "backing file"),
        "data file": ((tmp / "datafile.qcow2").read_bytes(), "qcow2", "external data file"),
        "vmdk flat": (descriptor, "vmdk", "descriptor"),
        "raw as qcow2": (os.urandom(MiB), "qcow2", "not the declared qcow2"),
        "truncated qcow2": (good[:60], "qcow2", "truncated"),
    }


def test_crafted_files_are_refused(live_cloud, tmp_path):
    token = live_cloud.token()
    for name, (data, fmt, reason) in _crafted(tmp_path).items():
        image = create_image(live_cloud, token, disk_format=fmt)
        status, body = put_data(live_cloud, token, image["id"], data)
        assert 400 <= status < 500, (name, status, body)
        assert reason in json.loads(body)["error"]["message"], (name, body)
        shown = live_cloud.request("GET", f"/image/v2/images/{image['id']}", token=token).body
        assert shown["status"] == "queued" and shown["checksum"] is None, name
        assert image["id"] not in store_files(live_cloud)
        live_cloud.request("DELETE", f"/image/v2/images/{image['id']}", token=token)
    assert not [f for f in store_files(live_cloud) if f.endswith(".partial")]


def test_crafted_file_refused_through_the_cli(live_cloud, tmp_path):
    evil = tmp_path / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(evil), "16M"],
                   check=True)
    result = openstack(live_cloud, "image", "create", "--file", str(evil), "--disk-format", "qcow2",
                       "--container-format", "bare", f"evil-{secrets.token_hex(3)}", check=False)
    assert result.returncode != 0 and "backing file" in result.stderr


# --- streaming through the real gunicorn ------------------------------------------------------


def test_chunked_upload_arrives_whole(live_cloud):
    """Also the store's direct-I/O writer (two full blocks and an unaligned end) and the download
    through gunicorn without sendfile."""
    token = live_cloud.token()
    image = create_image(live_cloud, token, disk_format="raw")
    pieces = [os.urandom(size) for size in (1, 4096, 3 * MiB + 7, 65536, 5 * MiB, 12345)]
    data = b"".join(pieces)
    status, body = chunked_put(live_cloud, token, image["id"], pieces)
    assert status == 204, body
    shown = live_cloud.request("GET", f"/image/v2/images/{image['id']}", token=token).body
    assert shown["status"] == "active" and shown["size"] == len(data)
    assert shown["checksum"] == hashlib.md5(data).hexdigest()
    assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()
    parts = urlsplit(live_cloud.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("GET", f"/image/v2/images/{image['id']}/file", headers={"X-Auth-Token": token})
    resp = conn.getresponse()
    assert resp.status == 200 and int(resp.getheader("Content-Length")) == len(data)
    assert resp.getheader("Content-MD5") == shown["checksum"] and resp.read() == data
    conn.close()
    live_cloud.request("DELETE", f"/image/v2/images/{image['id']}", token=token)


def test_chunked_stage_and_import(live_cloud, tmp_path):
    token = live_cloud.token()
    data = qcow2(tmp_path / "s.qcow2", "16M")
    image = create_image(live_cloud, token)
    status, body = chunked_put(live_cloud, token, image["id"], [data[i:i + MiB] for i in range(0, len(data), MiB)],
                               path="stage")
    assert status == 204, body
    resp = live_cloud.request("POST", f"/image/v2/images/{image['id']}/import", {"method": {"name": "glance-direct"}},
                              token)
    assert resp.status == 202, resp.body
    shown = wait_status(live_cloud, token, image["id"], {"active"})
    assert shown["checksum"] == hashlib.md5(data).hexdigest()
    live_cloud.request("DELETE", f"/image/v2/images/{image['id']}", token=token)


def _cut_off_upload(cloud, token, image_id, declared: int, sent: int, chunked: bool = False) -> None:
    parts = urlsplit(cloud.url)
    sock = socket.create_connection((parts.hostname, parts.port))
    head = [f"PUT /image/v2/images/{image_id}/file HTTP/1.1", f"Host: {parts.netloc}", f"X-Auth-Token: {token}",
            "Content-Type: application/octet-stream"]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {declared}")
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    block = os.urandom(MiB)
    for _ in range(sent // MiB):
        sock.sendall(f"{MiB:x}\r\n".encode() + block + b"\r\n" if chunked else block)
    time.sleep(0.5)
    sock.close()  # the client goes away halfway


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
def test_upload_cut_off_halfway_leaves_nothing(live_cloud, chunked):
    token = live_cloud.token()
    image = create_image(live_cloud, token, disk_format="raw")
    _cut_off_upload(live_cloud, token, image["id"], declared=64 * MiB, sent=16 * MiB, chunked=chunked)
    shown = wait_status(live_cloud, token, image["id"], {"queued", "killed"}, timeout=30)
    assert shown["status"] != "active" and shown["size"] is None
    live_cloud.wait_for(lambda: not [f for f in store_files(live_cloud) if image["id"] in f], 10,
                        what="the partial file to go")
    # The image can be uploaded again.
    status, _ = put_data(live_cloud, token, image["id"], b"\0" * MiB)
    assert status == 204
    live_cloud.request("DELETE", f"/image/v2/images/{image['id']}", token=token)


# --- the generic API wall ---------------------------------------------------------------------


def test_api_wall(live_cloud, project_b):
    admin = live_cloud.token()
    b = live_cloud.token(project_b["username"], project_b["password"], project_b["project"])
    image = create_image(live_cloud, admin, visibility="private")
    path = f"/image/v2/images/{image['id']}"
    assert live_cloud.request("GET", "/image/v2/images").status == 401
    assert live_cloud.request("GET", path, token=b).status == 404
    assert live_cloud.request("DELETE", path, token=b).status == 404
    resp = live_cloud.request("GET", path + "/file", token=b)
    assert resp.status == 404 and resp.body["error"]["code"] == 404
    resp = live_cloud.request("GET", "/image/", token=None)
    assert resp.status == 300 and resp.body["versions"][0]["status"] == "CURRENT"
    live_cloud.request("DELETE", path, token=admin)


# --- the agents' cache ------------------------------------------------------------------------


def test_image_cache_prune_command(live_cloud):
    out = live_cloud.manage("image_cache_prune", "--max-age", str(10 * 365 * 86400)).stdout
    assert live_cloud.env["CLOUDMGR_HOSTNAME"] in out and "removed 0 image(s)" in out


def test_boot_fetches_the_image_over_http(live_cloud):
    """The agent fetched testvm from the image API with a ticket into its cache (test_boot boots
    it; here a boot of a freshly uploaded copy proves the path for a new image)."""
    token = live_cloud.token()
    testvm = Path(os.environ.get("CLOUDMGR_TESTVM_IMAGE", REPO / "var" / "build" / "testvm.qcow2"))
    image = create_image(live_cloud, token, name=f"boot-{secrets.token_hex(3)}", visibility="private")
    status, body = put_data(live_cloud, token, image["id"], testvm.read_bytes())
    assert status == 204, body
    resp = live_cloud.request("POST", "/compute/v2.1/servers", {"server": {
        "name": "img-http", "imageRef": image["id"], "flavorRef": "m1.nano"}}, token)
    assert resp.status == 202, resp.body
    server = f"/compute/v2.1/servers/{resp.body['server']['id']}"
    try:
        body = live_cloud.wait_for(
            lambda: (s := live_cloud.request("GET", server, token=token).body["server"])["status"] in ("ACTIVE", "ERROR")
            and s, 120, what="the server")
        assert body["status"] == "ACTIVE", body.get("fault")
        cached = live_cloud.data_dir / "cache" / "images" / image["id"]
        assert cached.read_bytes() == testvm.read_bytes()
    finally:
        live_cloud.request("DELETE", server, token=token)
        live_cloud.wait_for(lambda: live_cloud.request("GET", server, token=token).status == 404, 120, what="delete")
    live_cloud.request("DELETE", f"/image/v2/images/{image['id']}", token=token)


# --- a cloud with small image quotas and web-download allowed ---------------------------------


class _Files(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def do_GET(self):  # noqa: N802
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def web_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def limited_cloud(testvm_image):
    cloud = make_cloud(REPO / "var" / "e2e")
    cloud.env.update(
        CLOUDMGR_IMAGE_QUOTA_BYTES=str(96 * MiB),
        CLOUDMGR_IMAGE_QUOTA_COUNT="8",
        CLOUDMGR_IMAGE_WEB_DOWNLOAD_HOSTS="127.0.0.1",
        CLOUDMGR_IMAGE_WEB_DOWNLOAD_PORTS="*",
        CLOUDMGR_IMAGE_WEB_DOWNLOAD_NETWORKS="127.0.0.0/8",
    )
    try:
        cloud.start(testvm_image)
        yield cloud
    except Exception:
        print(cloud.log_tail())
        raise
    finally:
        cloud.stop()
        shutil.rmtree(cloud.data_dir, ignore_errors=True)


def test_quota_hit_mid_stream_stops_and_frees(limited_cloud):
    token = limited_cloud.token()
    image = create_image(limited_cloud, token, disk_format="raw")
    status, body = chunked_put(limited_cloud, token, image["id"], (os.urandom(MiB) for _ in range(200)))
    assert status == 413, body
    assert "quota" in json.loads(body)["error"]["message"]
    shown = limited_cloud.request("GET", f"/image/v2/images/{image['id']}", token=token).body
    assert shown["status"] == "queued" and shown["size"] is None
    assert not [f for f in store_files(limited_cloud) if image["id"] in f]
    # What was reserved is free again: a smaller image fits.
    status, _ = chunked_put(limited_cloud, token, image["id"], (b"\0" * MiB for _ in range(40)))
    assert status == 204
    limited_cloud.request("DELETE", f"/image/v2/images/{image['id']}", token=token)


def test_image_count_quota(limited_cloud):
    token = limited_cloud.token()
    made = []
    while True:
        resp = limited_cloud.request("POST", "/image/v2/images", {"name": "n"}, token)
        if resp.status != 201:
            break
        made.append(resp.body["id"])
    assert resp.status == 413 and len(made) == 7  # testvm is the eighth
    for image_id in made:
        limited_cloud.request("DELETE", f"/image/v2/images/{image_id}", token=token)


def test_web_download_through_the_control_worker(limited_cloud, web_server, tmp_path):
    token = limited_cloud.token()
    data = qcow2(tmp_path / "w.qcow2", "16M")
    _Files.files["/w.qcow2"] = data
    _Files.files["/evil.qcow2"] = _crafted(tmp_path)["backing file"][0]
    info = limited_cloud.request("GET", "/image/v2/info/import", token=token).body
    assert "web-download" in info["import-methods"]["value"]

    image = create_image(limited_cloud, token)
    resp = limited_cloud.request("POST", f"/image/v2/images/{image['id']}/import",
                                 {"method": {"name": "web-download", "uri": f"{web_server}/w.qcow2"}}, token)
    assert resp.status == 202, resp.body
    shown = wait_status(limited_cloud, token, image["id"], {"active"})
    assert shown["checksum"] == hashlib.md5(data).hexdigest()

    evil = create_image(limited_cloud, token)
    limited_cloud.request("POST", f"/image/v2/images/{evil['id']}/import",
                          {"method": {"name": "web-download", "uri": f"{web_server}/evil.qcow2"}}, token)
    time.sleep(1)
    shown = wait_status(limited_cloud, token, evil["id"], {"queued"})
    assert shown["checksum"] is None and evil["id"] not in store_files(limited_cloud)

    refused = create_image(limited_cloud, token)
    resp = limited_cloud.request("POST", f"/image/v2/images/{refused['id']}/import",
                                 {"method": {"name": "web-download", "uri": "http://169.254.169.254/latest"}}, token)
    assert resp.status == 400 and "not allowed" in resp.body["error"]["message"]
    for image_id in (image["id"], evil["id"], refused["id"]):
        limited_cloud.request("DELETE", f"/image/v2/images/{image_id}", token=token)
