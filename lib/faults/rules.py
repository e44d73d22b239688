"""Fault rules: what to break, where, when and how; parsed from JSON and checked once.

A rule is the JSON an operator posts to ``/api/v1/faults/rules``.  MockS3's rules (its
README's ``name``, ``description``, ``service``, ``enabled``, ``conditions`` with
``probability``, an ``http_error`` or ``delay`` action) are accepted as they are: its service
names map onto Tessera's (``storage-service`` is the data servers, ``metadata-service`` the
metadata calls of the api servers).  Tessera adds::

    {"service": "data",                      api | s3 | data | metadata | broker | all
     "node": "127.0.1.1:12345",              optional: one process's address
     "match": {"method": ["GET"], "path": "^/objects/", "operation": "GetObject",
               "bucket": "logs-*", "key": "*.gz"},
     "conditions": [{"type": "probability", "value": 0.5},
                    {"type": "header", "name": "X-Chaos", "value": "on"},
                    {"type": "time_window", "start": 1767225600, "end": 1767229200},
                    {"type": "max_hits", "value": 5},
                    {"type": "expires", "value": 1767229200}],
     "action": {"type": "delay", "delay": "100ms-2s"}}

Actions: ``http_error`` (``http_code``, ``message``; S3 XML on the S3 API, ``s3_code``
optional), ``delay`` (``"2s"``, ``"250ms"``, a range ``"1s-3s"`` or ``min``/``max``),
``drop`` (``when``: ``before_head`` or ``after_head``), ``truncate`` (``bytes`` sent before the
connection is cut), ``corrupt`` (response bytes; ``every`` bytes one is flipped),
``corrupt_shard`` and ``delete_shard`` (the requested shard's file, on its data server),
``pause_heartbeat`` and ``pause_locate`` (data servers), ``fail`` (a metadata call raises).
``max_hits`` counts in each process (a rule with a ``node`` counts exactly).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any


class RuleError(ValueError):
    """A rule that cannot be used; the message says which field and why."""


#: Where a rule can apply.  ``broker`` is the data servers' heartbeats and locate answers.
SERVICES = ("api", "s3", "data", "metadata", "broker", "all")
#: MockS3's service names (its docker-compose services) and what they are here.
MOCKS3_SERVICES = {"storage-service": "data", "storage": "data",
                   "metadata-service": "metadata", "metadata": "metadata",
                   "gateway": "s3", "nginx-gateway": "s3", "s3-gateway": "s3",
                   "queue-service": "broker"}
#: Actions on an HTTP request (api, s3, data servers).
HTTP_ACTIONS = ("http_error", "delay", "drop", "truncate", "corrupt")
#: Actions on a data server's disk, when a request names one of its shards.
DISK_ACTIONS = ("corrupt_shard", "delete_shard")
BROKER_ACTIONS = ("pause_heartbeat", "pause_locate")
METADATA_ACTIONS = ("delay", "fail")
#: Which actions each service takes (``all``: wherever the action makes sense).
ACTIONS_BY_SERVICE = {
    "api": HTTP_ACTIONS, "s3": HTTP_ACTIONS, "data": HTTP_ACTIONS + DISK_ACTIONS + BROKER_ACTIONS,
    "metadata": METADATA_ACTIONS, "broker": BROKER_ACTIONS,
    "all": HTTP_ACTIONS + ("fail",),
}
#: Longest delay a rule may ask for: a fault must not hold a worker thread forever.
MAX_DELAY = 300.0
MAX_TEXT = 1000
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*(ms|s|m)?\s*$")


def parse_duration(value: Any, what: str) -> float:
    """Seconds from ``"2s"``, ``"250ms"``, ``"1.5m"`` or a number of seconds."""
    if isinstance(value, bool):
        raise RuleError(f"{what}: not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise RuleError(f"{what}: not a duration (\"2s\", \"250ms\"): {value!r}")
    if not 0 <= seconds <= MAX_DELAY or math.isnan(seconds):
        raise RuleError(f"{what}: must be between 0 and {MAX_DELAY:.0f}s, got {value!r}")
    return seconds


def _text(raw: Mapping, name: str, default: str = "") -> str:
    value = raw.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise RuleError(f"{name}: a string of at most {MAX_TEXT} characters, got {value!r}")
    return value


def _number(value: Any, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RuleError(f"{what}: a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def _count(value: Any, what: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RuleError(f"{what}: an integer >= {low}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Match:
    """Which requests a rule looks at; every field given must match (globs for names)."""

    methods: frozenset[str] = frozenset()
    path: re.Pattern | None = None
    operation: str = ""
    bucket: str = ""
    key: str = ""

    @classmethod
    def parse(cls, raw: Any) -> "Match":
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise RuleError(f"match: an object, got {raw!r}")
        unknown = set(raw) - {"method", "path", "operation", "bucket", "key"}
        if unknown:
            raise RuleError(f"match: unknown field {sorted(unknown)[0]!r}")
        methods = raw.get("method") or []
        if isinstance(methods, str):
            methods = [methods]
        if not isinstance(methods, list) or not all(
                isinstance(m, str) and m.isalpha() for m in methods):
            raise RuleError(f"match.method: a method or a list of methods, got {methods!r}")
        path = _text(raw, "path")
        try:
            pattern = re.compile(path) if path else None
        except re.error as exc:
            raise RuleError(f"match.path: not a regular expression: {exc}") from None
        return cls(frozenset(m.upper() for m in methods), pattern, _text(raw, "operation"),
                   _text(raw, "bucket"), _text(raw, "key"))

    def to_json(self) -> dict:
        out: dict[str, Any] = {}
        if self.methods:
            out["method"] = sorted(self.methods)
        if self.path is not None:
            out["path"] = self.path.pattern
        for name in ("operation", "bucket", "key"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        return out

    def matches(self, probe: "Probe") -> bool:
        if self.methods and probe.method not in self.methods:
            return False
        if self.path is not None and not self.path.search(probe.path):
            return False
        if self.operation and not fnmatch.fnmatchcase(probe.operation, self.operation):
            return False
        if self.bucket and not fnmatch.fnmatchcase(probe.bucket or "", self.bucket):
            return False
        if self.key and not fnmatch.fnmatchcase(probe.key or "", self.key):
            return False
        return True


@dataclasses.dataclass(frozen=True)
class Probe:
    """What a hook knows of the thing it may break: a request, a metadata call, a tick."""

    method: str = ""
    path: str = ""
    operation: str = ""
    bucket: str | None = None
    key: str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    request_id: str = ""


@dataclasses.dataclass(frozen=True)
class Conditions:
    """When a matching request is hit: probability, a header, a time window, a budget."""

    probability: float = 1.0
    headers: tuple[tuple[str, str], ...] = ()
    start: float | None = None
    end: float | None = None
    max_hits: int | None = None
    #: The conditions as posted, given back verbatim by the API.
    raw: tuple = ()

    @classmethod
    def parse(cls, raw: Any) -> "Conditions":
        if raw is None:
            return cls()
        if not isinstance(raw, list) or len(raw) > 20:
            raise RuleError("conditions: a list of at most 20 conditions")
        fields: dict[str, Any] = {"headers": []}
        for i, cond in enumerate(raw):
            what = f"conditions[{i}]"
            if not isinstance(cond, Mapping) or not isinstance(cond.get("type"), str):
                raise RuleError(f"{what}: an object with a \"type\"")
            kind = cond["type"]
            if kind == "probability":
                fields["probability"] = _number(cond.get("value"), f"{what}.value", 0, 1)
            elif kind == "header":
                name = _text(cond, "name")
                if not name:
                    raise RuleError(f"{what}: a header condition needs a name")
                fields["headers"].append((name.lower(), _text(cond, "value")))
            elif kind == "time_window":
                start, end = cond.get("start"), cond.get("end")
                if start is not None:
                    fields["start"] = _number(start, f"{what}.start", 0, 1e11)
                if end is not None:
                    fields["end"] = _number(end, f"{what}.end", 0, 1e11)
            elif kind == "max_hits":
                fields["max_hits"] = _count(cond.get("value"), f"{what}.value")
            elif kind == "expires":
                fields["end"] = _number(cond.get("value"), f"{what}.value", 0, 1e11)
            else:
                raise RuleError(f"{what}: unknown condition type {kind!r} (probability, "
                                f"header, time_window, max_hits, expires)")
        fields["headers"] = tuple(fields["headers"])
        return cls(raw=tuple(raw), **fields)

    def active(self, now: float) -> bool:
        return (self.start is None or now >= self.start) and (self.end is None or now < self.end)

    def headers_match(self, headers: Mapping[str, str]) -> bool:
        return all(headers.get(name) == value if value else name in headers
                   for name, value in self.headers)


@dataclasses.dataclass(frozen=True)
class Action:
    """What a hit does."""

    type: str
    http_code: int = 500
    message: str = ""
    s3_code: str = ""
    delay_min: float = 0.0
    delay_max: float = 0.0
    when: str = "before_head"
    bytes: int = 0
    every: int = 4096
    raw: Mapping = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Any) -> "Action":
        if not isinstance(raw, Mapping) or not isinstance(raw.get("type"), str):
            raise RuleError("action: an object with a \"type\"")
        kind = raw["type"]
        fields: dict[str, Any] = {}
        if kind == "http_error":
            fields["http_code"] = int(_number(raw.get("http_code", 500), "action.http_code",
                                              400, 599))
            fields["message"] = _text(raw, "message", "fault injected")
            fields["s3_code"] = _text(raw, "s3_code")
        elif kind == "delay":
            delay = raw.get("delay")
            if isinstance(delay, str) and "-" in delay.strip()[1:]:
                low, _, high = delay.partition("-")
                fields["delay_min"] = parse_duration(low, "action.delay")
                fields["delay_max"] = parse_duration(high, "action.delay")
            elif delay is not None:
                fields["delay_min"] = fields["delay_max"] = parse_duration(delay, "action.delay")
            else:
                fields["delay_min"] = parse_duration(raw.get("min"), "action.min")
                fields["delay_max"] = parse_duration(raw.get("max"), "action.max")
            if fields["delay_min"] > fields["delay_max"]:
                raise RuleError("action.delay: the range's low end is above its high end")
        elif kind == "drop":
            fields["when"] = _text(raw, "when", "before_head")
            if fields["when"] not in ("before_head", "after_head"):
                raise RuleError("action.when: before_head or after_head")
        elif kind == "truncate":
            fields["bytes"] = _count(raw.get("bytes", 0), "action.bytes", low=0)
        elif kind == "corrupt":
            fields["every"] = _count(raw.get("every", 4096), "action.every")
        elif kind == "fail":
            fields["message"] = _text(raw, "message", "metadata failure injected")
        elif kind not in DISK_ACTIONS + BROKER_ACTIONS:
            raise RuleError(f"action.type: unknown action {kind!r}")
        return cls(kind, raw=dict(raw), **fields)


@dataclasses.dataclass(frozen=True)
class Rule:
    id: str
    name: str
    service: str
    action: Action
    description: str = ""
    enabled: bool = True
    node: str = ""
    match: Match = Match()
    conditions: Conditions = Conditions()
    created: float = 0.0

    def applies_to(self, service: str) -> bool:
        """Whether a hook of ``service`` (api, s3, data, metadata, broker) may take this rule."""
        if not self.enabled:
            return False
        if self.service == service:
            return True
        if self.service == "all":
            return self.action.type in ACTIONS_BY_SERVICE.get(service, ())
        return self.service == "data" and service == "broker" and \
            self.action.type in BROKER_ACTIONS

    def to_json(self) -> dict:
        """The rule as the API shows it (and stores it): what was posted, with its id."""
        out: dict[str, Any] = {"id": self.id, "name": self.name,
                               "description": self.description, "service": self.service,
                               "enabled": self.enabled,
                               "conditions": [dict(c) for c in self.conditions.raw],
                               "action": dict(self.action.raw), "created": self.created}
        if self.node:
            out["node"] = self.node
        match = self.match.to_json()
        if match:
            out["match"] = match
        return out


_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_FIELDS = {"id", "name", "description", "service", "enabled", "node", "match", "conditions",
           "action", "created", "target"}


def parse_rule(raw: Any, rule_id: str | None = None, now: float | None = None) -> Rule:
    """Check a posted rule (Tessera's form or MockS3's) and build it.

    :param rule_id: the id it gets (a PUT's path); a new random one when None and the body
        names none.
    :raises RuleError: naming the first field that is wrong.
    """
    if not isinstance(raw, Mapping):
        raise RuleError("a rule is a JSON object")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise RuleError(f"unknown field {sorted(unknown)[0]!r}")
    target = raw.get("target")
    if target is not None:                      # {"target": {"service": .., "node": ..}}
        if not isinstance(target, Mapping):
            raise RuleError("target: an object with service and node")
        raw = {**raw, **{k: v for k, v in target.items() if k in ("service", "node")}}
    rule_id = rule_id or _text(raw, "id") or uuid.uuid4().hex[:12]
    if not _ID.match(rule_id):
        raise RuleError(f"id: letters, digits, '_', '.', '-' only, got {rule_id!r}")
    service = _text(raw, "service", "all")
    service = MOCKS3_SERVICES.get(service, service)
    if service not in SERVICES:
        raise RuleError(f"service: one of {', '.join(SERVICES)} (or MockS3's "
                        f"{', '.join(sorted(MOCKS3_SERVICES))}), got {service!r}")
    action = Action.parse(raw.get("action"))
    if service == "metadata" and action.type == "http_error":
        action = dataclasses.replace(action, type="fail")    # MockS3's metadata errors
    if action.type not in ACTIONS_BY_SERVICE[service]:
        raise RuleError(f"action.type: {action.type!r} does not apply to service {service!r} "
                        f"(it takes {', '.join(ACTIONS_BY_SERVICE[service])})")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RuleError(f"enabled: true or false, got {enabled!r}")
    node = _text(raw, "node")
    if node and not re.match(r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$", node):
        raise RuleError(f"node: a process address host:port, got {node!r}")
    created = raw.get("created")
    if not isinstance(created, int | float) or isinstance(created, bool):
        created = time.time() if now is None else now
    return Rule(rule_id, _text(raw, "name"), service, action, _text(raw, "description"),
                enabled, node, Match.parse(raw.get("match")),
                Conditions.parse(raw.get("conditions")), float(created))
