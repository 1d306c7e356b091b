"""The per-host cache of base images: ``<data>/cache/images/<image_id>``.

``ensure_image`` makes sure an image is present and verified, fetching it if needed:

* ``http(s)://`` sources are the image API (``GET /image/v2/images/<id>/file``), fetched with the
  ``auth_token`` of the ImageRef (a short-lived download ticket for this image only) as
  ``X-Auth-Token``; ``file://`` sources (one box, tests) are copied. Either way the data streams
  into a temporary file in the cache directory, is checked, and is renamed into place, so a
  cached file is always complete; a failure leaves nothing behind;
* the ``sha512`` and ``size`` (if given) are verified while the data arrives (an http source must
  give a ``sha512``: the network is not trusted to deliver what the control plane inspected); the
  digest is kept in ``<image_id>.sha512`` so a cached image is not hashed again on every spawn;
* the copy is inspected with ``qemu-img info``: its real format must be the declared
  ``disk_format`` and it must not reference a backing file or an external data file (a crafted
  qcow2 could otherwise expose host files to the guest);
* a per-image lock (``flock`` on ``.<image_id>.lock``, which also serialises threads of one process)
  keeps concurrent spawns of the same image from racing;
* every use touches the lock file (its mtime is the last use); ``prune`` removes cached images that no instance disk on
  this host is based on and that were not used for a given time.

``ensure_formatted_base`` keeps the bases of the flavors' ephemeral and swap disks in the same directory, as Nova
does: a raw file per size, formatted once (``ephemeral_<MiB>m_ext4``, ``swap_<MiB>m``) and shared by every
instance's qcow2 overlay. They are made, locked, used and pruned as images are.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import struct
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests

from agents.config import EPHEMERAL_DISK, safe_component
from agents.specs import DISK_FILESYSTEMS, ImageRef
from agents.storage import StorageError, qemu_img, run_tool

__all__ = ["StorageError", "ensure_formatted_base", "ensure_image", "image_lock", "images_in_use", "prune",
           "virtual_size"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20
SUPPORTED_SCHEMES = ("file", "http", "https")
HTTP_CONNECT_TIMEOUT = 10
HTTP_READ_TIMEOUT = 120
FORMAT_TIMEOUT = 600
# How each of DISK_FILESYSTEMS is made (the file's path follows); the ext4 label is Nova's, which
# cloud-init looks for to mount the ephemeral disk.
FORMATTERS = {"ext4": ["mkfs.ext4", "-F", "-q", "-L", EPHEMERAL_DISK], "swap": ["mkswap"]}
FORMATTED_BASE_NAMES = {"ext4": "ephemeral_{size_mib}m_ext4", "swap": "swap_{size_mib}m"}


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


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


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


def _touch_used(path: Path) -> None:
    """Record a use: the lock file's modification time is the image's last use."""
    _lock_path(path).touch()


def _scheme(image: ImageRef) -> str:
    scheme = urlsplit(image.source).scheme.lower()
    if scheme not in SUPPORTED_SCHEMES:
        shown = scheme or "(none)"
        raise StorageError(
            f"image {image.id}: unsupported source scheme {shown!r} in {image.source!r}; "
            f"this agent can only fetch {', '.join(s + '://' for s in SUPPORTED_SCHEMES)} images"
        )
    return scheme


def _source_path(image: ImageRef) -> Path:
    parts = urlsplit(image.source)
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


def _file_chunks(src: Path, image: ImageRef) -> Iterator[bytes]:
    try:
        with open(src, "rb") as fin:
            while chunk := fin.read(CHUNK):
                yield chunk
    except FileNotFoundError:
        raise StorageError(f"image {image.id}: source file {src} does not exist") from None
    except OSError as exc:
        raise StorageError(f"image {image.id}: cannot copy {src}: {exc.strerror or exc}") from exc


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict):
            for value in body.values():
                if isinstance(value, dict) and value.get("message"):
                    return str(value["message"])
    except ValueError:
        pass
    return response.reason or ""


def _http_chunks(image: ImageRef) -> Iterator[bytes]:
    headers = {"Accept": "application/octet-stream"}
    if image.auth_token:
        headers["X-Auth-Token"] = image.auth_token
    try:
        with requests.get(
            image.source, headers=headers, stream=True, timeout=(HTTP_CONNECT_TIMEOUT, HTTP_READ_TIMEOUT)
        ) as response:
            if response.status_code != 200:
                raise StorageError(
                    f"image {image.id}: the image service answered {response.status_code} "
                    f"{_error_message(response)}".rstrip()
                )
            yield from response.iter_content(CHUNK)
    except requests.RequestException as exc:
        raise StorageError(f"image {image.id}: cannot download {image.source}: {exc}") from exc


@contextlib.contextmanager
def _partial_file(dest: Path) -> Iterator[tuple[int, Path]]:
    """A new file beside ``dest`` (``.<name>.<random>.part``, which ``prune`` knows), open as the
    descriptor given; removed if the block fails before moving it into place."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        yield fd, tmp
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _fetch(chunks: Iterable[bytes], dest: Path, image: ImageRef) -> None:
    """Stream ``chunks`` into a temporary file beside ``dest``; verify; rename into place."""
    with _partial_file(dest) as (fd, tmp):
        h = hashlib.sha512()
        size = 0
        try:
            with os.fdopen(fd, "wb") as fout:
                for chunk in chunks:
                    h.update(chunk)
                    size += len(chunk)
                    if image.size is not None and size > image.size:
                        raise StorageError(f"image {image.id}: size is over the expected {image.size} bytes")
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
        except OSError as exc:
            raise StorageError(f"image {image.id}: cannot write the cache: {exc.strerror or exc}") from exc
        digest = h.hexdigest()
        if image.size is not None and size != image.size:
            raise StorageError(f"image {image.id}: size is {size} bytes, expected {image.size}")
        if image.sha512 and digest != image.sha512.lower():
            raise StorageError(f"image {image.id}: sha512 checksum mismatch (the source file is corrupt or changed)")
        os.chmod(tmp, 0o644)  # qemu (libvirt-qemu user) reads base images
        _check_image(tmp, image)
        _write_digest(dest, digest)
        os.replace(tmp, dest)


