"""RSPutStream: stream records of an object's shards to data servers, then commit them.

One streaming ``POST /temp/<hash>.<i>`` per shard, each fed by its own thread through a small
bounded queue, so memory stays at a few blocks whatever the object size.  A data server that
refuses the connection, or fails within the first few records (they are kept and replayed),
is replaced by another live one at once; one that fails later is dropped, and the stream goes
on while at least ``quorum`` shards are alive.  Only a failure that shows a data server down
(:func:`counts_against_server`) takes it out of the registry's live servers: never a failure
of our own body source (the client hung up, its body ended short, we cut the upload), which
would otherwise blind the api server to every data server at once.  Two-phase commit is a
context manager::

    with RSPutStream(client, targets, hash, size, quorum, registry) as put:
        for block in blocks:
            put.write(block)
        put.finish()            # every shard uploaded (temp objects written and fsynced)
        ...verify the digest...
        put.commit()            # PUT /temp/<uuid> on every live shard
    # leaving the block without commit() deletes every temp object it created
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from lib.errors import DataServerError, NotEnoughDataServers, ObjectStoreError, SizeMismatch
from lib.hashing import quote_hash
from lib.objectstream import DataServerClient
from lib.registry import DataServerRegistry
from lib.rs import layout
from lib.rs.codec import get_codec

log = logging.getLogger(__name__)

#: Records buffered per shard between the encoder and the shard's sender.
QUEUE_DEPTH = 4
_END = None
_ABORT = b""      # makes the sender's body raise, so the connection is cut, not left short
#: Records a sender keeps so it can replay them to a replacement server when the first one
#: fails early (refused connection, stale keep-alive connection to a server just killed).
REPLAY_RECORDS = 4
#: Seconds the encoder waits on one full shard queue before it rechecks that shard's sender.
_PUT_POLL = 0.5

_pool = ThreadPoolExecutor(max_workers=256, thread_name_prefix="shard")


def counts_against_server(error: BaseException | None) -> bool:
    """Whether a failed shard transfer shows its data server down: it refused or broke the
    connection, timed out, or sent no HTTP answer (a DataServerError without a status).
    Not an answer, even a 5xx: the server is up and failed that one request, whose shard
    goes elsewhere; dropping it from the live servers would starve every other PUT of
    placements (a burst of 5xx answers from two servers took a cluster below its write
    quorum).  Nor a failure of our own body source (``BodyFailed``, the stream's own
    SizeMismatch, an abort)."""
    return isinstance(error, DataServerError) and error.status is None


def run_parallel(calls) -> list:
    """Run ``(fn, *args)`` calls on the shard pool; results or exceptions, in order."""
    futures = [_pool.submit(fn, *args) for fn, *args in calls]
    results = []
    for future in futures:
        try:
            results.append(future.result())
        except Exception as exc:        # each caller decides what a failed shard means
            results.append(exc)
    return results


class _Placement:
    """Which data servers an object's shards went to, and who takes over from a failed one:
    a live server not yet given a shard of the object.  Thread-safe."""

    def __init__(self, registry: DataServerRegistry | None, targets: list[str], hash_: str):
        self._registry = registry
        self._hash = hash_
        self._lock = threading.Lock()
        self._used = set(targets)

    def failed(self, address: str, error: BaseException | None) -> None:
        """A shard transfer to ``address`` failed with ``error``: drop the server from the
        live ones if that shows it down."""
        if self._registry is not None and counts_against_server(error):
            self._registry.forget(address, f"a shard upload of {self._hash} failed: {error}")

    def replace(self, failed: str, error: BaseException | None) -> str | None:
        """Another live server to take over from ``failed``, or None; ``failed`` is dropped
        from the live servers when ``error`` shows it down."""
        self.failed(failed, error)
        if self._registry is None:
            return None
        with self._lock:
            chosen = self._registry.choose(1, exclude=self._used)
            self._used.update(chosen)
        return chosen[0] if chosen else None


class _ShardSender:
    """Feeds one shard's records to one data server through a bounded queue."""

    def __init__(self, client: DataServerClient, address: str, quoted_name: str,
                 size: int | None,
                 replace: Callable[[str, BaseException | None], str | None]):
        self.address = address
        self.quoted_name = quoted_name
        self.queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_DEPTH)
        self.uuid: str | None = None
        self.error: Exception | None = None
        self.reported = False
        self._client = client
        self._size = size
        self._replace = replace
        self._replay: list[bytes] | None = []
        self._ended = False
        self.future: Future = _pool.submit(self._post)

    def _post(self) -> str:
        while True:
            try:
                return self._client.post_temp(self.address, self.quoted_name, self._size,
                                              self._records())
            except DataServerError as exc:
                if self._replay is None:
                    raise
                replacement = self._replace(self.address, exc)
                if replacement is None:
                    raise
                log.warning("%s refused shard %s (%s); sending it to %s instead",
                            self.address, self.quoted_name, exc, replacement)
                self.address = replacement

    def _records(self) -> Iterator[bytes]:
        yield from list(self._replay or ())
        while not self._ended:
            record = self.queue.get()
            if record is _END:
                self._ended = True
                return
            if record is _ABORT:
                raise ObjectStoreError("upload aborted")
            if self._replay is not None:
                self._replay.append(record)
                if len(self._replay) > REPLAY_RECORDS:
                    self._replay = None
            yield record

    @property
    def alive(self) -> bool:
        return self.error is None

    def send(self, record: bytes | None) -> None:
        while self.alive:
            if self.future.done():
                self.wait(0)
                if record is _END:
                    return
                continue
            try:
                self.queue.put(record, timeout=_PUT_POLL)
                return
            except queue.Full:
                continue

    def wait(self, timeout: float | None) -> None:
        if self.uuid is not None or self.error is not None:
            return
        try:
            self.uuid = self.future.result(timeout)
        except Exception as exc:
            self.error = exc

    def resend_and_commit(self, final_hash: str | None = None) -> bool:
        """After a failed commit: send the whole shard to another server and commit it there
        (under ``final_hash`` when given, as :meth:`RSPutStream.commit` does).

        Possible only for shards short enough to be kept whole (REPLAY_RECORDS records).
        """
        while self._replay is not None and self._ended:
            replacement = self._replace(self.address, self.error)
            if replacement is None:
                return False
            log.warning("commit of %s on %s failed; sending it to %s instead",
                        self.quoted_name, self.address, replacement)
            self.address = replacement
            try:
                self.uuid = self._client.post_temp(replacement, self.quoted_name, self._size,
                                                   list(self._replay))
                self._client.commit_temp(replacement, self.uuid, final_hash)
            except DataServerError as exc:
                log.warning("%s failed too: %s", replacement, exc)
                self.error = exc
                continue
            self.error = None
            return True
        return False

    def cut(self) -> None:
        """Abort the upload now: drain the queue and make the body raise."""
        if self.future.done():
            return
        self.error = self.error or ObjectStoreError("aborted")
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.queue.put_nowait(_ABORT)


