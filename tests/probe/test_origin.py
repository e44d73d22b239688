"""Third-party origin, end to end: a real cluster (one gunicorn worker per api server, so
"one fetch per api process" is exact) whose book bucket fetches missing keys from an HTTP
origin the test runs on 127.0.3.x, and a bucket whose origin is a second Tessera cluster's S3
endpoint.  Every address is 127.0.3.x or one of the clusters' own."""
from __future__ import annotations

import base64
import concurrent.futures
import hashlib

import pytest
import requests

from tests.conftest import Body
from tests.origin_server import Origin
from tests.probe.conftest import (Client, _make_cluster, _teardown, s3_client, s3_endpoint,
                                  wait_for)


@pytest.fixture(scope="module")
def origin():
    with Origin("127.0.3.210") as o:
        yield o


@pytest.fixture(scope="module")
def cached(tmp_path_factory, origin):
    c = _make_cluster(tmp_path_factory.mktemp("origin"), env={
        "ORIGIN_URL": origin.template, "WORKERS": "1", "ORIGIN_READ_TIMEOUT": "1",
        "ORIGIN_BREAKER_FAILURES": "100", "ORIGIN_NEGATIVE_TTL": "300"})
    try:
        c.start()
        yield c
    finally:
        _teardown(c)


def admin(cluster, method: str, path: str, **kwargs) -> requests.Response:
    return requests.request(method, f"http://{cluster.api[0].address}/api/v1{path}",
                            headers={"Authorization": f"Bearer {cluster.admin_token}"},
                            timeout=30, **kwargs)


def _digest(chunks) -> str:
    sha = hashlib.sha256()
    for chunk in chunks:
        sha.update(chunk)
    return base64.b64encode(sha.digest()).decode()


def test_a_miss_is_served_and_stored_and_read_back_from_both_api_servers(cached, origin):
    client = Client(cached)
    body = Body(5 << 20, seed=11)
    origin.add("first/object.bin", body, content_type="application/x-first")
    with client.get("first/object.bin", stream=True) as response:
        assert response.status_code == 200
        assert int(response.headers["Content-Length"]) == body.size
        assert _digest(response.iter_content(1 << 16)) == body.hash
    versions = requests.get(f"{client.api(0)}/versions/first%2Fobject.bin", timeout=10).text
    assert f'"Hash": "{body.hash}"' in versions and '"Version": 1' in versions
    for i in (0, 1):
        again = client.get("first/object.bin", i)
        assert again.status_code == 200 and again.headers["Digest"] == f"SHA-256={body.hash}"
        assert _digest([again.content]) == body.hash
    assert origin.gets("first/object.bin") == 1
    head = s3_client(cached).head_object(Bucket="book", Key="first/object.bin")
    assert head["ContentType"] == "application/x-first"
    assert head["ETag"] == f'"origin-etag-{body.size}"'


def test_a_huge_object_streams_through_without_being_held(cached, origin):
    """256 MiB through the tee: the client's bytes, and the stored bytes read back, hash to
    the origin's; the api server's memory stays far below the object."""
    client = Client(cached)
    body = Body(256 << 20, seed=12)
    origin.add("huge", body)
    with client.get("huge", stream=True) as response:
        assert response.status_code == 200
        assert _digest(response.iter_content(1 << 20)) == body.hash
    with client.get("huge", 1, stream=True) as response:
        assert response.headers["Digest"] == f"SHA-256={body.hash}"
        assert _digest(response.iter_content(1 << 20)) == body.hash
    rss = max(_peak_rss_kib(pid) for pid in _api_pids(cached))
    print(f"api server peak RSS after a 256 MiB miss: {rss} KiB")
    assert rss < 150 * 1024, f"an api server peaked at {rss} KiB"


def _api_pids(cluster) -> list[int]:
    from scripts.cluster import _children
    return [pid for node in cluster.api for pid in [node.process.pid, *_children(node.process.pid)]]


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def test_concurrent_misses_make_one_fetch_per_api_process(cached, origin):
    client = Client(cached)
    body = Body(3 << 20, seed=13)
    origin.add("hot", body, delay=0.5)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: requests.get(client.url("hot"), timeout=60), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert {_digest([a.content]) for a in answers} == {body.hash}
    assert origin.gets("hot") == 1


def test_a_range_miss_answers_the_range_and_stores_the_whole(cached, origin):
    client = Client(cached)
    body = Body(3_000_000, seed=14)
    origin.add("ranged", body)
    partial = client.get("ranged", headers={"Range": "bytes=2000000-2000099"})
    assert partial.status_code == 206 and partial.content == body.bytes()[2_000_000:2_000_100]
    assert partial.headers["Content-Range"] == f"bytes 2000000-2000099/{body.size}"
    whole = client.get("ranged", 1)
    assert whole.headers["Digest"] == f"SHA-256={body.hash}" and origin.gets("ranged") == 1


