from __future__ import annotations

import threading
import uuid

import pytest

from agents.compute.driver import ComputeDriver, ComputeError, HypervisorUnavailable, get_driver, reset_driver
from agents.compute.fake import BOOT_MARKER, FakeDriver
from agents.config import EPHEMERAL_DISK, SWAP_DISK, get_config
from agents.specs import POWER_NOSTATE, POWER_RUNNING, DiskSpec, DomainSpec, ImageRef


def make_spec(instance_id: str | None = None) -> DomainSpec:
    return DomainSpec(
        instance_id=instance_id or str(uuid.uuid4()),
        display_name="fake-vm",
        vcpus=1,
        memory_mib=128,
        disks=[DiskSpec(name="root", size_gb=1, image=ImageRef(id="img", source="file:///nonexistent"))],
    )


def test_is_a_compute_driver():
    assert isinstance(FakeDriver(), ComputeDriver)


def test_spawn_list_console_destroy():
    driver = FakeDriver()
    spec = make_spec()
    assert driver.spawn(spec) == {"power_state": POWER_RUNNING}
    assert driver.spawn(spec) == {"power_state": POWER_RUNNING}  # idempotent
    assert driver.list_domains() == {spec.instance_id: POWER_RUNNING}
    assert driver.power_state(spec.instance_id) == POWER_RUNNING
    assert BOOT_MARKER in driver.console_log(spec.instance_id)
    assert driver.console_log(spec.instance_id, 2).count("\n") == 2
    assert driver.console_log(spec.instance_id, 0) == ""
    driver.destroy(spec.instance_id)
    driver.destroy(spec.instance_id)  # missing is fine
    assert driver.list_domains() == {}
    assert driver.power_state(spec.instance_id) == POWER_NOSTATE
    assert driver.console_log(spec.instance_id) == ""


def test_fail_next_spawn():
    driver = FakeDriver()
    driver.fail_next_spawn("no space left on the host")
    spec = make_spec()
    with pytest.raises(ComputeError, match="no space left"):
        driver.spawn(spec)
    assert driver.list_domains() == {}
    assert driver.spawn(spec)["power_state"] == POWER_RUNNING  # only the next one fails

    driver.fail_next_spawn("libvirt is down", transient=True, times=2)
    for _ in range(2):
        with pytest.raises(HypervisorUnavailable):
            driver.spawn(make_spec())


def test_invalid_spec_is_refused_like_the_real_driver():
    with pytest.raises(ComputeError, match="root disk"):
        FakeDriver().spawn(DomainSpec(instance_id=str(uuid.uuid4()), display_name="x", vcpus=1, memory_mib=128))


def test_ephemeral_and_swap_disks_are_accepted_and_checked_like_the_real_driver():
    driver = FakeDriver()
    spec = make_spec()
    spec.disks += [DiskSpec(name=EPHEMERAL_DISK, size_gb=2, fs="ext4"),
                   DiskSpec(name=SWAP_DISK, size_gb=0, size_mib=256, fs="swap")]
    assert driver.spawn(DomainSpec.from_dict(spec.to_dict()))["power_state"] == POWER_RUNNING
    assert driver.specs[spec.instance_id].disks == spec.disks

    spec.disks[2].size_mib = 512
    assert driver.resize(spec) == POWER_RUNNING
    assert driver.specs[spec.instance_id].disks[2].size_bytes == 512 << 20
    spec.disks[1].fs = "btrfs"
    with pytest.raises(ComputeError, match="invalid instance spec: disk ephemeral0: filesystem 'btrfs'"):
        driver.resize(spec)
    unsized = make_spec()
    unsized.disks.append(DiskSpec(name=SWAP_DISK, size_gb=0, fs="swap"))
    with pytest.raises(ComputeError, match="positive size"):
        driver.spawn(unsized)
    assert unsized.instance_id not in driver.list_domains()


def test_capacity_is_configurable():
    assert FakeDriver().host_capacity()["vcpus"] >= 64
    assert FakeDriver(capacity={"vcpus": 4, "memory_mib": 8192, "disk_gb": 100}).host_capacity() == {
        "vcpus": 4,
        "memory_mib": 8192,
        "disk_gb": 100,
    }


def test_thread_safe():
    driver = FakeDriver()
    ids = [str(uuid.uuid4()) for _ in range(200)]

    def work(chunk):
        for instance_id in chunk:
            driver.spawn(make_spec(instance_id))
            driver.list_domains()
        for instance_id in chunk[::2]:
            driver.destroy(instance_id)

    threads = [threading.Thread(target=work, args=(ids[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(driver.list_domains()) == {i for n in range(8) for i in ids[n::8][1::2]}


def test_get_driver_factory_is_cached_and_honours_config(monkeypatch):
    monkeypatch.setenv("CLOUDMGR_COMPUTE_DRIVER", "fake")
    get_config.cache_clear()
    reset_driver()
    try:
        driver = get_driver()
        assert isinstance(driver, FakeDriver)
        assert get_driver() is driver
    finally:
        reset_driver()
        monkeypatch.undo()
        get_config.cache_clear()
