"""Fault injection on a real cluster (issue 16): rules posted through the management API
reach every process, break what they name, and the cluster still answers every client
correctly; every injected fault shows in the stats and the event log."""
from __future__ import annotations

import concurrent.futures
import os

import pytest
import requests

from lib.clustermac import HEADER, ClusterMac, derive_key
from lib.rs.params import ALL_SHARDS, BLOCK_SIZE
from tests.conftest import Body, sha256_b64
from tests.probe.conftest import Client, s3_client, wait_for
from tests.unit.test_faults import MOCKS3_DELAY, MOCKS3_ERROR

pytestmark = pytest.mark.probe

SIZES = (1, 4096, BLOCK_SIZE + 3, 2 * BLOCK_SIZE + 17)


class Admin:
    """The fault rules API of one cluster."""

    def __init__(self, cluster, i: int = 0):
        self.base = f"http://{cluster.api[i].address}/api/v1/faults"
        self.headers = {"Authorization": f"Bearer {cluster.admin_token}"}

    def post(self, rule: dict) -> dict:
        response = requests.post(f"{self.base}/rules", json=rule, headers=self.headers,
                                 timeout=10)
        assert response.status_code == 201, response.text
        return response.json()

    def get(self, path: str, **params) -> dict:
        response = requests.get(f"{self.base}/{path}", params=params, headers=self.headers,
                                timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def injected(self, rule_id: str) -> int:
        return self.get("stats")["rules"].get(rule_id, {}).get("injected", 0)

    def events(self, rule_id: str) -> list[dict]:
        events, after = [], 0
        while True:
            page = self.get("events", after=after, limit=1000, rule=rule_id)
            events += page["events"]
            if not page["more"]:
                return events
            after = page["next"]

    def clear(self) -> None:
        requests.delete(f"{self.base}/rules", headers=self.headers, timeout=10)


def store_objects(client: Client, count: int = 8) -> list[tuple[str, Body]]:
    stored = []
    for i in range(count):
        body = Body(SIZES[i % len(SIZES)], seed=int.from_bytes(os.urandom(4), "big"))
        name = f"fault-{os.urandom(4).hex()}"
        assert client.put(name, body, body.hash).status_code == 200
        stored.append((name, body))
    return stored


def read_back(client: Client, stored, i: int = 0) -> None:
    """Every object comes back whole and exact (a status, then the bytes' SHA-256)."""
    for name, body in stored:
        response = client.get(name, i=i)
        assert response.status_code == 200, response.text[:200]
        assert sha256_b64(response.content) == body.hash, name


def repair_requests(cluster) -> int:
    """Repairs the api servers asked for (each logs one line per request)."""
    return sum(node.log_path.read_text(errors="replace").count("needs shards")
               for node in cluster.api)


def get_rule(node, **extra) -> dict:
    return {"name": f"GETs fail on {node.address}", "service": "data", "node": node.address,
            "match": {"method": "GET", "path": "^/objects/."}, **extra}


def test_http_errors_on_two_data_servers_are_read_around_and_repaired(make_cluster):
    cluster = make_cluster()
    client, admin = Client(cluster), Admin(cluster)
    stored = store_objects(client)
    repairs = repair_requests(cluster)
    rules = [admin.post(get_rule(node, action={"type": "http_error", "http_code": 500,
                                               "message": "injected"}))
             for node in cluster.data[:2]]
    for i in (0, 1):
        read_back(client, stored, i)
    injected = sum(admin.injected(rule["id"]) for rule in rules)
    assert injected > 0
    assert repair_requests(cluster) > repairs
    events = [e for rule in rules for e in admin.events(rule["id"])]
    assert len(events) == injected
    assert {e["process"].split("/")[0] for e in events} <= {n.address for n in cluster.data[:2]}
    assert all(e["action"] == "http_error" and e["path"].startswith("/objects/")
               for e in events)
    admin.clear()
    put_more = store_objects(client, 4)            # still enough servers to place shards
    read_back(client, stored + put_more)


def test_corrupt_response_bytes_never_reach_a_client(make_cluster):
    cluster = make_cluster()
    client, admin = Client(cluster), Admin(cluster)
    stored = store_objects(client)
    rules = [admin.post(get_rule(node, action={"type": "corrupt", "every": 512}))
             for node in cluster.data[:2]]
    for _ in range(2):
        for i in (0, 1):
            read_back(client, stored, i)
    assert sum(admin.injected(rule["id"]) for rule in rules) > 0
    admin.clear()
    read_back(client, stored)


def test_mocks3_metadata_delay_slows_but_every_request_succeeds(make_cluster):
    cluster = make_cluster()
    client, admin = Client(cluster), Admin(cluster)
    rule = admin.post(MOCKS3_DELAY)

    def put_and_get(i: int) -> bool:
        data = os.urandom(1000 + i)
        name = f"slow-{i}-{os.urandom(3).hex()}"
        put = client.put(name, data, sha256_b64(data), i=i % 2)
        got = requests.get(client.url(name, i=(i + 1) % 2), timeout=120)
        return put.status_code == 200 and got.content == data

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(put_and_get, range(24)))
    assert admin.injected(rule["id"]) > 0
    events = admin.events(rule["id"])
    assert events and all(e["service"] == "metadata" and e["action"] == "delay" and
                          e["operation"] for e in events)


