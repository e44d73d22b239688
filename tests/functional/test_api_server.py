"""The api server's request checks in process: nothing reaches a data server or the disk."""
from __future__ import annotations

import pytest

from api_server import create_app
from lib.config import Config
from lib.rabbitmq import Bus
from tests.conftest import sha256_b64


@pytest.fixture
def client(tmp_path):
    config = Config(listen_address="127.0.2.1:1", metadata_db=tmp_path / "md.db")
    bus = Bus(config.rabbitmq_server, "never-started")       # not started: no broker needed
    app = create_app(config, bus=bus)
    yield app.test_client()
    app.extensions["tessera.stop"]()


def test_digest_is_required(client):
    assert client.put("/objects/a", data=b"x").status_code == 400
    assert client.put("/objects/a", data=b"x", headers={"Digest": "SHA-256=x"}).status_code == 400


def test_no_data_servers_is_503_and_writes_no_metadata(client):
    data = b"hello"
    response = client.put("/objects/a", data=data, headers={"Digest": f"SHA-256={sha256_b64(data)}"})
    assert response.status_code == 503
    assert client.get("/versions/a").data == b""
    assert client.get("/objects/a").status_code == 404


@pytest.mark.parametrize("path", ["/objects/", "/objects/%FF", "/objects/a%00b"])
def test_bad_names(client, path):
    data = b"x"
    assert client.put(path, data=data,
                      headers={"Digest": f"SHA-256={sha256_b64(data)}"}).status_code == 400


def test_health_and_methods(client):
    health = client.get("/health").json
    assert health["data_servers"] == 0 and health["metadata"].startswith("sqlite")
    assert client.post("/versions/a").status_code == 405
    assert client.get("/locate/nothash").status_code == 400
    assert client.get("/objects/a", query_string={"version": "x"}).status_code == 400


def test_dedup_put_fails_when_the_content_went_away_meanwhile(client, monkeypatch):
    """A PUT of known content stores nothing; if that content loses its last version and is
    collected while the body arrives, the PUT must not point a version at it: 503, retry."""
    from lib.objects.layer import ObjectLayer
    from lib.rs.params import BLOCK_SIZE

    monkeypatch.setattr(ObjectLayer, "shareable", lambda self, hash_, size: True)
    data = bytes(BLOCK_SIZE + 1)
    response = client.put("/objects/a", data=data,
                          headers={"Digest": f"SHA-256={sha256_b64(data)}"})
    assert response.status_code == 503 and b"send it again" in response.data
    assert client.get("/versions/a").data == b""
