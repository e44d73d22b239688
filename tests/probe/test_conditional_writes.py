"""Conditional writes through two api servers at once: one winner, no lost update."""
from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from lib.hashing import sha256_b64


def _put(client, i: int, name: str, data: bytes, headers: dict) -> requests.Response:
    return requests.put(client.url(name, i % 2), data=data, timeout=60,
                        headers={"Digest": f"SHA-256={sha256_b64(data)}", **headers})


def test_create_only_race_has_exactly_one_winner(client):
    name = f"race-{uuid.uuid4().hex[:8]}"
    start = threading.Barrier(16)

    def attempt(i: int) -> int:
        start.wait()
        return _put(client, i, name, f"writer {i}".encode(), {"If-None-Match": "*"}).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = sorted(pool.map(attempt, range(16)))
    assert codes == [200] + [412] * 15
    versions = requests.get(f"{client.api()}/versions/{name}", timeout=10).text.splitlines()
    assert len(versions) == 1


def test_read_modify_write_loses_no_update(client):
    name = f"counter-{uuid.uuid4().hex[:8]}"
    assert _put(client, 0, name, b"0", {"If-None-Match": "*"}).status_code == 200
    successes = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        mine = 0
        for _ in range(200):                       # bounded: give up rather than hang
            if mine == 4:
                return
            got = requests.get(client.url(name, i % 2), timeout=30)
            assert got.status_code == 200
            value = int(got.content)
            answer = _put(client, i, name, str(value + 1).encode(),
                          {"If-Match": f'"{sha256_b64(got.content)}"'})
            assert answer.status_code in (200, 412), answer.text
            if answer.status_code == 200:
                mine += 1
                with lock:
                    successes.append(value + 1)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    final = int(requests.get(client.url(name), timeout=30).content)
    assert final == len(successes) == 32
    assert sorted(successes) == list(range(1, 33))     # every increment saw the one before


def test_version_precondition_and_missing_key(client):
    name = f"ver-{uuid.uuid4().hex[:8]}"
    assert _put(client, 0, name, b"a", {"If-Match": '"x"'}).status_code == 404
    assert _put(client, 0, name, b"a", {}).status_code == 200
    assert _put(client, 1, name, b"b", {"If-Version": "2"}).status_code == 412
    assert _put(client, 1, name, b"b", {"If-Version": "1"}).status_code == 200
