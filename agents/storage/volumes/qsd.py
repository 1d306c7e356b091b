"""qemu-storage-daemon processes and their QMP monitor.

A volume is served by its own daemon (one process per export or view): a crash or a stop
affects that volume only, a restart of the agent finds it again by its pid file, and the daemon
is the one process that holds the image, so a consistent copy of a volume that is attached over
NBD is asked of it (QMP) rather than made behind its back.

Options are given as JSON (``--blockdev '{"driver": ...}'``, ``--export``, ``--nbd-server``):
paths are never spliced into QEMU's comma-separated option syntax, where a ``,`` in a name would
start a new option.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agents.storage import StorageError

__all__ = ["QSD", "StorageDaemon", "blockdev_arg", "drop_stale_views", "fuse_view"]

log = logging.getLogger(__name__)

QSD = "qemu-storage-daemon"
START_TIMEOUT = 30
QMP_TIMEOUT = 30
STOP_TIMEOUT = 10
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


class QMPError(StorageError):
    pass


class QMP:
    """A QMP session on a UNIX socket (capabilities negotiated; events are skipped)."""

    def __init__(self, path: Path, timeout: float = QMP_TIMEOUT) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
        except OSError as exc:
            self._sock.close()
            raise QMPError(f"cannot reach the storage daemon's monitor {path}: {exc.strerror or exc}") from None
        self._file = self._sock.makefile("rwb")
        self._read()  # the greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        try:
            line = self._file.readline()
        except OSError as exc:
            raise QMPError(f"the storage daemon's monitor failed: {exc}") from None
        if not line:
            raise QMPError("the storage daemon closed its monitor")
        return json.loads(line)

    def execute(self, command: str, **arguments: Any) -> Any:
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self._file.write(json.dumps(message).encode() + b"\n")
        self._file.flush()
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise QMPError(f"{command}: {reply['error'].get('desc', reply['error'])}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> QMP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pid_alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return QSD.encode() in cmdline.split(b"\0", 1)[0]


class StorageDaemon:
    """One qemu-storage-daemon whose pid file and monitor live in ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    @property
    def pidfile(self) -> Path:
        return self.state_dir / "qsd.pid"

    @property
    def monitor(self) -> Path:
        return self.state_dir / "qmp.sock"

    def pid(self) -> int | None:
        """The daemon's pid if it runs (a stale pid file, or another program's pid, is None)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, args: Sequence[str]) -> None:
        """Start the daemon with ``args`` (block nodes, exports); returns once it serves them."""
        if len(os.fsencode(self.monitor)) > SOCKET_PATH_MAX:
            raise StorageError(f"the monitor socket path {self.monitor} is too long for a UNIX socket: "
                               "use a shorter CLOUDMGR_DATA_DIR")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.monitor.unlink(missing_ok=True)
        cmd = [
            QSD, *args,
            "--chardev", f"socket,id=qmp,path={self.monitor},server=on,wait=off",
            "--monitor", "chardev=qmp",
            "--pidfile", str(self.pidfile),
            "--daemonize",  # the parent exits once the exports are up, or with the error
        ]
        log.debug("starting %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT, check=False,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise StorageError(f"{QSD} is not installed on this host (package qemu-system-common)") from None
        except subprocess.TimeoutExpired:
            self.stop()
            raise StorageError(f"{QSD} did not start within {START_TIMEOUT} s") from None
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
            raise StorageError(f"{QSD} failed: {detail}")

    def qmp(self) -> QMP:
        return QMP(self.monitor)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the daemon (its exports end, its images are closed); a stopped one is fine."""
        pid = self.pid()
        if pid is not None:
            try:
                with self.qmp() as qmp:
                    qmp.execute("quit")
            except StorageError:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _pid_alive(pid):
                if time.monotonic() > deadline:
                    log.warning("%s %d did not stop; killing it", QSD, pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    time.sleep(0.1)
                    break
                time.sleep(0.02)
        self.pidfile.unlink(missing_ok=True)
        self.monitor.unlink(missing_ok=True)


def blockdev_arg(node: dict[str, Any]) -> list[str]:
    return ["--blockdev", json.dumps(node)]


def _unmount(path: Path) -> None:
    """Lazily unmount a FUSE export left behind by a daemon that died."""
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False, timeout=30)


def drop_stale_views(views_dir: Path) -> list[str]:
    """Unmount and remove the views whose daemon is gone (an agent that died mid-backup left
    them); call it when no view of this host is in use (the agent starting)."""
    dropped = []
    for state_dir in sorted(views_dir.glob("*")) if views_dir.is_dir() else []:
        if StorageDaemon(state_dir).running():
            continue
        _unmount(state_dir / "view")
        shutil.rmtree(state_dir, ignore_errors=True)
        dropped.append(state_dir.name)
    return dropped


@contextlib.contextmanager
def fuse_view(node: dict[str, Any], state_dir: Path, *, writable: bool) -> Iterator[Path]:
    """The guest-visible contents of ``node`` (any format, backing chain included) as a plain
    file, for as long as the context lasts: a FUSE export of a private daemon. ``lseek``
    with ``SEEK_DATA``/``SEEK_HOLE`` works on it, so readers can skip unallocated ranges."""
    daemon = StorageDaemon(state_dir)
    mountpoint = state_dir / "view"
    daemon.stop()
    if mountpoint.exists() or mountpoint.is_symlink():
        _unmount(mountpoint)
        mountpoint.unlink(missing_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    mountpoint.touch(mode=0o600)
    node = {**node, "node-name": "view"}
    export = {"type": "fuse", "id": "view", "node-name": "view", "mountpoint": str(mountpoint), "writable": writable}
    try:
        daemon.start([*blockdev_arg(node), "--export", json.dumps(export)])
        yield mountpoint
    finally:
        daemon.stop()
        with contextlib.suppress(OSError):
            mountpoint.unlink()
        with contextlib.suppress(OSError):
            state_dir.rmdir()
