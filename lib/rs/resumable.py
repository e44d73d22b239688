"""Resumable uploads, whose whole state lives on the data servers (BOOK chapter 6, W17).

An upload is one temp object per shard, created empty (``Size`` = the shard's final size) on
six data servers; the signed token (``lib/upload_token.py``) names them.  Api servers keep
nothing, so a client may ask api server 1 for its offset and send the next piece to api
server 2, and either may restart in between.

*Progress.*  A shard's temp object holds whole records, one per block.  A block is *safely
stored* when at least ``quorum`` shards hold it (the same rule as a plain PUT), so the upload
has ``blocks`` = the quorum-th largest record count (the book reads shard 0 only).  Shards
behind that are dropped from the upload and rebuilt after it completes; shards ahead (an
earlier request died half-way) just skip the blocks they already hold.  The bytes of a block
that is not complete yet are the *tail*, kept raw beside the temp objects
(``data_server/tails.py``) with the offset they start at, so no byte the client sent is ever
dropped (the book drops partial blocks silently).  Bytes received = blocks * BLOCK_SIZE + the
length of the current tail.

*Appending.*  Every append is conditional on the temp object's size
(``data_server/append.py``): two requests racing on one upload cannot append one block twice.
One streaming PATCH per shard and request (BOOK W10), fed through a bounded queue.

*Completing.*  An upload sent whole in one request was hashed on the way.  Otherwise (a
SHA-256 state cannot be saved between requests) when the last byte has arrived the shards
are read back from the data servers, every record's CRC is checked, the
object's digest is computed from the data shards and every shard is checked against a fresh
encoding of its block (so a shard written from other bytes is never committed).  Then at
least ``quorum`` shards are committed; the missing ones are for the caller to have rebuilt.
A digest mismatch deletes everything.  Memory stays at about one block per shard.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from lib.errors import (Conflict, DataServerError, HashMismatch,
                        NotEnoughDataServers, ObjectNotFound, ObjectStoreError, SizeMismatch)
from lib.hashing import b64_digest, quote_hash
from lib.objectstream import AppendConflict, DataServerClient
from lib.registry import DataServerRegistry
from lib.rs import layout
from lib.rs.codec import get_codec
from lib.rs.params import ALL_SHARDS, BLOCK_SIZE, DATA_SHARDS
from lib.rs.put import counts_against_server, run_parallel
from lib.upload_token import UploadToken

log = logging.getLogger(__name__)

#: Records buffered per shard between the encoder and the shard's PATCH.
QUEUE_DEPTH = 4
_END = None
_POLL = 0.5
_pool = ThreadPoolExecutor(max_workers=128, thread_name_prefix="upload")


class UploadGone(ObjectNotFound):
    """No temp object of this upload is left: it was completed, aborted or expired."""


@dataclasses.dataclass(frozen=True)
class Progress:
    """What the data servers hold of one upload."""

    #: Usable shard index -> whole records its temp object holds (>= ``blocks``).
    records: dict[int, int]
    #: Blocks safely stored (held by at least ``quorum`` shards).
    blocks: int
    #: Bytes of the current tail, and the shards whose servers hold that tail.
    tail: int
    tail_holders: tuple[int, ...]
    #: Bytes safely received: ``blocks * BLOCK_SIZE + tail`` (capped at the size).
    received: int
    #: The object's digest, when one request sent it all into empty temp objects.
    digest: str | None = None


def create_upload(temps: DataServerClient, registry: DataServerRegistry, name: str, size: int,
                  hash_: str, quorum: int, expires: int) -> UploadToken:
    """Create one empty temp object per shard on distinct live data servers."""
    targets = registry.choose(ALL_SHARDS)
    if len(targets) < quorum:
        raise NotEnoughDataServers(
            f"{len(targets)} live data servers; an upload needs at least {quorum}")
    used, lock = set(targets), threading.Lock()
    quoted, shard_size = quote_hash(hash_), layout.shard_size(size)

    def make(index: int, address: str | None) -> tuple[str, str] | None:
        while address is not None:
            try:
                return address, temps.post_temp(address, f"{quoted}.{index}", shard_size)
            except DataServerError as exc:
                if counts_against_server(exc):
                    registry.forget(address, f"creating an upload temp object failed: {exc}")
                with lock:
                    chosen = registry.choose(1, exclude=used)
                    used.update(chosen)
                address = chosen[0] if chosen else None
        return None

    made = run_parallel((make, i, a) for i, a in enumerate(targets))
    slots = [m if isinstance(m, tuple) else None for m in made]
    slots += [None] * (ALL_SHARDS - len(slots))
    token = UploadToken(name, size, hash_, tuple(s and s[0] for s in slots),
                        tuple(s and s[1] for s in slots), expires)
    if len(token.slots()) < quorum:
        Upload(temps, token, quorum).abort()
        raise NotEnoughDataServers(
            f"could create only {len(token.slots())} of {ALL_SHARDS} temp objects; "
            f"{quorum} needed")
    return token


class Upload:
    """One upload, as its token describes it; every method asks the data servers."""

    def __init__(self, temps: DataServerClient, token: UploadToken, quorum: int):
        self.temps = temps
        self.token = token
        self.quorum = min(quorum, ALL_SHARDS)
        self.size = token.size
        self.block_count = layout.block_count(token.size)
        self._slots = token.slots()

    # -- progress ----------------------------------------------------------------------------
    def _record_count(self, temp_size: int) -> int | None:
        """Whole records in a temp object of ``temp_size`` bytes; None if it is torn."""
        if temp_size == layout.shard_size(self.size):
            return self.block_count
        full = layout.full_record_size()
        if temp_size % full == 0 and temp_size // full < self.block_count:
            return temp_size // full
        return None

    def probe(self) -> Progress:
        slots = list(self._slots.items())
        sizes = run_parallel((self.temps.head_temp, a, u) for _, (a, u) in slots)
        records: dict[int, int] = {}
        gone = 0
        for (i, (address, _)), result in zip(slots, sizes):
            if isinstance(result, ObjectNotFound):
                gone += 1
            elif isinstance(result, Exception):
                log.warning("upload of %s: shard %d on %s unreachable: %s",
                            self.token.hash, i, address, result)
            elif (count := self._record_count(result)) is None:
                log.warning("upload of %s: shard %d on %s is torn (%d bytes); dropped",
                            self.token.hash, i, address, result)
            else:
                records[i] = count
        if len(records) < self.quorum:
            if gone == len(slots):
                raise UploadGone("no such upload: it was completed, aborted or expired")
            raise NotEnoughDataServers(
                f"only {len(records)} shards of this upload are reachable; "
                f"{self.quorum} needed")
        blocks = sorted(records.values(), reverse=True)[self.quorum - 1]
        records = {i: n for i, n in records.items() if n >= blocks}
        tail, holders = self._find_tail(records, blocks)
        return Progress(records, blocks, tail, holders,
                        min(self.size, blocks * BLOCK_SIZE + tail))

    def _find_tail(self, records: dict[int, int], blocks: int) -> tuple[int, tuple[int, ...]]:
        if blocks >= self.block_count:
            return 0, ()
        shards = sorted(records)
        infos = run_parallel((self.temps.tail_info, *self._slots[i]) for i in shards)
        best, holders = 0, []
        limit = layout.block_len(self.size, blocks)
        for i, info in zip(shards, infos):
            if isinstance(info, Exception) or info is None:
                continue
            offset, length = info
            if offset != blocks * BLOCK_SIZE or not 0 < length < limit or length < best:
                continue                   # stale (an earlier block), or beaten by a longer one
            if length > best:
                best, holders = length, []
            holders.append(i)
        return best, tuple(holders)

    # -- appending ---------------------------------------------------------------------------
    def append(self, progress: Progress, chunks: Iterable[bytes]) -> Progress:
        """Store ``chunks`` as the bytes following ``progress.received``; the new progress.

        Whole blocks go to the shards, the rest to the tail.  Bytes past the object's size
        are refused (BadRequest) after what fits was stored.
        """
        block = progress.blocks
        pending = bytearray(self._read_tail(progress))
        received = progress.received
        writer = _BlockWriter(self, progress.records)
        # The whole object in this one request, into empty temp objects: hash it on the way
        # and spare the read-back at completion.
        sha = hashlib.sha256() if not any(progress.records.values()) and not received \
            else None
        overrun = False
        try:
            for chunk in chunks:
                room = self.size - received
                if len(chunk) > room:
                    chunk, overrun = chunk[:room], True
                received += len(chunk)
                pending += chunk
                if sha is not None:
                    sha.update(chunk)
                while block < self.block_count and len(pending) >= \
                        layout.block_len(self.size, block):
                    length = layout.block_len(self.size, block)
                    writer.write(block, bytes(pending[:length]))
                    del pending[:length]
                    block += 1
                if overrun:
                    break
        finally:
            records = writer.close()
        if writer.conflict and self._holders(records, block - 1) < self.quorum:
            raise Conflict("another request is appending to this upload; HEAD and resume")
        if block and self._holders(records, block - 1) < self.quorum:
            raise NotEnoughDataServers(
                f"block {block - 1} reached only {self._holders(records, block - 1)} shards; "
                f"HEAD the upload and resume")
        records = {i: n for i, n in records.items() if n >= block}
        holders: tuple[int, ...] = ()
        if pending:
            holders = self._write_tail(records, block, bytes(pending))
        digest = b64_digest(sha) if sha is not None and received == self.size else None
        result = Progress(records, block, len(pending), holders, received, digest)
        if overrun:
            raise SizeMismatch(f"the body goes past the object's Size ({self.size} bytes); "
                               f"the first {received - progress.received} bytes were kept")
        return result

    def _holders(self, records: dict[int, int], block: int) -> int:
        return sum(n > block for n in records.values())

    def _read_tail(self, progress: Progress) -> bytes:
        if not progress.tail:
            return b""
        offset = progress.blocks * BLOCK_SIZE
        for i in progress.tail_holders:
            try:
                got_offset, data = self.temps.get_tail(*self._slots[i])
            except ObjectStoreError as exc:
                log.warning("tail of shard %d unreadable: %s", i, exc)
                continue
            if got_offset == offset and len(data) == progress.tail:
                return data
        raise NotEnoughDataServers("the partial block of this upload could not be read back; "
                                   "HEAD the upload and resume from the offset it gives")

    def _write_tail(self, records: dict[int, int], block: int, data: bytes) -> tuple[int, ...]:
        shards = sorted(records)
        offset = block * BLOCK_SIZE
        results = run_parallel((self.temps.put_tail, *self._slots[i], offset, data)
                               for i in shards)
        holders = tuple(i for i, r in zip(shards, results) if not isinstance(r, Exception))
        for i, result in zip(shards, results):
            if isinstance(result, Exception):
                log.warning("upload of %s: tail on shard %d's server failed: %s",
                            self.token.hash, i, result)
        if not holders:
            raise NotEnoughDataServers(
                f"no data server kept the last {len(data)} bytes (a partial block); "
                f"HEAD the upload and resume from the offset it gives")
        return holders

    # -- completing --------------------------------------------------------------------------
    def complete(self, progress: Progress) -> dict[int, str]:
        """Verify the whole object and commit its shards; shard index -> address committed."""
        ready = [i for i, n in progress.records.items() if n == self.block_count]
        if progress.received != self.size or len(ready) < self.quorum:
            raise NotEnoughDataServers(
                f"only {len(ready)} shards of this upload are complete; {self.quorum} needed")
        if progress.digest is None:
            ready = self._verify(ready)
        elif progress.digest != self.token.hash:
            raise HashMismatch(f"the uploaded object hashes to SHA-256={progress.digest}, "
                               f"Digest said {self.token.hash}; nothing was kept")
        results = run_parallel((self.temps.commit_temp, *self._slots[i]) for i in ready)
        committed = {}
        for i, result in zip(ready, results):
            if isinstance(result, Exception):
                log.warning("commit of shard %d of %s failed: %s", i, self.token.hash, result)
            else:
                committed[i] = self._slots[i][0]
        if len(committed) < self.quorum:
            raise NotEnoughDataServers(
                f"only {len(committed)} shards of {self.token.hash} could be committed; "
                f"{self.quorum} needed")
        return committed

    def _verify(self, shards: list[int]) -> list[int]:
        """Read the complete shards back; the digest must match; consistent shards only."""
        codec = get_codec()
        header = codec.header_size
        opened = run_parallel((self.temps.open_temp, *self._slots[i]) for i in shards)
        readers = {i: r for i, r in zip(shards, opened) if not isinstance(r, Exception)}
        sha = hashlib.sha256()

        def drop(i: int, why: object) -> None:
            log.warning("upload of %s: shard %d not committed: %s", self.token.hash, i, why)
            readers.pop(i).close()

        try:
            for block in range(self.block_count):
                length = layout.block_len(self.size, block)
                record = layout.record_size(length)
                fragments = {}
                for i, reader in list(readers.items()):
                    try:
                        fragments[i] = layout.read_record(reader, record)
                    except ObjectStoreError as exc:
                        drop(i, exc)
                if len(fragments) < DATA_SHARDS:
                    raise NotEnoughDataServers(f"block {block} readable from only "
                                               f"{len(fragments)} shards of this upload")
                data = codec.decode(fragments, length)
                sha.update(data)
                fresh = codec.encode(data)
                for i, fragment in fragments.items():
                    if fragment[header:] != memoryview(fresh[i])[header:]:
                        drop(i, f"block {block} does not match the other shards")
                if len(readers) < self.quorum:
                    raise NotEnoughDataServers(
                        f"only {len(readers)} consistent shards; {self.quorum} needed")
        finally:
            for reader in readers.values():
                reader.close()
        digest = b64_digest(sha)
        if digest != self.token.hash:
            raise HashMismatch(f"the uploaded object hashes to SHA-256={digest}, "
                               f"Digest said {self.token.hash}; nothing was kept")
        return sorted(readers)

    # -- cleaning up -------------------------------------------------------------------------
    def cleanup(self, committed: dict[int, str] | None = None) -> None:
        """Remove every tail, and every temp object not committed (best effort: the data
        servers expire what is left)."""
        committed = committed or {}
        calls = [(self.temps.delete_tail, a, u) for a, u in self._slots.values()]
        calls += [(self.temps.delete_temp, a, u) for i, (a, u) in self._slots.items()
                  if i not in committed]
        for result in run_parallel(calls):
            if isinstance(result, Exception) and not isinstance(result, ObjectNotFound):
                log.info("upload cleanup of %s left something behind (it expires): %s",
                         self.token.hash, result)

    def abort(self) -> None:
        self.cleanup()


class _ShardAppender:
    """One streaming conditional PATCH of records to one shard's temp object."""

    def __init__(self, temps: DataServerClient, address: str, uuid: str, start: int):
        self.temps, self.address, self.uuid = temps, address, uuid
        self.start = start                # records the temp object holds already
        self.sent = 0
        self.bytes = 0
        self.error: Exception | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_DEPTH)
        self._future: Future | None = None

    def _records(self) -> Iterator[bytes]:
        while (record := self._queue.get()) is not _END:
            yield record

    def _put(self, item: bytes | None) -> bool:
        if self._future is None:
            offset = self.start * layout.full_record_size()
            self._future = _pool.submit(self.temps.append_temp, self.address, self.uuid, offset,
                                        self._records())
        while self.error is None:
            if self._future.done():
                self._collect()
                return False
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def send(self, record: bytes) -> None:
        if self._put(record):
            self.sent += 1
            self.bytes += len(record)

    def _collect(self) -> int | None:
        try:
            return self._future.result()
        except Exception as exc:
            self.error = self.error or exc
            return None

    def close(self) -> int | None:
        """End the PATCH; the records the temp object holds now, None if it failed."""
        if self._future is None:
            return self.start
        if self.error is None and not self._future.done():
            self._put(_END)
        size = self._collect()
        expected = self.start * layout.full_record_size() + self.bytes
        if size is None or self.error is not None:
            return None
        if size != expected:
            self.error = DataServerError(f"temp object has {size} bytes, {expected} expected",
                                         self.address)
            return None
        return self.start + self.sent


