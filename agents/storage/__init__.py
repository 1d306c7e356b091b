"""Host-local storage: qemu-img wrapper and the per-host base image cache."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)


class StorageError(Exception):
    """A storage operation failed; the message is meant to be shown to users."""


def run_tool(argv: Sequence[str], *, timeout: float, what: str | None = None, env: Mapping[str, str] | None = None,
             install_hint: str = "") -> str:
    """Run a host tool (qemu-img, mkfs, LVM) and return its stdout; a failure is a StorageError in
    the tool's own words. ``what`` names it in messages (default: the program)."""
    argv = [str(arg) for arg in argv]
    what = what or argv[0]
    log.debug("running %s", " ".join(argv))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise StorageError(f"{exc.filename or argv[0]} is not installed on this host{install_hint}") from None
    except subprocess.TimeoutExpired:
        raise StorageError(f"{what} timed out after {timeout:g} s") from None
    if proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout or "").split()) or f"exit status {proc.returncode}"
        raise StorageError(f"{what} failed: {detail}")
    return proc.stdout