def test_a_rule_with_max_hits_5_fires_exactly_5_times(make_cluster):
    cluster = make_cluster()
    client, admin = Client(cluster), Admin(cluster)
    stored = store_objects(client, 12)
    node = cluster.data[0]
    rule = admin.post(get_rule(node, conditions=[{"type": "max_hits", "value": 5}],
                               action={"type": "http_error", "http_code": 503}))
    for i in (0, 1, 0, 1):
        read_back(client, stored, i)
    wait_for(lambda: admin.injected(rule["id"]) >= 5)
    read_back(client, stored)
    assert admin.injected(rule["id"]) == 5
    assert len(admin.events(rule["id"])) == 5


def test_mocks3_example_rules_posted_verbatim_take_effect(make_cluster):
    cluster = make_cluster()
    client, admin = Client(cluster), Admin(cluster)
    error, delay = admin.post(MOCKS3_ERROR), admin.post(MOCKS3_DELAY)
    listed = {r["id"]: r for r in admin.get("rules")["rules"]}
    assert listed[error["id"]]["action"] == MOCKS3_ERROR["action"]
    assert listed[delay["id"]]["conditions"] == MOCKS3_DELAY["conditions"]

    def put(i: int):
        body = Body(SIZES[i % len(SIZES)], seed=i)
        return f"m-{i}", body, client.put(f"m-{i}", body, body.hash, i=i % 2).status_code

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(put, range(30)))
    # 10% of the data servers' answers fail: a PUT that loses two of its six shards is
    # refused (503), never acknowledged short; every acknowledged one reads back exact.
    assert {status for *_, status in results} <= {200, 503}
    acknowledged = [(name, body) for name, body, status in results if status == 200]
    assert acknowledged
    for name, body in acknowledged:
        got = client.get(name)
        assert got.status_code in (200, 503)
        if got.status_code == 200:
            assert sha256_b64(got.content) == body.hash
    stats = admin.get("stats")
    assert stats["rules"][error["id"]]["injected"] > 0
    assert stats["rules"][delay["id"]]["injected"] > 0
    assert stats["rules"][error["id"]]["by_service"].keys() == {"data"}
    assert {e["rule"] for e in admin.get("events", limit=1000)["events"]} == {
        error["id"], delay["id"]}
    admin.clear()
    read_back(client, acknowledged)


def test_s3_http_error_is_an_s3_xml_error(make_cluster):
    cluster = make_cluster()
    admin, s3 = Admin(cluster), s3_client(cluster)
    s3.create_bucket(Bucket="chaos")
    s3.put_object(Bucket="chaos", Key="a.txt", Body=b"hello")
    rule = admin.post({"service": "s3", "match": {"operation": "GetObject", "key": "*.txt"},
                       "action": {"type": "http_error", "http_code": 503,
                                  "message": "please slow down"}})
    from botocore.exceptions import ClientError
    with pytest.raises(ClientError) as failed:
        s3.get_object(Bucket="chaos", Key="a.txt")
    error = failed.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert error["Error"]["Code"] == "SlowDown"
    assert error["Error"]["Message"] == "please slow down"
    assert s3.head_object(Bucket="chaos", Key="a.txt")["ContentLength"] == 5
    events = admin.events(rule["id"])             # botocore retries a 503 once
    assert {(e["operation"], e["bucket"], e["key"]) for e in events} == {
        ("GetObject", "chaos", "a.txt")}
    assert events[-1]["request_id"] == error["ResponseMetadata"]["RequestId"]


def test_rules_survive_an_api_server_restart(make_cluster):
    cluster = make_cluster()
    client, admin = Client(cluster), Admin(cluster)
    (name, body), = store_objects(client, 1)
    rule = admin.post({"service": "api", "match": {"method": "GET"},
                       "conditions": [{"type": "header", "name": "X-Chaos", "value": "on"}],
                       "action": {"type": "http_error", "http_code": 503,
                                  "message": "chaos on"}})
    for node in cluster.api:
        cluster.stop_node(node)
    for node in cluster.api:
        cluster.start_node(node)
    cluster.wait_ready()
    for i in (0, 1):
        faulted = client.get(name, i=i, headers={"X-Chaos": "on"})
        assert (faulted.status_code, faulted.text) == (503, "chaos on\n")
        assert sha256_b64(client.get(name, i=i).content) == body.hash
    assert [r["id"] for r in Admin(cluster, 1).get("rules")["rules"]] == [rule["id"]]


