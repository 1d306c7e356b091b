"""Where image bytes live, behind a small interface (Glance's "stores").

A store keeps the data of an image under its id, and stages data for an interoperable import in a
separate area. Writes are atomic: a writer fills a partial file and `commit` renames it into
place, so a reader never sees half an image; `abort` (or an error) leaves nothing behind.

Only a filesystem store exists (`<data>/images/`); one on a network filesystem shared by several
control-plane hosts works as is. An object store would implement the same methods.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Protocol

from django.conf import settings


class StoreWriter(Protocol):
    def write(self, data: bytes) -> None: ...
    def reader(self) -> BinaryIO:
        """The bytes written so far, for inspection before commit."""

    def commit(self) -> None: ...
    def abort(self) -> None: ...


class FilesystemWriter:
    def __init__(self, target: Path):
        self.target = target
        target.parent.mkdir(parents=True, exist_ok=True)
        self.partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self.done = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            view = view[written:]

    def reader(self) -> BinaryIO:
        self._file.flush()
        return self.partial.open("rb")

    def commit(self) -> None:
        """Make the data durable, then visible under its name."""
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.target)
        self.done = True

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        with contextlib.suppress(OSError):
            self._file.close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> FilesystemWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.done:
            self.abort()


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

    def open(self, image_id: str, *, staging: bool = False) -> BinaryIO:
        return self.path(image_id, staging=staging).open("rb")

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
