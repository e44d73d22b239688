"""Object operations: PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects,
CopyObject, and object ACLs (accepted, ignored)."""
from __future__ import annotations

import urllib.parse

from api_server.s3 import xml
from api_server.s3.buckets import acl_document, iso_time
from api_server.s3.errors import S3Error, from_exception, invalid_argument, malformed_xml, \
    not_implemented
from api_server.s3.payload import STANDARD_HEADERS, body, checksum_headers, object_meta
from api_server.s3.request import Request, Response, empty, xml_response
from lib.errors import DeleteMarkerVersion, NoSuchKey, NotModified
from lib.headers import http_date, parse_etags, parse_http_date, parse_range
from lib.metadata import UNVERSIONED, Version, WriteCondition
from lib.objects.layer import ReadConditions

#: ``response-*`` query parameters and the header each overrides on GET / HEAD.
_OVERRIDES = {"response-content-type": "Content-Type",
              "response-content-language": "Content-Language",
              "response-expires": "Expires", "response-cache-control": "Cache-Control",
              "response-content-disposition": "Content-Disposition",
              "response-content-encoding": "Content-Encoding"}
MAX_DELETE_KEYS = 1000


def quoted(etag: str) -> str:
    return f'"{etag}"'


def write_condition(req: Request) -> WriteCondition | None:
    """S3's conditional writes: ``If-None-Match: *`` (create only), ``If-Match: <etag>``."""
    none_match, match = req.header("if-none-match"), req.header("if-match")
    if none_match is None and match is None:
        return None
    if none_match is not None and none_match.strip() != "*":
        raise not_implemented("If-None-Match other than * on a write")
    tags = parse_etags(match) if match is not None else None
    return WriteCondition(absent=none_match is not None,
                          etag=tags[0] if tags else None)


def _version_headers(app, version: Version) -> list[tuple[str, str]]:
    bucket = app.layer.bucket(version.bucket)
    if bucket.versioning == UNVERSIONED or not version.seq:   # not seq: not stored yet
        return []
    return [("x-amz-version-id", version.version_id)]


def put(app, req: Request) -> Response:
    condition = write_condition(req)
    meta = object_meta(req)
    app.layer.bucket(req.bucket)
    chunks, expect = body(req)
    version = app.layer.put(req.bucket, req.key, chunks, expect, meta, condition)
    headers = [("ETag", quoted(version.etag))] + _version_headers(app, version)
    headers += checksum_headers(dict(version.meta.checksums))
    return empty(200, headers)


def _read_conditions(req: Request, prefix: str = "") -> ReadConditions | None:
    values = [req.header(prefix + name) for name in
              ("if-match", "if-none-match", "if-modified-since", "if-unmodified-since")]
    if not any(v is not None for v in values):
        return None
    return ReadConditions(parse_etags(values[0]), parse_etags(values[1]),
                          parse_http_date(values[2]), parse_http_date(values[3]))


def _object_headers(app, req: Request, version: Version,
                    whole: bool = True) -> list[tuple[str, str]]:
    meta = version.meta
    modified = meta.origin.get("last-modified") or http_date(version.created)
    headers = [("ETag", quoted(version.etag)), ("Last-Modified", modified),
               ("Accept-Ranges", "bytes"),
               ("Content-Type", meta.content_type or "binary/octet-stream")]
    headers += [(name.title(), value) for name, value in meta.headers.items()
                if name in STANDARD_HEADERS]
    for name, value in meta.user.items():
        # WSGI servers send header values as latin-1: send the UTF-8 bytes through it.
        headers.append((f"x-amz-meta-{name}", value.encode("utf-8").decode("latin-1")))
    headers += _version_headers(app, version)
    if whole and req.header("x-amz-checksum-mode", "").upper() == "ENABLED" and \
            meta.checksums:          # a range or a part has no checksum of its own here
        headers += checksum_headers(dict(meta.checksums), meta.checksum_type)
    overrides = {header: req.query[param] for param, header in _OVERRIDES.items()
                 if param in req.query}
    if overrides:
        headers = [(k, v) for k, v in headers if k not in overrides] + list(overrides.items())
    return headers


def _named(app, req: Request, call):
    """Run a read, adding the delete-marker headers S3 sends with its 404 / 405."""
    try:
        return call()
    except NoSuchKey as exc:
        if exc.delete_marker is not None:
            req.error_headers += [("x-amz-delete-marker", "true")] + \
                _version_headers(app, exc.delete_marker)
        raise
    except DeleteMarkerVersion as exc:
        req.error_headers += [("x-amz-delete-marker", "true"), ("Allow", "DELETE"),
                              ("x-amz-version-id", exc.marker.version_id),
                              ("Last-Modified", http_date(exc.marker.created))]
        raise


def _not_modified(exc: NotModified) -> Response:
    return Response(304, [("ETag", quoted(exc.version.etag)),
                          ("Last-Modified", http_date(exc.version.created))], [])


def get(app, req: Request) -> Response:
    part_number = req.int_query("partNumber", None, 1, 10_000)
    try:
        reader = _named(app, req, lambda: app.layer.open(
            req.bucket, req.key, req.query.get("versionId"), byte_range=req.header("range"),
            part_number=part_number, conditions=_read_conditions(req)))
    except NotModified as exc:
        return _not_modified(exc)
    version = reader.version
    headers = _object_headers(app, req, version, whole=not reader.partial)
    if part_number is not None:
        headers.append(("x-amz-mp-parts-count", str(reader.parts_count)))
    headers.append(("Content-Length", str(reader.length)))
    if reader.partial and version.size:
        headers.append(("Content-Range", f"bytes {reader.first}-{reader.last}/{version.size}"))
        return Response(206, headers, reader)
    return Response(200, headers, reader)


