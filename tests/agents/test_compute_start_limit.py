"""The libvirt driver starts at most ``max_concurrent_starts`` QEMU processes at once (a start is
CPU work: beyond the host's cores, every start in flight finishes later)."""

from __future__ import annotations

import threading
import time

from agents.compute.libvirt_driver import LibvirtDriver
from agents.config import load_config


class SlowStartDomain:
    """Records how many starts run at the same time."""

    running = 0
    most = 0
    lock = threading.Lock()

    def create(self) -> None:
        with self.lock:
            SlowStartDomain.running += 1
            SlowStartDomain.most = max(SlowStartDomain.most, SlowStartDomain.running)
        time.sleep(0.05)
        with self.lock:
            SlowStartDomain.running -= 1

    def schedulerParametersFlags(self, flags):  # noqa: N802 - libvirt's name
        return {}


def starts_at_once(limit: int, starts: int) -> int:
    SlowStartDomain.running = SlowStartDomain.most = 0
    driver = LibvirtDriver(load_config({"CLOUDMGR_MAX_CONCURRENT_STARTS": str(limit)}))
    threads = [threading.Thread(target=driver._create, args=(SlowStartDomain(),)) for _ in range(starts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert SlowStartDomain.running == 0
    return SlowStartDomain.most


def test_starts_beyond_the_limit_wait_for_one_to_finish():
    assert starts_at_once(limit=2, starts=6) == 2
    assert starts_at_once(limit=1, starts=3) == 1


def test_under_the_limit_starts_run_together():
    assert starts_at_once(limit=8, starts=4) == 4
