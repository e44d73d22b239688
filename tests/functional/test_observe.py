"""Metrics, request ids, JSON logs and /health in process: the api server's book and S3
apps, a data server, the worker's status server, and prometheus_client's multiprocess mode."""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

import api_server
import data_server
from api_server.s3 import create_s3_app
from lib import logs
from lib.access import Observed
from lib.config import Config
from lib.httpclient import ConnectionPool
from lib.rabbitmq import Bus
from lib.statusserver import StatusServer
from lib.webapp import create_flask_app
from tests.cluster_mac import data_config, signed_client

REPO = Path(__file__).resolve().parents[2]


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value, from Prometheus text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def buffered(client):
    """A test client whose answers are read and closed at once, as a server would: the
    request is counted and logged when its body closes."""
    send = client.open
    client.open = lambda *args, **kwargs: send(*args, buffered=True, **kwargs)
    return client


@pytest.fixture
def api_app(tmp_path):
    config = Config(listen_address="127.0.2.1:1", metadata_db=tmp_path / "md.db")
    app = api_server.create_app(config, bus=Bus(config.rabbitmq_server, "never-started"))
    yield app
    app.extensions["tessera.stop"]()


@pytest.fixture
def json_logs(monkeypatch):
    """Log lines as JSON into a buffer; the parsed objects so far from ``lines()``."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    logs.configure("debug", "json", "127.0.9.9:1", "")      # data servers' access lines too
    def lines():
        logging.getLogger().handlers[0].flush()             # lines are written in batches
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield lines
    logging.basicConfig(force=True)


def test_book_requests_are_counted_by_operation_and_status(api_app):
    client = buffered(api_app.test_client())
    before = client.get("/metrics").text
    for _ in range(2):
        assert client.get("/objects/nothing-here").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    after = response.text
    labels = {"api": "book", "operation": "objects.get_object", "status": "404"}
    assert value(after, "tessera_request_duration_seconds_sum", **labels) > value(
        before, "tessera_request_duration_seconds_sum", **labels)
    assert value(after, "tessera_request_duration_seconds_sum", **labels) > value(
        before, "tessera_request_duration_seconds_sum", **labels)
    assert value(after, "tessera_live_data_servers") == 0
    assert value(after, "tessera_process_cpu_seconds_total") > 0
    assert value(after, "tessera_process_resident_memory_bytes") > 0
    # no path or key ever becomes a label value
    assert "nothing-here" not in after


def test_sent_and_received_bytes_are_counted(api_app):
    client = buffered(api_app.test_client())
    before = client.get("/metrics").text
    answer = client.put("/objects/a", data=b"x" * 100, headers={"Digest": "SHA-256=bad"})
    after = client.get("/metrics").text
    assert answer.status_code == 400
    assert value(after, "tessera_received_bytes_total", api="book") - value(
        before, "tessera_received_bytes_total", api="book") == 100
    assert value(after, "tessera_sent_bytes_total", api="book") - value(
        before, "tessera_sent_bytes_total", api="book") >= len(answer.data) > 0


def test_requests_in_progress_are_published_within_a_second(monkeypatch):
    """The gauge is written by a thread every PUBLISH_INTERVAL, not twice a request."""
    import threading
    import time

    from lib import access, metrics

    monkeypatch.setattr(access._InProgress, "PUBLISH_INTERVAL", 0.05)
    entered, release = threading.Event(), threading.Event()

    def slow(environ, start_response):
        entered.set()
        release.wait(10)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    app = Observed(slow, "gauge-test")

    def gauge() -> float:
        return value(metrics.exposition().decode(), "tessera_requests_in_progress",
                     api="gauge-test")

    def settles(expected: float) -> bool:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if gauge() == expected:
                return True
            time.sleep(0.02)
        return False

    def call():
        body = app({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda *a: None)
        list(body)
        body.close()

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    entered.wait(5)
    assert settles(3)
    release.set()
    for thread in threads:
        thread.join(10)
    assert settles(0)


def test_request_id_from_the_client_if_sane_else_new(api_app):
    client = buffered(api_app.test_client())
    assert client.get("/health", headers={"X-Request-Id": "trace-42"}).headers[
        "X-Request-Id"] == "trace-42"
    made = client.get("/health", headers={"X-Request-Id": "no spaces\tallowed"}).headers[
        "X-Request-Id"]
    assert len(made) == 16 and made != client.get("/health").headers["X-Request-Id"]


def test_api_health_names_the_broker_when_it_is_not_connected(api_app):
    response = buffered(api_app.test_client()).get("/health")
    assert response.status_code == 503
    body = response.json
    assert body["failed"] == ["rabbitmq"] and body["status"] == "unavailable"
    assert body["metadata"].startswith("sqlite") and body["data_servers"] == 0


def test_s3_answers_the_request_id_as_x_amz_request_id(api_app):
    before = buffered(api_app.test_client()).get("/metrics").text
    s3 = buffered(Client(Observed(create_s3_app(api_app.extensions["tessera.api"]), "s3")))
    response = s3.get("/", headers={"X-Request-Id": "s3-trace-1"})
    assert response.status_code == 403         # unsigned
    assert response.headers["x-amz-request-id"] == "s3-trace-1"
    assert response.headers["X-Request-Id"] == "s3-trace-1"
    assert b"<RequestId>s3-trace-1</RequestId>" in response.data
    after = buffered(api_app.test_client()).get("/metrics").text
    labels = {"api": "s3", "operation": "other", "status": "403"}
    assert value(after, "tessera_request_duration_seconds_count", **labels) - value(
        before, "tessera_request_duration_seconds_count", **labels) == 1


def test_operations_of_a_sub_api_count_under_it():
    from flask import Blueprint

    bp = Blueprint("admin", __name__)
    bp.get("/api/v1/ping")(lambda: "pong")
    app = create_flask_app("sub", {})
    app.register_blueprint(bp)
    app.wsgi_app = Observed(app.wsgi_app, "book", sub_apis=frozenset({"admin"}))
    client = buffered(app.test_client())
    before = client.get("/metrics").text
    assert client.get("/api/v1/ping").text == "pong"
    after = client.get("/metrics").text
    labels = {"api": "admin", "operation": "admin.<lambda>", "status": "200"}
    assert value(after, "tessera_request_duration_seconds_count", **labels) - value(
        before, "tessera_request_duration_seconds_count", **labels) == 1


def test_json_access_lines_carry_the_request_id(api_app, json_logs):
    client = buffered(api_app.test_client())
    client.get("/objects/x", headers={"X-Request-Id": "json-1"})
    access = [line for line in json_logs() if line["logger"] == "tessera.access"]
    assert len(access) == 1
    line = access[0]
    assert line["request_id"] == "json-1" and line["address"] == "127.0.9.9:1"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/objects/x", 404)
    assert line["bytes"] > 0 and line["duration_ms"] >= 0 and line["level"] == "INFO"
    assert line["time"].endswith("Z") and line["operation"] == "objects.get_object"


def test_text_access_lines_too(api_app, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    logs.configure("info", "text", "127.0.9.9:1", "%(levelname)s %(request_id)s %(message)s")
    try:
        buffered(api_app.test_client()).get("/objects/x", headers={"X-Request-Id": "text-1"})
        logging.getLogger().handlers[0].flush()
    finally:
        logging.basicConfig(force=True)
    assert "INFO text-1 GET /objects/x 404" in stream.getvalue()


def test_data_server_health_metrics_and_request_id(tmp_path, json_logs):
    root = tmp_path / "root"
    app = data_server.create_app(data_config(listen_address="127.0.1.1:1", storage_root=root),
                                 bus=None)
    client = buffered(signed_client(app))
    assert client.get("/health").status_code == 200
    response = client.get("/objects/nothing.0", headers={"X-Request-Id": "from-api-7"})
    assert response.status_code in (400, 404) and response.headers["X-Request-Id"] == "from-api-7"
    assert any(line.get("request_id") == "from-api-7" and line.get("path") == "/objects/nothing.0"
               for line in json_logs())
    text = client.get("/metrics").text
    assert value(text, "tessera_disk_free_bytes", address="127.0.1.1:1") > 0
    assert value(text, "tessera_disk_used_bytes", address="127.0.1.1:1") > 0
    assert value(text, "tessera_shards", address="127.0.1.1:1") == 0
    shutil.rmtree(root / "temp")                  # the disk went away under the server
    response = client.get("/health")
    assert response.status_code == 503 and response.json["failed"] == ["storage"]


def test_calls_to_data_servers_carry_the_request_id():
    pool = ConnectionPool(1.0)
    token = logs.REQUEST_ID.set("abc-1")
    try:
        head = pool._head("GET", "127.0.1.1:1", "/objects/x", None, {}, False)
    finally:
        logs.REQUEST_ID.reset(token)
    assert b"\r\nX-Request-Id: abc-1\r\n" in head
    assert b"X-Request-Id" not in pool._head("GET", "127.0.1.1:1", "/objects/x", None, {},
                                             False)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def test_status_server_answers_metrics_and_a_failed_health():
    address = f"127.0.3.9:{_free_port('127.0.3.9')}"
    status = StatusServer(address, {"rabbitmq": lambda: False, "disk": lambda: "fine"},
                          {"role": "worker"}).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(f"http://{address}/health", timeout=5)
        assert failed.value.code == 503
        body = json.loads(failed.value.read())
        assert body["failed"] == ["rabbitmq"] and body["disk"] == "fine"
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
            assert b"tessera_process_cpu_seconds_total" in response.read()
    finally:
        status.close()


def test_multiprocess_mode_sums_every_worker_and_every_module_s_series(tmp_path):
    """Series defined anywhere (before the directory is chosen, labelled or not) are
    written by each forked worker and summed by one scrape."""
    script = textwrap.dedent("""
        import os, sys
        from prometheus_client import Counter
        INJECTED = Counter("tessera_faults_injected", "by another module", ["kind"])
        PLAIN = Counter("tessera_plain_events", "unlabelled, made at import")
        from lib import metrics
        metrics.use_multiprocess_dir()
        children = []
        for n in (1, 2):
            pid = os.fork()
            if pid == 0:
                INJECTED.labels("delay").inc(n)
                PLAIN.inc()
                metrics.REQUEST_SECONDS.labels("book", "objects.get_object", "200").observe(0.001)
                os._exit(0)
            children.append(pid)
        for pid in children:
            os.waitpid(pid, 0)
        sys.stdout.write(metrics.exposition().decode())
        sys.stdout.write("DIR " + os.environ["PROMETHEUS_MULTIPROC_DIR"] + "\\n")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin",
                                                      "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    text, _, directory = done.stdout.rpartition("DIR ")
    assert value(text, "tessera_faults_injected_total", kind="delay") == 3
    assert value(text, "tessera_plain_events_total") == 2
    assert value(text, "tessera_request_duration_seconds_count", api="book",
                 operation="objects.get_object", status="200") == 2
    assert not Path(directory.strip()).exists()           # removed when the server exited


