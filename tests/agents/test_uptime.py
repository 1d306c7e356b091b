"""The host's uptime line, in procps' format (python-openstackclient parses it)."""

import re
import struct

import pytest

from agents.tasks import host_uptime_call
from agents.uptime import USER_PROCESS, UTMP_RECORD_SIZE, host_uptime

OSC_PATTERN = r"\s*(.+)\sup\s+(.+),\s+(.+)\susers?,\s+load average:\s(.+)"


def utmp_of(*types: int) -> bytes:
    return b"".join(struct.pack("h", t).ljust(UTMP_RECORD_SIZE, b"\0") for t in types)


@pytest.mark.parametrize(("seconds", "users", "up", "who"), [
    (125.7, 0, "2 min", " 0 users"),
    (3 * 3600 + 7 * 60, 1, " 3:07", " 1 user"),
    (86400 + 60, 2, "1 day, 1 min", " 2 users"),
    (9 * 86400 + 13 * 3600 + 5 * 60, 12, "9 days, 13:05", "12 users"),
])
def test_uptime_line(tmp_path, seconds, users, up, who):
    (tmp_path / "uptime").write_text(f"{seconds} 1.00\n")
    (tmp_path / "loadavg").write_text("0.5 1.25 10.125 2/300 4242\n")
    utmp = tmp_path / "utmp"
    utmp.write_bytes(utmp_of(2, *[USER_PROCESS] * users, 8))  # a boot record and a dead process besides
    line = host_uptime(proc=tmp_path, utmp=utmp, now=0)
    assert re.fullmatch(rf" \d\d:\d\d:\d\d up {up}, {who},  load average: 0.50, 1.25, 10.12", line)
    match = re.match(OSC_PATTERN, line)
    assert match.group(2) == up.strip() and match.group(3).strip() == str(users)


def test_no_utmp_is_no_users(tmp_path):
    (tmp_path / "uptime").write_text("60.0 1.0\n")
    (tmp_path / "loadavg").write_text("0 0 0 1/1 1\n")
    assert ",  0 users," in host_uptime(proc=tmp_path, utmp=tmp_path / "missing")


def test_the_call_answers_this_hosts_uptime():
    answer = host_uptime_call({})
    assert answer["error"] is None and re.match(OSC_PATTERN, answer["uptime"])
