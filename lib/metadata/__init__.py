"""Object metadata: buckets, keys, their versions, the content they reference, multipart uploads.

The book keeps ``name -> (version, size, hash)`` in Elasticsearch (BOOK §2).  Here one
interface, :class:`MetadataStore`, holds everything the protocols need, and every backend
passes one conformance suite: SQLite (the embedded default), PostgreSQL (``METADATA_URL``, for
api servers on several hosts) and Elasticsearch (``ES_SERVER``, the book's store).  Callers
only ever see this module; each driver is imported by its backend module alone, and only when
that backend is chosen.

The model::

    bucket --< key --< version (newest first; one of them "latest")
                          |-- single content: one content hash
                          '-- manifest: parts 1..N, each a content hash
    content (hash): size, MD5, reference count      <- versions, parts of open uploads
    upload (multipart, in progress) --< part (number -> content)

* A *version* has an opaque, never reused *version id* (S3's ``versionId``; ``null`` for the
  null version of an unversioned or suspended bucket) and a per-key *number* (1, 2, 3, ...,
  never reused either: the book API's ``?version=N``).  Both name the same version.
* *Contents* are counted: every version and every part of an open upload holds a reference.
  Content whose count falls to zero is collected only after a grace period
  (:meth:`MetadataStore.unreferenced` / :meth:`claim_unreferenced`), and a PUT that shares
  stored content refreshes that grace before its body arrives (:meth:`touch_content`), so
  deduplication never races garbage collection.
* The *repair log* keeps the newest REPAIRS_KEPT finished repairs of the whole cluster, by
  whichever process ran them, and counts every one (:meth:`MetadataStore.record_repair`).
* Listing pages by key cursor, never by offset (``lib/metadata/listing.py`` holds the
  delimiter logic shared by every backend).  Keys compare as Unicode code points, which is
  UTF-8 byte order.
"""
from __future__ import annotations

import abc
import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lib.errors import InvalidName

if TYPE_CHECKING:  # pragma: no cover - typing only
    from lib.config import Config

log = logging.getLogger(__name__)

#: Sizes, numbers and sequence values are stored as signed 64-bit integers by every backend.
MAX_SIZE = 2**63 - 1
#: Keys are at most this many bytes of UTF-8 (as in S3).
MAX_KEY_BYTES = 1024
#: The shortest search a trigram index answers as a substring (shorter ones: a key prefix).
SEARCH_MIN = 3
#: Versioning states of a bucket, as S3 names them ("" for a bucket never versioned).
UNVERSIONED, ENABLED, SUSPENDED = "", "Enabled", "Suspended"
NULL_VERSION_ID = "null"
#: Repair records the repair log keeps (older ones are pruned by the write that passes it);
#: the done and failed counters are never pruned.
REPAIRS_KEPT = 1000
#: The outcomes of a finished repair.
REPAIR_DONE, REPAIR_FAILED = "done", "failed"
#: Characters of a failed repair's error text that are kept.
MAX_REPAIR_ERROR = 500


class MetadataError(Exception):
    """The metadata backend is unreachable, refused a request, or answered something we do not
    understand.  Callers should answer 5xx (or retry later), never guess."""


class VersionConflict(MetadataError):
    """A write kept losing races with concurrent writers after a bounded number of attempts."""


# -- records ------------------------------------------------------------------------------------

def encode_version_id(seq: int) -> str:
    """The opaque version id of the version stored as ``seq`` (never reused by a backend)."""
    return f"{seq:016x}"


def decode_version_id(version_id: str) -> int | None:
    """The ``seq`` a version id stands for, or None when it cannot be one of ours."""
    if len(version_id) != 16 or not all(c in "0123456789abcdef" for c in version_id):
        return None
    return int(version_id, 16)


