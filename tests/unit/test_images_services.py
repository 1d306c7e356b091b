"""The image services with streams: quotas enforced while data arrives, interrupted uploads,
chunked bodies, web-download's SSRF guard, download tickets, the agents' ImageRef, imports."""

import hashlib
import http.server
import io
import threading
import time
from datetime import timedelta

import pytest
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.test import APIClient

from apps.images import selectors, services, tickets, uploads, webdownload
from apps.images.models import Image, ImageStatus
from apps.images.stores import get_store
from apps.images.uploads import Body, UploadInterrupted
from cloudmgr.exceptions import NotAuthenticated, PermissionDenied
from tests.unit import test_images_crafted as crafted

pytestmark = pytest.mark.django_db(transaction=True)
MiB = crafted.MiB


@pytest.fixture(autouse=True)
def image_store(settings, tmp_path):
    settings.IMAGE_STORE_DIR = tmp_path / "store"
    return settings.IMAGE_STORE_DIR


def new_image(world, **attrs):
    attrs = {"name": "img", "disk_format": "raw", "container_format": "bare", **attrs}
    return services.image_create(user=world.member, project=world.project, attrs=attrs)


def chunks(total: int, chunk: int = MiB, fail_after: int | None = None):
    sent = 0
    while sent < total:
        if fail_after is not None and sent >= fail_after:
            raise UploadInterrupted("The upload was interrupted (client gone).")
        n = min(chunk, total - sent)
        sent += n
        yield b"\0" * n


def leftovers(image_store):
    return sorted(str(p.relative_to(image_store)) for p in image_store.rglob("*") if p.is_file()) if image_store.exists() else []


def test_quota_hit_mid_stream_stops_and_frees(world, settings, image_store):
    settings.CLOUDMGR_IMAGE_QUOTA_BYTES = 70 * MiB + world.image.size  # the world's image counts
    image = new_image(world)
    seen = []

    def body():
        for chunk in chunks(200 * MiB):
            seen.append(len(chunk))
            yield chunk

    with pytest.raises(services.ImageQuotaExceeded) as err:
        services.image_upload(user=world.member, project=world.project, image=image, body=Body(body(), None))
    assert err.value.status_code == 413 and "quota" in err.value.message
    assert 70 <= len(seen) <= 72  # it stopped right after the limit, not at the end of the stream
    image.refresh_from_db()
    assert image.status == ImageStatus.QUEUED and image.reserved_bytes == 0 and image.size is None
    assert leftovers(image_store) == []
    # Within the quota it works.
    services.image_upload(user=world.member, project=world.project, image=image, body=Body(chunks(60 * MiB), None))
    assert Image.objects.get(pk=image.pk).status == ImageStatus.ACTIVE


def test_quota_with_a_declared_length_is_refused_before_reading(world, settings):
    settings.CLOUDMGR_IMAGE_QUOTA_BYTES = 10 * MiB + world.image.size
    image = new_image(world)

    def never():
        raise AssertionError("the body was read")
        yield b""

    with pytest.raises(services.ImageQuotaExceeded):
        services.image_upload(user=world.member, project=world.project, image=image, body=Body(never(), 20 * MiB))


