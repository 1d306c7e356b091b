"""qemu-img wrapper and image cache, with the real qemu-img (fast, no libvirt needed)."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from pathlib import Path

import pytest

from agents.specs import ImageRef
from agents.storage import StorageError, image_cache, qemu_img

MiB = 1 << 20


@pytest.fixture
def base_image(tmp_path) -> Path:
    path = tmp_path / "src" / "base.qcow2"
    path.parent.mkdir()
    qemu_img.create(path, "qcow2", 64 * MiB)
    return path


def sha512(path: Path) -> str:
    return hashlib.sha512(path.read_bytes()).hexdigest()


def test_create_info_overlay_resize(tmp_path, base_image):
    info = qemu_img.info(base_image, "qcow2")
    assert info["format"] == "qcow2" and info["virtual-size"] == 64 * MiB

    overlay = tmp_path / "overlay.qcow2"
    qemu_img.create_overlay(overlay, base_image, "qcow2", 128 * MiB)
    info = qemu_img.info(overlay, "qcow2")
    assert info["virtual-size"] == 128 * MiB
    assert info["backing-filename"] == str(base_image)
    assert info["backing-filename-format"] == "qcow2"

    qemu_img.resize(overlay, "qcow2", 256 * MiB)
    assert qemu_img.virtual_size(overlay, "qcow2") == 256 * MiB


def test_errors_carry_qemu_img_stderr(tmp_path, base_image):
    with pytest.raises(StorageError, match=r"qemu-img info failed: .*No such file"):
        qemu_img.info(tmp_path / "missing.qcow2", "qcow2")
    with pytest.raises(StorageError, match="qemu-img resize failed"):
        qemu_img.resize(base_image, "qcow2", MiB)  # shrinking is refused
    with pytest.raises(StorageError, match="unsupported disk format"):
        qemu_img.create(tmp_path / "x.vmdk", "vmdk", MiB)
    with pytest.raises(StorageError, match="absolute"):
        qemu_img.create_overlay(tmp_path / "o.qcow2", Path("relative.qcow2"), "qcow2")


def test_explicit_formats_are_enforced(tmp_path, base_image):
    """A qcow2 file opened as raw is just bytes: no format probing happens."""
    assert qemu_img.info(base_image, "raw")["format"] == "raw"


def test_virtual_size_of_a_cached_image_needs_no_qemu_img(tmp_path, base_image, monkeypatch):
    raw = tmp_path / "disk.raw"
    qemu_img.create(raw, "raw", 3 * MiB)
    grown = tmp_path / "grown.qcow2"
    qemu_img.create_overlay(grown, base_image, "qcow2", 96 * MiB)
    expected = {path: qemu_img.virtual_size(path, fmt) for path, fmt in
                [(base_image, "qcow2"), (grown, "qcow2"), (raw, "raw")]}

    def no_qemu_img(*args, **kwargs):
        raise AssertionError("qemu-img ran")

    monkeypatch.setattr(subprocess, "run", no_qemu_img)
    assert image_cache.virtual_size(base_image, "qcow2") == expected[base_image] == 64 * MiB
    assert image_cache.virtual_size(grown, "qcow2") == expected[grown] == 96 * MiB
    assert image_cache.virtual_size(raw, "raw") == expected[raw] == 3 * MiB
    with pytest.raises(StorageError, match="is not a qcow2 image"):
        image_cache.virtual_size(raw, "qcow2")
    with pytest.raises(StorageError, match="cannot read the cached image"):
        image_cache.virtual_size(tmp_path / "missing", "qcow2")


def test_cache_file_image(tmp_path, base_image):
    cache = tmp_path / "cache"
    image = ImageRef(id="img-1", source=base_image.as_uri(), sha512=sha512(base_image), size=base_image.stat().st_size)
    path = image_cache.ensure_image(image, cache)
    assert path == cache / "img-1"
    assert path.read_bytes() == base_image.read_bytes()
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in cache.iterdir()) == [".img-1.lock", "img-1", "img-1.sha512"]

    mtime = path.stat().st_mtime_ns
    base_image.unlink()  # cached: the source is not needed any more
    assert image_cache.ensure_image(image, cache) == path
    assert path.stat().st_mtime_ns == mtime


def test_cached_image_is_refetched_if_the_expected_digest_differs(tmp_path, base_image):
    cache = tmp_path / "cache"
    other = tmp_path / "other.qcow2"
    qemu_img.create(other, "qcow2", 32 * MiB)
    image_cache.ensure_image(ImageRef(id="img", source=other.as_uri()), cache)
    assert (cache / "img").read_bytes() == other.read_bytes()
    # Same id, no digest given: the cached file is trusted as is.
    image_cache.ensure_image(ImageRef(id="img", source=base_image.as_uri()), cache)
    assert (cache / "img").read_bytes() == other.read_bytes()
    # A digest that the cached file does not have: hashed once, found different, fetched again.
    image_cache.ensure_image(ImageRef(id="img", source=base_image.as_uri(), sha512=sha512(base_image)), cache)
    assert (cache / "img").read_bytes() == base_image.read_bytes()
    assert (cache / "img.sha512").read_text().strip() == sha512(base_image)


def test_cached_image_without_recorded_digest_is_hashed_once(tmp_path, base_image):
    cache = tmp_path / "cache"
    image = ImageRef(id="img", source=base_image.as_uri(), sha512=sha512(base_image))
    image_cache.ensure_image(image, cache)
    (cache / "img.sha512").unlink()
    image_cache.ensure_image(image, cache)
    assert (cache / "img.sha512").read_text().strip() == sha512(base_image)


def test_checksum_mismatch(tmp_path, base_image):
    cache = tmp_path / "cache"
    image = ImageRef(id="img", source=base_image.as_uri(), sha512="0" * 128)
    with pytest.raises(StorageError, match="sha512 checksum mismatch"):
        image_cache.ensure_image(image, cache)
    assert [p.name for p in cache.iterdir()] == [".img.lock"]  # no partial file left


def test_size_mismatch(tmp_path, base_image):
    with pytest.raises(StorageError, match="size is"):
        image_cache.ensure_image(ImageRef(id="img", source=base_image.as_uri(), size=1), tmp_path / "cache")


def test_declared_format_must_match_contents(tmp_path, base_image):
    with pytest.raises(StorageError, match="declared raw but its contents are qcow2"):
        image_cache.ensure_image(ImageRef(id="img", source=base_image.as_uri(), disk_format="raw"), tmp_path / "c")


def test_base_image_with_backing_file_is_refused(tmp_path, base_image):
    """A crafted qcow2 pointing at a host file must never become a base image."""
    evil = tmp_path / "evil.qcow2"
    qemu_img.create_overlay(evil, Path("/etc/hostname").resolve(), "raw", MiB)
    with pytest.raises(StorageError, match="backing file"):
        image_cache.ensure_image(ImageRef(id="evil", source=evil.as_uri()), tmp_path / "cache")


def test_raw_image(tmp_path):
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\0" * MiB)
    path = image_cache.ensure_image(ImageRef(id="raw-1", source=raw.as_uri(), disk_format="raw"), tmp_path / "c")
    assert path.stat().st_size == MiB


@pytest.mark.parametrize(
    "source, message",
    [
        ("http://images.example/x.qcow2", "needs a sha512"),
        ("ftp://images.example/x.qcow2", "unsupported source scheme 'ftp'"),
        ("/plain/path", "unsupported source scheme"),
        ("file://otherhost/x.qcow2", "must be local"),
        ("file:///does/not/exist.qcow2", "does not exist"),
    ],
)
def test_source_errors(tmp_path, source, message):
    with pytest.raises(StorageError, match=message):
        image_cache.ensure_image(ImageRef(id="img", source=source), tmp_path / "cache")


def test_bad_image_id_or_format(tmp_path, base_image):
    with pytest.raises(StorageError, match="invalid image id"):
        image_cache.ensure_image(ImageRef(id="../../etc", source=base_image.as_uri()), tmp_path / "cache")
    with pytest.raises(StorageError, match="unsupported disk format"):
        image_cache.ensure_image(ImageRef(id="i", source=base_image.as_uri(), disk_format="iso"), tmp_path / "c")


def test_concurrent_ensure_copies_once(tmp_path, base_image, monkeypatch):
    copies = []
    real_fetch = image_cache._fetch_file

    def counting_fetch(src, dest, image):
        copies.append(dest)
        real_fetch(src, dest, image)

    monkeypatch.setattr(image_cache, "_fetch_file", counting_fetch)
    image = ImageRef(id="img", source=base_image.as_uri(), sha512=sha512(base_image))
    results, errors = [], []

    def worker():
        try:
            results.append(image_cache.ensure_image(image, tmp_path / "cache"))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(copies) == 1
    assert len(set(results)) == 1
    subprocess.run(["qemu-img", "check", "-f", "qcow2", str(results[0])], check=True, capture_output=True)
