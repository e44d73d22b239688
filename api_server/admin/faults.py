"""The fault rules API: ``/api/v1/faults/rules[/<id>]``, ``/stats``, ``/events``.

MockS3's ``/api/v1/rules`` under Tessera's prefix: POST a rule (MockS3's JSON or Tessera's,
``lib/faults/rules.py``) and get it back with its ``id``; GET lists them; PUT replaces one;
DELETE removes one (or, on ``/rules``, all).  Every change is stored with the metadata and
broadcast to every process at once.  ``/stats`` counts the faults injected across the
cluster since this api worker started, per rule, action and process; ``/events`` pages
through the latest of them (``after``, ``limit``, ``rule``).
"""
from __future__ import annotations

from flask import current_app, jsonify, request

from api_server.admin import AdminError, bp
from api_server.faults import ApiFaults
from lib.faults.events import PAGE_LIMIT
from lib.faults.rules import RuleError, parse_rule
from lib.faults.sync import MAX_RULES


def _faults() -> ApiFaults:
    return current_app.extensions["tessera.api"].faults


def _body() -> dict:
    body = request.get_json(silent=True, force=True)      # a rule is a few hundred bytes
    if not isinstance(body, dict):
        raise AdminError(400, "MalformedRule", "the body must be a JSON object (a rule)")
    return body


def _parse(body: dict, rule_id: str | None = None):
    try:
        return parse_rule(body, rule_id)
    except RuleError as exc:
        raise AdminError(400, "InvalidRule", str(exc)) from None


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise AdminError(400, "InvalidArgument", f"{name} must be an integer from {low} to "
                         f"{high}, got {raw!r}")
    return int(raw)


@bp.post("/faults/rules")
def create_fault_rule():
    faults = _faults()
    body = _body()
    if body.get("id") and faults.store.get(str(body["id"])) is not None:
        raise AdminError(409, "RuleExists", f"rule {body['id']!r} exists: PUT replaces it")
    rule = _parse({k: v for k, v in body.items() if k != "created"})
    if len(faults.store.load()[0]) >= MAX_RULES:
        raise AdminError(409, "TooManyRules", f"at most {MAX_RULES} rules")
    faults.store.put(rule)
    faults.changed()
    response = jsonify(rule.to_json())
    response.status_code = 201
    response.headers["Location"] = f"/api/v1/faults/rules/{rule.id}"
    return response


@bp.get("/faults/rules")
def list_fault_rules():
    rules, revision = _faults().store.load()
    return jsonify(rules=[r.to_json() for r in rules], revision=revision)


@bp.get("/faults/rules/<rule_id>")
def get_fault_rule(rule_id: str):
    rule = _faults().store.get(rule_id)
    if rule is None:
        raise AdminError(404, "NoSuchRule", f"no fault rule {rule_id!r}")
    return jsonify(rule.to_json())


@bp.put("/faults/rules/<rule_id>")
def replace_fault_rule(rule_id: str):
    faults = _faults()
    old = faults.store.get(rule_id)
    if old is None:
        raise AdminError(404, "NoSuchRule", f"no fault rule {rule_id!r}")
    body = {k: v for k, v in _body().items() if k != "id"}
    body["created"] = old.created
    rule = _parse(body, rule_id)
    faults.store.put(rule)
    faults.changed()
    return jsonify(rule.to_json())


@bp.delete("/faults/rules/<rule_id>")
def delete_fault_rule(rule_id: str):
    faults = _faults()
    if not faults.store.delete(rule_id):
        raise AdminError(404, "NoSuchRule", f"no fault rule {rule_id!r}")
    faults.changed()
    return "", 204


@bp.delete("/faults/rules")
def delete_fault_rules():
    faults = _faults()
    rules, _ = faults.store.load()
    for rule in rules:
        faults.store.delete(rule.id)
    faults.changed()
    return jsonify(deleted=len(rules))


@bp.get("/faults/stats")
def get_fault_stats():
    faults = _faults()
    rules, _ = faults.store.load()
    stats = faults.events.stats()
    stats["active_rules"] = sum(r.enabled for r in rules)
    for rule in rules:
        stats["rules"].setdefault(rule.id, {"injected": 0, "name": rule.name})
    return jsonify(stats)


@bp.get("/faults/events")
def list_fault_events():
    return jsonify(_faults().events.page(after=_int_arg("after", 0, 0, 2**62),
                                         limit=_int_arg("limit", 100, 1, PAGE_LIMIT),
                                         rule=request.args.get("rule")))
