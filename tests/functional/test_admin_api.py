"""The management API's routes in process (tests/functional/inproc_cluster.py), every answer
checked against the OpenAPI document (tests/openapi_check.py)."""
from __future__ import annotations

import hashlib
import io

import pytest

from lib.metadata import RepairRecord
from lib.rs.params import ALL_SHARDS, BLOCK_SIZE
from tests.conftest import Body, sha256_b64
from tests.functional.inproc_cluster import AUTH
from tests.openapi_check import CheckedClient


@pytest.fixture
def client(admin_cluster):
    return CheckedClient(admin_cluster.app, AUTH)


def upload(client, key: str, data: bytes, bucket: str = "book"):
    response = client.post(f"/api/v1/objects?bucket={bucket}&key={key}", data=data,
                           content_type="text/plain")
    assert response.status_code == 201, response.json
    return response.json


def test_raw_upload_is_hashed_by_the_server_and_inspected(client, admin_cluster):
    body = Body(3 * BLOCK_SIZE + 5, seed=1)
    response = client.post("/api/v1/objects?key=big/one.bin", data=body.bytes(),
                           content_type="application/octet-stream")
    assert response.status_code == 201
    uploaded = response.json
    assert uploaded["hash"] == body.hash and uploaded["size"] == body.size
    assert uploaded["bucket"] == "book" and uploaded["number"] == 1
    info = client.get("/api/v1/objects/book/big/one.bin").json
    assert info["version"]["content_type"] == "application/octet-stream"
    assert [s["index"] for s in info["shards"]] == list(range(ALL_SHARDS))
    assert all(s["present"] and s["verified"] for s in info["shards"])
    got = admin_cluster.app.test_client().get("/objects/big/one.bin")
    assert hashlib.sha256(got.data).digest() == hashlib.sha256(body.bytes()).digest()


def test_form_upload_streams_the_file_field(client, admin_cluster):
    data = Body(2 * BLOCK_SIZE + 3, seed=2).bytes()
    response = client.post("/api/v1/objects", content_type="multipart/form-data", data={
        "bucket": "book", "key": "from/form.txt",
        "file": (io.BytesIO(data), "ignored-name.txt", "text/plain")})
    assert response.status_code == 201 and response.json["hash"] == sha256_b64(data)
    by_name = client.post("/api/v1/objects", content_type="multipart/form-data", data={
        "file": (io.BytesIO(b"named"), "the-file-name.txt", "text/plain")})
    assert by_name.status_code == 201 and by_name.json["key"] == "the-file-name.txt"
    info = client.get("/api/v1/objects/book/from/form.txt").json
    assert info["version"]["size"] == len(data)
    assert info["version"]["content_type"] == "text/plain"
    assert admin_cluster.app.test_client().get("/objects/from/form.txt").data == data
    no_file = client.post("/api/v1/objects", content_type="multipart/form-data",
                          data={"key": "x"})
    assert no_file.status_code == 400


def test_bad_forms_are_400_and_store_nothing(client, admin_cluster):
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nbad\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"f\"\r\n\r\n").encode() + b"x" * 1000
    forms = {
        "cut short": head,
        "two files": head + (f"\r\n--{boundary}\r\nContent-Disposition: form-data; "
                             f"name=\"file\"; filename=\"g\"\r\n\r\ny\r\n"
                             f"--{boundary}--\r\n").encode(),
        "fields too large": (f"--{boundary}\r\nContent-Disposition: form-data; "
                             f"name=\"bucket\"\r\n\r\n").encode() + b"b" * (65 * 1024)
        + head[head.index(b"\r\n--"):] + f"\r\n--{boundary}--\r\n".encode(),
        "no boundary": b"",
    }
    for what, body in forms.items():
        mimetype = "multipart/form-data" + ("" if what == "no boundary"
                                            else f"; boundary={boundary}")
        response = client.post("/api/v1/objects", data=body,
                               headers={"Content-Type": mimetype})
        assert response.status_code == 400, what
    assert admin_cluster.api.metadata.version("book", "bad") is None


def test_list_pages_by_cursor(client):
    for i in range(5):
        upload(client, f"dir/{i}", b"x%d" % i)
    upload(client, "other", b"o")
    first = client.get("/api/v1/objects?prefix=dir/&limit=2").json
    assert [o["key"] for o in first["objects"]] == ["dir/0", "dir/1"]
    keys = [o["key"] for o in first["objects"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get("/api/v1/objects", query_string={"prefix": "dir/", "limit": 2,
                                                          "cursor": cursor}).json
        keys += [o["key"] for o in page["objects"]]
        cursor = page["next_cursor"]
    assert keys == [f"dir/{i}" for i in range(5)]
    rolled = client.get("/api/v1/objects?delimiter=/").json
    assert rolled["prefixes"] == ["dir/"] and [o["key"] for o in rolled["objects"]] == ["other"]


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=-1", "limit=abc",
                                   "limit=99999999999999999999", "cursor=%00"])
