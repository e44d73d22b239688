"""The management API's objects: list, search, inspect, upload, delete; and the cluster's
totals, data servers and recent repairs.  JSON translations of the object layer and of ``inspect``.

Paging is by cursor: an answer's ``next_cursor`` (None on the last page) is the ``cursor`` of
the next request.  Uploads stream through the object layer, which computes the digest: a
raw body (``?bucket=&key=``) or a ``multipart/form-data`` (``api_server/formdata.py``) whose
first file is its ``file`` field, after any ``bucket`` and ``key`` fields (the key defaults
to the file's name).
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Response, current_app, jsonify, request

from api_server import formdata
from api_server.admin import AdminError, bp, inspect
from api_server.body import client_body
from api_server.objects import object_name
from lib.errors import NoSuchVersion
from lib.metadata import MAX_KEY_BYTES, SEARCH_MIN, ObjectMeta, Version
from lib.objects import Expect

log = logging.getLogger(__name__)

#: Page sizes of listings and searches.
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
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
    """(bucket, key, content type, the file's bytes) of a multipart/form-data body
    (``api_server/formdata.py``): the fields before the file are read, the file is streamed."""
    boundary = request.mimetype_params.get("boundary", "")
    if not boundary:
        raise _bad("multipart/form-data without a boundary")
    events = iter(formdata.FormStream(stream, boundary.encode("latin-1")))
    fields, file = formdata.fields_then_file(events)
    if file is None or file.name != "file":
        raise _bad("multipart/form-data without a file field (the first file part)")
    bucket = fields.get("bucket") or _bucket()
    key = fields.get("key") or _text("key") or file.filename or ""
    return bucket, key, file.headers.get("Content-Type", ""), formdata.file_chunks(events)


@bp.get("/stats")
def get_stats() -> Response:
    return jsonify(inspect.stats(_api()))


@bp.get("/nodes")
def get_nodes() -> Response:
    return jsonify(nodes=inspect.nodes(_api()))


@bp.get("/repairs")
def get_repairs() -> Response:
    return jsonify(repairs=inspect.recent_repairs(_api(), _limit()))

