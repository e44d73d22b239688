"""api_server/admin/inspect.py in process, on tests/functional/inproc_cluster.py."""
from __future__ import annotations

import pytest

from api_server.admin import inspect
from lib.errors import NoSuchKey
from lib.hashing import quote_hash
from lib.metadata import MetadataError, RepairRecord
from lib.objects import Expect
from lib.rs.params import ALL_SHARDS


def put(api, key: str, data: bytes, bucket: str = "book"):
    return api.layer.put(bucket, key, iter([data]), Expect(size=len(data), want_md5=True))


def test_object_info_shows_six_verified_shards_then_a_missing_one(admin_cluster):
    cluster = admin_cluster
    api = cluster.api
    put(api, "a/b.txt", b"first")
    version = put(api, "a/b.txt", b"hello shards" * 1000)
    info = inspect.object_info(api, "book", "a/b.txt")
    assert [v["number"] for v in info["versions"]] == [2, 1]
    assert info["version"]["hash"] == version.hash and info["version"]["size"] == 12000
    assert [s["index"] for s in info["shards"]] == list(range(ALL_SHARDS))
    assert all(s["present"] and s["verified"] for s in info["shards"])
    gone = info["shards"][2]["data_server"]
    cluster.kill(gone)
    after = inspect.object_info(api, "book", "a/b.txt")
    missing = [s for s in after["shards"] if not s["present"]]
    assert [s["index"] for s in missing] == [2] and missing[0]["data_server"] is None
    older = inspect.object_info(api, "book", "a/b.txt", info["versions"][1]["version_id"])
    assert older["version"]["number"] == 1
    with pytest.raises(NoSuchKey):
        inspect.object_info(api, "book", "nothing")


def test_a_corrupt_shard_is_present_but_not_verified(admin_cluster):
    cluster = admin_cluster
    version = put(cluster.api, "c", b"x" * 5000)
    (path,) = [p for root in cluster.roots.values()
               for p in (root / "objects").glob(f"{quote_hash(version.hash)}.0.*")]
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    shard0 = inspect.object_info(cluster.api, "book", "c")["shards"][0]
    assert shard0["present"] and not shard0["verified"]
    assert inspect.stats(cluster.api)["corrupt_records"] == 1


def test_nodes_and_stats(admin_cluster):
    cluster = admin_cluster
    api = cluster.api
    put(api, "one", b"1" * 10_000)
    put(api, "two", b"1" * 10_000)       # the same content: stored once
    listed = inspect.nodes(api)
    assert [n["address"] for n in listed] == sorted(cluster.addresses)
    assert all(n["state"] == "live" and n["shards"] == 1 and n["bytes"] > 0
               and n["disk_free"] > 0 for n in listed)
    totals = inspect.stats(api)
    assert totals["objects"] == 2 and totals["versions"] == 2 and totals["buckets"] == 1
    assert totals["logical_bytes"] == 20_000 and totals["dedup_ratio"] == 2.0
    assert totals["physical_bytes"] == sum(n["bytes"] for n in listed)
    assert totals["data_servers_live"] == totals["data_servers_expected"] == ALL_SHARDS
    assert totals["queue_depth"] is None and totals["repairs"]["failed"] == 0
    down = cluster.addresses[0]
    cluster.kill(down)
    states = {n["address"]: n["state"] for n in inspect.nodes(api)}
    assert states[down] == "down" and list(states.values()).count("live") == ALL_SHARDS - 1
    assert inspect.stats(api)["data_servers_live"] == ALL_SHARDS - 1


def _drop_shard(cluster, hash_: str, index: int) -> None:
    (path,) = [p for root in cluster.roots.values()
               for p in (root / "objects").glob(f"{quote_hash(hash_)}.{index}.*")]
    path.unlink()


def test_repairs_are_recorded_cluster_wide_and_counted_by_stats(admin_cluster):
    cluster = admin_cluster
    api = cluster.api
    version = put(api, "mended", b"m" * 9000)
    _drop_shard(cluster, version.hash, 3)
    api.repairs.local._repair(version.hash, version.size, {})      # as its thread runs it
    # Another process's repair (the task worker's), recorded in the same store.
    api.metadata.record_repair(RepairRecord.finished("other-hash", [], "Boom: gone",
                                                     by="worker"))
    (worker, mine) = inspect.recent_repairs(api, 10)
    assert (mine["hash"], mine["shards"], mine["outcome"], mine["error"], mine["by"]) == (
        version.hash, [3], "done", None, api.config.listen_address)
    assert (worker["outcome"], worker["error"], worker["by"]) == ("failed", "Boom: gone",
                                                                 "worker")
    assert worker["seq"] > mine["seq"] and mine["time"] > 0
    assert inspect.stats(api)["repairs"] == {"done": 1, "failed": 1, "pending": 0}
    assert all(s["present"] for s in inspect.object_info(api, "book", "mended")["shards"])


def test_a_failed_repair_is_recorded_and_a_failing_log_never_fails_a_repair(
        admin_cluster, monkeypatch, caplog):
    cluster = admin_cluster
    api = cluster.api
    version = put(api, "doomed", b"d" * 9000)
    for address in cluster.addresses[:3]:
        cluster.kill(address)
    api.repairs.local._repair(version.hash, version.size, {})
    (failed,) = inspect.recent_repairs(api)
    assert failed["outcome"] == "failed" and "cannot be repaired" in failed["error"]

    def broken(repair):
        raise MetadataError("the store is away")

    monkeypatch.setattr(api.metadata, "record_repair", broken)
    api.repairs.local._repair(version.hash, version.size, {})
    assert api.repairs.local.pending() == 0
    assert "not recorded in the repair log: the store is away" in caplog.text
    monkeypatch.undo()
    assert inspect.stats(api)["repairs"]["failed"] == 1
