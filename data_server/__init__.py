"""Data server: stores shards on one disk and answers locates for them.

``create_app`` builds the Flask app inside a gunicorn worker: it rebuilds the ObjectIndex from
``STORAGE_ROOT/objects``, puts the gate (``data_server/gate.py``: cluster members only) in
front of every route, then (unless a test passes ``bus=None``) starts the RabbitMQ thread
that sends heartbeats, answers locates and expires abandoned temp objects.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil

from flask import Flask, jsonify

from data_server import errors, faults, heartbeat, inspect, locate, objects, tails, temp
from data_server.fastpath import FastPath
from data_server.gate import ClusterGate
from data_server.index import ObjectIndex
from data_server.storage import Storage
from lib import health as checks, metrics
from lib.access import Observed
from lib.clustermac import ClusterMac
from lib.config import Config
from lib.rabbitmq import Bus
from lib.webapp import COLLECTORS, create_flask_app

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


def _disk_families(node: Node):
    """Disk space of the storage root's file system, and the shards held."""
    labels = {"address": node.config.listen_address}
    try:
        usage = shutil.disk_usage(node.storage.root)
    except OSError:
        return
    yield metrics.gauge("tessera_disk_used_bytes", "Bytes used on the storage root's file "
                        "system.", usage.used, labels)
    yield metrics.gauge("tessera_disk_free_bytes", "Bytes free on the storage root's file "
                        "system.", usage.free, labels)
    yield metrics.gauge("tessera_shards", "Shards this data server holds.", len(node.index),
                        labels)


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
    # A small GET costs four data server requests: their access lines are DEBUG, else they
    # would be most of what logging costs (README "Metrics and logs").  Outermost, so that
    # refused strangers are counted and logged too.
    app.wsgi_app = Observed(ClusterGate(faults.wrap(FastPath(node, app.wsgi_app), node, engine),
                                        ClusterMac.from_config(config), config.data_reads_open),
                            "data", access_level=logging.DEBUG,
                            counted=config.request_metrics)
    app.extensions["tessera.faults"] = engine
    app.extensions[COLLECTORS].append(metrics.Snapshot(lambda: _disk_families(node)))

    @app.get("/health")
    def health():
        """503 when the storage root cannot be written or (with a bus) the broker is gone."""
        status, body = checks.evaluate(
            {"storage": lambda: checks.writable(storage.temp),
             **({"rabbitmq": bus.connected.is_set} if bus is not None else {})},
            {"role": "data_server", "address": config.listen_address, "shards": len(index)})
        body.setdefault("rabbitmq", False)
        return jsonify(body), status

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
