"""Multipart upload operations: Create, UploadPart, UploadPartCopy, Complete, Abort,
ListParts, ListMultipartUploads."""
from __future__ import annotations

import re

from api_server.s3 import xml
from api_server.s3.buckets import OWNER, iso_time
from api_server.s3.errors import invalid_argument, malformed_xml
from api_server.s3.listing import MAX_KEYS, _Params
from api_server.s3.objects import (_read_conditions, _version_headers, parse_copy_source,
                                   quoted, write_condition)
from api_server.s3.payload import body, checksum_headers, object_meta
from api_server.s3.request import Request, Response, empty, xml_response
from lib import checksums
from lib.objects.multipart import Requested

_COPY_RANGE = re.compile(r"^bytes=(\d{1,19})-(\d{1,19})$")


def _upload_id(req: Request) -> str:
    upload_id = req.query.get("uploadId", "")
    if not upload_id:
        raise invalid_argument("This operation requires an upload id.", "uploadId", "")
    return upload_id


def _part_number(req: Request) -> int:
    if "partNumber" not in req.query:
        raise invalid_argument("This operation requires a part number.", "partNumber", "")
    return req.int_query("partNumber", None, 1, 10_000)


def create(app, req: Request) -> Response:
    meta = object_meta(req)
    algorithm = req.header("x-amz-checksum-algorithm")
    if algorithm and algorithm.upper() not in checksums.ALGORITHMS:
        raise invalid_argument("Checksum algorithm provided is unsupported.",
                               "x-amz-checksum-algorithm", algorithm)
    upload = app.multipart.create(req.bucket, req.key, meta)
    return xml_response(xml.render("InitiateMultipartUploadResult", [
        ("Bucket", req.bucket), ("Key", req.key), ("UploadId", upload.upload_id)]),
        headers=[("x-amz-checksum-algorithm", algorithm.upper())] if algorithm else [])


def upload_part(app, req: Request) -> Response:
    upload_id, number = _upload_id(req), _part_number(req)
    app.multipart.upload(upload_id, req.bucket, req.key)        # before reading the body
    chunks, expect = body(req)
    part = app.multipart.upload_part(upload_id, number, chunks, expect, req.bucket, req.key)
    return empty(200, [("ETag", quoted(part.etag))] + checksum_headers(dict(part.checksums)))


def copy_part(app, req: Request) -> Response:
    upload_id, number = _upload_id(req), _part_number(req)
    source_bucket, source_key, source_version = parse_copy_source(
        req.header("x-amz-copy-source", ""))
    byte_range = None
    raw = req.header("x-amz-copy-source-range")
    if raw is not None:
        match = _COPY_RANGE.match(raw.strip())
        if not match:
            raise invalid_argument("The x-amz-copy-source-range value must be of the form "
                                   "bytes=first-last where first and last are the zero-based "
                                   "offsets of the first and last bytes to copy",
                                   "x-amz-copy-source-range", raw)
        byte_range = (int(match.group(1)), int(match.group(2)))
    part, source = app.multipart.copy_part(
        upload_id, number, source_bucket, source_key, source_version, byte_range,
        _read_conditions(req, "x-amz-copy-source-"), req.bucket, req.key)
    headers = []
    if source_version is not None:
        headers.append(("x-amz-copy-source-version-id", source.version_id))
    return xml_response(xml.render("CopyPartResult", [
        ("ETag", quoted(part.etag)), ("LastModified", iso_time(part.created or source.created)),
    ]), headers=headers)


def _requested(document) -> list[Requested]:
    requested = []
    for element in document.findall("Part"):
        raw_number = xml.child_text(element, "PartNumber")
        etag = xml.child_text(element, "ETag")
        if raw_number is None or not raw_number.strip().isdigit() or etag is None:
            raise malformed_xml("each Part needs a PartNumber and an ETag")
        sums = {}
        for name in checksums.ALGORITHMS:
            value = xml.child_text(element, f"Checksum{name}")
            if value:
                sums[name] = value.strip()
        requested.append(Requested(int(raw_number), etag, sums))
    return requested


