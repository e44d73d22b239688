"""Elasticsearch metadata backend (schema v2): the book's store, for api servers on many hosts.

Elasticsearch has no multi-document transactions: each document is its own atomic unit, and a
write can be made conditional on the document's ``_seq_no``/``_primary_term`` (optimistic
concurrency).  So the model of ``lib/metadata/__init__.py`` is cut into documents such that
every decision is one conditional write of one document, and every step between documents
errs on the safe side.  One index per document type, named ``<ES_INDEX>-<type>``, each with a
strict mapping and one shard (so a ``refresh=wait_for`` on an index's last write of an
operation makes all its earlier writes to that index searchable too)::

    buckets       one per bucket: versioning, owner, config, state ("deleting")
    keys          one per (bucket, key): the key's lock and allocator: last_number,
                  last_seq, count, the latest version (a full copy), null_seq, removing;
                  ``listed`` (latest is not a marker) makes it the current-version listing.
                  One more, ``COUNTER_ID``, hands out blocks of version seqs.
    versions      one per version (id: the version id): committed flag, manifest token
    parts         one per part of a manifest version (manifest token, number, offset)
    contents      one per content hash: size, md5, refs, unreferenced_since
    uploads       one per multipart upload: state open / completing / completed / aborting
    upload_parts  one per part of an upload
    records       small JSON documents
    repairs       the repair log: the newest ``repairs_kept`` repairs, one document per
                  slot (seq modulo repairs_kept), so it never holds more
    repair_counts one document: the log's last seq and the done / failed counters

**The key document decides.**  Every write of a version (PUT, delete marker, Complete, copy,
deleting a version) is a conditional write of its key's document, retried on conflict with a
bounded, jittered backoff (VersionConflict after ``max_attempts``).  The WriteCondition is
checked against the latest version read from that document, so check and write are one
atomic step across hosts, and numbers (``last_number``) and seqs (``last_seq``) grow per key.

**Which version documents exist** is decided the same way: a version document is written
*before* the key document that commits it, with ``committed: false``; it is visible only when
``committed`` is true or it is the key document's latest, and never while its seq is in the
key's ``removing`` list.  The writer that next moves ``latest`` away first sets the old
latest's ``committed`` (in the same bulk request as its own new document), so at most one
version per key, the latest, is ever unflagged.  Readers of the versions index therefore
fetch the key documents of the keys they list (one ``_mget`` per page), which also gives
``is_latest``.

**Reference counts never run low.**  A content is claimed (and its shards collected) only
while its count is zero, so a count must never miss a reference a visible version holds:

1. a writer increments the counts *before* it writes its version document (a crash after
   this leaves the content referenced too long, never collected while in use);
2. a version is removed by first listing its seq in the key's ``removing`` (one conditional
   write: from then on it is invisible), then deleting its document, then decrementing; only
   the process whose DELETE answered ``deleted`` decrements, so a removal that several
   writers finish (after a crash, any writer of the key does) decrements exactly once;
3. a write whose outcome is unknown (a timeout) is never undone: its references stay.

So every crash between steps leaves at worst a count too high, never a visible version (or a
key document's latest) whose content was collected.  Where a crash can leave a count too
high, the place is marked "leak" below: a version document written but not committed, a
removal whose DELETE landed but whose decrement did not, an upload part written after its
upload ended.  Those counts stay high until an operator recounts.  Parts written for a manifest
that never committed, and version documents that never committed, stay behind invisible.

Other consequences of the model, by design: ``hashes``, ``unreferenced`` and the listings are
searches, so they see writes once refreshed (every write they depend on waits for its refresh);
``unreferenced`` may list a content that was referenced again meanwhile, which
``claim_unreferenced`` (a conditional delete of the content document) then refuses.

Keys sort as ``keyword`` terms, which Lucene compares as unsigned bytes of UTF-8: code point
order, the order of every other backend.  Requests go through ``perform_request`` with explicit
``compatible-with=8`` headers, which ES 8 and 9 servers both accept, whatever the client's
major version.  This is the only module that imports ``elasticsearch``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from elasticsearch import ApiError, Elasticsearch, TransportError

from lib.errors import (BucketExists, BucketNotEmpty, ContentGone, InvalidPart, NoSuchBucket,
                        NoSuchUpload)
from lib.metadata import (ENABLED, NULL_VERSION_ID, SUSPENDED, UNVERSIONED, Bucket, Content,
                          Draft, MetadataError, MetadataStore, ObjectMeta, Part, RepairRecord,
                          Upload, Usage, Version, VersionConflict, WriteCondition, check_draft,
                          check_page, check_repair, check_text, decode_version_id,
                          encode_version_id, valid_number)
from lib.metadata.sql import new_upload_id

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: REST API compatibility level understood by ES 8.x and 9.x servers alike.
_JSON = "application/vnd.elasticsearch+json; compatible-with=8"
_NDJSON = "application/vnd.elasticsearch+x-ndjson; compatible-with=8"
#: Hits fetched per search when walking a result (search_after), and bulk actions per request.
PAGE = 1000
BULK = 500
#: Conditional-write attempts before VersionConflict, and the backoff between them (seconds).
MAX_ATTEMPTS = 50
_BACKOFF_BASE = 0.002
_BACKOFF_CAP = 0.1
#: Version seqs reserved per request to the counter document.
SEQ_BLOCK = 100
#: Seconds a Complete may stay "completing" before another Complete or an abort takes over.
COMPLETE_LEASE = 300.0
#: Seconds a repeated Complete waits for one in progress to finish.
COMPLETE_WAIT = 10.0
#: The id of the seq counter in the keys index (key ids are 64 hex digits).
COUNTER_ID = "seq-counter"
#: The id of the one document of the repair_counts index.
REPAIR_COUNTS_ID = "totals"
ABSENT = object()
_WAIT = "wait_for"

_KEYWORD = {"type": "keyword"}
_LONG = {"type": "long"}
_DOUBLE = {"type": "double"}
_BOOL = {"type": "boolean"}
_STORED = {"type": "keyword", "index": False, "doc_values": False}
_OPAQUE = {"type": "object", "enabled": False}

#: Every index's fields; the mapping of an existing index must give each of them this type.
FIELDS: dict[str, dict[str, dict[str, Any]]] = {
    "buckets": {"name": _KEYWORD, "created": _DOUBLE, "owner": _KEYWORD,
                "versioning": _KEYWORD, "state": _KEYWORD, "config": _OPAQUE},
    "keys": {"bucket": _KEYWORD, "key": _KEYWORD, "count": _LONG, "listed": _BOOL,
             "last_number": _LONG, "last_seq": _LONG, "null_seq": _LONG, "removing": _LONG,
             "latest": _OPAQUE},
    "versions": {"bucket": _KEYWORD, "key": _KEYWORD, "seq": _LONG, "number": _LONG,
                 "is_null": _BOOL, "delete_marker": _BOOL, "committed": _BOOL,
                 "created": _DOUBLE, "size": _LONG, "hash": _KEYWORD, "etag": _KEYWORD,
                 "parts": _LONG, "manifest": _KEYWORD, "meta": _STORED},
    "parts": {"manifest": _KEYWORD, "number": _LONG, "part_offset": _LONG, "hash": _KEYWORD,
              "size": _LONG, "etag": _KEYWORD, "checksums": _OPAQUE, "created": _DOUBLE,
              "content_offset": _LONG, "content_size": _LONG},
    "contents": {"hash": _KEYWORD, "size": _LONG, "md5": _KEYWORD, "refs": _LONG,
                 "unreferenced_since": _DOUBLE, "created": _DOUBLE},
    "uploads": {"upload_id": _KEYWORD, "bucket": _KEYWORD, "key": _KEYWORD,
                "created": _DOUBLE, "changed": _DOUBLE, "meta": _STORED, "state": _KEYWORD,
                "completed": _LONG},
    "upload_parts": {"upload_id": _KEYWORD, "number": _LONG, "hash": _KEYWORD, "size": _LONG,
                     "etag": _KEYWORD, "checksums": _OPAQUE, "created": _DOUBLE,
                     "content_offset": _LONG, "content_size": _LONG},
    "records": {"kind": _KEYWORD, "id": _KEYWORD, "body": _OPAQUE, "updated": _DOUBLE},
    "repairs": {"seq": _LONG, "time": _DOUBLE, "hash": _KEYWORD, "shards": _LONG,
                "outcome": _KEYWORD, "error": _STORED, "by": _KEYWORD},
    "repair_counts": {"last_seq": _LONG, "done": _LONG, "failed": _LONG},
}
MAPPINGS = {kind: {"dynamic": "strict", "properties": fields}
            for kind, fields in FIELDS.items()}
_PREFIX = re.compile(r"[a-z0-9][a-z0-9._-]{0,200}")


# -- pure helpers: names, documents, queries, answers ------------------------------------------

def server_url(server: str) -> str:
    """``ES_SERVER`` as a URL: ``host:port`` gets ``http://``; a bare host gets port 9200."""
    server = server.strip()
    if "://" in server:
        return server
    if ":" not in server.rsplit("]", 1)[-1]:
        server += ":9200"
    return "http://" + server


