"""/objects/<name>: the book's PUT, GET and DELETE, on the book bucket of the object layer.

A thin translator: the object layer stores, deduplicates, reads and repairs; this module maps
the book's headers to it and its answers back.

* PUT needs ``Digest: SHA-256=<base64>``; the body is checked against it before anything is
  committed (BOOK W5, W6, W9).  ``If-None-Match: *`` (create only), ``If-Match: "<hash>"``
  (replace only that content) and ``If-Version: <n>`` (replace only version n) make it
  conditional: 412 when the condition fails, checked atomically with the version write.
* GET reads only the blocks a Range needs, answers an error status before sending a byte when
  the object cannot be read (BOOK W15, W16), and gzips when the client accepts it
  (``api_server/encoding.py``).  ``?version=N`` names a version by its number.
* DELETE adds a delete marker (404 if there is no object to delete).
"""
from __future__ import annotations

import logging
from urllib.parse import unquote_to_bytes, urlsplit

from flask import Blueprint, Response, current_app, request

from api_server import encoding
from api_server.body import client_body
from lib.errors import BadRequest, HashMismatch, InvalidName, NoSuchKey, NoSuchVersion
from lib.headers import content_range, parse_digest, parse_etags, parse_range
from lib.metadata import MAX_SIZE, Version, WriteCondition
from lib.objects import Expect

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


def int_arg(name: str, default: int | None = None, minimum: int = 0) -> int | None:
    """A decimal query parameter in [minimum, 2**63): 400 otherwise (BOOK API ranges)."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) > MAX_SIZE or int(raw) < minimum:
        raise BadRequest(f"{name} must be an integer from {minimum} to {MAX_SIZE}, got {raw!r}")
    return int(raw)


def _version_arg() -> int | None:
    version = int_arg("version")
    return None if version == 0 else version


def write_condition() -> WriteCondition | None:
    """The book PUT's preconditions: If-None-Match: *, If-Match: "<hash>", If-Version: n."""
    none_match = parse_etags(request.headers.get("If-None-Match"))
    match = parse_etags(request.headers.get("If-Match"))
    raw_version = request.headers.get("If-Version")
    if none_match is None and match is None and raw_version is None:
        return None
    if none_match is not None and none_match != ["*"]:
        raise BadRequest("If-None-Match on a PUT must be *")
    if match is not None and len(match) != 1:
        raise BadRequest('If-Match on a PUT names one content: If-Match: "<hash>"')
    number = None
    if raw_version is not None:
        if not raw_version.strip().isdigit() or not 0 < int(raw_version) <= MAX_SIZE:
            raise BadRequest(f"If-Version must be a version number, got {raw_version!r}")
        number = int(raw_version)
    hash_ = match[0] if match and match[0] != "*" else None
    return WriteCondition(absent=none_match is not None, hash=hash_, number=number,
                          etag="*" if match == ["*"] else None)


@bp.put("/objects/<anypath:name>")
def put_object(name: str) -> Response:
    api = _api()
    name = object_name("/objects/")
    hash_ = parse_digest(request.headers.get("Digest"))
    expect = Expect(size=request.content_length, sha256=hash_, sha256_mismatch=HashMismatch)
    version = api.layer.put(api.config.book_bucket, name, client_body(request.stream), expect,
                            condition=write_condition())
    return Response(status=200, headers={"Version": str(version.number),
                                         "ETag": book_etag(version)})


def book_etag(version: Version) -> str:
    """The book API's entity tag: the quoted content hash (a multipart object's S3 ETag)."""
    return f'"{version.hash or version.etag}"'


@bp.get("/objects/<anypath:name>")
def get_object(name: str) -> Response:
    api = _api()
    name = object_name("/objects/")
    number = _version_arg()
    try:
        if request.method == "HEAD":
            return _head(api, name, number)
        reader = api.layer.open(api.config.book_bucket, name, number=number,
                                byte_range=request.headers.get("Range"))
    except (NoSuchKey, NoSuchVersion) as exc:
        marker = getattr(exc, "delete_marker", None)
        if marker is not None:
            raise NoSuchKey(f"object {name!r} version {marker.number} is deleted") from None
        raise NoSuchKey(f"no object {name!r}" + (f" version {number}" if number else "")) \
            from None
    version = reader.version
    headers = {"Accept-Ranges": "bytes", **_version_headers(version), "Vary": "Accept-Encoding",
               "Content-Length": str(reader.length)}
    if reader.partial:
        headers["Content-Range"] = content_range(reader.first, reader.last, version.size)
    elif version.hash:
        headers["Digest"] = f"SHA-256={version.hash}"
    status = 206 if reader.partial else 200
    if not reader.length:
        reader.close()
        return Response(b"", status=status, headers=headers,
                        mimetype="application/octet-stream")
    body = iter(reader)
    head = next(body, b"")
    content = encoding.encode(request.headers.get("Accept-Encoding"), head,
                              _chain(head, body), headers)
    return Response(content, status=status, headers=headers,
                    mimetype="application/octet-stream")


def _head(api, name: str, number: int | None) -> Response:
    """HEAD reads metadata only: no shard is opened (ranges resolved against the size)."""
    version = api.layer.head(api.config.book_bucket, name, number=number)
    headers = {"Accept-Ranges": "bytes", **_version_headers(version), "Vary": "Accept-Encoding",
               "Content-Length": str(version.size)}
    span = parse_range(request.headers.get("Range"), version.size)
    if span is not None:
        headers["Content-Length"] = str(span[1] - span[0] + 1)
        headers["Content-Range"] = content_range(span[0], span[1], version.size)
    elif version.hash:
        headers["Digest"] = f"SHA-256={version.hash}"
    response = Response(b"", status=206 if span is not None else 200,
                        mimetype="application/octet-stream")
    response.headers.update(headers)          # after the body: its length is not ours
    return response


def _version_headers(version: Version) -> dict[str, str]:
    """Version and ETag; a miss answered from the bucket's origin has neither yet (it gets
    them when stored, ``lib/objects/origin.py``) unless the origin declared its hash."""
    if not version.number:
        return {"ETag": f'"{version.hash}"'} if version.hash else {}
    return {"Version": str(version.number), "ETag": book_etag(version)}


def _chain(head: bytes, body):
    yield head
    yield from body


@bp.delete("/objects/<anypath:name>")
def delete_object(name: str) -> Response:
    api = _api()
    name = object_name("/objects/")
    bucket = api.config.book_bucket
    try:
        api.layer.head(bucket, name)
    except NoSuchKey:
        raise NoSuchKey(f"no object {name!r}") from None
    result = api.layer.delete(bucket, name)
    return Response(status=200, headers={"Version": str(result.version.number)})
