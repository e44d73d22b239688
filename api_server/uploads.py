"""Resumable uploads (BOOK chapter 6): POST /objects/<name>, then HEAD/PUT /temp/<token>.

* ``POST /objects/<name>`` with ``Digest: SHA-256=<b64>`` and ``Size: <bytes>`` answers 201
  with ``Location: /temp/<token>``, or 200 with ``Version`` at once when the content is
  already stored (dedup) or empty.
* ``HEAD /temp/<token>`` answers the bytes safely received in ``Content-Length`` (also in
  ``Upload-Offset``; ``Upload-Length`` is the object's size).
* ``PUT /temp/<token>`` with ``Range: bytes=<offset>-`` (or ``Content-Range: bytes
  <offset>-<last>/<size>``; none means 0) appends the body.  ``offset`` must be exactly the
  bytes received so far, else 416 with ``Upload-Offset``.  A piece may have any length and may
  end mid-block: nothing is dropped.  A piece cut short by a dying client keeps every byte
  that arrived.  200 with ``Upload-Offset`` after a piece; after the last byte, the object's
  digest is checked: 200 with ``Version`` (a new version), or 400 and nothing kept.
* ``DELETE /temp/<token>`` abandons the upload.

The token is checked (signature, then expiry) before anything else, so a forged one (403) or
an expired one (404) never makes the api server contact anybody.  The state lives on the data
servers (``lib/rs/resumable.py``): any api server can serve any request of any upload.
"""
from __future__ import annotations

import email.utils
import logging
import re
import time

from flask import Blueprint, Response, current_app, request

from api_server.objects import object_name
from lib.errors import BadRequest, HashMismatch, SizeMismatch
from lib.hashing import sha256_b64
from lib.headers import parse_digest, parse_size
from lib.rs.params import ALL_SHARDS, BLOCK_SIZE
from lib.rs.resumable import Progress, Upload, UploadGone, create_upload
from lib.secret import cluster_secret
from lib.streams import iter_chunks
from lib.upload_token import UploadToken, sign, verify

log = logging.getLogger(__name__)
bp = Blueprint("uploads", __name__)

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d+)\s*-\s*(\d*)\s*$")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)\s*-\s*(\d+)\s*/\s*(\d+|\*)\s*$")


def _api():
    return current_app.extensions["tessera.api"]


def _quorum(api) -> int:
    return min(api.config.write_quorum, ALL_SHARDS)


def _upload(api, text: str) -> Upload:
    """The upload a token names; raises before any network traffic when it is not ours or
    has expired."""
    token = verify(text, cluster_secret(api.config))
    return Upload(api.client, token, _quorum(api))


def _new_version(api, name: str, size: int, hash_: str, shared: bool = True,
                 missing: list[int] | None = None) -> Response:
    version = api.layer.add_version(api.config.book_bucket, name, hash_, size, shared=shared,
                                    missing=missing or ())
    return Response(status=200, headers={"Version": str(version.number),
                                         "Upload-Offset": str(size)})


@bp.post("/objects/<anypath:name>")
def create(name: str) -> Response:
    api = _api()
    name = object_name("/objects/")
    hash_ = parse_digest(request.headers.get("Digest"))
    size = parse_size(request.headers.get("Size"))
    if size == 0:
        if hash_ != sha256_b64(b""):
            raise HashMismatch(f"an empty object hashes to {sha256_b64(b'')}, not {hash_}")
        return _new_version(api, name, 0, hash_, shared=False)     # no shards to store
    stored = api.metadata.hash_size(hash_)
    if stored is not None and stored != size:
        raise SizeMismatch(f"content {hash_} has {stored} bytes, Size said {size}")
    if api.layer.shareable(hash_, size):
        return _new_version(api, name, size, hash_)          # dedup: nothing to upload
    expires = int(time.time() + api.config.temp_ttl)
    token = create_upload(api.client, api.registry, name, size, hash_,
                          _quorum(api), expires)
    log.info("upload of %r (%d bytes, %s) started on %s", name, size, hash_, token.servers)
    return Response(status=201, headers={
        "Location": f"/temp/{sign(token, cluster_secret(api.config))}",
        "Upload-Expires": email.utils.formatdate(expires, usegmt=True)})