def head(app, req: Request) -> Response:
    """HEAD reads metadata only: no shard is opened, ranges and parts included."""
    part_number = req.int_query("partNumber", None, 1, 10_000)
    try:
        version = _named(app, req, lambda: app.layer.head(
            req.bucket, req.key, req.query.get("versionId"), conditions=_read_conditions(req)))
    except NotModified as exc:
        return _not_modified(exc)
    headers = _object_headers(app, req, version,
                              whole=part_number is None and not req.header("range"))
    span = None
    if part_number is not None:
        part, count = app.layer.part_of(version, part_number)
        headers.append(("x-amz-mp-parts-count", str(count)))
        span = (part.offset, part.offset + part.size - 1) if part else (0, version.size - 1)
    elif req.header("range"):
        span = parse_range(req.header("range"), version.size)
    if span is None or not version.size:
        return Response(200, headers + [("Content-Length", str(version.size))], [])
    first, last = span
    headers += [("Content-Length", str(last - first + 1)),
                ("Content-Range", f"bytes {first}-{last}/{version.size}")]
    return Response(206, headers, [])


def delete(app, req: Request) -> Response:
    version_id = req.query.get("versionId")
    condition = None
    if req.header("if-match") is not None:
        tags = parse_etags(req.header("if-match"))
        condition = WriteCondition(etag=tags[0] if tags else None)
    result = app.layer.delete(req.bucket, req.key, version_id, condition)
    headers = []
    if result.delete_marker:
        headers.append(("x-amz-delete-marker", "true"))
    if result.version_id is not None:
        headers.append(("x-amz-version-id", result.version_id))
    return empty(204, headers)


def delete_many(app, req: Request) -> Response:
    app.layer.bucket(req.bucket)
    document = xml.parse(xml.read_body(req.input), "Delete")
    quiet = (xml.child_text(document, "Quiet", "false") or "").strip().lower() == "true"
    objects = document.findall("Object")
    if not objects:
        raise malformed_xml("no Object to delete")
    if len(objects) > MAX_DELETE_KEYS:
        raise malformed_xml(f"at most {MAX_DELETE_KEYS} keys per request")
    results: list[xml.Node] = []
    for item in objects:
        key = xml.child_text(item, "Key")
        version_id = xml.child_text(item, "VersionId")
        if not key:
            raise malformed_xml("an Object without a Key")
        try:
            result = app.layer.delete(req.bucket, key, version_id or None)
        except Exception as exc:                   # noqa: BLE001 - reported per key
            error = from_exception(exc) or S3Error("InternalError", "internal error", 500)
            results.append(("Error", [("Key", key), ("VersionId", version_id),
                                      ("Code", error.code), ("Message", error.message)]))
            continue
        if quiet:
            continue
        entry: list[xml.Node] = [("Key", key), ("VersionId", version_id or None)]
        if result.delete_marker:
            entry.append(("DeleteMarker", True))
            if not version_id:
                entry.append(("DeleteMarkerVersionId", result.version_id))
        results.append(("Deleted", entry))
    return xml_response(xml.render("DeleteResult", results))


def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """``x-amz-copy-source``: ``[/]bucket/key[?versionId=id]``, URL-encoded."""
    path, _, query = value.partition("?")
    version_id = None
    if query:
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        if "versionId" not in params:
            raise invalid_argument("Invalid copy source query: only versionId is accepted",
                                   "x-amz-copy-source", value)
        version_id = params["versionId"][0]
    path = urllib.parse.unquote(path).lstrip("/") if path.startswith("/") else \
        urllib.parse.unquote(path)
    bucket, slash, key = path.partition("/")
    if not bucket or not slash or not key:
        raise invalid_argument("Copy Source must mention the source bucket and key: "
                               "sourcebucket/sourcekey", "x-amz-copy-source", value)
    return bucket, key, version_id


def copy(app, req: Request) -> Response:
    source_bucket, source_key, source_version = parse_copy_source(
        req.header("x-amz-copy-source", ""))
    directive = req.header("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise invalid_argument("Unknown metadata directive.", "x-amz-metadata-directive",
                               directive)
    meta = object_meta(req) if directive == "REPLACE" else None
    version, source = app.layer.copy(source_bucket, source_key, source_version, req.bucket,
                                     req.key, meta, _read_conditions(req, "x-amz-copy-source-"),
                                     write_condition(req))
    headers = _version_headers(app, version)
    if source_version is not None or app.layer.bucket(source_bucket).versioning != UNVERSIONED:
        headers.append(("x-amz-copy-source-version-id", source.version_id))
    return xml_response(xml.render("CopyObjectResult", [
        ("ETag", quoted(version.etag)), ("LastModified", iso_time(version.created)),
        *[(f"Checksum{name}", value) for name, value in sorted(version.meta.checksums.items())],
    ]), headers=headers)


def get_acl(app, req: Request) -> Response:
    app.layer.head(req.bucket, req.key, req.query.get("versionId"))
    return xml_response(acl_document())


def put_acl(app, req: Request) -> Response:
    app.layer.head(req.bucket, req.key, req.query.get("versionId"))
    xml.read_body(req.input)
    return empty(200)
