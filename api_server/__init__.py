"""Api server: the stateless front end of the book's REST API.

``create_app`` runs inside each gunicorn worker: it opens the metadata store, starts the
RabbitMQ thread (heartbeats in, locates out) and registers the blueprints.  Tests pass their
own collaborators (``metadata``, ``bus``, ``registry``, ``locator``, ``client``).

Deferred work goes to the durable task queue (``lib/tasks.py``) for ``scripts.worker``:
repairs (run in process instead when no worker consumes the queue or the broker cannot be
reached) and "object stored" events.
"""
from __future__ import annotations

import dataclasses
import logging

from flask import Flask, jsonify

from api_server import errors, locate, objects, uploads, versions
from api_server.repair import Repairer
from lib.config import Config
from lib.hashing import quote_hash
from lib.locator import Locator
from lib.membership import track_data_servers
from lib.metadata import Metadata, MetadataStore, open_store
from lib.objectstream import DataServerClient
from lib.rabbitmq import Bus
from lib.registry import DataServerRegistry
from lib.tasks import Task, TaskPublisher, TaskQueues
from lib.webapp import create_flask_app

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ApiServer:
    config: Config
    metadata: MetadataStore
    registry: DataServerRegistry
    locator: Locator
    client: DataServerClient
    bus: Bus
    repairer: Repairer
    tasks: TaskPublisher | None = None

    def request_repair(self, hash_: str, size: int, missing: list[int],
                       damaged: dict[int, str] | None = None) -> None:
        """Have missing or damaged shards rebuilt, without making the client wait."""
        log.warning("object %s (%d bytes) needs shards %s rebuilt", hash_, size,
                    sorted(set(missing) | set(damaged or {})))
        self.locator.forget(hash_)
        if self.tasks is not None and self.tasks.has_worker():
            if self.tasks.publish(Task.repair(hash_, size, damaged), dedup=hash_):
                return
            log.warning("task queue unreachable: repairing %s in this process", hash_)
        self.repairer.request(hash_, size, damaged)

    def add_version(self, name: str, size: int, hash_: str) -> Metadata:
        """Write a new version of stored content and queue its "object stored" event (best
        effort: an unreachable broker is logged, never the client's problem)."""
        meta = self.metadata.add_version(name, size, hash_)
        if self.tasks is not None and not self.tasks.publish(
                Task.stored(meta.name, meta.version, meta.hash, meta.size)):
            log.warning("task queue unreachable: no stored event for %r version %d",
                        name, meta.version)
        log.info("stored %r version %d (%d bytes, %s)", name, meta.version, size, hash_)
        return meta

    def after_failed_version(self, hash_: str) -> None:
        """Compensate a PUT whose metadata write failed: drop its now-orphaned shards."""
        try:
            if self.metadata.has_hash(hash_):
                return                   # another version references the content: keep it
            for address in set(self.locator.locate(hash_).values()):
                self.client.delete_shards(address, quote_hash(hash_))
        except Exception:
            log.exception("could not remove orphaned shards of %s; the orphan collector will",
                          hash_)


def create_app(config: Config | None = None, *, metadata: MetadataStore | None = None,
               bus: Bus | None = None, registry: DataServerRegistry | None = None,
               client: DataServerClient | None = None) -> Flask:
    config = config or Config.from_env()
    metadata = metadata or open_store(config)
    registry = registry or DataServerRegistry(config.server_ttl)
    start_bus = bus is None
    bus = bus or Bus(config.rabbitmq_server, f"api-{config.listen_address}",
                     exchanges=(config.api_exchange, config.data_exchange))
    track_data_servers(bus, config, registry)
    locator = Locator(bus, config, registry)
    client = client or DataServerClient(config.http_timeout)
    api = ApiServer(config, metadata, registry, locator, client, bus,
                    Repairer(client, registry, locator),
                    TaskPublisher(bus, TaskQueues.from_config(config),
                                  check_interval=config.heartbeat_interval))
    api.repairer.report = api.request_repair

    app = create_flask_app(__name__, errors.STATUS)
    app.extensions["tessera.api"] = api
    for blueprint in (objects.bp, versions.bp, locate.bp, uploads.bp):
        app.register_blueprint(blueprint)

    @app.get("/health")
    def health():
        return jsonify(status="ok", role="api_server", address=config.listen_address,
                       data_servers=len(registry.live()), metadata=metadata.check(),
                       rabbitmq=bus.connected.is_set())

    if start_bus:
        bus.start()

    def stop() -> None:
        api.repairer.close()
        bus.stop()
        metadata.close()

    app.extensions["tessera.stop"] = stop
    return app
