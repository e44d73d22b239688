"""The tee of an origin miss: a thread stores the origin's body while a bounded queue passes
each chunk on to the client, whose last chunk waits until the store has succeeded.

``lib/objects/origin.py`` decides when a miss is teed and what storing means; this module
only moves the chunks::

    origin chunks --> store thread --> store(source)  (the object layer, verified)
                           '--bounded queue--> client generator (holds its last chunk)

A client that stops reading for ``stall_timeout`` seconds (or goes away, or has its range)
is detached: the store goes on without it.  A store that fails raises its error in the
client's generator, so the answer ends short of its Content-Length.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator

from lib.errors import OriginTimeout
from lib.metadata import Version
from lib.objects.layer import ObjectReader

log = logging.getLogger(__name__)

#: Chunks queued between the origin and a client (CHUNK bytes each, ``lib/upstream.py``).
TEE_CHUNKS = 8
#: Longest wait of a client for the store to finish once it has its bytes, in seconds.
MAX_WAIT = 900.0
_END = object()


class Tee:
    def __init__(self, chunks: Iterable[bytes], store: Callable[[Iterator[bytes]], object],
                 finished: Callable[[BaseException | None], None], stall_timeout: float,
                 read_timeout: float, what: str):
        """Start storing.

        :param store: consumes the source it is given (and raises if the body is bad).
        :param finished: called once the store has ended, with its error or None.
        :param what: names the object and its origin in messages.
        """
        self._chunks_in = chunks
        self._store = store
        self._finished = finished
        self._stall = stall_timeout
        self._read_timeout = read_timeout
        self._what = what
        self._queue: queue.Queue = queue.Queue(TEE_CHUNKS)
        self._attached = True
        self._sent = False
        self._started = threading.Event()
        self._done = threading.Event()
        self.error: BaseException | None = None
        threading.Thread(target=self._run, name=f"tee {what[:60]}", daemon=True).start()

    def reader(self, version: Version, first: int, last: int, partial: bool) -> ObjectReader:
        """The client's reader of bytes ``first..last``, returned once the first chunk is
        on its way (a failure before that is an error status, not a cut answer)."""
        self._started.wait(MAX_WAIT)
        if self.error is not None and not self._sent:
            raise self.error
        return ObjectReader(version, first, last, partial, self._client(first, last),
                            self.detach)

    def detach(self) -> None:
        """The client is gone (or has its range): stop feeding it, unblock the thread."""
        self._attached = False
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _run(self) -> None:
        try:
            self._store(self._source())
        except BaseException as exc:                # noqa: BLE001 - handed to the client
            self.error = exc
            log.warning("storing %s failed: %s", self._what, exc)
        finally:
            self._finished(self.error)
            self._done.set()
            self._push(_END)
            self._started.set()

    def _source(self) -> Iterator[bytes]:
        for chunk in self._chunks_in:
            self._sent = True
            self._push(chunk)
            yield chunk

    def _push(self, item) -> None:
        if not self._attached:
            return
        try:
            self._queue.put(item, timeout=self._stall)
        except queue.Full:
            self._attached = False
            log.warning("the client of %s stalled for %.0fs; storing goes on without it",
                        self._what, self._stall)
        self._started.set()

    def _client(self, first: int, last: int) -> Iterator[bytes]:
        pos, held = 0, None
        wait = self._read_timeout + self._stall + 5
        try:
            while pos <= last:
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:
                    raise OriginTimeout(f"no data for {self._what} within {wait:.0f}s") \
                        from None
                if item is _END:
                    break
                lo, hi = max(first - pos, 0), min(last + 1 - pos, len(item))
                pos += len(item)
                if hi > lo:
                    if held is not None:
                        yield held
                    held = item[lo:hi] if (lo, hi) != (0, len(item)) else item
            self.detach()
            if not self._done.wait(MAX_WAIT):
                raise OriginTimeout(f"storing {self._what} took more than {MAX_WAIT:.0f}s")
            if self.error is not None:
                raise self.error                       # cuts the answer short
            if held is not None:
                yield held
        finally:
            self.detach()
