"""The data server's HTTP API in process (Flask test client, no RabbitMQ)."""
from __future__ import annotations

import base64
import os
import time

import pytest

from data_server import create_app
from lib.hashing import quote_hash
from lib.rs import layout
from lib.rs.codec import get_codec
from lib.rs.params import BLOCK_SIZE
from tests.cluster_mac import data_config, signed_client
from tests.conftest import Body, sha256_b64

HASH = base64.b64encode(b"\xff\xff\xfb" + bytes(29)).decode()     # starts with "///" and "+"


def shard_bytes(size: int, index: int = 0) -> bytes:
    """Shard ``index`` of a ``size``-byte object, as the api server would send it."""
    data = Body(size, seed=5).bytes()
    codec = get_codec()
    return b"".join(layout.seal(codec.encode(data[b:b + BLOCK_SIZE])[index])
                    for b in range(0, size, BLOCK_SIZE))


@pytest.fixture
def root(tmp_path):
    return tmp_path / "a.b.c"             # dots in STORAGE_ROOT must not matter (BOOK W14)


@pytest.fixture
def client(root):
    app = create_app(data_config(listen_address="127.0.1.1:1", storage_root=root), bus=None)
    return signed_client(app)


def store(client, data: bytes, index: int = 0, hash_: str = HASH):
    uuid = client.post(f"/temp/{quote_hash(hash_)}.{index}", data=data,
                       headers={"Size": str(len(data))})
    assert uuid.status_code == 200, uuid.data
    commit = client.put(f"/temp/{uuid.text}")
    assert commit.status_code == 200
    return commit.headers["Shard-Hash"]


def test_post_commit_get_round_trip(client, root):
    data = shard_bytes(2 * BLOCK_SIZE + 100, index=4)
    shard_hash = store(client, data, index=4)
    assert shard_hash == sha256_b64(data)
    files = list((root / "objects").iterdir())
    assert [f.name for f in files] == [f"{quote_hash(HASH)}.4.{quote_hash(shard_hash)}"]
    assert list((root / "temp").iterdir()) == []
    got = client.get(f"/objects/{quote_hash(HASH)}.4")
    assert got.status_code == 200 and got.data == data
    record = layout.full_record_size()
    part = client.get(f"/objects/{quote_hash(HASH)}.4",
                      headers={"Range": f"bytes={record}-{2 * record - 1}"})
    assert part.status_code == 206 and part.data == data[record:2 * record]
    assert client.get(f"/objects/{quote_hash(HASH)}.3").status_code == 404
    assert client.get(f"/objects/{quote_hash(HASH)}.9").status_code == 400


def test_corrupt_shard_is_never_served_and_is_moved_aside(client, root):
    data = shard_bytes(BLOCK_SIZE + 10)
    store(client, data)
    (path,) = (root / "objects").iterdir()
    raw = bytearray(path.read_bytes())
    raw[len(raw) - 20] ^= 1                          # in the second record
    path.write_bytes(bytes(raw))
    response = client.get(f"/objects/{quote_hash(HASH)}.0")
    with pytest.raises(Exception):
        response.get_data()                          # the stream is cut, not completed
    assert not path.exists()
    assert [p.name.split(".corrupt.")[0] for p in (root / "garbage").iterdir()] == [path.name]
    assert client.get(f"/objects/{quote_hash(HASH)}.0").status_code == 404


def test_upload_with_a_damaged_record_or_wrong_size_leaves_nothing(client, root):
    data = bytearray(shard_bytes(1000))
    data[10] ^= 1
    name = f"/temp/{quote_hash(HASH)}.0"
    assert client.post(name, data=bytes(data), headers={"Size": str(len(data))}).status_code == 400
    good = shard_bytes(1000)
    assert client.post(name, data=good, headers={"Size": str(len(good) + 1)}).status_code == 400
    assert list((root / "temp").iterdir()) == []
    assert list((root / "objects").iterdir()) == []


