"""Surviving damage (issue 3): lost and corrupt shards, write quorum, node and broker loss."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
import requests

from lib.rs import layout
from lib.rs.params import ALL_SHARDS, BLOCK_SIZE
from tests.conftest import Body, Sized, sha256_b64
from tests.probe.conftest import Client, wait_for

pytestmark = pytest.mark.probe


def put_object(client: Client, size: int, seed: int | None = None) -> tuple[str, Body]:
    body = Body(size, seed=os.getpid() * 1000 + int.from_bytes(os.urandom(3), "big")
                if seed is None else seed)
    name = f"obj-{os.urandom(4).hex()}"
    response = client.put(name, body, body.hash)
    assert response.status_code == 200, response.text
    return name, body


def fully_stored(client: Client, hash_: str) -> bool:
    """Every shard index has a file on a running data server."""
    running = {n.storage_root for n in client.cluster.data if n.running}
    shards = client.shard_files(hash_)
    return all(any(p.parent.parent in running for p in shards.get(i, []))
               for i in range(ALL_SHARDS))


def shards_match_names(client: Client, hash_: str) -> bool:
    """Every shard file's content hashes to the shard hash in its name."""
    try:
        return all(sha256_b64(p.read_bytes()) == p.name.rsplit(".", 1)[1].replace("%2F", "/")
                   for files in client.shard_files(hash_).values() for p in files)
    except FileNotFoundError:               # moved while we looked: look again
        return False


def node_holding(client: Client, hash_: str, index: int):
    (path,) = client.shard_files(hash_)[index]
    return next(n for n in client.cluster.data if n.storage_root == path.parent.parent), path


@pytest.mark.parametrize("lost", [(0,), (1, 2), (3, 5), (4, 5)])
def test_missing_shard_files_are_served_around_and_rebuilt(client: Client, lost):
    name, body = put_object(client, 2 * BLOCK_SIZE + 17)
    for index in lost:
        for path in client.shard_files(body.hash)[index]:
            path.unlink()
    got = client.get(name)
    assert got.status_code == 200 and got.content == body.bytes()
    wait_for(lambda: fully_stored(client, body.hash))
    assert client.get(name).content == body.bytes()


@pytest.mark.parametrize("damage", ["flip", "truncate", "truncate-record", "empty"])
def test_corrupt_shards_are_never_served_and_are_replaced(client: Client, damage):
    name, body = put_object(client, 3 * BLOCK_SIZE + 5)
    node, path = node_holding(client, body.hash, 1)
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[layout.full_record_size() + 1000] ^= 0x01      # second block of shard 1
    elif damage == "truncate":
        del raw[len(raw) - 100:]
    elif damage == "truncate-record":
        del raw[layout.full_record_size():]                 # whole records gone
    else:
        raw.clear()
    path.write_bytes(bytes(raw))
    got = client.get(name)
    assert got.status_code == 200
    assert sha256_b64(got.content) == body.hash
    wait_for(lambda: fully_stored(client, body.hash) and shards_match_names(client, body.hash))
    moved = list((node.storage_root / "garbage").glob(path.name + "*"))
    assert moved, "the damaged file is moved aside, not silently kept"


def test_two_corrupt_shards_in_different_blocks(client: Client):
    name, body = put_object(client, 4 * BLOCK_SIZE)
    for index, block in ((0, 0), (3, 2)):
        _, path = node_holding(client, body.hash, index)
        raw = bytearray(path.read_bytes())
        raw[layout.shard_offset(block) + 500] ^= 0xFF
        path.write_bytes(bytes(raw))
    assert sha256_b64(client.get(name).content) == body.hash
    wait_for(lambda: fully_stored(client, body.hash))


def test_too_much_damage_is_an_error_before_any_body(client: Client):
    name, body = put_object(client, BLOCK_SIZE + 1)
    for index in (0, 2, 4):
        for path in client.shard_files(body.hash)[index]:
            path.unlink()
    got = client.get(name)
    assert got.status_code == 503
    assert body.hash in got.text
    wait_for(lambda: any(f"cannot read {name!r}" in line and body.hash in line
                         for n in client.cluster.api
                         for line in n.log_path.read_text().splitlines()))


