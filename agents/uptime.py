"""The host's ``uptime`` line, as procps prints it: Nova's hypervisor uptime is that command's
output. Read from /proc and utmp here, since minimal hosts lack procps."""

from __future__ import annotations

import struct
import time
from pathlib import Path

UTMP_RECORD_SIZE = 384  # glibc's struct utmp on 64-bit Linux; ut_type is its first field (a short)
USER_PROCESS = 7


def logged_in_users(utmp: Path) -> int:
    """The login sessions in utmp (none if it is missing, as in a container)."""
    try:
        data = utmp.read_bytes()
    except OSError:
        return 0
    return sum(1 for offset in range(0, len(data) - UTMP_RECORD_SIZE + 1, UTMP_RECORD_SIZE)
               if struct.unpack_from("h", data, offset)[0] == USER_PROCESS)


def host_uptime(proc: Path = Path("/proc"), utmp: Path = Path("/run/utmp"), now: float | None = None) -> str:
    """E.g. `` 18:23:24 up 2 days,  6:41,  1 user,  load average: 0.89, 1.13, 1.12``."""
    seconds = int(float((proc / "uptime").read_text().split()[0]))
    loads = ", ".join(f"{float(value):.2f}" for value in (proc / "loadavg").read_text().split()[:3])
    days, rest = divmod(seconds, 86400)
    hours, minutes = rest // 3600, rest % 3600 // 60
    up = f"{days} day{'' if days == 1 else 's'}, " if days else ""
    up += f"{hours:2d}:{minutes:02d}" if hours else f"{minutes} min"
    users = logged_in_users(utmp)
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    return f" {clock} up {up}, {users:2d} user{'' if users == 1 else 's'},  load average: {loads}"
