"""Slow clients cannot deny service (issue 11.3): while a hundred connections trickle their
request heads and forty trickle PUT bodies, to an api server (book and S3 listeners) and to a
data server, a well-behaved client's requests are all answered."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest
import requests

from lib.clustermac import HEADER, ClusterMac, derive_key
from lib.hashing import quote_hash
from tests.conftest import sha256_b64
from tests.probe.conftest import Client, s3_endpoint, wait_for

pytestmark = pytest.mark.probe

HEADS = 100
BODIES = 40
#: Seconds between two bytes of a trickle.
DRIP = 0.5


class Trickle(threading.Thread):
    """Many connections, each sent its opening bytes and then one more byte every DRIP
    seconds until the server closes it or the test ends."""

    def __init__(self):
        super().__init__(daemon=True)
        self.socks: list[socket.socket] = []
        self.done = threading.Event()

    def open(self, address: str, opening: bytes, count: int) -> None:
        host, port = address.rsplit(":", 1)
        for _ in range(count):
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(opening)
            sock.setblocking(False)
            self.socks.append(sock)

    def run(self) -> None:
        while not self.done.wait(DRIP):
            for sock in self.socks:
                try:
                    sock.send(b"x")
                except OSError:
                    pass                  # closed by the server: what we want

    def close(self) -> None:
        self.done.set()
        self.join(10)
        for sock in self.socks:
            sock.close()


def _head(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode()


def _body(method: str, path: str, header: str) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n{header}\r\n\r\n"\
        .encode()


def test_trickling_heads_and_bodies_deny_nobody(make_cluster):
    cluster = make_cluster(api_servers=1, workers=0, env={"CLIENT_TIMEOUT": "3"})
    client = Client(cluster)
    data = os.urandom(5000)
    hash_ = sha256_b64(data)
    assert client.put("steady", data, hash_).status_code == 200
    api, s3 = cluster.api[0].address, s3_endpoint(cluster).removeprefix("http://")
    (index, (path,)), *_ = client.shard_files(hash_).items()
    node = next(n for n in cluster.data if path.is_relative_to(n.storage_root))
    shard = f"/objects/{quote_hash(hash_)}.{index}"
    mac = ClusterMac(derive_key(cluster.env_for(node)["CLUSTER_SECRET"].encode()))

    trickle = Trickle()
    try:
        trickle.open(api, _head("/objects/steady"), HEADS)
        trickle.open(s3, _head("/bucket/key"), HEADS // 4)
        fresh = sha256_b64(b"content stored nowhere")
        trickle.open(api, _body("PUT", "/objects/slow", f"Digest: SHA-256={fresh}"), BODIES)
        trickle.open(node.address, _head(shard), HEADS)
        trickle.open(node.address, _body("POST", f"/temp/{quote_hash(hash_)}.{index}?commit=1",
                                         "Size: 1000000"), BODIES)
        trickle.start()
        time.sleep(1)                             # every thread the trickles can hold is held
        answers = []
        for i in range(6):
            answers.append(requests.get(client.url("steady"), timeout=30).content == data)
            body = os.urandom(100 + i)
            answers.append(client.put(f"steady-{i}", body, sha256_b64(body)).status_code)
            answers.append(requests.get(f"http://{node.address}{shard}", timeout=30,
                                        headers={HEADER: mac.sign("GET", shard)}).status_code)
            answers.append(requests.get(f"http://{s3}/", timeout=30).status_code)
        assert answers == [True, 200, 200, 403] * 6
    finally:
        trickle.close()
    wait_for(lambda: client.temp_files() == [], timeout=30)
    assert client.get("steady").content == data