def test_ranges_and_reads_with_stopped_servers(make_cluster):
    cluster = make_cluster()
    client = Client(cluster)
    name, body = put_object(client, 2 * BLOCK_SIZE + 3)
    for index in (0, 2):                                   # two data shards' servers
        node, _ = node_holding(client, body.hash, index)
        cluster.stop_node(node)
    assert sha256_b64(client.get(name).content) == body.hash
    wait_for(lambda: fully_stored(client, body.hash), timeout=20)
    assert sha256_b64(client.get(name).content) == body.hash


def test_write_quorum(make_cluster):
    cluster = make_cluster()
    client = Client(cluster)
    cluster.stop_node(cluster.data[5])                       # 5 live: quorum still holds
    wait_for(lambda: all(client.session.get(f"{client.api(i)}/health").json()["data_servers"] == 5
                         for i in range(2)))
    name, body = put_object(client, BLOCK_SIZE + 9)
    assert client.get(name).content == body.bytes()
    wait_for(lambda: fully_stored(client, body.hash))        # the 6th shard, rebuilt later
    cluster.stop_node(cluster.data[4])                       # 4 live: below quorum
    wait_for(lambda: client.session.get(f"{client.api()}/health").json()["data_servers"] == 4)
    data = os.urandom(5000)
    response = client.put("below-quorum", data, sha256_b64(data))
    assert response.status_code == 503
    assert client.shard_files(sha256_b64(data)) == {}
    assert client.get("below-quorum").status_code == 404
    assert client.temp_files() == []


def test_data_server_killed_mid_put(make_cluster):
    cluster = make_cluster()
    client = Client(cluster)
    body = Body(48 * BLOCK_SIZE, seed=5)
    victim = cluster.data[2]

    def slow():
        for i, chunk in enumerate(body):
            if i == 16:
                cluster.kill_node(victim)
            yield chunk

    response = client.put("killed-mid-put", Sized(slow(), body.size), body.hash)
    assert response.status_code == 200, response.text
    assert sha256_b64(client.get("killed-mid-put").content) == body.hash
    wait_for(lambda: fully_stored(client, body.hash))        # the lost shard, rebuilt
    wait_for(lambda: all(p.parent.parent == victim.storage_root for p in client.temp_files()))


def test_data_server_killed_mid_put_below_quorum(make_cluster):
    cluster = make_cluster(data_servers=5)
    client = Client(cluster)
    body = Body(32 * BLOCK_SIZE, seed=6)

    def slow():
        for i, chunk in enumerate(body):
            if i == 8:
                cluster.kill_node(cluster.data[0])
            yield chunk

    response = client.put("doomed", Sized(slow(), body.size), body.hash)
    assert response.status_code == 503
    assert client.get("doomed").status_code == 404
    alive = {n.storage_root for n in cluster.data if n.running}
    assert not any(p.parent.parent in alive for files in client.shard_files(body.hash).values()
                   for p in files)
    wait_for(lambda: not any(p.parent.parent in alive for p in client.temp_files()))


def test_node_loss_under_load_loses_no_acknowledged_object(make_cluster):
    cluster = make_cluster(data_servers=8)
    client = Client(cluster)
    acknowledged: dict[str, str] = {}
    statuses: list[int] = []
    stop = threading.Event()
    lock = threading.Lock()

    def worker(k: int):
        session = requests.Session()
        i = 0
        while not stop.is_set():
            data = os.urandom(20000 + k)
            name = f"load-{k}-{i}"
            i += 1
            response = session.put(client.url(name, k % 2), data=data, timeout=60,
                                   headers={"Digest": f"SHA-256={sha256_b64(data)}"})
            with lock:
                statuses.append(("PUT", response.status_code, response.text[:200]))
                if response.status_code == 200:
                    acknowledged[name] = sha256_b64(data)
                names = list(acknowledged)
            if names:
                pick = names[i % len(names)]
                got = session.get(client.url(pick, k % 2), timeout=60)
                with lock:
                    statuses.append(("GET", got.status_code, got.text[:200]))
                if got.status_code == 200:
                    assert sha256_b64(got.content) == acknowledged[pick]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    cluster.kill_node(cluster.data[0])
    cluster.kill_node(cluster.data[1])
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join(60)
    assert statuses and all(status == 200 for _, status, _ in statuses), \
        [answer for answer in statuses if answer[1] != 200]
    for name, hash_ in acknowledged.items():
        got = client.get(name)
        assert got.status_code == 200, (name, got.text)
        assert sha256_b64(got.content) == hash_