def test_a_corrupt_record_is_counted(tmp_path):
    from lib.hashing import quote_hash
    from lib.rs.params import BLOCK_SIZE
    from tests.functional.test_data_server import HASH, shard_bytes, store

    root = tmp_path / "root"
    client = signed_client(data_server.create_app(
        data_config(listen_address="127.0.1.1:1", storage_root=root), bus=None))
    store(client, shard_bytes(BLOCK_SIZE + 10))
    before = value(client.get("/metrics").text, "tessera_corrupt_records_total")
    (path,) = (root / "objects").iterdir()
    raw = bytearray(path.read_bytes())
    raw[len(raw) - 20] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(Exception):
        client.get(f"/objects/{quote_hash(HASH)}.0").get_data()
    assert value(client.get("/metrics").text, "tessera_corrupt_records_total") == before + 1


def test_repairs_are_counted_started_done_and_failed():
    from types import SimpleNamespace

    from lib import metrics
    from lib.errors import NotEnoughDataServers
    from lib.rs.repair import repair_object
    from tests.conftest import sha256_b64

    def counts():
        text = metrics.exposition().decode()
        return [value(text, "tessera_repairs_total", event=e) for e in ("started", "done",
                                                                        "failed")]

    whole = {i: [f"127.0.1.{i + 1}:1"] for i in range(6)}
    some = {i: whole[i] for i in range(2)}
    hash_ = sha256_b64(b"repaired")
    before = counts()
    for copies in (whole, some):     # nothing missing: done; too few shards left: failed
        locator = SimpleNamespace(forget=lambda _h: None, locate_copies=lambda _h, c=copies: c)
        try:
            repair_object(None, None, locator, hash_, 8, {})
        except NotEnoughDataServers:
            pass
    assert [a - b for a, b in zip(counts(), before)] == [2, 1, 1]


def test_lines_are_written_in_batches_warnings_at_once(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(logs, "FLUSH_INTERVAL", 3600.0)
    logs.configure("info", "text", "127.0.9.9:1", "%(levelname)s %(message)s")
    try:
        logging.getLogger("t").info("waits")
        assert stream.getvalue() == ""
        logging.getLogger("t").warning("now")
        assert stream.getvalue() == "INFO waits\nWARNING now\n"
    finally:
        logging.basicConfig(force=True)


def test_a_killed_server_s_metrics_directory_is_removed_by_the_next_start(tmp_path):
    from lib import metrics

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    orphan = tmp_path / f"tessera-metrics-{dead}-x"
    orphan.mkdir()
    alive = tmp_path / f"tessera-metrics-{os.getpid()}-y"
    alive.mkdir()
    metrics._remove_orphans(tmp_path)
    assert not orphan.exists() and alive.exists()
