"""PostgreSQL metadata backend: one store shared by api servers on several hosts.

The operations are ``lib/metadata/sql.py``'s; this module runs each in a transaction of its
own on a pooled psycopg 3 connection (READ COMMITTED: every statement sees the rows committed
before it, and a writer serialises with the others of its key on the ``keys`` row it upserts
first).  Deadlocks and serialization failures are retried; a connection that died (a restarted
server, ``pg_terminate_backend``) is replaced by the pool, and the operation is retried when it
cannot have committed.  Keys are ``COLLATE "C"``: they compare as UTF-8 bytes, as S3 lists them.

The schema is versioned (``tessera_schema`` table) and lives in the schema named by the URL's
``schema`` query parameter (default ``public``), so several clusters or test runs can share
one database.  This is the only module that imports ``psycopg``.
"""
from __future__ import annotations

import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import TypeVar

from lib.metadata import MetadataError, Version
from lib.metadata.sql import SqlStore, Tx, current_version

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: 2 -> 3: the trigram index of the key search; 3 -> 4: the repair log.
SCHEMA_VERSION = 4
#: Connections each process keeps (an api worker's threads share them).
POOL_MAX = 16
#: Seconds a request waits for a pooled connection, and the server's statement timeout.
WAIT_TIMEOUT = 10.0
ATTEMPTS = 4

