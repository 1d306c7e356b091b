"""Process-level locks: keyed by a string (an instance id, an image id), and shared/exclusive."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class KeyedLocks:
    """One ``threading.Lock`` per key, created on demand and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, list] = {}  # key -> [lock, users]

    @contextlib.contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]

    def __len__(self) -> int:
        with self._guard:
            return len(self._locks)


class SharedExclusiveLock:
    """Many holders in shared mode, or one in exclusive mode; a waiting exclusive holder goes
    before new shared ones. The exclusive holder's thread may take shared mode again inside."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._shared = 0
        self._owner: int | None = None  # the thread holding exclusive mode
        self._waiting = 0  # threads waiting for exclusive mode

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        if self._owner == threading.get_ident():
            yield
            return
        with self._condition:
            self._condition.wait_for(lambda: self._owner is None and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._condition:
                self._shared -= 1
                self._condition.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._condition:
            self._waiting += 1
            self._condition.wait_for(lambda: self._owner is None and not self._shared)
            self._waiting -= 1
            self._owner = threading.get_ident()
        try:
            yield
        finally:
            with self._condition:
                self._owner = None
                self._condition.notify_all()
