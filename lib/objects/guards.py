"""What keeps a bucket's origin from being asked too often: one fetch per key at a time
(single flight), a negative cache of the keys it answered 404 for, and a circuit breaker per
origin that stops asking one that keeps failing.  All per process, each behind its own lock;
``lib/objects/origin.py`` uses them.  Time comes from an injected ``clock``.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from lib.errors import OriginCircuitOpen

#: Most keys remembered as missing at an origin (the oldest go first).
NEGATIVE_ENTRIES = 100_000


class NegativeCache:
    """Keys an origin answered 404 for, until their entry expires."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._until: dict[tuple[str, str], float] = {}

    def add(self, bucket: str, key: str) -> None:
        with self._lock:
            if len(self._until) >= NEGATIVE_ENTRIES:
                self._until.pop(next(iter(self._until)))
            self._until[(bucket, key)] = self._clock() + self._ttl

    def hit(self, bucket: str, key: str) -> bool:
        with self._lock:
            until = self._until.get((bucket, key))
            if until is None:
                return False
            if self._clock() < until:
                return True
            del self._until[(bucket, key)]
            return False

    def forget(self, bucket: str, key: str) -> None:
        with self._lock:
            self._until.pop((bucket, key), None)


class Breaker:
    """A circuit breaker per origin: open after ``failures`` consecutive failures, for
    ``reset`` seconds; then one trial request at a time until one succeeds."""

    def __init__(self, failures: int, reset: float, clock: Callable[[], float] = time.monotonic):
        self._failures = failures
        self._reset = reset
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[int, float]] = {}    # origin -> (failures, opened at)

    def check(self, origin: str) -> None:
        """OriginCircuitOpen while the origin's circuit is open."""
        with self._lock:
            count, opened = self._state.get(origin, (0, 0.0))
            if count < self._failures:
                return
            now = self._clock()
            if now - opened < self._reset:
                raise OriginCircuitOpen(
                    f"origin {origin} failed {count} times in a row; not asked again for "
                    f"{self._reset - (now - opened):.0f}s (ORIGIN_BREAKER_RESET)")
            self._state[origin] = (count, now)       # half open: this request is the trial

    def succeeded(self, origin: str) -> None:
        with self._lock:
            self._state.pop(origin, None)

    def failed(self, origin: str) -> None:
        with self._lock:
            count, _ = self._state.get(origin, (0, 0.0))
            self._state[origin] = (count + 1, self._clock())


class Flight:
    """One fetch of one key in this process; followers wait for :attr:`done`."""

    def __init__(self):
        self.done = threading.Event()
        self.error: BaseException | None = None


class Flights:
    """Single flight: the first miss of a key leads, later ones follow until it lands."""

    def __init__(self):
        self._lock = threading.Lock()
        self._flights: dict[tuple[str, str], Flight] = {}

    def join(self, bucket: str, key: str) -> tuple[Flight, bool]:
        """The key's flight, and whether the caller leads it (and must :meth:`land` it)."""
        with self._lock:
            flight = self._flights.get((bucket, key))
            if flight is not None:
                return flight, False
            flight = self._flights[(bucket, key)] = Flight()
            return flight, True

    def land(self, bucket: str, key: str, flight: Flight,
             error: BaseException | None = None) -> None:
        with self._lock:
            if self._flights.get((bucket, key)) is flight:
                del self._flights[(bucket, key)]
        flight.error = error
        flight.done.set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._flights)
