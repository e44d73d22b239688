"""ListObjects (v1 and v2) and ListObjectVersions: S3's parameters onto the object layer's
cursor-paged listings (``lib/metadata/listing.py``)."""
from __future__ import annotations

import base64
import binascii
import urllib.parse

from api_server.s3 import xml
from api_server.s3.buckets import OWNER, iso_time
from api_server.s3.errors import invalid_argument
from api_server.s3.objects import quoted
from api_server.s3.request import Request, Response, xml_response
from lib.metadata import Version

MAX_KEYS = 1000
_TOKEN_PREFIX = "tessera1:"


def encode_token(key: str) -> str:
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + key).encode("utf-8")).decode("ascii")


def decode_token(token: str) -> str:
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX):
        raise invalid_argument("The continuation token provided is incorrect",
                               "continuation-token", token)
    return text[len(_TOKEN_PREFIX):]


class _Params:
    """The parameters every listing shares."""

    def __init__(self, req: Request):
        self.prefix = req.query.get("prefix", "")
        self.delimiter = req.query.get("delimiter", "")
        encoding = req.query.get("encoding-type")
        if encoding is not None and encoding != "url":
            raise invalid_argument("Invalid Encoding Method specified in Request",
                                   "encoding-type", encoding)
        self.url = encoding == "url"
        raw = req.query.get("max-keys")
        if raw is not None and (not raw.strip().isdigit() or len(raw) > 10):
            raise invalid_argument("Provided max-keys not an integer or within integer range",
                                   "max-keys", raw)
        self.max_keys = MAX_KEYS if raw is None else int(raw)
        self.limit = min(self.max_keys, MAX_KEYS)

    def text(self, value: str | None) -> str | None:
        if value is None or not self.url:
            return value
        return urllib.parse.quote(value, safe="/")

    def head(self) -> list[xml.Node]:
        return [("Prefix", self.text(self.prefix)),
                ("Delimiter", self.text(self.delimiter) if self.delimiter else None),
                ("MaxKeys", self.max_keys),
                ("EncodingType", "url" if self.url else None)]


def _contents(params: _Params, version: Version, owner: bool) -> xml.Node:
    return ("Contents", [("Key", params.text(version.key)),
                         ("LastModified", iso_time(version.created)),
                         ("ETag", quoted(version.etag)), ("Size", version.size),
                         ("Owner", OWNER if owner else None),
                         ("StorageClass", "STANDARD")])


def list_objects(app, req: Request) -> Response:
    params = _Params(req)
    v2 = req.query.get("list-type") == "2"
    if "list-type" in req.query and not v2:
        raise invalid_argument("Invalid List Type specified in Request", "list-type",
                               req.query["list-type"])
    if v2:
        token = req.query.get("continuation-token")
        start_after = req.query.get("start-after", "")
        after = decode_token(token) if token is not None else start_after
    else:
        after = req.query.get("marker", "")
    page = app.layer.list(req.bucket, params.prefix, params.delimiter, after, params.limit)
    owner = not v2 or req.query.get("fetch-owner", "").lower() == "true"
    entries: list[xml.Node] = []
    for kind, value in page.items:
        if kind == "row":
            entries.append(_contents(params, value, owner))
        else:
            entries.append(("CommonPrefixes", [("Prefix", params.text(value))]))
    last = page.last
    next_after = None
    if page.truncated and last is not None:
        next_after = last[1].key if last[0] == "row" else last[1]
    children: list[xml.Node] = [("Name", req.bucket)] + params.head()
    if v2:
        children += [("KeyCount", len(page.items)),
                     ("ContinuationToken", req.query.get("continuation-token")),
                     ("NextContinuationToken",
                      encode_token(next_after) if next_after is not None else None),
                     ("StartAfter", params.text(req.query.get("start-after")))]
    else:
        children += [("Marker", params.text(after)),
                     ("NextMarker", params.text(next_after) if params.delimiter else None)]
    children.append(("IsTruncated", page.truncated))
    return xml_response(xml.render("ListBucketResult", children + entries))


def list_versions(app, req: Request) -> Response:
    params = _Params(req)
    key_marker = req.query.get("key-marker", "")
    version_marker = req.query.get("version-id-marker")
    if version_marker and not key_marker:
        raise invalid_argument("A version-id marker cannot be specified without a key marker.",
                               "version-id-marker", version_marker)
    page = app.layer.list_versions(req.bucket, params.prefix, params.delimiter, key_marker,
                                   version_marker or None, params.limit)
    entries: list[xml.Node] = []
    for kind, value in page.items:
        if kind == "prefix":
            entries.append(("CommonPrefixes", [("Prefix", params.text(value))]))
            continue
        common = [("Key", params.text(value.key)), ("VersionId", value.version_id),
                  ("IsLatest", value.is_latest), ("LastModified", iso_time(value.created))]
        if value.delete_marker:
            entries.append(("DeleteMarker", common + [("Owner", OWNER)]))
        else:
            entries.append(("Version", common + [("ETag", quoted(value.etag)),
                                                 ("Size", value.size),
                                                 ("StorageClass", "STANDARD"),
                                                 ("Owner", OWNER)]))
    next_key = next_version = None
    if page.truncated and page.last is not None:
        kind, value = page.last
        next_key, next_version = (value.key, value.version_id) if kind == "row" else \
            (value, None)
    children: list[xml.Node] = [("Name", req.bucket)] + params.head() + [
        ("KeyMarker", params.text(key_marker)), ("VersionIdMarker", version_marker or ""),
        ("NextKeyMarker", params.text(next_key)), ("NextVersionIdMarker", next_version),
        ("IsTruncated", page.truncated)]
    return xml_response(xml.render("ListVersionsResult", children + entries))
