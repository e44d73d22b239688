"""Shared test helpers: deterministic streaming bodies with a running hash."""
from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Iterator


class Body:
    """``size`` pseudo-random bytes from ``seed``, produced in chunks, never all at once."""

    def __init__(self, size: int, seed: int = 0, chunk: int = 1 << 20):
        self.size = size
        self.seed = seed
        self.chunk = chunk
        sha = hashlib.sha256()
        for piece in self:
            sha.update(piece)
        self.hash = base64.b64encode(sha.digest()).decode()

    def __iter__(self) -> Iterator[bytes]:
        rng = random.Random(self.seed)
        left = self.size
        while left:
            n = min(self.chunk, left)
            yield rng.randbytes(n)
            left -= n

    def __len__(self) -> int:
        return self.size

    def bytes(self) -> bytes:
        return b"".join(self)


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class Sized:
    """An iterable body with a length, so requests streams it with Content-Length."""

    def __init__(self, chunks, size: int):
        self._chunks = chunks
        self.size = size

    def __iter__(self):
        return iter(self._chunks)

    def __len__(self) -> int:
        return self.size
