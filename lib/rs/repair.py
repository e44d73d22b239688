"""Rebuild missing or damaged shards of an object onto live data servers.

Reads the object block by block from any DATA_SHARDS shards (RSGetStream), reconstructs the
wanted shards' records, streams them to new temp objects (RSPutStream) and commits them.  New
homes are data servers holding no shard of the object when there are enough; otherwise any
other live server, because a shard doubled up on one server still protects better than none.
"""
from __future__ import annotations

import logging

from lib.errors import NotEnoughDataServers
from lib.objectstream import DataServerClient
from lib.registry import DataServerRegistry
from lib.rs import layout
from lib.rs.codec import get_codec
from lib.rs.get import RSGetStream
from lib.rs.params import ALL_SHARDS
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
