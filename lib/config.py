"""Process configuration: every setting read once from the environment.

The book configures its processes with environment variables only (``LISTEN_ADDRESS``,
``STORAGE_ROOT``, ``RABBITMQ_SERVER``, ``ES_SERVER``); we keep those names and give every other
knob a default and a variable of its own.  Nothing else in the code base reads ``os.environ``.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _int(environ: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
    return value


def _flag(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(name) or "0"
    if raw not in ("0", "1"):
        raise ConfigError(f"{name} must be 0 or 1, got {raw!r}")
    return raw == "1"


def _address(environ: Mapping[str, str], name: str, default: str | None) -> str:
    raw = environ.get(name) or default
    if not raw:
        raise ConfigError(f"{name} is required (ip:port)")
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name} must be ip:port, got {raw!r}")
    return raw


def _choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = (environ.get(name) or choices[0]).lower()
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings shared by api servers, data servers and the maintenance scripts."""

    listen_address: str = "127.0.0.1:12345"
    storage_root: Path | None = None
    rabbitmq_server: str = "amqp://guest:guest@127.0.0.1:5672/"
    api_exchange: str = "apiServers"
    data_exchange: str = "dataServers"
    metadata_db: Path = Path("data/metadata.db")
    #: ``postgresql://...``: the shared PostgreSQL metadata store instead of SQLite.
    metadata_url: str | None = None
    es_server: str | None = None
    es_index: str = "metadata"
    #: The bucket the book's API (/objects/<name>) reads and writes.
    book_bucket: str = "book"
    #: Shards a PUT must commit before it answers 200 (DATA_SHARDS + 1 by default).
    write_quorum: int = 5
    workers: int = 2
    threads: int = 16
    #: Seconds for one HTTP exchange between our own servers (connect and each read).
    http_timeout: float = 30.0
    #: Seconds a locate waits for data servers that have not answered.
    locate_timeout: float = 1.0
    #: Seconds between heartbeats, and after which a silent data server is dropped.
    heartbeat_interval: float = 5.0
    server_ttl: float = 10.0
    #: Seconds after which an abandoned temp object on a data server is removed.
    temp_ttl: float = 24 * 3600.0
    #: Cluster secret signing resumable-upload tokens; every api server must share it.
    #: Empty (CLUSTER_SECRET unset): ``lib/secret.py`` reads ``cluster.secret`` beside
    #: METADATA_DB, creating it once (0600), so api servers sharing the metadata share it.
    cluster_secret: str = ""
    log_level: str = "info"
    #: ``text`` or ``json`` (one JSON object per line, ``lib/logs.py``).
    log_format: str = "text"
    #: Where each server start makes its metrics directory (PROMETHEUS_MULTIPROC_DIR; empty:
    #: the system's temp directory); ``lib/metrics.py``.
    metrics_dir: Path | None = None
    #: False (METRICS=off): requests are not counted or timed (``lib/access.py``); /metrics
    #: still answers the process, disk, queue and data-server series.
    request_metrics: bool = True
    #: ``ip:port`` of the task worker's /metrics and /health (empty: none).
    worker_status_address: str = ""
    #: Durable RabbitMQ queue of deferred work (repairs, shard collection, stored events);
    #: ``<queue>.retry.<n>`` hold failed tasks for their backoff, ``<queue>.dead`` the rest.
    task_queue: str = "tessera.tasks"
    #: Times a task is tried before it goes to the dead-letter queue.
    task_max_attempts: int = 5
    #: Seconds before the first retry of a failed task; each further retry waits twice as long.
    task_retry_delay: float = 5.0
    #: URL the worker POSTs every "object stored" event to (JSON), when set.
    stored_hook_url: str | None = None
    #: Seconds a committed shard is left alone by orphan collection: its upload may still be
    #: about to write its metadata (BOOK W6).
    orphan_grace: float = 3600.0
    #: Seconds a file stays in garbage/ before the orphan collector purges it.
    garbage_ttl: float = 7 * 24 * 3600.0
    #: Seconds content no version references any more is kept before it is collected.
    gc_grace: float = 3600.0
    #: Seconds between the worker's sweeps (unreferenced content, idle uploads).
    gc_interval: float = 60.0
    #: S3 API listener (empty: none), its virtual-host domain, and its credentials: one
    #: pair here, more in a credentials file (``[name]`` sections with
    #: aws_access_key_id / aws_secret_access_key).
    s3_listen_address: str = ""
    s3_domain: str = ""
    s3_region: str = "us-east-1"
    s3_access_key: str = "tessera"
    s3_secret_key: str = "tessera-secret-key"
    s3_credentials_file: Path | None = None
    #: Smallest multipart part other than the last (S3: 5 MiB; smaller in tests).
    min_part_size: int = 5 * 1024 * 1024
    #: Seconds a multipart upload may stay idle before the worker aborts it.
    multipart_ttl: float = 7 * 24 * 3600.0
    #: Bearer token of the management API (/api/v1/); empty: that API answers 403.
    admin_token: str = ""
    #: The book bucket's third-party origin, a URL template (``https://host/path/{key}``):
    #: a GET or HEAD of a missing key asks it (other buckets' origins: the management API).
    origin_url: str = ""
    #: Seconds to connect to an origin, and for each read from it.
    origin_connect_timeout: float = 5.0
    origin_read_timeout: float = 30.0
    #: Largest object fetched from an origin (bytes).
    origin_max_size: int = 5 << 30
    #: Seconds an origin's 404 is remembered (no origin request for that key meanwhile).
    origin_negative_ttl: float = 60.0
    #: Consecutive origin failures that open its circuit breaker, and seconds it stays open.
    origin_breaker_failures: int = 5
    origin_breaker_reset: float = 30.0
    #: Redirects of an HTTP(S) origin followed for one request.
    origin_max_redirects: int = 5
    #: PEM file of certificate authorities HTTPS origins may be signed by, besides the system's.
    origin_ca_file: Path | None = None
    #: Bearer token the book API's writes and deletes need; empty: the book API is open.
    book_api_token: str = ""
    #: Fanout exchange carrying fault rules and injected-fault events (tests use their own).
    faults_exchange: str = "faults"
    #: Seconds between an api worker's re-reads and broadcasts of the fault rules.
    faults_sync_interval: float = 10.0
    #: Seconds a data server accepts a request's Cluster-Mac time away from its own clock.
    cluster_mac_skew: float = 300.0
    #: Data servers serve GET/HEAD without a Cluster-Mac (writes always need one).
    data_reads_open: bool = False
    #: Seconds a client may take to send a request head; an api server's request body must
    #: then arrive within that plus one second per CLIENT_MIN_RATE bytes (0: no pace).
    client_timeout: float = 10.0
    client_min_rate: int = 16384

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Config":
        """Read every setting; a malformed one fails here, naming its variable."""
        root = environ.get("STORAGE_ROOT")
        write_quorum = _int(environ, "WRITE_QUORUM", cls.write_quorum, minimum=1)
        return cls(
            listen_address=_address(environ, "LISTEN_ADDRESS", cls.listen_address),
            storage_root=Path(root) if root else None,
            rabbitmq_server=environ.get("RABBITMQ_SERVER") or cls.rabbitmq_server,
            api_exchange=environ.get("API_EXCHANGE") or cls.api_exchange,
            data_exchange=environ.get("DATA_EXCHANGE") or cls.data_exchange,
            metadata_db=Path(environ.get("METADATA_DB") or cls.metadata_db),
            metadata_url=environ.get("METADATA_URL") or None,
            es_server=environ.get("ES_SERVER") or None,
            es_index=environ.get("ES_INDEX") or cls.es_index,
            book_bucket=environ.get("BOOK_BUCKET") or cls.book_bucket,
            write_quorum=write_quorum,
            workers=_int(environ, "WORKERS", cls.workers, minimum=1),
            threads=_int(environ, "THREADS", cls.threads, minimum=1),
            http_timeout=_float(environ, "HTTP_TIMEOUT", cls.http_timeout),
            locate_timeout=_float(environ, "LOCATE_TIMEOUT", cls.locate_timeout),
            heartbeat_interval=_float(environ, "HEARTBEAT_INTERVAL", cls.heartbeat_interval),
            server_ttl=_float(environ, "SERVER_TTL", cls.server_ttl),
            temp_ttl=_float(environ, "TEMP_TTL", cls.temp_ttl),
            cluster_secret=environ.get("CLUSTER_SECRET") or "",
            log_level=environ.get("LOG_LEVEL") or cls.log_level,
            log_format=_choice(environ, "LOG_FORMAT", ("text", "json")),
            request_metrics=_choice(environ, "METRICS", ("on", "off")) == "on",
            metrics_dir=(Path(environ["PROMETHEUS_MULTIPROC_DIR"])
                         if environ.get("PROMETHEUS_MULTIPROC_DIR") else None),
            worker_status_address=(_address(environ, "WORKER_STATUS_ADDRESS", None)
                                   if environ.get("WORKER_STATUS_ADDRESS") else ""),
            task_queue=environ.get("TASK_QUEUE") or cls.task_queue,
            task_max_attempts=_int(environ, "TASK_MAX_ATTEMPTS", cls.task_max_attempts,
                                   minimum=1),
            task_retry_delay=_float(environ, "TASK_RETRY_DELAY", cls.task_retry_delay),
            stored_hook_url=environ.get("STORED_HOOK_URL") or None,
            orphan_grace=_float(environ, "ORPHAN_GRACE", cls.orphan_grace),
            garbage_ttl=_float(environ, "GARBAGE_TTL", cls.garbage_ttl),
            gc_grace=_float(environ, "GC_GRACE", cls.gc_grace),
            gc_interval=_float(environ, "GC_INTERVAL", cls.gc_interval),
            s3_listen_address=(_address(environ, "S3_LISTEN_ADDRESS", None)
                               if environ.get("S3_LISTEN_ADDRESS") else ""),
            s3_domain=environ.get("S3_DOMAIN") or "",
            s3_region=environ.get("S3_REGION") or cls.s3_region,
            s3_access_key=environ.get("S3_ACCESS_KEY") or cls.s3_access_key,
            s3_secret_key=environ.get("S3_SECRET_KEY") or cls.s3_secret_key,
            s3_credentials_file=(Path(environ["S3_CREDENTIALS_FILE"])
                                 if environ.get("S3_CREDENTIALS_FILE") else None),
            min_part_size=_int(environ, "S3_MIN_PART_SIZE", cls.min_part_size, minimum=1),
            multipart_ttl=_float(environ, "MULTIPART_TTL", cls.multipart_ttl),
            admin_token=environ.get("ADMIN_TOKEN") or "",
            origin_url=environ.get("ORIGIN_URL") or "",
            origin_connect_timeout=_float(environ, "ORIGIN_CONNECT_TIMEOUT",
                                          cls.origin_connect_timeout),
            origin_read_timeout=_float(environ, "ORIGIN_READ_TIMEOUT", cls.origin_read_timeout),
            origin_max_size=_int(environ, "ORIGIN_MAX_SIZE", cls.origin_max_size),
            origin_negative_ttl=_float(environ, "ORIGIN_NEGATIVE_TTL", cls.origin_negative_ttl),
            origin_breaker_failures=_int(environ, "ORIGIN_BREAKER_FAILURES",
                                         cls.origin_breaker_failures, minimum=1),
            origin_breaker_reset=_float(environ, "ORIGIN_BREAKER_RESET",
                                        cls.origin_breaker_reset),
            origin_max_redirects=_int(environ, "ORIGIN_MAX_REDIRECTS",
                                      cls.origin_max_redirects),
            origin_ca_file=(Path(environ["ORIGIN_CA_FILE"])
                            if environ.get("ORIGIN_CA_FILE") else None),
            book_api_token=environ.get("BOOK_API_TOKEN") or "",
            faults_exchange=environ.get("FAULTS_EXCHANGE") or cls.faults_exchange,
            faults_sync_interval=_float(environ, "FAULTS_SYNC_INTERVAL",
                                        cls.faults_sync_interval),
            cluster_mac_skew=_float(environ, "CLUSTER_MAC_SKEW", cls.cluster_mac_skew),
            data_reads_open=_flag(environ, "DATA_READS_OPEN"),
            client_timeout=_float(environ, "CLIENT_TIMEOUT", cls.client_timeout),
            client_min_rate=_int(environ, "CLIENT_MIN_RATE", cls.client_min_rate),
        )

    def require_storage_root(self) -> Path:
        """The data server's root; it cannot run without one."""
        if self.storage_root is None:
            raise ConfigError("STORAGE_ROOT is required for a data server")
        return self.storage_root
