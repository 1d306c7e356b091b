"""A thin wrapper around ``qemu-img``.

Formats are always explicit (``-f``, and ``-F`` for backing files) so qemu-img never probes a format
from untrusted image contents, and ``info`` always uses ``--output=json``. ``info`` runs under
``prlimit`` (address space and CPU time caps) because it parses untrusted image headers, as Nova does.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agents.storage import StorageError, run_tool

__all__ = ["QEMU_IMG", "StorageError", "convert", "create", "create_overlay", "info", "rebase", "resize",
           "virtual_size"]

log = logging.getLogger(__name__)

QEMU_IMG = "qemu-img"
FORMATS = ("qcow2", "raw")

# Limits for "qemu-img info" on untrusted images (same spirit as nova's QEMU_IMG_LIMITS).
INFO_ADDRESS_SPACE = 1 << 30  # 1 GiB
INFO_CPU_SECONDS = 30
DEFAULT_TIMEOUT = 600


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise StorageError(f"unsupported disk format {fmt!r} (supported: {', '.join(FORMATS)})")
    return fmt


def _run(args: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, limit: bool = False) -> str:
    cmd = [QEMU_IMG, *map(str, args)]
    if limit and shutil.which("prlimit"):
        cmd = ["prlimit", f"--as={INFO_ADDRESS_SPACE}", f"--cpu={INFO_CPU_SECONDS}", "--", *cmd]
    return run_tool(cmd, timeout=timeout, what=f"qemu-img {args[0]}")


def info(path: str | Path, fmt: str | None = None) -> dict[str, Any]:
    """``qemu-img info --output=json`` of ``path``.

    ``fmt`` should be given whenever the format is known; without it qemu-img probes, which is only
    acceptable to *discover* what an untrusted file is (the result must then be checked by the caller).
    ``-U`` (force share) lets this run on an image a running guest holds open.
    """
    args = ["info", "--output=json", "-U"]
    if fmt is not None:
        args += ["-f", _check_format(fmt)]
    args.append(str(path))
    out = _run(args, timeout=INFO_CPU_SECONDS * 2, limit=True)
    try:
        data = json.loads(out)
    except ValueError as exc:
        raise StorageError(f"qemu-img info returned invalid JSON for {path}") from exc
    if not isinstance(data, dict):
        raise StorageError(f"qemu-img info returned unexpected output for {path}")
    return data


def virtual_size(path: str | Path, fmt: str) -> int:
    return int(info(path, fmt)["virtual-size"])


def create(path: str | Path, fmt: str, size_bytes: int) -> None:
    """Create an empty image of ``size_bytes``."""
    _run(["create", "-q", "-f", _check_format(fmt), str(path), str(int(size_bytes))])


def create_overlay(path: str | Path, backing_file: str | Path, backing_fmt: str, size_bytes: int | None = None) -> None:
    """Create a qcow2 overlay of ``backing_file`` (absolute path, format ``backing_fmt``)."""
    backing = Path(backing_file)
    if not backing.is_absolute():
        raise StorageError(f"backing file {backing} must be an absolute path")
    args = ["create", "-q", "-f", "qcow2", "-F", _check_format(backing_fmt), "-b", str(backing), str(path)]
    if size_bytes is not None:
        args.append(str(int(size_bytes)))
    _run(args)


def resize(path: str | Path, fmt: str, size_bytes: int) -> None:
    """Grow (never shrink) an image to ``size_bytes``."""
    _run(["resize", "-q", "-f", _check_format(fmt), str(path), str(int(size_bytes))])


def convert(src: str | Path, src_fmt: str, dst: str | Path, dst_fmt: str, *, target_exists: bool = False,
            timeout: float = DEFAULT_TIMEOUT) -> None:
    """Copy ``src`` (its backing chain flattened) into ``dst``; ``target_exists`` writes into an
    existing ``dst`` (a block device) instead of creating it."""
    args = ["convert", "-q", "-f", _check_format(src_fmt), "-O", _check_format(dst_fmt)]
    if target_exists:
        args.append("-n")
    _run([*args, str(src), str(dst)], timeout=timeout)


def rebase(path: str | Path, fmt: str, backing_file: str | Path | None, backing_fmt: str | None,
           *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Make ``path`` an overlay of ``backing_file`` (or standalone if None) with the same
    guest-visible contents: the data that only the old backing chain had is copied into it."""
    args = ["rebase", "-q", "-f", _check_format(fmt)]
    if backing_file is None:
        args += ["-b", ""]
    else:
        args += ["-F", _check_format(backing_fmt or ""), "-b", str(backing_file)]
    _run([*args, str(path)], timeout=timeout)