def test_truncated_bodies_are_cut_and_not_stored(cached, origin):
    client = Client(cached)
    body = Body(4 << 20, seed=15)
    origin.add("cut", body, truncate=3 << 20)
    with pytest.raises(requests.exceptions.RequestException):
        with client.get("cut", stream=True) as response:
            assert response.status_code == 200
            for _ in response.iter_content(1 << 16):
                pass
    assert requests.get(f"{client.api(0)}/versions/cut", timeout=10).text == ""
    wait_for(lambda: not client.temp_files(), timeout=20)
    assert not client.shard_files(body.hash)


def test_origin_errors_in_both_apis(cached, origin):
    from botocore.exceptions import ClientError

    client = Client(cached)
    s3 = s3_client(cached)
    origin.add("broken", b"", status=500)
    origin.add("slow", b"late", delay=3)
    for key, status, code in (("broken", 502, "OriginUnavailable"),
                              ("slow", 504, "OriginTimeout"),
                              ("never-there", 404, "NoSuchKey")):
        book = client.get(key)
        assert book.status_code == status and origin.address in book.text, book.text
        with pytest.raises(ClientError) as error:
            s3.get_object(Bucket="book", Key=key)
        answer = error.value.response
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == status
        assert answer["Error"]["Code"] == code and origin.address in answer["Error"]["Message"]
    assert origin.gets("never-there") == 1                 # the 404 is remembered
    assert client.session.head(client.url("broken"), timeout=10).status_code == 502


def test_head_miss_answers_the_origin_metadata_without_storing(cached, origin):
    client = Client(cached)
    origin.add("peek", b"0123456789", content_type="text/x-peek")
    head = client.session.head(client.url("peek"), timeout=10)
    assert head.status_code == 200 and head.headers["Content-Length"] == "10"
    assert "Version" not in head.headers
    assert origin.gets("peek") == 0
    assert requests.get(f"{client.api(0)}/versions/peek", timeout=10).text == ""


def test_prefetch_through_the_worker(cached, origin):
    client = Client(cached)
    bodies = {f"pre/{i}": Body(200_000 + i, seed=20 + i) for i in range(3)}
    for key, body in bodies.items():
        origin.add(key, body)
    answer = admin(cached, "POST", "/origin/prefetch",
                   json={"keys": [*bodies, "pre/missing"]})
    assert answer.status_code == 202, answer.text
    job = answer.json()["job"]
    report = wait_for(lambda: (lambda r: r if r["done"] else None)(
        admin(cached, "GET", "/origin/prefetch", params={"job": job}).json()), timeout=60)
    assert (report["stored"], report["failed"], report["keys"]) == (3, 1, 4)
    assert report["errors"][0]["key"] == "pre/missing"
    everything = admin(cached, "GET", "/origin/prefetch").json()
    assert any(j["job"] == job for j in everything["jobs"])
    assert everything["total"]["stored"] >= 3 and everything["total"]["failed"] >= 1
    for key, body in bodies.items():
        assert origin.gets(key) == 1
        assert client.get(key).headers["Digest"] == f"SHA-256={body.hash}"


def test_a_second_cluster_as_an_s3_origin(cached, make_cluster):
    upstream = make_cluster()
    remote = s3_client(upstream)
    remote.create_bucket(Bucket="upstream")
    body = Body(6 << 20, seed=30)
    remote.put_object(Bucket="upstream", Key="deep/k ey", Body=body.bytes(),
                      ContentType="image/x-remote")
    local = s3_client(cached)
    local.create_bucket(Bucket="mirror")
    endpoint = s3_endpoint(upstream)
    assert endpoint.startswith("http://127.0.2.")
    spec = {"kind": "s3", "url": endpoint, "bucket": "upstream", "access_key": "tessera",
            "secret_key": "tessera-secret-key"}
    put = admin(cached, "PUT", "/origins/mirror", json=spec)
    assert put.status_code == 200 and "tessera-secret-key" not in put.text
    shown = admin(cached, "GET", "/origins/mirror").json()["origin"]
    assert shown["secret_key_set"] == "true" and "secret_key" not in shown
    got = local.get_object(Bucket="mirror", Key="deep/k ey")
    assert got["ContentType"] == "image/x-remote"
    assert _digest([got["Body"].read()]) == body.hash
    upstream.stop()
    again = local.get_object(Bucket="mirror", Key="deep/k ey")
    assert _digest([again["Body"].read()]) == body.hash
    with pytest.raises(Exception) as error:
        local.get_object(Bucket="mirror", Key="not-fetched-yet")
    assert "OriginUnavailable" in str(error.value)
    assert admin(cached, "DELETE", "/origins/mirror").status_code == 204
    assert admin(cached, "GET", "/origins/mirror").status_code == 404
