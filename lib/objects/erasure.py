"""Content objects as 4+2 Reed-Solomon shards on the data servers (the book's store).

Writing (:meth:`ErasureContentStore.stage`):

* a body of at most one block (its size declared, or found by reading one block ahead) is
  read whole (1 MiB at most), hashed and checked before anything is sent; its commit sends
  each shard in one request (``put_short_object``);
* a longer body streams, block by block, to one temp object per shard (``RSPutStream``), named
  by its hash when the client declared it (the book's Digest, S3's hex payload hash) or by a
  provisional random name when the hash only becomes known at the end (S3 unsigned and
  aws-chunked bodies): the commit then publishes the shards under the real hash (the data
  servers rename them, ``Object-Hash``).  Memory stays at a few blocks per shard.

Reading (:meth:`ErasureContentStore.open`) uses cached locations first, locates again once
when they turn out stale, fails with a status before the first byte (BOOK W15), and has
missing or damaged shards rebuilt afterwards without making the client wait.
"""
from __future__ import annotations

import base64
import itertools
import logging
import os
from collections.abc import Iterable, Iterator

from lib.config import Config
from lib.errors import NotEnoughDataServers, ObjectStoreError
from lib.hashing import quote_hash
from lib.locator import Locator
from lib.objects.content import (ContentReader, ContentStore, Digester, Digests, Expect,
                                 Staged)
from lib.objects.repairs import Repairs
from lib.objectstream import DataServerClient
from lib.registry import DataServerRegistry
from lib.rs.get import RSGetStream
from lib.rs.params import ALL_SHARDS, BLOCK_SIZE, DATA_SHARDS
from lib.rs.put import RSPutStream, put_short_object
from lib.streams import rechunk

log = logging.getLogger(__name__)


def provisional_name() -> str:
    """A random name in the form of a hash, for shards whose content hash comes last."""
    return base64.b64encode(os.urandom(32)).decode()


class ErasureContentStore(ContentStore):
    def __init__(self, config: Config, client: DataServerClient, registry: DataServerRegistry,
                 locator: Locator, repairs: Repairs):
        self.config = config
        self.client = client
        self.registry = registry
        self.locator = locator
        self.repairs = repairs

    def _targets(self) -> tuple[list[str], int]:
        quorum = min(self.config.write_quorum, ALL_SHARDS)
        targets = self.registry.choose(ALL_SHARDS)
        if len(targets) < quorum:
            raise NotEnoughDataServers(
                f"{len(targets)} live data servers; a PUT needs at least {quorum}")
        return targets, quorum

    # -- writing -------------------------------------------------------------------------------
    def stage(self, chunks: Iterable[bytes], expect: Expect) -> Staged:
        digester = Digester(chunks, expect)
        body = iter(digester)
        if expect.size is not None and expect.size > BLOCK_SIZE:
            return self._stream(digester, body, expect)
        head, got = [], 0
        for chunk in body:                 # at most one block, or one block and a chunk
            head.append(chunk)
            got += len(chunk)
            if got > BLOCK_SIZE:
                return self._stream(digester, itertools.chain(head, body), expect)
        block = b"".join(head)
        return _ShortStaged(self, block, digester.finish())

    def _stream(self, digester: Digester, body: Iterator[bytes], expect: Expect) -> Staged:
        name = expect.sha256 or provisional_name()
        targets, quorum = self._targets()
        put = RSPutStream(self.client, dict(enumerate(targets)), name, expect.size, quorum,
                          self.registry)
        try:
            for block in rechunk(body, BLOCK_SIZE):
                put.write(block)
            put.finish(self.config.http_timeout)
            digests = digester.finish()
        except BaseException:
            put.abort()
            raise
        return _StreamStaged(self, put, digests, renamed=name != digests.sha256)

    def remember(self, hash_: str, committed: dict[int, str]) -> list[int]:
        self.locator.remember(hash_, committed)
        return [i for i in range(ALL_SHARDS) if i not in committed]

    # -- reading -------------------------------------------------------------------------------
    def readable(self, hash_: str, size: int) -> bool:
        return size == 0 or len(self.locator.locate(hash_)) >= DATA_SHARDS

    def open(self, hash_: str, size: int, first: int, last: int) -> ContentReader:
        return _Reader(self, hash_, size, first, last)

    def repair(self, hash_: str, size: int, missing: list[int]) -> None:
        if missing:
            self.repairs.request(hash_, size, missing)

    def remove(self, hash_: str) -> None:
        self.locator.forget(hash_)
        for address in sorted(set(self.locator.locate(hash_, fresh=True).values())):
            try:
                self.client.delete_shards(address, quote_hash(hash_))
            except ObjectStoreError as exc:
                log.warning("could not remove the shards of %s on %s (the orphan collector "
                            "will): %s", hash_, address, exc)


