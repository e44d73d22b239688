"""Deferred work on a durable RabbitMQ queue: the task message, the queues, the retry policy.

The api server and the maintenance scripts publish tasks; ``python -m scripts.worker`` runs
them (``lib/taskrunner.py``).  A task is a persistent JSON message on the durable queue
``TASK_QUEUE``, acknowledged only once it has run, so neither a worker crash nor a broker
restart loses it.  A task that fails is published again with its attempt counter raised to a
delay queue and comes back when its backoff expires; after ``TASK_MAX_ATTEMPTS`` tries it is
parked in the dead-letter queue for an operator::

    TASK_QUEUE ----> worker --ok--> ack
        ^              |
        |              '--failed n < max--> TASK_QUEUE.retry.<n>   (message expires after
        '---------------- dead-lettered back ----------'            RETRY_DELAY * 2**(n-1))
                       '--failed n = max, or malformed--> TASK_QUEUE.dead

One delay queue per attempt keeps every message in a queue the same age, so RabbitMQ's
per-message expiry (which only looks at the head of a queue) never holds a short delay
behind a long one.  This module knows no pika: the AMQP side is ``lib/rabbitmq.py``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable

from lib.errors import InvalidHash
from lib.hashing import validate_hash
from lib.rabbitmq import Bus, Outgoing

log = logging.getLogger(__name__)

KINDS = ("repair", "gc", "stored", "prefetch")
#: Longest backoff, whatever the attempt (seconds).
MAX_BACKOFF = 3600.0


class MalformedTask(ValueError):
    """A task message we cannot read; it goes straight to the dead-letter queue."""


class PermanentFailure(Exception):
    """A task that can never succeed: dead-letter it now instead of retrying."""


@dataclasses.dataclass(frozen=True)
class Task:
    """One unit of deferred work.

    * ``repair``: rebuild missing shards of ``hash`` (``size`` bytes); ``damaged`` maps shard
      index -> address of copies that failed a read, to be retired first.
    * ``gc``: collect the shards of ``hash`` into garbage/ if no version references it any
      more, leaving shards younger than ``grace`` seconds alone.
    * ``stored``: version ``version`` of ``name`` (``hash``, ``size``) was stored.
    * ``prefetch``: store key ``name`` of ``bucket`` from the bucket's origin unless it is
      there (``lib/objects/prefetch.py``); ``job`` names the key record its state goes to.
    """

    kind: str
    hash: str
    size: int = 0
    damaged: dict[int, str] = dataclasses.field(default_factory=dict)
    name: str = ""
    version: int = 0
    bucket: str = ""
    version_id: str = ""
    grace: float = 0.0
    attempt: int = 0
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    created: float = dataclasses.field(default_factory=time.time)
    #: Why the last attempt failed (set on retried and dead tasks).
    error: str = ""
    job: str = ""

    @classmethod
    def repair(cls, hash_: str, size: int, damaged: dict[int, str] | None = None) -> "Task":
        return cls("repair", hash_, size=size, damaged=dict(damaged or {}))

    @classmethod
    def gc(cls, hash_: str, grace: float) -> "Task":
        return cls("gc", hash_, grace=grace)

    @classmethod
    def stored(cls, name: str, version: int, hash_: str, size: int, bucket: str = "",
               version_id: str = "") -> "Task":
        return cls("stored", hash_, size=size, name=name, version=version, bucket=bucket,
                   version_id=version_id)

    @classmethod
    def prefetch(cls, bucket: str, key: str, job: str) -> "Task":
        return cls("prefetch", "", name=key, bucket=bucket, job=job)

    def to_dict(self) -> dict[str, object]:
        record: dict[str, object] = {"kind": self.kind, "id": self.id, "hash": self.hash,
                                     "attempt": self.attempt, "created": self.created}
        if self.kind in ("repair", "stored"):
            record["size"] = self.size
        if self.kind == "repair":
            record["damaged"] = {str(i): a for i, a in sorted(self.damaged.items())}
        if self.kind == "gc":
            record["grace"] = self.grace
        if self.kind == "stored":
            record.update(name=self.name, version=self.version, bucket=self.bucket,
                          version_id=self.version_id)
        if self.kind == "prefetch":
            record.update(name=self.name, bucket=self.bucket, job=self.job)
        if self.error:
            record["error"] = self.error
        return record

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode()

    @classmethod
    def from_json(cls, body: bytes) -> "Task":
        """Parse and validate; MalformedTask for anything we would have to guess at."""
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise MalformedTask(f"not JSON: {body[:100]!r}") from None
        if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
            raise MalformedTask(f"not a task: {body[:100]!r}")
        kind = raw["kind"]
        try:     # a stored multipart object has parts, no hash of its own
            hash_ = "" if kind in ("stored", "prefetch") and raw.get("hash") == "" else \
                validate_hash(raw.get("hash"))
        except InvalidHash as exc:
            raise MalformedTask(f"{kind} task: {exc}") from None
        fields: dict[str, object] = {
            "attempt": _number(raw, "attempt", int, 0),
            "created": _number(raw, "created", float, time.time()),
            "error": raw.get("error") if isinstance(raw.get("error"), str) else "",
        }
        if isinstance(raw.get("id"), str) and raw["id"]:
            fields["id"] = raw["id"]
        if kind in ("repair", "stored"):
            fields["size"] = _number(raw, "size", int, None)
        if kind == "repair":
            fields["damaged"] = _damaged(raw.get("damaged", {}))
        if kind == "gc":
            fields["grace"] = _number(raw, "grace", float, 0.0)
        if kind == "stored":
            if not isinstance(raw.get("name"), str) or not raw["name"]:
                raise MalformedTask(f"stored task without a name: {body[:100]!r}")
            fields["name"] = raw["name"]
            fields["version"] = _number(raw, "version", int, None)
            for key in ("bucket", "version_id"):
                if isinstance(raw.get(key), str):
                    fields[key] = raw[key]
            if fields["version"] < 1:
                raise MalformedTask(f"stored task with version {fields['version']}")
        if kind == "prefetch":
            for key in ("name", "bucket", "job"):
                if not isinstance(raw.get(key), str) or not raw[key]:
                    raise MalformedTask(f"prefetch task without a {key}: {body[:100]!r}")
                fields[key] = raw[key]
        return cls(kind, hash_, **fields)  # type: ignore[arg-type]

    def describe(self) -> str:
        if self.kind == "stored":
            return f"stored {self.name!r} v{self.version} ({self.hash})"
        if self.kind == "prefetch":
            return f"prefetch {self.bucket}/{self.name!r}"
        return f"{self.kind} {self.hash}"


def _number(raw: dict, key: str, kind: type, default):
    value = raw.get(key, default)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (kind is int and not isinstance(value, int)) or value < 0:
        raise MalformedTask(f"task field {key!r} must be a non-negative {kind.__name__}, "
                            f"got {value!r}")
    return kind(value)


def _damaged(value: object) -> dict[int, str]:
    if not isinstance(value, dict):
        raise MalformedTask(f"damaged must map shard index to address, got {value!r}")
    damaged = {}
    for key, address in value.items():
        if not str(key).isdigit() or not isinstance(address, str):
            raise MalformedTask(f"damaged must map shard index to address, got {value!r}")
        damaged[int(key)] = address
    return damaged


@dataclasses.dataclass(frozen=True)
class TaskQueues:
    """The queue names and the retry policy of one task queue."""

    name: str
    max_attempts: int = 5
    retry_delay: float = 5.0

    @classmethod
    def from_config(cls, config) -> "TaskQueues":
        return cls(config.task_queue, config.task_max_attempts, config.task_retry_delay)

    @property
    def dead(self) -> str:
        return f"{self.name}.dead"

    def retry(self, failures: int) -> str:
        return f"{self.name}.retry.{failures}"

    def backoff(self, failures: int) -> float:
        """Seconds before the retry that follows the ``failures``-th failure (1, 2, 4... x
        the retry delay)."""
        return min(self.retry_delay * 2 ** (failures - 1), MAX_BACKOFF)

    def declarations(self) -> list[tuple[str, dict | None]]:
        """Every queue with its arguments: the delay queues dead-letter expired messages
        back into the task queue through the default exchange."""
        back = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.name}
        return ([(self.name, None), (self.dead, None)]
                + [(self.retry(n), back) for n in range(1, self.max_attempts)])

    def all_names(self, at_least: int = 20) -> list[str]:
        """Names to delete when a test cluster is torn down, whatever attempts it used."""
        retries = max(self.max_attempts, at_least)
        return [self.name, self.dead] + [self.retry(n) for n in range(1, retries)]

    def process(self, body: bytes, run: Callable[[Task], None]) -> list[Outgoing]:
        """Run one message; return what to publish before it is acked: nothing on success,
        the task again to its delay queue after a failure, or to the dead-letter queue."""
        try:
            task = Task.from_json(body)
        except MalformedTask as exc:
            log.error("malformed task sent to %s: %s", self.dead, exc)
            record = {"error": f"malformed: {exc}", "body": body.decode("utf-8", "replace"),
                      "failed": time.time()}
            return [Outgoing(self.dead, json.dumps(record).encode())]
        started = time.monotonic()
        try:
            run(task)
        except PermanentFailure as exc:
            return [self._dead(task, f"permanent failure: {exc}")]
        except Exception as exc:
            return [self._after_failure(task, f"{type(exc).__name__}: {exc}")]
        # One "stored" event per PUT: the api server's log already has that line.
        log.log(logging.DEBUG if task.kind == "stored" else logging.INFO,
                "task %s %s done in %.2fs", task.id, task.describe(), time.monotonic() - started)
        return []

    def _after_failure(self, task: Task, error: str) -> Outgoing:
        failures = task.attempt + 1
        if failures >= self.max_attempts:
            return self._dead(task, error)
        delay = self.backoff(failures)
        log.warning("task %s %s failed (attempt %d of %d): %s; retrying in %.1fs",
                    task.id, task.describe(), failures, self.max_attempts, error, delay)
        again = dataclasses.replace(task, attempt=failures, error=error)
        return Outgoing(self.retry(failures), again.to_json(), expiration=delay)

    def _dead(self, task: Task, error: str) -> Outgoing:
        failures = task.attempt + 1
        log.error("task %s %s failed for good after %d attempt(s): %s; parked in %s",
                  task.id, task.describe(), failures, error, self.dead)
        return Outgoing(self.dead, dataclasses.replace(task, attempt=failures,
                                                       error=error).to_json())

    def revive(self, body: bytes) -> list[Outgoing]:
        """A dead task, back to the task queue with a fresh attempt count (operator's
        requeue); a malformed one stays dead."""
        try:
            task = Task.from_json(body)
        except MalformedTask:
            return [Outgoing(self.dead, body)]
        return [Outgoing(self.name, dataclasses.replace(task, attempt=0, error="").to_json())]


class TaskPublisher:
    """Publish tasks from a process that already has a :class:`Bus` (the api server).

    The bus hands the message to its own thread, so a request never waits on the broker;
    ``publish`` answers False when the bus is not connected, and the caller falls back (as it
    may when :meth:`has_worker` says nobody consumes the queue right now).  The queue is
    declared by the workers, never here: until a worker has run, the broker drops what is
    published to it, and a cluster without workers accumulates nothing.
    """

    #: Seconds during which a second task with the same ``dedup`` key is not published
    #: (every GET of a degraded object asks for its repair).
    DEDUP_WINDOW = 10.0

    def __init__(self, bus: Bus, queues: TaskQueues, check_interval: float = 5.0,
                 clock: Callable[[], float] = time.monotonic):
        """:param check_interval: seconds between checks that a worker consumes the queue."""
        self._bus = bus
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: dict[str, float] = {}
        self.queues = queues
        bus.watch_queue(queues.name, check_interval)

    def has_worker(self) -> bool:
        """Whether a worker consumed the task queue at the bus's last check."""
        return (self._bus.queue_consumers(self.queues.name) or 0) > 0

    def publish(self, task: Task, dedup: str | None = None) -> bool:
        """Queue ``task``; True also when an equal one (same ``dedup`` key) was just queued."""
        if dedup is not None and self._seen_recently(dedup):
            return True
        sent = self._bus.publish("", self.queues.name, task.to_json(), persistent=True)
        if not sent and dedup is not None:
            with self._lock:
                self._recent.pop(dedup, None)
        return sent

    def _seen_recently(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            if now - self._recent.get(key, -self.DEDUP_WINDOW) < self.DEDUP_WINDOW:
                return True
            if len(self._recent) > 10_000:
                self._recent = {k: t for k, t in self._recent.items()
                                if now - t < self.DEDUP_WINDOW}
            self._recent[key] = now
            return False