def complete(app, req: Request) -> Response:
    upload_id = _upload_id(req)
    document = xml.parse(xml.read_body(req.input), "CompleteMultipartUpload")
    version = app.multipart.complete(upload_id, _requested(document), write_condition(req),
                                     req.bucket, req.key)
    host = req.host or "localhost"
    children: list[xml.Node] = [
        ("Location", f"http://{host}/{req.bucket}/{req.key}"), ("Bucket", req.bucket),
        ("Key", req.key), ("ETag", quoted(version.etag))]
    children += [(f"Checksum{name}", value)
                 for name, value in sorted(version.meta.checksums.items())]
    if version.meta.checksums:
        children.append(("ChecksumType", version.meta.checksum_type or "COMPOSITE"))
    return xml_response(xml.render("CompleteMultipartUploadResult", children),
                        headers=_version_headers(app, version))


def abort(app, req: Request) -> Response:
    app.multipart.abort(_upload_id(req), req.bucket, req.key)
    return empty(204)


def list_parts(app, req: Request) -> Response:
    upload_id = _upload_id(req)
    marker = req.int_query("part-number-marker", 0, 0, 10_000)
    max_parts = req.int_query("max-parts", 1000, 0, 2**31 - 1)
    upload, parts, truncated = app.multipart.parts(upload_id, marker, min(max_parts, 1000),
                                                   req.bucket, req.key)
    children: list[xml.Node] = [
        ("Bucket", req.bucket), ("Key", req.key), ("UploadId", upload_id),
        ("Initiator", OWNER), ("Owner", OWNER), ("StorageClass", "STANDARD"),
        ("PartNumberMarker", marker),
        ("NextPartNumberMarker", parts[-1].number if parts else marker),
        ("MaxParts", max_parts), ("IsTruncated", truncated)]
    if upload.meta.checksum_type:
        children.append(("ChecksumType", upload.meta.checksum_type))
    for part in parts:
        children.append(("Part", [
            ("PartNumber", part.number), ("LastModified", iso_time(part.created)),
            ("ETag", quoted(part.etag)), ("Size", part.size),
            *[(f"Checksum{n}", v) for n, v in sorted(part.checksums.items())]]))
    return xml_response(xml.render("ListPartsResult", children))


def list_uploads(app, req: Request) -> Response:
    params = _Params(req)
    key_marker = req.query.get("key-marker", "")
    upload_marker = req.query.get("upload-id-marker")
    raw = req.query.get("max-uploads")
    if raw is not None and (not raw.isdigit() or len(raw) > 10):
        raise invalid_argument("Provided max-uploads not an integer or within integer range",
                               "max-uploads", raw)
    max_uploads = MAX_KEYS if raw is None else int(raw)
    page = app.multipart.uploads(req.bucket, params.prefix, params.delimiter, key_marker,
                                 upload_marker or None, min(max_uploads, MAX_KEYS))
    entries: list[xml.Node] = []
    for kind, value in page.items:
        if kind == "prefix":
            entries.append(("CommonPrefixes", [("Prefix", params.text(value))]))
        else:
            entries.append(("Upload", [("Key", params.text(value.key)),
                                       ("UploadId", value.upload_id), ("Initiator", OWNER),
                                       ("Owner", OWNER), ("StorageClass", "STANDARD"),
                                       ("Initiated", iso_time(value.created))]))
    next_key = next_upload = None
    if page.truncated and page.last is not None:
        kind, value = page.last
        next_key, next_upload = (value.key, value.upload_id) if kind == "row" else (value, None)
    children: list[xml.Node] = [
        ("Bucket", req.bucket), ("KeyMarker", params.text(key_marker)),
        ("UploadIdMarker", upload_marker or ""), ("NextKeyMarker", params.text(next_key)),
        ("NextUploadIdMarker", next_upload), ("MaxUploads", max_uploads),
        ("Prefix", params.text(params.prefix)),
        ("Delimiter", params.text(params.delimiter) if params.delimiter else None),
        ("EncodingType", "url" if params.url else None), ("IsTruncated", page.truncated)]
    return xml_response(xml.render("ListMultipartUploadsResult", children + entries))
