"""api_server/admin/inspect.py in process: real data servers on 127.0.1.x, a real SQLite
store; the bus is not started, so heartbeats are fed to the registry by hand and a locate asks
each data server directly."""
from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

import api_server
import data_server
from api_server.admin import inspect
from lib.config import Config
from lib.errors import NoSuchKey, ObjectStoreError
from lib.hashing import quote_hash
from lib.objects import Expect
from lib.rabbitmq import Bus
from lib.registry import DataServerRegistry
from lib.rs.params import ALL_SHARDS

TOKEN = "inspect-token"


class Cluster:
    """Data servers in threads and one api server app around them."""

    def __init__(self, tmp_path):
        self.servers = []
        self.roots = {}
        for i in range(1, ALL_SHARDS + 1):
            root = tmp_path / f"d{i}"
            app = data_server.create_app(
                Config(listen_address=f"127.0.1.{i}:1", storage_root=root), bus=None)
            server = make_server(f"127.0.1.{i}", 0, app, threaded=True)
            address = f"127.0.1.{i}:{server.server_port}"
            app.extensions["tessera.node"].config = Config(listen_address=address,
                                                           storage_root=root)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append((server, address))
            self.roots[address] = root
        self.registry = DataServerRegistry(ttl=600)
        self.heartbeat()
        config = Config(listen_address="127.0.2.1:1", metadata_db=tmp_path / "md.db",
                        admin_token=TOKEN, rabbitmq_server="amqp://guest:guest@127.0.0.1:9/",
                        http_timeout=5)
        self.app = api_server.create_app(config, bus=Bus(config.rabbitmq_server, "unused"),
                                         registry=self.registry)
        self.api = self.app.extensions["tessera.api"]
        self.api.locator.locate_copies = self.locate_copies

    @property
    def addresses(self) -> list[str]:
        return [address for _, address in self.servers]

    def heartbeat(self, *, but: str | None = None) -> None:
        for address in self.addresses:
            if address != but:
                self.registry.seen(address)

    def locate_copies(self, hash_: str) -> dict[int, list[str]]:
        copies: dict[int, list[str]] = {}
        for address in self.registry.live():
            for index in range(ALL_SHARDS):
                try:
                    if self.api.client.has_shard(address, f"{quote_hash(hash_)}.{index}"):
                        copies.setdefault(index, []).append(address)
                except ObjectStoreError:
                    self.registry.forget(address, "failed")
        return copies

    def kill(self, address: str) -> None:
        for server, running in self.servers:
            if running == address:
                server.shutdown()
                server.server_close()
        self.registry.forget(address, "killed by the test")

    def close(self) -> None:
        self.app.extensions["tessera.stop"]()
        for server, _ in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def cluster(tmp_path):
    running = Cluster(tmp_path)
    yield running
    running.close()


def put(api, key: str, data: bytes, bucket: str = "book"):
    return api.layer.put(bucket, key, iter([data]), Expect(size=len(data), want_md5=True))


def test_object_info_shows_six_verified_shards_then_a_missing_one(cluster):
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


def test_a_corrupt_shard_is_present_but_not_verified(cluster):
    version = put(cluster.api, "c", b"x" * 5000)
    (path,) = [p for root in cluster.roots.values()
               for p in (root / "objects").glob(f"{quote_hash(version.hash)}.0.*")]
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    shard0 = inspect.object_info(cluster.api, "book", "c")["shards"][0]
    assert shard0["present"] and not shard0["verified"]
    assert inspect.stats(cluster.api)["corrupt_records"] == 1


def test_nodes_and_stats(cluster):
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
