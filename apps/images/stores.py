"""Where image bytes live, behind a small interface (Glance's "stores").

A store keeps the data of an image under its id, and stages data for an interoperable import in a
separate area. Writes are atomic: a writer fills a partial file and `commit` renames it into
place, so a reader never sees half an image; `abort` (or an error) leaves nothing behind.

Only a filesystem store exists (`<data>/images/`); one on a network filesystem shared by several
control-plane hosts works as is. An object store would implement the same methods.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import queue
import secrets
import threading
from pathlib import Path
from typing import Protocol

from django.conf import settings

# Direct I/O wants file offsets, lengths and memory aligned to the device's logical block size;
# 4 KiB covers 512-byte and 4Kn disks. One direct write is BLOCK bytes.
ALIGN = 4096
BLOCK = 4 << 20
# Blocks in flight: one being filled while the others are written.
BUFFERS = 3


class StoreWriter(Protocol):
    def write(self, data: bytes) -> None: ...
    def finish(self) -> None:
        """Every byte written is in the partial file (for inspection before commit)."""

    def commit(self) -> None: ...
    def abort(self) -> None: ...


def _enable_direct_io(fd: int) -> bool:
    """O_DIRECT on fd, if its filesystem supports it (not every one does: EINVAL)."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return False
    return True


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


class FilesystemWriter:
    """Fills `<target>`'s partial file through page-aligned BLOCK buffers that a writer thread
    writes with direct I/O, beside the caller (which meanwhile receives and hashes the next
    data). Bypassing the page cache is what makes image writes cheap on these hosts: a GiB
    written through the cache, with its fsync, cost 0.8-2.3 CPU seconds and 3-10 s, with
    direct I/O 0.1-0.2 CPU seconds (the one copy into the buffer) and about 1 s; nor does an
    upload evict everything else from the cache. Where the filesystem has no direct I/O the
    same writes go through the page cache. The last, unaligned, bytes are written by `finish`.
    """

    def __init__(self, target: Path, *, direct: bool = True):
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        self.partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
        self._fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        self.direct = direct and _enable_direct_io(self._fd)
        self._buffers: list[mmap.mmap] = []  # allocated as needed, up to BUFFERS
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self._full: queue.SimpleQueue[mmap.mmap | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._current: mmap.mmap | None = None
        self._filled = 0
        self.finished = False
        self.done = False

    def write(self, data: bytes) -> None:
        if self.finished:
            raise RuntimeError("write after finish")
        view = memoryview(data).cast("B")
        while view:
            if self._current is None:
                self._current = self._take_buffer()
            n = min(len(view), BLOCK - self._filled)
            self._current[self._filled:self._filled + n] = view[:n]
            self._filled += n
            view = view[n:]
            if self._filled == BLOCK:
                self._submit(self._current)
                self._current, self._filled = None, 0

    def _take_buffer(self) -> mmap.mmap:
        if self._error is not None:
            raise self._error
        if len(self._buffers) < BUFFERS:
            self._buffers.append(mmap.mmap(-1, BLOCK))  # anonymous memory: page-aligned
            return self._buffers[-1]
        buffer = self._free.get()
        if self._error is not None:
            raise self._error
        return buffer

    def _submit(self, buffer: mmap.mmap) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="image-write", daemon=True)
            self._thread.start()
        self._full.put(buffer)

    def _run(self) -> None:
        while (buffer := self._full.get()) is not None:
            if self._error is None:
                try:
                    with memoryview(buffer) as view:
                        _write_all(self._fd, view)
                except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                    self._error = exc
            self._free.put(buffer)

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._full.put(None)
            self._thread.join()
            self._thread = None

    def finish(self) -> None:
        """Write what is still buffered: afterwards the partial file holds every byte."""
        if self.finished:
            return
        self.finished = True
        self._stop_thread()
        if self._error is not None:
            raise self._error
        if self._filled:
            with memoryview(self._current) as view:
                aligned = self._filled - self._filled % ALIGN if self.direct else self._filled
                _write_all(self._fd, view[:aligned])
                if aligned < self._filled:  # the unaligned end goes through the page cache
                    fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                    _write_all(self._fd, view[aligned:self._filled])
        self._release()

    def _release(self) -> None:
        self._current, self._filled = None, 0
        for buffer in self._buffers:
            buffer.close()
        self._buffers.clear()

    def _close(self) -> None:
        # Once: a second close could hit another thread's file that reused the number.
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def commit(self) -> None:
        """Make the data durable (direct I/O may still sit in the disk's cache), then visible
        under its name."""
        self.finish()
        os.fsync(self._fd)
        self._close()
        os.replace(self.partial, self.target)
        self.done = True

    def abort(self) -> None:
        if self.done:
            return
        self.done = self.finished = True
        self._stop_thread()
        self._release()
        with contextlib.suppress(OSError):
            self._close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> FilesystemWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.done:
            self.abort()


