"""The config drive: the metadata service's documents on an ISO 9660 volume labelled ``config-2``,
attached to the guest as a CD-ROM (for networks without a metadata service, or guests told to
prefer it). The control plane sends the files in ``DomainSpec.config_drive`` (path -> base64),
laid out as Nova's drive (``openstack/latest/meta_data.json``, ``ec2/latest/...``); the compute
agent writes them here with ``xorriso`` (or ``genisoimage``), Rock Ridge and Joliet names on, as
cloud-init and Windows' cloudbase-init read them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from agents.compute.driver import ComputeError

__all__ = ["CONFIG_DRIVE_LABEL", "ConfigDriveError", "build_config_drive"]

CONFIG_DRIVE_LABEL = "config-2"
MAX_TOTAL_BYTES = 64 << 20  # Nova's drive is 64 MiB at most
BUILD_TIMEOUT = 60
_PATH_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ConfigDriveError(ComputeError):
    """The config drive cannot be made; the message says why."""


def _tool() -> list[str]:
    if shutil.which("xorriso"):
        return ["xorriso", "-as", "mkisofs"]
    for name in ("genisoimage", "mkisofs"):
        if shutil.which(name):
            return [name]
    raise ConfigDriveError("cannot make a config drive: install xorriso (scripts/host-setup.sh)")


def _relative(path: str) -> Path:
    parts = path.split("/")
    if not path or not all(_PATH_PART.match(part) for part in parts):
        raise ConfigDriveError(f"invalid config drive path {path!r}")
    return Path(*parts)


def build_config_drive(target: Path, files: dict[str, str]) -> None:
    """Write the ISO with ``files`` (relative path -> base64 content) to ``target``, atomically:
    a guest that runs keeps the drive it has, a new definition gets the new one."""
    decoded: dict[Path, bytes] = {}
    for path, content in files.items():
        try:
            decoded[_relative(path)] = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise ConfigDriveError(f"config drive file {path!r} is not base64") from None
    if sum(len(body) for body in decoded.values()) > MAX_TOTAL_BYTES:
        raise ConfigDriveError(f"the config drive's files exceed {MAX_TOTAL_BYTES >> 20} MiB")
    tool = _tool()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    with tempfile.TemporaryDirectory(prefix="config-drive-", dir=target.parent) as staging:
        root = Path(staging)
        for relative, body in decoded.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(body)
        argv = tool + ["-o", str(partial), "-V", CONFIG_DRIVE_LABEL, "-J", "-r", "-l", "-quiet", str(root)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ConfigDriveError(f"making the config drive failed: {exc}") from None
        if proc.returncode != 0:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise ConfigDriveError(f"making the config drive failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    os.chmod(partial, 0o644)  # QEMU runs as another user
    os.replace(partial, target)
