"""RSPutStream: encode an object block by block and stream each shard to its data server.

One streaming ``POST /temp/<hash>.<i>`` per shard, each fed by its own thread through a small
bounded queue, so memory stays at a few blocks whatever the object size.  A shard whose data
server fails is dropped; the stream goes on while at least ``quorum`` shards are alive.
Two-phase commit is a context manager::

    with RSPutStream(client, targets, hash, size, quorum) as put:
        for block in blocks:
            put.write(block)
        put.finish()            # all shard uploads done (temp objects written and fsynced)
        ...verify the digest...
        put.commit()            # PUT /temp/<uuid> on every live shard
    # leaving the block without commit() deletes every temp object it created
"""
from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Iterator

from lib.errors import NotEnoughDataServers, ObjectStoreError
from lib.hashing import quote_hash
from lib.objectstream import DataServerClient
from lib.rs import layout
from lib.rs.codec import get_codec

log = logging.getLogger(__name__)

#: Records buffered per shard between the encoder and the shard's sender.
QUEUE_DEPTH = 4
_END = None
_ABORT = b""      # makes the sender's body raise, so the connection is cut, not left short
#: Seconds the encoder waits on one full shard queue before it rechecks that shard's sender.
_PUT_POLL = 0.5

_pool = ThreadPoolExecutor(max_workers=256, thread_name_prefix="shard")


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


class _ShardSender:
    """Feeds one shard's records to one data server through a bounded queue."""

    def __init__(self, client: DataServerClient, address: str, quoted_name: str,
                 size: int | None):
        self.address = address
        self.quoted_name = quoted_name
        self.queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_DEPTH)
        self.future: Future = _pool.submit(client.post_temp, address, quoted_name, size,
                                           self._records())
        self.uuid: str | None = None
        self.error: Exception | None = None

    def _records(self) -> Iterator[bytes]:
        while True:
            record = self.queue.get()
            if record is _END:
                return
            if record is _ABORT:
                raise ObjectStoreError("upload aborted")
            yield record

    @property
    def alive(self) -> bool:
        return self.error is None

    def send(self, record: bytes | None) -> None:
        while self.alive:
            if self.future.done():
                self._collect()
                if record is _END:
                    return
                continue
            try:
                self.queue.put(record, timeout=_PUT_POLL)
                return
            except queue.Full:
                continue

    def _collect(self, timeout: float | None = 0) -> None:
        if self.uuid is not None or self.error is not None:
            return
        try:
            self.uuid = self.future.result(timeout)
        except Exception as exc:
            self.error = exc

    def wait(self, timeout: float) -> None:
        self._collect(timeout)


class RSPutStream:
    """Stream an object as ALL_SHARDS shards to ``targets`` (one address per shard index)."""

    def __init__(self, client: DataServerClient, targets: list[str], hash_: str,
                 size: int | None, quorum: int, on_failure=None):
        self._client = client
        self._codec = get_codec()
        self.hash = hash_
        self.quorum = quorum
        self._on_failure = on_failure or (lambda address: None)
        shard_size = layout.shard_size(size) if size is not None else None
        quoted = quote_hash(hash_)
        self._senders = {i: _ShardSender(client, address, f"{quoted}.{i}", shard_size)
                         for i, address in enumerate(targets)}
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
            elif not getattr(sender, "reported", False):
                sender.reported = True
                log.warning("shard %s to %s failed: %s", sender.quoted_name, sender.address,
                            sender.error)
                self._on_failure(sender.address)
        if len(live) < self.quorum:
            raise NotEnoughDataServers(
                f"only {len(live)} of {len(self._senders)} shards of {self.hash} could be "
                f"written; {self.quorum} needed")
        return live

    def write(self, block: bytes) -> None:
        records = [layout.seal(f) for f in self._codec.encode(block)]
        for i, sender in self._live().items():
            sender.send(records[i])

    def finish(self, timeout: float) -> None:
        """Close every shard stream and wait for the data servers to store them."""
        for sender in self._live().values():
            sender.send(_END)
        for sender in self._senders.values():
            sender.wait(timeout)
        self._live()
        self._finished = True

    def commit(self) -> int:
        """Publish every written shard; returns how many were committed (>= quorum)."""
        live = self._live()
        results = run_parallel((self._client.commit_temp, s.address, s.uuid)
                               for s in live.values())
        for (i, sender), result in zip(live.items(), results):
            if isinstance(result, Exception):
                sender.error = result
            else:
                self.committed[i] = sender.address
        self._live()
        return len(self.committed)

    @property
    def missing(self) -> list[int]:
        return [i for i in self._senders if i not in self.committed]

    def abort(self) -> None:
        """Delete every temp object this stream created and not committed."""
        for sender in self._senders.values():
            if not sender.future.done():
                sender.error = sender.error or ObjectStoreError("aborted")
                while True:                # unblock the sender thread at once
                    try:
                        sender.queue.get_nowait()
                    except queue.Empty:
                        break
                sender.queue.put_nowait(_ABORT)
        calls = []
        for i, sender in self._senders.items():
            try:
                sender.uuid = sender.uuid or sender.future.result(self._client.timeout)
            except Exception:
                pass
            if sender.uuid and i not in self.committed:
                calls.append((self._client.delete_temp, sender.address, sender.uuid))
        for result in run_parallel(calls):
            if isinstance(result, Exception):
                log.warning("abort of %s left a temp object: %s (it expires)", self.hash, result)