@pytest.mark.concurrency
def test_concurrent_uploads_share_the_quota(world, settings, image_store):
    """Two uploads streaming at once into one project never hold more than the quota together."""
    settings.CLOUDMGR_IMAGE_QUOTA_BYTES = 100 * MiB + world.image.size
    a, b = new_image(world, name="a"), new_image(world, name="b")
    results = {}

    def run(image):
        try:
            services.image_upload(
                user=world.member, project=world.project, image=image, body=Body(chunks(60 * MiB, 4 * MiB), None)
            )
            results[image.name] = "ok"
        except services.ImageQuotaExceeded:
            results[image.name] = "quota"

    threads = [threading.Thread(target=run, args=(image,)) for image in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == ["ok", "quota"]
    _, used = selectors.image_usage(project=world.project)
    assert used == 60 * MiB + world.image.size


def test_image_count_quota(world, settings):
    settings.CLOUDMGR_IMAGE_QUOTA_COUNT = 2  # the world's image is one
    new_image(world)
    with pytest.raises(services.ImageQuotaExceeded, match="Maximum number of images"):
        new_image(world)
    resp = APIClient()
    resp.credentials(HTTP_X_AUTH_TOKEN=world.token(world.member))
    assert resp.post("/image/v2/images", {"name": "x"}, format="json").status_code == 413


def test_size_cap(world, settings):
    settings.CLOUDMGR_IMAGE_SIZE_CAP = 3 * MiB
    image = new_image(world)
    with pytest.raises(services.ImageQuotaExceeded, match="maximum image size"):
        services.image_upload(user=world.member, project=world.project, image=image, body=Body(chunks(5 * MiB), None))


def test_interrupted_upload_goes_back_to_queued_with_nothing_stored(world, image_store):
    image = new_image(world)
    with pytest.raises(UploadInterrupted):
        services.image_upload(
            user=world.member, project=world.project, image=image, body=Body(chunks(50 * MiB, fail_after=20 * MiB), None)
        )
    image.refresh_from_db()
    assert image.status == ImageStatus.QUEUED and image.reserved_bytes == 0
    assert leftovers(image_store) == []


def test_short_body_is_an_interrupted_upload(world, image_store):
    """A client that promised 10 MiB and hung up after 4: never active."""
    request = RequestFactory().put("/", data=b"\0" * (4 * MiB), content_type="application/octet-stream")
    request.META["CONTENT_LENGTH"] = str(10 * MiB)
    image = new_image(world)
    with pytest.raises(UploadInterrupted, match="interrupted"):
        services.image_upload(user=world.member, project=world.project, image=image, body=uploads.request_body(request))
    assert Image.objects.get(pk=image.pk).status == ImageStatus.QUEUED
    assert leftovers(image_store) == []


class FakeChunkedInput:
    """What gunicorn hands a WSGI app for a chunked body: a stream that ends at the body's end."""

    def __init__(self, data: bytes, fail: bool = False):
        self._f = io.BytesIO(data)
        self.fail = fail

    def read(self, n=-1):
        data = self._f.read(n)
        if not data and self.fail:
            raise OSError("peer went away")
        return data


def test_request_body_reads_a_terminated_input_to_its_end(world):
    data = b"x" * (3 * MiB + 5)
    request = RequestFactory().put("/", content_type="application/octet-stream")
    request.META.update({"wsgi.input": FakeChunkedInput(data), "wsgi.input_terminated": True,
                         "HTTP_TRANSFER_ENCODING": "chunked"})
    request.META.pop("CONTENT_LENGTH", None)
    body = uploads.request_body(request)
    assert body.length is None
    assert b"".join(body.chunks) == data

    request.META["wsgi.input"] = FakeChunkedInput(data, fail=True)
    with pytest.raises(UploadInterrupted):
        b"".join(uploads.request_body(request).chunks)

    # A server that does not end the input for us: a chunked body cannot be read safely (411).
    request.META["wsgi.input_terminated"] = False
    with pytest.raises(uploads.LengthRequired):
        uploads.request_body(request)


def test_image_import_file_keeps_working(world, tmp_path, image_store):
    path = tmp_path / "disk.qcow2"
    data = crafted.qemu_img(path, "qcow2", "16M")
    image = services.image_import_file(project=world.project, path=path, name="imported", disk_format="qcow2")
    assert image.status == ImageStatus.ACTIVE and image.container_format == "bare"
    assert image.os_hash_value == hashlib.sha512(data).hexdigest() and image.virtual_size == 16 * MiB
    assert get_store().path(str(image.id)).read_bytes() == data

    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(crafted.qcow2_with_backing(tmp_path))
    with pytest.raises(services.ValidationError, match="backing file"):
        services.image_import_file(project=world.project, path=bad, name="bad", disk_format="qcow2")
    assert Image.objects.get(name="bad").status == ImageStatus.KILLED
    assert leftovers(image_store) == [str(image.id)]


def test_deleting_during_an_upload_leaves_nothing(world, image_store):
    image = new_image(world)

    def body():
        yield b"\0" * MiB
        services.image_delete(user=world.member, project=world.project, image=Image.objects.get(pk=image.pk))
        for _ in range(70):
            yield b"\0" * MiB

    with pytest.raises(services.ImageGone):
        services.image_upload(user=world.member, project=world.project, image=image, body=Body(body(), None))
    assert Image.objects.get(pk=image.pk).status == ImageStatus.DELETED
    assert leftovers(image_store) == []


def test_reaper_resets_uploads_of_dead_processes(world, image_store):
    image = new_image(world)
    Image.objects.filter(pk=image.pk).update(status=ImageStatus.SAVING, reserved_bytes=MiB,
                                             updated_at=timezone.now() - timedelta(hours=2))
    partial = get_store().writer(str(image.id))
    partial.write(b"x")
    old = time.time() - 7200
    import os

    os.utime(partial.partial, (old, old))
    assert services.images_reap_uploads() == 1
    image.refresh_from_db()
    assert image.status == ImageStatus.QUEUED and image.reserved_bytes == 0
    assert leftovers(image_store) == []


# --- tickets and the agents' ImageRef ---------------------------------------------------------


def test_image_ref_gives_agents_an_http_url_and_a_ticket(world, settings):
    settings.CLOUDMGR_IMAGE_AGENT_URL = "http://control:8000"
    ref = selectors.image_ref(image=world.image)
    assert ref.source == f"http://control:8000/image/v2/images/{world.image.id}/file"
    assert tickets.ticket_image_id(ticket=ref.auth_token) == str(world.image.id)
    settings.CLOUDMGR_IMAGE_AGENT_TRANSFER = "file"
    ref = selectors.image_ref(image=world.image)
    assert ref.source.startswith("file://") and ref.auth_token is None


def test_download_ticket(world, settings):
    owner = APIClient()
    owner.credentials(HTTP_X_AUTH_TOKEN=world.token(world.member))
    image = new_image(world, visibility="private")
    services.image_upload(user=world.member, project=world.project, image=image, body=Body(chunks(MiB), MiB))
    ticket = tickets.ticket_issue(image_id=str(image.id))
    agent = APIClient()
    agent.credentials(HTTP_X_AUTH_TOKEN=ticket)
    resp = agent.get(f"/image/v2/images/{image.id}/file")
    assert resp.status_code == 200 and b"".join(resp.streaming_content) == b"\0" * MiB
    # Only that image, only its data, only a GET.
    assert agent.get(f"/image/v2/images/{world.image.id}/file").status_code == 403
    assert agent.put(f"/image/v2/images/{image.id}/file", b"x", content_type="application/octet-stream").status_code == 403
    # Anywhere else a ticket is no token at all.
    assert agent.get(f"/image/v2/images/{image.id}").status_code == 401
    assert agent.get("/image/v2/images").status_code == 401
    # Forged or expired tickets are 401.
    forged = APIClient()
    forged.credentials(HTTP_X_AUTH_TOKEN=ticket[:-2] + "xx")
    assert forged.get(f"/image/v2/images/{image.id}/file").status_code == 401
    settings.CLOUDMGR_IMAGE_TICKET_TTL = -1
    with pytest.raises(NotAuthenticated, match="expired"):
        tickets.ticket_image_id(ticket=ticket)


def test_upload_ticket_for_snapshots(world, tmp_path):
    """A compute host uploads an instance snapshot with an upload ticket, acting as the owner."""
    image = new_image(world, disk_format="qcow2", visibility="private")
    other = new_image(world, disk_format="qcow2")
    data = crafted.qemu_img(tmp_path / "snap.qcow2", "qcow2", "8M")
    host = APIClient()
    host.credentials(HTTP_X_AUTH_TOKEN=tickets.ticket_issue(image_id=str(image.id), action=tickets.UPLOAD))
    assert host.put(f"/image/v2/images/{other.id}/file", data, content_type="application/octet-stream").status_code == 403
    assert host.get(f"/image/v2/images/{image.id}/file").status_code == 403  # upload only
    resp = host.put(f"/image/v2/images/{image.id}/file", data, content_type="application/octet-stream")
    assert resp.status_code == 204, resp.content
    image.refresh_from_db()
    assert image.status == ImageStatus.ACTIVE and image.checksum == hashlib.md5(data).hexdigest()
    assert host.put(f"/image/v2/images/{image.id}/file", data, content_type="application/octet-stream").status_code == 409
    # The inspector still decides.
    bad = new_image(world, disk_format="qcow2")
    host.credentials(HTTP_X_AUTH_TOKEN=tickets.ticket_issue(image_id=str(bad.id), action=tickets.UPLOAD))
    resp = host.put(f"/image/v2/images/{bad.id}/file", crafted.qcow2_with_backing(tmp_path),
                    content_type="application/octet-stream")
    assert resp.status_code == 400 and "backing file" in resp.json()["error"]["message"]


def test_only_owner_or_admin_may_upload(world):
    image = new_image(world, visibility="community")
    with pytest.raises(PermissionDenied):
        services.image_upload(user=world.outsider, project=world.other_project, image=image, body=Body(chunks(1), 1))


# --- web-download -----------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.path.split("to=", 1)[1])
            self.end_headers()
            return
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


@pytest.fixture
def web_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def allow_local(settings):
    settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_HOSTS = ["127.0.0.1"]
    settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_PORTS = ["*"]
    settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_NETWORKS = ["127.0.0.0/8"]


def test_web_download_import(world, web_server, allow_local, tmp_path, image_store):
    server, base = web_server
    data = crafted.qemu_img(tmp_path / "w.qcow2", "qcow2", "8M")
    _Handler.files = {"/w.qcow2": data}
    image = new_image(world, disk_format="qcow2")
    services.image_import(user=world.member, project=world.project, image=image, method="web-download",
                          uri=f"{base}/redirect?to={base}/w.qcow2")
    image.refresh_from_db()
    assert image.status == ImageStatus.ACTIVE and image.checksum == hashlib.md5(data).hexdigest()
    assert leftovers(image_store) == [str(image.id)]


def test_web_download_of_a_crafted_file_fails_cleanly(world, web_server, allow_local, tmp_path, image_store):
    server, base = web_server
    _Handler.files = {"/evil.qcow2": crafted.qcow2_with_backing(tmp_path)}
    image = new_image(world, disk_format="qcow2")
    services.image_import(user=world.member, project=world.project, image=image, method="web-download",
                          uri=f"{base}/evil.qcow2")
    image.refresh_from_db()
    assert image.status == ImageStatus.QUEUED and "backing file" in image.import_error
    assert leftovers(image_store) == []


def test_web_download_refuses_internal_addresses(world, web_server, settings):
    server, base = web_server
    image = new_image(world)
    settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_HOSTS = []
    assert services.import_methods() == ("glance-direct",)
    settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_HOSTS = ["127.0.0.1", "localhost", "169.254.169.254", "10.1.2.3"]
    settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_PORTS = ["*"]
    for url, reason in [
        (f"{base}/x", "internal address"),  # loopback, not allowed on purpose
        ("http://localhost/x", "internal address"),
        ("http://169.254.169.254/latest/meta-data/", "internal address"),
        ("http://10.1.2.3/x", "internal address"),
        ("http://[::ffff:127.0.0.1]/x", "not allowed"),
        ("http://example.com/x", "not allowed"),
        ("ftp://127.0.0.1/x", "Only http and https"),
        ("http://user:pw@127.0.0.1/x", "credentials"),
    ]:
        with pytest.raises(webdownload.WebDownloadRefused, match=reason):
            services.image_import(user=world.member, project=world.project, image=image, method="web-download", uri=url)
    settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_PORTS = ["80", "443"]
    settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_NETWORKS = ["127.0.0.0/8"]
    with pytest.raises(webdownload.WebDownloadRefused, match="port"):
        webdownload.check_url(f"{base}/x")
    assert Image.objects.get(pk=image.pk).status == ImageStatus.QUEUED


def test_web_download_redirect_to_an_internal_address_is_refused(world, web_server, settings, image_store):
    server, base = web_server
    settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_HOSTS = ["*"]
    settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_PORTS = ["*"]
    settings.CLOUDMGR_IMAGE_WEB_DOWNLOAD_NETWORKS = ["127.0.0.1/32"]
    _Handler.files = {"/ok": b"\0" * 4096}
    port = server.server_address[1]
    image = new_image(world)
    services.image_import(user=world.member, project=world.project, image=image, method="web-download",
                          uri=f"{base}/redirect?to=http://10.0.0.1:{port}/ok")
    image.refresh_from_db()
    assert image.status == ImageStatus.QUEUED and "internal address" in image.import_error
    assert leftovers(image_store) == []


def test_import_converts_when_asked(world, settings, tmp_path, image_store):
    settings.CLOUDMGR_IMAGE_CONVERT_TO = "qcow2"
    data = crafted.qemu_img(tmp_path / "d.vmdk", "vmdk", "8M")
    image = new_image(world, disk_format="vmdk")
    services.image_stage(user=world.member, project=world.project, image=image, body=Body(iter([data]), len(data)))
    services.image_import(user=world.member, project=world.project, image=image, method="glance-direct")
    image.refresh_from_db()
    assert image.status == ImageStatus.ACTIVE, image.import_error
    assert image.disk_format == "qcow2" and image.virtual_size == 8 * MiB
    stored = get_store().path(str(image.id)).read_bytes()
    assert stored[:4] == b"QFI\xfb" and image.checksum == hashlib.md5(stored).hexdigest()
    assert leftovers(image_store) == [str(image.id)]
    assert image.convert_percent is None  # cleared once done


def test_conversion_reports_its_progress(tmp_path):
    from apps.images import qemu

    src = tmp_path / "src.raw"
    with src.open("wb") as f:  # data spread over the disk, so qemu-img has work to report on
        for i in range(64):
            f.seek(i * MiB)
            f.write(b"x" * 4096)
    seen = []
    qemu.convert(src, "raw", tmp_path / "out.qcow2", "qcow2", on_progress=seen.append)
    assert seen and seen == sorted(set(seen)) and seen[-1] == 100
    assert (tmp_path / "out.qcow2").read_bytes()[:4] == b"QFI\xfb"


def test_conversion_failure_is_a_readable_error(tmp_path):
    from apps.images import qemu
    from apps.images.inspector import InspectionError

    (tmp_path / "bad.vmdk").write_bytes(b"not a vmdk at all")
    with pytest.raises(InspectionError, match="could not convert"):
        qemu.convert(tmp_path / "bad.vmdk", "vmdk", tmp_path / "out.qcow2")


# --- commands ---------------------------------------------------------------------------------


def test_commands(world, tmp_path, image_store):
    from django.core.management import call_command

    from tests.unit.conftest import make_host

    path = tmp_path / "cmd.qcow2"
    crafted.qemu_img(path, "qcow2", "8M")
    out = io.StringIO()
    call_command("image_import", str(path), "--name", "from-cmd", "--disk-format", "qcow2", "--project", "alpha",
                 "--public", stdout=out)
    assert "from-cmd" in out.getvalue() and "active" in out.getvalue()
    out = io.StringIO()
    call_command("image_list", stdout=out)
    assert "from-cmd" in out.getvalue() and "public" in out.getvalue()

    make_host("node1")
    out = io.StringIO()
    call_command("image_cache_prune", "--max-age", "999999999", stdout=out)
    assert "node1: removed 0 image(s)" in out.getvalue()
