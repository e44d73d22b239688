"""Fault rules: parsing (Tessera's form and MockS3's, verbatim), matching, conditions, the
engine's hooks and budgets, and the WSGI actions."""
from __future__ import annotations

import json
import random

import pytest

from lib.faults.engine import INJECTED, FaultEngine
from lib.faults.events import EventLog
from lib.faults.rules import Probe, RuleError, parse_duration, parse_rule
from lib.faults.wsgi import ConnectionDropped, FaultMiddleware

#: MockS3's two example rules, as its README posts them.
MOCKS3_ERROR = {
    "name": "Storage Random Error", "description": "10% chance of 500 error",
    "service": "storage-service", "enabled": True,
    "conditions": [{"type": "probability", "value": 0.1}],
    "action": {"type": "http_error", "http_code": 500,
               "message": "Internal server error injected"}}
MOCKS3_DELAY = {
    "name": "Metadata Delay", "description": "Add 2s delay to metadata operations",
    "service": "metadata-service", "enabled": True,
    "conditions": [{"type": "probability", "value": 0.2}],
    "action": {"type": "delay", "delay": "2s"}}


def test_mocks3_rules_parse_verbatim():
    error = parse_rule(MOCKS3_ERROR)
    assert (error.service, error.action.type, error.action.http_code) == ("data", "http_error",
                                                                          500)
    assert error.action.message == "Internal server error injected"
    assert error.conditions.probability == 0.1
    delay = parse_rule(MOCKS3_DELAY)
    assert (delay.service, delay.action.type, delay.action.delay_min) == ("metadata", "delay",
                                                                          2.0)
    shown = delay.to_json()
    assert shown["service"] == "metadata"             # Tessera's name for it
    for field in set(MOCKS3_DELAY) - {"service"}:
        assert shown[field] == MOCKS3_DELAY[field]


@pytest.mark.parametrize("text,seconds", [("2s", 2.0), ("250ms", 0.25), ("1.5m", 90.0),
                                          (3, 3.0), ("0", 0.0)])
def test_durations(text, seconds):
    assert parse_duration(text, "d") == seconds