def _display(url: str) -> str:
    """The URL without credentials, for logs and ``check()``."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path.rstrip('/')}"


def index_names(prefix: str) -> dict[str, str]:
    """The index of each document type under ``prefix`` (``ES_INDEX``)."""
    if not _PREFIX.fullmatch(prefix):
        raise MetadataError(f"ES_INDEX {prefix!r}: lowercase letters, digits, '.', '_' and "
                            "'-' only, not starting with a symbol")
    return {kind: f"{prefix}-{kind}" for kind in FIELDS}


def doc_id(*parts: object) -> str:
    """A document id for any tuple of values: the SHA-256 of their JSON (an ``_id`` is at most
    512 bytes, and keys may have 1024; hex also needs no quoting in a path)."""
    text = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def key_id(bucket: str, key: str) -> str:
    return doc_id("key", bucket, key)


def parse_total_hits(total: object) -> int:
    """``hits.total`` as an integer (a lower bound when ES says ``"relation": "gte"``).

    ES 6 answers a plain integer, ES 7+ ``{"value": n, "relation": "eq"|"gte"}``.  Anything
    else raises ``MetadataError``: reading it as 0 is how the book's orphan collector would
    have deleted every shard (W21).
    """
    if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
        return total
    if isinstance(total, dict) and set(total) == {"value", "relation"}:
        value, relation = total["value"], total["relation"]
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0 and \
                relation in ("eq", "gte"):
            return value
    raise MetadataError(f"unrecognised hits.total {total!r}")


def _shape(what: str, body: object) -> MetadataError:
    text = repr(body)
    if len(text) > 300:
        text = text[:300] + "..."
    return MetadataError(f"unrecognised elasticsearch {what} response: {text}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Doc:
    """A document as a realtime GET returned it, with what a conditional write needs."""

    source: dict[str, Any]
    seq_no: int
    primary_term: int


def parse_get(body: object) -> Doc | None:
    """A GET (or ``_mget`` item) answer: the document, or None when not found."""
    if not isinstance(body, dict) or not isinstance(body.get("found"), bool) or \
            "error" in body:
        raise _shape("get", body)
    if not body["found"]:
        return None
    source, seq_no, term = body.get("_source"), body.get("_seq_no"), body.get("_primary_term")
    if not isinstance(source, dict) or not _is_int(seq_no) or not _is_int(term):
        raise _shape("get", body)
    return Doc(source, seq_no, term)


def parse_hits(body: object) -> list[dict[str, Any]]:
    """``hits.hits`` of a search answer, each with a ``_source`` object; ``hits.total`` must
    be absent or in a known form."""
    if isinstance(body, dict) and isinstance(body.get("hits"), dict):
        hits = body["hits"]
        if "total" in hits:
            parse_total_hits(hits["total"])
        inner = hits.get("hits")
        if isinstance(inner, list) and all(
                isinstance(h, dict) and isinstance(h.get("_source"), dict) for h in inner):
            return inner
    raise _shape("search", body)


def parse_bulk(body: object, count: int) -> list[tuple[int, str]]:
    """``(status, result or error type)`` of each of the ``count`` actions of a bulk answer."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list) or \
            len(body["items"]) != count:
        raise _shape("bulk", body)
    outcomes = []
    for item in body["items"]:
        if not isinstance(item, dict) or len(item) != 1:
            raise _shape("bulk", body)
        (answer,) = item.values()
        if not isinstance(answer, dict) or not _is_int(answer.get("status")):
            raise _shape("bulk", body)
        error = answer.get("error")
        what = error.get("type", "") if isinstance(error, dict) else answer.get("result", "")
        outcomes.append((answer["status"], str(what)))
    return outcomes


