"""The object layer: what every protocol (book API, S3, management API, origin fetch) calls.

It knows nothing of HTTP.  It decides: which bucket and key a body becomes a version of,
whether its content is stored or shared (deduplicated, before or after the body), what a
version write must satisfy (conditions, checked atomically with the write), which version a
read names, which bytes a range covers (across the parts of a multipart object), and when a
repair is needed.  Its collaborators: a :class:`lib.metadata.MetadataStore` and a
:class:`lib.objects.content.ContentStore` (the erasure-coded data servers, or a fake in the
conformance suite).  Multipart uploads are in ``lib/objects/multipart.py``.
"""
from __future__ import annotations

import base64
import dataclasses
import ipaddress
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from lib.errors import (ConditionalConflict, ConditionNotMet, DeleteMarkerVersion,
                        InvalidArgument, InvalidBucketName, InvalidPart, InvalidRequest,
                        NoSuchBucket, NoSuchKey, NoSuchVersion, NotModified,
                        RangeNotSatisfiable)
from lib.headers import parse_range
from lib.metadata import (NULL_VERSION_ID, Bucket, Draft, MetadataStore, ObjectMeta, Part,
                          Version, WriteCondition, decode_version_id, validate_key)
from lib.metadata import listing
from lib.objects.content import ContentReader, ContentStore, Digests, Expect, digest

log = logging.getLogger(__name__)

#: Seconds a bucket's existence is trusted without asking the metadata store again.
BUCKET_CACHE_TTL = 5.0
#: Largest object accepted (as S3: 5 TiB).
MAX_OBJECT_SIZE = 5 << 40
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def validate_bucket_name(name: str) -> str:
    """S3's rules for bucket names (general purpose buckets)."""
    if not isinstance(name, str) or not _BUCKET_NAME.match(name) or ".." in name \
            or ".-" in name or "-." in name or name.startswith(("xn--", "sthree-")) \
            or name.endswith(("-s3alias", "--ol-s3")):
        raise InvalidBucketName(f"The specified bucket is not valid: {name!r}")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name
    raise InvalidBucketName(f"The specified bucket is not valid (an IP address): {name!r}")


def check_version_id(version_id: str) -> str:
    """Refuse a version id that cannot be one of ours (S3: 400 InvalidArgument)."""
    if version_id != NULL_VERSION_ID and decode_version_id(version_id) is None:
        raise InvalidArgument(f"Invalid version id specified: {version_id!r}")
    return version_id


@dataclasses.dataclass(frozen=True)
class ReadConditions:
    """HTTP preconditions of a read (or of a copy's source), evaluated as RFC 9110 orders
    them.  Entity tags are compared with ``etag_of(version)`` (each protocol has its own)."""

    if_match: list[str] | None = None
    if_none_match: list[str] | None = None
    if_modified_since: float | None = None
    if_unmodified_since: float | None = None

    def evaluate(self, etag: str, modified: float, copy: bool = False) -> None:
        """Raise ConditionNotMet (412), or NotModified (304, reads only), when false."""
        seconds = int(modified)                 # HTTP-dates have whole seconds
        if self.if_match is not None:
            if "*" not in self.if_match and etag not in self.if_match:
                raise ConditionNotMet("At least one of the pre-conditions you specified did "
                                      "not hold (If-Match)")
        elif self.if_unmodified_since is not None and seconds > self.if_unmodified_since:
            raise ConditionNotMet("At least one of the pre-conditions you specified did not "
                                  "hold (If-Unmodified-Since)")
        not_modified = (self.if_none_match is not None and (
            "*" in self.if_none_match or etag in self.if_none_match)) or (
            self.if_none_match is None and self.if_modified_since is not None
            and seconds <= self.if_modified_since)
        if not_modified:
            if copy:
                raise ConditionNotMet("At least one of the pre-conditions you specified did "
                                      "not hold (If-None-Match / If-Modified-Since)")
            raise NotModified("not modified", None)


@dataclasses.dataclass(frozen=True)
class Stored:
    """What a PUT's body became: its digests, and whether existing content was shared."""

    digests: Digests
    shared: bool
    missing: tuple[int, ...] = ()

    @property
    def hash(self) -> str:
        return self.digests.sha256


