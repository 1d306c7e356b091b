"""The agents' process-level locks."""

import threading
import time

from agents.locks import KeyedLocks, SharedExclusiveLock


def _started(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_shared_holders_run_together_and_exclusive_waits_for_them():
    lock = SharedExclusiveLock()
    inside, release = threading.Barrier(3), threading.Event()
    order: list[str] = []

    def shared():
        with lock.shared():
            inside.wait(timeout=10)  # both shared holders are in at once
            release.wait(timeout=10)
            order.append("shared")

    holders = [_started(shared), _started(shared)]
    inside.wait(timeout=10)

    def exclusive():
        with lock.exclusive():
            order.append("exclusive")

    writer = _started(exclusive)
    time.sleep(0.2)
    assert order == [], "the exclusive holder waits while shared holders are in"
    release.set()
    for thread in [*holders, writer]:
        thread.join(timeout=10)
    assert order == ["shared", "shared", "exclusive"]


def test_a_waiting_exclusive_holder_goes_before_new_shared_ones_and_may_reenter_shared():
    lock = SharedExclusiveLock()
    order: list[str] = []
    first_in, release = threading.Event(), threading.Event()

    def first():
        with lock.shared():
            first_in.set()
            release.wait(timeout=10)

    def exclusive():
        with lock.exclusive():
            with lock.shared():  # a resync calls the steps it converges with
                order.append("exclusive")

    def late_shared():
        with lock.shared():
            order.append("late shared")

    holder = _started(first)
    first_in.wait(timeout=10)
    writer = _started(exclusive)
    time.sleep(0.2)
    late = _started(late_shared)
    time.sleep(0.2)
    assert order == []
    release.set()
    for thread in (holder, writer, late):
        thread.join(timeout=10)
    assert order == ["exclusive", "late shared"]


def test_keyed_locks_serialize_one_key_and_forget_it_afterwards():
    locks = KeyedLocks()
    with locks("a"):
        other = threading.Event()

        def take_b():
            with locks("b"):
                other.set()

        _started(take_b).join(timeout=10)
        assert other.is_set(), "another key is not blocked"
        assert len(locks) == 1
    assert len(locks) == 0