def test_bad_arguments_are_400(client, query):
    for route in ("/api/v1/objects", "/api/v1/search?q=abc&"):
        sep = "&" if "?" in route else "?"
        response = client.get(f"{route}{sep}{query}".replace("?&", "?"))
        assert response.status_code == 400, (route, query)


def test_search_pages_and_short_queries(client):
    for key in ["logs/app.log", "logs/web.LOG", "img/cat.png", "catalog"]:
        upload(client, key, key.encode())
    found = client.get("/api/v1/search?q=log&limit=1")
    keys, cursor = [o["key"] for o in found.json["objects"]], found.json["next_cursor"]
    while cursor:
        page = client.get("/api/v1/search", query_string={"q": "log", "limit": 1,
                                                         "cursor": cursor}).json
        keys += [o["key"] for o in page["objects"]]
        cursor = page["next_cursor"]
    assert sorted(keys) == ["catalog", "logs/app.log", "logs/web.LOG"]
    short = client.get("/api/v1/search?q=lo").json
    assert short["match"] == "prefix" and [o["key"] for o in short["objects"]] == [
        "logs/app.log", "logs/web.LOG"]
    assert client.get("/api/v1/search?q=").status_code == 400
    assert client.get("/api/v1/search?q=log&cursor=bogus").status_code == 400
    assert client.get("/api/v1/search?q=log&bucket=nope").status_code == 404


def test_delete_a_key_then_a_version(client, admin_cluster):
    first = upload(client, "gone", b"one")
    upload(client, "gone", b"two")
    deleted = client.delete("/api/v1/objects/book/gone")
    assert deleted.status_code == 200 and deleted.json["delete_marker"]
    assert admin_cluster.app.test_client().get("/objects/gone").status_code == 404
    assert client.delete("/api/v1/objects/book/gone").status_code == 404
    removed = client.delete(f"/api/v1/objects/book/gone?versionId={first['version_id']}")
    assert removed.status_code == 200 and not removed.json["delete_marker"]
    assert client.delete(f"/api/v1/objects/book/gone?versionId={first['version_id']}"
                         ).status_code == 404
    assert client.get("/api/v1/objects/book/never").status_code == 404
    assert client.get("/api/v1/objects/nobucket/k").status_code == 404


def test_stats_and_nodes(client, admin_cluster):
    upload(client, "a", b"same")
    upload(client, "b", b"same")
    stats = client.get("/api/v1/stats").json
    assert stats["objects"] == 2 and stats["dedup_ratio"] == 2.0
    assert stats["data_servers_live"] == ALL_SHARDS
    assert stats["prefetch"] == {"jobs": 0, "keys": 0, "queued": 0, "stored": 0, "present": 0,
                                 "retrying": 0, "failed": 0}
    down = admin_cluster.addresses[-1]
    admin_cluster.kill(down)
    nodes = {n["address"]: n for n in client.get("/api/v1/nodes").json["nodes"]}
    assert nodes[down]["state"] == "down" and nodes[down]["shards"] is None
    assert sum(n["state"] == "live" for n in nodes.values()) == ALL_SHARDS - 1


def test_repairs_list_the_cluster_log_newest_first_and_stats_count_it(client, admin_cluster):
    assert client.get("/api/v1/repairs").json == {"repairs": []}
    store = admin_cluster.api.metadata
    store.record_repair(RepairRecord.finished("h1", [0, 2], by="127.0.2.9:1"))
    store.record_repair(RepairRecord.finished("h2", [5], "NotEnoughDataServers: only 3 left",
                                              by="worker"))
    store.record_repair(RepairRecord.finished("h3", [], by="object_scanner"))
    listed = client.get("/api/v1/repairs").json["repairs"]
    assert [(r["hash"], r["outcome"], r["by"]) for r in listed] == [
        ("h3", "done", "object_scanner"), ("h2", "failed", "worker"),
        ("h1", "done", "127.0.2.9:1")]
    assert listed[1]["error"].startswith("NotEnoughDataServers") and listed[2]["shards"] == [0, 2]
    assert [r["hash"] for r in client.get("/api/v1/repairs?limit=1").json["repairs"]] == ["h3"]
    assert client.get("/api/v1/repairs?limit=0").status_code == 400
    assert client.get("/api/v1/repairs?limit=1001").status_code == 400
    assert client.get("/api/v1/stats").json["repairs"] == {"done": 2, "failed": 1,
                                                           "pending": 0}
    assert CheckedClient(admin_cluster.app).get("/api/v1/repairs").status_code == 401


def test_credentials_are_checked_before_anything_is_done(admin_cluster):
    anonymous = CheckedClient(admin_cluster.app)
    assert anonymous.post("/api/v1/objects?key=x", data=b"x").status_code == 401
    wrong = CheckedClient(admin_cluster.app, {"Authorization": "Bearer wrong"})
    assert wrong.delete("/api/v1/objects/book/x").status_code == 403
    assert wrong.get("/api/v1/stats").status_code == 403
    assert admin_cluster.api.metadata.version("book", "x") is None
    document = anonymous.get("/api/v1/openapi.json")
    assert document.status_code == 200 and document.json["openapi"].startswith("3.")
