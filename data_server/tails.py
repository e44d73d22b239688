"""/tail/<uuid>: the partial last block of a resumable upload, kept beside its temp object.

Shards are made of records, one per whole block, so a resumable upload's piece that ends in
the middle of a block cannot be encoded yet.  The book drops those bytes silently (W17); we
keep them here, raw, until the next piece completes the block.  A tail belongs to the temp
object of the same uuid (a tail can only be written while that temp object exists) and holds
the object offset it starts at, so the api server can tell a current tail from a stale one::

    STORAGE_ROOT/tails/<uuid>     8-byte big-endian object offset, then the bytes

PUT replaces it atomically (written aside, fsynced, renamed): a crash leaves the old tail or
the new one, never a mix.  GET/HEAD answer it with ``Tail-Offset``; DELETE removes it.  Tails
whose temp object is gone (committed, aborted, expired) or older than TEMP_TTL are swept.
"""
from __future__ import annotations

import logging
import os
import re
import struct
import time
import uuid as uuidlib
from pathlib import Path

from flask import Blueprint, Response, current_app, request

from data_server.storage import fsync_dir
from lib.errors import BadRequest, ObjectNotFound
from lib.headers import parse_size
from lib.rs.params import BLOCK_SIZE

log = logging.getLogger(__name__)
bp = Blueprint("tails", __name__)

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_OFFSET = struct.Struct(">Q")
#: A tail is less than one block.
MAX_TAIL = BLOCK_SIZE


def _storage():
    return current_app.extensions["tessera.node"].storage


def tails_dir(storage) -> Path:
    directory = storage.root / "tails"
    directory.mkdir(exist_ok=True)
    return directory


def _path(storage, uuid: str) -> Path:
    if not _UUID.match(uuid):
        raise ObjectNotFound(f"no tail {uuid!r}")
    return tails_dir(storage) / uuid


@bp.put("/tail/<uuid>")
def put_tail(uuid: str) -> Response:
    storage = _storage()
    path = _path(storage, uuid)
    storage.temp_info(uuid)                      # 404 unless the upload's temp object exists
    offset = parse_size(request.headers.get("Tail-Offset"), "Tail-Offset")
    length = request.content_length
    if length is None or length > MAX_TAIL:
        raise BadRequest(f"a tail needs a Content-Length of at most {MAX_TAIL} bytes")
    data = request.stream.read(length)
    if len(data) != length:
        raise BadRequest(f"tail body has {len(data)} of {length} bytes")
    aside = path.with_name(f".{uuid}.{uuidlib.uuid4().hex}.tmp")
    with open(aside, "wb") as f:
        f.write(_OFFSET.pack(offset) + data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(aside, path)
    fsync_dir(path.parent)
    return Response(headers={"Tail-Offset": str(offset)})


@bp.get("/tail/<uuid>")   # HEAD too: the same headers, no body
def get_tail(uuid: str) -> Response:
    try:
        raw = _path(_storage(), uuid).read_bytes()
    except FileNotFoundError:
        raise ObjectNotFound(f"no tail {uuid}") from None
    (offset,) = _OFFSET.unpack_from(raw)
    return Response(raw[_OFFSET.size:], headers={"Tail-Offset": str(offset)},
                    mimetype="application/octet-stream")


@bp.delete("/tail/<uuid>")
def delete_tail(uuid: str) -> Response:
    _path(_storage(), uuid).unlink(missing_ok=True)
    return Response()


def expire(storage, ttl: float, now: float | None = None) -> int:
    """Remove tails whose temp object is gone or that are older than ``ttl``; how many."""
    now = time.time() if now is None else now
    removed = 0
    for path in tails_dir(storage).iterdir():
        try:
            stale = now - path.stat().st_mtime > ttl
            if not stale and _UUID.match(path.name):
                try:
                    storage.temp_info(path.name)
                except ObjectNotFound:
                    stale = True
            elif not _UUID.match(path.name):
                stale = now - path.stat().st_mtime > 60      # a write that died half-way
            if stale:
                path.unlink(missing_ok=True)
                removed += 1
        except FileNotFoundError:
            continue
    return removed
