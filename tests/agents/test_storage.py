"""qemu-img wrapper and image cache, with the real qemu-img (fast, no libvirt needed)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agents.specs import ImageRef
from agents.storage import StorageError, image_cache, qemu_img
from tests.agents.conftest import in_threads

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
    results, errors = in_threads(lambda: image_cache.ensure_image(image, tmp_path / "cache"), 8)
    assert not errors
    assert len(copies) == 1
    assert len(set(results)) == 1
    subprocess.run(["qemu-img", "check", "-f", "qcow2", str(results[0])], check=True, capture_output=True)


# --- formatted bases of ephemeral and swap disks ----------------------------------------------


def blkid(path: Path, tag: str) -> str:
    """What the file's contents are, probed as the guest's tools would (``TYPE``, ``LABEL``)."""
    return subprocess.run(["blkid", "-p", "-o", "value", "-s", tag, str(path)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_formatted_bases_are_sparse_raw_files_named_by_filesystem_and_size(tmp_path):
    cache = tmp_path / "cache"
    ephemeral = image_cache.ensure_formatted_base(cache, "ext4", 64)
    swap = image_cache.ensure_formatted_base(cache, "swap", 16)
    assert (ephemeral, swap) == (cache / "ephemeral_64m_ext4", cache / "swap_16m")
    assert (blkid(ephemeral, "TYPE"), blkid(ephemeral, "LABEL")) == ("ext4", "ephemeral0")
    assert blkid(swap, "TYPE") == "swap"
    for path, size in ((ephemeral, 64 * MiB), (swap, 16 * MiB)):
        assert qemu_img.info(path, "raw")["virtual-size"] == path.stat().st_size == size
        assert path.stat().st_blocks * 512 < size  # sparse: only the formatter's metadata is written
        assert path.stat().st_mode & 0o777 == 0o644  # qemu runs as another user
    assert sorted(p.name for p in cache.iterdir()) == [".ephemeral_64m_ext4.lock", ".swap_16m.lock",
                                                       "ephemeral_64m_ext4", "swap_16m"]
    made = ephemeral.stat().st_mtime_ns, ephemeral.stat().st_ino
    assert image_cache.ensure_formatted_base(cache, "ext4", 64) == ephemeral
    assert (ephemeral.stat().st_mtime_ns, ephemeral.stat().st_ino) == made  # formatted once


def test_formatted_base_errors_carry_the_tools_stderr_and_leave_nothing(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setitem(image_cache.FORMATTERS, "ext4", [*image_cache.FORMATTERS["ext4"], "-b", "999"])
    with pytest.raises(StorageError, match="mkfs.ext4 failed: .*invalid block size - 999"):
        image_cache.ensure_formatted_base(cache, "ext4", 64)
    monkeypatch.setitem(image_cache.FORMATTERS, "swap", ["mkswap-not-here"])
    with pytest.raises(StorageError, match="mkswap-not-here is not installed"):
        image_cache.ensure_formatted_base(cache, "swap", 16)
    assert sorted(p.name for p in cache.iterdir()) == [".ephemeral_64m_ext4.lock", ".swap_16m.lock"]
    with pytest.raises(StorageError, match="unsupported filesystem 'xfs'"):
        image_cache.ensure_formatted_base(cache, "xfs", 64)
    with pytest.raises(StorageError, match="positive size"):
        image_cache.ensure_formatted_base(cache, "swap", 0)


def test_concurrent_ensure_formats_a_base_once(tmp_path, monkeypatch):
    runs = []
    real_run = image_cache.run_tool

    def counting_run(argv, **kwargs):
        runs.append(argv)
        return real_run(argv, **kwargs)

    monkeypatch.setattr(image_cache, "run_tool", counting_run)
    results, errors = in_threads(lambda: image_cache.ensure_formatted_base(tmp_path / "cache", "swap", 16), 8)
    assert not errors
    assert len(runs) == 1 and len(set(results)) == 1
    assert blkid(results[0], "TYPE") == "swap"


def test_prune_waits_for_a_base_being_made(tmp_path, monkeypatch):
    """Its partial file is under the base's lock: even prune(max_age=0) leaves it alone."""
    cache = tmp_path / "cache"
    formatting, release = threading.Event(), threading.Event()
    real_run = image_cache.run_tool

    def slow_run(argv, **kwargs):
        formatting.set()
        release.wait(10)
        return real_run(argv, **kwargs)

    monkeypatch.setattr(image_cache, "run_tool", slow_run)
    made, pruned = [], []
    maker = threading.Thread(target=lambda: made.append(image_cache.ensure_formatted_base(cache, "swap", 16)))
    maker.start()
    assert formatting.wait(10)
    pruner = threading.Thread(target=lambda: pruned.append(image_cache.prune(cache, max_age=0, in_use=set())))
    pruner.start()
    pruner.join(0.5)
    assert pruner.is_alive()  # waiting for the base's lock
    release.set()
    maker.join()
    pruner.join()
    assert made == [cache / "swap_16m"] and blkid(made[0], "TYPE") == "swap"
    assert pruned[0].removed == []


def test_prune_keeps_the_bases_instances_use_and_removes_unused_ones(tmp_path):
    cache, instances = tmp_path / "cache", tmp_path / "instances"
    ephemeral = image_cache.ensure_formatted_base(cache, "ext4", 64)
    swap = image_cache.ensure_formatted_base(cache, "swap", 16)
    (instances / "vm1").mkdir(parents=True)
    qemu_img.create_overlay(instances / "vm1" / "disk.ephemeral0.qcow2", ephemeral, "raw", 64 * MiB)
    assert image_cache.images_in_use(instances) == {"ephemeral_64m_ext4"}
    long_ago = time.time() - 3 * 86400
    for name in ("ephemeral_64m_ext4", "swap_16m"):
        os.utime(cache / f".{name}.lock", (long_ago, long_ago))
    partial = cache / ".swap_32m.abcd1234.part"  # a base a crashed agent did not finish
    partial.write_bytes(b"x")
    os.utime(partial, (long_ago, long_ago))

    result = image_cache.prune(cache, max_age=86400, in_use=image_cache.images_in_use(instances))
    assert result.removed == ["swap_16m"] and result.kept == ["ephemeral_64m_ext4"]
    assert ephemeral.exists() and not swap.exists() and not partial.exists()
    assert image_cache.ensure_formatted_base(cache, "swap", 16) == swap and blkid(swap, "TYPE") == "swap"
