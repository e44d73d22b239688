"""Task messages, the retry policy, the api's publish-or-fall-back choice, and the pure parts of
the maintenance tools (orphan decisions, shard verification, scan pacing)."""
from __future__ import annotations

import dataclasses
import json
import os
import time

import pytest

from lib.objects.repairs import Repairs
from lib.collector import OrphanCollector, local_shards, purge_local_garbage
from lib.objectstream import ShardInfo
from lib.errors import (CorruptShard, DataServerError, NotEnoughDataServers, ObjectNotFound,
                        Refused)
from lib.hashing import quote_hash, sha256_b64
from lib.metadata import MetadataError
from lib.rs import layout
from lib.rs.codec import get_codec
from lib.rs.duplicates import choose_keepers, collect_extra_copies, extra_copies
from lib.rs.params import ALL_SHARDS, BLOCK_SIZE
from lib.rs.verify import check_object
from lib.tasks import MAX_BACKOFF, MalformedTask, PermanentFailure, Task, TaskPublisher, TaskQueues
from scripts.object_scanner import Pacer

HASH = sha256_b64(b"x")
OTHER = sha256_b64(b"y")


# -- messages ---------------------------------------------------------------------------------

@pytest.mark.parametrize("task", [
    Task.repair(HASH, 123, {1: "127.0.1.2:1", 4: "127.0.1.5:1"}),
    Task.gc(HASH, 3600.0),
    Task.stored("dir/name with spaces é", 7, HASH, 42),
    Task.prefetch("bucket", "dir/key é", "job/0001"),
])
def test_task_round_trip(task):
    again = Task.from_json(task.to_json())
    assert again == task
    assert json.loads(task.to_json())["kind"] == task.kind


@pytest.mark.parametrize("body", [
    b"not json",
    b'"a string"',
    b'{"kind": "explode", "hash": "' + HASH.encode() + b'"}',
    b'{"kind": "gc", "hash": "not-a-hash"}',
    b'{"kind": "repair", "hash": "' + HASH.encode() + b'"}',                  # no size
    b'{"kind": "repair", "hash": "' + HASH.encode() + b'", "size": -1}',
    b'{"kind": "repair", "hash": "' + HASH.encode() + b'", "size": 1, "damaged": {"x": 1}}',
    b'{"kind": "stored", "hash": "' + HASH.encode() + b'", "size": 1, "version": 1}',
    b'{"kind": "stored", "hash": "' + HASH.encode() + b'", "size": 1, "name": "n", '
    b'"version": 0}',
    b'{"kind": "gc", "hash": "' + HASH.encode() + b'", "attempt": true}',
    b'{"kind": "prefetch", "hash": "", "name": "k", "bucket": "b"}',            # no job
])
def test_malformed_tasks_are_refused(body):
    with pytest.raises(MalformedTask):
        Task.from_json(body)


# -- retry policy -----------------------------------------------------------------------------

QUEUES = TaskQueues("q", max_attempts=4, retry_delay=0.5)


def test_queue_names_and_arguments():
    names = [name for name, _ in QUEUES.declarations()]
    assert names == ["q", "q.dead", "q.retry.1", "q.retry.2", "q.retry.3"]
    for name, arguments in QUEUES.declarations()[2:]:
        assert arguments == {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "q"}
    assert set(names) <= set(QUEUES.all_names())


