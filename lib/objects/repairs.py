"""Repairs requested by degraded GETs and by PUTs below full width, without making the client
wait.

:class:`Repairs` is what the object layer calls: a repair goes to the durable task queue
(``lib/tasks.py``) when a worker consumes it, and otherwise to the :class:`Repairer` here, a
small pool of threads (one repair per object while it is pending) that re-locates the object
and rebuilds what is still missing.  The repair itself is :func:`lib.rs.repair.repair_object`,
shared with the task worker and the object scanner.

Every repair that finishes, done or failed, is appended to the cluster's repair log in the
metadata store (:func:`record_repair`, also called by the task worker and the object scanner),
which the management API and the console read.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from lib.errors import NotEnoughDataServers, ObjectStoreError
from lib.hashing import quote_hash
from lib.locator import LOCATION_TTL, Locator
from lib.metadata import MetadataStore, RepairRecord
from lib.objectstream import DataServerClient
from lib.registry import DataServerRegistry
from lib.rs.repair import repair_object
from lib.tasks import Task, TaskPublisher

log = logging.getLogger(__name__)

#: Repairs running at once, and waiting at most (beyond that the scanner finds them).
REPAIR_THREADS = 2
MAX_PENDING = 1000
#: Background checks of unread shards allowed per second (a token bucket).
UNREAD_CHECKS_PER_SECOND = 20


def record_repair(metadata: MetadataStore | None, hash_: str, shards, error: str | None,
                  by: str) -> None:
    """Append a finished repair to the cluster's repair log (``error`` None: done).  Best
    effort: a store that fails is logged, never the repair's failure."""
    if metadata is None:
        return
    try:
        metadata.record_repair(RepairRecord.finished(hash_, shards, error, by))
    except Exception as exc:         # MetadataError, or anything else: the repair stands
        log.warning("repair of %s not recorded in the repair log: %s", hash_, exc)


class Repairer:
    def __init__(self, client: DataServerClient, registry: DataServerRegistry, locator: Locator,
                 metadata: MetadataStore | None = None, by: str = ""):
        self._client = client
        self._registry = registry
        self._locator = locator
        #: Where finished repairs are recorded, and as whose (this api server's address).
        self._metadata = metadata
        self._by = by
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._checked: dict[str, float] = {}
        self._check_budget = float(UNREAD_CHECKS_PER_SECOND)
        self._budget_time = time.monotonic()
        self._pool = ThreadPoolExecutor(REPAIR_THREADS, thread_name_prefix="repair")
        #: Where lost shards found by :meth:`check_unread` are reported: the api server sets
        #: its ``request_repair`` (task queue first); alone, the Repairer rebuilds them itself.
        self.report = self._report_locally

    def request(self, hash_: str, size: int, damaged: dict[int, str] | None = None) -> bool:
        """Queue a repair of ``hash_``; False when it is already queued or the queue is full.

        :param damaged: shard index -> address of copies that failed a read; they are rebuilt
            elsewhere even if their server still lists them, then moved to its garbage.
        """
        with self._lock:
            if hash_ in self._pending or len(self._pending) >= MAX_PENDING:
                return False
            self._pending.add(hash_)
        self._pool.submit(self._repair, hash_, size, dict(damaged or {}))
        return True

    def check_unread(self, hash_: str, size: int, shards: dict[int, str]) -> None:
        """After a read served from cached locations: make sure the shards it did not need
        are still there (HEAD each, in the background), so a lost parity shard is rebuilt
        like a lost data shard.  Best effort, with a bounded cost: once per object per
        LOCATION_TTL and at most UNREAD_CHECKS_PER_SECOND; the object scanner is the backstop.
        """
        now = time.monotonic()
        with self._lock:
            if now - self._checked.get(hash_, -LOCATION_TTL) < LOCATION_TTL:
                return
            self._check_budget = min(UNREAD_CHECKS_PER_SECOND, self._check_budget + (
                now - self._budget_time) * UNREAD_CHECKS_PER_SECOND)
            self._budget_time = now
            if self._check_budget < 1:
                return
            self._check_budget -= 1
            if len(self._checked) >= MAX_PENDING:
                self._checked = {h: t for h, t in self._checked.items()
                                 if now - t < LOCATION_TTL}
            self._checked[hash_] = now
        self._pool.submit(self._check_unread, hash_, size, dict(shards))

    def _check_unread(self, hash_: str, size: int, shards: dict[int, str]) -> None:
        quoted = quote_hash(hash_)
        try:
            gone = {i: a for i, a in shards.items()
                    if not self._client.has_shard(a, f"{quoted}.{i}")}
        except ObjectStoreError as exc:
            log.warning("could not check the unread shards of %s: %s", hash_, exc)
            gone = shards
        if gone:
            log.warning("object %s lost shards %s", hash_, sorted(gone))
            self.report(hash_, size, [], gone)

    def _report_locally(self, hash_: str, size: int, missing: list[int],
                        damaged: dict[int, str]) -> None:
        self._locator.forget(hash_)
        self.request(hash_, size, damaged)

    def _repair(self, hash_: str, size: int, damaged: dict[int, str]) -> None:
        error: str | None = "interrupted"
        rebuilt: dict[int, str] = {}
        try:
            rebuilt = repair_object(self._client, self._registry, self._locator, hash_, size,
                                    damaged)
            error = None
        except NotEnoughDataServers as exc:
            log.error("repair of %s failed: %s", hash_, exc)
            error = str(exc)
        except Exception as exc:
            log.exception("repair of %s failed", hash_)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._pending.discard(hash_)
        record_repair(self._metadata, hash_, damaged if error else rebuilt, error, self._by)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)



class Repairs:
    """Where repair requests go: the task queue first, this process's Repairer otherwise."""

    def __init__(self, client: DataServerClient, registry: DataServerRegistry, locator: Locator,
                 tasks: TaskPublisher | None = None, metadata: MetadataStore | None = None,
                 by: str = ""):
        self._locator = locator
        self._tasks = tasks
        self.local = Repairer(client, registry, locator, metadata, by)
        self.local.report = self.request

    def request(self, hash_: str, size: int, missing: list[int],
                damaged: dict[int, str] | None = None) -> None:
        """Have missing or damaged shards of content ``hash_`` rebuilt."""
        log.warning("object %s (%d bytes) needs shards %s rebuilt", hash_, size,
                    sorted(set(missing) | set(damaged or {})))
        self._locator.forget(hash_)
        if self._tasks is not None and self._tasks.has_worker():
            if self._tasks.publish(Task.repair(hash_, size, damaged), dedup=hash_):
                return
            log.warning("task queue unreachable: repairing %s in this process", hash_)
        self.local.request(hash_, size, damaged)

    def check_unread(self, hash_: str, size: int, shards: dict[int, str]) -> None:
        self.local.check_unread(hash_, size, shards)

    def close(self) -> None:
        self.local.close()
