"""The management API on a real cluster, as an operator uses it: upload, list, search, look
at an object's six shards, lose a data server and see it, delete."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess

import requests

from lib.rs.params import ALL_SHARDS
from tests.conftest import Body, sha256_b64
from tests.openapi_check import check
from tests.probe.conftest import curl, wait_for
from tests.probe.test_readme import readme_block


class Admin:
    def __init__(self, cluster):
        self.base = f"http://{cluster.api[0].address}/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {cluster.admin_token}"

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        response = self.session.request(method, self.base + path, timeout=60, **kwargs)
        check(method, response.request.url, response.status_code, response.json())
        return response


def test_an_operator_uploads_finds_inspects_and_deletes(make_cluster):
    cluster = make_cluster(api_servers=1)
    admin = Admin(cluster)
    body = Body(3 * 1024 * 1024 + 17, seed=15)
    uploaded = admin.call("POST", "/objects", data={"key": "reports/2026/q4.bin"},
                          files={"file": ("q4.bin", body.bytes(), "application/x-report")})
    assert uploaded.status_code == 201 and uploaded.json()["hash"] == body.hash

    listed = admin.call("GET", "/objects", params={"prefix": "reports/", "limit": 10}).json()
    assert [o["key"] for o in listed["objects"]] == ["reports/2026/q4.bin"]
    found = admin.call("GET", "/search", params={"q": "2026/Q4"}).json()
    assert [o["key"] for o in found["objects"]] == ["reports/2026/q4.bin"]

    info = admin.call("GET", "/objects/book/reports/2026/q4.bin").json()
    assert info["version"]["content_type"] == "application/x-report"
    assert all(s["present"] and s["verified"] for s in info["shards"])
    assert len(info["shards"]) == ALL_SHARDS
    nodes = admin.call("GET", "/nodes").json()["nodes"]
    assert [n["state"] for n in nodes] == ["live"] * ALL_SHARDS

    victim = next(node for node in cluster.data
                  if node.address == info["shards"][0]["data_server"])
    cluster.kill_node(victim)
    after = wait_for(lambda: (lambda i: i if sum(not s["present"] for s in i["shards"]) == 1
                              else None)(admin.call("GET", "/objects/book/reports/2026/q4.bin"
                                                    ).json()), timeout=30)
    (missing,) = [s for s in after["shards"] if not s["present"]]
    assert missing["index"] == 0 and missing["data_server"] is None
    states = wait_for(lambda: (lambda n: n if n[victim.address] == "down" else None)(
        {n["address"]: n["state"] for n in admin.call("GET", "/nodes").json()["nodes"]}),
        timeout=30)
    assert list(states.values()).count("live") == ALL_SHARDS - 1
    assert admin.call("GET", "/stats").json()["data_servers_live"] == ALL_SHARDS - 1

    # a read from the five shards left has shard 0 rebuilt elsewhere, by the api server or
    # the worker: the cluster's repair log says so, and /stats counts it
    sha = hashlib.sha256()
    with requests.get(f"http://{cluster.api[0].address}/objects/reports/2026/q4.bin",
                      stream=True, timeout=60) as got:
        assert got.status_code == 200
        for chunk in got.iter_content(1 << 16):
            sha.update(chunk)
    assert base64.b64encode(sha.digest()).decode() == body.hash
    (repair, *_) = wait_for(lambda: [
        r for r in admin.call("GET", "/repairs", params={"limit": 10}).json()["repairs"]
        if r["hash"] == body.hash and r["outcome"] == "done" and r["shards"] == [0]],
        timeout=60)
    assert repair["by"] in ("worker", cluster.api[0].address) and repair["error"] is None
    assert admin.call("GET", "/stats").json()["repairs"]["done"] >= 1

    deleted = admin.call("DELETE", "/objects/book/reports/2026/q4.bin")
    assert deleted.status_code == 200 and deleted.json()["delete_marker"]
    assert requests.get(f"http://{cluster.api[0].address}/objects/reports/2026/q4.bin",
                        timeout=30).status_code == 404
    assert admin.call("GET", "/search", params={"q": "2026/Q4"}).json()["objects"] == []


def test_readme_management_examples_admin_s3_key_and_book_token(make_cluster, tmp_path):
    """The README's curl lines as written; an S3 key marked admin through curl --aws-sigv4;
    BOOK_API_TOKEN guarding the book API's writes."""
    credentials = tmp_path / "credentials"
    credentials.write_text("[ops]\naws_access_key_id = OPSKEY\n"
                           "aws_secret_access_key = ops-secret\nadmin = true\n"
                           "[user]\naws_access_key_id = USERKEY\n"
                           "aws_secret_access_key = user-secret\n")
    cluster = make_cluster(api_servers=1, env={"S3_CREDENTIALS_FILE": str(credentials),
                                               "BOOK_API_TOKEN": "book-token"})
    address = cluster.api[0].address
    script = readme_block("admin").replace("127.0.2.1:12345", address).replace(
        "/tmp/q4.txt", f"{tmp_path}/q4.txt")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                          env={**os.environ, "ADMIN_TOKEN": cluster.admin_token},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answers = done.stdout.splitlines()
    uploaded, listed, found, info, stats, nodes, repairs, deleted = (
        json.loads(a) for a in answers[:8])
    assert uploaded["key"] == "reports/q4.txt" and uploaded["size"] == 18
    assert [o["key"] for o in listed["objects"]] == ["reports/q4.txt"]
    assert [o["key"] for o in found["objects"]] == ["reports/q4.txt"]
    assert sum(s["present"] and s["verified"] for s in info["shards"]) == ALL_SHARDS
    assert stats["objects"] == 1 and len(nodes["nodes"]) == ALL_SHARDS
    assert repairs == {"repairs": []}              # nothing was damaged
    assert deleted["delete_marker"] and answers[8] == "401"

    admin = curl("--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "OPSKEY:ops-secret",
                 f"http://{address}/api/v1/stats")
    assert json.loads(admin.stdout)["data_servers_live"] == ALL_SHARDS
    user = curl("--aws-sigv4", "aws:amz:us-east-1:s3", "--user", "USERKEY:user-secret",
                "-o", "/dev/null", "-w", "%{http_code}", f"http://{address}/api/v1/stats")
    assert user.stdout == b"403"

    put = ["-X", "PUT", "-H", f"Digest: SHA-256={sha256_b64(b'hi')}", "--data-binary", "hi",
           "-o", "/dev/null", "-w", "%{http_code}", f"http://{address}/objects/guarded"]
    assert curl(*put).stdout == b"401"
    assert curl("-H", "Authorization: Bearer book-token", *put).stdout == b"200"
    assert curl(f"http://{address}/objects/guarded").stdout == b"hi"
