"""Object metadata: which versions of a name exist, and which content hash each one points at.

The book keeps this in Elasticsearch only and talks to it with hand-built REST calls (BOOK §2,
W7, W20-W22).  Here one interface, ``MetadataStore``, has two backends that pass one conformance
suite: SQLite (the embedded default, fine for several api processes on one host) and
Elasticsearch (``ES_SERVER``, for a multi-host cluster).  Callers only ever see this module;
``sqlite3`` and ``elasticsearch`` are imported by their backend modules alone, and only when
that backend is chosen.
"""
from __future__ import annotations

import abc
import dataclasses
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from lib.config import Config

log = logging.getLogger(__name__)

#: Sizes and versions are stored as signed 64-bit integers by both backends.
MAX_SIZE = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class Metadata:
    """One version of one object name.

    ``hash`` is the raw standard-base64 SHA-256 of the content, or ``""`` for a delete marker
    (which also has ``size`` 0).
    """

    name: str
    version: int
    size: int
    hash: str

    @property
    def is_delete_marker(self) -> bool:
        return self.hash == ""

    def to_book_json(self) -> dict[str, object]:
        """The book's ``/versions/`` record, with Go-style capitalised keys."""
        return {"Name": self.name, "Version": self.version, "Size": self.size, "Hash": self.hash}


class MetadataError(Exception):
    """The metadata backend is unreachable, refused a request, or answered something we do not
    understand.  Callers should answer 5xx (or retry later), never guess."""


class VersionConflict(MetadataError):
    """A new version could not be allocated after a bounded number of attempts."""


def check_text(value: str, what: str, allow_empty: bool = False) -> None:
    """Reject a name or hash that no backend can store: not a str, empty, or not encodable as
    UTF-8 (lone surrogates).  Raises ValueError, which callers should answer with 400."""
    if not isinstance(value, str) or (value == "" and not allow_empty):
        raise ValueError(f"{what} must be a non-empty str, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode text: {value!r}") from None


def valid_version(version: int) -> bool:
    """Whether ``version`` can exist at all (stored versions are in [1, 2**63))."""
    return 1 <= version <= MAX_SIZE


def validate_new_version(name: str, size: int, hash: str) -> None:
    """Reject arguments to ``add_version`` that no backend may store (a programming error)."""
    check_text(name, "object name")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        raise ValueError(f"size must be an int in [0, 2**63), got {size!r}")
    check_text(hash, "hash", allow_empty=True)
    if hash == "" and size != 0:
        raise ValueError("a delete marker (empty hash) must have size 0")


class MetadataStore(abc.ABC):
    """Versioned name -> (size, hash) records.  Every implementation is thread-safe.

    Methods raise ``ValueError`` for a name or hash that cannot be stored at all (empty, or
    not UTF-8 encodable) and ``MetadataError`` when the backend fails.

    Versions of a name start at 1 and are allocated by ``add_version`` atomically: concurrent
    callers, in threads or in separate processes sharing a backend, never receive the same
    number and never lose a version.  Versions need not be contiguous once ``delete_version``
    has been used.  Names are arbitrary non-empty Unicode text stored exactly as given.
    """

    @abc.abstractmethod
    def latest(self, name: str) -> Metadata | None:
        """The highest version of ``name`` (a delete marker counts), or None if it has none."""

    @abc.abstractmethod
    def get(self, name: str, version: int) -> Metadata | None:
        """That exact version, or None when it does not exist (including ``version < 1``)."""

    @abc.abstractmethod
    def add_version(self, name: str, size: int, hash: str) -> Metadata:
        """Store a new version numbered latest+1 (1 for a new name) and return it.

        ``hash == ""`` with ``size == 0`` adds a delete marker.  Raises ``VersionConflict`` if
        allocation keeps losing races, ``MetadataError`` if the backend fails.
        """

    @abc.abstractmethod
    def delete_version(self, name: str, version: int) -> None:
        """Remove one version record; removing a missing one is not an error."""

    @abc.abstractmethod
    def versions(
        self, name: str | None = None, offset: int = 0, limit: int = 1000
    ) -> list[Metadata]:
        """One page of records sorted by (name, version); all names when ``name`` is None."""

    @abc.abstractmethod
    def has_hash(self, hash: str) -> bool:
        """Whether any version of any name references ``hash`` (False for ``""``)."""

    @abc.abstractmethod
    def hash_size(self, hash: str) -> int | None:
        """The size recorded for ``hash`` by any version, or None if no version references it."""

    @abc.abstractmethod
    def names_with_versions_over(
        self, count: int, after: str | None = None, limit: int = 1000
    ) -> list[tuple[str, list[int]]]:
        """Names having more than ``count`` versions, sorted, strictly after ``after``, at most
        ``limit`` of them, each with its sorted list of versions.

        Page by passing the last name returned as ``after``; an empty list means done.
        """

    @abc.abstractmethod
    def hashes(self, after: str | None = None, limit: int = 1000) -> list[str]:
        """Distinct non-empty hashes, sorted, strictly after ``after``, at most ``limit``."""

    @abc.abstractmethod
    def check(self) -> str:
        """Verify the backend answers sensibly; return a short description of it.

        Raises ``MetadataError`` otherwise.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections.  The store must not be used afterwards."""

    def __enter__(self) -> "MetadataStore":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_page(offset: int, limit: int) -> None:
    """Reject paging arguments that no backend may honour (a programming error)."""
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


def open_store(config: "Config") -> MetadataStore:
    """The store the configuration selects: Elasticsearch when ``ES_SERVER`` is set, else the
    SQLite file ``METADATA_DB`` (its parent directories are created)."""
    if config.es_server:
        from lib.metadata.elasticsearch import ElasticsearchStore

        log.info("metadata: elasticsearch at %s, index %s", config.es_server, config.es_index)
        return ElasticsearchStore(
            config.es_server, config.es_index, timeout=config.http_timeout
        )
    from lib.metadata.sqlite import SqliteStore

    path = config.metadata_db
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("metadata: sqlite at %s", path)
    return SqliteStore(path)


__all__ = [
    "Metadata",
    "MetadataError",
    "MetadataStore",
    "VersionConflict",
    "open_store",
]
