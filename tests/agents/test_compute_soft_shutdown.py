"""The libvirt driver's clean shutdown (os-stop, soft reboot, resize, rescue) presses the ACPI power
button again every CLOUDMGR_SHUTDOWN_RETRY_INTERVAL seconds until the guest is off or the timeout
has passed, then destroys the domain: a guest that was still booting ignores the first press.

No libvirtd: a small stand-in domain and a fake clock (the driver's ``time.sleep`` advances it), so
the waits take no real time and the press times are exact."""

from __future__ import annotations

import libvirt
import pytest

from agents.compute import libvirt_driver
from agents.compute.libvirt_driver import LibvirtDriver
from agents.config import ConfigError, load_config


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class BootingGuest:
    """A running domain that powers off on the ``obeys_press``-th ACPI press (never if None)."""

    def __init__(self, clock: FakeClock, obeys_press: int | None) -> None:
        self.clock = clock
        self.obeys_press = obeys_press
        self.presses: list[float] = []  # clock time of each shutdown() call
        self.destroyed = False
        self.running = True

    def isActive(self) -> int:
        return int(self.running)

    def state(self) -> list[int]:
        return [libvirt.VIR_DOMAIN_RUNNING if self.running else libvirt.VIR_DOMAIN_SHUTOFF, 0]

    def shutdown(self) -> int:
        if not self.running:
            raise _operation_invalid()
        self.presses.append(self.clock.now)
        if self.obeys_press is not None and len(self.presses) >= self.obeys_press:
            self.running = False
        return 0

    def destroy(self) -> int:
        self.destroyed = True
        self.running = False
        return 0

    def name(self) -> str:
        return "instance-test"


def _operation_invalid() -> libvirt.libvirtError:
    err = libvirt.libvirtError("Requested operation is not valid: domain is not running")
    err.err = (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_QEMU, "domain is not running", 2,
               None, None, None, 0, 0)
    return err


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(libvirt_driver, "time", fake)
    return fake


def _driver(monkeypatch, tmp_path, interval: str | None) -> LibvirtDriver:
    env = {"CLOUDMGR_DATA_DIR": str(tmp_path)}
    if interval is not None:
        env["CLOUDMGR_SHUTDOWN_RETRY_INTERVAL"] = interval
    return LibvirtDriver(load_config(env))


def test_a_guest_that_ignored_the_first_press_is_shut_down_cleanly_by_the_second(clock, monkeypatch, tmp_path):
    driver = _driver(monkeypatch, tmp_path, None)
    guest = BootingGuest(clock, obeys_press=2)
    start = clock.now

    driver._clean_shutdown(guest, timeout=60)

    assert [round(t - start, 1) for t in guest.presses] == [0.0, 10.0]  # default interval: 10 s
    assert not guest.destroyed and not guest.running
    assert clock.now - start < 11  # it stopped waiting once the guest was off


def test_a_guest_that_never_obeys_is_pressed_every_interval_until_the_timeout_then_destroyed(
        clock, monkeypatch, tmp_path):
    driver = _driver(monkeypatch, tmp_path, "10")
    guest = BootingGuest(clock, obeys_press=None)
    start = clock.now

    driver._clean_shutdown(guest, timeout=60)

    assert [round(t - start, 1) for t in guest.presses] == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    assert guest.destroyed
    assert 60 <= clock.now - start < 61


def test_the_interval_comes_from_the_environment(clock, monkeypatch, tmp_path):
    driver = _driver(monkeypatch, tmp_path, "4")
    guest = BootingGuest(clock, obeys_press=3)
    start = clock.now

    driver._clean_shutdown(guest, timeout=60)

    assert [round(t - start, 1) for t in guest.presses] == [0.0, 4.0, 8.0]
    assert not guest.destroyed


def test_a_guest_that_obeys_the_first_press_gets_only_one(clock, monkeypatch, tmp_path):
    driver = _driver(monkeypatch, tmp_path, None)
    guest = BootingGuest(clock, obeys_press=1)

    driver._clean_shutdown(guest, timeout=60)

    assert len(guest.presses) == 1 and not guest.destroyed


def test_stop_presses_again_through_the_public_operation(clock, monkeypatch, tmp_path):
    driver = _driver(monkeypatch, tmp_path, "5")
    guest = BootingGuest(clock, obeys_press=2)
    guest.hasManagedSaveImage = lambda flags: 0
    monkeypatch.setattr(driver, "_connection", lambda: object())
    monkeypatch.setattr(driver, "_lookup", lambda conn, instance_id: guest)

    driver.stop("3f8f7a4e-3a4b-4a51-9d8e-3c1d2f1e0b9a", timeout=60)

    assert len(guest.presses) == 2 and not guest.destroyed


@pytest.mark.parametrize("raw", ["0", "-3", "soon"])
def test_an_invalid_interval_is_refused(raw):
    with pytest.raises(ConfigError, match="CLOUDMGR_SHUTDOWN_RETRY_INTERVAL"):
        load_config({"CLOUDMGR_SHUTDOWN_RETRY_INTERVAL": raw})


def test_the_default_interval_is_novas():
    assert load_config({}).shutdown_retry_interval == 10.0
