"""What an operator sees of the cluster: totals, data servers, one object's shards.

Plain functions of an :class:`api_server.ApiServer` (no Flask), shared by the management
API's routes and the web console.  Their collaborators: the metadata store (counts, versions,
the data servers ever seen), the registry (heartbeats), the data servers themselves (their
``/stats`` and ``/verify``, data_server/inspect.py), the locator and the task queue.

A data server that stops heartbeating vanishes from the registry; so that it is still listed,
as "down", every data server seen is remembered in a metadata record (kind ``data_server``),
which survives api server restarts.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from lib.errors import NoSuchKey, NoSuchVersion, ObjectStoreError
from lib.hashing import quote_hash
from lib.metadata import Version
from lib.objects import prefetch
from lib.rabbitmq import BrokerError, QueueClient
from lib.rs.params import ALL_SHARDS
from lib.tasks import TaskQueues

if TYPE_CHECKING:  # pragma: no cover - typing only
    from api_server import ApiServer

log = logging.getLogger(__name__)

#: The metadata record kind under which every data server ever seen is remembered.
DATA_SERVER_RECORD = "data_server"
#: Data servers asked at once for their stats or to verify a shard.
PARALLEL = 8


def _ask(calls: list) -> list:
    """Run the zero-argument ``calls`` in parallel; each one's result, or the
    ObjectStoreError it raised (bounded by the data-server client's timeout)."""
    def run(call):
        try:
            return call()
        except ObjectStoreError as exc:
            return exc

    if not calls:
        return []
    with ThreadPoolExecutor(min(PARALLEL, len(calls)), thread_name_prefix="inspect") as pool:
        return list(pool.map(run, calls))


# -- data servers --------------------------------------------------------------------------------

def _remember(api: "ApiServer", seen: list[str]) -> dict[str, dict[str, Any]]:
    """Every data server ever seen, by address (recording the new ones)."""
    known = dict(api.metadata.records(DATA_SERVER_RECORD))
    for address in seen:
        if address not in known:
            known[address] = {"first_seen": time.time()}
            api.metadata.put_record(DATA_SERVER_RECORD, address, known[address])
    return known


def nodes(api: "ApiServer") -> list[dict[str, Any]]:
    """Every data server ever seen: address, state ("live"/"down"), last heartbeat age (s,
    None when this api worker never heard it), shards, bytes, disk free (None when down)."""
    live = api.registry.live()
    heard = api.registry.heard()
    known = _remember(api, sorted(set(live) | set(heard)))
    answers = dict(zip(live, _ask([lambda a=a: api.client.stats(a) for a in live])))
    found = []
    for address in sorted(known):
        answer = answers.get(address)
        ok = isinstance(answer, dict)
        if isinstance(answer, ObjectStoreError):
            log.warning("data server %s: no stats: %s", address, answer)
        found.append({
            "address": address,
            "state": "live" if ok else "down",
            "last_heartbeat_age": round(heard[address], 3) if address in heard else None,
            "shards": int(answer["shards"]) if ok else None,
            "bytes": int(answer["bytes"]) if ok else None,
            "disk_free": int(answer["disk_free"]) if ok else None,
            "disk_total": int(answer["disk_total"]) if ok else None,
            "corrupt_shards": int(answer.get("corrupt_shards", 0)) if ok else None,
        })
    return found


def _queue_counts(api: "ApiServer") -> tuple[int | None, int | None]:
    """(tasks waiting, dead letters); None for a queue that does not exist (no worker ever
    ran) or when the broker cannot be reached."""
    queues = TaskQueues.from_config(api.config)
    try:
        with QueueClient(api.config.rabbitmq_server, f"inspect-{api.config.listen_address}"
                         ) as client:
            counts = [client.counts(name) for name in (queues.name, queues.dead)]
    except BrokerError as exc:
        log.warning("task queue: %s", exc)
        return None, None
    return tuple(None if c is None else c[0] for c in counts)  # type: ignore[return-value]


def stats(api: "ApiServer", servers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Totals over the cluster: what the metadata holds, what the live data servers hold on
    disk, the task queue, the repairs (done and failed: every process's, from the repair
    log's counters; pending: this api worker's and the task queue's), and the origin
    prefetch jobs' keys per state.  ``servers``: :func:`nodes`, when the caller has it."""
    usage = api.metadata.usage()
    servers = nodes(api) if servers is None else servers
    live = [s for s in servers if s["state"] == "live"]
    physical = sum(s["bytes"] for s in live)
    depth, dead = _queue_counts(api)
    local = api.repairs.local
    done, failed = api.metadata.repair_counts()
    return {
        "buckets": usage.buckets,
        "objects": usage.objects,
        "versions": usage.versions,
        "logical_bytes": usage.logical_bytes,
        "content_bytes": usage.content_bytes,
        "physical_bytes": physical,
        "dedup_ratio": round(usage.logical_bytes / usage.content_bytes, 4)
        if usage.content_bytes else None,
        "data_servers_live": len(live),
        "data_servers_expected": max(len(servers), ALL_SHARDS),
        "queue_depth": depth,
        "dead_letters": dead,
        "repairs": {"done": done, "failed": failed,
                    "pending": local.pending() + (depth or 0)},
        "corrupt_records": sum(s["corrupt_shards"] for s in live),
        "prefetch": prefetch.summary(api.metadata),
    }


def recent_repairs(api: "ApiServer", limit: int = 100) -> list[dict[str, Any]]:
    """The newest finished repairs of the whole cluster, newest first (the repair log)."""
    return [repair.to_json() for repair in api.metadata.repairs(limit)]


# -- one object ----------------------------------------------------------------------------------

def _version_json(version: Version) -> dict[str, Any]:
    return {"version_id": version.version_id, "number": version.number, "size": version.size,
            "hash": version.hash or None, "etag": version.etag or None,
            "content_type": version.meta.content_type or None,
            "last_modified": version.created, "is_latest": version.is_latest,
            "delete_marker": version.delete_marker, "parts": version.parts}


def shards(api: "ApiServer", hash_: str) -> list[dict[str, Any]]:
    """Each shard of content ``hash_``: index, data server (None when no live server holds
    it), present, verified (read in full and checked on the data server, now)."""
    copies = api.locator.locate_copies(hash_)
    holders = [(i, copies[i][0]) if copies.get(i) else (i, None) for i in range(ALL_SHARDS)]
    quoted = quote_hash(hash_)
    checks = _ask([lambda i=i, a=a: api.client.verify_shard(a, f"{quoted}.{i}")
                   for i, a in holders if a is not None])
    verdicts = iter(checks)
    found = []
    for index, address in holders:
        verdict = next(verdicts) if address is not None else None
        if isinstance(verdict, ObjectStoreError):
            log.warning("shard %s.%d on %s: %s", quoted, index, address, verdict)
            verdict = False
        found.append({"index": index, "data_server": address,
                      "present": verdict is not None, "verified": verdict is True})
    return found


def object_info(api: "ApiServer", bucket: str, key: str,
                version_id: str | None = None) -> dict[str, Any]:
    """An object's versions (newest first) and the shards of the chosen version (the
    latest by default): for a multipart object, those of each part.

    :raises NoSuchKey, NoSuchVersion, NoSuchBucket:
    """
    api.layer.bucket(bucket)
    version = api.metadata.version(bucket, key, version_id)
    if version is None:
        raise (NoSuchVersion(f"no version {version_id!r} of {key!r}") if version_id
               else NoSuchKey(f"no object {key!r} in bucket {bucket!r}"))
    versions = api.metadata.versions_page(bucket, key, None, key + "\0", 1000)
    info: dict[str, Any] = {"bucket": bucket, "key": key,
                            "versions": [_version_json(v) for v in versions],
                            "version": _version_json(version), "shards": [], "parts": []}
    if version.delete_marker:
        return info
    if version.parts:
        info["parts"] = [{"number": part.number, "hash": part.hash, "size": part.size,
                          "etag": part.etag, "shards": shards(api, part.hash)}
                         for part in api.metadata.parts(version)]
    else:
        info["shards"] = shards(api, version.hash)
    return info
