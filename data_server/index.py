"""ObjectIndex: which shards of which objects this data server holds, in memory.

Rebuilt from ``objects/`` at start and kept current on commit, delete and quarantine, so a
locate is answered without touching the disk.  Keyed by the raw hash; a server may hold
several shard indexes of one object (concurrent uploads of equal content, BOOK W8).
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from data_server.storage import StoredShard


class ObjectIndex:
    def __init__(self, shards: Iterable[StoredShard] = ()):
        self._lock = threading.Lock()
        self._shards: dict[str, dict[int, StoredShard]] = {}
        for shard in shards:
            self.add(shard)

    def add(self, shard: StoredShard) -> StoredShard | None:
        """Record a shard; returns the one it replaces (same object and index), if any."""
        with self._lock:
            held = self._shards.setdefault(shard.name.hash, {})
            previous = held.get(shard.name.index)
            held[shard.name.index] = shard
            return previous if previous is not None and previous.path != shard.path else None

    def remove(self, hash_: str, index: int | None = None,
               path: Path | None = None) -> list[StoredShard]:
        """Forget one shard (or all of an object); ``path`` guards against a newer copy."""
        with self._lock:
            held = self._shards.get(hash_)
            if not held:
                return []
            indexes = list(held) if index is None else [index]
            removed = []
            for i in indexes:
                shard = held.get(i)
                if shard is not None and (path is None or shard.path == path):
                    removed.append(held.pop(i))
            if not held:
                del self._shards[hash_]
            return removed

    def get(self, hash_: str, index: int) -> StoredShard | None:
        with self._lock:
            return self._shards.get(hash_, {}).get(index)

    def ids(self, hash_: str) -> tuple[int, ...]:
        """Shard indexes held of ``hash_`` whose files still exist (a stat each: files
        removed behind the server's back are forgotten, so a locate never over-counts)."""
        with self._lock:
            held = list(self._shards.get(hash_, {}).values())
        gone = [s for s in held if not s.path.exists()]
        for shard in gone:
            self.remove(hash_, shard.name.index, shard.path)
        return tuple(sorted(s.name.index for s in held if s not in gone))

    def __len__(self) -> int:
        with self._lock:
            return sum(len(held) for held in self._shards.values())

    def hashes(self) -> list[str]:
        with self._lock:
            return list(self._shards)
