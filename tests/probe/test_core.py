"""Stories of the core cluster (issue 2), told over real HTTP to real processes."""
from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest
import requests

from lib.hashing import quote_hash
from lib.rs import layout
from lib.rs.params import ALL_SHARDS, BLOCK_SIZE
from tests.conftest import Body, sha256_b64
from tests.probe.conftest import Client, curl

pytestmark = pytest.mark.probe


def unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def test_curl_put_stores_six_shards_one_per_data_server(client: Client):
    data = f"this object will be separate to 4+2 shards {os.urandom(8).hex()}".encode()
    hash_ = sha256_b64(data)
    name = unique("test")
    put = curl("-X", "PUT", client.url(name), "-d", data.decode(), "-H",
               f"Digest: SHA-256={hash_}", "-w", "%{http_code}")
    assert put.stdout == b"200", put
    shards = client.shard_files(hash_)
    assert sorted(shards) == list(range(ALL_SHARDS))
    assert all(len(files) == 1 for files in shards.values())
    holders = {files[0].parent.parent for files in shards.values()}
    assert len(holders) == ALL_SHARDS
    for index, (path,) in shards.items():
        content = path.read_bytes()
        assert path.name == f"{quote_hash(hash_)}.{index}.{quote_hash(sha256_b64(content))}"
        assert len(content) == layout.shard_size(len(data))
    got = curl("-i", client.url(name, 1))
    head, _, body = got.stdout.partition(b"\r\n\r\n")
    assert body == data
    assert f"content-length: {len(data)}".encode() in head.lower()


@pytest.mark.parametrize("size", [0, 1, BLOCK_SIZE - 1, BLOCK_SIZE, 3 * BLOCK_SIZE + 7])
def test_round_trip_sizes(client: Client, size):
    body = Body(size, seed=size)
    name = unique(f"size{size}")
    assert client.put(name, body, body.hash).status_code == 200
    got = client.get(name)
    assert got.status_code == 200
    assert got.headers["Content-Length"] == str(size)
    assert got.content == body.bytes()


def test_chunked_upload(client: Client):
    body = Body(2 * BLOCK_SIZE + 5, seed=11)
    response = client.put(unique("chunked"), iter(body), body.hash)   # a generator: chunked
    assert response.status_code == 200, response.text


def test_hashes_with_slashes_plus_and_leading_slash(client: Client):
    """The book silently lost objects whose hash starts with '/' or holds '//' (W27)."""
    wanted = [lambda h: h.startswith("/"), lambda h: "//" in h, lambda h: "+" in h]
    for test in wanted:
        for i in range(100000):
            data = f"probe {i} {os.urandom(4).hex()}".encode()
            if test(sha256_b64(data)):
                break
        name = unique("slashy")
        assert client.put(name, data, sha256_b64(data)).status_code == 200
        assert client.get(name).content == data
        assert len(client.shard_files(sha256_b64(data))) == ALL_SHARDS


@pytest.mark.parametrize("digest", [None, "SHA-256=", "SHA-256=notbase64", "MD5=abc"])
def test_missing_or_malformed_digest_is_400(client: Client, digest):
    headers = {"Digest": digest} if digest else {}
    response = requests.put(client.url(unique("nodigest")), data=b"abc", headers=headers,
                            timeout=10)
    assert response.status_code == 400


def test_digest_mismatch_is_400_and_leaves_nothing(client: Client):
    name = unique("liar")
    data = os.urandom(BLOCK_SIZE + 10)
    wrong = sha256_b64(b"something else")
    response = client.put(name, data, wrong)
    assert response.status_code == 400
    assert client.shard_files(wrong) == {}
    assert client.shard_files(sha256_b64(data)) == {}
    assert client.temp_files() == []
    assert client.get(name).status_code == 404
    assert requests.get(f"{client.api()}/versions/{name}", timeout=10).text == ""