@dataclasses.dataclass(frozen=True)
class ObjectMeta:
    """What a client said about an object when it stored it, kept with each version.

    ``headers`` holds the standard headers by their canonical names (Cache-Control,
    Content-Disposition, Content-Encoding, Content-Language, Expires), ``user`` the
    ``x-amz-meta-*`` values by lower-cased suffix, ``checksums`` the verified checksums by S3
    algorithm name (a composite multipart value ends in ``-N``), ``origin`` what a third-party
    origin said of the object (ETag, Last-Modified).
    """

    content_type: str = ""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    user: Mapping[str, str] = dataclasses.field(default_factory=dict)
    checksums: Mapping[str, str] = dataclasses.field(default_factory=dict)
    checksum_type: str = ""
    origin: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        record: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value:
                record[field.name] = dict(value) if isinstance(value, Mapping) else value
        return json.dumps(record, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> "ObjectMeta":
        if not text:
            return cls()
        try:
            raw = json.loads(text)
            fields = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in raw.items() if k in fields})
        except (ValueError, TypeError, AttributeError) as exc:
            raise MetadataError(f"malformed object metadata {text[:100]!r}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class Usage:
    """How much the metadata holds, for the management API's stats."""

    buckets: int
    #: Keys whose latest version is not a delete marker.
    objects: int
    #: Every version, delete markers included.
    versions: int
    #: Bytes of every version that is not a delete marker: what clients stored.
    logical_bytes: int
    #: Bytes of the referenced contents: what is stored once deduplicated.
    content_bytes: int


@dataclasses.dataclass(frozen=True)
class Bucket:
    name: str
    created: float
    owner: str = ""
    versioning: str = UNVERSIONED
    #: Per-bucket settings other layers keep here (the origin of a bucket, for instance).
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Part:
    """One part of a multipart upload or of a manifest: a content object of its own."""

    number: int
    hash: str
    size: int
    #: Hex MD5 of the part (its ETag, without quotes).
    etag: str
    checksums: Mapping[str, str] = dataclasses.field(default_factory=dict)
    created: float = 0.0
    #: Where the part starts in a manifest version's bytes (0 in an upload).
    offset: int = 0
    #: The part is bytes ``content_offset .. content_offset + size`` of content ``hash``,
    #: which has ``content_size`` bytes (a part copied from a range of another object).
    content_offset: int = 0
    content_size: int | None = None

    @property
    def stored_size(self) -> int:
        """Bytes of the content object that holds the part."""
        return self.size if self.content_size is None else self.content_size


@dataclasses.dataclass(frozen=True)
class Version:
    """One version of one key."""

    bucket: str
    key: str
    #: Position in the store's global order of writes (never reused); newest is highest.
    seq: int
    #: The book API's per-key version number (never reused).
    number: int
    is_null: bool
    is_latest: bool
    delete_marker: bool
    created: float
    size: int
    #: Content hash of a single-content version; "" for delete markers and manifests.
    hash: str
    #: S3 ETag without quotes: hex MD5, ``<hex>-N`` for a manifest, "" for a marker.
    etag: str
    #: Number of parts of a manifest; 0 for a single content or a marker.
    parts: int = 0
    meta: ObjectMeta = dataclasses.field(default_factory=ObjectMeta)

    @property
    def version_id(self) -> str:
        return NULL_VERSION_ID if self.is_null else encode_version_id(self.seq)

    # -- the book's vocabulary ----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.key

    @property
    def version(self) -> int:
        return self.number

    @property
    def is_delete_marker(self) -> bool:
        return self.delete_marker

    def to_book_json(self) -> dict[str, object]:
        """The book's ``/versions/`` record (Go-style keys), plus the S3 version id."""
        return {"Name": self.key, "Version": self.number, "Size": self.size,
                "Hash": self.hash, "VersionId": self.version_id}


#: The book's name for a version record.
Metadata = Version


@dataclasses.dataclass(frozen=True)
class Content:
    """A content object: what the shards on the data servers hold under ``hash``."""

    hash: str
    size: int
    #: Hex MD5 of the bytes, "" when the writer did not compute it (book API PUTs).
    md5: str
    refs: int
    #: When the last reference went away (None while referenced).
    unreferenced_since: float | None = None


@dataclasses.dataclass(frozen=True)
class Upload:
    """A multipart upload in progress (or just completed: ``completed`` is its version)."""

    upload_id: str
    bucket: str
    key: str
    created: float
    meta: ObjectMeta = dataclasses.field(default_factory=ObjectMeta)
    #: Seq of the version this upload completed into (None while in progress).
    completed: int | None = None


@dataclasses.dataclass(frozen=True)
class RepairRecord:
    """One finished repair of a content object's shards, as the repair log keeps it."""

    #: When it finished (seconds since the epoch).
    time: float
    #: The content hash repaired.
    hash: str
    #: Shard indexes rebuilt (done), or those known to be damaged (failed).
    shards: tuple[int, ...]
    #: REPAIR_DONE or REPAIR_FAILED.
    outcome: str
    #: Why it failed ("" when done), at most MAX_REPAIR_ERROR characters.
    error: str = ""
    #: Who ran it: an api server's listen address, "worker", "object_scanner".
    by: str = ""
    #: Position in the log (assigned by :meth:`MetadataStore.record_repair`; newest highest).
    seq: int = 0

    @classmethod
    def finished(cls, hash: str, shards, error: str | None = None,
                 by: str = "") -> "RepairRecord":
        """The record of a repair that finished now: done when ``error`` is None."""
        return cls(time.time(), hash, tuple(sorted(int(i) for i in shards)),
                   REPAIR_DONE if error is None else REPAIR_FAILED,
                   (error or "")[:MAX_REPAIR_ERROR], by)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "hash": self.hash,
                "shards": list(self.shards), "outcome": self.outcome,
                "error": self.error or None, "by": self.by}


