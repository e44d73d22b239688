"""Listing with prefix, delimiter and markers, on top of each backend's key-ordered pages.

Every backend offers the same primitive: rows of one kind (current versions, versions, uploads)
in key order from a cursor, up to an end key.  This module turns that into S3's listings:

* a ``delimiter`` rolls every key that has it after the ``prefix`` into one CommonPrefix;
  once a prefix is seen, the walk jumps over all its keys with one seek (``successor``), so a
  listing of 1,000 prefixes over a million keys costs about 1,000 index seeks, not a scan;
* ``limit`` counts keys and prefixes together, and one more entry is looked for so
  ``truncated`` is exact;
* a marker that falls inside a CommonPrefix (including the prefix itself, which is what the
  previous page's NextMarker was) resumes after that whole prefix, so it is never repeated.

Keys compare as code points (UTF-8 byte order) in Python and in every backend.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

_T = TypeVar("_T")

#: Rows fetched per backend query at most.
BATCH = 1000
_MAX_CHAR = 0x10FFFF


def successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix``; None when
    no such string exists (every character is U+10FFFF)."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < _MAX_CHAR:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:        # surrogates are not text: skip them
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


@dataclasses.dataclass(frozen=True)
class Cursor:
    """Where a walk goes on: rows of ``key`` after ``inner`` (all of them when ``inner`` is
    None and ``inclusive``), then the keys after ``key``."""

    key: str
    inner: object = None
    inclusive: bool = False


@dataclasses.dataclass
class Page(Generic[_T]):
    """One page of a listing: rows and CommonPrefixes in key order, interleaved in
    ``items`` as ``("row", row)`` or ``("prefix", prefix)``."""

    items: list[tuple[str, object]]
    truncated: bool

    @property
    def rows(self) -> list[_T]:
        return [value for kind, value in self.items if kind == "row"]  # type: ignore[misc]

    @property
    def prefixes(self) -> list[str]:
        return [value for kind, value in self.items if kind == "prefix"]  # type: ignore[misc]

    @property
    def last(self) -> tuple[str, object] | None:
        return self.items[-1] if self.items else None


def start_cursor(prefix: str, delimiter: str, marker: str, inner: object = None) -> Cursor:
    """The cursor for a listing that resumes after ``marker`` (S3's marker, start-after,
    continuation token, key-marker); ``inner`` positions inside the marker's rows."""
    if delimiter and marker.startswith(prefix):
        at = marker.find(delimiter, len(prefix))
        if at >= 0:                    # inside (or at) a CommonPrefix: it was listed already
            after = successor(marker[:at + len(delimiter)])
            return Cursor(after if after is not None else marker, None, after is not None)
    if marker < prefix:
        return Cursor(prefix, None, True)
    return Cursor(marker, inner, inner is not None)


def walk(fetch: Callable[[Cursor, str | None, int], Sequence[_T]],
         advance: Callable[[_T], Cursor], key_of: Callable[[_T], str],
         prefix: str, delimiter: str, cursor: Cursor, limit: int) -> Page[_T]:
    """List up to ``limit`` rows and CommonPrefixes from ``cursor``.

    :param fetch: ``fetch(cursor, end, n)``: up to ``n`` rows from ``cursor`` with keys below
        ``end`` (None: no bound), in order.
    :param advance: the cursor just after a row.
    """
    items: list[tuple[str, object]] = []
    if limit <= 0:
        return Page(items, False)
    end = successor(prefix) if prefix else None
    rolled: str | None = None          # the CommonPrefix whose keys are being skipped
    while len(items) <= limit:
        want = min(BATCH, limit + 1 - len(items))
        batch = fetch(cursor, end, want)
        for row in batch:
            key = key_of(row)
            if rolled is not None and key.startswith(rolled):
                continue
            rolled = None
            at = key.find(delimiter, len(prefix)) if delimiter else -1
            if at >= 0:
                rolled = key[:at + len(delimiter)]
                items.append(("prefix", rolled))
                after = successor(rolled)
                if after is None:
                    return Page(items[:limit], len(items) > limit)
                cursor = Cursor(after, None, True)
            else:
                items.append(("row", row))
                cursor = advance(row)
            if len(items) > limit:
                break
        if len(batch) < want:
            break
    return Page(items[:limit], len(items) > limit)
