"""Fault injection in a data server: its engine and hooks, fed by the faults exchange.

Requests go through :class:`lib.faults.wsgi.FaultMiddleware` (hook ``data``), which also
takes the disk actions here: ``corrupt_shard`` flips a byte of the named shard's file and
``delete_shard`` removes it, before the request is served, and only for a committed shard
file this server indexes inside its own ``STORAGE_ROOT/objects``.  ``pause_heartbeat`` and
``pause_locate`` rules silence :mod:`data_server.heartbeat` and :mod:`data_server.locate`
while they match (each tick or locate a probe whose ``operation`` is ``heartbeat`` or
``locate``).
"""
from __future__ import annotations

import logging

from data_server.storage import ShardName
from lib.config import Config
from lib.errors import BadRequest
from lib.faults.engine import FaultEngine
from lib.faults.rules import Probe, Rule
from lib.faults.sync import FaultSync
from lib.faults.wsgi import FaultMiddleware
from lib.rabbitmq import Bus

log = logging.getLogger(__name__)
_OBJECTS = "/objects/"


def make_engine(config: Config) -> FaultEngine:
    return FaultEngine(("data", "heartbeat", "locate"), [config.listen_address])


def attach(bus: Bus, config: Config, engine: FaultEngine) -> FaultSync:
    return FaultSync(bus, config, engine)


def paused(engine: FaultEngine, hook: str) -> bool:
    """Whether a pause rule silences this heartbeat or locate answer (counted if so)."""
    rules = getattr(engine, hook)
    return bool(rules) and engine.hit(hook, rules, Probe(operation=hook)) is not None


def wrap(app, node, engine: FaultEngine) -> FaultMiddleware:
    def damage(rule: Rule, probe: Probe) -> None:
        if not probe.path.startswith(_OBJECTS):
            return
        try:
            name = ShardName.parse(probe.path[len(_OBJECTS):])
        except BadRequest:
            return
        shard = node.index.get(name.hash, name.index)
        if shard is None:
            return
        if rule.action.type == "delete_shard":
            node.index.remove(name.hash, name.index, shard.path)
            done = node.storage.delete_shard_file(shard.path)
        else:
            done = node.storage.corrupt_shard_file(shard.path)
        log.warning("fault rule %s: %s %s: %s", rule.id, rule.action.type, shard.path.name,
                    "done" if done else "not a shard file of this server: left alone")

    return FaultMiddleware(app, engine, "data", disk=damage)
