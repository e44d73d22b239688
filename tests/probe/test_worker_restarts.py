"""Restarting an api server, or one of its gunicorn workers dying, is invisible to clients
(issue 11.2): a new worker takes requests only once it is connected to RabbitMQ and has heard
the data servers, so a client issuing requests in a loop never sees a 503."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import requests

from scripts.cluster import _children
from tests.conftest import sha256_b64
from tests.probe.conftest import Client, wait_for

pytestmark = pytest.mark.probe


class Loop(threading.Thread):
    """GET one object and PUT new ones, a new connection each, until stopped; every answer's
    status is kept, and requests the server never answered (refused while no process listens,
    cut by a killed worker) are counted apart."""

    def __init__(self, client: Client, name: str, data: bytes):
        super().__init__(daemon=True)
        self.client, self.name, self.data = client, name, data
        self.statuses: list[tuple[str, int, str]] = []
        self.unanswered = 0
        self.done = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.done.is_set():
            i += 1
            body = os.urandom(100)
            try:
                if i % 2:
                    answer = requests.get(self.client.url(self.name), timeout=30)
                    ok = answer.status_code != 200 or answer.content == self.data
                else:
                    answer = requests.put(self.client.url(f"{self.name}-{i}"), data=body,
                                          headers={"Digest": f"SHA-256={sha256_b64(body)}"},
                                          timeout=30)
                    ok = True
                self.statuses.append((answer.request.method, answer.status_code,
                                      answer.text[:200] if ok else "wrong bytes"))
            except requests.ConnectionError:
                self.unanswered += 1
                time.sleep(0.02)

    def stop(self) -> list[tuple[str, int, str]]:
        self.done.set()
        self.join(60)
        return [s for s in self.statuses if s[1] != 200 or s[2] == "wrong bytes"]


def _workers(node) -> list[int]:
    return sorted(_children(node.process.pid))


def test_killed_workers_and_a_restarted_api_server_answer_no_503(make_cluster):
    cluster = make_cluster(api_servers=1, workers=0)
    client = Client(cluster)
    data = os.urandom(3000)
    assert client.put("restarts", data, sha256_b64(data)).status_code == 200
    api = cluster.api[0]
    loop = Loop(client, "restarts", data)
    loop.start()
    try:
        wait_for(lambda: len(loop.statuses) > 20)
        for _ in range(3):                          # kill -9 one gunicorn worker by PID
            before = _workers(api)
            os.kill(before[0], signal.SIGKILL)
            wait_for(lambda: len(set(_workers(api)) - set(before)) == 1, timeout=30)
            seen = len(loop.statuses)
            wait_for(lambda: len(loop.statuses) > seen + 40, timeout=30)
        for _ in range(2):                          # restart the whole api server
            cluster.stop_node(api)
            cluster.start_node(api)
            seen = len(loop.statuses)
            wait_for(lambda: len(loop.statuses) > seen + 40, timeout=60)
    finally:
        bad = loop.stop()
    assert bad == [], bad[:5]
    assert len(loop.statuses) > 200
