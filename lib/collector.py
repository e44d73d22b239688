"""Orphan collection: shards that no metadata version references go to garbage/.

A shard becomes an orphan when the last version referencing its object is removed (retention,
``scripts/delete_old_metadata.py``) or when its upload committed shards and then never wrote
its metadata (BOOK W6).  Collecting must not race an upload that *will* write its metadata in
a moment, so nothing younger than a grace period is touched, and the age is checked again by
the data server itself at the moment it moves a shard (``POST /garbage/<quoted hash>``).
Files in garbage/ are purged once they have lain there long enough.

Used by ``scripts/delete_orphan_objects.py`` (per data server or for the whole cluster) and by
the worker's ``gc`` tasks, which call the data servers' maintenance routes through
:class:`lib.objectstream.DataServerClient`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from lib.errors import InvalidHash
from lib.hashing import unquote_hash, validate_hash
from lib.locator import Locator
from lib.metadata import MetadataStore
from lib.objectstream import DataServerClient, ShardInfo

log = logging.getLogger(__name__)


def local_shards(root: Path, now: float | None = None) -> Iterator[ShardInfo]:
    """The shard files under ``STORAGE_ROOT/objects``, as the book's per-host tool sees them.

    File names are ``<quoted hash>.<shard index>.<quoted shard hash>``; anything else is not
    ours and is skipped.
    """
    now = time.time() if now is None else now
    with os.scandir(Path(root) / "objects") as entries:
        for entry in entries:
            parts = entry.name.rsplit(".", 2)
            if len(parts) != 3 or not parts[1].isdigit():
                continue
            try:
                hash_ = validate_hash(unquote_hash(parts[0]))
                age = now - entry.stat().st_mtime
            except (InvalidHash, FileNotFoundError):
                continue
            yield ShardInfo(hash_, int(parts[1]), age)


def purge_local_garbage(root: Path, older_than: float, now: float | None = None) -> int:
    """Delete files that have lain in ``STORAGE_ROOT/garbage`` for more than ``older_than``
    seconds (measured from the move, i.e. the ctime)."""
    now = time.time() if now is None else now
    purged = 0
    with os.scandir(Path(root) / "garbage") as entries:
        for entry in entries:
            try:
                if entry.is_file() and now - entry.stat().st_ctime > older_than:
                    os.unlink(entry.path)
                    purged += 1
            except FileNotFoundError:
                pass
    return purged


@dataclasses.dataclass
class Report:
    """What a collection run saw and did."""

    objects: int = 0          # distinct objects looked at
    referenced: int = 0       # still referenced by a version: kept
    young: int = 0            # some shard within the grace period: left alone this time
    orphans: int = 0          # collected
    moved: int = 0            # shard files moved to garbage/
    purged: int = 0           # files purged from garbage/

    def summary(self) -> str:
        return (f"{self.objects} object(s) checked: {self.referenced} referenced, "
                f"{self.young} too young to judge, {self.orphans} orphaned "
                f"({self.moved} shard file(s) moved to garbage/); "
                f"{self.purged} file(s) purged from garbage/")


class OrphanCollector:
    """Decide, object by object, what the data servers may move to garbage/."""

    def __init__(self, metadata: MetadataStore, client: DataServerClient, grace: float):
        self._metadata = metadata
        self._client = client
        self.grace = grace
        self.report = Report()

    def collect(self, shards: dict[str, Iterable[ShardInfo]]) -> None:
        """Collect the orphans among ``shards`` (data server address -> the shards it holds).

        An object is judged once, over all the servers listed: it is left alone if any of
        its shards anywhere is younger than the grace period.  A metadata error propagates:
        a backend we cannot read must stop the run, never be taken for "not referenced"
        (BOOK W21).
        """
        holders: dict[str, dict[str, float]] = {}
        for address, listed in shards.items():
            for shard in listed:
                ages = holders.setdefault(shard.hash, {})
                ages[address] = min(shard.age, ages.get(address, shard.age))
        for hash_, ages in sorted(holders.items()):
            self.report.objects += 1
            if min(ages.values()) < self.grace:
                self.report.young += 1
                continue
            if self._metadata.has_hash(hash_):
                self.report.referenced += 1
                continue
            self.report.orphans += 1
            for address in sorted(ages):
                moved, kept = self._client.collect(address, hash_, self.grace)
                log.info("orphan %s on %s: %d shard(s) moved to garbage, %d kept (younger)",
                         hash_, address, moved, kept)
                self.report.moved += moved


def collect_hash(metadata: MetadataStore, locator: Locator, client: DataServerClient,
                 hash_: str, grace: float) -> int:
    """The ``gc`` task: if no version references ``hash_``, move its shards older than
    ``grace`` seconds to garbage/ on every data server that has some; returns how many."""
    if metadata.has_hash(hash_):
        log.info("gc %s: still referenced, kept", hash_)
        return 0
    locator.forget(hash_)
    moved = kept = 0
    for address in sorted(set(locator.locate(hash_).values())):
        m, k = client.collect(address, hash_, grace)
        moved, kept = moved + m, kept + k
    if moved and metadata.has_hash(hash_):
        log.error("gc %s: a version referencing it was added while its shards were being "
                  "collected; they are in garbage/ on the data servers, run the object "
                  "scanner (and restore them from garbage/ if it cannot repair)", hash_)
    log.info("gc %s: %d shard(s) moved to garbage, %d younger than %.0fs kept",
             hash_, moved, kept, grace)
    return moved