class ObjectReader:
    """The bytes ``first..last`` of one version, opened before it is handed out (a failure
    is a status, never a truncated answer)."""

    def __init__(self, version: Version, first: int, last: int, partial: bool,
                 chunks: Iterator[bytes], close: Callable[[], None], part: Part | None = None,
                 parts_count: int = 0):
        self.version = version
        self.first = first
        self.last = last
        self.partial = partial
        self.part = part
        self.parts_count = parts_count
        self._chunks = chunks
        self._close = close

    @property
    def length(self) -> int:
        return max(0, self.last - self.first + 1)

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._chunks
        finally:
            self.close()

    def close(self) -> None:
        self._close()


@dataclasses.dataclass(frozen=True)
class DeleteResult:
    """What a DELETE did: the version it removed or the delete marker it wrote."""

    version_id: str | None
    delete_marker: bool
    version: Version | None = None


class ObjectLayer:
    def __init__(self, metadata: MetadataStore, contents: ContentStore, *,
                 on_stored: Callable[[Version], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.metadata = metadata
        self.contents = contents
        self.on_stored = on_stored
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, Bucket]] = {}

    # -- buckets ---------------------------------------------------------------------------------
    def create_bucket(self, name: str, owner: str = "") -> Bucket:
        return self.metadata.create_bucket(validate_bucket_name(name), owner)

    def bucket(self, name: str) -> Bucket:
        """The bucket (trusted for BUCKET_CACHE_TTL seconds); NoSuchBucket otherwise."""
        now = self._clock()
        with self._lock:
            hit = self._buckets.get(name)
        if hit is not None and now - hit[0] < BUCKET_CACHE_TTL:
            return hit[1]
        bucket = self.metadata.bucket(name)
        if bucket is None:
            raise NoSuchBucket(f"The specified bucket does not exist: {name!r}")
        with self._lock:
            if len(self._buckets) > 10_000:
                self._buckets.clear()
            self._buckets[name] = (now, bucket)
        return bucket

    def buckets(self) -> list[Bucket]:
        return self.metadata.buckets()

    def delete_bucket(self, name: str) -> None:
        self.metadata.delete_bucket(name)
        self._forget_bucket(name)

    def set_versioning(self, name: str, state: str) -> Bucket:
        bucket = self.metadata.set_versioning(name, state)
        self._forget_bucket(name)
        return bucket

    def set_bucket_config(self, name: str, item: str, value: object | None) -> Bucket:
        bucket = self.metadata.set_bucket_config(name, item, value)
        self._forget_bucket(name)
        return bucket

    def _forget_bucket(self, name: str) -> None:
        with self._lock:
            self._buckets.pop(name, None)

    # -- storing ------------------------------------------------------------------------------------
    def shareable(self, hash_: str, size: int | None) -> bool:
        """Whether stored content ``hash_`` can be shared by a new version (dedup); its grace
        against collection restarts, so it stays while the new version's body arrives."""
        content = self.metadata.content(hash_)
        if content is None or (size is not None and content.size != size):
            return False
        # Referenced content is collected only GC_GRACE after its last reference goes, so
        # only unreferenced content needs its grace restarted for the body's time.
        if content.refs <= 0 and not self.metadata.touch_content(hash_):
            return False
        return self.contents.readable(hash_, content.size)

    def store(self, chunks: Iterable[bytes], expect: Expect) -> Stored:
        """Store a body as content (or find it stored already), verified against ``expect``.

        With the hash known up front and its content stored, the body is only hashed.
        Otherwise it is staged, and when its hash turns out to be stored already the staged
        copy is dropped (deduplicated after the fact).
        """
        if expect.sha256 is not None and self.shareable(expect.sha256, expect.size):
            return Stored(digest(chunks, expect), shared=True)
        with self.contents.stage(chunks, expect) as staged:
            if expect.sha256 is None and self.shareable(staged.hash, staged.digests.size):
                staged.discard()
                return Stored(staged.digests, shared=True)
            missing = staged.commit()
        return Stored(staged.digests, shared=False, missing=tuple(missing))

    def etag_for(self, stored: Stored) -> str:
        """S3's ETag of single-content bytes: their MD5 (known from this body, or recorded
        with the content), else the hex SHA-256 (never mistaken for an MD5: 64 digits)."""
        if stored.digests.md5:
            return stored.digests.md5
        content = self.metadata.content(stored.hash) if stored.shared else None
        if content is not None and content.md5:
            return content.md5
        return _hex(stored.hash)

    def put(self, bucket: str, key: str, chunks: Iterable[bytes], expect: Expect,
            meta: ObjectMeta = ObjectMeta(), condition: WriteCondition | None = None) -> Version:
        """Store a body as the key's new version."""
        validate_key(key)
        self.bucket(bucket)
        if condition is not None:
            condition.check(self.metadata.version(bucket, key))    # fail before the body
        if expect.max_size is None:
            expect.max_size = MAX_OBJECT_SIZE
        stored = self.store(chunks, expect)
        if stored.digests.checksums:
            meta = dataclasses.replace(meta, checksums=dict(stored.digests.checksums),
                                       checksum_type="FULL_OBJECT")
        draft = Draft(bucket, key, stored.digests.size, stored.hash, self.etag_for(stored),
                      meta, md5=stored.digests.md5, shared=stored.shared)
        return self.write_version(draft, condition, stored)

    def write_version(self, draft: Draft, condition: WriteCondition | None = None,
                      stored: Stored | None = None) -> Version:
        """Write a version whose content is stored; new content no version references is
        removed again when the write fails (a lost condition race included)."""
        try:
            version = self.metadata.put_version(draft, condition)
        except NoSuchKey as exc:
            self._release(stored)
            if condition is not None:
                raise ConditionalConflict("the object was deleted while this conditional "
                                          "write was in progress; retry it") from exc
            raise
        except BaseException:
            self._release(stored)
            raise
        if stored is not None and stored.missing:
            self.contents.repair(stored.hash, stored.digests.size, list(stored.missing))
        self.stored(version)
        return version

    def _release(self, stored: Stored | None) -> None:
        """Remove content stored for a write that failed, unless something references it."""
        if stored is None or stored.shared:
            return
        try:
            if not self.metadata.has_hash(stored.hash):
                self.contents.remove(stored.hash)
        except Exception:
            log.exception("could not remove the shards of %s after a failed write; the orphan "
                          "collector will", stored.hash)

    def stored(self, version: Version) -> None:
        # DEBUG: the access line at INFO already records each PUT; a second line per PUT
        # doubled what logging cost a small PUT (README "Metrics and logs").
        log.debug("stored %s/%r version %d %s (%d bytes, %s)", version.bucket, version.key,
                  version.number, version.version_id, version.size, version.hash or "parts")
        if self.on_stored is not None:
            self.on_stored(version)

    def add_version(self, bucket: str, key: str, hash_: str, size: int, md5: str = "",
                    meta: ObjectMeta = ObjectMeta(), shared: bool = True,
                    missing: Iterable[int] = ()) -> Version:
        """A version of content stored by other means (a resumable upload, an origin):
        ``shared`` content is stored already, else it was just committed (with ``missing``
        shard indexes to rebuild) and is removed again if the write fails."""
        validate_key(key)
        self.bucket(bucket)
        content = self.metadata.content(hash_) if shared else None
        etag = md5 or (content.md5 if content is not None and content.md5 else _hex(hash_))
        stored = None if shared else Stored(Digests(size, hash_, md5, {}), False,
                                            tuple(missing))
        return self.write_version(Draft(bucket, key, size, hash_, etag, meta, md5=md5,
                                        shared=shared), stored=stored)

    # -- reading --------------------------------------------------------------------------------------
    def head(self, bucket: str, key: str, version_id: str | None = None,
             number: int | None = None, conditions: ReadConditions | None = None,
             etag_of: Callable[[Version], str] | None = None) -> Version:
        """The version a read names, its conditions evaluated; nothing is read but metadata.

        :raises NoSuchKey: no such key, or its latest version is a delete marker (``.marker``).
        :raises NoSuchVersion: no version by that id or number.
        :raises DeleteMarkerVersion: the id names a delete marker (S3: 405).
        """
        validate_key(key)
        if version_id is not None:
            check_version_id(version_id)
            version = self.metadata.version(bucket, key, version_id)
        elif number is not None:
            version = self.metadata.numbered(bucket, key, number)
        else:
            version = self.metadata.version(bucket, key)
        if version is None:
            self.bucket(bucket)
            if version_id is not None or number is not None:
                raise NoSuchVersion(f"no version {version_id or number} of {key!r}")
            raise NoSuchKey(f"The specified key does not exist: {key!r}")
        if version.delete_marker:
            if version_id is not None or number is not None:
                raise DeleteMarkerVersion(f"version {version.version_id} of {key!r} is a "
                                          "delete marker", version)
            raise NoSuchKey(f"The specified key does not exist: {key!r} (deleted)", version)
        if conditions is not None:
            try:
                conditions.evaluate((etag_of or _s3_etag)(version), version.created)
            except NotModified as exc:
                raise NotModified(str(exc), version) from None
        return version

    def part_of(self, version: Version, part_number: int) -> tuple[Part | None, int]:
        """S3's ``partNumber``: the part (None: the whole single-content object, part 1) and
        how many parts the object has.  InvalidPart for a part it does not have."""
        if not 1 <= part_number <= 10_000:
            raise InvalidArgument("Part number must be an integer between 1 and 10000")
        if not version.parts:
            if part_number != 1:
                raise _invalid_part(part_number)
            return None, 1
        if part_number > version.parts:
            raise _invalid_part(part_number)
        parts = self.metadata.parts(version, 0, version.parts)
        part = next((p for p in parts if p.number == part_number), None)
        if part is None:
            raise _invalid_part(part_number)
        return part, version.parts

    def open(self, bucket: str, key: str, version_id: str | None = None,
             number: int | None = None, byte_range: str | None = None,
             part_number: int | None = None, conditions: ReadConditions | None = None,
             etag_of: Callable[[Version], str] | None = None) -> ObjectReader:
        """Open a version (or a range of it, or one of its parts) for reading."""
        version = self.head(bucket, key, version_id, number, conditions, etag_of)
        part, parts_count = None, 0
        if part_number is not None:
            if byte_range:
                raise InvalidRequest("Cannot specify both Range header and partNumber query "
                                     "parameter")
            part, parts_count = self.part_of(version, part_number)
            first, last = (part.offset, part.offset + part.size - 1) if part else \
                (0, version.size - 1)
            partial = True
        else:
            resolved = parse_range(byte_range, version.size)
            partial = resolved is not None
            first, last = resolved if resolved is not None else (0, version.size - 1)
        return self.read(version, first, last, partial, part, parts_count)

    def read(self, version: Version, first: int, last: int, partial: bool = False,
             part: Part | None = None, parts_count: int = 0) -> ObjectReader:
        """A reader of bytes ``first..last`` of ``version``."""
        if version.size == 0 or last < first:
            return ObjectReader(version, 0, -1, partial, iter(()), lambda: None, part,
                                parts_count)
        try:
            if not version.parts:
                reader = self.contents.open(version.hash, version.size, first, last)
                return ObjectReader(version, first, last, partial, iter(reader), reader.close,
                                    part, parts_count)
            pieces = _Pieces(self, version, first, last)
        except Exception as exc:
            log.warning("cannot read %r (bucket %s, version %s, %s): %s", version.key,
                        version.bucket, version.version_id, version.hash or "parts", exc)
            raise
        return ObjectReader(version, first, last, partial, iter(pieces), pieces.close, part,
                            parts_count)

    # -- deleting -------------------------------------------------------------------------------------
    def delete(self, bucket: str, key: str, version_id: str | None = None,
               condition: WriteCondition | None = None) -> DeleteResult:
        """S3's DeleteObject: without a version id, as the bucket's versioning says (a delete
        marker, or the null version removed); with one, that version removed for good."""
        validate_key(key)
        self.bucket(bucket)
        if version_id is None:
            marker = self.metadata.delete_object(bucket, key, condition)
            if marker is None:
                return DeleteResult(None, False)
            log.info("deleted %s/%r: delete marker %s", bucket, key, marker.version_id)
            return DeleteResult(marker.version_id, True, marker)
        removed = self.metadata.delete_version(bucket, key, check_version_id(version_id),
                                               condition)
        if removed is None:
            return DeleteResult(version_id, False)
        log.info("removed %s/%r version %s", bucket, key, version_id)
        return DeleteResult(removed.version_id, removed.delete_marker, removed)

    # -- listing ---------------------------------------------------------------------------------------
    def list(self, bucket: str, prefix: str = "", delimiter: str = "", after: str = "",
             limit: int = 1000) -> listing.Page[Version]:
        """Current (non-deleted) keys after ``after``, with CommonPrefixes."""
        self.bucket(bucket)
        return listing.walk(
            lambda c, end, n: self.metadata.current_page(bucket, c.key, c.inclusive, end, n),
            lambda row: listing.Cursor(row.key), lambda row: row.key, prefix, delimiter,
            listing.start_cursor(prefix, delimiter, after), limit)

    def list_versions(self, bucket: str, prefix: str = "", delimiter: str = "",
                      key_marker: str = "", version_id_marker: str | None = None,
                      limit: int = 1000) -> listing.Page[Version]:
        """Every version, keys ascending and newest first, from (key-marker,
        version-id-marker); a marker naming a version deleted meanwhile is a position."""
        self.bucket(bucket)
        below: int | None = None
        if key_marker and version_id_marker:
            check_version_id(version_id_marker)
            below = decode_version_id(version_id_marker)
            if below is None:                        # "null": where the null version is
                null = self.metadata.version(bucket, key_marker, NULL_VERSION_ID)
                below = null.seq if null is not None else 0
        return listing.walk(
            lambda c, end, n: self.metadata.versions_page(
                bucket, c.key, c.inner if c.inner is not None else (None if c.inclusive else 0),
                end, n),
            lambda row: listing.Cursor(row.key, row.seq), lambda row: row.key, prefix,
            delimiter, listing.start_cursor(prefix, delimiter, key_marker, below), limit)

    # -- copying ---------------------------------------------------------------------------------------
    def copy(self, source_bucket: str, source_key: str, source_version: str | None,
             bucket: str, key: str, meta: ObjectMeta | None = None,
             source_conditions: ReadConditions | None = None,
             condition: WriteCondition | None = None) -> tuple[Version, Version]:
        """A new version of ``key`` sharing the source's content (no data is copied).

        :param meta: the new version's metadata (S3's REPLACE), or None to keep the
            source's (COPY).
        :returns: (the new version, the source version).
        """
        validate_key(key)
        self.bucket(bucket)
        try:
            source = self.head(source_bucket, source_key, source_version)
        except DeleteMarkerVersion:
            raise InvalidRequest("The source of a copy request may not specifically refer "
                                 "to a delete marker by version id.") from None
        if source_conditions is not None:
            source_conditions.evaluate(_s3_etag(source), source.created, copy=True)
        if meta is None and (source_bucket, source_key) == (bucket, key) and \
                (source_version is None or source.is_latest):
            raise InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself "
                "without changing the object's metadata, storage class, website redirect "
                "location or encryption attributes.")
        new_meta = source.meta if meta is None else dataclasses.replace(
            meta, checksums=source.meta.checksums, checksum_type=source.meta.checksum_type)
        parts = tuple(self.metadata.parts(source, 0, source.parts)) if source.parts else ()
        draft = Draft(bucket, key, source.size, source.hash, source.etag, new_meta, parts,
                      shared=True)
        if condition is not None:
            condition.check(self.metadata.version(bucket, key))
        return self.write_version(draft, condition), source