def _progress(upload: Upload, api) -> Progress | None:
    """The upload's progress; None when it is gone because it completed into the version
    the client wanted (so a client whose last answer was lost learns it succeeded)."""
    try:
        return upload.probe()
    except UploadGone:
        latest = api.metadata.version(api.config.book_bucket, upload.token.name)
        if latest is not None and latest.hash == upload.token.hash:
            return None
        raise


def _offset_headers(token: UploadToken, received: int) -> dict[str, str]:
    return {"Upload-Offset": str(received), "Upload-Length": str(token.size)}


@bp.route("/temp/<token>", methods=["HEAD"])
def head(token: str) -> Response:
    api = _api()
    upload = _upload(api, token)
    progress = _progress(upload, api)
    received = upload.size if progress is None else progress.received
    response = Response(status=200, headers=_offset_headers(upload.token, received),
                        mimetype="text/plain")
    response.headers["Content-Length"] = str(received)
    return response


def _piece_offset() -> int:
    """Where the body goes: ``Range: bytes=<offset>-`` as in the book, or a standard
    ``Content-Range: bytes <first>-<last>/<size>``; neither means 0."""
    value = request.headers.get("Range")
    if value:
        match = _RANGE.match(value)
        if not match:
            raise BadRequest(f"expected Range: bytes=<offset>-, got {value!r}")
        return int(match.group(1))
    value = request.headers.get("Content-Range")
    if value:
        match = _CONTENT_RANGE.match(value)
        if not match:
            raise BadRequest(f"expected Content-Range: bytes <first>-<last>/<size>, "
                             f"got {value!r}")
        return int(match.group(1))
    return 0


def _client_body(state: dict):
    """The request body; a client that goes away just ends it (what arrived is kept)."""
    try:
        yield from iter_chunks(request.stream, chunk_size=BLOCK_SIZE)
    except Exception as exc:          # werkzeug ClientDisconnected, socket errors
        state["cut"] = exc
        log.info("client sending a piece went away: %s", exc)


@bp.put("/temp/<token>")
def put(token: str) -> Response:
    api = _api()
    upload = _upload(api, token)
    offset = _piece_offset()
    progress = _progress(upload, api)
    if progress is None:
        if offset == upload.size and not request.content_length:
            return Response(status=200, headers=_offset_headers(upload.token, upload.size))
        raise UploadGone("this upload is already complete")
    if offset != progress.received:
        return Response(f"this upload has {progress.received} bytes; send the piece that "
                        f"starts there (Range: bytes={progress.received}-)\n", status=416,
                        mimetype="text/plain",
                        headers=_offset_headers(upload.token, progress.received))
    length = request.content_length
    if length is not None and offset + length > upload.size:
        raise SizeMismatch(f"a piece of {length} bytes at {offset} goes past the object's "
                           f"Size ({upload.size} bytes)")
    state: dict = {}
    began = time.monotonic()
    progress = upload.append(progress, _client_body(state))
    log.info("upload of %s: %d bytes stored in %.2fs", upload.token.hash,
             progress.received - offset, time.monotonic() - began)
    headers = _offset_headers(upload.token, progress.received)
    if progress.received < upload.size:
        log.info("upload of %s: %d of %d bytes%s", upload.token.hash, progress.received,
                 upload.size, " (client went away)" if state else "")
        return Response(status=200, headers=headers)
    return _complete(api, upload, progress)


def _complete(api, upload: Upload, progress: Progress) -> Response:
    token = upload.token
    began = time.monotonic()
    try:
        committed = upload.complete(progress)
    except HashMismatch:
        upload.abort()
        raise
    log.info("upload of %s verified and committed in %.2fs", token.hash,
             time.monotonic() - began)
    missing = [i for i in range(ALL_SHARDS) if i not in committed]
    try:
        return _new_version(api, token.name, token.size, token.hash, shared=False,
                            missing=missing)
    finally:
        upload.cleanup(committed)


@bp.delete("/temp/<token>")
def abandon(token: str) -> Response:
    api = _api()
    upload = _upload(api, token)
    upload.abort()
    return Response(status=200)

