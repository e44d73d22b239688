"""Where each block of an object lives inside a shard file.

An object of ``size`` bytes is cut into blocks of BLOCK_SIZE (the last may be short).  Every
block contributes one *record* to each shard file::

    object   | block 0 (1 MiB)       | block 1 (1 MiB)       | block 2 (tail) |
    shard i  | rec 0: frag | crc32   | rec 1: frag | crc32   | rec 2: ...     |

    record = fragment (codec header + ceil(block_len / DATA_SHARDS) bytes) + CRC-32 (4 bytes LE)

All records but the last have the same length, so block ``b`` of a shard starts at
``b * full_record_size()`` and a reader can find and verify any block on its own: range reads
touch only the blocks they need, and a corrupt block is caught before it is decoded.

The CRC is zlib's CRC-32, computed with ISA-L: measured here 56 GB/s against zlib's 6 GB/s,
and every byte of a PUT is checked twice (sealed on the api server, verified on the data
server), every byte of a GET twice more.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator

from isal.isal_zlib import crc32

from lib.errors import CorruptShard
from lib.rs.codec import get_codec
from lib.rs.params import BLOCK_SIZE
from lib.streams import iter_chunks

CRC_SIZE = 4
_CRC = struct.Struct("<I")


def record_size(block_len: int) -> int:
    return get_codec().fragment_size(block_len) + CRC_SIZE


def full_record_size() -> int:
    return record_size(BLOCK_SIZE)


def block_count(size: int) -> int:
    return -(-size // BLOCK_SIZE)


def block_len(size: int, block: int) -> int:
    return min(BLOCK_SIZE, size - block * BLOCK_SIZE)


def shard_size(size: int) -> int:
    """Bytes of every shard file of an object of ``size`` bytes."""
    full, tail = divmod(size, BLOCK_SIZE)
    return full * full_record_size() + (record_size(tail) if tail else 0)


def shard_offset(block: int) -> int:
    return block * full_record_size()


def seal(fragment: bytes) -> bytes:
    """A record: the fragment followed by its CRC-32."""
    return fragment + _CRC.pack(crc32(fragment))


def unseal(record: bytes | memoryview) -> memoryview:
    """The fragment of a record whose CRC-32 matches; CorruptShard otherwise."""
    view = memoryview(record)
    if len(view) <= CRC_SIZE:
        raise CorruptShard(f"record of {len(view)} bytes is too short")
    fragment = view[:-CRC_SIZE]
    (expected,) = _CRC.unpack(view[-CRC_SIZE:])
    if crc32(fragment) != expected:
        raise CorruptShard("record checksum mismatch")
    return fragment


def iter_records(stream) -> Iterator[bytes]:
    """A shard's bytes from ``stream`` one whole record a read (the last may be short), so
    nothing has to re-cut (copy) them before they are checked."""
    return iter_chunks(stream, chunk_size=full_record_size())


def read_record(stream, length: int) -> memoryview:
    """Read one record of ``length`` bytes from ``stream`` and return its verified fragment;
    a short read or a CRC mismatch is CorruptShard."""
    record = stream.read(length)
    if len(record) != length:
        raise CorruptShard(f"short read ({len(record)} of {length} bytes)")
    return unseal(record)


def check_records(data: bytes | memoryview) -> None:
    """Verify a run of whole records (all full-size except possibly the last)."""
    view = memoryview(data)
    step = full_record_size()
    for start in range(0, len(view), step):
        unseal(view[start:start + step])
