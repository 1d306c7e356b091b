"""The Celery entry points, called directly (and eagerly with ``apply``) with the fake driver."""

from __future__ import annotations

import uuid

import pytest

from agents import names, tasks
from agents.compute.fake import BOOT_MARKER
from agents.specs import (
    POWER_NOSTATE,
    POWER_RUNNING,
    DiskSpec,
    DomainSpec,
    ImageRef,
    InstanceRef,
    OperationSpec,
    PasswordSpec,
)
from agents.storage import StorageError
from agents.worker import app

RESULT_KEYS = {"instance_id", "ok", "error", "power_state"}


def spec_dict(instance_id: str | None = None) -> dict:
    return DomainSpec(
        instance_id=instance_id or str(uuid.uuid4()),
        display_name="vm",
        vcpus=1,
        memory_mib=128,
        disks=[DiskSpec(name="root", size_gb=1, image=ImageRef(id="img", source="file:///nonexistent"))],
    ).to_dict()


def ref(instance_id: str) -> dict:
    return InstanceRef(instance_id).to_dict()


def test_tasks_are_registered_under_the_contract_names():
    for name, task in [
        (names.TASK_SPAWN, tasks.spawn),
        (names.TASK_DESTROY, tasks.destroy),
        (names.TASK_CONSOLE_LOG, tasks.console_log),
    ]:
        assert task.name == name
        assert app.tasks[name] is task._get_current_object()


def test_spawn_ok(fake_driver):
    spec = spec_dict()
    result = tasks.spawn(spec)
    timings = result.pop("timings")
    assert result == {"instance_id": spec["instance_id"], "ok": True, "error": None, "power_state": POWER_RUNNING}
    # When the agent began and finished (the callback logs them for bench/boot.py).
    assert 0 < timings["received_at"] <= timings["finished_at"]
    assert timings["stages"] == {}  # the fake driver has no stages
    assert fake_driver.list_domains() == {spec["instance_id"]: POWER_RUNNING}
    assert tasks.spawn(spec)["ok"]  # redelivery is harmless


def test_spawn_failure_is_a_result_not_an_exception_and_cleans_up(fake_driver):
    spec = spec_dict()
    fake_driver.fail_next_spawn("not enough memory on the host")
    result = tasks.spawn(spec)
    assert set(result) == RESULT_KEYS | {"timings"}
    assert result["ok"] is False
    assert result["error"] == "not enough memory on the host"
    assert result["instance_id"] == spec["instance_id"]
    assert result["power_state"] == POWER_NOSTATE
    assert ("destroy", spec["instance_id"]) in fake_driver.calls  # best-effort cleanup


def test_storage_and_unexpected_errors_become_results(fake_driver, monkeypatch):
    def broken(spec):
        raise StorageError("image img: sha512 checksum mismatch")

    monkeypatch.setattr(fake_driver, "spawn", broken)
    assert tasks.spawn(spec_dict())["error"] == "image img: sha512 checksum mismatch"

    def buggy(spec):
        raise KeyError("oops")

    monkeypatch.setattr(fake_driver, "spawn", buggy)
    result = tasks.spawn(spec_dict())
    assert result["ok"] is False and "internal error" in result["error"]


def test_invalid_spec_becomes_a_result(fake_driver):
    data = spec_dict()
    data["disks"] = []
    result = tasks.spawn(data)
    assert result["ok"] is False and "root disk" in result["error"]

    result = tasks.spawn({"instance_id": "x", "unexpected": 1})
    assert result["ok"] is False and result["instance_id"] == "x" and "invalid instance spec" in result["error"]


def test_unknown_spec_version_becomes_a_result(fake_driver):
    data = spec_dict()
    data["version"] = 99
    result = tasks.spawn(data)
    assert result["ok"] is False and "version 99" in result["error"]
    assert fake_driver.calls == []
    result = tasks.destroy({"instance_id": data["instance_id"], "version": 99})
    assert result["ok"] is False and "version 99" in result["error"]
    assert "version 99" in tasks.console_log({"instance_id": data["instance_id"], "version": 99})["error"]


def test_destroy_is_idempotent(fake_driver):
    spec = spec_dict()
    tasks.spawn(spec)
    expected = {"instance_id": spec["instance_id"], "ok": True, "error": None, "power_state": POWER_NOSTATE}
    assert tasks.destroy(ref(spec["instance_id"])) == expected
    assert tasks.destroy(ref(spec["instance_id"])) == expected
    assert fake_driver.list_domains() == {}


def test_console_log(fake_driver):
    spec = spec_dict()
    assert tasks.console_log(ref(spec["instance_id"])) == {"output": ""}
    tasks.spawn(spec)
    output = tasks.console_log(ref(spec["instance_id"]))["output"]
    assert BOOT_MARKER in output
    assert tasks.console_log(ref(spec["instance_id"]), length=1)["output"].count("\n") == 1
    assert tasks.console_log(ref(spec["instance_id"]), length=-1)["output"] == ""