def test_backoff_doubles_and_is_capped():
    assert [QUEUES.backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert TaskQueues("q", retry_delay=10).backoff(30) == MAX_BACKOFF


def test_success_publishes_nothing():
    ran = []
    assert QUEUES.process(Task.gc(HASH, 0).to_json(), ran.append) == []
    assert ran[0].hash == HASH


def _fail(_task):
    raise DataServerError("boom", "127.0.1.1:1")


def test_failures_are_retried_with_backoff_then_dead_lettered():
    body = Task.repair(HASH, 5).to_json()
    delays = []
    for attempt in range(1, QUEUES.max_attempts):
        (out,) = QUEUES.process(body, _fail)
        assert out.queue == f"q.retry.{attempt}"
        assert out.expiration == QUEUES.backoff(attempt)
        delays.append(out.expiration)
        task = Task.from_json(out.body)
        assert task.attempt == attempt and "boom" in task.error
        body = out.body                       # what comes back when the delay expires
    assert delays == sorted(delays) and len(set(delays)) == len(delays)
    (dead,) = QUEUES.process(body, _fail)
    assert dead.queue == "q.dead" and dead.expiration is None
    parked = Task.from_json(dead.body)
    assert parked.attempt == QUEUES.max_attempts and "boom" in parked.error


def test_task_id_survives_retries():
    task = Task.stored("n", 1, HASH, 1)
    (out,) = QUEUES.process(task.to_json(), _fail)
    assert Task.from_json(out.body).id == task.id


def refuse(_task):
    raise PermanentFailure("never")


def test_permanent_failure_and_malformed_go_straight_to_dead_letters():
    (out,) = QUEUES.process(Task.gc(HASH, 0).to_json(), refuse)
    assert out.queue == "q.dead" and "never" in Task.from_json(out.body).error
    (out,) = QUEUES.process(b"\xff garbage", refuse)
    assert out.queue == "q.dead"
    record = json.loads(out.body)
    assert "malformed" in record["error"] and "garbage" in record["body"]


def test_revive_resets_attempts_and_keeps_malformed_dead():
    dead = Task.from_json(QUEUES.process(Task.gc(HASH, 1).to_json(), refuse)[0].body)
    (out,) = QUEUES.revive(dead.to_json())
    assert out.queue == "q" and Task.from_json(out.body).attempt == 0
    assert QUEUES.revive(b"junk")[0].queue == "q.dead"


# -- publishing from the api server -----------------------------------------------------------

class FakeBus:
    def __init__(self, connected=True, consumers=1):
        self.sent = []
        self.connected = connected
        self.watched = []
        self._consumers = consumers          # None: the queue does not exist

    def watch_queue(self, name, check_interval=5.0):
        self.watched.append(name)

    def queue_consumers(self, name):
        return self._consumers if self.connected else None

    def publish(self, exchange, routing_key, body, persistent=False, **_):
        if not self.connected:
            return False
        self.sent.append((exchange, routing_key, body, persistent))
        return True


def test_publisher_declares_sends_persistently_and_dedups():
    now = [100.0]
    bus = FakeBus()
    publisher = TaskPublisher(bus, TaskQueues("tq"), clock=lambda: now[0])
    assert bus.watched == ["tq"]
    assert publisher.publish(Task.repair(HASH, 1), dedup=HASH)
    assert publisher.publish(Task.repair(HASH, 1), dedup=HASH)      # swallowed
    assert publisher.publish(Task.repair(OTHER, 1), dedup=OTHER)
    assert len(bus.sent) == 2 and all(s[:2] == ("", "tq") and s[3] for s in bus.sent)
    now[0] += TaskPublisher.DEDUP_WINDOW + 1
    assert publisher.publish(Task.repair(HASH, 1), dedup=HASH)
    assert len(bus.sent) == 3


def test_a_queue_no_worker_declared_has_no_worker():
    publisher = TaskPublisher(FakeBus(consumers=None), TaskQueues("tq"))
    assert not publisher.has_worker()


class FakeRepairer:
    def __init__(self):
        self.requested = []

    def request(self, hash_, size, damaged=None):
        self.requested.append(hash_)


class FakeLocator:
    def forget(self, hash_):
        pass


def _repairs(bus):
    repairs = Repairs(client=None, registry=None, locator=FakeLocator(),
                      tasks=TaskPublisher(bus, TaskQueues("tq")))
    repairs.local = FakeRepairer()
    return repairs


@pytest.mark.parametrize("connected, consumers, queued", [
    (True, 1, True),       # a worker consumes the queue: the task goes there
    (True, 0, False),      # nobody would run it now: repair in process
    (True, None, False),   # no worker ever declared the queue: repair in process
    (False, 1, False),     # broker unreachable: repair in process
])
def test_repairs_go_to_the_queue_or_fall_back_in_process(connected, consumers, queued):
    bus = FakeBus(connected, consumers)
    repairs = _repairs(bus)
    repairs.request(HASH, 10, [2], {1: "127.0.1.1:1"})
    assert bool(bus.sent) == queued
    assert repairs.local.requested == ([] if queued else [HASH])
    if queued:
        task = Task.from_json(bus.sent[0][2])
        assert task.kind == "repair" and task.damaged == {1: "127.0.1.1:1"}


class RecordingMetadata:
    """has_hash for every hash, and a repair log that may fail."""

    def __init__(self, broken=False):
        self.recorded = []
        self.broken = broken

    def has_hash(self, hash_):
        return True

    def record_repair(self, repair):
        if self.broken:
            raise MetadataError("the store is away")
        self.recorded.append(repair)
        return repair


class FakeCluster:
    client = registry = locator = None


def test_the_worker_records_a_repair_done_and_a_repair_failed_on_its_last_attempt(
        monkeypatch, caplog):
    from lib import taskrunner
    from lib.config import Config

    outcomes = iter([{3: "127.0.1.4:1"}, NotEnoughDataServers("only shards [0] are left")] * 3)

    def repair_object(client, registry, locator, hash_, size, damaged):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(taskrunner, "repair_object", repair_object)
    metadata = RecordingMetadata()
    runner = taskrunner.TaskRunner(Config(task_max_attempts=2), metadata, FakeCluster())
    runner.run(Task.repair(HASH, 10))
    with pytest.raises(NotEnoughDataServers):            # attempt 1 of 2: retried, pending
        runner.run(Task.repair(HASH, 10, {1: "127.0.1.2:1"}))
    assert [(r.outcome, r.shards, r.by) for r in metadata.recorded] == [("done", (3,), "worker")]
    runner.run(Task.repair(HASH, 10))
    with pytest.raises(NotEnoughDataServers):            # the last attempt: failed for good
        runner.run(dataclasses.replace(Task.repair(HASH, 10, {1: "127.0.1.2:1"}), attempt=1))
    failed = metadata.recorded[-1]
    assert (failed.outcome, failed.shards, failed.hash) == ("failed", (1,), HASH)
    assert failed.error == "NotEnoughDataServers: only shards [0] are left"
    metadata.broken = True                               # a failing log never fails a repair
    runner.run(Task.repair(HASH, 10))
    assert "not recorded in the repair log" in caplog.text


# -- orphan collection decisions --------------------------------------------------------------

class FakeMetadata:
    def __init__(self, referenced=(), broken=False):
        self.referenced = set(referenced)
        self.broken = broken
        self.asked = []

    def has_hash(self, hash_):
        self.asked.append(hash_)
        if self.broken:
            raise MetadataError("unrecognised hits.total 'lots'")
        return hash_ in self.referenced


class FakeMaintenance:
    def __init__(self):
        self.collected = []

    def collect(self, address, hash_, older_than):
        self.collected.append((address, hash_, older_than))
        return 2, 0


YOUNG, OLD, KEPT = sha256_b64(b"young"), sha256_b64(b"old"), sha256_b64(b"kept")


def test_orphan_collector_spares_young_and_referenced_objects():
    metadata, client = FakeMetadata(referenced={KEPT}), FakeMaintenance()
    collector = OrphanCollector(metadata, client, grace=60)
    collector.collect({
        "127.0.1.1:1": [ShardInfo(OLD, 0, 500), ShardInfo(OLD, 3, 400),
                        ShardInfo(YOUNG, 1, 500), ShardInfo(KEPT, 4, 900)],
        "127.0.1.2:1": [ShardInfo(OLD, 1, 500),
                        ShardInfo(YOUNG, 2, 5)],               # one shard within the grace
    })
    assert client.collected == [("127.0.1.1:1", OLD, 60), ("127.0.1.2:1", OLD, 60)]
    assert YOUNG not in metadata.asked                      # not even asked about
    report = collector.report
    assert (report.objects, report.orphans, report.young, report.referenced, report.moved) == \
        (3, 1, 1, 1, 4)


def test_orphan_collector_stops_at_a_metadata_error():
    client = FakeMaintenance()
    collector = OrphanCollector(FakeMetadata(broken=True), client, grace=0)
    with pytest.raises(MetadataError):
        collector.collect({"127.0.1.1:1": [ShardInfo(OLD, 0, 10)]})
    assert client.collected == []


def test_local_shards_and_garbage_purge(tmp_path):
    (tmp_path / "objects").mkdir()
    (tmp_path / "garbage").mkdir()
    slash = next(sha256_b64(bytes([i])) for i in range(256) if "/" in sha256_b64(bytes([i])))
    good = tmp_path / "objects" / f"{quote_hash(slash)}.3.{quote_hash(HASH)}"
    good.write_bytes(b"x")
    os.utime(good, (time.time() - 100, time.time() - 100))
    (tmp_path / "objects" / "README").write_text("not a shard")
    (tmp_path / "objects" / f"{quote_hash(HASH)}.x.{quote_hash(HASH)}").write_text("bad index")
    (shard,) = local_shards(tmp_path)
    assert shard.hash == slash and shard.index == 3 and 99 < shard.age < 200
    (tmp_path / "garbage" / "old").write_text("g")
    assert purge_local_garbage(tmp_path, 3600) == 0
    assert purge_local_garbage(tmp_path, 3600, now=time.time() + 7200) == 1
    assert list((tmp_path / "garbage").iterdir()) == []


# -- verifying every shard of an object -------------------------------------------------------

def encode_shards(data: bytes) -> list[bytes]:
    codec = get_codec()
    shards = [bytearray() for _ in range(ALL_SHARDS)]
    for start in range(0, len(data), BLOCK_SIZE):
        for i, fragment in enumerate(codec.encode(data[start:start + BLOCK_SIZE])):
            shards[i] += layout.seal(fragment)
    return [bytes(s) for s in shards]


class MemoryShard:
    def __init__(self, data: bytes, address: str = ""):
        self._data, self._pos = data, 0
        self.address = address

    def read(self, size: int) -> bytes:
        chunk = self._data[self._pos:self._pos + size]
        self._pos += len(chunk)
        return chunk

    def close(self):
        pass


class MemoryClient:
    """Shard ``i`` is ``shards[i]`` on any server, unless ``copies[(i, address)]`` says
    what that server holds."""

    def __init__(self, shards: dict[int, bytes], copies: dict | None = None):
        self.shards = shards
        self.copies = copies or {}

    def open_shards(self, ranges):
        return [self._open(*r) for r in ranges]

    def _open(self, address, quoted_name, first, last):
        index = int(quoted_name.rsplit(".", 1)[1])
        data = self.copies.get((index, address), self.shards.get(index))
        if data is None:
            return ObjectNotFound(f"{address}: no shard {index}")
        return MemoryShard(data[first:last + 1], address)


DATA = os.urandom(2 * BLOCK_SIZE + 1234)
SHARDS = encode_shards(DATA)
LOCATIONS = {i: f"127.0.1.{i + 1}:1" for i in range(ALL_SHARDS)}
COPIES = {i: [a] for i, a in LOCATIONS.items()}


def test_check_object_healthy():
    check = check_object(MemoryClient(dict(enumerate(SHARDS))), COPIES, sha256_b64(DATA),
                         len(DATA))
    assert check.healthy and check.content_ok and check.missing == []


def test_check_object_finds_missing_corrupt_and_short_shards():
    shards = dict(enumerate(SHARDS))
    flipped = bytearray(shards[1])
    flipped[layout.full_record_size() + 10] ^= 1          # block 1 of shard 1
    shards[1] = bytes(flipped)
    shards[5] = shards[5][:layout.full_record_size()]     # whole records missing at the end
    located = {i: a for i, a in COPIES.items() if i != 3}
    check = check_object(MemoryClient(shards), located, sha256_b64(DATA), len(DATA))
    assert check.damaged == {(1, LOCATIONS[1]), (5, LOCATIONS[5])}
    assert check.missing == [1, 3, 5]
    assert not check.healthy and not check.recoverable      # only 3 good shards left


def test_check_object_recoverable_and_content_verified():
    shards = dict(enumerate(SHARDS))
    del shards[0]
    located = {i: a for i, a in COPIES.items() if i != 2}
    check = check_object(MemoryClient(shards), located, sha256_b64(DATA), len(DATA))
    assert check.damaged == {(0, LOCATIONS[0])} and check.missing == [0, 2]
    assert check.recoverable and check.content_ok


def test_check_object_notices_content_that_is_not_its_hash():
    check = check_object(MemoryClient(dict(enumerate(SHARDS))), COPIES, HASH, len(DATA))
    assert check.content_ok is False and not check.healthy and not check.recoverable


def test_check_empty_object():
    empty = sha256_b64(b"")
    assert check_object(MemoryClient({}), COPIES, empty, 0).healthy
    assert check_object(MemoryClient({}), {0: ["a:1"]}, empty, 0).missing == [1, 2, 3, 4, 5]


def test_check_object_verifies_every_copy_of_a_shard():
    """A corrupt extra copy is found even though another copy of its shard is good; a
    good extra copy is reported good."""
    flipped = bytearray(SHARDS[2])
    flipped[-3] ^= 1
    copies = {**COPIES, 2: [LOCATIONS[2], "127.0.1.9:1"], 4: [LOCATIONS[4], "127.0.1.8:1"]}
    client = MemoryClient(dict(enumerate(SHARDS)), {(2, "127.0.1.9:1"): bytes(flipped)})
    check = check_object(client, copies, sha256_b64(DATA), len(DATA))
    assert check.damaged == {(2, "127.0.1.9:1")} and check.missing == []
    assert check.good[2] == [LOCATIONS[2]] and check.good[4] == copies[4]
    assert check.content_ok and check.recoverable and not check.healthy


# -- extra copies of a shard ------------------------------------------------------------------

def test_keepers_spread_over_servers_and_ties_go_the_same_way():
    good = {0: ["s1"], 1: ["s2"], 2: ["s2", "s3"], 3: ["s4", "s3"], 4: ["s5", "s6"]}
    keep = choose_keepers(good)
    assert keep == {0: "s1", 1: "s2", 2: "s3", 3: "s4", 4: "s5"}
    assert choose_keepers({i: list(reversed(h)) for i, h in good.items()}) == keep
    assert extra_copies(good, keep) == [(2, "s2"), (3, "s3"), (4, "s6")]


class CollectClient:
    def __init__(self, held: set[str]):
        self.held = held
        self.collected = []

    def has_shard(self, address, quoted_name):
        return address in self.held

    def collect(self, address, hash_, older_than, index=None):
        self.collected.append((index, address, older_than))
        return 1, 0


def test_extra_copies_go_only_while_the_kept_copy_is_there():
    client = CollectClient(held={"s1"})
    keep = {0: "s1", 1: "s2"}
    moved, kept = collect_extra_copies(client, HASH, keep, [(0, "s3"), (1, "s3")], 60.0)
    assert (moved, kept) == (1, 1)
    assert client.collected == [(0, "s3", 60.0)]     # shard 1's kept copy went: keep s3's


# -- scan pacing ------------------------------------------------------------------------------

def test_pacer_spaces_starts_by_the_rate():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        pacer.wait()
    assert now[0] == pytest.approx(1.0) and slept == [pytest.approx(0.25)] * 4
    now[0] += 10                                           # a slow object: no catching up
    pacer.wait()
    assert len(slept) == 4


def test_pacer_without_limit_never_sleeps():
    pacer = Pacer(0, clock=lambda: 0.0, sleep=lambda s: pytest.fail("slept"))
    for _ in range(3):
        pacer.wait()


class FlakyClient(MemoryClient):
    """Shard 0's server does not answer; shard 1's server answers with ``refusal``."""

    def __init__(self, shards, refusal):
        super().__init__(shards)
        self.refusal = refusal

    def _open(self, address, quoted_name, first, last):
        index = int(quoted_name.rsplit(".", 1)[1])
        if index == 0:
            return DataServerError("GET: ConnectionRefusedError(111)", address)
        if index == 1:
            return self.refusal
        return super()._open(address, quoted_name, first, last)


@pytest.mark.parametrize("refusal", [ObjectNotFound("no shard 1"),
                                     Refused("GET: 416 range not satisfiable", "a:1"),
                                     CorruptShard("record checksum mismatch")])
def test_a_read_reports_as_damaged_only_copies_shown_bad(refusal):
    """A GET's repair retires the copies it reports damaged, so a copy whose server merely
    did not answer (it may be fine) must not be among them."""
    from lib.rs.get import RSGetStream

    stream = RSGetStream(FlakyClient(dict(enumerate(SHARDS)), refusal), LOCATIONS,
                         sha256_b64(DATA), len(DATA))
    assert b"".join(stream) == DATA
    assert stream.failed == {0: LOCATIONS[0], 1: LOCATIONS[1]}
    assert stream.damaged == {1: LOCATIONS[1]}
