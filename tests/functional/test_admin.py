"""The management API's gate, in process: no token, a wrong one, the right one."""
from __future__ import annotations

import pytest

from api_server import create_app
from lib.config import Config
from lib.rabbitmq import Bus


def make_client(tmp_path, token: str):
    config = Config(listen_address="127.0.2.1:1", metadata_db=tmp_path / "md.db",
                    admin_token=token)
    app = create_app(config, bus=Bus(config.rabbitmq_server, "never-started"))
    return app


@pytest.fixture
def app(tmp_path):
    app = make_client(tmp_path, "s3cret-token")
    yield app
    app.extensions["tessera.stop"]()


def test_missing_and_wrong_credentials(app):
    client = app.test_client()
    missing = client.get("/api/v1/anything")
    assert missing.status_code == 401 and missing.json["error"]["code"] == "Unauthorized"
    wrong = client.get("/api/v1/anything", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json["error"]["code"] == "Forbidden"


def test_right_token_reaches_routing(app):
    response = app.test_client().get("/api/v1/no-such-route",
                                     headers={"Authorization": "Bearer s3cret-token"})
    assert response.status_code == 404 and response.json["error"]["code"] == "NotFound"


def test_unset_token_closes_the_api(tmp_path):
    app = make_client(tmp_path, "")
    try:
        response = app.test_client().get("/api/v1/x", headers={"Authorization": "Bearer "})
        assert response.status_code == 403 and "ADMIN_TOKEN" in response.json["error"]["message"]
    finally:
        app.extensions["tessera.stop"]()
