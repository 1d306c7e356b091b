"""Fixtures for the agents' tests (plain pytest: no Django)."""

from __future__ import annotations

import threading

import pytest

from agents.compute.driver import reset_driver
from agents.compute.fake import FakeDriver


@pytest.fixture
def fake_driver():
    """A fresh FakeDriver installed as the process's driver (what ``get_driver()`` returns)."""
    driver = FakeDriver()
    reset_driver(driver)
    yield driver
    reset_driver()


def in_threads(call, count: int) -> tuple[list, list]:
    """Run ``call()`` in ``count`` threads at once: (their results, the exceptions raised)."""
    results, errors = [], []

    def run():
        try:
            results.append(call())
        except Exception as exc:  # noqa: BLE001 - returned to the test, which asserts on them
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors
