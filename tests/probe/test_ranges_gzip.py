"""Ranged and resumable download, and gzip, on the real cluster (BOOK chapter 7, W16, W19):
every Range form and edge, 416, Accept-Ranges on every GET, a 1-byte range that reads one
block, ``curl -C -`` after a broken download, and gzip decoded by curl ``--compressed``,
Python's gzip module and requests, for whole objects and ranges."""
from __future__ import annotations

import gzip
import http.client
import socket
import threading
from pathlib import Path

import pytest

from lib.rs.params import BLOCK_SIZE
from scripts.cluster import _children
from tests.conftest import Body, sha256_b64
from tests.probe.conftest import curl

pytestmark = pytest.mark.probe

SIZE = 3 * BLOCK_SIZE + 17
TEXT = b"".join(b"%08d the quick brown fox jumps over the lazy dog\n" % i
                for i in range(60000))                     # ~3.4 MB, compresses ~10x


@pytest.fixture(scope="module")
def stored(cluster):
    from tests.probe.conftest import Client
    c = Client(cluster)
    body = Body(SIZE, seed=11)
    assert c.put("ranges/random", body.bytes(), body.hash).status_code == 200
    assert c.put("ranges/text", TEXT, sha256_b64(TEXT)).status_code == 200
    return body.bytes()


RANGES = [  # header, first, last (inclusive)
    ("bytes=0-0", 0, 0), ("bytes=0-9", 0, 9), ("bytes=5-", 5, SIZE - 1),
    ("bytes=-1", SIZE - 1, SIZE - 1), ("bytes=-100", SIZE - 100, SIZE - 1),
    (f"bytes=-{SIZE + 50}", 0, SIZE - 1), (f"bytes={BLOCK_SIZE - 1}-{BLOCK_SIZE}",
                                            BLOCK_SIZE - 1, BLOCK_SIZE),
    (f"bytes={BLOCK_SIZE}-{BLOCK_SIZE}", BLOCK_SIZE, BLOCK_SIZE),
    (f"bytes={BLOCK_SIZE - 3}-{3 * BLOCK_SIZE + 2}", BLOCK_SIZE - 3, 3 * BLOCK_SIZE + 2),
    (f"bytes={3 * BLOCK_SIZE}-", 3 * BLOCK_SIZE, SIZE - 1),
    (f"bytes={SIZE - 1}-{SIZE + 1000}", SIZE - 1, SIZE - 1),
    ("bytes = 7 - 8", 7, 8),
]


@pytest.mark.parametrize("header, first, last", RANGES)
def test_ranges(client, stored, header, first, last):
    response = client.get("ranges/random", i=first % 2, headers={"Range": header})
    assert response.status_code == 206, response.text
    assert response.content == stored[first:last + 1]
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
    assert response.headers["Content-Length"] == str(last - first + 1)
    assert response.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 9}",
                                    "bytes=-0"])
