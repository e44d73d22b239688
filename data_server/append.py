"""PATCH /temp/<uuid>: append to a temp object, optionally only at a given offset.

Plain PATCH appends the body as the book does.  Resumable uploads send ``Temp-Offset: <n>``:

* the append happens only if the temp object holds exactly ``n`` bytes when it gets the
  per-temp lock (storage serialises appends); otherwise nothing is written and the answer is
  409 with ``Temp-Size``.  Two api servers retrying one upload can thus never append the same
  block twice;
* only whole records with a valid CRC are written: a body cut short (the api server died or
  lost its connection) keeps every whole record that arrived, fsynced, and drops the partial
  one, so a temp object never holds a torn record that would poison the next append.  The
  answer's ``Temp-Size`` says what was kept.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from flask import Response, request

from lib.errors import Conflict
from lib.headers import parse_size
from lib.rs import layout
from lib.streams import rechunk

log = logging.getLogger(__name__)


class OffsetConflict(Conflict):
    def __init__(self, size: int):
        super().__init__(f"temp object holds {size} bytes")
        self.size = size


def patch_temp(storage, uuid: str) -> Response:
    offset = request.headers.get("Temp-Offset")
    chunks: Iterable[bytes] = layout.iter_records(request.stream)
    if offset is not None:
        info = storage.temp_info(uuid)
        chunks = _records_at(chunks, storage.temp / f"{uuid}.dat",
                             parse_size(offset, "Temp-Offset"), info.size)
    try:
        size = storage.append_temp(uuid, chunks)
    except OffsetConflict as exc:
        return Response(f"{exc}, not {offset}\n", status=409, mimetype="text/plain",
                        headers={"Temp-Size": str(exc.size)})
    return Response(headers={"Temp-Size": str(size)})


def _records_at(chunks: Iterable[bytes], path: Path, offset: int,
                declared: int | None) -> Iterator[bytes]:
    """Whole verified records, if the file holds ``offset`` bytes (checked under the lock:
    storage pulls the first chunk after it locked the file)."""
    size = path.stat().st_size
    if size != offset:
        raise OffsetConflict(size)
    full = layout.full_record_size()
    for record in rechunk(_until_cut(chunks), full):
        if len(record) < full and size + len(record) != declared:
            log.warning("%s: dropped a partial record of %d bytes at %d (body cut short)",
                        path.name, len(record), size)
            return
        layout.unseal(record)                # CorruptShard: the sender must resend
        size += len(record)
        yield record


def _until_cut(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The body's chunks; a body cut short just ends (the whole records before it count)."""
    try:
        yield from chunks
    except Exception as exc:                 # werkzeug ClientDisconnected, socket errors
        log.warning("append body cut short: %s", exc)