class _BlockWriter:
    """Encode blocks and append each shard's record to the shards that do not hold it yet."""

    def __init__(self, upload: Upload, records: dict[int, int]):
        self._upload = upload
        self._codec = get_codec()
        self._appenders = {i: _ShardAppender(upload.temps, *upload._slots[i], n)
                           for i, n in records.items()}
        self.conflict = False

    def write(self, block: int, data: bytes) -> None:
        records = [layout.seal(f) for f in self._codec.encode(data)]
        holders = 0
        for i, appender in self._appenders.items():
            if appender.start + appender.sent > block:
                holders += 1              # it holds this block already (an earlier request)
            elif appender.error is None:
                appender.send(records[i])
                holders += appender.error is None
        if holders < self._upload.quorum:
            self.conflict = any(isinstance(a.error, AppendConflict)
                                for a in self._appenders.values())
            failed = {i: str(a.error) for i, a in self._appenders.items() if a.error}
            if self.conflict:
                raise Conflict("another request is appending to this upload; "
                               "HEAD and resume")
            raise NotEnoughDataServers(f"block {block} reached only {holders} shards "
                                       f"({failed}); HEAD the upload and resume")

    def close(self) -> dict[int, int]:
        """Finish every PATCH; shard -> records now held, for the shards that worked."""
        results = run_parallel((a.close,) for a in self._appenders.values())
        records = {}
        for (i, appender), count in zip(self._appenders.items(), results):
            if isinstance(count, int):
                records[i] = count
            else:
                log.warning("upload of %s: shard %d on %s failed: %s",
                            self._upload.token.hash, i, appender.address,
                            appender.error or count)
            if isinstance(appender.error, AppendConflict):
                self.conflict = True
        return records
