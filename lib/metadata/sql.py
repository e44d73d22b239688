"""The metadata model in SQL, shared by the SQLite and PostgreSQL backends.

Every operation is a function of one transaction (``tx``), written once here; a backend says
how to run it: :meth:`SqlStore._read` for queries, :meth:`SqlStore._write` for an atomic write
(SQLite batches concurrent writes into one transaction, a group commit; PostgreSQL runs each
in a transaction of its own, retried on serialization failures and deadlocks).  Statements
use ``?`` placeholders and portable SQL (``ON CONFLICT``, ``RETURNING``, row locks where the
dialect has them); the schemas differ per backend and live in their modules.

Tables::

    buckets        (name) versioning, owner, config
    keys           (bucket, key) last_number          per-key number allocator and lock row
    versions       (seq) bucket, key, number, is_null, is_latest, delete_marker, ...
    current        (bucket, key) seq, ...              latest non-marker versions: listings
    version_parts  (seq, number) hash, size, offset    a manifest's parts
    contents       (hash) size, md5, refs, unreferenced_since
    uploads        (upload_id) bucket, key, created, meta, completed
    upload_parts   (upload_id, number) hash, size, etag, checksums
    records        (kind, id) body                     small JSON documents
    repair_log     (seq) finished, hash, shards, ...   the newest repairs (repairs_kept)
    repair_totals  (id = 1) last_seq, done, failed     the log's seq allocator and counters
"""
from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

from lib.errors import (BucketExists, BucketNotEmpty, ContentGone, InvalidPart, NoSuchBucket,
                        NoSuchUpload)
from lib.metadata import (ENABLED, NULL_VERSION_ID, REPAIR_DONE, SUSPENDED, UNVERSIONED,
                          Bucket, Content, Draft, MetadataError, MetadataStore, ObjectMeta,
                          Part, RepairRecord, Upload, Usage, Version, WriteCondition,
                          check_draft, check_page, check_repair, check_text,
                          decode_version_id, valid_number)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_VERSION = ("seq, bucket, key, number, is_null, is_latest, delete_marker, created, size, hash, "
            "etag, parts, meta")
_CURRENT = "seq, bucket, key, number, created, size, etag"
_UPLOAD = "upload_id, bucket, key, created, meta, completed"
_PART = "number, hash, size, etag, checksums, created, content_offset, content_size"
_REPAIR = "seq, finished, hash, shards, outcome, error, runner"


class Tx:
    """What an operation sees of its transaction: ``rows``, ``one``, ``run``."""

    def rows(self, sql: str, *params: object) -> list[tuple]:
        raise NotImplementedError

    def one(self, sql: str, *params: object) -> tuple | None:
        found = self.rows(sql, *params)
        return found[0] if found else None

    def run(self, sql: str, *params: object) -> int:
        """Execute; the number of rows changed."""
        raise NotImplementedError

    def later(self, sql: str, *params: object) -> Callable[[], list[tuple]]:
        """Execute, and read the rows when the returned function is called.  A backend that
        pipelines (PostgreSQL) sends the statement now and waits for its answer only then, so
        statements issued before it cost one round trip together; the server still runs them
        in order, each after the one before."""
        found = self.rows(sql, *params)
        return lambda: found

    def send(self, sql: str, *params: object) -> None:
        """Execute when neither rows nor a count are needed (pipelined like :meth:`later`; a
        failure surfaces at the next statement that waits, or at commit)."""
        self.run(sql, *params)


def _version(row: Sequence, meta: bool = True) -> Version:
    try:
        seq, bucket, key, number, is_null, is_latest, marker, created, size, hash_, etag, parts, \
            raw_meta = row
        return Version(bucket=bucket, key=key, seq=int(seq), number=int(number),
                       is_null=bool(is_null), is_latest=bool(is_latest),
                       delete_marker=bool(marker), created=float(created), size=int(size),
                       hash=hash_, etag=etag, parts=int(parts),
                       meta=ObjectMeta.from_json(raw_meta) if meta else ObjectMeta())
    except (TypeError, ValueError) as exc:
        raise MetadataError(f"malformed version row {tuple(row)!r}: {exc}") from None


#: The meta of listed versions, which listings do not read: one shared, read-only value
#: (a listing builds a thousand versions, and building each one's meta was a third of it).
_NO_META = ObjectMeta(headers=MappingProxyType({}), user=MappingProxyType({}),
                      checksums=MappingProxyType({}), origin=MappingProxyType({}))


