"""Data servers answer cluster members only (issue 11.7): the gate in process."""
from __future__ import annotations

import pytest

from data_server import create_app
from lib.clustermac import HEADER, ClusterMac, derive_key
from lib.hashing import quote_hash
from tests.cluster_mac import MAC, SECRET, data_config, signed_client
from tests.functional.test_data_server import HASH, shard_bytes

DATA = shard_bytes(3000, index=1)
SHARD = f"{quote_hash(HASH)}.1"
COMMIT = f"/temp/{SHARD}?commit=1"


@pytest.fixture
def node(tmp_path):
    app = create_app(data_config(listen_address="127.0.1.1:1", storage_root=tmp_path),
                     bus=None)
    return tmp_path, app


def _files(root) -> list[str]:
    return sorted(p.name for sub in ("objects", "temp", "garbage") for p in (root / sub).iterdir())


def _mac(method: str, target: str, mac: ClusterMac = MAC) -> dict:
    return {HEADER: mac.sign(method, target)}


def test_a_stranger_changes_nothing(node):
    root, app = node
    signed_client(app).post(COMMIT, data=DATA, headers={"Size": str(len(DATA))})
    before = _files(root)
    stranger = app.test_client()
    uuid = "00000000-0000-4000-8000-000000000000"
    for method, target in [("POST", COMMIT), ("POST", f"/temp/{SHARD}"),
                           ("PUT", f"/temp/{uuid}"), ("PATCH", f"/temp/{uuid}"),
                           ("DELETE", f"/temp/{uuid}"), ("PUT", f"/tail/{uuid}"),
                           ("DELETE", f"/objects/{SHARD}"), ("DELETE", f"/objects/{quote_hash(HASH)}"),
                           ("POST", f"/garbage/{SHARD}?older_than=0"),
                           ("DELETE", "/garbage/?older_than=0"),
                           ("GET", f"/objects/{SHARD}"), ("HEAD", f"/objects/{SHARD}"),
                           ("GET", "/objects/"), ("GET", f"/temp/{uuid}")]:
        answer = stranger.open(target, method=method, data=DATA,
                               headers={"Size": str(len(DATA))})
        assert answer.status_code == 403, (method, target, answer.data)
    assert _files(root) == before
    assert stranger.get("/health").json["shards"] == 1


@pytest.mark.parametrize("why, headers", [
    ("wrong key", _mac("POST", COMMIT, ClusterMac(derive_key(b"another cluster's secret")))),
    ("stale", _mac("POST", COMMIT, ClusterMac(derive_key(SECRET.encode()),
                                               clock=lambda: 1_000_000_000.0))),
    ("ahead", {HEADER: ClusterMac(derive_key(SECRET.encode())).sign("POST", COMMIT)
               .replace(":", "0:", 1)}),
    ("other method", _mac("PUT", COMMIT)),
    ("other path", _mac("POST", f"/temp/{quote_hash(HASH)}.2?commit=1")),
    ("other query", _mac("POST", f"/temp/{SHARD}")),
    ("malformed", {HEADER: "yesterday:deadbeef"}),
    ("no mac", {HEADER: ""}),
])
def test_a_request_without_its_own_fresh_mac_is_refused(node, why, headers):
    root, app = node
    answer = app.test_client().post(COMMIT, data=DATA, headers={"Size": str(len(DATA)),
                                                                **headers})
    assert answer.status_code == 403, why
    assert _files(root) == []


def test_a_mac_replayed_on_another_shard_deletes_nothing(node):
    root, app = node
    member = signed_client(app)
    assert member.post(COMMIT, data=DATA, headers={"Size": str(len(DATA))}).status_code == 200
    other = f"/objects/{quote_hash(HASH)}.2"
    seen = _mac("DELETE", other)                       # a MAC seen on the wire
    stranger = app.test_client()
    assert stranger.delete(f"/objects/{SHARD}", headers=seen).status_code == 403
    assert stranger.post(f"/garbage/{SHARD}?older_than=0",
                         headers=_mac("POST", f"/garbage/{SHARD}?older_than=3600")
                         ).status_code == 403
    assert member.get(f"/objects/{SHARD}").data == DATA


def test_signed_requests_pass_within_the_skew(node):
    root, app = node
    late = ClusterMac(derive_key(SECRET.encode()), clock=lambda: __import__("time").time() - 200)
    client = app.test_client()
    stored = client.post(COMMIT, data=DATA, headers={"Size": str(len(DATA)),
                                                     **_mac("POST", COMMIT, late)})
    assert stored.status_code == 200
    got = client.get(f"/objects/{SHARD}", headers=_mac("GET", f"/objects/{SHARD}"))
    assert got.status_code == 200 and got.data == DATA


def test_reads_may_be_opened_but_writes_never(tmp_path):
    app = create_app(data_config(listen_address="127.0.1.1:1", storage_root=tmp_path,
                                 data_reads_open=True), bus=None)
    signed_client(app).post(COMMIT, data=DATA, headers={"Size": str(len(DATA))})
    stranger = app.test_client()
    assert stranger.get(f"/objects/{SHARD}").data == DATA
    assert stranger.delete(f"/objects/{SHARD}").status_code == 403
    assert stranger.post(COMMIT, data=DATA, headers={"Size": str(len(DATA))}).status_code == 403
    assert stranger.get(f"/objects/{SHARD}").status_code == 200


def test_the_mac_checks_its_clock_both_ways():
    now = [1_700_000_000.0]
    mac = ClusterMac(b"k" * 32, skew=300, clock=lambda: now[0])
    value = mac.sign("GET", "/objects/x.0")
    assert mac.check("GET", "/objects/x.0", value) is None
    now[0] += 300
    assert mac.check("GET", "/objects/x.0", value) is None
    now[0] += 1
    assert "off" in mac.check("GET", "/objects/x.0", value)
    now[0] -= 602
    assert "off" in mac.check("GET", "/objects/x.0", value)
    assert mac.check("GET", "/objects/x.0", value.replace(":", ":\u00e9")) == "wrong Cluster-Mac"