def _fetch_file(src: Path, dest: Path, image: ImageRef) -> None:
    _fetch(_file_chunks(src, image), dest, image)


def _fetch_http(dest: Path, image: ImageRef) -> None:
    _fetch(_http_chunks(image), dest, image)


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
    scheme = _scheme(image)
    if scheme != "file" and not image.sha512:
        raise StorageError(f"image {image.id}: an http source needs a sha512 to verify what arrives")
    dest = cache_dir / image.id
    with image_lock(cache_dir, image.id):
        if _cached_ok(dest, image):
            _touch_used(dest)
            return dest
        log.info("caching image %s from %s", image.id, image.source)
        if scheme == "file":
            _fetch_file(_source_path(image), dest, image)
        else:
            _fetch_http(dest, image)
        _touch_used(dest)
        return dest


# --- formatted bases --------------------------------------------------------------------------


def _make_formatted(dest: Path, fs: str, size_bytes: int) -> None:
    """A sparse file of ``size_bytes`` beside ``dest``, formatted, then renamed into place."""
    with _partial_file(dest) as (fd, tmp):
        try:
            with os.fdopen(fd, "wb") as fout:
                fout.truncate(size_bytes)
        except OSError as exc:
            raise StorageError(f"cannot make the base {dest.name}: {exc.strerror or exc}") from exc
        run_tool([*FORMATTERS[fs], tmp], timeout=FORMAT_TIMEOUT)
        os.chmod(tmp, 0o644)  # qemu (libvirt-qemu user) reads base images
        os.replace(tmp, dest)


