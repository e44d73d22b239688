"""Locator: find which data servers hold which shards of an object, over RabbitMQ.

One reply queue per process and a correlation id per request (BOOK W2).  Every live data
server answers, so a locate ends as soon as all shards are found or all live servers have
answered, and waits LOCATE_TIMEOUT only for a server that died without telling (BOOK W1); such
a server is dropped from the registry at once (W3).

:meth:`Locator.locate_copies` waits for every live server instead, and tells every server
holding a copy of each shard (a server that was away may still hold a shard rebuilt elsewhere
meanwhile): the object scanner verifies them all and keeps one.

Complete answers (every shard found) are cached for LOCATION_TTL seconds, so reading an
object does not cost every data server a message; a reader that finds a cached location
wrong calls :meth:`Locator.forget` and locates again.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict

from lib import metrics
from lib.config import Config
from lib.errors import NotEnoughDataServers
from lib.hashing import quote_hash
from lib.messages import LocateReply, LocateRequest, MalformedMessage
from lib.rabbitmq import Bus, Message
from lib.registry import DataServerRegistry
from lib.rs.params import ALL_SHARDS

log = logging.getLogger(__name__)

#: Seconds a complete locate answer is reused, and how many answers are kept.
LOCATION_TTL = 30.0
LOCATION_CACHE_SIZE = 65536
_CACHE_HIT = metrics.LOCATION_CACHE.labels("hit")
_CACHE_MISS = metrics.LOCATION_CACHE.labels("miss")


class _Pending:
    def __init__(self, expected: set[str], every_copy: bool):
        self.expected = expected
        self.every_copy = every_copy
        self.answered: set[str] = set()
        #: shard index -> the servers holding it, in the order they answered.
        self.copies: dict[int, list[str]] = {}
        self.done = threading.Event()


class Locator:
    def __init__(self, bus: Bus, config: Config, registry: DataServerRegistry):
        self._bus = bus
        self._config = config
        self._registry = registry
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._replies = bus.subscribe(None, self._on_reply)
        self._cache: OrderedDict[str, tuple[float, dict[int, str]]] = OrderedDict()

    def _on_reply(self, message: Message) -> None:
        try:
            reply = LocateReply.from_json(message.body)
        except MalformedMessage as exc:
            log.warning("dropped locate reply: %s", exc)
            return
        with self._lock:
            pending = self._pending.get(message.correlation_id or "")
            if pending is None:
                return                   # late reply to a finished locate
            pending.answered.add(reply.addr)
            for i in reply.ids:
                if i < ALL_SHARDS:
                    pending.copies.setdefault(i, []).append(reply.addr)
            found_all = not pending.every_copy and len(pending.copies) >= ALL_SHARDS
            if found_all or pending.expected <= pending.answered:
                pending.done.set()

    def locate(self, hash_: str, fresh: bool = False) -> dict[int, str]:
        """Shard index -> data server address for every shard found (maybe none).

        :param fresh: ask the data servers even when a cached answer exists.
        """
        if not fresh:
            cached = self.cached(hash_)
            if cached is not None:
                _CACHE_HIT.inc()
                return cached
            _CACHE_MISS.inc()
        copies = self._broadcast(hash_, every_copy=False)
        shards = {i: holders[0] for i, holders in copies.items()}
        self.remember(hash_, shards)
        return shards

    def locate_copies(self, hash_: str) -> dict[int, list[str]]:
        """Shard index -> every live data server holding a copy of it (never cached)."""
        return self._broadcast(hash_, every_copy=True)

    def remember(self, hash_: str, shards: dict[int, str]) -> None:
        """Cache a complete answer (from a locate, or from the PUT that placed the shards)."""
        if len(shards) < ALL_SHARDS:
            return
        with self._lock:
            self._cache[hash_] = (time.monotonic(), dict(shards))
            self._cache.move_to_end(hash_)
            while len(self._cache) > LOCATION_CACHE_SIZE:
                self._cache.popitem(last=False)

    def forget(self, hash_: str) -> None:
        """Drop a cached answer that turned out to be wrong."""
        with self._lock:
            self._cache.pop(hash_, None)

    def cached(self, hash_: str) -> dict[int, str] | None:
        """The cached answer for ``hash_`` while it is young and its servers live, or None."""
        with self._lock:
            entry = self._cache.get(hash_)
        if entry is None:
            return None
        stamp, shards = entry
        live = set(self._registry.live())
        if time.monotonic() - stamp > LOCATION_TTL or not set(shards.values()) <= live:
            self.forget(hash_)
            return None
        return dict(shards)

    def _broadcast(self, hash_: str, every_copy: bool) -> dict[int, list[str]]:
        reply_queue = self._bus.queue_name(self._replies)
        if reply_queue is None:
            raise NotEnoughDataServers("not connected to RabbitMQ: cannot locate objects")
        expected = set(self._registry.live())
        if not expected:
            return {}
        correlation_id = uuid.uuid4().hex
        pending = _Pending(expected, every_copy)
        with self._lock:
            self._pending[correlation_id] = pending
        try:
            started = time.monotonic()
            self._bus.publish(self._config.data_exchange, "",
                              LocateRequest(quote_hash(hash_)).to_json(),
                              reply_to=reply_queue, correlation_id=correlation_id)
            answered = pending.done.wait(self._config.locate_timeout)
            metrics.LOCATE_SECONDS.observe(time.monotonic() - started)
            if not answered:
                silent = pending.expected - pending.answered
                log.warning("locate %s: no answer from %s in %.1fs", hash_, sorted(silent),
                            time.monotonic() - started)
                for address in silent:
                    self._registry.forget(address, "it did not answer a locate")
        finally:
            with self._lock:
                del self._pending[correlation_id]
        return pending.copies            # no reply changes it once it left _pending
