"""Fetch on miss: a bucket with a third-party origin gets a missing key from it, answers the
client from that stream and keeps the bytes as a new erasure-coded version.

:class:`OriginLayer` wraps the object layer (as MinIO's cache wraps its object API): the same
calls, with ``open`` and ``head`` consulting the bucket's origin (``lib/upstream.py``) when the
key has no version at all (a delete marker is a statement: a deleted key is not fetched
again; removing its versions makes it missing).  Everything else goes to the wrapped layer.

A GET miss (the leader) is teed (``lib/objects/tee.py``): one thread stores the origin's
body through the object layer (verified; the version written create-only) while a bounded
queue passes each chunk on to the client.

* The client's last chunk is released only once the whole body is stored and verified
  (length, and the MD5 or SHA-256 the origin declared): a body that ends early or fails a
  check is not stored (the content store aborts its shards) and the client's answer is cut
  short of its Content-Length, so it sees an error, never short data.
* A client that goes away or stalls longer than the read timeout is dropped; the store goes on.
* A Range GET fetches the whole object: the client's generator passes on only the range's
  bytes, and answers its last piece once the whole object is stored (a range is never served
  from bytes that failed a check).
* An origin answer without Content-Length (or a suffix range of one) is stored first, then
  served from the store.
* Single flight (``lib/objects/guards.py``, as the two below): concurrent misses of a key in
  one process make one origin GET; the others wait for it (``tessera_origin_coalesced_total``)
  and then read what it stored.
* An origin 404 is remembered for ORIGIN_NEGATIVE_TTL seconds; ORIGIN_BREAKER_FAILURES
  consecutive failures (5xx, refused, timeouts, bad bodies; not a too large object) open
  the origin's circuit for ORIGIN_BREAKER_RESET seconds (503), after which one request tries
  it again.
* A HEAD miss asks the origin for its metadata (a HEAD there) and stores nothing: a HEAD
  moves no body; the next GET (or a prefetch) stores the object.  Only when the origin's
  HEAD has no Content-Length is the object fetched and stored, to answer with its size.

Origins are per bucket, kept as metadata records (``origin``, bucket), the book bucket's
default coming from ORIGIN_URL.  The stored version keeps the origin's Content-Type, its ETag
(as the version's ETag, so validators stay the origin's) and Last-Modified (``meta.origin``).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import Counter

from lib.config import ConfigError
from lib.errors import (BadRequest, ConditionNotMet, InvalidArgument, NoSuchKey,
                        NotEnoughDataServers, NotModified, OriginCircuitOpen, OriginError,
                        OriginNotFound, OriginTimeout, OriginTooLarge, OriginUnavailable)
from lib.headers import http_date, parse_range
from lib.metadata import Draft, MetadataStore, ObjectMeta, Version, WriteCondition
from lib.objects.content import Expect
from lib.objects.guards import Breaker, Flight, Flights, NegativeCache
from lib.objects.layer import ObjectLayer, ObjectReader, ReadConditions
from lib.objects.tee import Tee
from lib.upstream import Answer, Limits, OriginSpec, Upstream

log = logging.getLogger(__name__)

FETCHES = Counter("tessera_origin_fetches_total", "Origin fetches by result (stored, "
                  "not_found, unavailable, too_large, timeout, circuit_open, store_failed, "
                  "raced)",
                  ["result"])
BYTES = Counter("tessera_origin_bytes_total", "Bytes read from origins")
COALESCED = Counter("tessera_origin_coalesced_total",
                    "Misses that waited for another request's fetch of the same key")
NEGATIVE_HITS = Counter("tessera_origin_negative_hits_total",
                        "Misses answered 404 from the negative cache, asking no origin")

#: Kind of the metadata records that hold the buckets' origins.
RECORD_KIND = "origin"
#: Seconds a bucket's origin setting is trusted without reading its record again.
ORIGIN_CACHE_TTL = 5.0
#: Longest wait of a follower for another request's fetch to finish, in seconds.
MAX_WAIT = 900.0


class Origins:
    """Which origin each bucket has: its metadata record, else (the book bucket) ORIGIN_URL."""

    def __init__(self, metadata: MetadataStore, limits: Limits, defaults: dict[str, str],
                 clock: Callable[[], float] = time.monotonic):
        self._metadata = metadata
        self._limits = limits
        self._defaults = defaults
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Upstream | None]] = {}

    def of(self, bucket: str) -> Upstream | None:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(bucket)
        if hit is not None and now - hit[0] < ORIGIN_CACHE_TTL:
            return hit[1]
        record = self._metadata.record(RECORD_KIND, bucket)
        if record is None and bucket in self._defaults:
            record = {"kind": "http", "url": self._defaults[bucket]}
        upstream = Upstream(OriginSpec.from_record(record), self._limits) if record else None
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[bucket] = (now, upstream)
        return upstream

    def forget(self, bucket: str) -> None:
        with self._lock:
            self._cache.pop(bucket, None)


class OriginLayer:
    """The object layer with fetch on miss (see the module docstring)."""

    def __init__(self, layer: ObjectLayer, origins: Origins, negative: NegativeCache,
                 breaker: Breaker, stall_timeout: float):
        self._layer = layer
        self.origins = origins
        self.negative = negative
        self.breaker = breaker
        self.flights = Flights()
        #: Seconds a client may leave its queue full before the fetch goes on without it.
        self.stall_timeout = stall_timeout

    @classmethod
    def from_config(cls, layer: ObjectLayer, config) -> "OriginLayer":
        defaults = {config.book_bucket: config.origin_url} if config.origin_url else {}
        for url in defaults.values():
            try:
                OriginSpec.from_record({"kind": "http", "url": url})
            except InvalidArgument as exc:
                raise ConfigError(f"ORIGIN_URL: {exc}") from None
        return cls(layer, Origins(layer.metadata, Limits.from_config(config), defaults),
                   NegativeCache(config.origin_negative_ttl),
                   Breaker(config.origin_breaker_failures, config.origin_breaker_reset),
                   config.origin_read_timeout)

    def __getattr__(self, name: str):
        return getattr(self._layer, name)

    # -- reads -------------------------------------------------------------------------------
    def open(self, bucket: str, key: str, version_id: str | None = None,
             number: int | None = None, byte_range: str | None = None,
             part_number: int | None = None, conditions: ReadConditions | None = None,
             etag_of: Callable[[Version], str] | None = None) -> ObjectReader:
        try:
            return self._layer.open(bucket, key, version_id, number, byte_range, part_number,
                                    conditions, etag_of)
        except NoSuchKey as exc:
            upstream = self._origin_for_miss(bucket, exc, version_id, number)
        if part_number not in (None, 1):
            raise NoSuchKey(f"The specified key does not exist: {key!r}")
        flight, leader = self._take_off(bucket, key, upstream)
        if not leader:
            self._follow(bucket, key, upstream, flight)
            return self._layer.open(bucket, key, byte_range=byte_range,
                                    part_number=part_number, conditions=conditions,
                                    etag_of=etag_of)
        answer = None
        try:
            answer = self._ask(upstream, bucket, key, "GET")
            if answer.size is None:               # stored first, then served from the store
                self._store(upstream, bucket, key, answer)
        except BaseException as exc:
            if answer is not None:
                answer.close()
            self.flights.land(bucket, key, flight, exc)
            raise
        if answer.size is None:
            self.flights.land(bucket, key, flight)
            return self._layer.open(bucket, key, byte_range=byte_range,
                                    part_number=part_number, conditions=conditions,
                                    etag_of=etag_of)
        def finished(error: BaseException | None) -> None:
            answer.close()
            self.flights.land(bucket, key, flight, error)

        tee = Tee(_counted(answer), lambda source: self._store(upstream, bucket, key, answer,
                                                               source),
                  finished, self.stall_timeout, upstream.limits.read_timeout,
                  f"{bucket}/{key!r} from origin {upstream.name}")
        provisional = _provisional(bucket, key, answer)
        try:        # this client's conditions and range: the object is stored all the same
            if conditions is not None:
                _evaluate(conditions, provisional, etag_of)
            first, last = self._span(answer.size, byte_range, part_number)
        except BaseException:
            tee.detach()
            raise
        return tee.reader(provisional, first, last, partial=byte_range is not None
                          or part_number is not None)

    def head(self, bucket: str, key: str, version_id: str | None = None,
             number: int | None = None, conditions: ReadConditions | None = None,
             etag_of: Callable[[Version], str] | None = None) -> Version:
        try:
            return self._layer.head(bucket, key, version_id, number, conditions, etag_of)
        except NoSuchKey as exc:
            upstream = self._origin_for_miss(bucket, exc, version_id, number)
        answer = self._ask(upstream, bucket, key, "HEAD")
        if answer.size is None:                    # nothing to answer with: store it
            self.prefetch(bucket, key)
            return self._layer.head(bucket, key, conditions=conditions, etag_of=etag_of)
        version = _provisional(bucket, key, answer)
        if conditions is not None:
            _evaluate(conditions, version, etag_of)
        return version

    def prefetch(self, bucket: str, key: str) -> str:
        """Store ``key`` from the bucket's origin unless it has a version: ``present``,
        ``stored`` (by this call, or by the fetch it waited for), or an origin error."""
        try:
            self._layer.head(bucket, key)
            return "present"
        except NoSuchKey as exc:
            upstream = self._origin_for_miss(bucket, exc, None, None)
        flight, leader = self._take_off(bucket, key, upstream)
        if not leader:
            self._follow(bucket, key, upstream, flight)
            return "stored"
        try:
            self._store(upstream, bucket, key, self._ask(upstream, bucket, key, "GET"))
        except BaseException as exc:
            self.flights.land(bucket, key, flight, exc)
            raise
        self.flights.land(bucket, key, flight)
        return "stored"

    # -- the steps ---------------------------------------------------------------------------
    def _origin_for_miss(self, bucket: str, exc: NoSuchKey, version_id: str | None,
                         number: int | None) -> Upstream:
        """The origin to ask for a missing key; re-raise ``exc`` when there is none to ask."""
        if exc.delete_marker is not None or version_id is not None or number is not None:
            raise exc
        upstream = self.origins.of(bucket)
        if upstream is None:
            raise exc
        return upstream

    def _take_off(self, bucket: str, key: str, upstream: Upstream) -> tuple[Flight, bool]:
        if self.negative.hit(bucket, key):
            NEGATIVE_HITS.inc()
            raise OriginNotFound(f"origin {upstream.name} has no {key!r} (remembered for "
                                 "ORIGIN_NEGATIVE_TTL)")
        flight, leader = self.flights.join(bucket, key)
        if not leader:
            COALESCED.inc()
        return flight, leader

    def _follow(self, bucket: str, key: str, upstream: Upstream, flight: Flight) -> None:
        """Wait for another request's fetch; raise what it failed with."""
        if not flight.done.wait(MAX_WAIT):
            raise OriginTimeout(f"origin {upstream.name}: the fetch of {key!r} this request "
                                f"waited for took more than {MAX_WAIT:.0f}s")
        error = flight.error
        if isinstance(error, OriginError):
            raise type(error)(str(error))
        if error is not None:
            raise NotEnoughDataServers(f"storing {key!r} from origin {upstream.name} failed: "
                                       f"{error}")

    def _ask(self, upstream: Upstream, bucket: str, key: str, method: str) -> Answer:
        self.breaker.check(upstream.name)
        try:
            answer = upstream.get(key) if method == "GET" else upstream.head(key)
        except OriginNotFound:
            self.breaker.succeeded(upstream.name)
            self.negative.add(bucket, key)
            FETCHES.labels("not_found").inc()
            raise
        except OriginTooLarge:
            FETCHES.labels("too_large").inc()
            raise
        except (OriginUnavailable, OriginTimeout) as exc:
            self.breaker.failed(upstream.name)
            FETCHES.labels("timeout" if isinstance(exc, OriginTimeout) else "unavailable").inc()
            log.warning("%s %s/%r: %s", method, bucket, key, exc)
            raise
        except OriginCircuitOpen:
            FETCHES.labels("circuit_open").inc()
            raise
        self.breaker.succeeded(upstream.name)
        return answer

    @staticmethod
    def _span(size: int, byte_range: str | None, part_number: int | None) -> tuple[int, int]:
        """The bytes the client gets (RangeNotSatisfiable past the end)."""
        resolved = parse_range(byte_range, size) if part_number is None else None
        return resolved if resolved is not None else (0, size - 1)

    def _store(self, upstream: Upstream, bucket: str, key: str, answer: Answer,
               source: Iterator[bytes] | None = None) -> Version | None:
        """Store the answer's body as the key's new version (create-only: a version written
        meanwhile wins, and None is returned); origin errors for a bad body."""
        layer = self._layer
        name = upstream.name

        def mismatch(message: str) -> Exception:
            return OriginUnavailable(f"origin {name} sent {key!r} with a bad checksum: "
                                     f"{message}")

        expect = Expect(size=answer.size, sha256=answer.sha256, sha256_mismatch=mismatch,
                        md5=answer.md5, want_md5=True, max_size=upstream.limits.max_size)
        try:
            stored = layer.store(source if source is not None else _counted(answer), expect)
        except BadRequest as exc:              # the origin's body failed a length or checksum
            self.breaker.failed(name)
            FETCHES.labels("unavailable").inc()
            raise OriginUnavailable(f"origin {name} sent {key!r} with a bad body: {exc}") \
                from None
        except OriginTooLarge:
            FETCHES.labels("too_large").inc()
            raise
        except (OriginUnavailable, OriginTimeout) as exc:
            self.breaker.failed(name)
            FETCHES.labels("timeout" if isinstance(exc, OriginTimeout) else "unavailable").inc()
            raise
        except Exception:
            FETCHES.labels("store_failed").inc()
            raise
        meta = _meta(answer)
        draft = Draft(bucket, key, stored.digests.size, stored.hash,
                      _etag(answer) or layer.etag_for(stored), meta, md5=stored.digests.md5,
                      shared=stored.shared)
        try:
            version = layer.write_version(draft, WriteCondition(absent=True), stored)
        except ConditionNotMet:
            FETCHES.labels("raced").inc()
            log.info("%s/%r was written while it was fetched from origin %s; that version "
                     "stays", bucket, key, name)
            return None
        except Exception:
            FETCHES.labels("store_failed").inc()
            raise
        FETCHES.labels("stored").inc()
        self.negative.forget(bucket, key)
        log.info("fetched %s/%r from origin %s: %d bytes", bucket, key, name, version.size)
        return version