@pytest.mark.parametrize("rule,field", [
    ({"action": {"type": "delay", "delay": "forever"}}, "action.delay"),
    ({"action": {"type": "delay", "delay": "1h"}}, "action.delay"),
    ({"action": {"type": "http_error", "http_code": 200}}, "action.http_code"),
    ({"service": "nowhere", "action": {"type": "delay", "delay": "1s"}}, "service"),
    ({"service": "api", "action": {"type": "corrupt_shard"}}, "action.type"),
    ({"service": "metadata", "action": {"type": "truncate"}}, "action.type"),
    ({"action": {"type": "delay", "delay": "1s"}, "conditions": [{"type": "probability",
                                                                   "value": 2}]},
     "conditions[0].value"),
    ({"action": {"type": "delay", "delay": "1s"}, "match": {"path": "("}}, "match.path"),
    ({"action": {"type": "delay", "delay": "1s"}, "colour": "red"}, "colour"),
    ({"action": {"type": "explode"}}, "action.type"),
    ("not an object", "object"),
])
def test_bad_rules_name_their_field(rule, field):
    with pytest.raises(RuleError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_rule(rule)


def test_delay_range_and_target_form():
    rule = parse_rule({"target": {"service": "data", "node": "127.0.1.1:9"},
                       "action": {"type": "delay", "delay": "100ms-2s"}})
    assert (rule.service, rule.node) == ("data", "127.0.1.1:9")
    assert (rule.action.delay_min, rule.action.delay_max) == (0.1, 2.0)


def test_match_fields():
    rule = parse_rule({"service": "s3", "match": {"method": "get", "path": "^/b/",
                                                  "operation": "GetObject", "bucket": "b*",
                                                  "key": "*.txt"},
                       "action": {"type": "http_error", "http_code": 503}})
    hit = Probe(method="GET", path="/b/x.txt", operation="GetObject", bucket="b", key="x.txt")
    assert rule.match.matches(hit)
    for miss in (dict(method="PUT"), dict(path="/c/x.txt"), dict(operation="PutObject"),
                 dict(bucket="c"), dict(key="x.bin")):
        assert not rule.match.matches(Probe(**{**hit.__dict__, **miss}))


def _engine(hooks=("data",), address="127.0.1.1:9", clock=None, seed=1):
    events = []
    engine = FaultEngine(hooks, [address], report=events.append,
                         clock=clock or (lambda: 1000.0), rng=random.Random(seed))
    return engine, events


def test_engine_sorts_rules_by_hook_and_node():
    engine, _ = _engine(hooks=("data", "heartbeat", "locate"))
    rules = [parse_rule({"id": "a", "service": "data", "action": {"type": "corrupt"}}),
             parse_rule({"id": "b", "service": "data", "node": "127.0.1.2:9",
                         "action": {"type": "corrupt"}}),
             parse_rule({"id": "c", "service": "broker", "action": {"type": "pause_locate"}}),
             parse_rule({"id": "d", "service": "data", "action": {"type": "pause_heartbeat"}}),
             parse_rule({"id": "e", "service": "api", "action": {"type": "corrupt"}}),
             parse_rule({"id": "f", "service": "data", "enabled": False,
                         "action": {"type": "corrupt"}})]
    engine.install(rules)
    assert [r.id for r in engine.data] == ["a"]
    assert [r.id for r in engine.locate] == ["c"]
    assert [r.id for r in engine.heartbeat] == ["d"]
    assert engine.api == engine.metadata == ()
    engine.install([])
    assert engine.data == engine.locate == engine.heartbeat == ()


def test_max_hits_fires_exactly_and_is_counted():
    engine, events = _engine()
    engine.install([parse_rule({"id": "five", "service": "data",
                                "conditions": [{"type": "max_hits", "value": 5}],
                                "action": {"type": "http_error"}})])
    before = INJECTED.labels("five", "http_error", "data")._value.get()
    hits = [engine.hit("data", engine.data, Probe(method="GET", path="/x", request_id=str(i)))
            for i in range(12)]
    assert sum(h is not None for h in hits) == 5
    assert [e["request_id"] for e in events] == ["0", "1", "2", "3", "4"]
    assert {e["process"].split("/")[0] for e in events} == {"127.0.1.1:9"}
    assert INJECTED.labels("five", "http_error", "data")._value.get() - before == 5


def test_probability_header_and_time_window():
    now = [100.0]
    engine, _ = _engine(clock=lambda: now[0])
    engine.install([parse_rule({"service": "data", "conditions": [
        {"type": "probability", "value": 0.25}, {"type": "header", "name": "X-Chaos",
                                                  "value": "on"},
        {"type": "time_window", "start": 50, "end": 200}], "action": {"type": "corrupt"}})])
    on = Probe(headers={"x-chaos": "on"})
    assert engine.hit("data", engine.data, Probe(headers={"x-chaos": "off"})) is None
    hits = sum(engine.hit("data", engine.data, on) is not None for _ in range(4000))
    assert 800 < hits < 1200
    now[0] = 300.0
    assert all(engine.hit("data", engine.data, on) is None for _ in range(100))


def test_older_broadcast_is_ignored():
    engine, _ = _engine()
    rule = parse_rule({"service": "data", "action": {"type": "corrupt"}})
    assert engine.install([rule], revision=5.0)
    assert not engine.install([], revision=4.0)
    assert engine.data == (rule,)


def test_event_log_pages_and_counts():
    log = EventLog(limit=50)
    for i in range(60):
        log.add({"rule": "r1" if i % 2 else "r2", "action": "delay", "process": "p"})
    first = log.page(after=0, limit=20)
    assert [e["seq"] for e in first["events"]] == list(range(11, 31))    # 10 fell off
    assert first["more"] and first["next"] == 30
    rest = log.page(after=first["next"], limit=1000)
    assert [e["seq"] for e in rest["events"]] == list(range(31, 61)) and not rest["more"]
    stats = log.stats()
    assert stats["total"] == 60 and stats["rules"]["r1"]["injected"] == 30
    assert stats["by_action"] == {"delay": 60}


# -- WSGI actions ---------------------------------------------------------------------------

def _app(environ, start_response):
    start_response("200 OK", [("Content-Length", "10000")])
    return [b"a" * 4000, b"b" * 6000]


def _call(middleware, method="GET", path="/objects/x"):
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, headers

    body = b"".join(middleware({"REQUEST_METHOD": method, "PATH_INFO": path,
                                "HTTP_X_REQUEST_ID": "req-1"}, start_response))
    return seen.get("status"), body


def _middleware(action, **rule):
    engine, events = _engine()
    engine.install([parse_rule({"service": "data", "action": action, **rule})])
    return FaultMiddleware(_app, engine, "data"), events


def test_no_rule_passes_through():
    engine, events = _engine()
    assert _call(FaultMiddleware(_app, engine, "data")) == ("200 OK", b"a" * 4000 + b"b" * 6000)
    assert events == []


def test_http_error_and_match():
    middleware, events = _middleware({"type": "http_error", "http_code": 503,
                                      "message": "injected"}, match={"method": "GET"})
    assert _call(middleware) == ("503 Service Unavailable", b"injected\n")
    assert _call(middleware, method="PUT")[0] == "200 OK"
    assert [(e["request_id"], e["method"], e["path"]) for e in events] == [
        ("req-1", "GET", "/objects/x")]


def test_corrupt_flips_bytes_keeps_length():
    middleware, _ = _middleware({"type": "corrupt", "every": 1000})
    status, body = _call(middleware)
    good = b"a" * 4000 + b"b" * 6000
    assert status == "200 OK" and len(body) == len(good)
    assert sum(x != y for x, y in zip(body, good)) == 10


def test_truncate_and_drop_cut_the_connection():
    middleware, _ = _middleware({"type": "truncate", "bytes": 5000})
    seen = []
    with pytest.raises(ConnectionDropped):
        for chunk in middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/"},
                                lambda *a: None):
            seen.append(chunk)
    assert len(b"".join(seen)) == 5000
    middleware, _ = _middleware({"type": "drop", "when": "before_head"})
    with pytest.raises(ConnectionDropped):
        _call(middleware)