def ensure_formatted_base(cache_dir: Path, fs: str, size_mib: int) -> Path:
    """Return the path of a raw base of ``size_mib`` MiB formatted with ``fs`` (one of
    ``DISK_FILESYSTEMS``) in ``cache_dir``, making it first if needed: under its lock, so that
    concurrent spawns format it once and ``prune`` leaves it alone while it is being made."""
    if fs not in DISK_FILESYSTEMS:
        raise StorageError(f"unsupported filesystem {fs!r} (supported: {', '.join(DISK_FILESYSTEMS)})")
    if size_mib <= 0:
        raise StorageError(f"a formatted base needs a positive size, not {size_mib} MiB")
    name = FORMATTED_BASE_NAMES[fs].format(size_mib=size_mib)
    dest = cache_dir / name
    with image_lock(cache_dir, name):
        if not dest.is_file():
            log.info("making the formatted base %s", name)
            _make_formatted(dest, fs, size_mib << 20)
        _touch_used(dest)
        return dest


QCOW2_MAGIC = b"QFI\xfb"


def virtual_size(path: Path, disk_format: str) -> int:
    """The virtual size of an image ``ensure_image`` returned: a qcow2 header's size field, or a raw
    file's length. Its format was checked with ``qemu-img info`` when it was cached, so a spawn
    need not run qemu-img (a process under prlimit, slow on a busy host) to learn it again."""
    try:
        if disk_format == "raw":
            return path.stat().st_size
        with open(path, "rb") as f:
            header = f.read(32)
    except OSError as exc:
        raise StorageError(f"cannot read the cached image {path.name}: {exc.strerror or exc}") from exc
    if len(header) < 32 or header[:4] != QCOW2_MAGIC:
        raise StorageError(f"the cached image {path.name} is not a qcow2 image")
    return struct.unpack(">Q", header[24:32])[0]


# --- pruning ----------------------------------------------------------------------------------


def _backing_file(disk: Path) -> str | None:
    """The backing file a qcow2 overlay names (read from its header: no qemu-img needed)."""
    try:
        with open(disk, "rb") as f:
            header = f.read(20)
            if len(header) < 20 or header[:4] != QCOW2_MAGIC:
                return None
            offset, length = struct.unpack(">QI", header[8:20])
            if not offset or not 0 < length <= 4096:
                return None
            f.seek(offset)
            return f.read(length).decode("utf-8", "replace")
    except OSError:
        return None


def images_in_use(instances_dir: Path) -> set[str]:
    """The names of the cache's files (image ids, formatted bases) that some instance disk on this
    host is based on."""
    used = set()
    if instances_dir.is_dir():
        for disk in instances_dir.glob("*/disk*.qcow2"):
            backing = _backing_file(disk)
            if backing:
                used.add(Path(backing).name)
    return used


@dataclass
class PruneResult:
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    freed_bytes: int = 0


def _last_used(path: Path) -> float:
    for candidate in (_lock_path(path), path):
        with contextlib.suppress(OSError):
            return candidate.stat().st_mtime
    return 0.0


def prune(cache_dir: Path, *, max_age: float, in_use: set[str], now: float | None = None) -> PruneResult:
    """Remove the cached images and formatted bases not used for ``max_age`` seconds that no
    instance is based on, each under its lock (a spawn that wants it meanwhile fetches or makes it
    again). Leftover partial downloads and bases older than ``max_age`` go too."""
    now = time.time() if now is None else now
    result = PruneResult()
    if not cache_dir.is_dir():
        return result
    for path in sorted(cache_dir.iterdir()):
        name = path.name
        if name.startswith(".") and name.endswith(".part"):
            # .<name>.<random>.part is written under <name>'s lock: one still being written stays.
            with image_lock(cache_dir, name[1:].rsplit(".", 2)[0]), contextlib.suppress(OSError):
                if now - path.stat().st_mtime > max_age:
                    path.unlink()
            continue
        if name.startswith(".") or name.endswith((".sha512", ".tmp")) or not path.is_file():
            continue
        with image_lock(cache_dir, name):
            if not path.is_file():
                continue
            if name in in_use or now - _last_used(path) < max_age:
                result.kept.append(name)
                continue
            size = path.stat().st_size
            path.unlink()
            _digest_path(path).unlink(missing_ok=True)
            result.removed.append(name)
            result.freed_bytes += size
            log.info("pruned cached image %s (%d bytes)", name, size)
    return result