def _hex(hash_: str) -> str:
    return base64.b64decode(hash_).hex()


def _s3_etag(version: Version) -> str:
    return version.etag


def _invalid_part(number: int) -> Exception:
    return InvalidPart(f"The requested partnumber {number} is not satisfiable")


class _Pieces:
    """The bytes ``first..last`` of a manifest version, part by part: only the blocks each
    part's range covers are read, and the first part is opened at once (errors first)."""

    def __init__(self, layer: ObjectLayer, version: Version, first: int, last: int):
        self._layer = layer
        self._version = version
        self._first = first
        self._last = last
        self._parts = layer.metadata.parts(version, first, version.parts)
        if not self._parts:
            raise RangeNotSatisfiable(f"no part holds byte {first}", version.size)
        self._reader: ContentReader | None = self._open(self._parts[0])

    def _open(self, part: Part) -> ContentReader:
        lo = max(self._first, part.offset) - part.offset + part.content_offset
        hi = min(self._last, part.offset + part.size - 1) - part.offset + part.content_offset
        return self._layer.contents.open(part.hash, part.stored_size, lo, hi)

    def __iter__(self) -> Iterator[bytes]:
        for i, part in enumerate(self._parts):
            if part.offset > self._last:
                break
            reader = self._reader if i == 0 else self._open(part)
            self._reader = reader
            yield from reader
            reader.close()

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