def test_a_data_server_started_after_the_rule_gets_it(make_cluster):
    cluster = make_cluster(start=False, data_servers=7)
    late = cluster.data[-1]
    for node in cluster.nodes:
        if node is not late:
            cluster.start_node(node)
    cluster.wait_ready()
    admin = Admin(cluster)
    admin.post({"service": "data", "node": late.address, "match": {"path": "^/objects/late"},
                "action": {"type": "http_error", "http_code": 507, "message": "late joiner"}})
    cluster.start_node(late)
    cluster.wait_ready()

    mac = ClusterMac(derive_key(cluster.env_for(late)["CLUSTER_SECRET"].encode()))
    signed = {HEADER: mac.sign("GET", "/objects/late.0")}      # as a cluster member asks

    def answer():
        response = requests.get(f"http://{late.address}/objects/late.0", timeout=5,
                                headers=signed)
        return response.text if response.status_code == 507 else None

    assert wait_for(answer, timeout=10) == "late joiner\n"
    assert requests.get(f"http://{cluster.data[0].address}/objects/late.0", headers=signed,
                        timeout=5).status_code == 400


def test_shard_files_corrupted_and_deleted_on_disk_are_rebuilt(make_cluster):
    cluster = make_cluster()
    client, admin = Client(cluster), Admin(cluster)
    stored = store_objects(client, 6)
    first, second = cluster.data[:2]
    rules = [admin.post({"service": "data", "node": node.address, "match": {"method": "GET"},
                         "conditions": [{"type": "max_hits", "value": 2}],
                         "action": {"type": action}})
             for node, action in ((first, "corrupt_shard"), (second, "delete_shard"))]
    read_back(client, stored)
    read_back(client, stored, 1)
    assert [admin.injected(rule["id"]) for rule in rules] == [2, 2]
    quarantined = [p for p in (first.storage_root / "garbage").iterdir() if ".corrupt." in p.name]
    assert len(quarantined) == 2                   # found by its own server's CRC check
    admin.clear()
    for _, body in stored:                         # the repairs put every shard back
        wait_for(lambda: len(client.shard_files(body.hash)) == ALL_SHARDS, timeout=30)
    read_back(client, stored)


def test_paused_heartbeats_drop_a_data_server_until_the_rule_goes(make_cluster):
    cluster = make_cluster()
    admin = Admin(cluster)
    node = cluster.data[0]
    health = f"http://{cluster.api[0].address}/health"
    rule = admin.post({"service": "broker", "node": node.address,
                       "action": {"type": "pause_heartbeat"}})
    wait_for(lambda: requests.get(health, timeout=5).json()["data_servers"] == 5, timeout=20)
    assert admin.injected(rule["id"]) > 0
    admin.clear()
    wait_for(lambda: requests.get(health, timeout=5).json()["data_servers"] == 6, timeout=20)


def test_dropped_and_truncated_answers_on_the_book_api(make_cluster):
    cluster = make_cluster()
    client, admin = Client(cluster), Admin(cluster)
    data = os.urandom(200_000)
    assert client.put("whole", data, sha256_b64(data)).status_code == 200
    admin.post({"service": "api", "node": cluster.api[0].address,
                "match": {"method": "GET", "path": "^/objects/whole$"},
                "conditions": [{"type": "header", "name": "X-Fault", "value": "drop"}],
                "action": {"type": "drop", "when": "before_head"}})
    admin.post({"service": "api", "node": cluster.api[0].address,
                "match": {"method": "GET", "path": "^/objects/whole$"},
                "conditions": [{"type": "header", "name": "X-Fault", "value": "cut"}],
                "action": {"type": "truncate", "bytes": 1000}})
    with pytest.raises(requests.ConnectionError):
        requests.get(client.url("whole"), headers={"X-Fault": "drop"}, timeout=10)
    with pytest.raises((requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ConnectionError)):
        requests.get(client.url("whole"), headers={"X-Fault": "cut"}, timeout=10).content
    assert client.get("whole").content == data                  # no header: untouched
    assert requests.get(client.url("whole", i=1), headers={"X-Fault": "drop"},
                        timeout=10).content == data             # another node: untouched
    ran = admin.get("stats")["by_action"]
    assert ran["drop"] >= 1 and ran["truncate"] >= 1


def test_paused_locate_answers_are_read_around(make_cluster):
    cluster = make_cluster()
    client, admin = Client(cluster), Admin(cluster)
    stored = store_objects(client, 4)
    rule = admin.post({"service": "broker", "node": cluster.data[0].address,
                       "action": {"type": "pause_locate"}})
    for node in cluster.api:                   # new workers know no locations: they locate
        cluster.stop_node(node)
        cluster.start_node(node)
    cluster.wait_ready()
    for i in (0, 1):
        read_back(client, stored, i)
    assert Admin(cluster).injected(rule["id"]) > 0
    Admin(cluster).clear()
    read_back(client, stored)