def test_sigterm_announces_departure_and_finishes_requests(make_cluster):
    cluster = make_cluster()
    client = Client(cluster)
    name, body = put_object(client, 24 * BLOCK_SIZE)
    node, _ = node_holding(client, body.hash, 0)
    sha = hashlib.sha256()
    with client.session.get(client.url(name), stream=True, timeout=60) as response:
        chunks = response.iter_content(BLOCK_SIZE)
        sha.update(next(chunks))
        node.process.send_signal(signal.SIGTERM)
        for chunk in chunks:
            sha.update(chunk)
            time.sleep(0.01)
    import base64
    assert base64.b64encode(sha.digest()).decode() == body.hash
    wait_for(lambda: client.session.get(f"{client.api()}/health").json()["data_servers"] == 5,
             timeout=3)   # well before SERVER_TTL would expire it
    node.process.wait(30)
    assert "announced its departure" in cluster.api[0].log_path.read_text()


def test_restarted_data_server_serves_its_shards_again(make_cluster):
    cluster = make_cluster()
    client = Client(cluster)
    name, body = put_object(client, BLOCK_SIZE + 3)
    node, path = node_holding(client, body.hash, 0)
    cluster.stop_node(node)
    cluster.start_node(node)
    cluster.wait_ready()
    locate = client.session.get(f"{client.api()}/locate/{body.hash.replace('/', '%2F')}").json()
    assert locate["0"] == node.address
    assert client.get(name).content == body.bytes()


RABBITMQCTL = shutil.which("rabbitmqctl") or (
    "/usr/sbin/rabbitmqctl" if os.path.exists("/usr/sbin/rabbitmqctl") else None)


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RABBITMQCTL, *args], capture_output=True, timeout=120)


@pytest.mark.skipif(RABBITMQCTL is None, reason="rabbitmqctl is not installed: cannot restart "
                    "the broker")
def test_broker_restart(make_cluster):
    cluster = make_cluster()
    client = Client(cluster)
    name, body = put_object(client, 5000)
    stopped = _rabbitmqctl("stop_app")
    if stopped.returncode != 0:
        pytest.skip(f"cannot restart RabbitMQ here: {stopped.stderr.decode()[:200]}")
    try:
        time.sleep(2)
    finally:
        assert _rabbitmqctl("start_app").returncode == 0
    back = time.monotonic()

    def serving():
        data = os.urandom(3000)
        try:
            ok = client.put(f"after-{os.urandom(3).hex()}", data, sha256_b64(data)).status_code
            return ok == 200 and client.get(name).content == body.bytes()
        except requests.RequestException:
            return False

    wait_for(serving, timeout=15, interval=0.5)
    assert time.monotonic() - back < 15
    assert all(n.running for n in cluster.data + cluster.api)


@pytest.mark.skipif(RABBITMQCTL is None, reason="rabbitmqctl is not installed: cannot list "
                    "bindings")
def test_stopped_cluster_leaves_no_queues_behind(make_cluster):
    """Every queue is exclusive to its connection: none outlives its process (BOOK W24)."""
    # the broker may be on another host, in a container, or guarded by another Erlang cookie
    answered = _rabbitmqctl("list_bindings", "-q", "source_name", "destination_name")
    if answered.returncode != 0:
        pytest.skip(f"rabbitmqctl cannot talk to the broker here: "
                    f"{answered.stderr.decode()[:200]}")
    cluster = make_cluster()
    ours = {cluster.api_exchange, cluster.data_exchange}

    def bound_queues() -> int:
        listed = _rabbitmqctl("list_bindings", "-q", "source_name", "destination_name")
        assert listed.returncode == 0, listed.stderr
        return sum(1 for line in listed.stdout.decode().splitlines()
                   if line.split("\t")[0] in ours)

    # 2 gunicorn workers per api server; a task worker listens to heartbeats too
    assert bound_queues() == len(cluster.data) + len(cluster.api) * 2 + len(cluster.workers)
    cluster.stop()
    assert bound_queues() == 0
