"""/objects/<name>: PUT stores a new version, GET reads one back, DELETE adds a delete marker.

PUT streams the body through SHA-256 and the encoder straight to six data servers; nothing
is committed unless the digest matches, and the version is written only after at least
``write_quorum`` shards are committed (BOOK W5, W6, W9).  Content already stored is not
stored again (dedup), but its body is still checked against the digest.
GET reads from any DATA_SHARDS shards, only the blocks a Range needs, and answers an error
status before sending a byte when the object cannot be read (BOOK W15, W16).
"""
from __future__ import annotations

import logging
from urllib.parse import unquote_to_bytes, urlsplit

from flask import Blueprint, Response, current_app, request

from api_server import encoding
from lib.errors import (BadRequest, ContentGone, HashMismatch, InvalidName,
                        NotEnoughDataServers, ObjectNotFound, ObjectStoreError, SizeMismatch)
from lib.hashing import HashingIter
from lib.headers import content_range, parse_digest, parse_range
from lib.metadata import Metadata
from lib.rs.get import RSGetStream
from lib.rs.params import ALL_SHARDS, BLOCK_SIZE, DATA_SHARDS
from lib.rs.put import RSPutStream, put_short_object
from lib.streams import iter_chunks, rechunk

log = logging.getLogger(__name__)
bp = Blueprint("objects", __name__)

MAX_NAME_BYTES = 1024


def _api():
    return current_app.extensions["tessera.api"]


def object_name(prefix: str, required: bool = True) -> str:
    """The whole path after ``prefix``, percent-decoded exactly once, as UTF-8 (BOOK W25).

    Read from the raw request URI, so ``%2F`` and ``/`` stay distinct from what the WSGI
    server already decoded and invalid UTF-8 is refused rather than replaced.
    """
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw:
        path = urlsplit(raw).path if "://" in raw[:12] else raw.split("?", 1)[0]
        encoded = path[len(prefix):] if path.startswith(prefix) else ""
        try:
            name = unquote_to_bytes(encoded).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidName("object names must be UTF-8") from None
    else:
        name = request.path[len(prefix):]
    if not name:
        if required:
            raise InvalidName("an object name is required: /objects/<name>")
        return ""
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidName(f"object names are at most {MAX_NAME_BYTES} bytes of UTF-8")
    if "\x00" in name:
        raise InvalidName("object names may not contain NUL")
    return name


def _version_arg() -> int | None:
    raw = request.args.get("version")
    if raw is None or raw == "0":
        return None
    if not raw.isdigit():
        raise BadRequest(f"version must be a positive integer, got {raw!r}")
    return int(raw)


def _targets(api) -> tuple[list[str], int]:
    quorum = min(api.config.write_quorum, ALL_SHARDS)
    targets = api.registry.choose(ALL_SHARDS)
    if len(targets) < quorum:
        raise NotEnoughDataServers(
            f"{len(targets)} live data servers; a PUT needs at least {quorum}")
    return targets, quorum


def _store_short(api, hash_: str, block: bytes) -> list[int]:
    """Store a body of at most one block, digest already checked; returns missing shards."""
    targets, quorum = _targets(api)
    committed = put_short_object(api.client, api.registry, targets, hash_, block, quorum)
    api.locator.remember(hash_, committed)
    return [i for i in range(ALL_SHARDS) if i not in committed]


def _store(api, hash_: str, size: int | None, chunks: HashingIter) -> list[int]:
    """Encode and commit the body; returns the shard indexes left missing (< quorum: raise)."""
    targets, quorum = _targets(api)
    with RSPutStream(api.client, dict(enumerate(targets)), hash_, size, quorum,
                     api.registry) as put:
        for block in rechunk(chunks, BLOCK_SIZE):
            put.write(block)
        put.finish(api.config.http_timeout)
        _check_body(chunks, hash_, size)
        committed = put.commit()
    api.locator.remember(hash_, committed)
    return [i for i in range(ALL_SHARDS) if i not in committed]


def _check_body(chunks: HashingIter, hash_: str, size: int | None) -> None:
    if size is not None and chunks.size != size:
        raise SizeMismatch(f"body has {chunks.size} bytes, Content-Length said {size}")
    if chunks.b64() != hash_:
        raise HashMismatch(f"body hashes to SHA-256={chunks.b64()}, Digest said {hash_}")


def _is_stored(api, hash_: str) -> bool:
    """Dedup check: the metadata store first (no broadcast for new content, BOOK W1)."""
    return api.metadata.has_hash(hash_) and len(api.locator.locate(hash_)) >= DATA_SHARDS


