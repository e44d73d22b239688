"""Origins and prefetch jobs through the management API, in process (no broker, no data
servers): validation, secrets never answered, the book bucket's ORIGIN_URL default."""
from __future__ import annotations

import pytest

from api_server import create_app
from lib.config import Config
from lib.rabbitmq import Bus

TOKEN = "origin-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
S3_SPEC = {"kind": "s3", "url": "http://127.0.3.9:9000", "bucket": "up", "access_key": "AK",
           "secret_key": "very-secret"}


@pytest.fixture
def client(tmp_path):
    config = Config(listen_address="127.0.2.1:1", metadata_db=tmp_path / "md.db",
                    admin_token=TOKEN, origin_url="http://127.0.3.9:8000/files/{key}")
    app = create_app(config, bus=Bus(config.rabbitmq_server, "never-started"))
    app.extensions["tessera.api"].layer.create_bucket("mirror")
    yield app.test_client()
    app.extensions["tessera.stop"]()


def test_book_bucket_defaults_to_origin_url(client):
    answer = client.get("/api/v1/origins/book", headers=AUTH)
    assert answer.status_code == 200 and answer.json["source"] == "ORIGIN_URL"
    assert [o["bucket"] for o in client.get("/api/v1/origins", headers=AUTH).json["origins"]] \
        == ["book"]


def test_put_get_delete_never_answer_the_secret(client):
    put = client.put("/api/v1/origins/mirror", json=S3_SPEC, headers=AUTH)
    assert put.status_code == 200 and b"very-secret" not in put.data
    assert put.json["origin"]["secret_key_set"] == "true" and put.json["bucket"] == "mirror"
    assert put.json["origin"]["bucket"] == "up" and "secret_key" not in put.json["origin"]
    # a PUT without the secret keeps the stored one
    changed = client.put("/api/v1/origins/mirror", json={**S3_SPEC, "secret_key": "",
                                                         "region": "eu-west-1"}, headers=AUTH)
    assert changed.status_code == 200 and changed.json["origin"]["region"] == "eu-west-1"
    assert changed.json["origin"]["secret_key_set"] == "true"
    listed = client.get("/api/v1/origins", headers=AUTH)
    assert b"very-secret" not in listed.data and len(listed.json["origins"]) == 2
    assert client.delete("/api/v1/origins/mirror", headers=AUTH).status_code == 204
    assert client.get("/api/v1/origins/mirror", headers=AUTH).status_code == 404
    assert client.delete("/api/v1/origins/mirror", headers=AUTH).status_code == 404


@pytest.mark.parametrize("spec", [
    {"kind": "ftp", "url": "http://127.0.3.9/{key}"},
    {"kind": "http", "url": "http://127.0.3.9/no-template"},
    {"kind": "http", "url": "file:///etc/{key}"},
    {"kind": "s3", "url": "http://127.0.3.9:9000", "bucket": "up"},         # no credentials
    {"kind": "http", "url": 7},
])
def test_bad_specs_are_400(client, spec):
    answer = client.put("/api/v1/origins/mirror", json=spec, headers=AUTH)
    assert answer.status_code == 400 and answer.json["error"]["message"]


def test_unknown_bucket_and_malformed_bodies(client):
    assert client.put("/api/v1/origins/nobucket", json=S3_SPEC,
                      headers=AUTH).status_code == 404
    assert client.put("/api/v1/origins/mirror", data=b"[]", headers={
        **AUTH, "Content-Type": "application/json"}).status_code == 400
    assert client.get("/api/v1/origins/mirror").status_code == 401


def test_prefetch_requests_are_checked(client):
    post = "/api/v1/origin/prefetch"
    assert client.post(post, json={"keys": []}, headers=AUTH).status_code == 400
    assert client.post(post, json={"keys": ["a"] * 1001}, headers=AUTH).status_code == 400
    assert client.post(post, json={"keys": ["a"], "bucket": "mirror"},
                       headers=AUTH).status_code == 409        # mirror has no origin
    assert client.get(post, headers=AUTH).json["jobs"] == []
    assert client.get(post, headers=AUTH).json["total"]["keys"] == 0
    assert client.get(post, query_string={"job": "nope"}, headers=AUTH).status_code == 404