class _ShortStaged(Staged):
    def __init__(self, store: ErasureContentStore, block: bytes, digests: Digests):
        self._store = store
        self._block = block
        self.digests = digests

    def commit(self) -> list[int]:
        self._settled = True
        if not self._block:
            return []                      # empty content needs no shards
        store = self._store
        targets, quorum = store._targets()
        committed = put_short_object(store.client, store.registry, targets, self.hash,
                                     self._block, quorum)
        return store.remember(self.hash, committed)

    def discard(self) -> None:
        self._settled = True


class _StreamStaged(Staged):
    def __init__(self, store: ErasureContentStore, put: RSPutStream, digests: Digests,
                 renamed: bool):
        self._store = store
        self._put = put
        self._renamed = renamed
        self.digests = digests

    def commit(self) -> list[int]:
        self._settled = True
        try:
            committed = self._put.commit(self.hash if self._renamed else None)
        except BaseException:
            self._put.abort()
            raise
        return self._store.remember(self.hash, committed)

    def discard(self) -> None:
        self._settled = True
        self._put.abort()


class _Reader(ContentReader):
    """Bytes ``first..last`` of one content object, from any DATA_SHARDS shards."""

    def __init__(self, store: ErasureContentStore, hash_: str, size: int, first: int,
                 last: int):
        self._store = store
        self.hash = hash_
        self.size = size
        self._stream: RSGetStream | None = None
        self._head = b""
        self._body: Iterator[bytes] = iter(())
        self._cached = False
        self._locations: dict[int, str] = {}
        if size == 0 or last < first:
            return
        locator = store.locator
        for attempt in range(2):
            hit = locator.cached(hash_) if attempt == 0 else None
            self._cached = hit is not None
            self._locations = hit if hit is not None else locator.locate(hash_, fresh=True)
            try:
                self._stream = RSGetStream(store.client, self._locations, hash_, size, first,
                                           last)
                self._body = iter(self._stream)
                self._head = next(self._body)   # fail with a status, not a short 200
                return
            except ObjectStoreError as exc:
                if attempt == 0 and len(self._locations) == ALL_SHARDS:
                    locator.forget(hash_)          # maybe a stale cached answer: ask again
                    continue
                log.error("cannot read %s: shards %s located: %s", hash_,
                          sorted(self._locations), exc)
                raise

    def __iter__(self) -> Iterator[bytes]:
        try:
            if self._head:
                yield self._head
            yield from self._body
        except Exception:
            log.exception("reading %s failed mid-stream", self.hash)
            raise
        finally:
            self.close()

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        stream.close()                       # also when the client went away mid-body
        repairs = self._store.repairs
        missing = [i for i in range(ALL_SHARDS) if i not in self._locations]
        if missing or stream.failed:
            repairs.request(self.hash, self.size, sorted({*missing, *stream.failed}),
                            stream.damaged)
        elif self._cached:
            repairs.check_unread(self.hash, self.size, {
                i: a for i, a in self._locations.items() if i not in stream.opened})