@dataclasses.dataclass(frozen=True)
class Draft:
    """A version to write (see :meth:`MetadataStore.put_version`)."""

    bucket: str
    key: str
    size: int = 0
    #: Content hash of a single-content version.
    hash: str = ""
    etag: str = ""
    meta: ObjectMeta = dataclasses.field(default_factory=ObjectMeta)
    #: The parts of a manifest version (``hash`` stays "").
    parts: tuple[Part, ...] = ()
    delete_marker: bool = False
    #: Hex MD5 of a single content, recorded with the content when first known.
    md5: str = ""
    #: The content is already stored (deduplicated, copied): it must still be known, else
    #: :class:`lib.errors.ContentGone`.
    shared: bool = False


@dataclasses.dataclass(frozen=True)
class WriteCondition:
    """What a conditional write expects of the key's latest version (checked atomically with
    the write).  A delete marker as latest counts as "no object"."""

    #: ``If-None-Match: *``: create only.
    absent: bool = False
    #: ``If-Match``: the latest version's S3 ETag (without quotes), or ``*`` for any.
    etag: str | None = None
    #: The book API's ``If-Match``: the latest version's content hash.
    hash: str | None = None
    #: The book API's ``Version`` precondition: the latest version's number.
    number: int | None = None

    def check(self, latest: Version | None) -> None:
        """Raise when ``latest`` does not satisfy the condition (see lib.errors)."""
        from lib.errors import ConditionNotMet, NoSuchKey

        live = latest if latest is not None and not latest.delete_marker else None
        if self.absent and live is not None:
            raise ConditionNotMet(f"{live.key!r} exists (If-None-Match: *)")
        if self.etag is None and self.hash is None and self.number is None:
            return
        if live is None:
            raise NoSuchKey("the object does not exist (If-Match)")
        if self.etag not in (None, "*") and live.etag != self.etag:
            raise ConditionNotMet(f"{live.key!r} has ETag {live.etag!r}, not {self.etag!r}")
        if self.hash is not None and live.hash != self.hash:
            raise ConditionNotMet(f"{live.key!r} holds {live.hash or 'parts'}, not {self.hash}")
        if self.number is not None and live.number != self.number:
            raise ConditionNotMet(f"{live.key!r} is at version {live.number}, "
                                  f"not {self.number}")


# -- validation -----------------------------------------------------------------------------------

def check_text(value: str, what: str, allow_empty: bool = False) -> None:
    """Reject text no backend can store: not a str, empty, or not encodable as UTF-8 (lone
    surrogates).  Raises ValueError, a programming error (protocols validate first)."""
    if not isinstance(value, str) or (value == "" and not allow_empty):
        raise ValueError(f"{what} must be a non-empty str, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode text: {value!r}") from None


