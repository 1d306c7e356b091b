"""The agents' Celery app settings and the heartbeat (no broker needed)."""

from __future__ import annotations

import threading
import time
import types
import uuid

import pytest

from agents import AGENT_VERSION, names, worker
from agents.config import load_config
from agents.specs import POWER_RUNNING, DiskSpec, DomainSpec, HostReport, ImageRef


@pytest.fixture
def config(tmp_path):
    return load_config({"CLOUDMGR_DATA_DIR": str(tmp_path), "CLOUDMGR_HOSTNAME": "node7", "CLOUDMGR_VIRT_TYPE": "kvm"})


def test_build_host_report(fake_driver, config):
    spec = DomainSpec(
        instance_id=str(uuid.uuid4()),
        display_name="vm",
        vcpus=1,
        memory_mib=128,
        disks=[DiskSpec(name="root", size_gb=1, image=ImageRef(id="img", source="file:///x"))],
    )
    fake_driver.spawn(spec)
    fake_driver.capacity = {"vcpus": 8, "memory_mib": 16384, "disk_gb": 500}
    report = worker.build_host_report(config=config)
    assert report == HostReport(
        hostname="node7",
        queue="host.node7",
        virt_type="kvm",
        vcpus=8,
        memory_mib=16384,
        disk_gb=500,
        agent_version=AGENT_VERSION,
        domains={spec.instance_id: POWER_RUNNING},
        hypervisor_version=1000000,
        cpu_info={"arch": "x86_64", "model": "fake", "vendor": "cloudmgr", "features": [],
                  "topology": {"cells": 1, "sockets": 1, "cores": 8, "threads": 1}},
        started_at=worker.STARTED_AT,  # this process's start: the control plane sees a restart by it
    )
    assert 0 < worker.STARTED_AT <= time.time()
    assert HostReport.from_dict(report.to_dict()) == report


def test_send_heartbeat(fake_driver, config, monkeypatch):
    sent = []
    monkeypatch.setattr(worker.app, "send_task", lambda name, **kw: sent.append((name, kw)))
    report = worker.send_heartbeat(config=config)
    [(name, options)] = sent
    assert name == names.TASK_HOST_HEARTBEAT
    assert options["queue"] == config.control_queue == names.CONTROL_QUEUE
    assert options["args"] == [report.to_dict()]
    assert options["expires"] >= 3 * config.heartbeat_interval


def test_heartbeat_thread_sends_at_once_and_survives_errors():
    calls = []
    done = threading.Event()

    def send():
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise ConnectionError("broker down")
        if len(calls) >= 3:
            done.set()

    start = time.monotonic()
    thread = worker.HeartbeatThread(0.05, send=send)
    thread.start()
    try:
        assert done.wait(5), "heartbeat stopped after an error"
    finally:
        thread.stop(timeout=5)
    assert calls[0] - start < 1  # the first heartbeat goes out immediately
    assert thread.failed == 1 and thread.sent >= 2
    assert not thread.is_alive()


def test_worker_ready_starts_one_heartbeat(monkeypatch):
    beats = []
    monkeypatch.setattr(worker, "send_heartbeat", lambda: beats.append(1))
    try:
        worker._on_worker_ready(sender=types.SimpleNamespace(app=worker.app))
        first = worker._heartbeat
        worker._on_worker_ready(sender=types.SimpleNamespace(app=worker.app))
        assert worker._heartbeat is first and first.daemon
        deadline = time.monotonic() + 5
        while not beats and time.monotonic() < deadline:
            time.sleep(0.01)
        assert beats
        worker._on_worker_ready(sender=types.SimpleNamespace(app=object()))  # another app: ignored
        assert worker._heartbeat is first
    finally:
        worker._on_worker_shutdown()
    assert worker._heartbeat is None and not first.is_alive()


def test_control_plane_tasks_are_routed_to_the_control_queue():
    """A callback linked without an explicit queue still reaches the control plane."""
    for task_name in (names.CALLBACK_SPAWN_DONE, names.CALLBACK_DESTROY_DONE, names.TASK_HOST_HEARTBEAT):
        route = worker.app.amqp.router.route({}, task_name)
        assert route["queue"].name == names.CONTROL_QUEUE


def test_app_never_loads_the_django_fixup():
    assert not worker.app.fixups
