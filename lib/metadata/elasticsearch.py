"""Elasticsearch metadata backend: the book's and the customer's store for a multi-host cluster.

Same document model as the book (BOOK §2: one document ``<name>_<version>`` per version) but with
ES 8 semantics and without the book's traps (W21, W22): an untyped index whose mapping has
``keyword`` name and hash and ``long`` size, term queries in JSON bodies (never ``q=``),
``hits.total`` read as either form, ``op_type=create`` with a *bounded* 409 retry that
re-reads the latest version (W7), ``refresh=wait_for`` on writes for read-after-write, and
composite aggregations to page over every name and hash instead of the top 10.  A response
whose shape we do not recognise raises ``MetadataError`` rather than being guessed at.

Requests go through the official client's ``perform_request`` with explicit headers: the 9.x
client otherwise stamps ``compatible-with=9`` on every request, which ES 8 servers refuse with
400.  ``compatible-with=8`` is understood by both ES 8 and ES 9.  This is the only module that
imports ``elasticsearch``.
"""
from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

from elasticsearch import ApiError, Elasticsearch, TransportError

from lib.metadata import (
    Metadata,
    MetadataError,
    MetadataStore,
    VersionConflict,
    check_page,
    check_text,
    valid_version,
    validate_new_version,
)

log = logging.getLogger(__name__)

#: REST API compatibility level understood by ES 8.x and 9.x servers alike.
_MEDIA_TYPE = "application/vnd.elasticsearch+json; compatible-with=8"
#: Elasticsearch refuses ``_id`` values longer than this many UTF-8 bytes.
_MAX_ID_BYTES = 512
#: ``index.max_result_window`` default: from+size beyond it must use search_after.
_MAX_RESULT_WINDOW = 10_000
#: Hits or buckets fetched per request when walking a large result.
_PAGE = 1000
#: ``add_version`` attempts before giving up with VersionConflict.
MAX_CREATE_ATTEMPTS = 50
#: Seconds of random backoff after a 409: up to base * 2**attempt, capped.
_BACKOFF_BASE = 0.002
_BACKOFF_CAP = 0.1

_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "name": {"type": "keyword"},
        "version": {"type": "long"},
        "size": {"type": "long"},
        "hash": {"type": "keyword"},
    },
}
_ACCEPTED_TYPES = {
    "name": {"keyword"},
    "version": {"long", "integer"},
    "size": {"long"},
    "hash": {"keyword"},
}
_SORT_NAME_VERSION = [{"name": {"order": "asc"}}, {"version": {"order": "asc"}}]


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


def doc_id(name: str, version: int) -> str:
    """The document id ``<name>_<version>``; names too long for an ES id use their SHA-256."""
    candidate = f"{name}_{version}"
    if len(candidate.encode("utf-8")) <= _MAX_ID_BYTES:
        return candidate
    return f"~sha256~{hashlib.sha256(name.encode('utf-8')).hexdigest()}_{version}"


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
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value >= 0
            and relation in ("eq", "gte")
        ):
            return value
    raise MetadataError(f"unrecognised hits.total {total!r}")


def _shape(what: str, body: object) -> MetadataError:
    text = repr(body)
    if len(text) > 300:
        text = text[:300] + "..."
    return MetadataError(f"unrecognised elasticsearch {what} response: {text}")


def _hits(body: object) -> list[dict[str, Any]]:
    """``hits.hits`` of a search response, checked for shape."""
    if isinstance(body, dict):
        hits = body.get("hits")
        if isinstance(hits, dict):
            inner = hits.get("hits")
            if isinstance(inner, list) and all(isinstance(h, dict) for h in inner):
                return inner
    raise _shape("search", body)


def _metadata(source: object) -> Metadata:
    """A stored document (``_source``) as Metadata, checked field by field."""
    if isinstance(source, dict):
        name, version = source.get("name"), source.get("version")
        size, hash_ = source.get("size"), source.get("hash")
        if (
            isinstance(name, str)
            and isinstance(version, int)
            and not isinstance(version, bool)
            and version >= 1
            and isinstance(size, int)
            and not isinstance(size, bool)
            and size >= 0
            and isinstance(hash_, str)
        ):
            return Metadata(name=name, version=version, size=size, hash=hash_)
    raise _shape("document", source)


