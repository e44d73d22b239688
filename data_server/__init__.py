"""Data server: stores shards on one disk and answers locates for them.

``create_app`` builds the Flask app inside a gunicorn worker: it rebuilds the ObjectIndex from
``STORAGE_ROOT/objects``, puts the gate (``data_server/gate.py``: cluster members only) in
front of every route, then (unless a test passes ``bus=None``) starts the RabbitMQ thread
that sends heartbeats, answers locates and expires abandoned temp objects.
"""
from __future__ import annotations

import dataclasses
import logging

from flask import Flask, jsonify

from data_server import errors, faults, heartbeat, inspect, locate, objects, tails, temp
from data_server.fastpath import FastPath
from data_server.gate import ClusterGate
from data_server.index import ObjectIndex
from data_server.storage import Storage
from lib.clustermac import ClusterMac
from lib.config import Config
from lib.rabbitmq import Bus
from lib.webapp import create_flask_app

log = logging.getLogger(__name__)

#: Seconds between sweeps for abandoned temp objects.
TEMP_SWEEP_INTERVAL = 300.0
_DEFAULT = object()


@dataclasses.dataclass
class Node:
    config: Config
    storage: Storage
    index: ObjectIndex
    bus: Bus | None


def create_app(config: Config | None = None, *, bus: Bus | None | object = _DEFAULT) -> Flask:
    config = config or Config.from_env()
    storage = Storage(config.require_storage_root())
    index = ObjectIndex(storage.scan())
    log.info("indexed %d shard(s) under %s", len(index), storage.root)
    if bus is _DEFAULT:
        bus = Bus(config.rabbitmq_server, f"data-{config.listen_address}",
                  exchanges=(config.api_exchange, config.data_exchange,
                             config.faults_exchange))
    node = Node(config, storage, index, bus)
    engine = faults.make_engine(config)

    app = create_flask_app(__name__, errors.STATUS)
    app.extensions["tessera.node"] = node
    app.register_blueprint(objects.bp)
    app.register_blueprint(temp.bp)
    app.register_blueprint(tails.bp)
    app.register_blueprint(inspect.bp)
    app.wsgi_app = ClusterGate(faults.wrap(FastPath(node, app.wsgi_app), node, engine),
                               ClusterMac.from_config(config), config.data_reads_open)
    app.extensions["tessera.faults"] = engine

    @app.get("/health")
    def health():
        return jsonify(status="ok", role="data_server", address=config.listen_address,
                       shards=len(index), rabbitmq=bool(bus and bus.connected.is_set()))

    if bus is not None:
        faults.attach(bus, config, engine)
        heartbeat.install(bus, config, engine)
        locate.install(bus, config, index, engine)
        sweep = min(TEMP_SWEEP_INTERVAL, config.temp_ttl)
        bus.every(sweep, lambda: storage.expire_temps(config.temp_ttl))
        bus.every(sweep, lambda: tails.expire(storage, config.temp_ttl))
        bus.start()
        app.extensions["tessera.stop"] = bus.stop
    return app