def test_unsatisfiable_ranges_are_416(client, stored, header):
    response = client.get("ranges/random", headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"
    assert response.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize("header", ["bytes=9-5", "items=0-5", "bytes=0-1,5-6", "bytes=x-"])
def test_ranges_we_may_ignore_give_the_whole_object(client, stored, header):
    response = client.get("ranges/random", headers={"Range": header})
    assert response.status_code == 200 and response.content == stored
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Digest"] == f"SHA-256={sha256_b64(stored)}"


def _rchar(pids) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                total += int(line.split()[1])
    return total


def test_a_one_byte_range_of_a_large_object_reads_one_block(client, stored):
    body = Body(24 * BLOCK_SIZE, seed=12)
    assert client.put("ranges/large", body, body.hash).status_code == 200
    data_pids = [p for n in client.cluster.data for p in [n.process.pid,
                                                            *_children(n.process.pid)]]
    client.get("ranges/large", headers={"Range": "bytes=0-0"})         # warm the locate cache
    before = _rchar(data_pids)
    middle = 13 * BLOCK_SIZE + 12345
    response = client.get("ranges/large", headers={"Range": f"bytes={middle}-{middle}"})
    read = _rchar(data_pids) - before
    assert response.status_code == 206 and len(response.content) == 1
    chunk = [c for i, c in enumerate(body) if i == middle // body.chunk][0]
    assert response.content == chunk[middle % body.chunk:][:1]
    assert read < 2 * BLOCK_SIZE, f"data servers read {read} bytes for a 1-byte range"


def test_every_get_sends_accept_ranges_and_vary(client, stored):
    for headers in ({}, {"Range": "bytes=0-0"}, {"Accept-Encoding": "gzip"}):
        response = client.get("ranges/text", headers=headers)
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.headers["Vary"] == "Accept-Encoding"
    head = client.session.head(client.url("ranges/random"), timeout=10)
    assert head.headers["Accept-Ranges"] == "bytes" and head.headers["Content-Length"] == \
        str(SIZE)


class CuttingProxy:
    """Forwards one request to ``target`` and cuts the connection after ``limit`` bytes of
    the answer: a download broken by the network, deterministically."""

    def __init__(self, target: str, limit: int):
        self._target = target
        self._limit = limit
        self._sock = socket.socket()
        self._sock.bind(("127.0.3.2", 0))
        self._sock.listen(1)
        self.address = "%s:%d" % self._sock.getsockname()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client, _ = self._sock.accept()
        host, port = self._target.split(":")
        upstream = socket.create_connection((host, int(port)))
        upstream.sendall(client.recv(65536))            # curl's GET fits in one segment
        sent = 0
        while sent < self._limit:
            data = upstream.recv(min(65536, self._limit - sent))
            if not data:
                break
            client.sendall(data)
            sent += len(data)
        client.close()
        upstream.close()
        self._sock.close()

    def join(self) -> None:
        self._thread.join(10)


def test_curl_resumes_a_broken_download_to_the_exact_bytes(client, stored, tmp_path):
    out = tmp_path / "random"
    proxy = CuttingProxy(client.cluster.api[0].address, BLOCK_SIZE + 54321)
    broken = curl("-o", str(out), f"http://{proxy.address}/objects/ranges%2Frandom")
    proxy.join()
    assert broken.returncode == 18, broken.stderr          # "transfer closed with ... remaining"
    assert 0 < out.stat().st_size < SIZE
    resumed = curl("-C", "-", "-o", str(out), client.url("ranges/random", i=1))
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == stored
    again = curl("-C", "-", "-o", str(out), client.url("ranges/random"))  # already complete
    assert again.returncode == 0 and out.read_bytes() == stored


def test_gzip_decoded_by_curl_python_gzip_and_requests(client, stored, tmp_path):
    out = tmp_path / "text"
    done = curl("--compressed", "-D", str(tmp_path / "headers"), "-o", str(out),
                client.url("ranges/text"))
    assert done.returncode == 0 and out.read_bytes() == TEXT
    headers = (tmp_path / "headers").read_text().lower()
    assert "content-encoding: gzip" in headers and "content-length" not in headers

    host, port = client.cluster.api[1].address.split(":")
    for accept in ("gzip", "br;q=1.0, gzip;q=0.5, *;q=0", "identity;q=0, *"):
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", "/objects/ranges%2Ftext", headers={"Accept-Encoding": accept})
        raw = connection.getresponse()
        assert raw.getheader("Content-Encoding") == "gzip", accept
        wire = raw.read()
        connection.close()
        assert len(wire) < len(TEXT) / 4 and gzip.decompress(wire) == TEXT

    response = client.get("ranges/text", headers={"Accept-Encoding": "gzip, deflate"})
    assert response.headers["Content-Encoding"] == "gzip" and response.content == TEXT
    assert response.headers["Digest"] == f"SHA-256={sha256_b64(TEXT)}"
    assert response.headers["ETag"].endswith('+gzip"')


def test_gzip_with_ranges(client, stored, tmp_path):
    first, last = BLOCK_SIZE - 100, 2 * BLOCK_SIZE + 99
    response = client.get("ranges/text", headers={"Accept-Encoding": "gzip",
                                                   "Range": f"bytes={first}-{last}"})
    assert response.status_code == 206 and response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(TEXT)}"
    assert response.content == TEXT[first:last + 1]
    out = tmp_path / "part"
    done = curl("--compressed", "-r", f"{first}-{last}", "-o", str(out),
                client.url("ranges/text"))
    assert done.returncode == 0 and out.read_bytes() == TEXT[first:last + 1]
    out = tmp_path / "resumed"
    out.write_bytes(TEXT[:123457])                             # a broken earlier download
    done = curl("--compressed", "-C", "-", "-o", str(out), client.url("ranges/text"))
    assert done.returncode == 0 and out.read_bytes() == TEXT


@pytest.mark.parametrize("accept", ["", "identity", "gzip;q=0", "gzip;q=0.5, identity",
                                    "br, zstd"])
def test_identity_when_gzip_is_not_accepted(client, stored, accept):
    response = client.get("ranges/text", headers={"Accept-Encoding": accept}, stream=True)
    assert "Content-Encoding" not in response.headers
    assert response.headers["Content-Length"] == str(len(TEXT))
    assert response.raw.read() == TEXT


def test_incompressible_content_is_sent_as_it_is(client, stored):
    response = client.get("ranges/random", headers={"Accept-Encoding": "gzip"}, stream=True)
    assert "Content-Encoding" not in response.headers
    assert response.headers["Content-Length"] == str(SIZE)
    assert response.raw.read() == stored


def test_head_reads_metadata_only(client):
    """A HEAD answers from the metadata: it succeeds with every shard of the object gone."""
    import os

    from lib.hashing import sha256_b64

    data = os.urandom(3000)
    hash_ = sha256_b64(data)
    assert client.put("ranges/head-only", data, hash_).status_code == 200
    for paths in client.shard_files(hash_).values():
        for path in paths:
            path.rename(path.with_name(path.name + ".hidden"))
    try:
        head = client.session.head(client.url("ranges/head-only"), timeout=10)
        assert head.status_code == 200 and head.headers["Content-Length"] == "3000"
        assert head.headers["Digest"] == f"SHA-256={hash_}"
        part = client.session.head(client.url("ranges/head-only"), timeout=10,
                                   headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.headers["Content-Length"] == "10"
    finally:
        for node in client.cluster.data:
            for path in (node.storage_root / "objects").glob("*.hidden"):
                path.rename(path.with_name(path.name[:-len(".hidden")]))
