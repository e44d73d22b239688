"""The only import of the erasure-code library (pyeclib, ISA-L Reed-Solomon Vandermonde).

reedsolo was measured here at about 1 MB/s; pyeclib's ``isa_l_rs_vand`` encodes at 4-6 GB/s
and decodes faster.  Swapping libraries touches this file only.

A block of L bytes becomes ``ALL_SHARDS`` fragments.  Each fragment is pyeclib's 80-byte header
followed by ``ceil(L / DATA_SHARDS)`` bytes of payload; the code is systematic, so the payloads
of fragments 0..DATA_SHARDS-1 concatenated and cut to L are the block itself.
"""
from __future__ import annotations

import functools

from pyeclib.ec_iface import ECDriver

from lib.errors import CorruptShard
from lib.rs.params import DATA_SHARDS, PARITY_SHARDS


class Codec:
    """Encode a block into fragments and rebuild missing fragments from any DATA of them."""

    def __init__(self, data: int = DATA_SHARDS, parity: int = PARITY_SHARDS):
        self.data = data
        self.parity = parity
        self._driver = ECDriver(k=data, m=parity, ec_type="isa_l_rs_vand")
        self.header_size = len(self._driver.encode(b"x")[0]) - 1

    def fragment_size(self, block_len: int) -> int:
        return self.header_size + -(-block_len // self.data)

    def encode(self, block: bytes) -> list[bytes]:
        """Fragments 0..ALL_SHARDS-1 of one block."""
        return self._driver.encode(block)

    def decode(self, fragments: dict[int, bytes | memoryview], block_len: int) -> bytes:
        """The block from any ``data`` fragments (fast path: all data fragments present)."""
        if all(i in fragments for i in range(self.data)):
            h = self.header_size
            out = b"".join(memoryview(fragments[i])[h:] for i in range(self.data))
            return out[:block_len] if len(out) != block_len else out
        if len(fragments) < self.data:
            raise CorruptShard(f"{len(fragments)} fragments cannot rebuild a block")
        return self._driver.decode([bytes(f) for f in fragments.values()])[:block_len]

    def reconstruct(self, fragments: dict[int, bytes | memoryview],
                    missing: list[int]) -> dict[int, bytes]:
        """Fragments ``missing`` rebuilt from the ``fragments`` we have."""
        if len(fragments) < self.data:
            raise CorruptShard(f"{len(fragments)} fragments cannot rebuild {missing}")
        rebuilt = self._driver.reconstruct([bytes(f) for f in fragments.values()],
                                           list(missing))
        return dict(zip(missing, rebuilt))


@functools.lru_cache(maxsize=None)
def get_codec(data: int = DATA_SHARDS, parity: int = PARITY_SHARDS) -> Codec:
    return Codec(data, parity)