_KEY = 'TEXT COLLATE "C" NOT NULL'
_SCHEMA = (
    f"""CREATE TABLE buckets (
        name {_KEY} PRIMARY KEY, created DOUBLE PRECISION NOT NULL,
        owner TEXT NOT NULL DEFAULT '', versioning TEXT NOT NULL DEFAULT '',
        config TEXT NOT NULL DEFAULT '{{}}')""",
    f"""CREATE TABLE keys (
        bucket {_KEY}, key {_KEY}, last_number BIGINT NOT NULL, PRIMARY KEY (bucket, key))""",
    f"""CREATE TABLE versions (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        bucket {_KEY}, key {_KEY}, number BIGINT NOT NULL,
        is_null INTEGER NOT NULL, is_latest INTEGER NOT NULL, delete_marker INTEGER NOT NULL,
        created DOUBLE PRECISION NOT NULL, size BIGINT NOT NULL CHECK (size >= 0),
        hash TEXT NOT NULL, etag TEXT NOT NULL, parts INTEGER NOT NULL, meta TEXT NOT NULL)""",
    "CREATE UNIQUE INDEX versions_key ON versions (bucket, key, seq DESC)",
    "CREATE UNIQUE INDEX versions_number ON versions (bucket, key, number)",
    "CREATE UNIQUE INDEX versions_latest ON versions (bucket, key) WHERE is_latest = 1",
    "CREATE UNIQUE INDEX versions_null ON versions (bucket, key) WHERE is_null = 1",
    f"""CREATE TABLE current (
        bucket {_KEY}, key {_KEY}, seq BIGINT NOT NULL, number BIGINT NOT NULL,
        created DOUBLE PRECISION NOT NULL, size BIGINT NOT NULL, etag TEXT NOT NULL,
        PRIMARY KEY (bucket, key))""",
    """CREATE TABLE version_parts (
        seq BIGINT NOT NULL, number INTEGER NOT NULL, hash TEXT NOT NULL, size BIGINT NOT NULL,
        etag TEXT NOT NULL, checksums TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
        content_offset BIGINT NOT NULL, content_size BIGINT NOT NULL,
        part_offset BIGINT NOT NULL, PRIMARY KEY (seq, number))""",
    "CREATE INDEX version_parts_offset ON version_parts (seq, part_offset)",
    """CREATE TABLE contents (
        hash TEXT COLLATE "C" PRIMARY KEY, size BIGINT NOT NULL, md5 TEXT NOT NULL,
        refs INTEGER NOT NULL, unreferenced_since DOUBLE PRECISION,
        created DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX contents_unreferenced ON contents (unreferenced_since) WHERE refs <= 0",
    f"""CREATE TABLE uploads (
        upload_id TEXT COLLATE "C" PRIMARY KEY, bucket {_KEY}, key {_KEY},
        created DOUBLE PRECISION NOT NULL, meta TEXT NOT NULL, completed BIGINT)""",
    "CREATE INDEX uploads_key ON uploads (bucket, key, upload_id)",
    "CREATE INDEX uploads_created ON uploads (created)",
    """CREATE TABLE upload_parts (
        upload_id TEXT NOT NULL, number INTEGER NOT NULL, hash TEXT NOT NULL,
        size BIGINT NOT NULL, etag TEXT NOT NULL, checksums TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL, content_offset BIGINT NOT NULL,
        content_size BIGINT NOT NULL, PRIMARY KEY (upload_id, number))""",
    """CREATE TABLE records (
        kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,
        updated DOUBLE PRECISION NOT NULL, PRIMARY KEY (kind, id))""",
)

#: Schema 4: the cluster's repair log (lib/metadata/sql.py); IF NOT EXISTS, so a migration
#: that another process finished first changes nothing.
_REPAIRS = (
    """CREATE TABLE IF NOT EXISTS repair_log (
        seq BIGINT PRIMARY KEY, finished DOUBLE PRECISION NOT NULL, hash TEXT NOT NULL,
        shards TEXT NOT NULL, outcome TEXT NOT NULL, error TEXT NOT NULL,
        runner TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS repair_totals (
        id INTEGER PRIMARY KEY CHECK (id = 1), last_seq BIGINT NOT NULL,
        done BIGINT NOT NULL, failed BIGINT NOT NULL)""",
)

#: The key search's index: pg_trgm's GIN operator class answers ILIKE '%q%' without reading
#: every key (the extension's schema is found at start: it may live outside ours).
_TRIGRAM_INDEX = ("CREATE INDEX IF NOT EXISTS current_key_trgm ON current "
                  "USING gin (key {}.gin_trgm_ops)")
_CURRENT_COLUMNS = "seq, bucket, key, number, created, size, etag"

_PLACEHOLDER = re.compile(r"\?")


def _dialect(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (the shared SQL has no literal ``%`` or ``?``)."""
    return _PLACEHOLDER.sub("%s", sql)


class _PgTx(Tx):
    """Statements on one connection; in a write, the connection is in pipeline mode, so
    ``later`` and ``send`` wait for nothing and a round trip carries every statement queued
    since the last one that waited (BEGIN with the first, COMMIT with the last)."""

    def __init__(self, conn, pipeline=None):
        self._conn = conn
        self._pipeline = pipeline
        self._cursor = conn.cursor()
        self._queued = False                 # statements sent but not yet answered

    def _execute(self, cursor, sql: str, params: tuple) -> None:
        cursor.execute(_dialect(sql), params)
        self._queued = self._pipeline is not None

    def _wait(self) -> None:
        """The answers to everything sent (a cursor's description and count come only
        with them)."""
        if self._queued:
            self._pipeline.sync()
            self._queued = False

    def rows(self, sql: str, *params: object) -> list[tuple]:
        self._execute(self._cursor, sql, params)
        self._wait()
        return self._cursor.fetchall() if self._cursor.description else []

    def run(self, sql: str, *params: object) -> int:
        self._execute(self._cursor, sql, params)
        self._wait()
        return self._cursor.rowcount

    def later(self, sql: str, *params: object) -> Callable[[], list[tuple]]:
        cursor = self._conn.cursor()         # its own: a cursor keeps only its last result
        self._execute(cursor, sql, params)
        found: list[list[tuple]] = []

        def rows() -> list[tuple]:
            if not found:
                self._wait()
                found.append(cursor.fetchall() if cursor.description else [])
            return found[0]

        return rows

    def send(self, sql: str, *params: object) -> None:
        self._execute(self._cursor, sql, params)


def split_url(url: str) -> tuple[str, str]:
    """(libpq connection string, schema) from ``postgresql://...?schema=name``."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), "public")
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
        raise ValueError(f"schema {schema!r}: lowercase letters, digits and _ only")
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), schema


class PostgresStore(SqlStore):
    """The metadata in a PostgreSQL database (its schema created or migrated at start)."""

    name = "postgresql"
    lock_rows = " FOR UPDATE"
    share_rows = " FOR SHARE"
    #: Whether the key search has its pg_trgm index (found or made at start).
    trigram = False

    def __init__(self, url: str, pool_max: int = POOL_MAX) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        self._psycopg = psycopg
        conninfo, self._schema = split_url(url)
        where = urllib.parse.urlsplit(conninfo)
        self._where = f"{where.hostname or ''}:{where.port or 5432}{where.path}"
        timeout_ms = int(WAIT_TIMEOUT * 1000)
        # No check on every checkout (a round trip per operation): a connection found dead
        # by its first statement makes the pool check the idle ones, and the operation is
        # tried again (see _run).
        self._pool = ConnectionPool(
            conninfo, min_size=1, max_size=pool_max, timeout=WAIT_TIMEOUT, open=False,
            name=f"tessera-{self._schema}",
            kwargs={"autocommit": False, "connect_timeout": 5,
                    "application_name": f"tessera:{self._schema}",
                    "options": f"-c search_path={self._schema} "
                               f"-c statement_timeout={timeout_ms} "
                               f"-c lock_timeout={timeout_ms}"})
        try:
            self._pool.open(wait=True, timeout=WAIT_TIMEOUT)
            self._run(self._migrate, retry=False)
        except Exception as exc:
            self._pool.close()
            if isinstance(exc, MetadataError):
                raise
            raise MetadataError(self._say(f"cannot open: {exc}")) from exc

    def _say(self, text: str) -> str:
        return f"postgresql:{self._where}/{self._schema}: {text}"

    # -- schema --------------------------------------------------------------------------------
    def _migrate(self, tx: _PgTx) -> None:
        # One migrating process at a time: the others wait, then find it done.
        tx.rows("SELECT pg_advisory_xact_lock(hashtext(?))", f"tessera:{self._schema}")
        tx.run(f"CREATE SCHEMA IF NOT EXISTS {self._schema}")
        tx.run("CREATE TABLE IF NOT EXISTS tessera_schema (version INTEGER NOT NULL)")
        row = tx.one("SELECT version FROM tessera_schema")
        if row is None:
            for statement in (*_SCHEMA, *_REPAIRS):
                tx.run(statement)
            tx.run("INSERT INTO tessera_schema (version) VALUES (?)", SCHEMA_VERSION)
        elif row[0] > SCHEMA_VERSION:
            raise MetadataError(self._say(f"schema {row[0]} is newer than this code's "
                                          f"{SCHEMA_VERSION}"))
        elif row[0] in (2, 3):
            # 2 -> 3 is the trigram index, which _ensure_trigram makes below.
            for statement in _REPAIRS:
                tx.run(statement)
            tx.run("UPDATE tessera_schema SET version = ?", SCHEMA_VERSION)
            log.warning("%s", self._say(f"migrated from schema {row[0]} to {SCHEMA_VERSION} "
                                        "(key search index, repair log)"))
        elif row[0] < SCHEMA_VERSION:
            raise MetadataError(self._say(f"no migration from schema {row[0]}"))
        self.trigram = self._ensure_trigram(tx)

    def _ensure_trigram(self, tx: _PgTx) -> bool:
        """Create pg_trgm (when allowed) and the key search's index; False, logged, when the
        extension cannot be had: searches then read every current key of their bucket."""
        found = tx.one("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                       "ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'")
        if found is None:
            tx.run("SAVEPOINT trgm")
            try:
                tx.run("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
                tx.run("RELEASE SAVEPOINT trgm")
                found = ("public",)
            except self._psycopg.Error as exc:
                tx.run("ROLLBACK TO SAVEPOINT trgm")
                log.warning("%s", self._say(
                    f"pg_trgm unavailable ({str(exc).strip()}): key search scans the keys"))
                return False
        tx.run(_TRIGRAM_INDEX.format(found[0]))
        return True

    # -- running operations --------------------------------------------------------------------
    def _run(self, op: Callable[[Tx], _T], retry: bool = True, read: bool = False) -> _T:
        """Run ``op`` in a transaction of its own; a ``read`` runs each statement on its
        own (autocommit: no BEGIN and COMMIT round trips), which under READ COMMITTED sees
        exactly what the same statements in a transaction would."""
        errors = self._psycopg.errors
        attempt = 0
        while True:
            attempt += 1
            committing = False
            try:
                with self._pool.connection() as conn:
                    conn.autocommit = read
                    if read:
                        return op(_PgTx(conn))
                    with conn.pipeline() as pipeline:
                        result = op(_PgTx(conn, pipeline))
                        committing = True
                        conn.commit()
                    return result
            except (errors.SerializationFailure, errors.DeadlockDetected) as exc:
                if not retry or attempt >= ATTEMPTS:
                    raise MetadataError(self._say(f"gave up after {attempt} tries: {exc}"))
                time.sleep(0.005 * attempt)
            except self._psycopg.OperationalError as exc:
                # The connection died.  Before COMMIT nothing was written: try again on a
                # fresh one; during COMMIT the outcome is unknown, so the caller must decide.
                if committing or not retry or attempt >= 2:
                    raise MetadataError(self._say(str(exc).strip())) from exc
                log.warning("%s", self._say(f"connection lost, retrying: {exc}"))
                self._pool.check()           # drop the other dead ones before the retry
            except self._psycopg.Error as exc:
                raise MetadataError(self._say(str(exc).strip())) from exc
            except Exception as exc:
                if type(exc).__module__.startswith("psycopg_pool"):     # PoolTimeout, closed
                    raise MetadataError(self._say(str(exc))) from exc
                raise

    def _read(self, op: Callable[[Tx], _T]) -> _T:
        return self._run(op, read=True)

    def _write(self, op: Callable[[Tx], _T]) -> _T:
        return self._run(op)

    # -- operations ----------------------------------------------------------------------------
    def check(self) -> str:
        def op(tx: Tx) -> tuple | None:
            tx.rows("SELECT seq FROM versions LIMIT 1")
            return tx.one("SELECT version FROM tessera_schema")

        row = self._read(op)
        if row is None or row[0] != SCHEMA_VERSION:
            raise MetadataError(self._say(f"schema {row}"))
        return f"postgresql:{self._where}/{self._schema}"

    def substring_page(self, bucket: str | None, q: str, limit: int,
                       after: str | None) -> tuple[list[Version], str | None]:
        """ILIKE over the trigram index, by (bucket, key)."""
        start = ("", "")
        if after is not None:
            start_bucket, sep, start_key = after.partition("\0")
            if not sep:
                raise ValueError(f"not a search cursor: {after!r}")
            start = (start_bucket, start_key)
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        in_bucket, params = ("AND bucket = ? ", (bucket,)) if bucket is not None else ("", ())
        rows = self._read(lambda tx: tx.rows(
            f"SELECT {_CURRENT_COLUMNS} FROM current WHERE key ILIKE ? ESCAPE '\\' "
            f"{in_bucket}AND (bucket, key) > (?, ?) ORDER BY bucket, key LIMIT ?",
            pattern, *params, *start, limit + 1))
        page = [current_version(row) for row in rows[:limit]]
        more = len(rows) > limit
        return page, f"{page[-1].bucket}\0{page[-1].key}" if more else None

    def drop_schema(self) -> None:
        """Remove this store's schema and everything in it (tests, and an operator's reset)."""
        if self._schema == "public":
            raise ValueError("refusing to drop the public schema")
        self._run(lambda tx: tx.run(f"DROP SCHEMA IF EXISTS {self._schema} CASCADE"),
                  retry=False)

    def close(self) -> None:
        self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r}, schema={self._schema!r})"