def test_versions_latest_specific_missing_and_bad(client: Client):
    name = unique("versioned")
    first, second = b"version one", b"version two!"
    assert client.put(name, first, sha256_b64(first)).headers["Version"] == "1"
    assert client.put(name, second, sha256_b64(second), i=1).headers["Version"] == "2"
    assert client.get(name).content == second
    assert client.get(name, params={"version": 1}).content == first
    assert client.get(name, params={"version": 2}).content == second
    assert client.get(name, params={"version": 0}).content == second
    assert client.get(name, params={"version": 3}).status_code == 404
    assert client.get(name, params={"version": "x"}).status_code == 400
    assert client.get(name, params={"version": "-1"}).status_code == 400


def test_delete_adds_marker_and_keeps_old_versions(client: Client):
    name = unique("deleted")
    data = b"soon gone"
    client.put(name, data, sha256_b64(data))
    response = requests.delete(client.url(name), timeout=10)
    assert response.status_code == 200
    assert client.get(name).status_code == 404
    assert client.get(name, params={"version": 1}).content == data
    assert requests.delete(client.url(name), timeout=10).status_code == 404
    assert requests.delete(client.url(unique("never")), timeout=10).status_code == 404
    lines = [json.loads(line) for line in
             requests.get(f"{client.api()}/versions/{name}", timeout=10).text.splitlines()]
    assert [(v["Version"], v["Size"], v["Hash"]) for v in lines] == [
        (1, len(data), sha256_b64(data)), (2, 0, "")]


def test_versions_listing_pages(client: Client):
    name = unique("paged")
    for i in range(5):
        data = f"page {i}".encode()
        client.put(name, data, sha256_b64(data))
    url = f"{client.api()}/versions/{name}"
    every = [json.loads(line) for line in requests.get(url, timeout=10).text.splitlines()]
    assert [v["Version"] for v in every] == [1, 2, 3, 4, 5]
    assert set(every[0]) == {"Name", "Version", "Size", "Hash", "VersionId"}
    page = requests.get(url, params={"from": 1, "size": 2}, timeout=10).text.splitlines()
    assert [json.loads(line)["Version"] for line in page] == [2, 3]
    everything = requests.get(f"{client.api()}/versions/", timeout=10).text.splitlines()
    assert any(json.loads(line)["Name"] == name for line in everything)
    assert requests.get(url, params={"size": "x"}, timeout=10).status_code == 400


def test_locate(client: Client):
    data = os.urandom(1000)
    hash_ = sha256_b64(data)
    client.put(unique("located"), data, hash_)
    response = requests.get(f"{client.api()}/locate/{quote_hash(hash_)}", timeout=10)
    assert response.status_code == 200
    shards = response.json()
    assert sorted(shards) == [str(i) for i in range(ALL_SHARDS)]
    assert set(shards.values()) == {n.address for n in client.cluster.data}
    missing = quote_hash(sha256_b64(b"never stored"))
    assert requests.get(f"{client.api()}/locate/{missing}", timeout=10).status_code == 404
    assert requests.get(f"{client.api()}/locate/garbage", timeout=10).status_code == 400


def test_dedup_writes_no_new_shards(client: Client):
    data = os.urandom(BLOCK_SIZE + 3)
    hash_ = sha256_b64(data)
    assert client.put(unique("orig"), data, hash_).status_code == 200
    before = {i: [p.stat().st_mtime_ns for p in files]
              for i, files in client.shard_files(hash_).items()}
    copy = unique("copy")
    assert client.put(copy, data, hash_).status_code == 200
    after = {i: [p.stat().st_mtime_ns for p in files]
             for i, files in client.shard_files(hash_).items()}
    assert before == after
    assert client.get(copy).content == data
    # dedup still checks the body against the digest
    assert client.put(unique("dedup-liar"), b"other bytes", hash_).status_code == 400


@pytest.mark.parametrize("name", ["with space", "a/b/c", "/leading", "trailing/", "a//b",
                                  "名字.txt", "percent%41", "question?mark", "plus+sign",
                                  "x" * 1024])