class RSPutStream:
    """Stream shards to ``targets`` (shard index -> address) and commit at least ``quorum``."""

    def __init__(self, client: DataServerClient, targets: dict[int, str], hash_: str,
                 size: int | None, quorum: int, registry: DataServerRegistry | None = None):
        self._client = client
        self._codec = get_codec()
        self.hash = hash_
        self.quorum = quorum
        self._placement = _Placement(registry, list(targets.values()), hash_)
        self._size = size
        self._shard_size = layout.shard_size(size) if size is not None else None
        self._sent = 0                   # bytes of each shard handed to its sender
        quoted = quote_hash(hash_)
        self._senders = {i: _ShardSender(client, address, f"{quoted}.{i}", self._shard_size,
                                         self._placement.replace)
                         for i, address in targets.items()}
        self.committed: dict[int, str] = {}
        self._finished = False

    def __enter__(self) -> "RSPutStream":
        return self

    def __exit__(self, *exc_info) -> None:
        if len(self.committed) < len(self._senders):
            self.abort()

    def _live(self) -> dict[int, _ShardSender]:
        live = {}
        for i, sender in self._senders.items():
            if sender.alive:
                live[i] = sender
            elif not sender.reported:
                sender.reported = True
                log.warning("shard %s to %s failed: %s", sender.quoted_name, sender.address,
                            sender.error)
                self._placement.failed(sender.address, sender.error)
        if len(live) < self.quorum:
            raise NotEnoughDataServers(
                f"only {len(live)} of {len(self._senders)} shards of {self.hash} could be "
                f"written; {self.quorum} needed")
        return live

    def write(self, block: bytes) -> None:
        """Encode one block and send each live shard its record."""
        records = [layout.seal(f) for f in self._codec.encode(block)]
        self.write_records(dict(enumerate(records)))

    def write_records(self, records: dict[int, bytes]) -> None:
        """Send each live shard its record of the next block (records of one block are all
        the same length).

        :raises SizeMismatch: the records go past the declared size: nothing is sent.
        """
        length = len(next(iter(records.values())))
        if self._shard_size is not None and self._sent + length > self._shard_size:
            raise SizeMismatch(f"the body of {self.hash} is longer than its declared "
                               f"{self._size} bytes")
        self._sent += length
        for i, sender in self._live().items():
            sender.send(records[i])

    def finish(self, timeout: float) -> None:
        """Close every shard stream and wait for the data servers to store them.

        :raises SizeMismatch: the body ended before its declared size (a client that hung
            up): the shards are left unfinished, for :meth:`abort`, and no data server is
            blamed for it.
        """
        if self._shard_size is not None and self._sent != self._shard_size:
            raise SizeMismatch(f"the body of {self.hash} ended before its declared "
                               f"{self._size} bytes")
        for sender in self._live().values():
            sender.send(_END)
        for sender in self._senders.values():
            sender.wait(timeout)
        self._live()
        self._finished = True

    def commit(self, final_hash: str | None = None) -> dict[int, str]:
        """Publish every written shard; returns shard index -> address of those committed.

        :param final_hash: the content hash, when the shards were streamed under a
            provisional name because it was not known before the body ended: the data
            servers publish them under this one.
        """
        live = self._live()
        self._final_hash = final_hash
        results = run_parallel((self._client.commit_temp, s.address, s.uuid, final_hash)
                               for s in live.values())
        failed = {}
        for (i, sender), result in zip(live.items(), results):
            if isinstance(result, Exception):
                failed[i] = sender
                sender.error = result
            else:
                self.committed[i] = sender.address
        retried = run_parallel((s.resend_and_commit, final_hash) for s in failed.values())
        for (i, sender), ok in zip(failed.items(), retried):
            if ok is True:
                self.committed[i] = sender.address
        self._live()
        return dict(self.committed)

    def abort(self) -> None:
        """Delete every temp object this stream created and did not commit."""
        for sender in self._senders.values():
            sender.cut()
        calls = []
        for i, sender in self._senders.items():
            try:
                sender.uuid = sender.uuid or sender.future.result(self._client.timeout)
            except Exception:
                pass                      # that upload never created a temp object
            if sender.uuid and i not in self.committed:
                calls.append((self._client.delete_temp, sender.address, sender.uuid))
        for result in run_parallel(calls):
            if isinstance(result, Exception):
                log.warning("abort of %s left a temp object: %s (it expires)", self.hash, result)


