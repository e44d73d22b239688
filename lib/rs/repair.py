"""Rebuild missing or damaged shards of an object onto live data servers.

Reads the object block by block from any DATA_SHARDS shards (RSGetStream), reconstructs the
wanted shards' records, streams them to new temp objects (RSPutStream) and commits them.  New
homes are data servers holding no shard of the object when there are enough; otherwise any
other live server, because a shard doubled up on one server still protects better than none.

:func:`repair_object` is the whole repair of one object (locate, retire damaged copies,
rebuild), as the api server's background repairer and the task worker run it; the object
scanner, which has just verified every copy, retires and rebuilds with :func:`retire` and
:func:`rebuild`.
"""
from __future__ import annotations

import logging

from lib import metrics
from lib.errors import NotEnoughDataServers, ObjectStoreError
from lib.hashing import quote_hash
from lib.locator import Locator
from lib.objectstream import DataServerClient
from lib.registry import DataServerRegistry
from lib.rs import layout
from lib.rs.codec import get_codec
from lib.rs.get import RSGetStream
from lib.rs.params import ALL_SHARDS, DATA_SHARDS
from lib.rs.put import RSPutStream

log = logging.getLogger(__name__)


def choose_homes(registry: DataServerRegistry, locations: dict[int, str],
                 missing: list[int]) -> dict[int, str]:
    """Shard index -> live data server for each missing shard (as many as can be placed)."""
    holders = set(locations.values())
    homes = registry.choose(len(missing), exclude=holders)
    if len(homes) < len(missing):
        homes += registry.choose(len(missing) - len(homes), exclude=set(homes))
    return dict(zip(missing, homes))


def rebuild(client: DataServerClient, registry: DataServerRegistry,
            locations: dict[int, str], hash_: str, size: int) -> dict[int, str]:
    """Rebuild every shard index not in ``locations``; returns the new shard -> address."""
    missing = [i for i in range(ALL_SHARDS) if i not in locations]
    if not missing:
        return {}
    homes = choose_homes(registry, locations, missing)
    if not homes:
        raise NotEnoughDataServers(f"no live data server can take shards {missing} of {hash_}")
    codec = get_codec()
    wanted = sorted(homes)
    with RSPutStream(client, homes, hash_, size, quorum=1, registry=registry) as put:
        if size:
            source = RSGetStream(client, locations, hash_, size)
            try:
                for block in range(layout.block_count(size)):
                    fragments = source.fragments(block)
                    rebuilt = codec.reconstruct(fragments, wanted)
                    put.write_records({i: layout.seal(f) for i, f in rebuilt.items()})
            finally:
                source.close()
        put.finish(client.timeout)
        committed = put.commit()
    log.info("rebuilt shards %s of %s on %s", sorted(committed), hash_, committed)
    return committed


def retire(client: DataServerClient, hash_: str, copies) -> None:
    """Move the damaged ``(shard index, address)`` copies to their servers' garbage/, so no
    locate finds them again (one truncated at a record boundary looks whole to its server)."""
    for index, address in sorted(copies):
        try:
            client.delete_shards(address, f"{quote_hash(hash_)}.{index}")
        except ObjectStoreError as exc:
            log.warning("could not retire damaged shard %d of %s on %s: %s",
                        index, hash_, address, exc)


def repair_object(client: DataServerClient, registry: DataServerRegistry, locator: Locator,
                  hash_: str, size: int, damaged: dict[int, str]) -> dict[int, str]:
    """Locate every copy of ``hash_``'s shards, retire the copies that failed a read,
    rebuild what is missing.

    A damaged copy is moved to its server's garbage first (it may be truncated at a record
    boundary, which its own server cannot see), so a rebuild never lands beside it; it is
    retired even when another copy of its shard is held elsewhere (a server that came back).

    :returns: shard index -> address of every shard rebuilt (empty: nothing was missing).
    :raises NotEnoughDataServers: fewer than DATA_SHARDS good shards are left (the object
        cannot be repaired now), or no live data server can take a rebuilt shard.
    """
    metrics.REPAIRS.labels("started").inc()
    try:
        rebuilt = _repair_object(client, registry, locator, hash_, size, damaged)
    except BaseException:
        metrics.REPAIRS.labels("failed").inc()
        raise
    metrics.REPAIRS.labels("done").inc()
    return rebuilt


def _repair_object(client: DataServerClient, registry: DataServerRegistry, locator: Locator,
                   hash_: str, size: int, damaged: dict[int, str]) -> dict[int, str]:
    locator.forget(hash_)
    copies = locator.locate_copies(hash_)
    retired = {(i, a) for i, a in damaged.items() if a in copies.get(i, ())}
    retire(client, hash_, retired)
    locations = {}
    for i, holders in sorted(copies.items()):
        left = [a for a in holders if (i, a) not in retired]
        if left:
            locations[i] = left[0]
    if len(locations) >= ALL_SHARDS:
        return {}
    if len(locations) < DATA_SHARDS:
        raise NotEnoughDataServers(
            f"object {hash_} cannot be repaired: only shards {sorted(locations)} are left")
    try:
        return rebuild(client, registry, locations, hash_, size)
    finally:
        locator.forget(hash_)
