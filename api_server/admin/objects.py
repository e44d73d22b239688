"""The management API's objects: list, search, inspect, upload, delete; and the cluster's
totals and data servers.  JSON translations of the object layer and of ``inspect``.

Paging is by cursor: an answer's ``next_cursor`` (None on the last page) is the ``cursor`` of
the next request.  Uploads stream through the object layer, which computes the digest: a
raw body (``?bucket=&key=``) or a ``multipart/form-data`` whose ``file`` field comes after
any ``bucket`` and ``key`` fields (the key defaults to the file's name).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Response, current_app, jsonify, request
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from api_server.admin import AdminError, bp, inspect
from api_server.body import client_body
from api_server.objects import object_name
from lib.errors import NoSuchVersion
from lib.metadata import MAX_KEY_BYTES, SEARCH_MIN, ObjectMeta, Version
from lib.objects import Expect

log = logging.getLogger(__name__)

#: Page sizes of listings and searches.
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
#: Bytes of form fields accepted before the file of a multipart upload.
MAX_FIELDS_SIZE = 64 * 1024
#: Reads of a multipart/form-data body: the decoder buffers about one read.
FORM_CHUNK = 64 * 1024
#: Longest search accepted (a key is at most MAX_KEY_BYTES).
MAX_QUERY = MAX_KEY_BYTES
#: What ``curl --data-binary`` sends when told nothing: not the object's type.
CURL_DEFAULT_TYPE = "application/x-www-form-urlencoded"


def _api():
    return current_app.extensions["tessera.api"]


def _bad(message: str) -> AdminError:
    return AdminError(400, "InvalidArgument", message)


def _limit() -> int:
    raw = request.args.get("limit", "")
    if raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise _bad(f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw[:20]!r}")
    return int(raw)


def _text(name: str, default: str = "", maximum: int = MAX_KEY_BYTES) -> str:
    value = request.args.get(name, default)
    if len(value.encode()) > maximum or "\x00" in value:
        raise _bad(f"{name} is at most {maximum} bytes and has no NUL")
    return value


def _bucket() -> str:
    return _text("bucket") or _api().config.book_bucket


def _listed(version: Version) -> dict:
    return {"bucket": version.bucket, "key": version.key, "size": version.size,
            "etag": version.etag or None, "number": version.number,
            "last_modified": version.created}


@bp.get("/objects")
def list_objects() -> Response:
    bucket, prefix, cursor = _bucket(), _text("prefix"), _text("cursor")
    delimiter, limit = _text("delimiter"), _limit()
    page = _api().layer.list(bucket, prefix=prefix, delimiter=delimiter, after=cursor,
                             limit=limit)
    last = page.last
    next_cursor = None
    if page.truncated and last is not None:
        next_cursor = last[1] if last[0] == "prefix" else last[1].key
    return jsonify(bucket=bucket, prefix=prefix, objects=[_listed(v) for v in page.rows],
                   prefixes=page.prefixes, next_cursor=next_cursor)


@bp.get("/search")
def search_objects() -> Response:
    q = _text("q", maximum=MAX_QUERY)
    if not q:
        raise _bad("q, the text to find in keys, is required")
    bucket = _text("bucket") or None
    if bucket is not None:
        _api().layer.bucket(bucket)
    try:
        found, next_cursor = _api().metadata.search_keys(bucket, q, _limit(),
                                                         _text("cursor") or None)
    except ValueError as exc:
        raise _bad(str(exc)) from None
    match = "substring" if len(q) >= SEARCH_MIN else "prefix"
    return jsonify(q=q, bucket=bucket, match=match,
                   objects=[_listed(v) for v in found], next_cursor=next_cursor)


@bp.get("/objects/<bucket>/<anypath:key>")
def get_object_info(bucket: str, key: str) -> Response:
    key = object_name(f"{bp.url_prefix}/objects/{bucket}/")
    return jsonify(inspect.object_info(_api(), bucket, key, _text("versionId") or None))


@bp.delete("/objects/<bucket>/<anypath:key>")
def delete_object(bucket: str, key: str) -> Response:
    api = _api()
    key = object_name(f"{bp.url_prefix}/objects/{bucket}/")
    version_id = _text("versionId") or None
    if version_id is None:
        api.layer.head(bucket, key)                   # NoSuchKey: nothing to delete
    result = api.layer.delete(bucket, key, version_id)
    if version_id is not None and result.version is None:
        raise NoSuchVersion(f"no version {version_id!r} of {key!r}")
    log.info("admin deleted %s/%r (%s)", bucket, key, version_id or "delete marker")
    return jsonify(bucket=bucket, key=key, version_id=result.version_id,
                   delete_marker=result.delete_marker)


@bp.post("/objects")
def post_object() -> Response:
    api = _api()
    if request.mimetype == "multipart/form-data":
        bucket, key, content_type, body = _form_upload(request.stream)
    else:
        bucket, key = _bucket(), _text("key")
        content_type, body = request.mimetype, client_body(request.stream)
    if not key:
        raise _bad("key is required: ?key=, a key field, or the file's name")
    if content_type == CURL_DEFAULT_TYPE:
        content_type = ""
    expect = Expect(size=None if request.mimetype == "multipart/form-data"
                    else request.content_length, want_md5=True)
    version = api.layer.put(bucket, key, body, expect, meta=ObjectMeta(content_type=content_type))
    response = jsonify(bucket=bucket, key=key, version_id=version.version_id,
                       number=version.number, size=version.size, hash=version.hash,
                       etag=version.etag)
    response.status_code = 201
    return response


def _form_upload(stream) -> tuple[str, str, str, Iterator[bytes]]:
    """(bucket, key, content type, the file's bytes) of a multipart/form-data body: the
    fields before the file are read (at most MAX_FIELDS_SIZE bytes), the file is streamed."""
    boundary = request.mimetype_params.get("boundary", "")
    if not boundary:
        raise _bad("multipart/form-data without a boundary")
    decoder = MultipartDecoder(boundary.encode(), max_form_memory_size=4 * FORM_CHUNK)
    chunks = client_body(stream, FORM_CHUNK)
    fields: dict[str, bytearray] = {}
    current: bytearray | None = None
    seen = 0

    def events():
        ended = False
        while True:
            try:
                event = decoder.next_event()
            except ValueError as exc:
                raise _bad(f"malformed multipart/form-data: {exc}") from None
            if isinstance(event, NeedData):
                if ended:
                    raise _bad("the multipart/form-data body ended early")
                chunk = next(chunks, None)
                ended = chunk is None
                decoder.receive_data(chunk)
                continue
            yield event
            if isinstance(event, Epilogue):
                return

    stream_events = events()
    for event in stream_events:
        if isinstance(event, Field):
            current = fields.setdefault(event.name, bytearray())
        elif isinstance(event, Data) and current is not None:
            seen += len(event.data)
            if seen > MAX_FIELDS_SIZE:
                raise _bad(f"form fields before the file exceed {MAX_FIELDS_SIZE} bytes")
            current += event.data
        elif isinstance(event, File) and event.name == "file":
            try:
                bucket = fields.get("bucket", b"").decode() or _bucket()
                key = fields.get("key", b"").decode() or _text("key") or event.filename or ""
            except UnicodeDecodeError:
                raise _bad("form fields must be UTF-8") from None
            content_type = event.headers.get("Content-Type", "")
            return bucket, key, content_type, _file_data(stream_events)
        elif isinstance(event, Epilogue):
            break
    raise _bad("multipart/form-data without a file field")


def _file_data(events) -> Iterator[bytes]:
    """The Data events of the file part; the rest of the body is read and dropped."""
    for event in events:
        if isinstance(event, Data):
            if event.data:
                yield event.data
            if not event.more_data:
                break
    for _ in events:
        pass


@bp.get("/stats")
def get_stats() -> Response:
    return jsonify(inspect.stats(_api()))


@bp.get("/nodes")
def get_nodes() -> Response:
    return jsonify(nodes=inspect.nodes(_api()))

