"""RSGetStream: read an object (or a byte range of it) back from any DATA_SHARDS shards.

Reads the data shards when it can (no decoding needed: the code is systematic) and opens a
parity shard, at the block where trouble started, only when a data shard is missing, fails or
fails its CRC.  Only the blocks that cover the requested range are fetched.  Shards that
failed are reported in ``failed`` so the caller can have them rebuilt.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from lib.errors import (CorruptShard, NotEnoughDataServers, ObjectNotFound, ObjectStoreError,
                        Refused)
from lib.hashing import quote_hash
from lib.objectstream import DataServerClient, ShardResponse
from lib.rs import layout
from lib.rs.codec import get_codec
from lib.rs.params import BLOCK_SIZE, DATA_SHARDS

log = logging.getLogger(__name__)


class _ShardReader:
    """Sequential records of one shard, from the block it was opened at."""

    def __init__(self, response: ShardResponse):
        self.address = response.address
        self._response = response

    def read(self, length: int) -> memoryview:
        try:
            return layout.read_record(self._response, length)
        except CorruptShard as exc:
            raise CorruptShard(f"{self.address}: {exc}") from None

    def close(self) -> None:
        self._response.close()


class RSGetStream:
    """Iterate over the bytes ``first..last`` (inclusive) of an object of ``size`` bytes."""

    def __init__(self, client: DataServerClient, locations: dict[int, str], hash_: str,
                 size: int, first: int = 0, last: int | None = None):
        self._client = client
        self._codec = get_codec()
        self._locations = dict(locations)
        self.hash = hash_
        self.size = size
        self.first = first
        self.last = size - 1 if last is None else last
        self._start = first // BLOCK_SIZE
        self._stop = self.last // BLOCK_SIZE
        self._quoted = quote_hash(hash_)
        self._readers: dict[int, _ShardReader] = {}
        #: Shard index -> address of every copy that could not be read.
        self.failed: dict[int, str] = {}
        #: Of those, the copies their server showed bad (corrupt, missing, or refused with a
        #: 4xx): a repair retires them.  A copy whose server did not answer, or failed with a
        #: 5xx, may be fine and is left alone.
        self.damaged: dict[int, str] = {}
        #: Shard indexes this stream asked a data server for (read, or failed).
        self.opened: set[int] = set()
        self._spare = sorted(locations, key=lambda i: (i >= DATA_SHARDS, i))
        if len(self._spare) < DATA_SHARDS:
            raise NotEnoughDataServers(
                f"object {hash_} has {len(self._spare)} reachable shards; {DATA_SHARDS} needed")
        self._open(DATA_SHARDS, self._start)

    def _open(self, wanted: int, block: int) -> None:
        """Open readers until ``wanted`` are active, starting at ``block``."""
        while len(self._readers) < wanted and self._spare:
            batch = self._spare[:wanted - len(self._readers)]
            del self._spare[:len(batch)]
            self.opened.update(batch)
            first = layout.shard_offset(block)
            last = (layout.shard_offset(self._stop)
                    + layout.record_size(layout.block_len(self.size, self._stop)) - 1)
            results = self._client.open_shards(
                [(self._locations[i], f"{self._quoted}.{i}", first, last) for i in batch])
            for i, result in zip(batch, results):
                if isinstance(result, Exception):
                    self._fail(i, result)
                else:
                    self._readers[i] = _ShardReader(result)

    def _fail(self, index: int, error: Exception) -> None:
        address = self._locations.get(index, "?")
        if isinstance(error, ObjectNotFound | CorruptShard | Refused):
            log.warning("shard %s.%d on %s is damaged: %s", self._quoted, index, address, error)
            self.damaged[index] = address
        else:
            log.warning("shard %s.%d on %s failed: %s", self._quoted, index, address, error)
        self.failed[index] = address
        reader = self._readers.pop(index, None)
        if reader is not None:
            reader.close()

    def fragments(self, block: int) -> dict[int, memoryview]:
        """At least DATA_SHARDS verified fragments of ``block`` (blocks in order only)."""
        record = layout.record_size(layout.block_len(self.size, block))
        fragments: dict[int, memoryview] = {}
        while True:
            for i, reader in list(self._readers.items()):
                if i in fragments:
                    continue
                try:
                    fragments[i] = reader.read(record)
                except ObjectStoreError as exc:
                    self._fail(i, exc)
            if len(fragments) >= DATA_SHARDS:
                return fragments
            if not self._spare:
                raise NotEnoughDataServers(
                    f"object {self.hash}: block {block} readable from only {len(fragments)} "
                    f"shards; {DATA_SHARDS} needed")
            self._open(DATA_SHARDS, block)

    def __iter__(self) -> Iterator[bytes]:
        try:
            for block in range(self._start, self._stop + 1):
                data = self._codec.decode(self.fragments(block),
                                          layout.block_len(self.size, block))
                base = block * BLOCK_SIZE
                lo = max(self.first - base, 0)
                hi = min(self.last - base + 1, len(data))
                yield data[lo:hi] if lo or hi != len(data) else data
        finally:
            self.close()

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