# -- metadata hook and the faults exchange ---------------------------------------------------

class _Store:
    def version(self, bucket, key):
        return ("version", bucket, key)

    def records(self, kind):
        return []


def test_faulty_metadata_fails_or_passes_calls():
    from lib.faults.metadata import FaultyMetadata
    from lib.metadata import MetadataError

    engine, events = _engine(hooks=("metadata",))
    store = _Store()
    faulty = FaultyMetadata(store, engine)
    assert faulty.version == store.version                     # no rule: the real method
    engine.install([parse_rule({"service": "metadata", "match": {"operation": "vers*"},
                                "action": {"type": "fail", "message": "down"}})])
    with pytest.raises(MetadataError, match="down"):
        faulty.version("b", "k")
    assert faulty.records("fault-rule") == []                  # rule storage: never faulted
    assert [e["operation"] for e in events] == ["version"]


class _Bus:
    def __init__(self):
        self.sent, self.handlers, self.connect, self.timers = [], [], [], []

    def subscribe(self, exchange, handler):
        self.handlers.append(handler)

    def every(self, interval, callback):
        self.timers.append(callback)

    def on_connect(self, callback):
        self.connect.append(callback)

    def publish(self, exchange, key, body, **kw):
        self.sent.append(json.loads(body))
        return True

    def deliver(self, message: dict):
        from lib.rabbitmq import Message
        for handler in self.handlers:
            handler(Message(json.dumps(message).encode(), None, None))


def test_data_server_sync_asks_installs_and_reports():
    from lib.config import Config
    from lib.faults.sync import FaultSync

    bus, engine = _Bus(), _engine()[0]
    FaultSync(bus, Config(), engine)
    for callback in bus.connect:
        callback()
    assert bus.sent == [{"Sync": True}]
    rule = parse_rule({"id": "r", "service": "data", "action": {"type": "corrupt"}})
    bus.deliver({"Rules": [rule.to_json()], "Revision": 2.0})
    assert [r.id for r in engine.data] == ["r"]
    bus.deliver({"Rules": [], "Revision": 1.0})                # an older broadcast
    assert [r.id for r in engine.data] == ["r"]
    engine.hit("data", engine.data, Probe(path="/objects/x"))
    assert bus.sent[-1]["Event"]["rule"] == "r"


def test_api_sync_stores_broadcasts_and_logs_events(tmp_path):
    from lib.config import Config
    from lib.faults.sync import FaultSync, RuleStore
    from lib.metadata.sqlite import SqliteStore

    metadata = SqliteStore(tmp_path / "md.db")
    store = RuleStore(metadata)
    bus, engine, events = _Bus(), _engine(hooks=("api",))[0], EventLog()
    sync = FaultSync(bus, Config(), engine, store, events)
    store.put(parse_rule({"id": "a", "service": "api", "action": {"type": "corrupt"}}))
    bus.deliver({"Sync": True})
    assert bus.sent[-1]["Rules"][0]["id"] == "a" and [r.id for r in engine.api] == ["a"]
    store.delete("a")
    sync.broadcast()
    assert bus.sent[-1]["Rules"] == [] and engine.api == ()
    bus.deliver({"Event": {"rule": "a", "action": "corrupt", "process": "p"}})
    assert events.stats()["rules"]["a"]["injected"] == 1
    metadata.close()