class SequentialReader:
    """An image file read once from start to end (a download), through the page cache with the
    kernel's read-ahead doubled (sequential access), dropping the pages behind it every
    DROP_BEHIND bytes. Uploads bypass the cache, so a download reads from disk, and filling the
    cache with fresh pages is what made it slow: sendfile of an uncached GiB cost 2-3.6 CPU
    seconds (server and client) and ran at half of cp's speed; read and dropped behind, ~1 CPU
    second, and at least as fast as sendfile of a cached file. An image is rarely re-read soon from this host (an
    agent caches what it fetched), so keeping it cached buys little. Deliberately no fileno():
    the server then sends the chunks we read instead of using sendfile."""

    DROP_BEHIND = 32 << 20

    def __init__(self, path: Path):
        self.name = str(path)  # FileResponse takes the Content-Length and file name from it
        self._file = path.open("rb", buffering=0)
        os.posix_fadvise(self._file.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        self._pos = self._dropped = 0

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size) if size >= 0 else self._file.readall()
        self._pos += len(data)
        if self._pos - self._dropped >= self.DROP_BEHIND:
            os.posix_fadvise(self._file.fileno(), self._dropped, self._pos - self._dropped, os.POSIX_FADV_DONTNEED)
            self._dropped = self._pos
        return data

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SequentialReader:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


class FilesystemStore:
    """`<root>/<image id>` for image data, `<root>/staging/<image id>` for staged imports."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, image_id: str, *, staging: bool = False) -> Path:
        name = str(image_id)
        if not name.replace("-", "").isalnum():
            raise ValueError(f"invalid image id {image_id!r}")
        return (self.root / "staging" / name) if staging else (self.root / name)

    def writer(self, image_id: str, *, staging: bool = False) -> FilesystemWriter:
        return FilesystemWriter(self.path(image_id, staging=staging))

    def open(self, image_id: str, *, staging: bool = False) -> SequentialReader:
        """The image's data for one read from start to end (a download)."""
        return SequentialReader(self.path(image_id, staging=staging))

    def exists(self, image_id: str, *, staging: bool = False) -> bool:
        return self.path(image_id, staging=staging).is_file()

    def size(self, image_id: str, *, staging: bool = False) -> int:
        return self.path(image_id, staging=staging).stat().st_size

    def delete(self, image_id: str, *, staging: bool = False) -> None:
        self.path(image_id, staging=staging).unlink(missing_ok=True)

    def promote(self, image_id: str) -> None:
        """Move staged data into the store (an import's last step)."""
        os.replace(self.path(image_id, staging=True), self.path(image_id))

    def partial_files(self) -> list[Path]:
        """Partial files left by a process that died mid-upload (the reaper removes old ones)."""
        found = []
        for folder in (self.root, self.root / "staging"):
            if folder.is_dir():
                found += [p for p in folder.iterdir() if p.name.endswith(".partial")]
        return found


def get_store() -> FilesystemStore:
    return FilesystemStore(settings.IMAGE_STORE_DIR)