def test_temp_lifecycle_patch_head_and_abort(client, root):
    data = shard_bytes(3000)
    name = f"/temp/{quote_hash(HASH)}.1"
    uuid = client.post(name, headers={"Size": str(len(data))}).text
    assert client.head(f"/temp/{uuid}").headers["Content-Length"] == "0"
    assert client.patch(f"/temp/{uuid}", data=data[:100]).status_code == 200
    assert client.patch(f"/temp/{uuid}", data=data[100:]).status_code == 200
    assert client.head(f"/temp/{uuid}").headers["Content-Length"] == str(len(data))
    assert client.get(f"/temp/{uuid}").data == data
    assert client.delete(f"/temp/{uuid}").status_code == 200
    assert client.head(f"/temp/{uuid}").status_code == 404
    assert client.delete("/temp/not-a-uuid").status_code == 404
    assert client.put("/temp/..").status_code == 404
    assert client.put("/temp/..%2F..%2Fetc").status_code == 405      # not a uuid route at all
    assert list((root / "temp").iterdir()) == []


def test_index_is_rebuilt_from_disk_and_ignores_foreign_files(root):
    config = data_config(listen_address="127.0.1.1:1", storage_root=root)
    first = signed_client(create_app(config, bus=None))
    data = shard_bytes(500, index=2)
    store(first, data, index=2)
    (root / "objects" / "README").write_text("not a shard")
    again = signed_client(create_app(config, bus=None))
    assert again.get(f"/objects/{quote_hash(HASH)}.2").data == data
    assert again.get("/health").json["shards"] == 1


def test_delete_moves_shards_to_garbage(client, root):
    store(client, shard_bytes(10))
    assert client.delete(f"/objects/{quote_hash(HASH)}").status_code == 200
    assert list((root / "objects").iterdir()) == []
    assert len(list((root / "garbage").iterdir())) == 1


def test_collecting_one_shard_leaves_the_others_and_the_young(client, root):
    """``POST /garbage/<hash>.<i>``: only shard i, and only once older than ``older_than``."""
    for index in (1, 3):
        store(client, shard_bytes(10, index), index=index)
    old = time.time() - 7200
    for path in (root / "objects").iterdir():
        os.utime(path, (old, old))
    assert client.post(f"/garbage/{quote_hash(HASH)}.1?older_than=9000").json == {
        "moved": 0, "kept": 1}
    assert client.post(f"/garbage/{quote_hash(HASH)}.1?older_than=3600").json == {
        "moved": 1, "kept": 0}
    assert [p.name.split(".")[1] for p in (root / "objects").iterdir()] == ["3"]
    assert client.get(f"/objects/{quote_hash(HASH)}.1").status_code == 404
    assert client.get(f"/objects/{quote_hash(HASH)}.3").status_code == 200
    assert client.post(f"/garbage/{quote_hash(HASH)}.9?older_than=0").status_code == 400


def test_abandoned_temp_objects_expire(client, root):
    from data_server.storage import ShardName, Storage
    storage = Storage(root)
    info = storage.create_temp(ShardName(HASH, 0), 10)
    assert storage.expire_temps(ttl=60) == 0
    assert storage.expire_temps(ttl=60, now=time.time() + 120) == 1
    assert not (root / "temp" / f"{info.uuid}.dat").exists()


def test_temp_objects_go_when_their_token_expires_unless_still_written(root):
    """Expiry counts from creation (an upload token's lifetime), not from the last write, so
    an abandoned upload is gone soon after its token; one still being written is kept."""
    from data_server.storage import IDLE_GRACE, ShardName, Storage
    storage = Storage(root)
    ttl, now = 3600.0, time.time()
    info = storage.create_temp(ShardName(HASH, 0), 10)
    dat = root / "temp" / f"{info.uuid}.dat"
    os.utime(dat, (now - 2 * IDLE_GRACE, now - 2 * IDLE_GRACE))   # last written long ago
    assert storage.expire_temps(ttl, now=now + ttl - 1) == 0          # token still valid
    assert storage.expire_temps(ttl, now=now + ttl + 1) == 1          # token expired: gone
    busy = storage.create_temp(ShardName(HASH, 1), 10)
    busy_dat = root / "temp" / f"{busy.uuid}.dat"
    os.utime(busy_dat, (now + 2 * ttl, now + 2 * ttl))                # written just now
    assert storage.expire_temps(ttl, now=now + 2 * ttl + 1) == 0
    assert storage.expire_temps(ttl, now=now + 2 * ttl + IDLE_GRACE + 1) == 1
    orphan = root / "temp" / "0c8e2b8e-6f1e-4f55-9d7a-0e0f4b7a1c11.dat"  # no .json
    orphan.write_bytes(b"x")
    os.utime(orphan, (now, now))
    assert storage.expire_temps(ttl, now=now + ttl + IDLE_GRACE + 1) == 1
    assert list((root / "temp").iterdir()) == []