def put_short_object(client: DataServerClient, registry: DataServerRegistry,
                     targets: list[str], hash_: str, block: bytes,
                     quorum: int) -> dict[int, str]:
    """Store an object of at most one block whose digest is already verified.

    Each shard is one ``POST /temp/<hash>.<i>?commit=1``: written, verified and published in
    a single round trip, the six sent at once.  A data server that fails is replaced at once
    (the record is in memory); below ``quorum`` the shards already published are withdrawn.
    :returns: shard index -> address of every committed shard.
    """
    records = [layout.seal(f) for f in get_codec().encode(block)]
    quoted = quote_hash(hash_)
    placement = _Placement(registry, targets, hash_)

    def take_over(index: int, address: str, error: DataServerError) -> str:
        """Send shard ``index`` to other servers after ``address`` failed it, until one
        stores it; raises the last error when no server is left to try."""
        while (replacement := placement.replace(address, error)) is not None:
            log.warning("%s failed shard %s.%d (%s); sending it to %s instead",
                        address, quoted, index, error, replacement)
            address = replacement
            try:
                client.put_shard(address, f"{quoted}.{index}", records[index])
            except DataServerError as exc:
                error = exc
                continue
            return address
        raise error

    results = client.put_shards([(address, f"{quoted}.{i}", records[i])
                                 for i, address in enumerate(targets)])
    committed = {i: targets[i] for i, r in enumerate(results) if isinstance(r, str)}
    failed = {i: r for i, r in enumerate(results) if isinstance(r, DataServerError)}
    for i, result in zip(failed, run_parallel((take_over, i, targets[i], error)
                                              for i, error in failed.items())):
        if isinstance(result, str):
            committed[i] = result
    if len(committed) < quorum:
        for i, address in committed.items():
            try:
                client.delete_shards(address, f"{quoted}.{i}")
            except ObjectStoreError as exc:
                log.warning("could not withdraw shard %s.%d on %s: %s", quoted, i, address, exc)
        raise NotEnoughDataServers(
            f"only {len(committed)} of {len(targets)} shards of {hash_} could be written; "
            f"{quorum} needed")
    return committed