def validate_key(key: str) -> str:
    """A key as S3 allows it: any non-empty UTF-8 of at most MAX_KEY_BYTES bytes, no NUL."""
    if not isinstance(key, str) or not key:
        raise InvalidName("a key must not be empty")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName("a key must be valid UTF-8") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidName(f"a key is at most {MAX_KEY_BYTES} bytes of UTF-8, "
                          f"got {len(encoded)}", too_long=True)
    if "\x00" in key:
        raise InvalidName("a key may not contain NUL")
    return key


def valid_number(number: int) -> bool:
    """Whether ``number`` can name a stored version at all (1 .. 2**63-1)."""
    return isinstance(number, int) and 1 <= number <= MAX_SIZE


def check_draft(draft: Draft) -> None:
    """Reject a draft no backend may store (a programming error)."""
    check_text(draft.bucket, "bucket")
    check_text(draft.key, "key")
    if not isinstance(draft.size, int) or isinstance(draft.size, bool) or \
            not 0 <= draft.size <= MAX_SIZE:
        raise ValueError(f"size must be an int in [0, 2**63), got {draft.size!r}")
    if draft.delete_marker:
        if draft.hash or draft.parts or draft.size:
            raise ValueError("a delete marker has no content")
    elif draft.parts:
        if draft.hash:
            raise ValueError("a manifest version has parts, not a hash")
        if sum(p.size for p in draft.parts) != draft.size:
            raise ValueError("a manifest's size is the sum of its parts")
    elif not draft.hash:
        raise ValueError("a version needs a content hash, parts, or to be a delete marker")


def check_repair(repair: RepairRecord) -> None:
    """Reject a repair record no backend may store (a programming error)."""
    check_text(repair.hash, "hash")
    check_text(repair.by, "by", allow_empty=True)
    check_text(repair.error, "error", allow_empty=True)
    if repair.outcome not in (REPAIR_DONE, REPAIR_FAILED):
        raise ValueError(f"outcome is {REPAIR_DONE} or {REPAIR_FAILED}, not {repair.outcome!r}")
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 256
               for i in repair.shards):
        raise ValueError(f"shards must be shard indexes, got {repair.shards!r}")
    if len(repair.error) > MAX_REPAIR_ERROR:
        raise ValueError(f"error is at most {MAX_REPAIR_ERROR} characters")


def check_page(offset: int, limit: int) -> None:
    """Reject paging arguments no backend may honour (a programming error)."""
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


# -- the interface -----------------------------------------------------------------------------