@pytest.fixture
def flask_only(root):
    """The same data server without its fast path: every request through the Flask views."""
    app = create_app(data_config(listen_address="127.0.1.1:1", storage_root=root), bus=None)
    gate = app.wsgi_app
    gate._app = gate._app._app
    return signed_client(app)


def _answer(response) -> tuple:
    headers = {k: response.headers.get(k) for k in ("Content-Length", "Content-Range",
                                                    "Accept-Ranges", "Shard-Hash")}
    return response.status_code, headers, response.get_data()


def test_one_request_commit_and_shard_reads_answer_like_the_flask_views(client, flask_only,
                                                                         root):
    """The fast path (commit=1 POSTs, shard GET/HEAD) and the Flask views give the same
    answers, errors included, and a refused upload leaves nothing behind."""
    data = shard_bytes(BLOCK_SIZE + 100, index=2)
    damaged = bytearray(data)
    damaged[10] ^= 1
    name = f"/temp/{quote_hash(HASH)}.2?commit=1"
    record = layout.full_record_size()
    for bad in ({"data": bytes(damaged), "headers": {"Size": str(len(data))}},
                {"data": data, "headers": {"Size": str(len(data) + 1)}},
                {"data": data, "headers": {"Size": "0x10"}}):
        assert _answer(client.post(name, **bad)) == _answer(flask_only.post(name, **bad))
        assert client.post(name, **bad).status_code == 400
    assert _answer(client.post(f"/temp/{quote_hash(HASH)}.7?commit=1", data=data,
                               headers={"Size": str(len(data))}))[0] == 400
    assert list((root / "temp").iterdir()) == [] and list((root / "objects").iterdir()) == []

    stored = client.post(name, data=data, headers={"Size": str(len(data))})
    again = flask_only.post(name, data=data, headers={"Size": str(len(data))})
    assert _answer(stored) == _answer(again)
    assert stored.headers["Shard-Hash"] == sha256_b64(data)
    assert [p.name for p in (root / "objects").iterdir()] == [
        f"{quote_hash(HASH)}.2.{quote_hash(sha256_b64(data))}"]

    shard = f"/objects/{quote_hash(HASH)}.2"
    for headers in ({}, {"Range": f"bytes={record}-"}, {"Range": "bytes=-5"},
                    {"Range": f"bytes={len(data)}-"}):
        assert _answer(client.get(shard, headers=headers)) == _answer(
            flask_only.get(shard, headers=headers))
    assert client.get(shard).get_data() == data
    assert client.get(shard, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    head = client.head(shard)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
    assert head.get_data() == b""
    for missing in (f"/objects/{quote_hash(HASH)}.3", f"/objects/{quote_hash(HASH)}.9",
                    "/objects/not-a-hash.0"):
        assert _answer(client.get(missing)) == _answer(flask_only.get(missing))
        assert client.head(missing).status_code in (400, 404)


def test_stats_bytes_come_from_a_scan_reused_for_a_few_seconds(client, root, monkeypatch):
    from data_server import inspect

    scans = []
    real = inspect._scan_bytes
    monkeypatch.setattr(inspect, "_scan_bytes", lambda d: scans.append(d) or real(d))
    now = [100.0]
    client.application.extensions[inspect._BYTES] = inspect.ScannedTotal(
        root / "objects", clock=lambda: now[0])
    data = shard_bytes(BLOCK_SIZE + 7, index=2)
    store(client, data, index=2)
    first = client.get("/stats").json
    assert first["shards"] == 1 and first["bytes"] == len(data) and len(scans) == 1
    more = shard_bytes(10, index=3)
    store(client, more, index=3)
    now[0] += inspect.BYTES_TTL - 0.5
    again = client.get("/stats").json                  # the shard count is always current
    assert again["shards"] == 2 and again["bytes"] == len(data) and len(scans) == 1
    now[0] += 1
    assert client.get("/stats").json["bytes"] == len(data) + len(more) and len(scans) == 2


def test_scanned_total_scans_once_per_ttl(tmp_path):
    from data_server.inspect import ScannedTotal

    clock = [0.0]
    (tmp_path / "a").write_bytes(b"x" * 10)
    total = ScannedTotal(tmp_path, ttl=5.0, clock=lambda: clock[0])
    assert total.get() == 10
    (tmp_path / "b").write_bytes(b"y" * 5)
    clock[0] = 4.9
    assert total.get() == 10
    clock[0] = 5.0
    assert total.get() == 15
