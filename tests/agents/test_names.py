from __future__ import annotations

import re
import uuid

import pytest

from agents import names

IDS = [str(uuid.UUID(int=0)), str(uuid.UUID(int=(1 << 128) - 1)), "7d9e8f10-1111-4222-8333-944455566677"]


@pytest.mark.parametrize("object_id", IDS + [str(uuid.uuid5(uuid.NAMESPACE_URL, f"port-{i}")) for i in range(20)])
def test_interface_names_fit_linux_limit(object_id):
    for name in (names.tap_name(object_id), names.bridge_name(object_id)):
        assert 0 < len(name) <= names.IFNAME_MAX
        assert re.fullmatch(r"[a-z0-9]+", name)


def test_names_are_deterministic_and_prefixed():
    port = "7D9E8F10-1111-4222-8333-944455566677"
    assert names.tap_name(port) == names.tap_name(port.lower()) == "tap7d9e8f10111"
    assert names.bridge_name(port) == "brq7d9e8f10111"
    assert names.tap_name(port) != names.tap_name(str(uuid.uuid4()))


def test_domain_name_and_queue():
    assert names.domain_name("abc") == "cloudmgr-abc"
    assert names.host_queue("node1") == "host.node1"
    assert names.TASK_SPAWN != names.TASK_DESTROY != names.TASK_CONSOLE_LOG
