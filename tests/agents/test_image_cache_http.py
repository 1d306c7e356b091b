"""The image cache fetching over HTTP from the image API (with a download ticket), verifying
SHA-512, and pruning what no instance uses. Plain pytest, no Django: a tiny HTTP server plays the
image API."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
import time
from pathlib import Path

import pytest

from agents.specs import DiskSpec, DomainSpec, ImageRef
from agents.storage import StorageError, image_cache, qemu_img

MiB = 1 << 20
TICKET = "cmimg1.the-ticket"


class ImageAPI(http.server.BaseHTTPRequestHandler):
    images: dict[str, bytes] = {}
    requests: list[str] = []
    cut_after: int | None = None

    def do_GET(self):  # noqa: N802
        self.requests.append(self.path)
        image_id = self.path.split("/")[-2]
        if self.headers.get("X-Auth-Token") != TICKET:
            body = json.dumps({"error": {"code": 401, "message": "The image download ticket is not valid."}}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        data = self.images.get(image_id)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.cut_after is not None:
            self.wfile.write(data[: self.cut_after])
            self.wfile.flush()
            self.connection.close()
            return
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    ImageAPI.images, ImageAPI.requests, ImageAPI.cut_after = {}, [], None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ImageAPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def base_image(tmp_path) -> bytes:
    path = tmp_path / "base.qcow2"
    qemu_img.create(path, "qcow2", 64 * MiB)
    return path.read_bytes()


def ref(api: str, image_id: str, data: bytes, **overrides) -> ImageRef:
    fields = dict(
        id=image_id, source=f"{api}/image/v2/images/{image_id}/file", disk_format="qcow2", size=len(data),
        sha512=hashlib.sha512(data).hexdigest(), auth_token=TICKET,
    )
    return ImageRef(**{**fields, **overrides})


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir())


def test_http_fetch_with_ticket_and_sha512(tmp_path, api, base_image):
    ImageAPI.images["img-1"] = base_image
    cache = tmp_path / "cache"
    path = image_cache.ensure_image(ref(api, "img-1", base_image), cache)
    assert path.read_bytes() == base_image and path.stat().st_mode & 0o777 == 0o644
    assert cache_files(cache) == [".img-1.lock", "img-1", "img-1.sha512"]
    image_cache.ensure_image(ref(api, "img-1", base_image), cache)
    assert len(ImageAPI.requests) == 1  # cached: fetched once


def test_bad_hash_is_refused_and_leaves_nothing(tmp_path, api, base_image):
    ImageAPI.images["img-1"] = base_image
    cache = tmp_path / "cache"
    with pytest.raises(StorageError, match="sha512 checksum mismatch"):
        image_cache.ensure_image(ref(api, "img-1", base_image, sha512="0" * 128), cache)
    assert cache_files(cache) == [".img-1.lock"]


def test_http_source_needs_a_sha512(tmp_path, api, base_image):
    with pytest.raises(StorageError, match="needs a sha512"):
        image_cache.ensure_image(ref(api, "img-1", base_image, sha512=None), tmp_path / "cache")


def test_refused_ticket_says_why(tmp_path, api, base_image):
    ImageAPI.images["img-1"] = base_image
    with pytest.raises(StorageError, match="answered 401 The image download ticket is not valid"):
        image_cache.ensure_image(ref(api, "img-1", base_image, auth_token="cmimg1.forged"), tmp_path / "cache")


def test_cut_off_download_leaves_nothing(tmp_path, api, base_image):
    ImageAPI.images["img-1"] = base_image
    ImageAPI.cut_after = 1000
    cache = tmp_path / "cache"
    with pytest.raises(StorageError):
        image_cache.ensure_image(ref(api, "img-1", base_image), cache)
    assert cache_files(cache) == [".img-1.lock"]


def test_spec_carries_the_ticket():
    spec = DomainSpec(instance_id="i", display_name="vm", vcpus=1, memory_mib=64, disks=[
        DiskSpec(name="root", size_gb=1, image=ImageRef(id="img", source="http://x/f", auth_token=TICKET))
    ])
    assert DomainSpec.from_dict(spec.to_dict()).disks[0].image.auth_token == TICKET


def _overlay(instances: Path, name: str, base: Path) -> None:
    (instances / name).mkdir(parents=True)
    qemu_img.create_overlay(instances / name / "disk.qcow2", base, "qcow2", 64 * MiB)


def test_prune_removes_only_old_unused_images(tmp_path, api, base_image):
    for image_id in ("used", "old", "recent"):
        ImageAPI.images[image_id] = base_image
    cache, instances = tmp_path / "cache", tmp_path / "instances"
    paths = {i: image_cache.ensure_image(ref(api, i, base_image), cache) for i in ("used", "old", "recent")}
    _overlay(instances, "vm1", paths["used"])
    assert image_cache.images_in_use(instances) == {"used"}
    long_ago = time.time() - 3 * 86400
    for image_id in ("used", "old"):
        os.utime(cache / f".{image_id}.lock", (long_ago, long_ago))
    partial = cache / ".old.abc.part"
    partial.write_bytes(b"x")
    os.utime(partial, (long_ago, long_ago))

    result = image_cache.prune(cache, max_age=86400, in_use=image_cache.images_in_use(instances))
    assert result.removed == ["old"] and sorted(result.kept) == ["recent", "used"]
    assert result.freed_bytes == len(base_image)
    assert not (cache / "old").exists() and not (cache / "old.sha512").exists() and not partial.exists()
    assert (cache / "used").exists() and (cache / "recent").exists()
    # A pruned image is fetched again on demand.
    assert image_cache.ensure_image(ref(api, "old", base_image), cache).exists()


def test_prune_task(tmp_path, api, base_image, monkeypatch):
    from agents import tasks
    from agents.config import get_config

    monkeypatch.setenv("CLOUDMGR_DATA_DIR", str(tmp_path / "data"))
    get_config.cache_clear()
    try:
        config = get_config()
        ImageAPI.images["old"] = base_image
        image_cache.ensure_image(ref(api, "old", base_image), config.image_cache_dir)
        answer = tasks.image_cache_prune({"max_age": 0})
        assert answer["ok"] and answer["removed"] == ["old"] and answer["freed_bytes"] == len(base_image)
        assert tasks.image_cache_prune({"max_age": "soon"})["ok"] is False
    finally:
        get_config.cache_clear()
