"""Api server: the stateless front end; every protocol it speaks translates into the object
layer (``lib/objects``).

``create_app`` runs inside each gunicorn worker: it opens the metadata store, starts the
RabbitMQ thread (heartbeats in, locates out), builds the object layer over the erasure-coded
content store, and registers the book API's blueprints.  gunicorn lets the worker take requests only after
``ApiServer.wait_ready`` (``lib/server.py``).  Tests pass their own collaborators
(``metadata``, ``bus``, ``registry``, ``client``).

Deferred work goes to the durable task queue (``lib/tasks.py``) for ``scripts.worker``:
repairs (run in process instead when no worker consumes the queue or the broker cannot be
reached) and "object stored" events.
"""
from __future__ import annotations

import dataclasses
import logging

from flask import Flask, jsonify

from api_server import admin, book_token, console, errors, locate, objects, uploads, versions
from api_server.faults import ApiFaults, wrap_book
from lib import health as checks, metrics
from lib.access import Observed
from lib import memory
from lib.config import Config
from lib.locator import Locator
from lib.membership import track_data_servers, wait_for_data_servers
from lib.metadata import ENABLED, MetadataStore, Version, open_store
from lib.objects import Multipart, ObjectLayer
from lib.objects.erasure import ErasureContentStore
from lib.objects.origin import OriginLayer
from lib.objects.repairs import Repairs
from lib.objectstream import DataServerClient
from lib.rabbitmq import Bus
from lib.registry import DataServerRegistry
from lib.tasks import Task, TaskPublisher, TaskQueues
from lib.webapp import COLLECTORS, create_flask_app

log = logging.getLogger(__name__)

#: Seconds beyond one heartbeat interval a new worker waits for the bus and the data servers
#: before it takes requests anyway.
READY_SLACK = 2.0


@dataclasses.dataclass
class ApiServer:
    """Everything one api worker holds, for the protocol layers."""

    config: Config
    layer: ObjectLayer
    multipart: Multipart
    metadata: MetadataStore
    registry: DataServerRegistry
    locator: Locator
    client: DataServerClient
    bus: Bus
    repairs: Repairs
    tasks: TaskPublisher | None = None
    faults: ApiFaults | None = None

    def wait_ready(self) -> None:
        """Wait, a bounded time, until connected to RabbitMQ and the data servers have
        answered the ping sent on connecting: a worker taking requests earlier answers 503
        (issue 11.2)."""
        live = wait_for_data_servers(self.bus, self.registry, 1,
                                     self.config.heartbeat_interval + READY_SLACK)
        log.info("ready: %s RabbitMQ, %d live data server(s)",
                 "connected to" if self.bus.connected.is_set() else "NOT connected to",
                 len(live))

    def publish_stored(self, version: Version) -> None:
        """Queue the "object stored" event (best effort: an unreachable broker is logged,
        never the client's problem)."""
        if self.tasks is not None and not self.tasks.publish(Task.stored(
                version.key, version.number, version.hash, version.size, version.bucket,
                version.version_id)):
            log.warning("task queue unreachable: no stored event for %s/%r version %d",
                        version.bucket, version.key, version.number)


def build(config: Config, metadata: MetadataStore | None = None, bus: Bus | None = None,
          registry: DataServerRegistry | None = None,
          client: DataServerClient | None = None) -> ApiServer:
    """The api worker's collaborators, wired (the bus not started)."""
    metadata = metadata or open_store(config)
    metadata.ensure_bucket(config.book_bucket, versioning=ENABLED)
    faults = ApiFaults(config, metadata)
    metadata = faults.wrap_metadata(metadata)
    registry = registry or DataServerRegistry(config.server_ttl)
    bus = bus or Bus(config.rabbitmq_server, f"api-{config.listen_address}",
                     exchanges=(config.api_exchange, config.data_exchange,
                                config.faults_exchange))
    track_data_servers(bus, config, registry)
    faults.attach(bus, config)
    locator = Locator(bus, config, registry)
    client = client or DataServerClient.from_config(config)
    tasks = TaskPublisher(bus, TaskQueues.from_config(config),
                          check_interval=config.heartbeat_interval)
    repairs = Repairs(client, registry, locator, tasks, metadata, config.listen_address)
    contents = ErasureContentStore(config, client, registry, locator, repairs)
    layer = ObjectLayer(metadata, contents)
    api = ApiServer(config, OriginLayer.from_config(layer, config),
                    Multipart(layer, config.min_part_size), metadata, registry,
                    locator, client, bus, repairs, tasks, faults)
    layer.on_stored = api.publish_stored
    return api


def create_app(config: Config | None = None, *, metadata: MetadataStore | None = None,
               bus: Bus | None = None, registry: DataServerRegistry | None = None,
               client: DataServerClient | None = None) -> Flask:
    config = config or Config.from_env()
    start_bus = bus is None
    api = build(config, metadata, bus, registry, client)

    app = create_flask_app(__name__, errors.STATUS)
    app.extensions["tessera.api"] = api
    for blueprint in (objects.bp, versions.bp, locate.bp, uploads.bp):
        app.register_blueprint(blueprint)

    @app.get("/health")
    def health():
        """503 when the metadata store or the broker fails; too few live data servers are
        reported, not failed: this server still serves what they can."""
        status, body = checks.evaluate(
            {"metadata": api.metadata.check, "rabbitmq": api.bus.connected.is_set},
            {"role": "api_server", "address": config.listen_address,
             "data_servers": len(api.registry.live()), "write_quorum": config.write_quorum})
        return jsonify(body), status

    app.extensions[COLLECTORS].append(metrics.Snapshot(lambda: [metrics.gauge(
        "tessera_live_data_servers", "Data servers this api worker heard from lately.",
        len(api.registry.live()))]))
    app.wsgi_app = Observed(wrap_book(app.wsgi_app, api.faults), "book",
                            sub_apis=frozenset({"admin", "console"}),
                            counted=config.request_metrics)
    if config.s3_listen_address:
        from api_server.s3 import ByListener, create_s3_app
        from api_server.s3.faults import wrap as wrap_s3

        app.wsgi_app = ByListener(app.wsgi_app,
                                  Observed(wrap_s3(create_s3_app(api), api.faults.engine,
                                                   config.s3_domain), "s3",
                                           counted=config.request_metrics),
                                  config.s3_listen_address)

    admin.install(app)
    book_token.install(app)
    console.install(app)

    if start_bus:
        memory.limit_arenas()
        api.bus.every(memory.TRIM_INTERVAL, memory.trim)
        api.bus.start()

    def stop() -> None:
        api.repairs.close()
        api.bus.stop()
        api.metadata.close()

    app.extensions["tessera.stop"] = stop
    app.extensions["tessera.ready"] = api.wait_ready
    return app
