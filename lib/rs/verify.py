"""Check every shard of one object end to end, for the object scanner.

A GET reads only DATA_SHARDS shards, so damage to the others goes unnoticed until it is too
late; the scanner reads **all** located shards in full, and every copy of each (a server
that was away may still hold a shard rebuilt elsewhere meanwhile), block by block, verifying
the length and CRC-32 of every record, and decodes each block from the good ones to check
the object's SHA-256 as the book's scanner does (BOOK W23: the raw hash, never the quoted
one).  A data server that finds a bad record while serving moves that copy aside itself;
either way the copy is reported damaged, for the scanner to retire and rebuild.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging

from lib.errors import ObjectStoreError
from lib.hashing import b64_digest, quote_hash
from lib.objectstream import DataServerClient, ShardResponse
from lib.rs import layout
from lib.rs.codec import get_codec
from lib.rs.params import ALL_SHARDS, DATA_SHARDS

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ObjectCheck:
    """What reading every copy of every shard of one object found."""

    hash: str
    #: shard index -> every server holding a copy of it.
    copies: dict[int, list[str]]
    #: (shard index, address) of the copies that failed to read in full or failed a CRC.
    damaged: set[tuple[int, str]] = dataclasses.field(default_factory=set)
    #: Whether the decoded content hashed to ``hash`` (None: too few good shards to decode).
    content_ok: bool | None = None

    @property
    def good(self) -> dict[int, list[str]]:
        """shard index -> the servers holding a copy of it that passed."""
        good = {}
        for index, holders in sorted(self.copies.items()):
            passed = [a for a in holders if (index, a) not in self.damaged]
            if passed:
                good[index] = passed
        return good

    @property
    def missing(self) -> list[int]:
        """Shard indexes without a good copy."""
        good = self.good
        return [i for i in range(ALL_SHARDS) if i not in good]

    @property
    def healthy(self) -> bool:
        return not self.missing and not self.damaged and self.content_ok is not False

    @property
    def recoverable(self) -> bool:
        return ALL_SHARDS - len(self.missing) >= DATA_SHARDS and self.content_ok is not False


def check_object(client: DataServerClient, copies: dict[int, list[str]], hash_: str,
                 size: int) -> ObjectCheck:
    """Read every located copy of every shard of ``hash_`` (``size`` bytes) in full and
    verify it; the content is decoded from one good copy of each shard."""
    result = ObjectCheck(hash_, {i: list(holders) for i, holders in copies.items()})
    total = layout.shard_size(size)
    located = [(i, a) for i, holders in sorted(copies.items()) for a in holders] if total else []
    opened = client.open_shards([(address, f"{quote_hash(hash_)}.{index}", 0, total - 1)
                                 for index, address in located])
    readers: dict[tuple[int, str], ShardResponse] = {}
    for copy, reader in zip(located, opened):
        if isinstance(reader, ObjectStoreError):
            _damaged(result, copy, reader)
        else:
            readers[copy] = reader
    codec = get_codec()
    sha = hashlib.sha256()
    decodable = True
    try:
        for block in range(layout.block_count(size)):
            block_len = layout.block_len(size, block)
            length = layout.record_size(block_len)
            fragments = {}
            for copy, reader in list(readers.items()):
                try:
                    record = layout.read_record(reader, length)
                except ObjectStoreError as exc:
                    _damaged(result, copy, exc)
                    readers.pop(copy).close()
                    continue
                fragments.setdefault(copy[0], record)
            if decodable and len(fragments) >= DATA_SHARDS:
                sha.update(codec.decode(fragments, block_len))
            else:
                decodable = False
    finally:
        for reader in readers.values():
            reader.close()
    if decodable and len(result.good) >= DATA_SHARDS:
        result.content_ok = b64_digest(sha) == hash_
        if not result.content_ok:
            log.error("object %s: shards pass their checksums but decode to SHA-256=%s",
                      hash_, b64_digest(sha))
    return result


def _damaged(result: ObjectCheck, copy: tuple[int, str], error: Exception) -> None:
    index, address = copy
    log.warning("shard %s.%d on %s is damaged: %s", quote_hash(result.hash), index, address,
                error)
    result.damaged.add(copy)
