"""Reading the serial console log file (no libvirt daemon needed)."""

from __future__ import annotations

import pytest

from agents.compute.driver import ComputeError
from agents.compute.libvirt_driver import read_console_log


def test_missing_log_is_empty(tmp_path):
    assert read_console_log(tmp_path / "console.log") == ""
    assert read_console_log(tmp_path / "console.log", 10) == ""


def test_tail_lines(tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"".join(b"line %d\r\n" % i for i in range(100)))
    assert read_console_log(log).count("\n") == 100
    assert read_console_log(log, 2) == "line 98\r\nline 99\r\n"
    assert read_console_log(log, 0) == ""
    assert read_console_log(log, 1000).startswith("line 0\r\n")
    with pytest.raises(ComputeError):
        read_console_log(log, -1)


def test_large_log_is_capped_at_a_line_boundary(tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"".join(b"%06d\n" % i for i in range(10000)))  # 70000 bytes
    out = read_console_log(log, max_bytes=1000)
    assert out.endswith("009999\n")
    assert len(out) <= 1000
    assert all(len(line) == 6 for line in out.splitlines())  # no cut line


def test_invalid_utf8_is_replaced(tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"ok \xff\xfe\nCLOUDMGR_TESTVM_BOOTED\n")
    out = read_console_log(log)
    assert "CLOUDMGR_TESTVM_BOOTED" in out and "\ufffd" in out
