"""The LVM backend's tests (test_volumes_lvm.py) on a host whose kernel has no device-mapper: run
inside a QEMU (TCG) guest booting Debian's cloud kernel, which has dm-thin-pool and loop, with
this host's root as the guest's root, read-only (scripts/run-in-dm-guest.sh).

Where the host has device-mapper, test_volumes_lvm.py runs directly and this module skips.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agents.test_volumes_lvm import host_has_device_mapper

REPO = Path(__file__).resolve().parents[2]
RUN_IN_GUEST = REPO / "scripts" / "run-in-dm-guest.sh"
LVM_TESTS = "tests/agents/test_volumes_lvm.py"
# About 80 s on a quiet 2-core host, 3 minutes on a loaded one: generous.
GUEST_TIMEOUT = 1200


def _guest_unavailable() -> str | None:
    if host_has_device_mapper():
        return "this host has device-mapper: test_volumes_lvm.py runs the LVM tests directly"
    if os.geteuid() != 0:
        return "needs root (virtiofsd, and LVM in the guest runs the host's lvm2 as root)"
    needed = {"qemu-system-x86_64": "qemu-system-x86", "/usr/lib/qemu/virtiofsd": "qemu-system-common",
              "lvcreate": "lvm2", "thin_check": "thin-provisioning-tools", "/bin/busybox": "busybox-static"}
    missing = sorted(package for tool, package in needed.items() if shutil.which(tool) is None)
    if missing:
        return f"{', '.join(missing)} not installed (scripts/host-setup.sh)"
    return None


pytestmark = pytest.mark.skipif(_guest_unavailable() is not None, reason=str(_guest_unavailable()))


SUMMARY = re.compile(r"^=*\s*(\d+ \w+(?:, \d+ \w+)*) in [\d.]+s\b.*$", re.MULTILINE)


def summary(output: str) -> tuple[str, dict[str, int]]:
    """pytest's last summary line ("3 passed in 140.2s (0:02:20)") and its outcome counts
    (warnings left out), or ("", {}) if there is none."""
    lines = list(SUMMARY.finditer(output))
    if not lines:
        return "", {}
    counts = {word: int(count) for count, word in re.findall(r"(\d+) (\w+)", lines[-1].group(1))}
    return lines[-1].group(0).strip("= "), {word: n for word, n in counts.items() if not word.startswith("warning")}


@pytest.mark.timeout(GUEST_TIMEOUT + 120)
def test_lvm_backend_in_a_device_mapper_guest(testvm_image, record_property):
    # The guest's kernel is the test guest's: building that image fetches its package (apt).
    # In the guest: no Django (the agents' tests need none, and importing it costs ~20 s under
    # TCG), no cache writes (the root is read-only).
    command = [sys.executable, "-m", "pytest", "-p", "no:django", "-p", "no:cacheprovider",
               "-W", "ignore::pytest.PytestConfigWarning", "-q", "--durations=5", LVM_TESTS]
    proc = subprocess.run(
        [str(RUN_IN_GUEST), "--timeout", str(GUEST_TIMEOUT), "--cwd", str(REPO), "--", *command],
        capture_output=True, text=True, timeout=GUEST_TIMEOUT + 60,
        env={**os.environ, "CLOUDMGR_TESTVM_IMAGE": str(testvm_image)})
    print(proc.stdout)  # the guest's pytest report: shown with -rA, and below on failure
    line, outcomes = summary(proc.stdout)
    record_property("guest_summary", line)
    assert proc.returncode == 0 and outcomes == {"passed": 3}, (
        f"in the device-mapper guest, {LVM_TESTS} ended with {line or 'no summary'!r} "
        f"(exit status {proc.returncode}):\n{proc.stdout}{proc.stderr}")
