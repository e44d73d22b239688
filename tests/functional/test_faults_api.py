"""The fault rules API and the api worker's hooks, in process (the broker never started)."""
from __future__ import annotations

import pytest

from api_server import create_app
from lib.config import Config
from lib.rabbitmq import Bus
from tests.unit.test_faults import MOCKS3_DELAY, MOCKS3_ERROR

TOKEN = "faults-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def app(tmp_path):
    config = Config(listen_address="127.0.2.1:1", metadata_db=tmp_path / "md.db",
                    admin_token=TOKEN)
    app = create_app(config, bus=Bus(config.rabbitmq_server, "never-started"))
    yield app
    app.extensions["tessera.stop"]()


def test_rules_crud_takes_mocks3_rules_verbatim(app):
    client = app.test_client()
    assert client.post("/api/v1/faults/rules", json=MOCKS3_ERROR).status_code == 401
    created = [client.post("/api/v1/faults/rules", json=rule, headers=AUTH)
               for rule in (MOCKS3_ERROR, MOCKS3_DELAY)]
    assert [r.status_code for r in created] == [201, 201]
    ids = [r.json["id"] for r in created]
    listed = client.get("/api/v1/faults/rules", headers=AUTH).json["rules"]
    assert [r["id"] for r in listed] == ids
    assert listed[0]["action"] == MOCKS3_ERROR["action"]
    assert listed[1]["conditions"] == MOCKS3_DELAY["conditions"]
    engine = app.extensions["tessera.api"].faults.engine
    assert [r.id for r in engine.metadata] == [ids[1]] and engine.api == ()

    replaced = client.put(f"/api/v1/faults/rules/{ids[1]}", headers=AUTH,
                          json={**MOCKS3_DELAY, "enabled": False})
    assert replaced.status_code == 200 and replaced.json["enabled"] is False
    assert engine.metadata == ()
    assert client.get(f"/api/v1/faults/rules/{ids[1]}", headers=AUTH).json["enabled"] is False
    assert client.delete(f"/api/v1/faults/rules/{ids[0]}", headers=AUTH).status_code == 204
    assert client.delete(f"/api/v1/faults/rules/{ids[0]}", headers=AUTH).status_code == 404
    assert client.delete("/api/v1/faults/rules", headers=AUTH).json == {"deleted": 1}
    assert client.get("/api/v1/faults/rules", headers=AUTH).json["rules"] == []


def test_invalid_rules_are_400_naming_the_field(app):
    client = app.test_client()
    bad = client.post("/api/v1/faults/rules", headers=AUTH,
                      json={"service": "data", "action": {"type": "delay", "delay": "soon"}})
    assert bad.status_code == 400 and bad.json["error"]["code"] == "InvalidRule"
    assert "action.delay" in bad.json["error"]["message"]
    assert client.post("/api/v1/faults/rules", headers=AUTH, data="[1]").status_code == 400
    pages = client.get("/api/v1/faults/events?limit=0", headers=AUTH)
    assert pages.status_code == 400


def test_book_and_metadata_rules_take_effect(app):
    client = app.test_client()
    rule = client.post("/api/v1/faults/rules", headers=AUTH, json={
        "service": "api", "match": {"method": "GET", "path": "^/objects/"},
        "conditions": [{"type": "max_hits", "value": 2}],
        "action": {"type": "http_error", "http_code": 503, "message": "chaos"}}).json
    answers = [client.get("/objects/nothing-here") for _ in range(3)]
    assert [(a.status_code, a.data) for a in answers] == [(503, b"chaos\n")] * 2 + [
        (404, answers[2].data)]
    assert client.get("/health").status_code == 200
    client.delete(f"/api/v1/faults/rules/{rule['id']}", headers=AUTH)

    client.post("/api/v1/faults/rules", headers=AUTH, json={
        "service": "metadata", "match": {"operation": "version"},
        "action": {"type": "fail", "message": "metadata down"}})
    failed = client.get("/objects/nothing-here")
    assert failed.status_code == 503 and b"metadata down" in failed.data
    assert client.get("/api/v1/faults/rules", headers=AUTH).status_code == 200   # never faulted
