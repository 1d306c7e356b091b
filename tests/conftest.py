"""Shared fixtures. The fast unit tests run the whole control plane in-process with the fake
compute driver; the e2e tests (tests/e2e) drive a real running cloud with real VMs."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The guest image the suite boots, built once from Debian packages by the Makefile (or here).
TESTVM_IMAGE = Path(os.environ.get("CLOUDMGR_TESTVM_IMAGE", REPO / "var" / "build" / "testvm.qcow2"))


@pytest.fixture(scope="session")
def testvm_image() -> Path:
    subprocess.run([str(REPO / "scripts" / "build-testvm.sh"), str(TESTVM_IMAGE)], check=True)
    return TESTVM_IMAGE