def _counted(answer: Answer) -> Iterator[bytes]:
    for chunk in answer:
        BYTES.inc(len(chunk))
        yield chunk


def _etag(answer: Answer) -> str:
    """The origin's ETag, if it can be ours (printable, not absurdly long)."""
    etag = answer.etag
    return etag if etag and len(etag) <= 200 and etag.isprintable() and '"' not in etag else ""


def _meta(answer: Answer) -> ObjectMeta:
    origin = {"origin": answer.origin}
    if answer.etag:
        origin["etag"] = answer.etag[:200]
    if answer.last_modified is not None:
        origin["last-modified"] = http_date(answer.last_modified)
    return ObjectMeta(content_type=answer.content_type[:200], origin=origin)


def _provisional(bucket: str, key: str, answer: Answer) -> Version:
    """The version a miss is answered as before it is stored (no number, no version id)."""
    return Version(bucket, key, seq=0, number=0, is_null=False, is_latest=True,
                   delete_marker=False, created=answer.last_modified or time.time(),
                   size=answer.size or 0, hash=answer.sha256 or "", etag=_etag(answer),
                   meta=_meta(answer))


def _evaluate(conditions: ReadConditions, version: Version,
              etag_of: Callable[[Version], str] | None) -> None:
    try:
        conditions.evaluate((etag_of or (lambda v: v.etag))(version), version.created)
    except NotModified as exc:
        raise NotModified(str(exc), version) from None