def test_names_round_trip(client: Client, name):
    data = f"named {name}".encode()
    assert client.put(name, data, sha256_b64(data)).status_code == 200
    assert client.get(name).content == data
    listing = requests.get(f"{client.api()}/versions/{requests.utils.quote(name, safe='')}",
                           timeout=10).text.splitlines()
    assert json.loads(listing[-1])["Name"] == name


@pytest.mark.parametrize("raw_path", ["/objects/", "/objects/%FF%FE", "/objects/nul%00byte",
                                      "/objects/" + "x" * 1025])
def test_bad_names_are_400_and_touch_nothing(client: Client, raw_path):
    data = b"bad name"
    response = requests.put(client.api() + raw_path, data=data,
                            headers={"Digest": f"SHA-256={sha256_b64(data)}"}, timeout=10)
    assert response.status_code == 400
    assert client.shard_files(sha256_b64(data)) == {}


def test_health_everywhere_and_405(client: Client):
    for node in client.cluster.api:
        health = requests.get(f"http://{node.address}/health", timeout=5).json()
        assert health["status"] == "ok"
        assert health["data_servers"] == len(client.cluster.data)
        assert health["metadata"].startswith("sqlite")
    for node in client.cluster.data:
        assert requests.get(f"http://{node.address}/health", timeout=5).json()["status"] == "ok"
    assert requests.post(client.url("x"), timeout=5).status_code in (405, 400)
    assert requests.patch(client.url("x"), timeout=5).status_code == 405
    assert requests.put(f"{client.api()}/versions/x", timeout=5).status_code == 405
    assert requests.delete(f"{client.api()}/locate/x", timeout=5).status_code == 405


def test_concurrent_puts_of_one_name_never_lose_a_version(client: Client):
    name = unique("race")
    results = []

    def put(i):
        data = f"racer {i}".encode()
        results.append(client.put(name, data, sha256_b64(data), i=i % 2).status_code)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 16
    lines = requests.get(f"{client.api()}/versions/{name}", timeout=10).text.splitlines()
    assert [json.loads(line)["Version"] for line in lines] == list(range(1, 17))


def test_large_object_streams_in_bounded_memory(client: Client):
    body = Body(160 * 1024 * 1024, seed=99)
    name = unique("large")
    assert client.put(name, body, body.hash).status_code == 200
    sha = hashlib.sha256()
    with client.get(name, stream=True) as response:
        for chunk in response.iter_content(1 << 20):
            sha.update(chunk)
    assert sha256_b64(b"") != body.hash
    import base64
    assert base64.b64encode(sha.digest()).decode() == body.hash
    for node in client.cluster.api:
        assert peak_rss_mb(node.process.pid) < 150


def peak_rss_mb(pid: int) -> float:
    """The largest VmHWM of a process and its children (gunicorn master and workers)."""
    from scripts.cluster import _children
    peak = 0
    for p in [pid, *_children(pid)]:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
    return peak


def test_malformed_messages_are_dropped_not_fatal(client: Client):
    from lib.rabbitmq import Bus
    from tests.probe.conftest import RABBITMQ
    cluster = client.cluster
    bus = Bus(RABBITMQ, "prankster", exchanges=(cluster.api_exchange, cluster.data_exchange))
    bus.start()
    try:
        assert bus.connected.wait(10)
        for body in (b"", b"not json", b"{}", b'{"Addr": 5}', b"\xff\xfe", b'"%2F%2F"', b"[1,2]"):
            assert bus.publish(cluster.api_exchange, "", body)
            assert bus.publish(cluster.data_exchange, "", body, reply_to="amq.nowhere")
    finally:
        bus.stop()
    data = os.urandom(3000)
    name = unique("after-garbage")
    assert client.put(name, data, sha256_b64(data)).status_code == 200
    assert client.get(name).content == data
    assert all(node.running for node in cluster.data + cluster.api)
