"""Metrics, request ids across processes, JSON logs and /health on a real cluster."""
from __future__ import annotations

import hashlib
import base64
import json
import os
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.probe.conftest import s3_client, wait_for

pytestmark = pytest.mark.probe

SMALL = 3000
PUTS = 8


def scrape(address: str) -> dict[tuple, float]:
    """One fresh connection (it may land on any gunicorn worker)."""
    text = requests.get(f"http://{address}/metrics", timeout=10,
                        headers={"Connection": "close"}).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def delta(after: dict, before: dict, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def json_lines(path) -> list[dict]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_metrics_request_ids_and_health_across_the_cluster(make_cluster):
    cluster = make_cluster(env={"LOG_FORMAT": "json", "LOG_LEVEL": "debug"})
    api = cluster.api[0].address
    data = [node.address for node in cluster.data]
    worker = cluster.workers[0].address
    api_before = scrape(api)
    data_before = [scrape(a) for a in data]

    bodies = [os.urandom(SMALL) for _ in range(PUTS)]
    for i, body in enumerate(bodies):
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        answer = requests.put(f"http://{api}/objects/obs-{i}", data=body, timeout=60,
                              headers={"Digest": f"SHA-256={digest}", "Connection": "close"})
        assert answer.status_code == 200, answer.text
    for i, body in enumerate(bodies):
        answer = requests.get(f"http://{api}/objects/obs-{i}", timeout=60,
                              headers={"Connection": "close"})
        assert answer.content == body
    s3 = s3_client(cluster)
    s3.create_bucket(Bucket="observed")
    s3.put_object(Bucket="observed", Key="k", Body=b"s3 body" * 100)
    assert s3.get_object(Bucket="observed", Key="k")["Body"].read() == b"s3 body" * 100

    # every scrape, whichever of the api server's two workers answers it, counts them all
    scrapes = [scrape(api) for _ in range(4)]
    after = scrapes[-1]
    ok = {"api": "book", "status": "200"}
    requests_ = "tessera_request_duration_seconds_count"          # one sample per request
    for other in scrapes[:-1]:
        assert delta(after, other, requests_, operation="objects.put_object", **ok) == 0
    assert delta(after, api_before, requests_, operation="objects.put_object", **ok) == PUTS
    assert delta(after, api_before, requests_, operation="objects.get_object", **ok) == PUTS
    assert delta(after, api_before, "tessera_request_duration_seconds_sum",
                 operation="objects.get_object", **ok) > 0
    assert delta(after, api_before, "tessera_received_bytes_total", api="book") == PUTS * SMALL
    assert delta(after, api_before, "tessera_sent_bytes_total", api="book") >= PUTS * SMALL
    for operation in ("CreateBucket", "PutObject", "GetObject"):
        assert delta(after, api_before, requests_, api="s3",
                     operation=operation, status="200") == 1, operation
    assert after[("tessera_live_data_servers", ())] == len(data)
    assert after[("tessera_process_resident_memory_bytes", ())] > 0

    # each small PUT sends one shard to each of the six data servers
    data_after = [scrape(a) for a in data]
    for address, before, now in zip(data, data_before, data_after):
        assert delta(now, before, requests_, api="data",
                     operation="temp.post_temp", status="200") == PUTS + 1, address
        assert now[("tessera_disk_free_bytes", (("address", address),))] > 0
        assert now[("tessera_shards", (("address", address),))] >= PUTS + 1
    assert sum(delta(now, before, requests_, api="data",
                     operation="objects.get_object", status="200")
               for before, now in zip(data_before, data_after)) > 0

    status = scrape(worker)
    assert status[("tessera_live_data_servers", ())] == len(data)
    assert ("tessera_task_queue_depth", ()) in status
    assert ("tessera_process_cpu_seconds_total", ()) in status

    # one request id, followed from the api server to every data server it wrote to
    request_id = f"probe-{uuid.uuid4().hex[:12]}"
    body = os.urandom(SMALL)
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    answer = requests.put(f"http://{api}/objects/traced", data=body, timeout=60,
                          headers={"Digest": f"SHA-256={digest}", "X-Request-Id": request_id})
    assert answer.status_code == 200 and answer.headers["X-Request-Id"] == request_id

    def traced(node) -> list[dict]:
        return [line for line in json_lines(node.log_path)
                if line.get("request_id") == request_id]

    access = wait_for(lambda: [line for line in traced(cluster.api[0])
                               if line["logger"] == "tessera.access"])
    assert [(a["method"], a["path"], a["status"]) for a in access] == [
        ("PUT", "/objects/traced", 200)]
    assert access[0]["address"] == api and access[0]["duration_ms"] > 0
    wait_for(lambda: all(traced(node) for node in cluster.data))
    for node in (cluster.api[0], cluster.data[0]):      # gunicorn's own lines are JSON too
        lines = [line for line in node.log_path.read_text().splitlines() if line.strip()]
        assert [line for line in lines if not line.startswith("{")] == [], node.name
    for node in cluster.data:
        assert any(line.get("path", "").startswith("/temp/") for line in traced(node))

    # health: every process ok; a data server whose disk went away says so
    for address in [api, *data, worker]:
        answer = requests.get(f"http://{address}/health", timeout=10)
        assert answer.status_code == 200 and answer.json()["status"] == "ok", address
    temp = cluster.data[0].storage_root / "temp"
    temp.rename(temp.with_name("temp.away"))
    try:
        answer = requests.get(f"http://{data[0]}/health", timeout=10)
        assert answer.status_code == 503
        assert answer.json()["failed"] == ["storage"]
    finally:
        temp.with_name("temp.away").rename(temp)
    assert requests.get(f"http://{data[0]}/health", timeout=10).status_code == 200
