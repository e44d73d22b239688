"""PostgreSQL metadata shared by api servers standing for two hosts (127.0.2.1, 127.0.3.1)."""
from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from lib.hashing import sha256_b64
from lib.metadata.postgres import PostgresStore
from tests.probe.conftest import Client, wait_for

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_cluster(make_cluster):
    schema = f"probe_{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES}?schema={schema}"
    cluster = make_cluster(env={"METADATA_URL": url}, start=False)
    second = cluster.api[1]
    port = second.address.rsplit(":", 1)[1]
    second.address = f"127.0.3.1:{port}"                 # the "other host"
    second.env["S3_LISTEN_ADDRESS"] = f"127.0.3.1:{int(port) + 1}"
    try:
        cluster.start()
        yield cluster, schema
    finally:
        cluster.stop()
        PostgresStore(url).drop_schema()


def _put(address: str, name: str, data: bytes) -> int:
    try:
        return requests.put(f"http://{address}/objects/{name}", data=data, timeout=60,
                            headers={"Digest": f"SHA-256={sha256_b64(data)}"}).status_code
    except requests.RequestException:
        return -1


def test_two_hosts_share_one_store_without_losing_a_version(pg_cluster):
    cluster, _ = pg_cluster
    addresses = [n.address for n in cluster.api]
    acknowledged: dict[str, list[bytes]] = {f"k{i}": [] for i in range(4)}
    lock = threading.Lock()

    def writer(w: int) -> None:
        for j in range(15):
            name = f"k{(w + j) % 4}"
            data = f"writer {w} put {j}".encode()
            if _put(addresses[w % 2], name, data) == 200:
                with lock:
                    acknowledged[name].append(data)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    for name, bodies in acknowledged.items():
        lines = requests.get(f"http://{addresses[1]}/versions/{name}",
                             timeout=30).text.splitlines()
        assert len(lines) == len(bodies) == 30, name
        numbers = sorted(int(line.split('"Version": ')[1].split(",")[0]) for line in lines)
        assert numbers == list(range(1, 31))
        got = {requests.get(f"http://{addresses[0]}/objects/{name}?version={n}",
                            timeout=30).content for n in numbers}
        assert got == set(bodies)


def test_killed_connections_fail_requests_in_flight_only(pg_cluster):
    cluster, schema = pg_cluster
    client = Client(cluster)
    stop = threading.Event()
    outcomes: list[tuple[str, int]] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        j = 0
        while not stop.is_set():
            name = f"kill/{w}/{j}"
            status = _put(cluster.api[w % 2].address, name, name.encode())
            with lock:
                outcomes.append((name, status))
            j += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            for _ in range(5):
                time.sleep(0.4)
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = %s", (f"tessera:{schema}",))
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    statuses = {s for _, s in outcomes}
    assert statuses <= {200, 503}, statuses
    for name, status in outcomes:
        if status == 200:
            assert client.get(name).content == name.encode(), name
    # the pools reconnected: both api servers serve again without a restart
    for i in range(2):
        wait_for(lambda: _put(cluster.api[i].address, f"after/{i}", b"after") == 200)
