"""qemu-img on the control plane, as a second opinion after the pure-Python inspector.

It runs only on data that passed apps/images/inspector.py, always with an explicit `-f FORMAT`
(never probing), `--output=json`, and under `prlimit` (address space and CPU time), as Nova runs
it on untrusted images.
"""

import json
import logging
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from django.conf import settings

from apps.images.inspector import InspectionError

logger = logging.getLogger(__name__)

# Our disk_format -> qemu's driver name.
QEMU_FORMATS = {
    "raw": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vdi": "vdi", "vhd": "vpc", "vhdx": "vhdx", "iso": "raw",
}
ADDRESS_SPACE = 1 << 30
CPU_SECONDS = 30


def _command(args: list[str]) -> list[str]:
    cmd = ["qemu-img", *args]
    if shutil.which("prlimit"):
        cmd = ["prlimit", f"--as={ADDRESS_SPACE}", f"--cpu={CPU_SECONDS}", "--", *cmd]
    return cmd


def info(path: Path, disk_format: str) -> dict | None:
    """`qemu-img info` of an inspected file, or None when qemu-img is not installed."""
    if not shutil.which("qemu-img"):
        logger.warning("qemu-img is not installed: image %s is checked by the inspector only", path.name)
        return None
    cmd = _command(["info", "--output=json", "-f", QEMU_FORMATS[disk_format], str(path)])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CPU_SECONDS * 2, check=False)
    except subprocess.TimeoutExpired:
        raise InspectionError("The image could not be checked in time (qemu-img info timed out).") from None
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise InspectionError(f"qemu-img cannot read the image as {disk_format}: {detail[-1] if detail else 'error'}")
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise InspectionError("qemu-img info gave an unreadable answer.") from None


def check(path: Path, disk_format: str, virtual_size: int) -> int:
    """Confirm what the inspector found; returns the virtual size qemu will present."""
    if not settings.CLOUDMGR_IMAGE_QEMU_CHECK:
        return virtual_size
    data = info(path, disk_format)
    if data is None:
        return virtual_size
    if data.get("backing-filename") or data.get("full-backing-filename"):
        raise InspectionError("The image refers to a backing file, which is not allowed.")
    specific = (data.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise InspectionError("The image refers to an external data file, which is not allowed.")
    extents = specific.get("extents") or []
    if any(Path(e.get("filename", "")) != path for e in extents):
        raise InspectionError("The VMDK image refers to extents outside the file, which is not allowed.")
    qemu_size = int(data.get("virtual-size") or 0)
    if disk_format == "qcow2" and qemu_size != virtual_size:
        raise InspectionError("The qcow2 header does not say the same size to qemu-img and the inspector.")
    return qemu_size or virtual_size


def convert(
    src: Path,
    src_format: str,
    dest: Path,
    dest_format: str = "qcow2",
    *,
    timeout: float = 3600,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Convert an inspected image (explicit formats both sides). `on_progress` is told each new
    whole percent that qemu-img's `-p` reports."""
    cmd = ["qemu-img", "convert", "-p", "-f", QEMU_FORMATS[src_format], "-O", QEMU_FORMATS[dest_format],
           str(src), str(dest)]
    if shutil.which("prlimit"):
        cmd = ["prlimit", f"--cpu={int(timeout)}", "--", *cmd]
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            last = -1
            for percent in _progress(proc.stdout):
                if on_progress and percent > last:
                    last = percent
                    on_progress(percent)
            returncode = proc.wait()
        finally:
            killer.cancel()
        stderr.seek(0)
        message = stderr.read().decode(errors="replace").strip()
    if returncode == -signal.SIGKILL:
        raise InspectionError("Converting the image timed out.")
    if returncode != 0:
        raise InspectionError(f"qemu-img could not convert the image: {message}")


_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def _progress(stream) -> Iterator[int]:
    """Whole percents from qemu-img's `-p` output, which rewrites one line: "    (12.34/100%)\r"."""
    pending = b""
    while chunk := stream.read1(4096):
        pending += chunk
        *done, pending = re.split(rb"[\r\n]", pending)
        for segment in done:
            if match := _PROGRESS.search(segment):
                yield int(float(match.group(1)))
