"""An in-process cluster for the management API's tests: real data servers on 127.0.1.x in
threads, a real SQLite store, an api server app; the bus is not started, so heartbeats are
fed to the registry by hand and a locate asks each data server directly."""
from __future__ import annotations

import threading

from werkzeug.serving import make_server

import api_server
import data_server
from lib.config import Config
from lib.errors import ObjectStoreError
from lib.hashing import quote_hash
from lib.rabbitmq import Bus
from lib.registry import DataServerRegistry
from lib.rs.params import ALL_SHARDS
from tests.cluster_mac import SECRET

TOKEN = "inspect-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Cluster:
    """Data servers in threads and one api server app around them."""

    def __init__(self, tmp_path, **settings):
        self.servers = []
        self.roots = {}
        for i in range(1, ALL_SHARDS + 1):
            root = tmp_path / f"d{i}"
            app = data_server.create_app(
                Config(listen_address=f"127.0.1.{i}:1", storage_root=root,
                       cluster_secret=SECRET), bus=None)
            server = make_server(f"127.0.1.{i}", 0, app, threaded=True)
            address = f"127.0.1.{i}:{server.server_port}"
            app.extensions["tessera.node"].config = Config(listen_address=address,
                                                           storage_root=root,
                                                           cluster_secret=SECRET)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append((server, address))
            self.roots[address] = root
        self.registry = DataServerRegistry(ttl=600)
        self.heartbeat()
        config = Config(listen_address="127.0.2.1:1", metadata_db=tmp_path / "md.db",
                        admin_token=TOKEN, rabbitmq_server="amqp://guest:guest@127.0.0.1:9/",
                        cluster_secret=SECRET,
                        http_timeout=5, **settings)
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