class MetadataStore(abc.ABC):
    """Buckets, versions, contents and uploads.  Every implementation is thread-safe, and
    several processes (several hosts, for the networked backends) may share one store: every
    write below is one atomic step.

    Domain refusals raise :mod:`lib.errors` exceptions (NoSuchBucket, BucketNotEmpty,
    BucketExists, NoSuchUpload, InvalidPart, ConditionNotMet, ContentGone...); a failing
    backend raises MetadataError; arguments no backend may store raise ValueError.
    """

    # -- buckets ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def create_bucket(self, name: str, owner: str = "", versioning: str = UNVERSIONED) -> Bucket:
        """Create a bucket; BucketExists (with the existing bucket) when the name is taken."""

    @abc.abstractmethod
    def bucket(self, name: str) -> Bucket | None:
        ...

    @abc.abstractmethod
    def buckets(self) -> list[Bucket]:
        """Every bucket, by name."""

    @abc.abstractmethod
    def delete_bucket(self, name: str) -> None:
        """Remove an empty bucket (no version of any key, delete markers included); its open
        multipart uploads are aborted.  NoSuchBucket / BucketNotEmpty otherwise."""

    @abc.abstractmethod
    def set_versioning(self, name: str, state: str) -> Bucket:
        """Set ENABLED or SUSPENDED (a versioned bucket never returns to UNVERSIONED)."""

    @abc.abstractmethod
    def set_bucket_config(self, name: str, item: str, value: Any | None) -> Bucket:
        """Set (or with None remove) one JSON-serialisable setting of a bucket."""

    # -- versions --------------------------------------------------------------------------------
    @abc.abstractmethod
    def put_version(self, draft: Draft, condition: WriteCondition | None = None) -> Version:
        """Write a new latest version of ``draft.key`` as the bucket's versioning says.

        Enabled: a new version with a new id.  Unversioned or suspended: the new version is
        the key's null version, replacing the previous null version (whose content loses its
        reference).  A delete-marker draft writes a marker the same way.  ``condition`` is
        checked against the latest version in the same atomic step.
        """

    @abc.abstractmethod
    def delete_object(self, bucket: str, key: str,
                      condition: WriteCondition | None = None) -> Version | None:
        """S3's DELETE without a version id: the delete marker written (versioned buckets),
        or None when the (null) version was removed outright (unversioned) or nothing
        existed."""

    @abc.abstractmethod
    def delete_version(self, bucket: str, key: str, version_id: str,
                       condition: WriteCondition | None = None) -> Version | None:
        """Remove one version for good (the next newest becomes latest); the removed version,
        or None when there was none by that id."""

    @abc.abstractmethod
    def version(self, bucket: str, key: str, version_id: str | None = None) -> Version | None:
        """That version, or the latest (maybe a delete marker) when ``version_id`` is None."""

    @abc.abstractmethod
    def numbered(self, bucket: str, key: str, number: int) -> Version | None:
        """The version the book API calls ``number``."""

    @abc.abstractmethod
    def parts(self, version: Version, offset: int = 0, limit: int = 10_000) -> list[Part]:
        """Parts of a manifest version by number, starting with the part that holds byte
        ``offset`` (found by an index seek, not a scan)."""

    @abc.abstractmethod
    def current_page(self, bucket: str, start: str, inclusive: bool, end: str | None,
                     limit: int) -> list[Version]:
        """Latest versions that are not delete markers, of keys from ``start`` (excluded
        unless ``inclusive``) to ``end`` (excluded; None: no bound), by key.  The primitive
        under :func:`lib.metadata.listing.list_objects`."""

    @abc.abstractmethod
    def versions_page(self, bucket: str, key: str, below_seq: int | None, end: str | None,
                      limit: int) -> list[Version]:
        """Versions by key ascending, newest first within a key, starting with the versions
        of ``key`` older than ``below_seq`` (all of them when None) and going on with the
        keys after ``key``, up to ``end`` (excluded)."""

    @abc.abstractmethod
    def versions_of(self, bucket: str, key: str | None, offset: int = 0,
                    limit: int = 1000) -> list[Version]:
        """The book's ``/versions/``: versions by (key, number), of one key or of all."""

    @abc.abstractmethod
    def keys_with_versions_over(self, bucket: str, count: int, after: str | None = None,
                                limit: int = 1000) -> list[tuple[str, list[Version]]]:
        """Keys having more than ``count`` versions, after ``after``, each with its versions
        oldest first (the book's retention tool)."""

    # -- contents --------------------------------------------------------------------------------
    @abc.abstractmethod
    def content(self, hash: str) -> Content | None:
        """The content record of ``hash``: referenced, or unreferenced but not yet claimed."""

    @abc.abstractmethod
    def touch_content(self, hash: str) -> bool:
        """A writer is about to share ``hash``: restart its grace if it is unreferenced.
        False when it is unknown."""

    @abc.abstractmethod
    def hashes(self, after: str | None = None, limit: int = 1000) -> list[str]:
        """Known content hashes, sorted, after ``after`` (the object scanner's walk)."""

    @abc.abstractmethod
    def unreferenced(self, older_than: float, limit: int = 1000) -> list[Content]:
        """Contents no version or upload has referenced for ``older_than`` seconds."""

    @abc.abstractmethod
    def claim_unreferenced(self, hash: str, older_than: float) -> bool:
        """Forget ``hash`` if it is still unreferenced for ``older_than`` seconds: True means
        the caller now collects its shards (nothing can reference it any more)."""

    # -- multipart uploads ------------------------------------------------------------------------
    @abc.abstractmethod
    def create_upload(self, bucket: str, key: str, meta: ObjectMeta) -> Upload:
        ...

    @abc.abstractmethod
    def upload(self, upload_id: str) -> Upload | None:
        """An upload in progress, or one completed recently (``completed`` set)."""

    @abc.abstractmethod
    def put_part(self, upload_id: str, part: Part, shared: bool = False, md5: str = "") -> Part:
        """Record (or replace) one part of an upload in progress, referencing its content
        (``shared``: already stored, so it must still be known); NoSuchUpload otherwise."""

    @abc.abstractmethod
    def upload_parts(self, upload_id: str, after: int = 0, limit: int = 1000) -> list[Part]:
        ...

    @abc.abstractmethod
    def uploads_page(self, bucket: str, key: str, after_upload: str | None, end: str | None,
                     limit: int) -> list[Upload]:
        """Uploads in progress by (key, upload id, which sorts by creation), starting with the
        uploads of ``key`` after ``after_upload`` (all of them when None) and going on with the
        keys after ``key``, up to ``end`` (excluded), as :meth:`versions_page` does."""

    @abc.abstractmethod
    def complete_upload(self, upload_id: str, draft: Draft | None,
                        condition: WriteCondition | None = None) -> Version:
        """Turn an upload into a version: ``draft.parts`` must be parts the upload holds now
        (InvalidPart otherwise).  The other parts lose their reference; the upload is kept
        as completed, so a repeated Complete (``draft`` may then be None) answers the same
        version."""

    @abc.abstractmethod
    def abort_upload(self, upload_id: str) -> bool:
        """Drop an upload in progress and its parts' references; False if unknown."""

    @abc.abstractmethod
    def idle_uploads(self, older_than: float, limit: int = 1000) -> list[Upload]:
        """Uploads created more than ``older_than`` seconds ago (in progress, or completed)."""

    @abc.abstractmethod
    def forget_upload(self, upload_id: str) -> None:
        """Drop a completed upload's record (the sweeper, after the repeat window)."""

    # -- small documents (fault rules, origins...) -------------------------------------------------
    @abc.abstractmethod
    def put_record(self, kind: str, id: str, body: Mapping[str, Any]) -> None:
        ...

    @abc.abstractmethod
    def record(self, kind: str, id: str) -> dict[str, Any] | None:
        ...

    @abc.abstractmethod
    def records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        ...

    @abc.abstractmethod
    def delete_record(self, kind: str, id: str) -> bool:
        ...

    # -- the repair log ------------------------------------------------------------------------
    #: Records kept (tests lower it on one store to see the pruning).
    repairs_kept: int = REPAIRS_KEPT

    @abc.abstractmethod
    def record_repair(self, repair: RepairRecord) -> RepairRecord:
        """Append a finished repair to the cluster's repair log and count it (done or
        failed), in one write that also prunes the log to its newest ``repairs_kept``
        records; the record as stored, its ``seq`` assigned."""

    @abc.abstractmethod
    def repairs(self, limit: int = 100) -> list[RepairRecord]:
        """The newest repair records, newest first (at most ``repairs_kept``)."""

    @abc.abstractmethod
    def repair_counts(self) -> tuple[int, int]:
        """(done, failed): every repair ever recorded, pruned from the log or not."""

    # -- key search ------------------------------------------------------------------------------
    def search_keys(self, bucket: str | None, q: str, limit: int = 100,
                    after: str | None = None) -> tuple[list[Version], str | None]:
        """Current objects (latest version not a delete marker) whose key contains ``q``,
        ignoring ASCII case, from an index of the backend (never a walk over the keys); of
        one bucket or of all.  A page of at most ``limit`` and the cursor to pass as
        ``after`` for the next page (None after the last).  The order is the index's,
        stable from page to page.

        A trigram index cannot answer fewer than SEARCH_MIN characters: such a ``q``
        matches the keys that *start* with it (exact case), by key, from the key index.

        :raises ValueError: an empty ``q``, a bad ``limit``, or a cursor not of this store.
        """
        check_page(0, limit)
        if not q:
            raise ValueError("the search needs at least one character")
        if len(q) >= SEARCH_MIN:
            return self.substring_page(bucket, q, limit, after)
        return self._prefix_page(bucket, q, limit, after)

    @abc.abstractmethod
    def substring_page(self, bucket: str | None, q: str, limit: int,
                       after: str | None) -> tuple[list[Version], str | None]:
        """:meth:`search_keys` for a ``q`` of at least SEARCH_MIN characters."""

    def _prefix_page(self, bucket: str | None, prefix: str, limit: int,
                     after: str | None) -> tuple[list[Version], str | None]:
        from lib.metadata.listing import successor

        start_bucket, start_key = "", prefix
        if after is not None:
            start_bucket, sep, start_key = after.partition("\0")
            if not sep or not start_key.startswith(prefix):
                raise ValueError(f"not a search cursor: {after!r}")
        names = [bucket] if bucket is not None else [b.name for b in self.buckets()]
        found: list[Version] = []
        for name in names:
            if name < start_bucket:
                continue
            resume = name == start_bucket and after is not None
            found += self.current_page(name, start_key if resume else prefix, not resume,
                                       successor(prefix), limit + 1 - len(found))
            if len(found) > limit:
                break
        page = found[:limit]
        more = len(found) > limit
        return page, f"{page[-1].bucket}\0{page[-1].key}" if more else None

    # -- operations ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def usage(self) -> Usage:
        """Counts and byte totals over the whole store (aggregates, not a walk)."""

    @abc.abstractmethod
    def check(self) -> str:
        """Verify the backend answers sensibly; a short description of it, else MetadataError."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections.  The store must not be used afterwards."""

    def __enter__(self) -> "MetadataStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- conveniences shared by every backend ----------------------------------------------------
    def has_hash(self, hash: str) -> bool:
        """Whether content ``hash`` is known (referenced, or still within its grace)."""
        return bool(hash) and self.content(hash) is not None

    def hash_size(self, hash: str) -> int | None:
        content = self.content(hash) if hash else None
        return None if content is None else content.size

    def ensure_bucket(self, name: str, owner: str = "", versioning: str = UNVERSIONED) -> Bucket:
        """The bucket ``name``, created when missing (the book API's bucket at start)."""
        from lib.errors import BucketExists

        try:
            bucket = self.create_bucket(name, owner, versioning)
        except BucketExists as exc:
            bucket = exc.bucket
        if versioning == ENABLED and bucket.versioning != ENABLED:
            bucket = self.set_versioning(name, ENABLED)
        return bucket