def current_version(row: Sequence) -> Version:
    """A version from a ``current`` row (``seq, bucket, key, number, created, size, etag``):
    what listings and searches answer (no hash, no meta)."""
    seq, bucket, key, number, created, size, etag = row
    return Version(bucket=bucket, key=key, seq=int(seq), number=int(number), is_null=False,
                   is_latest=True, delete_marker=False, created=float(created), size=int(size),
                   hash="", etag=etag, meta=_NO_META)


def _upload(row: Sequence) -> Upload:
    upload_id, bucket, key, created, meta, completed = row
    return Upload(upload_id, bucket, key, float(created), ObjectMeta.from_json(meta),
                  None if completed is None else int(completed))


def _part(row: Sequence, offset: int = 0) -> Part:
    number, hash_, size, etag, checksums, created, content_offset, content_size = row
    return Part(int(number), hash_, int(size), etag, json.loads(checksums or "{}"),
                float(created or 0), offset, int(content_offset), int(content_size))


def _repair(row: Sequence) -> RepairRecord:
    seq, finished, hash_, shards, outcome, error, runner = row
    try:
        indexes = tuple(int(i) for i in json.loads(shards))
    except (TypeError, ValueError) as exc:
        raise MetadataError(f"malformed repair row {tuple(row)!r}: {exc}") from None
    return RepairRecord(float(finished), hash_, indexes, outcome, error, runner, int(seq))


def _bucket(row: Sequence) -> Bucket:
    name, created, owner, versioning, config = row
    return Bucket(name, float(created), owner, versioning, json.loads(config or "{}"))


def _resume_page(tx: Tx, select: str, where: str, inner: tuple[str, str], bucket: str,
                 key: str, after: object | None, end: str | None, limit: int) -> list[tuple]:
    """The paging under versions and uploads listings: the rows of ``key`` past ``after``
    (``inner``: that condition and the order within a key; all of the key's rows when
    ``after`` is None), then the rows of the keys after it, below ``end`` (None: no bound)."""
    condition, order = inner
    rows: list[tuple] = []
    if after is not None:
        rows = tx.rows(f"{select} WHERE bucket = ? AND key = ? AND {condition}{where} "
                       f"ORDER BY {order} LIMIT ?", bucket, key, after, limit)
    if len(rows) < limit:
        bound, tail = (" AND key < ?", (end,)) if end is not None else ("", ())
        rows += tx.rows(f"{select} WHERE bucket = ? AND key {'>' if after is not None else '>='} "
                        f"?{bound}{where} ORDER BY key, {order} LIMIT ?", bucket, key, *tail,
                        limit - len(rows))
    return rows