@bp.put("/objects/<anypath:name>")
def put_object(name: str) -> Response:
    api = _api()
    name = object_name("/objects/")
    hash_ = parse_digest(request.headers.get("Digest"))
    size = request.content_length
    chunks = HashingIter(iter_chunks(request.stream, chunk_size=BLOCK_SIZE))   # no re-cutting
    if size is not None and size <= BLOCK_SIZE:
        block = b"".join(chunks)          # short: check the digest before storing anything
        _check_body(chunks, hash_, size)
        missing = [] if _is_stored(api, hash_) else _store_short(api, hash_, block)
    elif _is_stored(api, hash_):
        for _ in chunks:                 # dedup: store nothing, but check the body all the same
            pass
        _check_body(chunks, hash_, size)
        if not _is_stored(api, hash_):   # its last version deleted and collected meanwhile
            raise ContentGone(f"content {hash_} was removed while the body arrived; "
                              "send it again")
        missing = []
    else:
        missing = _store(api, hash_, size, chunks)
    try:
        meta = api.add_version(name, chunks.size, hash_)
    except Exception:
        log.exception("metadata write for %r failed after its shards were committed", name)
        api.after_failed_version(hash_)
        raise
    if missing:
        api.request_repair(hash_, chunks.size, missing)
    return Response(status=200, headers={"Version": str(meta.version)})


def _lookup(api, name: str) -> Metadata:
    version = _version_arg()
    meta = api.metadata.latest(name) if version is None else api.metadata.get(name, version)
    if meta is None:
        raise ObjectNotFound(f"no object {name!r}" + (f" version {version}" if version else ""))
    if meta.is_delete_marker:
        raise ObjectNotFound(f"object {name!r} version {meta.version} is deleted")
    return meta


@bp.get("/objects/<anypath:name>")
def get_object(name: str) -> Response:
    api = _api()
    meta = _lookup(api, object_name("/objects/"))
    byte_range = parse_range(request.headers.get("Range"), meta.size)
    headers = {"Accept-Ranges": "bytes", "Version": str(meta.version),
               "ETag": f'"{meta.hash}"', "Vary": "Accept-Encoding"}
    if byte_range is None:
        first, last = 0, meta.size - 1
        headers["Digest"] = f"SHA-256={meta.hash}"
    else:
        first, last = byte_range
        headers["Content-Range"] = content_range(first, last, meta.size)
    headers["Content-Length"] = str(last - first + 1)
    status = 206 if byte_range else 200
    if meta.size == 0:
        return Response(b"", status=status, headers=headers, mimetype="application/octet-stream")
    for attempt in range(2):
        hit = api.locator.cached(meta.hash) if attempt == 0 else None
        cached = hit is not None
        locations = hit if cached else api.locator.locate(meta.hash, fresh=True)
        try:
            stream = RSGetStream(api.client, locations, meta.hash, meta.size, first, last)
            body = iter(stream)
            head = next(body)            # fail with a status, not a truncated 200 (BOOK W15)
            break
        except ObjectStoreError as exc:
            if attempt == 0 and len(locations) == ALL_SHARDS:
                api.locator.forget(meta.hash)      # maybe a stale cached answer: ask again
                continue
            log.error("cannot read %r version %d (%s): shards %s located: %s",
                      meta.name, meta.version, meta.hash, sorted(locations), exc)
            raise

    def generate():
        try:
            yield head
            yield from body
        except Exception:
            log.exception("GET %r version %d (%s) failed mid-stream",
                          meta.name, meta.version, meta.hash)
            raise
        finally:
            stream.close()               # also when the client went away mid-body
            missing = [i for i in range(ALL_SHARDS) if i not in locations]
            if missing or stream.failed:
                api.request_repair(meta.hash, meta.size, sorted({*missing, *stream.failed}),
                                   stream.damaged)
            elif cached:
                api.repairer.check_unread(meta.hash, meta.size, {
                    i: a for i, a in locations.items() if i not in stream.opened})

    content = encoding.encode(request.headers.get("Accept-Encoding"), head, generate(), headers)
    return Response(content, status=status, headers=headers,
                    mimetype="application/octet-stream")


@bp.delete("/objects/<anypath:name>")
def delete_object(name: str) -> Response:
    api = _api()
    name = object_name("/objects/")
    latest = api.metadata.latest(name)
    if latest is None or latest.is_delete_marker:
        raise ObjectNotFound(f"no object {name!r}")
    marker = api.metadata.add_version(name, 0, "")
    log.info("deleted %r (delete marker version %d)", name, marker.version)
    return Response(status=200, headers={"Version": str(marker.version)})