def now() -> float:
    return time.time()


def open_store(config: "Config") -> MetadataStore:
    """The store the configuration selects: PostgreSQL with ``METADATA_URL``, Elasticsearch
    with ``ES_SERVER``, else the SQLite file ``METADATA_DB`` (parent directories created)."""
    if config.metadata_url:
        from lib.metadata.postgres import PostgresStore

        log.info("metadata: postgresql")
        return PostgresStore(config.metadata_url)
    if config.es_server:
        from lib.metadata.elasticsearch import ElasticsearchStore

        log.info("metadata: elasticsearch at %s, index %s", config.es_server, config.es_index)
        return ElasticsearchStore(config.es_server, config.es_index, timeout=config.http_timeout)
    from lib.metadata.sqlite import SqliteStore

    path = config.metadata_db
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("metadata: sqlite at %s", path)
    return SqliteStore(path, book_bucket=config.book_bucket)


__all__ = [
    "Bucket", "Content", "Draft", "ENABLED", "Metadata", "MetadataError", "MetadataStore",
    "NULL_VERSION_ID", "ObjectMeta", "Part", "REPAIR_DONE", "REPAIR_FAILED", "REPAIRS_KEPT",
    "RepairRecord", "SUSPENDED", "UNVERSIONED", "Upload", "Usage",
    "Version",
    "VersionConflict", "WriteCondition", "open_store",
]
