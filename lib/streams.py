"""Bounded-memory helpers for byte streams: read in chunks, re-cut to fixed blocks."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO, Protocol

#: Size of one read from a socket or file (a *chunk*).
CHUNK_SIZE = 256 * 1024


class Readable(Protocol):
    def read(self, size: int = ...) -> bytes: ...


def iter_chunks(stream: Readable | BinaryIO, limit: int | None = None,
                chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield chunks of ``stream`` until EOF, or until ``limit`` bytes were read."""
    remaining = limit
    while remaining is None or remaining > 0:
        want = chunk_size if remaining is None else min(chunk_size, remaining)
        chunk = stream.read(want)
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def read_exact(stream: Readable, size: int) -> bytes:
    """Read exactly ``size`` bytes, or fewer only at EOF."""
    first = stream.read(size)
    if len(first) == size or not first:
        return first
    parts = [first]
    got = len(first)
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut arbitrary chunks into blocks of exactly ``size`` bytes; the last may be short.

    Holds at most one block plus one chunk in memory.
    """
    pending: list[bytes] = []
    have = 0
    for chunk in chunks:
        if not chunk:
            continue
        if not pending and len(chunk) == size:
            yield chunk
            continue
        pending.append(chunk)
        have += len(chunk)
        if have < size:
            continue
        data = b"".join(pending)
        view = memoryview(data)
        start = 0
        while have - start >= size:
            yield bytes(view[start:start + size])
            start += size
        rest = bytes(view[start:])
        pending = [rest] if rest else []
        have = len(rest)
    if have:
        yield b"".join(pending)
