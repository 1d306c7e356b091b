"""The filesystem store's data paths: writes with direct I/O through a writer thread (every byte
in place, errors reach the caller, nothing left behind), and the download reader that drops the
pages behind it."""

import ctypes
import errno
import fcntl
import mmap
import os
import threading

import pytest
from django.http import FileResponse

from apps.images import stores
from apps.images.stores import BLOCK, BUFFERS, FilesystemWriter, SequentialReader

MiB = 1 << 20


def supports_direct_io(folder) -> bool:
    probe = folder / ".probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return False
    finally:
        probe.unlink(missing_ok=True)
    os.close(fd)
    return True


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "image-write"]


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "page-cache"])
def test_writer_puts_every_byte_in_place(tmp_path, direct):
    target = tmp_path / "image"
    # Odd sizes across block edges, and more blocks than buffers (they are reused), with an
    # unaligned end.
    pieces = [os.urandom(n) for n in (1, 4095, BLOCK - 3, (BUFFERS + 1) * BLOCK + 17, MiB, 12345)]
    data = b"".join(pieces)
    with FilesystemWriter(target, direct=direct) as writer:
        assert writer.direct == (direct and supports_direct_io(tmp_path))
        for piece in pieces:
            writer.write(piece)
        if writer.direct:  # the blocks went to disk with direct I/O
            assert fcntl.fcntl(writer._fd, fcntl.F_GETFL) & os.O_DIRECT
        writer.finish()
        assert writer.partial.read_bytes() == data  # all there before commit (for inspection)
        writer.commit()
    assert target.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir() if p.name != ".probe"] == ["image"]
    assert writer_threads() == []


def test_writer_error_reaches_the_caller_and_leaves_nothing(tmp_path, monkeypatch):
    def disk_full(fd, view):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stores, "_write_all", disk_full)
    block = os.urandom(MiB)
    with pytest.raises(OSError) as raised, FilesystemWriter(tmp_path / "image") as writer:
        for _ in range((BUFFERS + 2) * BLOCK // MiB):  # the writer thread fails on the first block
            writer.write(block)
        writer.finish()
    assert raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == [] and writer_threads() == []


def test_abort_mid_stream_stops_the_writer(tmp_path):
    writer = FilesystemWriter(tmp_path / "image")
    writer.write(os.urandom(2 * BLOCK + 1))
    assert writer_threads() != []
    writer.abort()
    assert list(tmp_path.iterdir()) == [] and writer_threads() == []
    with pytest.raises(RuntimeError):
        writer.write(b"x")


def resident_pages(path, length: int) -> list[bool]:
    """Which pages of the file's first `length` bytes are in the page cache (mincore)."""
    libc = ctypes.CDLL(None, use_errno=True)
    vec = (ctypes.c_ubyte * ((length + mmap.PAGESIZE - 1) // mmap.PAGESIZE))()
    with path.open("rb") as f, mmap.mmap(f.fileno(), length, flags=mmap.MAP_PRIVATE,
                                         prot=mmap.PROT_READ | mmap.PROT_WRITE) as m:
        anchor = ctypes.c_char.from_buffer(m)  # a private mapping is writable, so ctypes gives its address
        result = libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(length), vec)
        del anchor
    assert result == 0, os.strerror(ctypes.get_errno())
    return [bool(v & 1) for v in vec]


def test_download_reader_reads_everything_and_drops_what_it_read(tmp_path):
    path = tmp_path / "image"
    data = os.urandom(2 * SequentialReader.DROP_BEHIND + 5 * MiB + 7)
    with path.open("wb") as f:
        f.write(data)
        os.fsync(f.fileno())  # clean pages: what a download finds (dirty ones are never dropped)
    reader = SequentialReader(path)
    response = FileResponse(reader, content_type="application/octet-stream")
    assert int(response["Content-Length"]) == len(data)
    assert not hasattr(reader, "fileno")  # the server must not sendfile it (that fills the cache)
    got = bytearray()
    while piece := reader.read(MiB):
        got += piece
        assert reader.tell() == len(got)
    assert got == data
    dropped = resident_pages(path, 2 * SequentialReader.DROP_BEHIND)
    assert not any(dropped), f"{sum(dropped)} pages read are still cached"
    reader.close()
