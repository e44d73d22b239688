"""How fault rules reach every process, and injected faults come back as events.

Rules live in the metadata (``fault-rule`` records, and a ``fault-rules`` revision stamped at
every change), so they outlive every process.  Every process binds a queue to the fanout
exchange ``FAULTS_EXCHANGE``, which carries three messages::

    {"Rules": [<rule>...], "Revision": <time of the last change>}   the whole set
    {"Sync": true}                                                  "send me the set"
    {"Event": {...}}                                                a fault was injected

Api workers read the set from the metadata at start, after every change and every
``FAULTS_SYNC_INTERVAL`` seconds, and broadcast it; data servers, which have no metadata, ask
with ``Sync`` when they connect and take every broadcast.  A broadcast older than the set a
process holds is ignored (two api workers' broadcasts may cross).  Api workers also collect
the events into their :class:`lib.faults.events.EventLog`.
"""
from __future__ import annotations

import json
import logging
import threading
import time

from lib.config import Config
from lib.faults.engine import FaultEngine
from lib.faults.events import EventLog
from lib.faults.rules import Rule, RuleError, parse_rule
from lib.metadata import MetadataStore
from lib.rabbitmq import Bus, Message

log = logging.getLogger(__name__)

KIND = "fault-rule"
REVISION = ("fault-rules", "revision")
#: Most rules a cluster holds (each hook walks its rules on every request it may break).
MAX_RULES = 100


class RuleStore:
    """The cluster's fault rules in the metadata store (the real one, never faulted)."""

    def __init__(self, metadata: MetadataStore):
        self._metadata = metadata
        self._lock = threading.Lock()

    def load(self) -> tuple[list[Rule], float]:
        rules = []
        for rule_id, body in self._metadata.records(KIND):
            try:
                rules.append(parse_rule(body, rule_id))
            except RuleError as exc:
                log.warning("ignoring stored fault rule %s: %s", rule_id, exc)
        revision = (self._metadata.record(*REVISION) or {}).get("revision", 0.0)
        rules.sort(key=lambda r: (r.created, r.id))
        return rules, float(revision)

    def get(self, rule_id: str) -> Rule | None:
        body = self._metadata.record(KIND, rule_id)
        return None if body is None else parse_rule(body, rule_id)

    def put(self, rule: Rule) -> None:
        with self._lock:
            self._metadata.put_record(KIND, rule.id, rule.to_json())
            self._touch()

    def delete(self, rule_id: str) -> bool:
        with self._lock:
            deleted = self._metadata.delete_record(KIND, rule_id)
            self._touch()
        return deleted

    def _touch(self) -> None:
        old = float((self._metadata.record(*REVISION) or {}).get("revision", 0.0))
        self._metadata.put_record(*REVISION, {"revision": max(time.time(), old + 1e-6)})


class FaultSync:
    """One process's side of the faults exchange (``store`` and ``events``: api workers)."""

    def __init__(self, bus: Bus, config: Config, engine: FaultEngine,
                 store: RuleStore | None = None, events: EventLog | None = None):
        self._bus = bus
        self._exchange = config.faults_exchange
        self._engine = engine
        self._store = store
        self.events = events
        engine.report = self.report
        bus.subscribe(self._exchange, self._on_message)
        if store is not None:
            bus.every(config.faults_sync_interval, self.broadcast)
        else:
            bus.on_connect(lambda: self._send({"Sync": True}))

    def _send(self, message: dict) -> bool:
        return self._bus.publish(self._exchange, "", json.dumps(message).encode())

    def load(self) -> None:
        """Install the stored set (an api worker at start: before it serves a request)."""
        assert self._store is not None
        rules, revision = self._store.load()
        self._engine.install(rules, revision)

    def broadcast(self) -> None:
        """Read the stored set, install it here and send it to every process."""
        assert self._store is not None
        rules, revision = self._store.load()
        self._engine.install(rules, revision)
        self._send({"Rules": [r.to_json() for r in rules], "Revision": revision})

    def report(self, event: dict) -> None:
        if not self._send({"Event": event}):
            log.warning("fault event not reported (broker unreachable): %s", event)

    def _on_message(self, message: Message) -> None:
        try:
            body = json.loads(message.body)
        except ValueError:
            log.warning("dropped faults message: %r", message.body[:200])
            return
        if not isinstance(body, dict):
            return
        if "Event" in body:
            if self.events is not None and isinstance(body["Event"], dict):
                self.events.add(body["Event"])
        elif body.get("Sync") is True:
            if self._store is not None:
                self.broadcast()
        elif isinstance(body.get("Rules"), list):
            rules = []
            for raw in body["Rules"]:
                try:
                    rules.append(parse_rule(raw))
                except RuleError as exc:
                    log.warning("ignoring broadcast fault rule: %s", exc)
            if self._engine.install(rules, float(body.get("Revision") or 0.0)):
                log.debug("fault rules: %d installed", len(rules))
