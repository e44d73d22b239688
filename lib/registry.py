"""DataServerRegistry: which data servers are alive, as heartbeats and failures tell.

A server is live from its latest heartbeat until ``ttl`` seconds of silence (the book's 10 s),
until it announces its departure, or until a shard upload to it gets no answer (``forget``):
then it is skipped at once (BOOK W3) and re-admitted by its next heartbeat.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable


log = logging.getLogger(__name__)


class DataServerRegistry:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        #: The latest heartbeat of every server ever seen, live or not (the management API
        #: lists the ones that went silent as down).
        self._heard: dict[str, float] = {}
        self._random = random.SystemRandom()

    def seen(self, address: str) -> None:
        with self._lock:
            if address not in self._seen:
                log.info("data server %s joined", address)
            self._seen[address] = self._heard[address] = self._clock()

    def forget(self, address: str, why: str) -> None:
        with self._lock:
            if self._seen.pop(address, None) is not None:
                log.warning("data server %s dropped: %s", address, why)

    def live(self) -> list[str]:
        now = self._clock()
        with self._lock:
            expired = [a for a, t in self._seen.items() if now - t > self._ttl]
            for address in expired:
                del self._seen[address]
                log.warning("data server %s expired: no heartbeat for %.0fs", address, self._ttl)
            return sorted(self._seen)

    def heard(self) -> dict[str, float]:
        """Seconds since the latest heartbeat of every server ever seen, live or not."""
        now = self._clock()
        with self._lock:
            return {a: now - t for a, t in self._heard.items()}

    def choose(self, n: int, exclude: Iterable[str] = ()) -> list[str]:
        """Up to ``n`` distinct random live servers not in ``exclude``."""
        excluded = set(exclude)
        candidates = [a for a in self.live() if a not in excluded]
        self._random.shuffle(candidates)
        return candidates[:n]
