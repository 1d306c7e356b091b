"""Streaming image data in: the request body as chunks, and the pipeline that hashes, inspects,
counts against the quota and writes them, in constant memory whatever the image's size.

`request_body` is the one place that reads an upload's body. Django's WSGIRequest reads
CONTENT_LENGTH bytes, so a chunked upload (`Transfer-Encoding: chunked`, no Content-Length, as
python-glanceclient and other streaming clients send) would look EMPTY to it under gunicorn. A
server that ends `wsgi.input` at the end of the body says so with `wsgi.input_terminated`
(gunicorn does); then we read it to EOF, chunked or not. Without that flag we read exactly
Content-Length bytes, and refuse a chunked body (411) rather than store an empty image.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from apps.images import inspector
from apps.images.stores import StoreWriter
from cloudmgr.exceptions import ApplicationError, ValidationError

logger = logging.getLogger(__name__)

CHUNK = 1 << 20


class LengthRequired(ApplicationError):
    status_code = 411
    title = "Length Required"


class UploadInterrupted(ValidationError):
    """The client stopped sending before the end of the body."""


class Body:
    """An upload's body: `chunks` as they arrive, and the `length` the client declared."""

    def __init__(self, chunks: Iterator[bytes], length: int | None, drain: Callable[[], None] | None = None):
        self.chunks = chunks
        self.length = length
        self._drain = drain

    def drain(self) -> None:
        """Read and drop what the client is still sending after a refusal (up to DRAIN_BYTES or
        DRAIN_SECONDS), so that it reads our error instead of a reset connection."""
        if self._drain is not None:
            self._drain()


# A refused upload's remaining body is read and dropped up to this much; beyond, the server
# closes the connection (clients like urllib3 still read the answer; others see a reset).
DRAIN_BYTES = 64 << 20
DRAIN_SECONDS = 10


def _declared_length(meta) -> int | None:
    raw = meta.get("CONTENT_LENGTH")
    if raw in (None, ""):
        return None
    try:
        length = int(raw)
    except ValueError:
        raise ValidationError("Invalid Content-Length.") from None
    if length < 0:
        raise ValidationError("Invalid Content-Length.")
    return length


def request_body(request) -> Body:
    """The request's body as chunks of at most CHUNK bytes, read from the WSGI input as they
    arrive; never buffered whole. Works for Django requests and DRF's (which proxy META)."""
    meta = request.META
    stream = meta["wsgi.input"]
    chunked = "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
    length = None if chunked else _declared_length(meta)
    if meta.get("wsgi.input_terminated"):
        limit = None  # the server ends the input where the body ends
    elif chunked:
        raise LengthRequired("This server cannot read a chunked request body; send a Content-Length.")
    else:
        limit = length or 0
    state = {"received": 0, "eof": False}

    def read(want: int) -> bytes:
        if limit is not None:
            want = min(want, limit - state["received"])
        if want <= 0 or state["eof"]:
            return b""
        data = stream.read(want)
        if not data:
            state["eof"] = True
        state["received"] += len(data)
        return data

    def chunks() -> Iterator[bytes]:
        while True:
            try:
                data = read(CHUNK)
            except Exception as exc:  # the client went away (socket error, truncated chunked body)
                raise UploadInterrupted(
                    f"The upload was interrupted after {state['received']} bytes: {exc or type(exc).__name__}"
                ) from exc
            if not data:
                break
            yield data
        if length is not None and state["received"] != length:
            raise UploadInterrupted(f"The upload was interrupted: {state['received']} of {length} bytes arrived.")

    def drain() -> None:
        deadline, dropped = time.monotonic() + DRAIN_SECONDS, 0
        try:
            while dropped < DRAIN_BYTES and time.monotonic() < deadline:
                data = read(CHUNK)
                if not data:
                    return
                dropped += len(data)
        except Exception:  # noqa: BLE001 - the client is gone: nothing to drain
            return

    return Body(chunks=chunks(), length=length, drain=drain)


class ParallelHashes:
    """MD5 (Glance's `checksum`) and SHA-512 (`os_hash_value`) of a stream, each computed by its
    own thread from a short queue: hashlib releases the GIL on large buffers, so both digests
    run beside the request thread (which meanwhile hands the chunk to the store's writer thread
    and reads the next one), and neither waits for the other. MD5 cannot be split: one core's
    MD5 rate (~650 MiB/s here) is the ceiling of an upload. The queues hold at most QUEUE chunks
    each, so memory stays bounded."""

    QUEUE = 8

    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha512 = hashlib.sha512()
        self._queues = [queue.Queue(self.QUEUE), queue.Queue(self.QUEUE)]
        self._errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._run, args=(q, h), name="image-hash", daemon=True)
            for q, h in zip(self._queues, (self.md5, self.sha512), strict=True)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, chunks: queue.Queue, digest) -> None:
        try:
            while (chunk := chunks.get()) is not None:
                digest.update(chunk)
        except BaseException as exc:  # noqa: BLE001 - handed to the request thread
            self._errors.append(exc)
            while chunks.get() is not None:
                pass

    def update(self, chunk: bytes) -> None:
        for q in self._queues:
            q.put(chunk)

    def wait(self) -> None:
        """Wait for both digests to have seen every chunk."""
        self.close()
        if self._errors:
            raise self._errors[0]

    def close(self) -> None:
        for q, thread in zip(self._queues, self._threads, strict=True):
            if thread.is_alive():
                q.put(None)
                thread.join()


@dataclass
class Streamed:
    size: int
    md5: str
    sha512: str


def stream_into(
    chunks: Iterable[bytes],
    *,
    writer: StoreWriter,
    disk_format: str,
    ensure_room: Callable[[int], None],
) -> Streamed:
    """Stream chunks into the store's `writer`, hashing them; on return every byte is in its
    partial file. Nothing is written until the first `inspector.HEADER_BYTES` have been sniffed
    (a refused header leaves no data behind). `ensure_room(total)` is asked before each write
    for the bytes the image would then hold (the quota and the size cap); it raises to stop
    the upload."""
    hashes = ParallelHashes()
    size = 0
    head = bytearray()
    sniffed = False
    try:
        for chunk in chunks:
            if not sniffed:
                head += chunk
                if len(head) < inspector.HEADER_BYTES:
                    continue
                inspector.sniff(bytes(head[: inspector.HEADER_BYTES]), declared=disk_format)
                sniffed, chunk = True, bytes(head)
                head = bytearray()
            size += len(chunk)
            ensure_room(size)
            hashes.update(chunk)
            writer.write(chunk)
        if not sniffed:
            inspector.sniff(bytes(head), declared=disk_format, complete=True)
            if head:
                size += len(head)
                ensure_room(size)
                hashes.update(bytes(head))
                writer.write(bytes(head))
        writer.finish()
        hashes.wait()
    finally:
        hashes.close()
    return Streamed(size=size, md5=hashes.md5.hexdigest(), sha512=hashes.sha512.hexdigest())