def _composite(body: object, agg: str, field: str) -> tuple[list[tuple[str, int]], Any]:
    """Buckets ``(key, doc_count)`` and ``after_key`` (None when absent) of a composite agg."""
    try:
        node = body["aggregations"][agg]  # type: ignore[index]
        buckets = node["buckets"]
        after_key = node.get("after_key")
        result = []
        for bucket in buckets:
            key, count = bucket["key"][field], bucket["doc_count"]
            if not isinstance(key, str) or not isinstance(count, int):
                raise TypeError(key, count)
            result.append((key, count))
    except (KeyError, TypeError, AttributeError):
        raise _shape("aggregation", body) from None
    if after_key is not None and not isinstance(after_key, dict):
        raise _shape("aggregation", body)
    return result, after_key


class ElasticsearchStore(MetadataStore):
    """``MetadataStore`` in one Elasticsearch index (created with our mapping if missing)."""

    def __init__(
        self,
        server: str,
        index: str = "metadata",
        *,
        timeout: float = 30.0,
        refresh_interval: str | None = None,
        max_create_attempts: int = MAX_CREATE_ATTEMPTS,
    ) -> None:
        """``refresh_interval`` (e.g. ``"100ms"``) is applied only when this store creates the
        index; writes wait for a refresh, so it bounds their latency (ES default 1 s)."""
        self._url = server_url(server)
        self._where = _display(self._url)
        self._index = index
        self._index_path = "/" + urllib.parse.quote(index, safe="")
        self._refresh_interval = refresh_interval
        self._max_create_attempts = max_create_attempts
        try:
            self._client = Elasticsearch(
                self._url, request_timeout=timeout, max_retries=2, retry_on_timeout=True
            )
        except ValueError as exc:
            raise MetadataError(f"ES_SERVER {server!r}: {exc}") from exc
        # A create must not be retried blindly by the transport: a retry of a create that
        # did land would come back 409 and allocate a second version.
        self._client_once = self._client.options(max_retries=0)
        self._index_ready = False
        self._index_lock = threading.Lock()

    # -- transport ---------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        accept: tuple[int, ...] = (),
        once: bool = False,
    ) -> tuple[int, Any]:
        """Status and decoded body; a status outside 2xx and ``accept`` raises MetadataError."""
        headers = {"accept": _MEDIA_TYPE}
        if body is not None:
            headers["content-type"] = _MEDIA_TYPE
        client = self._client_once if once else self._client
        try:
            response = client.perform_request(
                method, path, params=params, headers=headers, body=body
            )
        except ApiError as exc:
            status = exc.meta.status
            if status in accept:
                return status, exc.body
            raise MetadataError(
                f"elasticsearch at {self._where}: {method} {path} -> {status} {exc.message}"
            ) from exc
        except TransportError as exc:
            raise MetadataError(
                f"elasticsearch at {self._where} unreachable: {method} {path}: {exc}"
            ) from exc
        return response.meta.status, response.body

    def _doc_path(self, name: str, version: int) -> str:
        return f"{self._index_path}/_doc/{urllib.parse.quote(doc_id(name, version), safe='')}"

    def _search(self, body: dict[str, Any]) -> Any:
        self._ensure_index()
        _, answer = self._request("POST", f"{self._index_path}/_search", body=body)
        return answer

    def _walk(
        self, query: dict[str, Any], sort: list[Any], source: Any
    ) -> Iterator[dict[str, Any]]:
        """Every hit of ``query`` in ``sort`` order, fetched ``_PAGE`` at a time (search_after).

        ``sort`` must be a total order (ours always ends with the unique (name, version)).
        """
        search_after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {
                "query": query,
                "sort": sort,
                "size": _PAGE,
                "_source": source,
                "track_total_hits": False,
            }
            if search_after is not None:
                body["search_after"] = search_after
            hits = _hits(self._search(body))
            for hit in hits:
                yield hit
            if len(hits) < _PAGE:
                return
            search_after = hits[-1].get("sort")
            if not isinstance(search_after, list):
                raise _shape("search (sort values)", hits[-1])

    # -- index -------------------------------------------------------------------------------

    def _ensure_index(self) -> None:
        """Create the index with our mapping if missing, and refuse an incompatible one (for
        instance the book's, where ``hash`` is analysed text and ``size`` 32-bit)."""
        if self._index_ready:
            return
        with self._index_lock:
            if self._index_ready:
                return
            status, mapping = self._request("GET", f"{self._index_path}/_mapping", accept=(404,))
            if status == 404:
                body: dict[str, Any] = {"mappings": _MAPPING}
                if self._refresh_interval:
                    body["settings"] = {"index": {"refresh_interval": self._refresh_interval}}
                status, answer = self._request("PUT", self._index_path, body=body, accept=(400,))
                if status == 400:
                    error = answer.get("error") if isinstance(answer, dict) else None
                    kind = error.get("type") if isinstance(error, dict) else None
                    if kind != "resource_already_exists_exception":  # another process won
                        raise MetadataError(
                            f"elasticsearch at {self._where}: cannot create index "
                            f"{self._index!r}: {answer!r}"
                        )
                else:
                    log.info("created elasticsearch index %r at %s", self._index, self._where)
                _, mapping = self._request("GET", f"{self._index_path}/_mapping")
            self._check_mapping(mapping)
            self._index_ready = True

    def _check_mapping(self, mapping: object) -> None:
        if not isinstance(mapping, dict) or not mapping:
            raise _shape("mapping", mapping)
        for concrete, spec in mapping.items():
            try:
                properties = spec["mappings"]["properties"]
                types = {field: properties[field]["type"] for field in _ACCEPTED_TYPES}
            except (KeyError, TypeError):
                raise MetadataError(
                    f"elasticsearch index {concrete!r} lacks the metadata mapping: {spec!r}"
                ) from None
            wrong = {f: t for f, t in types.items() if t not in _ACCEPTED_TYPES[f]}
            if wrong:
                raise MetadataError(
                    f"elasticsearch index {concrete!r} has incompatible field types {wrong} "
                    "(need keyword name/hash, long size); reindex it"
                )

    def drop_index(self) -> None:
        """Delete the whole index (tests and tooling only)."""
        self._request("DELETE", self._index_path, accept=(404,))
        with self._index_lock:
            self._index_ready = False

    # -- MetadataStore -----------------------------------------------------------------------

    def latest(self, name: str) -> Metadata | None:
        check_text(name, "object name")
        hits = _hits(
            self._search(
                {
                    "query": {"term": {"name": name}},
                    "sort": [{"version": {"order": "desc"}}],
                    "size": 1,
                    "track_total_hits": False,
                }
            )
        )
        if not hits:
            return None
        found = _metadata(hits[0].get("_source"))
        if found.name != name:
            raise _shape("term query", hits[0])
        return found

    def get(self, name: str, version: int) -> Metadata | None:
        check_text(name, "object name")
        if not valid_version(version):
            return None
        self._ensure_index()
        status, body = self._request("GET", self._doc_path(name, version), accept=(404,))
        if not isinstance(body, dict) or not isinstance(body.get("found"), bool):
            raise _shape("get", body)
        if status == 404 or not body["found"]:
            return None
        found = _metadata(body.get("_source"))
        if (found.name, found.version) != (name, version):
            raise MetadataError(f"document id {doc_id(name, version)!r} holds {found!r}")
        return found

    def add_version(self, name: str, size: int, hash: str) -> Metadata:
        validate_new_version(name, size, hash)
        self._ensure_index()
        current = self.latest(name)
        version = current.version + 1 if current else 1
        for attempt in range(1, self._max_create_attempts + 1):
            document = {"name": name, "version": version, "size": size, "hash": hash}
            status, body = self._request(
                "PUT",
                self._doc_path(name, version),
                params={"op_type": "create", "refresh": "wait_for"},
                body=document,
                accept=(409,),
                once=True,
            )
            if status == 409:
                # Someone else holds this number.  Search may lag behind creates that are
                # still waiting for their refresh, so never go below version+1 (W7).
                # Jittered backoff spreads out the herd so that one of them wins each round.
                time.sleep(random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt)))
                newer = self.latest(name)
                version = max(version + 1, newer.version + 1 if newer else 1)
                log.debug("version conflict on %r (attempt %d), trying %d", name, attempt, version)
                continue
            if not isinstance(body, dict) or body.get("result") != "created":
                raise _shape("create", body)
            log.debug("added %r version %d (%d bytes)", name, version, size)
            return Metadata(name=name, version=version, size=size, hash=hash)
        raise VersionConflict(
            f"no free version for {name!r} after {self._max_create_attempts} attempts"
        )

    def delete_version(self, name: str, version: int) -> None:
        check_text(name, "object name")
        if not valid_version(version):
            return
        self._ensure_index()
        self._request(
            "DELETE",
            self._doc_path(name, version),
            params={"refresh": "wait_for"},
            accept=(404,),
        )

    def versions(
        self, name: str | None = None, offset: int = 0, limit: int = 1000
    ) -> list[Metadata]:
        check_page(offset, limit)
        if name is not None:
            check_text(name, "object name")
        query: dict[str, Any] = {"term": {"name": name}} if name is not None else {"match_all": {}}
        if offset + limit <= _MAX_RESULT_WINDOW:
            body = {
                "query": query,
                "sort": _SORT_NAME_VERSION,
                "from": offset,
                "size": limit,
                "track_total_hits": False,
            }
            return [_metadata(hit.get("_source")) for hit in _hits(self._search(body))]
        # Beyond the result window: walk with search_after, keeping only the page asked for.
        result: list[Metadata] = []
        for index, hit in enumerate(self._walk(query, _SORT_NAME_VERSION, True)):
            if index >= offset:
                result.append(_metadata(hit.get("_source")))
                if len(result) >= limit:
                    break
        return result

    def has_hash(self, hash: str) -> bool:
        check_text(hash, "hash", allow_empty=True)
        if not hash:
            return False
        body = self._search(
            {"query": {"term": {"hash": hash}}, "size": 0, "track_total_hits": 1}
        )
        try:
            total = body["hits"]["total"]
        except (KeyError, TypeError):
            raise _shape("search (hits.total)", body) from None
        return parse_total_hits(total) > 0

    def hash_size(self, hash: str) -> int | None:
        check_text(hash, "hash", allow_empty=True)
        if not hash:
            return None
        hits = _hits(
            self._search(
                {"query": {"term": {"hash": hash}}, "size": 1, "track_total_hits": False}
            )
        )
        if not hits:
            return None
        found = _metadata(hits[0].get("_source"))
        if found.hash != hash:
            raise _shape("term query", hits[0])
        return found.size

    def _versions_of(self, name: str) -> list[int]:
        versions = []
        for hit in self._walk(
            {"term": {"name": name}}, [{"version": {"order": "asc"}}], ["name", "version"]
        ):
            source = hit.get("_source")
            version = source.get("version") if isinstance(source, dict) else None
            if not isinstance(version, int) or isinstance(version, bool):
                raise _shape("search", hit)
            versions.append(version)
        return versions

    def names_with_versions_over(
        self, count: int, after: str | None = None, limit: int = 1000
    ) -> list[tuple[str, list[int]]]:
        check_page(0, limit)
        if after is not None:
            check_text(after, "after", allow_empty=True)
        result: list[tuple[str, list[int]]] = []
        after_key: Any = {"name": after} if after is not None else None
        while len(result) < limit:
            composite: dict[str, Any] = {
                "size": _PAGE,
                "sources": [{"name": {"terms": {"field": "name"}}}],
            }
            if after_key is not None:
                composite["after"] = after_key
            body = self._search(
                {"size": 0, "track_total_hits": False, "aggs": {"names": {"composite": composite}}}
            )
            buckets, after_key = _composite(body, "names", "name")
            for name, doc_count in buckets:
                if doc_count > count:
                    versions = self._versions_of(name)
                    # Counts come from the aggregation; keep the contract on the list itself.
                    if len(versions) > count:
                        result.append((name, versions))
                        if len(result) >= limit:
                            break
            if not buckets or after_key is None:
                break
        return result

    def hashes(self, after: str | None = None, limit: int = 1000) -> list[str]:
        check_page(0, limit)
        if after is not None:
            check_text(after, "after", allow_empty=True)
        result: list[str] = []
        after_key: Any = {"hash": after} if after is not None else None
        while len(result) < limit:
            composite: dict[str, Any] = {
                "size": min(_PAGE, limit - len(result)),
                "sources": [{"hash": {"terms": {"field": "hash"}}}],
            }
            if after_key is not None:
                composite["after"] = after_key
            body = self._search(
                {
                    "size": 0,
                    "track_total_hits": False,
                    "query": {"bool": {"must_not": [{"term": {"hash": ""}}]}},
                    "aggs": {"hashes": {"composite": composite}},
                }
            )
            buckets, after_key = _composite(body, "hashes", "hash")
            result.extend(key for key, _ in buckets if key)
            if not buckets or after_key is None:
                break
        return result[:limit]

    def check(self) -> str:
        _, body = self._request("GET", "/")
        try:
            number = body["version"]["number"]
            major = int(str(number).split(".", 1)[0])
        except (KeyError, TypeError, ValueError):
            raise _shape("root", body) from None
        if major < 8:
            raise MetadataError(
                f"elasticsearch {number} at {self._where}: version 8 or later is required"
            )
        self._ensure_index()
        return f"elasticsearch {number} at {self._where}"

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"ElasticsearchStore({self._where!r}, index={self._index!r})"
