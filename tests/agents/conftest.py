"""Fixtures for the agents' tests (plain pytest: no Django)."""

from __future__ import annotations

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