def new_upload_id() -> str:
    """Opaque, unguessable, and sorting by creation time."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


class SqlStore(MetadataStore):
    """The operations; subclasses provide ``_read``, ``_write`` and the dialect."""

    #: Appended to a SELECT that must lock the rows it reads (PostgreSQL: " FOR UPDATE").
    lock_rows = ""
    #: Appended to a SELECT that must keep its rows from changing (PostgreSQL: " FOR SHARE").
    share_rows = ""
    name = "sql"

    def _read(self, op: Callable[[Tx], _T]) -> _T:
        raise NotImplementedError

    def _write(self, op: Callable[[Tx], _T]) -> _T:
        raise NotImplementedError

    # -- buckets ---------------------------------------------------------------------------------
    def create_bucket(self, name: str, owner: str = "", versioning: str = UNVERSIONED) -> Bucket:
        check_text(name, "bucket")
        created = time.time()

        def op(tx: Tx) -> Bucket:
            # ON CONFLICT, not a check first: two api servers starting at once on PostgreSQL
            # both make the book bucket, and a check cannot see the other's insert
            if tx.one("INSERT INTO buckets (name, created, owner, versioning, config) "
                      "VALUES (?, ?, ?, ?, '{}') ON CONFLICT (name) DO NOTHING "
                      "RETURNING name", name, created, owner, versioning) is not None:
                return Bucket(name, created, owner, versioning, {})
            row = tx.one("SELECT name, created, owner, versioning, config FROM buckets "
                         "WHERE name = ?", name)
            raise BucketExists(f"bucket {name!r} exists", _bucket(row))

        return self._write(op)

    def bucket(self, name: str) -> Bucket | None:
        check_text(name, "bucket")
        row = self._read(lambda tx: tx.one(
            "SELECT name, created, owner, versioning, config FROM buckets WHERE name = ?", name))
        return None if row is None else _bucket(row)

    def buckets(self) -> list[Bucket]:
        rows = self._read(lambda tx: tx.rows(
            "SELECT name, created, owner, versioning, config FROM buckets ORDER BY name"))
        return [_bucket(r) for r in rows]

    def delete_bucket(self, name: str) -> None:
        check_text(name, "bucket")

        def op(tx: Tx) -> None:
            if tx.one("SELECT name FROM buckets WHERE name = ?" + self.lock_rows, name) is None:
                raise NoSuchBucket(f"no bucket {name!r}")
            if tx.one("SELECT seq FROM versions WHERE bucket = ? LIMIT 1", name) is not None:
                raise BucketNotEmpty(f"bucket {name!r} is not empty")
            for (upload_id,) in tx.rows("SELECT upload_id FROM uploads WHERE bucket = ?", name):
                self._drop_upload(tx, upload_id)
            tx.run("DELETE FROM keys WHERE bucket = ?", name)
            tx.run("DELETE FROM buckets WHERE name = ?", name)

        self._write(op)

    def set_versioning(self, name: str, state: str) -> Bucket:
        if state not in (ENABLED, SUSPENDED):
            raise ValueError(f"versioning is {ENABLED} or {SUSPENDED}, not {state!r}")
        return self._update_bucket(name, lambda b: (state, b.config))

    def set_bucket_config(self, name: str, item: str, value: Any | None) -> Bucket:
        def change(bucket: Bucket) -> tuple[str, Mapping[str, Any]]:
            config = dict(bucket.config)
            if value is None:
                config.pop(item, None)
            else:
                config[item] = value
            return bucket.versioning, config

        return self._update_bucket(name, change)

    def _update_bucket(self, name: str, change) -> Bucket:
        check_text(name, "bucket")

        def op(tx: Tx) -> Bucket:
            row = tx.one("SELECT name, created, owner, versioning, config FROM buckets "
                         "WHERE name = ?" + self.lock_rows, name)
            if row is None:
                raise NoSuchBucket(f"no bucket {name!r}")
            bucket = _bucket(row)
            versioning, config = change(bucket)
            tx.run("UPDATE buckets SET versioning = ?, config = ? WHERE name = ?",
                   versioning, json.dumps(config, sort_keys=True), name)
            return Bucket(name, bucket.created, bucket.owner, versioning, dict(config))

        return self._write(op)

    # -- writing versions ----------------------------------------------------------------------
    def _versioning(self, tx: Tx, bucket: str) -> str:
        return self._versioning_later(tx, bucket)()

    def _versioning_later(self, tx: Tx, bucket: str) -> Callable[[], str]:
        rows = tx.later("SELECT versioning FROM buckets WHERE name = ?" + self.share_rows,
                        bucket)

        def versioning() -> str:
            found = rows()
            if not found:
                raise NoSuchBucket(f"no bucket {bucket!r}")
            return found[0][0]

        return versioning

    def _latest(self, tx: Tx, bucket: str, key: str) -> Version | None:
        return self._latest_later(tx, bucket, key)()

    def _latest_later(self, tx: Tx, bucket: str, key: str) -> Callable[[], Version | None]:
        rows = tx.later(f"SELECT {_VERSION} FROM versions WHERE bucket = ? AND key = ? "
                        "AND is_latest = 1", bucket, key)

        def latest() -> Version | None:
            found = rows()
            return _version(found[0]) if found else None

        return latest

    def _next_number(self, tx: Tx, bucket: str, key: str, step: int = 1) -> int:
        return self._next_number_later(tx, bucket, key, step)()

    def _next_number_later(self, tx: Tx, bucket: str, key: str,
                           step: int = 1) -> Callable[[], int]:
        """Allocate the key's next number (``step`` 0: only lock the key); the row it
        updates serialises the writers of one key across processes and hosts, so what is
        read after it (the latest version) is read under that lock."""
        rows = tx.later(
            "INSERT INTO keys (bucket, key, last_number) VALUES (?, ?, ?) "
            "ON CONFLICT (bucket, key) DO UPDATE SET last_number = keys.last_number + ? "
            "RETURNING last_number", bucket, key, step, step)
        return lambda: int(rows()[0][0])

    def _unlock_unused(self, tx: Tx, bucket: str, key: str) -> None:
        """Drop the lock row a delete of a key that never had a version created."""
        tx.run("DELETE FROM keys WHERE bucket = ? AND key = ? AND last_number = 0", bucket, key)

    def _reference(self, tx: Tx, draft: Draft, now: float) -> None:
        if draft.delete_marker:
            return
        if draft.parts or draft.shared:
            counts: dict[str, int] = {}
            for hash_ in ([p.hash for p in draft.parts] or [draft.hash]):
                counts[hash_] = counts.get(hash_, 0) + 1
            for hash_ in sorted(counts):            # one order everywhere: no deadlocks
                if not tx.run("UPDATE contents SET refs = refs + ?, unreferenced_since = NULL "
                              "WHERE hash = ?", counts[hash_], hash_):
                    raise ContentGone(f"content {hash_} was collected meanwhile; send it again")
            return
        tx.send("INSERT INTO contents (hash, size, md5, refs, unreferenced_since, created) "
               "VALUES (?, ?, ?, 1, NULL, ?) ON CONFLICT (hash) DO UPDATE SET "
               "refs = contents.refs + 1, unreferenced_since = NULL, "
               "md5 = CASE WHEN contents.md5 = '' THEN excluded.md5 ELSE contents.md5 END",
               draft.hash, draft.size, draft.md5, now)

    def _dereference(self, tx: Tx, hashes: list[str], now: float) -> None:
        counts: dict[str, int] = {}
        for hash_ in hashes:
            if hash_:
                counts[hash_] = counts.get(hash_, 0) + 1
        for hash_ in sorted(counts):
            tx.run("UPDATE contents SET refs = refs - ?, unreferenced_since = CASE "
                   "WHEN refs - ? <= 0 THEN ? ELSE unreferenced_since END WHERE hash = ?",
                   counts[hash_], counts[hash_], now, hash_)

    def _content_hashes(self, tx: Tx, version: Version) -> list[str]:
        if version.parts:
            return [h for (h,) in tx.rows("SELECT hash FROM version_parts WHERE seq = ?",
                                          version.seq)]
        return [version.hash] if version.hash else []

    def _remove(self, tx: Tx, version: Version, now: float) -> None:
        """Delete one version row and its parts, releasing their contents."""
        self._dereference(tx, self._content_hashes(tx, version), now)
        if version.parts:
            tx.run("DELETE FROM version_parts WHERE seq = ?", version.seq)
        tx.run("DELETE FROM versions WHERE seq = ?", version.seq)

    def _set_current(self, tx: Tx, version: Version | None, bucket: str, key: str) -> None:
        if version is None or version.delete_marker:
            tx.send("DELETE FROM current WHERE bucket = ? AND key = ?", bucket, key)
            return
        tx.send("INSERT INTO current (bucket, key, seq, number, created, size, etag) "
               "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (bucket, key) DO UPDATE SET "
               "seq = excluded.seq, number = excluded.number, created = excluded.created, "
               "size = excluded.size, etag = excluded.etag",
               bucket, key, version.seq, version.number, version.created, version.size,
               version.etag)

    def _promote_newest(self, tx: Tx, bucket: str, key: str) -> None:
        """After the latest version was removed: the newest remaining one becomes latest."""
        row = tx.one(f"SELECT {_VERSION} FROM versions WHERE bucket = ? AND key = ? "
                     "ORDER BY seq DESC LIMIT 1", bucket, key)
        if row is None:
            tx.run("DELETE FROM current WHERE bucket = ? AND key = ?", bucket, key)
            tx.run("DELETE FROM keys WHERE bucket = ? AND key = ?", bucket, key)
            return
        newest = _version(row)
        tx.run("UPDATE versions SET is_latest = 1 WHERE seq = ?", newest.seq)
        self._set_current(tx, newest, bucket, key)

    def _insert(self, tx: Tx, draft: Draft, condition: WriteCondition | None,
                versioning: str | None = None) -> Version:
        """The body of every version write (PUT, delete marker, Complete, copy); the bucket's
        ``versioning`` is read here when not given.  The reads before the condition check go
        out together (one round trip on PostgreSQL), in the order the locks need."""
        now = time.time()
        bucket_versioning = (self._versioning_later(tx, draft.bucket) if versioning is None
                             else None)
        number_later = self._next_number_later(tx, draft.bucket, draft.key)
        latest_later = self._latest_later(tx, draft.bucket, draft.key)
        if bucket_versioning is not None:
            versioning = bucket_versioning()
        number, latest = number_later(), latest_later()
        if condition is not None:
            condition.check(latest)
        self._reference(tx, draft, now)
        versioned = versioning == ENABLED
        if not versioned:
            row = tx.one(f"SELECT {_VERSION} FROM versions WHERE bucket = ? AND key = ? "
                         "AND is_null = 1", draft.bucket, draft.key)
            if row is not None:
                self._remove(tx, _version(row), now)
        if latest is not None:
            tx.send("UPDATE versions SET is_latest = 0 WHERE seq = ?", latest.seq)
        (seq,) = tx.one(
            "INSERT INTO versions (bucket, key, number, is_null, is_latest, delete_marker, "
            "created, size, hash, etag, parts, meta) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?) "
            "RETURNING seq", draft.bucket, draft.key, number, int(not versioned),
            int(draft.delete_marker), now, draft.size, draft.hash, draft.etag, len(draft.parts),
            draft.meta.to_json())
        offset = 0
        for part in draft.parts:
            tx.send(f"INSERT INTO version_parts (seq, {_PART}, part_offset) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", seq, part.number, part.hash,
                   part.size, part.etag, json.dumps(dict(part.checksums)), part.created,
                   part.content_offset, part.stored_size, offset)
            offset += part.size
        version = Version(draft.bucket, draft.key, int(seq), number, not versioned, True,
                          draft.delete_marker, now, draft.size, draft.hash, draft.etag,
                          len(draft.parts), draft.meta)
        self._set_current(tx, version, draft.bucket, draft.key)
        return version

    def put_version(self, draft: Draft, condition: WriteCondition | None = None) -> Version:
        check_draft(draft)
        return self._write(lambda tx: self._insert(tx, draft, condition))

    def delete_object(self, bucket: str, key: str,
                      condition: WriteCondition | None = None) -> Version | None:
        check_text(bucket, "bucket")
        check_text(key, "key")

        def op(tx: Tx) -> Version | None:
            versioning = self._versioning(tx, bucket)
            if versioning != UNVERSIONED:
                return self._insert(tx, Draft(bucket, key, delete_marker=True), condition,
                                    versioning)
            self._next_number(tx, bucket, key, step=0)   # the key's lock, as every writer's
            latest = self._latest(tx, bucket, key)
            if condition is not None:
                condition.check(latest)
            if latest is not None:
                self._remove(tx, latest, time.time())
                self._promote_newest(tx, bucket, key)
            else:
                self._unlock_unused(tx, bucket, key)
            return None

        return self._write(op)

    def delete_version(self, bucket: str, key: str, version_id: str,
                       condition: WriteCondition | None = None) -> Version | None:
        check_text(bucket, "bucket")
        check_text(key, "key")

        def op(tx: Tx) -> Version | None:
            self._versioning(tx, bucket)
            self._next_number(tx, bucket, key, step=0)
            version = self._by_id(tx, bucket, key, version_id)
            if version is None:
                self._unlock_unused(tx, bucket, key)
                return None
            if condition is not None:
                condition.check(version)
            self._remove(tx, version, time.time())
            if version.is_latest:
                self._promote_newest(tx, bucket, key)
            return version

        return self._write(op)

    # -- reading versions ----------------------------------------------------------------------
    def _by_id(self, tx: Tx, bucket: str, key: str, version_id: str) -> Version | None:
        if version_id == NULL_VERSION_ID:
            row = tx.one(f"SELECT {_VERSION} FROM versions WHERE bucket = ? AND key = ? "
                         "AND is_null = 1", bucket, key)
        else:
            seq = decode_version_id(version_id)
            if seq is None:
                return None
            row = tx.one(f"SELECT {_VERSION} FROM versions WHERE seq = ? AND bucket = ? "
                         "AND key = ?", seq, bucket, key)
        return None if row is None else _version(row)

    def version(self, bucket: str, key: str, version_id: str | None = None) -> Version | None:
        check_text(bucket, "bucket")
        check_text(key, "key")
        if version_id is None:
            return self._read(lambda tx: self._latest(tx, bucket, key))
        return self._read(lambda tx: self._by_id(tx, bucket, key, version_id))

    def numbered(self, bucket: str, key: str, number: int) -> Version | None:
        check_text(bucket, "bucket")
        check_text(key, "key")
        if not valid_number(number):
            return None
        row = self._read(lambda tx: tx.one(
            f"SELECT {_VERSION} FROM versions WHERE bucket = ? AND key = ? AND number = ?",
            bucket, key, number))
        return None if row is None else _version(row)

    def parts(self, version: Version, offset: int = 0, limit: int = 10_000) -> list[Part]:
        def op(tx: Tx) -> list[Part]:
            first = tx.one("SELECT number FROM version_parts WHERE seq = ? AND part_offset <= ? "
                           "ORDER BY part_offset DESC LIMIT 1", version.seq, offset)
            if first is None:
                return []
            return [_part(row[:-1], int(row[-1])) for row in tx.rows(
                f"SELECT {_PART}, part_offset FROM version_parts WHERE seq = ? AND number >= ? "
                "ORDER BY number LIMIT ?", version.seq, first[0], limit)]

        return self._read(op)

    def current_page(self, bucket: str, start: str, inclusive: bool, end: str | None,
                     limit: int) -> list[Version]:
        sql = (f"SELECT {_CURRENT} FROM current WHERE bucket = ? AND key {'>=' if inclusive else '>'} ?"
               + (" AND key < ?" if end is not None else "") + " ORDER BY key LIMIT ?")
        params = (bucket, start) + ((end,) if end is not None else ()) + (limit,)
        return [current_version(r) for r in self._read(lambda tx: tx.rows(sql, *params))]

    def versions_page(self, bucket: str, key: str, below_seq: int | None, end: str | None,
                      limit: int) -> list[Version]:
        rows = self._read(lambda tx: _resume_page(
            tx, f"SELECT {_VERSION} FROM versions", "", ("seq < ?", "seq DESC"), bucket, key,
            below_seq, end, limit))
        return [_version(r, meta=False) for r in rows]

    def versions_of(self, bucket: str, key: str | None, offset: int = 0,
                    limit: int = 1000) -> list[Version]:
        check_page(offset, limit)
        if key is None:
            rows = self._read(lambda tx: tx.rows(
                f"SELECT {_VERSION} FROM versions WHERE bucket = ? ORDER BY key, number "
                "LIMIT ? OFFSET ?", bucket, limit, offset))
        else:
            rows = self._read(lambda tx: tx.rows(
                f"SELECT {_VERSION} FROM versions WHERE bucket = ? AND key = ? ORDER BY number "
                "LIMIT ? OFFSET ?", bucket, key, limit, offset))
        return [_version(r) for r in rows]

    def keys_with_versions_over(self, bucket: str, count: int, after: str | None = None,
                                limit: int = 1000) -> list[tuple[str, list[Version]]]:
        check_page(0, limit)

        def op(tx: Tx) -> list[tuple[str, list[Version]]]:
            keys = tx.rows("SELECT key FROM versions WHERE bucket = ? AND key > ? GROUP BY key "
                           "HAVING COUNT(*) > ? ORDER BY key LIMIT ?", bucket, after or "",
                           count, limit)
            return [(key, [_version(r) for r in tx.rows(
                f"SELECT {_VERSION} FROM versions WHERE bucket = ? AND key = ? ORDER BY seq",
                bucket, key)]) for (key,) in keys]

        return self._read(op)

    # -- contents ----------------------------------------------------------------------------------
    def content(self, hash: str) -> Content | None:
        if not hash:
            return None
        row = self._read(lambda tx: tx.one(
            "SELECT hash, size, md5, refs, unreferenced_since FROM contents WHERE hash = ?",
            hash))
        return None if row is None else Content(row[0], int(row[1]), row[2], int(row[3]),
                                                row[4])

    def touch_content(self, hash: str) -> bool:
        if not hash:
            return False
        now = time.time()

        def op(tx: Tx) -> bool:
            if tx.one("SELECT refs FROM contents WHERE hash = ?", hash) is None:
                return False
            tx.run("UPDATE contents SET unreferenced_since = ? WHERE hash = ? AND refs <= 0",
                   now, hash)
            return True

        return self._write(op)

    def hashes(self, after: str | None = None, limit: int = 1000) -> list[str]:
        check_page(0, limit)
        return [h for (h,) in self._read(lambda tx: tx.rows(
            "SELECT hash FROM contents WHERE hash > ? ORDER BY hash LIMIT ?", after or "",
            limit))]

    def unreferenced(self, older_than: float, limit: int = 1000) -> list[Content]:
        check_page(0, limit)
        before = time.time() - older_than
        rows = self._read(lambda tx: tx.rows(
            "SELECT hash, size, md5, refs, unreferenced_since FROM contents WHERE refs <= 0 "
            "AND unreferenced_since <= ? ORDER BY unreferenced_since LIMIT ?", before, limit))
        return [Content(r[0], int(r[1]), r[2], int(r[3]), r[4]) for r in rows]

    def claim_unreferenced(self, hash: str, older_than: float) -> bool:
        before = time.time() - older_than
        return bool(self._write(lambda tx: tx.run(
            "DELETE FROM contents WHERE hash = ? AND refs <= 0 AND unreferenced_since <= ?",
            hash, before)))

    # -- multipart uploads ------------------------------------------------------------------------
    def create_upload(self, bucket: str, key: str, meta: ObjectMeta) -> Upload:
        check_text(bucket, "bucket")
        check_text(key, "key")
        upload = Upload(new_upload_id(), bucket, key, time.time(), meta)

        def op(tx: Tx) -> Upload:
            self._versioning(tx, bucket)
            tx.run(f"INSERT INTO uploads ({_UPLOAD}) VALUES (?, ?, ?, ?, ?, NULL)",
                   upload.upload_id, bucket, key, upload.created, meta.to_json())
            return upload

        return self._write(op)

    def _open_upload(self, tx: Tx, upload_id: str, lock: bool = True) -> Upload:
        row = tx.one(f"SELECT {_UPLOAD} FROM uploads WHERE upload_id = ?"
                     + (self.lock_rows if lock else ""), upload_id)
        if row is None:
            raise NoSuchUpload(f"no upload {upload_id!r}")
        return _upload(row)

    def upload(self, upload_id: str) -> Upload | None:
        row = self._read(lambda tx: tx.one(f"SELECT {_UPLOAD} FROM uploads WHERE upload_id = ?",
                                           upload_id))
        return None if row is None else _upload(row)

    def put_part(self, upload_id: str, part: Part, shared: bool = False, md5: str = "") -> Part:
        now = time.time()
        part = dataclasses.replace(part, created=now, offset=0)

        def op(tx: Tx) -> Part:
            upload = self._open_upload(tx, upload_id)
            if upload.completed is not None:
                raise NoSuchUpload(f"upload {upload_id!r} is complete")
            self._reference(tx, Draft(upload.bucket, upload.key, part.stored_size, part.hash,
                                      md5=md5, shared=shared), now)
            old = tx.one("SELECT hash FROM upload_parts WHERE upload_id = ? AND number = ?",
                         upload_id, part.number)
            if old is not None:
                self._dereference(tx, [old[0]], now)
                tx.run("DELETE FROM upload_parts WHERE upload_id = ? AND number = ?",
                       upload_id, part.number)
            tx.run(f"INSERT INTO upload_parts (upload_id, {_PART}) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", upload_id, part.number, part.hash,
                   part.size, part.etag, json.dumps(dict(part.checksums)), now,
                   part.content_offset, part.stored_size)
            return part

        return self._write(op)

    def upload_parts(self, upload_id: str, after: int = 0, limit: int = 1000) -> list[Part]:
        check_page(0, limit)
        return [_part(r) for r in self._read(lambda tx: tx.rows(
            f"SELECT {_PART} FROM upload_parts WHERE upload_id = ? AND number > ? "
            "ORDER BY number LIMIT ?", upload_id, after, limit))]

    def uploads_page(self, bucket: str, key: str, after_upload: str | None, end: str | None,
                     limit: int) -> list[Upload]:
        rows = self._read(lambda tx: _resume_page(
            tx, f"SELECT {_UPLOAD} FROM uploads", " AND completed IS NULL",
            ("upload_id > ?", "upload_id"), bucket, key, after_upload, end, limit))
        return [_upload(r) for r in rows]

    def complete_upload(self, upload_id: str, draft: Draft | None,
                        condition: WriteCondition | None = None) -> Version:
        if draft is not None:
            check_draft(draft)

        def op(tx: Tx) -> Version:
            upload = self._open_upload(tx, upload_id)
            if upload.completed is not None:
                row = tx.one(f"SELECT {_VERSION} FROM versions WHERE seq = ?", upload.completed)
                if row is None:
                    raise NoSuchUpload(f"upload {upload_id!r} completed into a version since "
                                       "removed")
                return _version(row)
            if draft is None:
                raise NoSuchUpload(f"upload {upload_id!r} is not complete")
            held = {int(r[0]): (r[1], r[3]) for r in tx.rows(
                "SELECT number, hash, size, etag FROM upload_parts WHERE upload_id = ?",
                upload_id)}
            for part in draft.parts:
                if held.get(part.number) != (part.hash, part.etag):
                    raise InvalidPart(f"part {part.number} is not the part uploaded")
            versioning = self._versioning(tx, upload.bucket)
            version = self._insert(tx, Draft(upload.bucket, upload.key, draft.size, "",
                                             draft.etag, draft.meta, draft.parts, shared=True),
                                   condition, versioning)
            self._dereference(tx, [hash_ for hash_, _ in held.values()], time.time())
            tx.run("DELETE FROM upload_parts WHERE upload_id = ?", upload_id)
            tx.run("UPDATE uploads SET completed = ? WHERE upload_id = ?", version.seq,
                   upload_id)
            return version

        return self._write(op)

    def _drop_upload(self, tx: Tx, upload_id: str) -> None:
        hashes = [h for (h,) in tx.rows("SELECT hash FROM upload_parts WHERE upload_id = ?",
                                        upload_id)]
        self._dereference(tx, hashes, time.time())
        tx.run("DELETE FROM upload_parts WHERE upload_id = ?", upload_id)
        tx.run("DELETE FROM uploads WHERE upload_id = ?", upload_id)

    def abort_upload(self, upload_id: str) -> bool:
        def op(tx: Tx) -> bool:
            row = tx.one("SELECT completed FROM uploads WHERE upload_id = ?" + self.lock_rows,
                         upload_id)
            if row is None or row[0] is not None:
                return False
            self._drop_upload(tx, upload_id)
            return True

        return self._write(op)

    def idle_uploads(self, older_than: float, limit: int = 1000) -> list[Upload]:
        check_page(0, limit)
        before = time.time() - older_than
        return [_upload(r) for r in self._read(lambda tx: tx.rows(
            f"SELECT {_UPLOAD} FROM uploads WHERE created <= ? ORDER BY created LIMIT ?",
            before, limit))]

    def forget_upload(self, upload_id: str) -> None:
        self._write(lambda tx: tx.run("DELETE FROM uploads WHERE upload_id = ? "
                                      "AND completed IS NOT NULL", upload_id))

    # -- records -----------------------------------------------------------------------------------
    def put_record(self, kind: str, id: str, body: Mapping[str, Any]) -> None:
        text = json.dumps(dict(body), sort_keys=True)
        self._write(lambda tx: tx.run(
            "INSERT INTO records (kind, id, body, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body, "
            "updated = excluded.updated", kind, id, text, time.time()))

    def record(self, kind: str, id: str) -> dict[str, Any] | None:
        row = self._read(lambda tx: tx.one(
            "SELECT body FROM records WHERE kind = ? AND id = ?", kind, id))
        return None if row is None else json.loads(row[0])

    def records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self._read(lambda tx: tx.rows(
            "SELECT id, body FROM records WHERE kind = ? ORDER BY id", kind))
        return [(id_, json.loads(body)) for id_, body in rows]

    def delete_record(self, kind: str, id: str) -> bool:
        return bool(self._write(lambda tx: tx.run(
            "DELETE FROM records WHERE kind = ? AND id = ?", kind, id)))

    # -- the repair log ------------------------------------------------------------------------
    def record_repair(self, repair: RepairRecord) -> RepairRecord:
        """The totals row allocates the seq (its row lock orders concurrent writers); the
        insert and the prune by primary key cost one index seek each, pruning one row in
        the steady state."""
        check_repair(repair)
        done = 1 if repair.outcome == REPAIR_DONE else 0
        kept = self.repairs_kept

        def op(tx: Tx) -> RepairRecord:
            (seq,) = tx.one(
                "INSERT INTO repair_totals (id, last_seq, done, failed) VALUES (1, 1, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET last_seq = repair_totals.last_seq + 1, "
                "done = repair_totals.done + excluded.done, "
                "failed = repair_totals.failed + excluded.failed RETURNING last_seq",
                done, 1 - done)
            seq = int(seq)
            tx.send(f"INSERT INTO repair_log ({_REPAIR}) VALUES (?, ?, ?, ?, ?, ?, ?)", seq,
                    repair.time, repair.hash, json.dumps(list(repair.shards)), repair.outcome,
                    repair.error, repair.by)
            tx.send("DELETE FROM repair_log WHERE seq <= ?", seq - kept)
            return dataclasses.replace(repair, seq=seq)

        return self._write(op)

    def repairs(self, limit: int = 100) -> list[RepairRecord]:
        check_page(0, limit)
        return [_repair(r) for r in self._read(lambda tx: tx.rows(
            f"SELECT {_REPAIR} FROM repair_log ORDER BY seq DESC LIMIT ?",
            min(limit, self.repairs_kept)))]

    def repair_counts(self) -> tuple[int, int]:
        row = self._read(lambda tx: tx.one("SELECT done, failed FROM repair_totals "
                                           "WHERE id = 1"))
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    # -- operations ------------------------------------------------------------------------------
    def usage(self) -> Usage:
        def op(tx: Tx) -> Usage:
            (buckets,) = tx.one("SELECT COUNT(*) FROM buckets")
            (objects,) = tx.one("SELECT COUNT(*) FROM current")
            versions, logical = tx.one(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN delete_marker = 0 THEN size END), 0) "
                "FROM versions")
            (content,) = tx.one("SELECT COALESCE(SUM(size), 0) FROM contents WHERE refs > 0")
            return Usage(int(buckets), int(objects), int(versions), int(logical), int(content))

        return self._read(op)