def check_mapping(name: str, answer: object, fields: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse an index whose mapping lacks one of our fields or gives it another type (for
    instance the book's, or a v1 index of this project under the same name)."""
    try:
        properties = answer[name]["mappings"]["properties"]  # type: ignore[index]
        found = {field: properties[field].get("type", "object") for field in fields}
    except (KeyError, TypeError, AttributeError):
        raise MetadataError(f"elasticsearch index {name!r} lacks the metadata v2 mapping: "
                            f"{str(answer)[:300]}") from None
    wrong = {f: t for f, t in found.items() if t != fields[f]["type"]}
    if wrong:
        raise MetadataError(f"elasticsearch index {name!r} has field types {wrong}, not "
                            "those of metadata v2; reindex it or choose another ES_INDEX")


def term(field: str, value: object) -> dict[str, Any]:
    return {"term": {field: value}}


def key_range(start: str, inclusive: bool, end: str | None) -> dict[str, Any]:
    """Keys from ``start`` (excluded unless ``inclusive``) to ``end`` (excluded)."""
    bounds: dict[str, str] = {"gte" if inclusive else "gt": start}
    if end is not None:
        bounds["lt"] = end
    return {"range": {"key": bounds}}


def resume_query(bucket: str, key: str, inner: str, after: object, inner_op: str,
                 end: str | None, extra: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Rows of ``key`` whose ``inner`` field is ``inner_op`` ``after`` (all of them when
    ``after`` is None), then the rows of the keys after ``key``, below ``end``: the cursor of
    :meth:`MetadataStore.versions_page` and :meth:`uploads_page`."""
    filters = [term("bucket", bucket), *extra]
    if after is None:
        filters.append(key_range(key, True, end))
    else:
        filters.append({"bool": {"should": [
            {"bool": {"filter": [term("key", key), {"range": {inner: {inner_op: after}}}]}},
            key_range(key, False, end)], "minimum_should_match": 1}})
    return {"bool": {"filter": filters}}


def version_source(draft: Draft, seq: int, number: int, is_null: bool, manifest: str,
                   created: float) -> dict[str, Any]:
    """The version document of a draft, not yet committed."""
    return {"bucket": draft.bucket, "key": draft.key, "seq": seq, "number": number,
            "is_null": is_null, "delete_marker": draft.delete_marker, "committed": False,
            "created": created, "size": draft.size, "hash": draft.hash, "etag": draft.etag,
            "parts": len(draft.parts), "manifest": manifest, "meta": draft.meta.to_json()}


def version_from_source(source: Mapping[str, Any], is_latest: bool,
                        meta: bool = True) -> Version:
    """A version document (or a key document's latest) as a Version, checked for shape."""
    try:
        checks = [isinstance(source[f], str) for f in ("bucket", "key", "hash", "etag")]
        checks += [_is_int(source[f]) for f in ("seq", "number", "size", "parts")]
        checks += [isinstance(source[f], bool) for f in ("is_null", "delete_marker")]
        if not all(checks) or not isinstance(source["created"], (int, float)):
            raise TypeError
        return Version(bucket=source["bucket"], key=source["key"], seq=source["seq"],
                       number=source["number"], is_null=source["is_null"],
                       is_latest=is_latest, delete_marker=source["delete_marker"],
                       created=float(source["created"]), size=source["size"],
                       hash=source["hash"], etag=source["etag"], parts=source["parts"],
                       meta=ObjectMeta.from_json(source.get("meta")) if meta else ObjectMeta())
    except (KeyError, TypeError):
        raise _shape("version document", source) from None


@dataclasses.dataclass
class KeyState:
    """A key document: what every write of the key reads and conditionally replaces."""

    bucket: str
    key: str
    count: int = 0
    last_number: int = 0
    last_seq: int = 0
    latest: dict[str, Any] | None = None
    null_seq: int | None = None
    removing: list[int] = dataclasses.field(default_factory=list)

    @classmethod
    def parse(cls, bucket: str, key: str, doc: Doc | None) -> "KeyState":
        if doc is None:
            return cls(bucket, key)
        s = doc.source
        try:
            state = cls(bucket, key, s["count"], s["last_number"], s["last_seq"], s["latest"],
                        s.get("null_seq"), list(s.get("removing") or []))
        except KeyError:
            raise _shape("key document", s) from None
        if (s.get("bucket"), s.get("key")) != (bucket, key) or not all(
                _is_int(v) for v in (state.count, state.last_number, state.last_seq,
                                     *state.removing)) or \
                not (state.latest is None or isinstance(state.latest, dict)):
            raise _shape("key document", s)
        return state

    def source(self) -> dict[str, Any]:
        latest = self.latest
        return {"bucket": self.bucket, "key": self.key, "count": self.count,
                "listed": latest is not None and not latest.get("delete_marker"),
                "last_number": self.last_number, "last_seq": self.last_seq, "latest": latest,
                "null_seq": self.null_seq, "removing": self.removing}

    @property
    def latest_seq(self) -> int | None:
        return None if self.latest is None else self.latest.get("seq")

    def latest_version(self) -> Version | None:
        return None if self.latest is None else version_from_source(self.latest, True)

    def visible(self, source: Mapping[str, Any]) -> bool:
        """Whether a version document of this key is a version (committed, not removed)."""
        seq = source.get("seq")
        return seq not in self.removing and (source.get("committed") is True
                                             or seq == self.latest_seq)

    def empty(self) -> bool:
        return self.count <= 0 and not self.removing


def _counts(hashes: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for hash_ in hashes:
        if hash_:
            counts[hash_] = counts.get(hash_, 0) + 1
    return counts


def _bucket(source: Mapping[str, Any]) -> Bucket:
    try:
        return Bucket(source["name"], float(source["created"]), source["owner"],
                      source["versioning"], dict(source.get("config") or {}))
    except (KeyError, TypeError, ValueError):
        raise _shape("bucket document", source) from None


def _content(source: Mapping[str, Any]) -> Content:
    try:
        return Content(source["hash"], int(source["size"]), source["md5"], int(source["refs"]),
                       source.get("unreferenced_since"))
    except (KeyError, TypeError, ValueError):
        raise _shape("content document", source) from None


def _upload(source: Mapping[str, Any]) -> Upload:
    try:
        completed = source.get("completed") if source["state"] == "completed" else None
        return Upload(source["upload_id"], source["bucket"], source["key"],
                      float(source["created"]), ObjectMeta.from_json(source.get("meta")),
                      completed)
    except (KeyError, TypeError, ValueError):
        raise _shape("upload document", source) from None


def _part(source: Mapping[str, Any], offset: int = 0) -> Part:
    try:
        return Part(int(source["number"]), source["hash"], int(source["size"]), source["etag"],
                    dict(source.get("checksums") or {}), float(source.get("created") or 0),
                    offset, int(source["content_offset"]), int(source["content_size"]))
    except (KeyError, TypeError, ValueError):
        raise _shape("part document", source) from None


def _part_source(part: Part, **extra: Any) -> dict[str, Any]:
    return {"number": part.number, "hash": part.hash, "size": part.size, "etag": part.etag,
            "checksums": dict(part.checksums), "created": part.created,
            "content_offset": part.content_offset, "content_size": part.stored_size, **extra}


class _Conflict(Exception):
    """A conditional write lost (409); the caller re-reads and tries again."""


# -- the store -----------------------------------------------------------------------------------

class ElasticsearchStore(MetadataStore):
    """``MetadataStore`` in Elasticsearch 8+ indices ``<index>-*`` (created if missing).

    Nothing is sent before the first use: an unreachable server raises MetadataError then.
    """

    name = "elasticsearch"

    def __init__(self, server: str, index: str = "metadata", *, timeout: float = 30.0,
                 refresh_interval: str | None = None,
                 max_attempts: int = MAX_ATTEMPTS) -> None:
        """``refresh_interval`` (e.g. ``"100ms"``) is applied only to indices this store
        creates: writes wait for a refresh, so it bounds their latency (ES default 1 s)."""
        self._url = server_url(server)
        self._where = _display(self._url)
        self._prefix = index
        self._indices = index_names(index)
        self._refresh_interval = refresh_interval
        self._max_attempts = max_attempts
        try:
            self._client = Elasticsearch(self._url, request_timeout=timeout, max_retries=2,
                                         retry_on_timeout=True)
        except ValueError as exc:
            raise MetadataError(f"ES_SERVER {server!r}: {exc}") from exc
        # Writes are never retried by the transport: a retried write that had landed would
        # come back as a conflict (or "not_found"), and be taken for someone else's.
        self._client_once = self._client.options(max_retries=0)
        self._ready = False
        self._ready_lock = threading.Lock()
        self._seq_lock = threading.Lock()
        self._seq_next, self._seq_end = 1, 0

    def _say(self, text: str) -> str:
        return f"elasticsearch at {self._where}: {text}"

    # -- transport -------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                 body: Any = None, accept: tuple[int, ...] = (), write: bool = False,
                 ndjson: bool = False) -> tuple[int, Any]:
        """Status and decoded body; a status outside 2xx and ``accept`` raises MetadataError,
        and so does a transport failure (for a write: its outcome is unknown)."""
        headers = {"accept": _JSON}
        if body is not None:
            headers["content-type"] = _NDJSON if ndjson else _JSON
        client = self._client_once if write else self._client
        try:
            response = client.perform_request(method, path, params=dict(params or {}),
                                              headers=headers, body=body)
        except ApiError as exc:
            if exc.meta.status in accept:
                return exc.meta.status, exc.body
            raise MetadataError(self._say(f"{method} {path} -> {exc.meta.status} "
                                          f"{str(exc.body)[:300]}")) from exc
        except TransportError as exc:
            raise MetadataError(self._say(f"unreachable: {method} {path}: {exc}")) from exc
        return response.meta.status, response.body

    def _path(self, kind: str, *rest: str) -> str:
        return "/" + "/".join([self._indices[kind],
                               *(urllib.parse.quote(p, safe="") for p in rest)])

    def _get(self, kind: str, id_: str) -> Doc | None:
        self._ensure_indices()
        _, body = self._request("GET", self._path(kind, "_doc", id_), accept=(404,))
        return parse_get(body)

    def _mget(self, wanted: Sequence[tuple[str, str]]) -> list[Doc | None]:
        if not wanted:
            return []
        self._ensure_indices()
        _, body = self._request("POST", "/_mget", body={"docs": [
            {"_index": self._indices[kind], "_id": id_} for kind, id_ in wanted]})
        docs = body.get("docs") if isinstance(body, dict) else None
        if not isinstance(docs, list) or len(docs) != len(wanted):
            raise _shape("mget", body)
        return [parse_get(doc) for doc in docs]

    def _put(self, kind: str, id_: str, source: Mapping[str, Any], expect: object = None,
             refresh: bool = False) -> None:
        """Write a document: unconditionally (``expect`` None), only if absent (ABSENT), or
        only if unchanged since read (a Doc).  _Conflict when the condition failed."""
        params = {"refresh": _WAIT} if refresh else {}
        if expect is ABSENT:
            path = self._path(kind, "_create", id_)
        else:
            path = self._path(kind, "_doc", id_)
            if isinstance(expect, Doc):
                params.update(if_seq_no=str(expect.seq_no),
                              if_primary_term=str(expect.primary_term))
        self._ensure_indices()
        status, body = self._request("PUT", path, params=params, body=dict(source),
                                     accept=(409,), write=True)
        if status == 409:
            raise _Conflict(id_)
        if not isinstance(body, dict) or body.get("result") not in ("created", "updated"):
            raise _shape("index", body)

    def _delete(self, kind: str, id_: str, expect: Doc | None = None,
                refresh: bool = False) -> bool:
        """Delete a document: True if this request deleted it, False if it was not there.
        _Conflict when ``expect`` is given and the document changed since."""
        params = {"refresh": _WAIT} if refresh else {}
        if expect is not None:
            params.update(if_seq_no=str(expect.seq_no), if_primary_term=str(expect.primary_term))
        self._ensure_indices()
        status, body = self._request("DELETE", self._path(kind, "_doc", id_), params=params,
                                     accept=(404, 409), write=True)
        if status == 409:
            raise _Conflict(id_)
        result = body.get("result") if isinstance(body, dict) else None
        if (status, result) not in ((200, "deleted"), (404, "not_found")):
            raise _shape("delete", body)
        return result == "deleted"

    def _bulk(self, actions: Sequence[tuple[str, str, str, dict[str, Any] | None]],
              refresh: bool = False) -> list[tuple[int, str]]:
        """Run ``(action, kind, id, body)`` actions (index, create, update, delete), BULK at a
        time; each one's ``(status, result)``.  Not atomic: each action stands alone."""
        outcomes: list[tuple[int, str]] = []
        self._ensure_indices()
        for start in range(0, len(actions), BULK):
            batch = actions[start:start + BULK]
            lines: list[dict[str, Any]] = []
            for action, kind, id_, body in batch:
                lines.append({action: {"_index": self._indices[kind], "_id": id_}})
                if body is not None:
                    lines.append(body)
            last = start + BULK >= len(actions)
            _, answer = self._request("POST", "/_bulk", body=lines, ndjson=True, write=True,
                                      params={"refresh": _WAIT} if refresh and last else {})
            outcomes += parse_bulk(answer, len(batch))
        return outcomes

    def _search(self, kind: str, query: dict[str, Any], sort: list[Any], size: int,
                after: list[Any] | None = None) -> list[dict[str, Any]]:
        self._ensure_indices()
        body: dict[str, Any] = {"query": query, "sort": sort, "size": size,
                                "track_total_hits": False}
        if after is not None:
            body["search_after"] = after
        _, answer = self._request("POST", self._path(kind, "_search"), body=body)
        return parse_hits(answer)

    def _walk(self, kind: str, query: dict[str, Any], sort: list[Any],
              page: int = PAGE) -> Iterator[dict[str, Any]]:
        """Every hit of ``query`` in ``sort`` order (which must be total), ``page`` per
        search, resuming each with search_after: never from/size."""
        after: list[Any] | None = None
        while True:
            hits = self._search(kind, query, sort, page, after)
            yield from hits
            if len(hits) < page:
                return
            after = hits[-1].get("sort")
            if not isinstance(after, list):
                raise _shape("search (sort values)", hits[-1])

    def _cas(self, kind: str, id_: str, change: Callable[[Doc | None], tuple[str, Any, _T]],
             refresh: bool | Callable[[Doc | None], bool] = False) -> _T:
        """Read-modify-write one document: ``change(doc)`` answers ``(action, source,
        result)`` with action "put", "delete" or "keep"; retried while others win.
        ``refresh`` may depend on the document read."""
        for attempt in range(self._max_attempts):
            doc = self._get(kind, id_)
            action, source, result = change(doc)
            wait = refresh(doc) if callable(refresh) else refresh
            try:
                if action == "put":
                    self._put(kind, id_, source, doc if doc is not None else ABSENT, wait)
                elif action == "delete" and doc is not None:
                    self._delete(kind, id_, doc, wait)
                return result
            except _Conflict:
                self._backoff(attempt)
        raise VersionConflict(self._say(f"{kind}/{id_} kept changing: gave up after "
                                        f"{self._max_attempts} attempts"))

    @staticmethod
    def _backoff(attempt: int) -> None:
        time.sleep(random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** min(attempt, 10))))

    # -- indices ---------------------------------------------------------------------------------
    def _ensure_indices(self) -> None:
        """Create missing indices with our mappings; refuse existing ones that differ."""
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            names = ",".join(self._indices.values())
            status, mapping = self._request("GET", f"/{names}/_mapping", accept=(404,),
                                            params={"ignore_unavailable": "true"})
            if status == 404:
                mapping = {}
            if not isinstance(mapping, dict):
                raise _shape("mapping", mapping)
            missing = [k for k, name in self._indices.items() if name not in mapping]
            for kind in missing:
                settings: dict[str, Any] = {"number_of_shards": 1}
                if self._refresh_interval:
                    settings["refresh_interval"] = self._refresh_interval
                status, answer = self._request(
                    "PUT", "/" + self._indices[kind], accept=(400,),
                    body={"settings": {"index": settings}, "mappings": MAPPINGS[kind]})
                error = answer.get("error") if isinstance(answer, dict) else None
                if status == 400 and not (isinstance(error, dict) and error.get("type") ==
                                          "resource_already_exists_exception"):
                    raise MetadataError(self._say(f"cannot create index "
                                                  f"{self._indices[kind]!r}: {answer!r}"))
                if status != 400:
                    log.info("created elasticsearch index %r at %s", self._indices[kind],
                             self._where)
            if missing:
                _, mapping = self._request("GET", f"/{names}/_mapping")
            for kind, name in self._indices.items():
                check_mapping(name, mapping, FIELDS[kind])
            self._ready = True

    def drop_indices(self) -> None:
        """Delete this store's indices, each by name (tests, and an operator's reset)."""
        for name in self._indices.values():
            self._request("DELETE", "/" + name, accept=(404,), write=True)
        with self._ready_lock:
            self._ready = False

    # -- buckets ---------------------------------------------------------------------------------
    def create_bucket(self, name: str, owner: str = "", versioning: str = UNVERSIONED) -> Bucket:
        check_text(name, "bucket")
        bucket = Bucket(name, time.time(), owner, versioning, {})
        for attempt in range(self._max_attempts):
            try:
                self._put("buckets", doc_id("bucket", name), {
                    "name": name, "created": bucket.created, "owner": owner,
                    "versioning": versioning, "state": "", "config": {}}, ABSENT, refresh=True)
                return bucket
            except _Conflict:
                existing = self._get("buckets", doc_id("bucket", name))
                if existing is not None:
                    raise BucketExists(f"bucket {name!r} exists", _bucket(existing.source))
                self._backoff(attempt)
        raise VersionConflict(self._say(f"bucket {name!r} kept changing"))

    def _bucket_doc(self, name: str) -> Doc | None:
        doc = self._get("buckets", doc_id("bucket", name))
        return None if doc is None or doc.source.get("state") == "deleting" else doc

    def bucket(self, name: str) -> Bucket | None:
        check_text(name, "bucket")
        doc = self._get("buckets", doc_id("bucket", name))
        return None if doc is None else _bucket(doc.source)

    def buckets(self) -> list[Bucket]:
        return [_bucket(hit["_source"]) for hit in self._walk(
            "buckets", {"match_all": {}}, [{"name": "asc"}])]

    def delete_bucket(self, name: str) -> None:
        """Mark the bucket "deleting" (writers that see it refuse, and one that wrote meanwhile
        takes its version back), check it is empty, end its uploads and key documents."""
        check_text(name, "bucket")
        bucket_id = doc_id("bucket", name)

        def mark(doc: Doc | None) -> tuple[str, Any, None]:
            if doc is None:
                raise NoSuchBucket(f"no bucket {name!r}")
            return "put", {**doc.source, "state": "deleting"}, None

        self._cas("buckets", bucket_id, mark)
        try:
            if self._search("keys", {"bool": {"filter": [
                    term("bucket", name), {"range": {"count": {"gt": 0}}}]}},
                    [{"key": "asc"}], 1):
                raise BucketNotEmpty(f"bucket {name!r} is not empty")
        except Exception:
            self._cas("buckets", bucket_id, lambda doc: (
                ("put", {**doc.source, "state": ""}, None) if doc else ("keep", None, None)))
            raise
        for hit in list(self._walk("uploads", term("bucket", name), [{"upload_id": "asc"}])):
            self._end_upload(hit["_source"]["upload_id"])
        for hit in list(self._walk("keys", term("bucket", name), [{"key": "asc"}])):
            self._settled(name, hit["_source"]["key"])
        self._delete("buckets", bucket_id, refresh=True)

    def set_versioning(self, name: str, state: str) -> Bucket:
        if state not in (ENABLED, SUSPENDED):
            raise ValueError(f"versioning is {ENABLED} or {SUSPENDED}, not {state!r}")
        return self._update_bucket(name, lambda source: {**source, "versioning": state})

    def set_bucket_config(self, name: str, item: str, value: Any | None) -> Bucket:
        def change(source: dict[str, Any]) -> dict[str, Any]:
            config = dict(source.get("config") or {})
            if value is None:
                config.pop(item, None)
            else:
                config[item] = json.loads(json.dumps(value))
            return {**source, "config": config}

        return self._update_bucket(name, change)

    def _update_bucket(self, name: str, change: Callable[[dict], dict]) -> Bucket:
        check_text(name, "bucket")

        def op(doc: Doc | None) -> tuple[str, Any, Bucket]:
            if doc is None or doc.source.get("state") == "deleting":
                raise NoSuchBucket(f"no bucket {name!r}")
            source = change(dict(doc.source))
            return "put", source, _bucket(source)

        return self._cas("buckets", doc_id("bucket", name), op, refresh=True)

    def _versioning(self, bucket: str) -> str:
        doc = self._bucket_doc(bucket)
        if doc is None:
            raise NoSuchBucket(f"no bucket {bucket!r}")
        return str(doc.source.get("versioning", ""))

    # -- contents --------------------------------------------------------------------------------
    def _reference(self, draft: Draft) -> list[str]:
        """Count the draft's references (step 1 above); the hashes counted, for an undo.
        ContentGone when shared content is no longer known (nothing stays counted then)."""
        if draft.delete_marker:
            return []
        hashes = [p.hash for p in draft.parts] or [draft.hash]
        counts = _counts(hashes)
        done: list[str] = []
        now = time.time()
        try:
            for hash_ in sorted(counts):
                must_exist = bool(draft.parts) or draft.shared

                def add(doc: Doc | None, hash_: str = hash_,
                        must_exist: bool = must_exist) -> tuple[str, Any, None]:
                    if doc is None:
                        if must_exist:
                            raise ContentGone(f"content {hash_} was collected meanwhile; "
                                              "send it again")
                        return "put", {"hash": hash_, "size": draft.size, "md5": draft.md5,
                                       "refs": 1, "unreferenced_since": None,
                                       "created": now}, None
                    source = dict(doc.source)
                    source["refs"] = int(source["refs"]) + counts[hash_]
                    source["unreferenced_since"] = None
                    if not source.get("md5") and draft.md5 and not must_exist:
                        source["md5"] = draft.md5
                    return "put", source, None

                # A new content must be searchable at once (hashes()); a count need not:
                # claim_unreferenced reads it in real time.
                self._cas("contents", doc_id("content", hash_), add,
                          refresh=lambda doc: doc is None)
                done.extend([hash_] * counts[hash_])
        except (ContentGone, MetadataError):
            self._release(done)
            raise
        return hashes

    def _release(self, hashes: Iterable[str]) -> None:
        """Take references back (a count that reaches zero dates the content), waiting for
        the refresh so that ``unreferenced`` lists it."""
        counts = _counts(hashes)
        now = time.time()
        for index, hash_ in enumerate(sorted(counts)):
            def drop(doc: Doc | None, hash_: str = hash_) -> tuple[str, Any, None]:
                if doc is None:
                    log.warning("%s", self._say(f"content {hash_} lost {counts[hash_]} "
                                                "reference(s) but was not known"))
                    return "keep", None, None
                source = dict(doc.source)
                source["refs"] = int(source["refs"]) - counts[hash_]
                if source["refs"] <= 0:
                    source["unreferenced_since"] = now
                return "put", source, None

            self._cas("contents", doc_id("content", hash_), drop,
                      refresh=index == len(counts) - 1)

    def content(self, hash: str) -> Content | None:
        if not hash:
            return None
        doc = self._get("contents", doc_id("content", hash))
        return None if doc is None else _content(doc.source)

    def touch_content(self, hash: str) -> bool:
        if not hash:
            return False
        now = time.time()

        def touch(doc: Doc | None) -> tuple[str, Any, bool]:
            if doc is None:
                return "keep", None, False
            if int(doc.source["refs"]) > 0:
                return "keep", None, True
            return "put", {**doc.source, "unreferenced_since": now}, True

        return self._cas("contents", doc_id("content", hash), touch)

    def hashes(self, after: str | None = None, limit: int = 1000) -> list[str]:
        check_page(0, limit)
        query = {"range": {"hash": {"gt": after}}} if after else {"match_all": {}}
        return [hit["_source"]["hash"] for hit in self._collect(
            self._walk("contents", query, [{"hash": "asc"}], min(limit, PAGE)), limit)]

    def unreferenced(self, older_than: float, limit: int = 1000) -> list[Content]:
        check_page(0, limit)
        before = time.time() - older_than
        query = {"bool": {"filter": [{"range": {"refs": {"lte": 0}}},
                                     {"range": {"unreferenced_since": {"lte": before}}}]}}
        return [_content(hit["_source"]) for hit in self._collect(self._walk(
            "contents", query, [{"unreferenced_since": "asc"}, {"hash": "asc"}],
            min(limit, PAGE)), limit)]

    def claim_unreferenced(self, hash: str, older_than: float) -> bool:
        before = time.time() - older_than

        def claim(doc: Doc | None) -> tuple[str, Any, bool]:
            if doc is None:
                return "keep", None, False
            since = doc.source.get("unreferenced_since")
            if int(doc.source["refs"]) > 0 or since is None or since > before:
                return "keep", None, False
            return "delete", None, True

        return self._cas("contents", doc_id("content", hash), claim, refresh=True)

    @staticmethod
    def _collect(hits: Iterator[_T], limit: int) -> list[_T]:
        found: list[_T] = []
        for hit in hits:
            found.append(hit)
            if len(found) >= limit:
                break
        return found

    # -- the seq allocator -----------------------------------------------------------------------
    def _allocate_seq(self, floor: int) -> int:
        """A seq above ``floor`` that no process ever got before: from this process's block,
        else from a new block reserved on the counter document (one conditional write)."""
        with self._seq_lock:
            if floor < self._seq_next <= self._seq_end:
                self._seq_next += 1
                return self._seq_next - 1

        def reserve(doc: Doc | None) -> tuple[str, Any, int]:
            last = int(doc.source["last_seq"]) if doc is not None else 0
            start = max(last, floor) + 1
            return "put", {"bucket": "", "key": "", "count": 0, "listed": False,
                           "last_number": 0, "last_seq": start + SEQ_BLOCK - 1, "latest": None,
                           "null_seq": None, "removing": []}, start

        start = self._cas("keys", COUNTER_ID, reserve)
        with self._seq_lock:
            self._seq_next, self._seq_end = start + 1, start + SEQ_BLOCK - 1
        return start

    # -- key documents ---------------------------------------------------------------------------
    def _key(self, bucket: str, key: str) -> tuple[Doc | None, KeyState]:
        doc = self._get("keys", key_id(bucket, key))
        return doc, KeyState.parse(bucket, key, doc)

    def _settled(self, bucket: str, key: str) -> tuple[Doc | None, KeyState]:
        """The key document once the removals it lists are finished (by whoever gets to
        them: a crashed writer's included)."""
        for _ in range(self._max_attempts):
            doc, state = self._key(bucket, key)
            if not state.removing:
                if doc is not None and state.empty():
                    self._forget_key(doc, state)
                    continue
                return doc, state
            for seq in list(state.removing):
                self._finish_removal(bucket, key, seq)
        raise VersionConflict(self._say(f"removals of {bucket}/{key!r} never settled"))

    def _forget_key(self, doc: Doc, state: KeyState) -> None:
        try:
            self._delete("keys", key_id(state.bucket, state.key), doc, refresh=True)
        except _Conflict:
            pass

    def _finish_removal(self, bucket: str, key: str, seq: int) -> None:
        """The end of a removal (rule 2): delete a removed version's document, decrement its
        contents if this process deleted it, then strike it from the key document."""
        vid = encode_version_id(seq)
        doc = self._get("versions", vid)
        if doc is not None and (doc.source.get("bucket"), doc.source.get("key")) == (bucket, key):
            if self._delete("versions", vid, refresh=True):
                # leak: a crash from here on leaves the references counted.
                manifest = doc.source.get("manifest") or ""
                if doc.source.get("parts"):
                    parts = list(self._walk("parts", term("manifest", manifest),
                                            [{"number": "asc"}]))
                    self._release(hit["_source"]["hash"] for hit in parts)
                    self._bulk([("delete", "parts", hit["_id"], None) for hit in parts])
                else:
                    self._release([doc.source.get("hash", "")])

        def strike(kdoc: Doc | None) -> tuple[str, Any, None]:
            state = KeyState.parse(bucket, key, kdoc)
            if kdoc is None or seq not in state.removing:
                return "keep", None, None
            state.removing.remove(seq)
            if state.empty():
                return "delete", None, None
            return "put", state.source(), None

        self._cas("keys", key_id(bucket, key), strike, refresh=True)

    def _commit(self, doc: Doc | None, state: KeyState) -> None:
        """The conditional write of a key document (_Conflict if it changed since read)."""
        self._put("keys", key_id(state.bucket, state.key), state.source(),
                  doc if doc is not None else ABSENT, refresh=True)

    # -- writing versions ------------------------------------------------------------------------
    def _write_manifest(self, parts: Sequence[Part]) -> str:
        """Part documents of a manifest under a new token (written before the version that
        names it: a crash leaves only invisible part documents)."""
        manifest = secrets.token_hex(16)
        offset, actions = 0, []
        for part in parts:
            actions.append(("index", "parts", doc_id("part", manifest, part.number),
                            _part_source(part, manifest=manifest, part_offset=offset)))
            offset += part.size
        outcomes = self._bulk(actions, refresh=True)
        if any(status not in (200, 201) for status, _ in outcomes):
            raise MetadataError(self._say(f"writing the parts of a manifest: {outcomes[:5]}"))
        return manifest

    def _insert(self, draft: Draft, condition: WriteCondition | None,
                versioning: str) -> Version:
        """Every version write: reference, write the version document, commit the key."""
        versioned = versioning == ENABLED
        manifest = ""
        referenced: list[str] | None = None
        own: int | None = None          # seq of our version document, not yet committed
        now = time.time()
        committing = False
        try:
            for attempt in range(self._max_attempts):
                doc, state = self._settled(draft.bucket, draft.key)
                if condition is not None:
                    condition.check(state.latest_version())
                if referenced is None:
                    referenced = self._reference(draft)
                    if draft.parts:
                        manifest = self._write_manifest(draft.parts)
                seq = self._allocate_seq(state.last_seq)
                number = state.last_number + 1 if state.count > 0 else 1
                source = version_source(draft, seq, number, not versioned, manifest, now)
                actions: list[tuple[str, str, str, dict[str, Any] | None]] = []
                if state.latest is not None and not state.latest.get("committed"):
                    actions.append(("update", "versions",
                                    encode_version_id(state.latest["seq"]),
                                    {"doc": {"committed": True}}))
                if own is not None:
                    actions.append(("delete", "versions", encode_version_id(own), None))
                actions.append(("create", "versions", encode_version_id(seq), source))
                outcomes = self._bulk(actions, refresh=True)
                if own is not None and outcomes[-2] != (200, "deleted"):
                    raise MetadataError(self._say(f"our uncommitted version {own} of "
                                                  f"{draft.key!r} vanished: {outcomes}"))
                if outcomes[-1][0] != 201:
                    raise MetadataError(self._say(f"creating version {seq}: {outcomes[-1]}"))
                own = seq
                replaced = state.null_seq if not versioned else None
                state.count += 1 - (replaced is not None)
                if replaced is not None:
                    state.removing.append(replaced)
                state.null_seq = seq if not versioned else state.null_seq
                state.last_number, state.last_seq, state.latest = number, seq, source
                committing = True
                try:
                    self._commit(doc, state)
                    break
                except _Conflict:
                    committing = False
                    self._backoff(attempt)
            else:
                raise VersionConflict(self._say(f"{draft.bucket}/{draft.key!r} kept changing: "
                                                f"gave up after {self._max_attempts} attempts"))
        except Exception:
            # An unknown commit outcome is never undone (rule 3); nor is anything on a
            # KeyboardInterrupt and the like: as after a crash, the references stay.
            if not committing:
                self._undo(own, referenced, manifest)
            raise
        if replaced is not None:
            self._finish_removal(draft.bucket, draft.key, replaced)
        version = version_from_source(source, True)
        if self._bucket_doc(draft.bucket) is None:
            # delete_bucket marked it after we read it: take the version back.
            self._remove(draft.bucket, draft.key, lambda st: seq, None)
            raise NoSuchBucket(f"bucket {draft.bucket!r} was deleted meanwhile")
        return version

    def _undo(self, own: int | None, referenced: list[str] | None, manifest: str) -> None:
        """A write that failed before its commit: drop its document, then its references
        (whoever deleted the document owns them) and its parts."""
        try:
            if own is not None and not self._delete("versions", encode_version_id(own),
                                                    refresh=True):
                return
            if referenced:
                self._release(referenced)
            if manifest:
                self._bulk([("delete", "parts", hit["_id"], None) for hit in self._walk(
                    "parts", term("manifest", manifest), [{"number": "asc"}])])
        except MetadataError as exc:            # leak; the write's own error goes on
            log.warning("%s", self._say(f"could not undo a failed write: {exc}"))

    def put_version(self, draft: Draft, condition: WriteCondition | None = None) -> Version:
        check_draft(draft)
        return self._insert(draft, condition, self._versioning(draft.bucket))

    def _remove(self, bucket: str, key: str, pick: Callable[[KeyState], int | None],
                condition: WriteCondition | None,
                check_missing: bool = False) -> Version | None:
        """Remove the version ``pick`` names (rule 2): the key document first (the newest
        remaining version becomes latest), then the version document and its references."""
        for attempt in range(self._max_attempts):
            doc, state = self._settled(bucket, key)
            seq = pick(state)
            version = self._visible_version(state, seq) if seq is not None else None
            if version is None:
                if check_missing and condition is not None:
                    condition.check(None)
                return None
            if condition is not None:
                condition.check(version)
            state.count -= 1
            state.removing.append(seq)
            if state.null_seq == seq:
                state.null_seq = None
            if state.latest_seq == seq:
                state.latest = self._newest(bucket, key, state.removing) if state.count else None
            try:
                self._commit(doc, state)
            except _Conflict:
                self._backoff(attempt)
                continue
            self._finish_removal(bucket, key, seq)
            return version
        raise VersionConflict(self._say(f"{bucket}/{key!r} kept changing: gave up after "
                                        f"{self._max_attempts} attempts"))

    def _newest(self, bucket: str, key: str, excluded: list[int]) -> dict[str, Any] | None:
        """The newest committed version of a key outside ``excluded`` (its next latest)."""
        hits = self._search("versions", {"bool": {
            "filter": [term("bucket", bucket), term("key", key), term("committed", True)],
            "must_not": [{"terms": {"seq": excluded}}]}}, [{"seq": "desc"}], 1)
        return hits[0]["_source"] if hits else None

    def _visible_version(self, state: KeyState, seq: int) -> Version | None:
        if seq == state.latest_seq:
            return state.latest_version()
        doc = self._get("versions", encode_version_id(seq))
        if doc is None or (doc.source.get("bucket"), doc.source.get("key")) != \
                (state.bucket, state.key) or not state.visible(doc.source):
            return None
        return version_from_source(doc.source, False)

    def delete_object(self, bucket: str, key: str,
                      condition: WriteCondition | None = None) -> Version | None:
        check_text(bucket, "bucket")
        check_text(key, "key")
        versioning = self._versioning(bucket)
        if versioning != UNVERSIONED:
            return self._insert(Draft(bucket, key, delete_marker=True), condition, versioning)
        self._remove(bucket, key, lambda state: state.latest_seq, condition, check_missing=True)
        return None

    def delete_version(self, bucket: str, key: str, version_id: str,
                       condition: WriteCondition | None = None) -> Version | None:
        check_text(bucket, "bucket")
        check_text(key, "key")
        self._versioning(bucket)
        return self._remove(bucket, key, lambda state: self._seq_of(state, version_id),
                            condition)

    @staticmethod
    def _seq_of(state: KeyState, version_id: str) -> int | None:
        if version_id == NULL_VERSION_ID:
            return state.null_seq
        return decode_version_id(version_id)

    # -- reading versions ------------------------------------------------------------------------
    def version(self, bucket: str, key: str, version_id: str | None = None) -> Version | None:
        check_text(bucket, "bucket")
        check_text(key, "key")
        _, state = self._key(bucket, key)
        if version_id is None:
            return state.latest_version()
        seq = self._seq_of(state, version_id)
        return None if seq is None else self._visible_version(state, seq)

    def numbered(self, bucket: str, key: str, number: int) -> Version | None:
        check_text(bucket, "bucket")
        check_text(key, "key")
        if not valid_number(number):
            return None
        _, state = self._key(bucket, key)
        if state.latest is not None and state.latest.get("number") == number:
            return state.latest_version()
        for hit in self._search("versions", {"bool": {"filter": [
                term("bucket", bucket), term("key", key), term("number", number)]}},
                [{"seq": "desc"}], 10):
            if state.visible(hit["_source"]):
                return version_from_source(hit["_source"], False)
        return None

    def _states(self, bucket: str, keys: Iterable[str]) -> dict[str, KeyState]:
        wanted = sorted(set(keys))
        docs = self._mget([("keys", key_id(bucket, key)) for key in wanted])
        return {key: KeyState.parse(bucket, key, doc) for key, doc in zip(wanted, docs)}

    def _versions(self, bucket: str, query: dict[str, Any], sort: list[Any],
                  page: int = PAGE, meta: bool = True) -> Iterator[Version]:
        """The versions among the version documents ``query`` finds, in ``sort`` order: each
        page of hits costs one ``_mget`` of their key documents, which say which documents
        are visible and which is latest."""
        after: list[Any] | None = None
        while True:
            hits = self._search("versions", query, sort, page, after)
            states = self._states(bucket, (hit["_source"].get("key", "") for hit in hits))
            for hit in hits:
                source = hit["_source"]
                state = states[source.get("key", "")]
                if state.visible(source):
                    yield version_from_source(source, source.get("seq") == state.latest_seq,
                                              meta)
            if len(hits) < page:
                return
            after = hits[-1].get("sort")
            if not isinstance(after, list):
                raise _shape("search (sort values)", hits[-1])

    def parts(self, version: Version, offset: int = 0, limit: int = 10_000) -> list[Part]:
        doc = self._get("versions", encode_version_id(version.seq))
        if doc is None or not doc.source.get("manifest"):
            return []
        manifest = doc.source["manifest"]
        first = self._search("parts", {"bool": {"filter": [
            term("manifest", manifest), {"range": {"part_offset": {"lte": offset}}}]}},
            [{"part_offset": "desc"}], 1)
        if not first:
            return []
        query = {"bool": {"filter": [term("manifest", manifest), {"range": {
            "number": {"gte": first[0]["_source"]["number"]}}}]}}
        return [_part(hit["_source"], int(hit["_source"]["part_offset"])) for hit in
                self._collect(self._walk("parts", query, [{"number": "asc"}],
                                         min(limit, PAGE)), limit)]

    def current_page(self, bucket: str, start: str, inclusive: bool, end: str | None,
                     limit: int) -> list[Version]:
        query = {"bool": {"filter": [term("bucket", bucket), term("listed", True),
                                     key_range(start, inclusive, end)]}}
        return [version_from_source(hit["_source"]["latest"], True, meta=False)
                for hit in self._collect(self._walk("keys", query, [{"key": "asc"}],
                                                    min(limit, PAGE)), limit)]

    def versions_page(self, bucket: str, key: str, below_seq: int | None, end: str | None,
                      limit: int) -> list[Version]:
        query = resume_query(bucket, key, "seq", below_seq, "lt", end)
        return self._collect(self._versions(bucket, query, [{"key": "asc"}, {"seq": "desc"}],
                                            min(limit, PAGE), meta=False), limit)

    def versions_of(self, bucket: str, key: str | None, offset: int = 0,
                    limit: int = 1000) -> list[Version]:
        """Walks (and skips) ``offset`` versions: the book's paging is by offset, ours by
        cursor, and hidden version documents make offsets in the index meaningless."""
        check_page(offset, limit)
        filters = [term("bucket", bucket)] + ([term("key", key)] if key is not None else [])
        found = []
        for index, version in enumerate(self._versions(
                bucket, {"bool": {"filter": filters}},
                [{"key": "asc"}, {"number": "asc"}, {"seq": "asc"}])):
            if index >= offset:
                found.append(version)
                if len(found) >= limit:
                    break
        return found

    def keys_with_versions_over(self, bucket: str, count: int, after: str | None = None,
                                limit: int = 1000) -> list[tuple[str, list[Version]]]:
        check_page(0, limit)
        query = {"bool": {"filter": [term("bucket", bucket), {"range": {"count": {"gt": count}}},
                                     key_range(after or "", False, None)]}}
        found = []
        for hit in self._collect(self._walk("keys", query, [{"key": "asc"}],
                                            min(limit, PAGE)), limit):
            key = hit["_source"]["key"]
            versions = list(self._versions(
                bucket, {"bool": {"filter": [term("bucket", bucket), term("key", key)]}},
                [{"seq": "asc"}]))
            if len(versions) > count:
                found.append((key, versions))
        return found

    # -- multipart uploads ------------------------------------------------------------------------
    def create_upload(self, bucket: str, key: str, meta: ObjectMeta) -> Upload:
        check_text(bucket, "bucket")
        check_text(key, "key")
        self._versioning(bucket)
        upload = Upload(new_upload_id(), bucket, key, time.time(), meta)
        self._put("uploads", doc_id("upload", upload.upload_id), {
            "upload_id": upload.upload_id, "bucket": bucket, "key": key,
            "created": upload.created, "changed": upload.created, "meta": meta.to_json(),
            "state": "open", "completed": None}, ABSENT, refresh=True)
        return upload

    def _upload_doc(self, upload_id: str) -> Doc | None:
        return self._get("uploads", doc_id("upload", upload_id))

    def upload(self, upload_id: str) -> Upload | None:
        doc = self._upload_doc(upload_id)
        if doc is None or doc.source.get("state") == "aborting":
            return None
        return _upload(doc.source)

    def put_part(self, upload_id: str, part: Part, shared: bool = False, md5: str = "") -> Part:
        """Reference, then replace the part document conditionally (the process that replaced
        a part takes its reference back), then check the upload is still open: if it ended
        meanwhile, its end may not have seen this part, so take the part back."""
        part = dataclasses.replace(part, created=time.time(), offset=0)
        doc = self._upload_doc(upload_id)
        if doc is None or doc.source.get("state") != "open":
            raise NoSuchUpload(f"no upload {upload_id!r} in progress")
        upload = _upload(doc.source)
        referenced = self._reference(Draft(upload.bucket, upload.key, part.stored_size,
                                           part.hash, md5=md5, shared=shared))
        part_id = doc_id("upload_part", upload_id, part.number)
        source = _part_source(part, upload_id=upload_id)
        try:
            replaced = self._cas("upload_parts", part_id, lambda old: (
                "put", source, None if old is None else old.source.get("hash")), refresh=True)
        except VersionConflict:
            self._release(referenced)
            raise
        # (any other MetadataError: the outcome is unknown, the reference stays: leak)
        if replaced:
            self._release([replaced])
        doc = self._upload_doc(upload_id)
        if doc is None or doc.source.get("state") != "open":
            self._drop_upload_parts(upload_id, only=part_id)
            raise NoSuchUpload(f"upload {upload_id!r} ended meanwhile")
        return part

    def upload_parts(self, upload_id: str, after: int = 0, limit: int = 1000) -> list[Part]:
        check_page(0, limit)
        query = {"bool": {"filter": [term("upload_id", upload_id),
                                     {"range": {"number": {"gt": after}}}]}}
        return [_part(hit["_source"]) for hit in self._collect(
            self._walk("upload_parts", query, [{"number": "asc"}], min(limit, PAGE)), limit)]

    def uploads_page(self, bucket: str, key: str, after_upload: str | None, end: str | None,
                     limit: int) -> list[Upload]:
        query = resume_query(bucket, key, "upload_id", after_upload, "gt", end,
                             [term("state", "open")])
        return [_upload(hit["_source"]) for hit in self._collect(self._walk(
            "uploads", query, [{"key": "asc"}, {"upload_id": "asc"}], min(limit, PAGE)), limit)]

    def _drop_upload_parts(self, upload_id: str, only: str | None = None) -> None:
        """Delete an upload's part documents; each one this process deleted gives its
        reference back."""
        if only is not None:
            doc = self._get("upload_parts", only)
            hits = [{"_id": only, "_source": doc.source}] if doc is not None else []
        else:
            hits = list(self._walk("upload_parts", term("upload_id", upload_id),
                                   [{"number": "asc"}]))
        outcomes = self._bulk([("delete", "upload_parts", hit["_id"], None) for hit in hits],
                              refresh=True)
        # leak: a crash from here on leaves these references counted.
        self._release(hit["_source"]["hash"] for hit, outcome in zip(hits, outcomes)
                      if outcome == (200, "deleted"))

    def complete_upload(self, upload_id: str, draft: Draft | None,
                        condition: WriteCondition | None = None) -> Version:
        if draft is not None:
            check_draft(draft)
        upload_key = doc_id("upload", upload_id)
        deadline = time.monotonic() + COMPLETE_WAIT
        while True:
            doc = self._upload_doc(upload_id)
            state = doc.source.get("state") if doc is not None else None
            if state not in ("open", "completing", "completed"):
                raise NoSuchUpload(f"no upload {upload_id!r}")
            upload = _upload(doc.source)
            if state == "completed":
                found = self.version(upload.bucket, upload.key,
                                     encode_version_id(int(doc.source["completed"])))
                if found is None:
                    raise NoSuchUpload(f"upload {upload_id!r} completed into a version since "
                                       "removed")
                return found
            if draft is None:
                raise NoSuchUpload(f"upload {upload_id!r} is not complete")
            if state == "completing" and \
                    time.time() < float(doc.source.get("changed") or 0) + COMPLETE_LEASE:
                if time.monotonic() > deadline:
                    raise VersionConflict(self._say(f"upload {upload_id!r} is being "
                                                    "completed by another request"))
                time.sleep(0.05)
                continue
            try:        # ours alone from here (a stale "completing" is taken over)
                self._put("uploads", upload_key, {**doc.source, "state": "completing",
                                                  "changed": time.time()}, doc)
            except _Conflict:
                continue
            break
        try:
            held = {int(hit["_source"]["number"]): (hit["_source"]["hash"],
                                                    hit["_source"]["etag"])
                    for hit in self._walk("upload_parts", term("upload_id", upload_id),
                                          [{"number": "asc"}])}
            for part in draft.parts:
                if held.get(part.number) != (part.hash, part.etag):
                    raise InvalidPart(f"part {part.number} is not the part uploaded")
            version = self._insert(Draft(upload.bucket, upload.key, draft.size, "", draft.etag,
                                         draft.meta, draft.parts, shared=True),
                                   condition, self._versioning(upload.bucket))
        except Exception:
            # Open again for another try.  Even if the version was committed (an unknown
            # outcome), it holds references of its own: the parts keep theirs.
            self._reopen(upload_key)
            raise
        # leak: a crash before the parts are dropped leaves them counted (forget_upload and
        # a repeated Complete drop them).  A crash before this write leaves the upload
        # "completing"; after its lease, a repeated Complete makes a second version.
        self._cas("uploads", upload_key, lambda d: ("put", {
            **(d.source if d else doc.source), "state": "completed",
            "completed": version.seq, "changed": time.time()}, None), refresh=True)
        self._drop_upload_parts(upload_id)
        return version

    def _reopen(self, upload_key: str) -> None:
        try:
            self._cas("uploads", upload_key, lambda d: (
                ("put", {**d.source, "state": "open"}, None)
                if d is not None and d.source.get("state") == "completing" else
                ("keep", None, None)))
        except MetadataError as exc:      # the lease ends it; the first error goes on
            log.warning("%s", self._say(f"could not reopen upload: {exc}"))

    def _end_upload(self, upload_id: str) -> bool:
        """Abort an open upload (or one whose Complete died, or an abort that died), or
        forget a completed one: mark it, drop its parts, drop it.  True if it was open."""
        upload_key = doc_id("upload", upload_id)

        def mark(doc: Doc | None) -> tuple[str, Any, str | None]:
            if doc is None:
                return "keep", None, None
            state = doc.source.get("state")
            if state == "completing" and \
                    time.time() < float(doc.source.get("changed") or 0) + COMPLETE_LEASE:
                return "keep", None, None
            if state == "completed":
                return "keep", None, "completed"
            return "put", {**doc.source, "state": "aborting", "changed": time.time()}, state

        before = self._cas("uploads", upload_key, mark)
        if before is None:
            return False
        self._drop_upload_parts(upload_id)
        self._delete("uploads", upload_key, refresh=True)
        return before == "open"

    def abort_upload(self, upload_id: str) -> bool:
        doc = self._upload_doc(upload_id)
        if doc is None or doc.source.get("state") == "completed":
            return False
        return self._end_upload(upload_id)

    def idle_uploads(self, older_than: float, limit: int = 1000) -> list[Upload]:
        check_page(0, limit)
        before = time.time() - older_than
        return [_upload(hit["_source"]) for hit in self._collect(self._walk(
            "uploads", {"range": {"created": {"lte": before}}},
            [{"created": "asc"}, {"upload_id": "asc"}], min(limit, PAGE)), limit)]

    def forget_upload(self, upload_id: str) -> None:
        doc = self._upload_doc(upload_id)
        if doc is not None and doc.source.get("state") == "completed":
            self._end_upload(upload_id)

    # -- records ---------------------------------------------------------------------------------
    def put_record(self, kind: str, id: str, body: Mapping[str, Any]) -> None:
        self._put("records", doc_id("record", kind, id), {
            "kind": kind, "id": id, "body": json.loads(json.dumps(dict(body))),
            "updated": time.time()}, refresh=True)

    def record(self, kind: str, id: str) -> dict[str, Any] | None:
        doc = self._get("records", doc_id("record", kind, id))
        return None if doc is None else dict(doc.source.get("body") or {})

    def records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        return [(hit["_source"]["id"], dict(hit["_source"].get("body") or {}))
                for hit in self._walk("records", term("kind", kind), [{"id": "asc"}])]

    def delete_record(self, kind: str, id: str) -> bool:
        return self._delete("records", doc_id("record", kind, id), refresh=True)

    # -- the repair log ------------------------------------------------------------------------
    def record_repair(self, repair: RepairRecord) -> RepairRecord:
        """A conditional write of the counts document allocates the seq and counts the
        outcome; the record then overwrites slot ``seq % repairs_kept``: pruning costs no
        request of its own and the index never holds more than ``repairs_kept`` records.

        A crash between the two writes leaves a repair counted but not listed.  A slot holds
        the older of two records only if its writer stalled while ``repairs_kept`` others
        were recorded; listings sort by seq, so they still answer newest first.
        """
        check_repair(repair)

        def count(doc: Doc | None) -> tuple[str, Any, int]:
            source = {"last_seq": 0, "done": 0, "failed": 0}
            if doc is not None:
                source.update({k: int(doc.source.get(k) or 0) for k in source})
            source["last_seq"] += 1
            source[repair.outcome] += 1
            return "put", source, source["last_seq"]

        seq = self._cas("repair_counts", REPAIR_COUNTS_ID, count)
        recorded = dataclasses.replace(repair, seq=seq)
        self._put("repairs", str(seq % self.repairs_kept), {
            "seq": seq, "time": repair.time, "hash": repair.hash,
            "shards": list(repair.shards), "outcome": repair.outcome, "error": repair.error,
            "by": repair.by}, refresh=True)
        return recorded

    def repairs(self, limit: int = 100) -> list[RepairRecord]:
        check_page(0, limit)
        hits = self._search("repairs", {"match_all": {}}, [{"seq": "desc"}],
                            min(limit, self.repairs_kept, PAGE))
        found = []
        for hit in hits:
            source = hit["_source"]
            try:
                found.append(RepairRecord(
                    float(source["time"]), source["hash"],
                    tuple(int(i) for i in source.get("shards") or ()), source["outcome"],
                    source.get("error") or "", source.get("by") or "", int(source["seq"])))
            except (KeyError, TypeError, ValueError):
                raise _shape("search (repairs)", hit) from None
        return found

    def repair_counts(self) -> tuple[int, int]:
        doc = self._get("repair_counts", REPAIR_COUNTS_ID)
        if doc is None:
            return 0, 0
        return int(doc.source.get("done") or 0), int(doc.source.get("failed") or 0)

    def substring_page(self, bucket: str | None, q: str, limit: int,
                       after: str | None) -> tuple[list[Version], str | None]:
        """A case-insensitive ``wildcard`` query on the keys' ``key`` field, by (bucket, key)."""
        resume = None
        if after is not None:
            start_bucket, sep, start_key = after.partition("\0")
            if not sep:
                raise ValueError(f"not a search cursor: {after!r}")
            resume = [start_bucket, start_key]
        pattern = "*" + re.sub(r"([*?\\])", r"\\\1", q) + "*"
        filters = [term("listed", True), {"wildcard": {"key": {
            "value": pattern, "case_insensitive": True}}}]
        if bucket is not None:
            filters.append(term("bucket", bucket))
        hits = self._search("keys", {"bool": {"filter": filters}},
                            [{"bucket": "asc"}, {"key": "asc"}], limit + 1, resume)
        page = [version_from_source(hit["_source"]["latest"], True, meta=False)
                for hit in hits[:limit]]
        more = len(hits) > limit
        return page, f"{page[-1].bucket}\0{page[-1].key}" if more else None

    # -- operations ------------------------------------------------------------------------------
    def _aggregate(self, kind: str, query: dict[str, Any], sums: Sequence[str] = ()
                   ) -> tuple[int, list[int]]:
        """(hits, the sum of each field in ``sums``) of ``query``, counted by the server."""
        self._ensure_indices()
        aggs = {f"sum_{field}": {"sum": {"field": field}} for field in sums}
        _, answer = self._request("POST", self._path(kind, "_search"), body={
            "size": 0, "track_total_hits": True, "query": query, "aggs": aggs})
        try:
            total = parse_total_hits(answer["hits"]["total"])
            values = [int(answer["aggregations"][f"sum_{field}"]["value"] or 0)
                      for field in sums] if sums else []
        except (KeyError, TypeError, ValueError):
            raise _shape("search (aggregations)", answer) from None
        return total, values

    def usage(self) -> Usage:
        """From aggregations: versions sum the keys' version counts; logical bytes sum the
        version documents that are not markers (one a failed write left hidden counts too)."""
        buckets, _ = self._aggregate("buckets", {"match_all": {}})
        objects, _ = self._aggregate("keys", term("listed", True))
        _, (versions,) = self._aggregate("keys", {"match_all": {}}, ["count"])
        _, (logical,) = self._aggregate("versions", term("delete_marker", False), ["size"])
        _, (content,) = self._aggregate("contents", {"range": {"refs": {"gt": 0}}}, ["size"])
        return Usage(buckets, objects, versions, logical, content)

    def check(self) -> str:
        """The server's version (8 or later), our indices' mappings, and one counted search
        whose answer must make sense."""
        _, body = self._request("GET", "/")
        try:
            number = body["version"]["number"]
            major = int(str(number).split(".", 1)[0])
        except (KeyError, TypeError, ValueError):
            raise _shape("root", body) from None
        if major < 8:
            raise MetadataError(self._say(f"version {number}: 8 or later is required"))
        self._ensure_indices()
        _, answer = self._request("POST", self._path("versions", "_search"),
                                  body={"size": 0, "track_total_hits": True,
                                        "query": {"match_all": {}}})
        try:
            total = answer["hits"]["total"]
        except (KeyError, TypeError):
            raise _shape("search (hits.total)", answer) from None
        parse_total_hits(total)
        return f"elasticsearch {number} at {self._where}, indices {self._prefix}-*"

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"ElasticsearchStore({self._where!r}, index={self._prefix!r})"
