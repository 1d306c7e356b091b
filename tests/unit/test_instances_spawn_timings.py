"""The spawn callback's timing line, which bench/boot.py reads (agents in-process, fake driver)."""

import logging

import pytest

from apps.instances import services
from bench.boot import TIMINGS
from tests.unit.conftest import make_host

pytestmark = pytest.mark.django_db(transaction=True)


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_spawn_callback_logs_where_the_time_went(world, fake_driver):
    make_host()
    logger, handler = logging.getLogger("apps.instances.tasks"), Lines()
    logger.addHandler(handler)
    try:
        instance = services.instance_create(user=world.member, project=world.project, name="vm1",
                                            flavor=world.flavor, image=world.image)
    finally:
        logger.removeHandler(handler)
    found = [match for match in map(TIMINGS.search, handler.lines) if match]
    assert [match.group(1) for match in found] == [str(instance.id)]
    fields = dict(pair.split("=", 1) for pair in found[0].group(2).split())
    assert fields.pop("ok") == "True"
    received, finished, started, done = (float(fields.pop(key)) for key in
                                         ("agent_received", "agent_finished", "callback_started", "callback_finished"))
    assert 0 < received <= finished <= started <= done
    assert fields == {}  # the fake driver reports no stages; the libvirt driver's are tested in tests/agents