def test_transient_failure_is_retried(fake_driver):
    """Run eagerly (like a worker would, minus the broker): two transient failures, then success."""
    spec = spec_dict()
    fake_driver.fail_next_spawn("connection reset", transient=True, times=2)
    result = tasks.spawn.apply(args=[spec]).get()
    assert result["ok"] is True
    assert [op for op, _ in fake_driver.calls].count("spawn") == 3


def test_transient_failure_gives_up_with_a_result(fake_driver):
    spec = spec_dict()
    fake_driver.fail_next_spawn("hypervisor unavailable", transient=True, times=tasks.MAX_RETRIES + 1)
    result = tasks.spawn.apply(args=[spec]).get()
    assert result["ok"] is False and result["error"] == "hypervisor unavailable"
    assert [op for op, _ in fake_driver.calls].count("spawn") == tasks.MAX_RETRIES + 1


def test_direct_call_does_not_retry(fake_driver):
    fake_driver.fail_next_spawn("hypervisor unavailable", transient=True)
    assert tasks.spawn(spec_dict())["ok"] is False


@pytest.mark.parametrize("task", [tasks.spawn, tasks.destroy])
def test_results_are_json_serialisable(fake_driver, task):
    import json

    spec = spec_dict()
    arg = spec if task is tasks.spawn else ref(spec["instance_id"])
    out = task(arg)
    assert json.loads(json.dumps(out)) == out


def test_celery_settings():
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.result_backend == conf.broker_url
    assert "agents.tasks" in conf.imports
    assert tasks.console_log.ignore_result is False
    assert tasks.spawn.ignore_result is True


def test_misconfigured_agent_is_a_result(monkeypatch):
    def no_driver():
        raise ValueError("CLOUDMGR_COMPUTE_DRIVER must be one of libvirt, fake")

    monkeypatch.setattr(tasks, "get_driver", no_driver)
    spec = spec_dict()
    result = tasks.spawn(spec)
    assert result["ok"] is False and "misconfigured" in result["error"]
    assert tasks.destroy(ref(spec["instance_id"]))["ok"] is False
    assert tasks.console_log(ref(spec["instance_id"])) == {
        "output": "",
        "error": "the compute agent is misconfigured: CLOUDMGR_COMPUTE_DRIVER must be one of libvirt, fake",
    }


@pytest.mark.parametrize("upload_url", ["http://cloud/image/v2/images/i/file", None])
def test_shelve_uploads_the_root_disk_unless_it_boots_from_a_volume(fake_driver, upload_url):
    """Without an upload URL (the control plane sends none for a server booted from a volume,
    whose root disk is the volume) the guest is stopped and removed, and nothing is uploaded."""
    spec = spec_dict()
    tasks.spawn(spec)
    op = OperationSpec(instance_id=spec["instance_id"], operation="shelve", upload_url=upload_url,
                       upload_token="ticket" if upload_url else None)
    result = tasks.operate(None, op.to_dict(), "shelve")
    assert (result["ok"], result["power_state"]) == (True, POWER_NOSTATE)
    calls = [name for name, iid in fake_driver.calls if iid == spec["instance_id"]]
    assert calls[1:] == (["stop", "snapshot", "destroy"] if upload_url else ["stop", "destroy"])
    assert getattr(fake_driver, "uploads", []) == ([upload_url] if upload_url else [])
    assert fake_driver.list_domains() == {}


def test_set_password_answers_without_the_password(fake_driver):
    spec = spec_dict()
    spec["guest_agent"] = True
    tasks.spawn(spec)
    answer = tasks.set_password(PasswordSpec(instance_id=spec["instance_id"], user="root", password="Zq9").to_dict())
    assert answer == {"ok": True, "error": None} and fake_driver.passwords[spec["instance_id"]] == ("root", "Zq9")
    plain = spec_dict()
    tasks.spawn(plain)
    refused = tasks.set_password(PasswordSpec(instance_id=plain["instance_id"], user="root", password="Zq9").to_dict())
    assert refused["ok"] is False and "guest agent is not configured" in refused["error"]
    assert "Zq9" not in str(refused)
    assert "invalid password request" in tasks.set_password({"instance_id": "x"})["error"]
    assert "Zq9" not in repr(PasswordSpec(instance_id="i", user="root", password="Zq9"))


def test_diagnostics_of_a_running_instance_else_the_reason(fake_driver):
    spec = spec_dict()
    tasks.spawn(spec)
    answer = tasks.diagnostics(ref(spec["instance_id"]))
    assert answer["error"] is None and answer["diagnostics"]["cpu0_time"] > 0
    tasks.destroy(ref(spec["instance_id"]))
    gone = tasks.diagnostics(ref(spec["instance_id"]))
    assert gone["diagnostics"] is None and "not running" in gone["error"]
