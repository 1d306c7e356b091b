"""The per-host cache of base images: ``<data>/cache/images/<image_id>``.

``ensure_image`` makes sure an image is present and verified, fetching it if needed:

* only ``file://`` sources for now (``http(s)://`` comes later): the file is copied to a temporary
  file in the cache directory, checked, and renamed into place, so a cached file is always complete;
* the ``sha512`` (if given) and ``size`` (if given) are verified while copying; the digest is kept in
  ``<image_id>.sha512`` so a cached image is not hashed again on every spawn;
* the copy is inspected with ``qemu-img info``: its real format must be the declared ``disk_format``
  and it must not reference a backing file or an external data file (a crafted qcow2 could otherwise
  expose host files to the guest);
* a per-image lock (``flock`` on ``.<image_id>.lock``, which also serialises threads of one process)
  keeps concurrent spawns of the same image from racing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

from agents.config import safe_component
from agents.specs import ImageRef
from agents.storage import StorageError, qemu_img

__all__ = ["StorageError", "ensure_image", "image_lock"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20
SUPPORTED_SCHEMES = ("file",)


@contextlib.contextmanager
def image_lock(cache_dir: Path, image_id: str) -> Iterator[None]:
    """Hold the exclusive lock of one cached image (across threads and processes)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache_dir / f".{image_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha512")


def _file_sha512(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_digest(path: Path) -> str | None:
    try:
        return _digest_path(path).read_text().strip() or None
    except OSError:
        return None


def _write_digest(path: Path, digest: str) -> None:
    tmp = _digest_path(path).with_suffix(".sha512.tmp")
    tmp.write_text(digest + "\n")
    os.replace(tmp, _digest_path(path))


def _source_path(image: ImageRef) -> Path:
    parts = urlsplit(image.source)
    scheme = parts.scheme.lower()
    if scheme not in SUPPORTED_SCHEMES:
        shown = scheme or "(none)"
        raise StorageError(
            f"image {image.id}: unsupported source scheme {shown!r} in {image.source!r}; "
            f"this agent can only fetch {', '.join(s + '://' for s in SUPPORTED_SCHEMES)} images"
        )
    if parts.netloc not in ("", "localhost"):
        raise StorageError(f"image {image.id}: file:// sources must be local, not on host {parts.netloc!r}")
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise StorageError(f"image {image.id}: file:// source must be an absolute path: {image.source!r}")
    return path


def _check_image(path: Path, image: ImageRef) -> None:
    """Check what the file really is, with format probing on purpose (it is what we distrust)."""
    data = qemu_img.info(path)
    actual = data.get("format")
    if actual != image.disk_format:
        raise StorageError(f"image {image.id} is declared {image.disk_format} but its contents are {actual}")
    if data.get("backing-filename") or data.get("full-backing-filename"):
        raise StorageError(f"image {image.id} refers to a backing file, which is not allowed for base images")
    specific = (data.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise StorageError(f"image {image.id} refers to an external data file, which is not allowed")


def _fetch_file(src: Path, dest: Path, image: ImageRef) -> None:
    cache_dir = dest.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=cache_dir)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha512()
        size = 0
        try:
            with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
                while chunk := fin.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
        except FileNotFoundError:
            raise StorageError(f"image {image.id}: source file {src} does not exist") from None
        except OSError as exc:
            raise StorageError(f"image {image.id}: cannot copy {src}: {exc.strerror or exc}") from exc
        digest = h.hexdigest()
        if image.size is not None and size != image.size:
            raise StorageError(f"image {image.id}: size is {size} bytes, expected {image.size}")
        if image.sha512 and digest != image.sha512.lower():
            raise StorageError(f"image {image.id}: sha512 checksum mismatch (the source file is corrupt or changed)")
        os.chmod(tmp, 0o644)  # qemu (libvirt-qemu user) reads base images
        _check_image(tmp, image)
        _write_digest(dest, digest)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _cached_ok(path: Path, image: ImageRef) -> bool:
    if not path.is_file():
        return False
    if not image.sha512:
        return True
    expected = image.sha512.lower()
    if _read_digest(path) == expected:
        return True
    digest = _file_sha512(path)  # no or different digest on record: hash the file once
    if digest == expected:
        _write_digest(path, digest)
        return True
    log.warning("cached image %s does not match the expected sha512; fetching it again", image.id)
    return False


def ensure_image(image: ImageRef, cache_dir: Path) -> Path:
    """Return the path of ``image`` in ``cache_dir``, fetching and verifying it first if needed."""
    try:
        safe_component(image.id, "image id")
    except ValueError as exc:
        raise StorageError(str(exc)) from None
    if image.disk_format not in qemu_img.FORMATS:
        raise StorageError(
            f"image {image.id}: unsupported disk format {image.disk_format!r} "
            f"(supported: {', '.join(qemu_img.FORMATS)})"
        )
    dest = cache_dir / image.id
    with image_lock(cache_dir, image.id):
        if _cached_ok(dest, image):
            return dest
        src = _source_path(image)
        log.info("caching image %s from %s", image.id, image.source)
        _fetch_file(src, dest, image)
        return dest
