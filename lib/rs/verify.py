"""Check every shard of one object end to end, for the object scanner.

A GET reads only DATA_SHARDS shards, so damage to the others goes unnoticed until it is too
late; the scanner reads **all** located shards in full, block by block, verifying the length
and CRC-32 of every record, and decodes each block from the good ones to check the object's
SHA-256 as the book's scanner does (BOOK W23: the raw hash, never the quoted one).  A data
server that finds a bad record while serving moves that shard aside itself; either way the
shard is reported damaged, for :func:`lib.rs.repair.repair_object`.
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
    """What reading every shard of one object found."""

    hash: str
    located: dict[int, str]
    #: shard index -> address of shards that failed to read in full or failed a CRC.
    damaged: dict[int, str] = dataclasses.field(default_factory=dict)
    #: Whether the decoded content hashed to ``hash`` (None: too few good shards to decode).
    content_ok: bool | None = None

    @property
    def missing(self) -> list[int]:
        return [i for i in range(ALL_SHARDS) if i not in self.located or i in self.damaged]

    @property
    def healthy(self) -> bool:
        return not self.missing and self.content_ok is not False

    @property
    def recoverable(self) -> bool:
        return ALL_SHARDS - len(self.missing) >= DATA_SHARDS and self.content_ok is not False


def check_object(client: DataServerClient, locations: dict[int, str], hash_: str,
                 size: int) -> ObjectCheck:
    """Read every located shard of ``hash_`` (``size`` bytes) in full and verify it."""
    result = ObjectCheck(hash_, dict(locations))
    total = layout.shard_size(size)
    readers: dict[int, ShardResponse] = {}
    located = sorted(locations.items()) if total else []
    opened = client.open_shards([(address, f"{quote_hash(hash_)}.{index}", 0, total - 1)
                                 for index, address in located])
    for (index, _), reader in zip(located, opened):
        if isinstance(reader, ObjectStoreError):
            _damaged(result, index, reader)
        else:
            readers[index] = reader
    codec = get_codec()
    sha = hashlib.sha256()
    decodable = True
    try:
        for block in range(layout.block_count(size)):
            block_len = layout.block_len(size, block)
            length = layout.record_size(block_len)
            fragments = {}
            for index, reader in list(readers.items()):
                try:
                    fragments[index] = layout.read_record(reader, length)
                except ObjectStoreError as exc:
                    _damaged(result, index, exc)
                    readers.pop(index).close()
            if decodable and len(fragments) >= DATA_SHARDS:
                sha.update(codec.decode(fragments, block_len))
            else:
                decodable = False
    finally:
        for reader in readers.values():
            reader.close()
    if decodable and len(result.located) - len(result.damaged) >= DATA_SHARDS:
        result.content_ok = b64_digest(sha) == hash_
        if not result.content_ok:
            log.error("object %s: shards pass their checksums but decode to SHA-256=%s",
                      hash_, b64_digest(sha))
    return result


def _damaged(result: ObjectCheck, index: int, error: Exception) -> None:
    address = result.located[index]
    log.warning("shard %s.%d on %s is damaged: %s", quote_hash(result.hash), index, address,
                error)
    result.damaged[index] = address
