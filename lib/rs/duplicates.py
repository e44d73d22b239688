"""Extra copies of a shard: which one to keep, and collecting the others.

A data server that was away comes back with the shards it held, while repair has rebuilt
them elsewhere meanwhile: the same shard index is then stored twice (BOOK W8's concurrent
uploads of equal content do the same).  Nothing else ever reclaims the extra copies, so the
object scanner, after verifying every copy (``lib/rs/verify.py``), keeps one good copy of each
index and moves the other good ones to garbage/ once they are older than a grace period (an
upload or repair may be placing them right now).  It never moves the kept copy, and moves
nothing of an index whose kept copy it cannot see any more.
"""
from __future__ import annotations

import collections
import logging

from lib.errors import ObjectStoreError
from lib.hashing import quote_hash
from lib.objectstream import DataServerClient

log = logging.getLogger(__name__)


def choose_keepers(good: dict[int, list[str]]) -> dict[int, str]:
    """The copy of each shard index to keep, from ``good`` (index -> servers holding a good
    copy): spread over as many servers as can be (one holding two shards of an object loses
    both at once), ties to the lowest address, so every scan of the same copies keeps the
    same ones."""
    keep = {i: holders[0] for i, holders in good.items() if len(holders) == 1}
    load = collections.Counter(keep.values())
    for index in sorted(i for i, holders in good.items() if len(holders) > 1):
        chosen = min(good[index], key=lambda address: (load[address], address))
        keep[index] = chosen
        load[chosen] += 1
    return dict(sorted(keep.items()))


def extra_copies(good: dict[int, list[str]], keep: dict[int, str]) -> list[tuple[int, str]]:
    """``(index, address)`` of every good copy but the kept one."""
    return [(i, a) for i, holders in sorted(good.items()) for a in holders if a != keep[i]]


def collect_extra_copies(client: DataServerClient, hash_: str, keep: dict[int, str],
                         extra: list[tuple[int, str]], grace: float) -> tuple[int, int]:
    """Move the ``extra`` copies older than ``grace`` seconds to garbage/ (their servers
    check the age); returns (moved, kept because younger or unreachable)."""
    moved = kept = 0
    held: dict[int, bool] = {}
    for index, address in extra:
        name = f"{quote_hash(hash_)}.{index}"
        if index not in held:
            held[index] = _still_held(client, keep[index], name)
        if not held[index]:
            kept += 1                    # it may be the last good copy now
            continue
        try:
            m, k = client.collect(address, hash_, grace, index=index)
        except ObjectStoreError as exc:
            log.warning("could not collect the extra copy of %s on %s: %s", name, address, exc)
            kept += 1
            continue
        moved, kept = moved + m, kept + k
    return moved, kept


def _still_held(client: DataServerClient, address: str, name: str) -> bool:
    """Whether the kept copy is still there, just before its extra copies go."""
    try:
        if client.has_shard(address, name):
            return True
        why = "it is gone"
    except ObjectStoreError as exc:
        why = str(exc)
    log.warning("extra copies of %s kept: the copy to keep on %s cannot be seen (%s)",
                name, address, why)
    return False
