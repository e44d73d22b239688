"""Reed-Solomon round trips: every way of losing or damaging up to PARITY_SHARDS shards."""
import itertools
import struct
import zlib

import pytest

from lib.errors import CorruptShard
from lib.rs import layout
from lib.rs.codec import get_codec
from lib.rs.params import ALL_SHARDS, BLOCK_SIZE, DATA_SHARDS, PARITY_SHARDS
from tests.conftest import Body

SIZES = [0, 1, 3, 4, 5, 42, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1, 3 * BLOCK_SIZE + 12345]
LOSSES = [c for n in range(PARITY_SHARDS + 1) for c in itertools.combinations(range(ALL_SHARDS), n)]


def encode_object(data: bytes) -> list[list[bytes]]:
    """Per block, the sealed records of every shard."""
    codec = get_codec()
    return [[layout.seal(f) for f in codec.encode(data[b:b + BLOCK_SIZE])]
            for b in range(0, len(data), BLOCK_SIZE)]


def decode_object(blocks: list[list[bytes | None]], size: int) -> bytes:
    codec = get_codec()
    out = []
    for number, records in enumerate(blocks):
        fragments = {}
        for i, record in enumerate(records):
            if record is None:
                continue
            try:
                fragments[i] = layout.unseal(record)
            except CorruptShard:
                continue
        out.append(codec.decode(fragments, layout.block_len(size, number)))
    return b"".join(out)


@pytest.mark.parametrize("size", SIZES)
def test_every_loss_of_up_to_two_shards_decodes(size):
    data = Body(size, seed=size).bytes()
    blocks = encode_object(data)
    assert len(blocks) == layout.block_count(size)
    for lost in LOSSES:
        damaged = [[None if i in lost else r for i, r in enumerate(recs)] for recs in blocks]
        assert decode_object(damaged, size) == data, lost


@pytest.mark.parametrize("size", [1, BLOCK_SIZE + 1])
def test_every_corruption_of_up_to_two_shards_is_caught_and_decoded(size):
    data = Body(size, seed=7).bytes()
    blocks = encode_object(data)
    for bad in LOSSES:
        damaged = []
        for recs in blocks:
            row = []
            for i, record in enumerate(recs):
                if i in bad:
                    flipped = bytearray(record)
                    flipped[len(flipped) // 2] ^= 0x40
                    record = bytes(flipped)
                row.append(record)
            damaged.append(row)
        assert decode_object(damaged, size) == data, bad


def test_three_missing_shards_cannot_decode():
    codec = get_codec()
    fragments = dict(enumerate(codec.encode(b"x" * 1000)))
    for i in range(PARITY_SHARDS + 1):
        del fragments[i]
    with pytest.raises(CorruptShard):
        codec.decode(fragments, 1000)


def test_shard_files_have_the_size_layout_predicts():
    for size in SIZES:
        blocks = encode_object(Body(size).bytes())
        for shard in range(ALL_SHARDS):
            assert sum(len(recs[shard]) for recs in blocks) == layout.shard_size(size)


def test_reconstruct_rebuilds_the_exact_missing_records():
    codec = get_codec()
    fragments = codec.encode(Body(BLOCK_SIZE, seed=3).bytes())
    for lost in itertools.combinations(range(ALL_SHARDS), PARITY_SHARDS):
        have = {i: f for i, f in enumerate(fragments) if i not in lost}
        rebuilt = codec.reconstruct(have, list(lost))
        assert all(rebuilt[i] == fragments[i] for i in lost)


def test_data_fragments_are_the_block_itself():
    """The code is systematic: a GET with every data shard decodes nothing."""
    codec = get_codec()
    block = Body(1000, seed=1).bytes()
    fragments = codec.encode(block)
    payload = b"".join(f[codec.header_size:] for f in fragments[:DATA_SHARDS])
    assert payload[:1000] == block


def test_unseal_rejects_short_and_flipped_records():
    record = layout.seal(b"fragment bytes")
    assert bytes(layout.unseal(record)) == b"fragment bytes"
    with pytest.raises(CorruptShard):
        layout.unseal(record[:3])
    with pytest.raises(CorruptShard):
        layout.unseal(b"F" + record[1:])


@pytest.mark.parametrize("fragment", [b"", b"x", bytes(range(256)) * 1025])
def test_records_end_with_zlibs_crc32(fragment):
    """The on-disk format is zlib's CRC-32, whichever library computes it."""
    record = layout.seal(fragment)
    assert record == fragment + struct.pack("<I", zlib.crc32(fragment))
    if fragment:
        assert bytes(layout.unseal(record)) == fragment
