"""A data server's side of resumable uploads, in process: conditional record appends and tails."""
from __future__ import annotations

import os
import time

import pytest

from data_server import create_app, tails
from lib.hashing import quote_hash
from lib.rs import layout
from lib.rs.params import BLOCK_SIZE
from tests.cluster_mac import data_config, signed_client
from tests.functional.test_data_server import HASH, shard_bytes


@pytest.fixture
def node(tmp_path):
    app = create_app(data_config(listen_address="127.0.1.1:1", storage_root=tmp_path),
                     bus=None)
    return app, signed_client(app)


def new_temp(client, size: int) -> str:
    return client.post(f"/temp/{quote_hash(HASH)}.2", headers={"Size": str(size)}).text


def test_conditional_append_only_at_the_expected_offset(node):
    _, client = node
    data = shard_bytes(2 * BLOCK_SIZE + 77, index=2)
    full = layout.full_record_size()
    uuid = new_temp(client, len(data))
    first = client.patch(f"/temp/{uuid}", data=data[:full], headers={"Temp-Offset": "0"})
    assert first.status_code == 200 and first.headers["Temp-Size"] == str(full)
    again = client.patch(f"/temp/{uuid}", data=data[:full], headers={"Temp-Offset": "0"})
    assert again.status_code == 409 and again.headers["Temp-Size"] == str(full)
    rest = client.patch(f"/temp/{uuid}", data=data[full:], headers={"Temp-Offset": str(full)})
    assert rest.status_code == 200 and rest.headers["Temp-Size"] == str(len(data))
    assert client.get(f"/temp/{uuid}").data == data
    assert client.put(f"/temp/{uuid}").status_code == 200


def test_a_cut_body_keeps_whole_records_only_and_corrupt_records_are_refused(node):
    _, client = node
    data = shard_bytes(3 * BLOCK_SIZE, index=2)
    full = layout.full_record_size()
    uuid = new_temp(client, len(data))
    cut = client.patch(f"/temp/{uuid}", data=data[:full + 100], headers={"Temp-Offset": "0"})
    assert cut.status_code == 200 and cut.headers["Temp-Size"] == str(full)
    bad = bytearray(data[full:2 * full])
    bad[7] ^= 1
    refused = client.patch(f"/temp/{uuid}", data=bytes(bad), headers={"Temp-Offset": str(full)})
    assert refused.status_code == 400
    assert client.head(f"/temp/{uuid}").headers["Content-Length"] == str(full)


def test_tails_belong_to_a_temp_object(node):
    app, client = node
    uuid = new_temp(client, 1000)
    assert client.put("/tail/00000000-0000-4000-8000-000000000000", data=b"x",
                      headers={"Tail-Offset": "0"}).status_code == 404
    assert client.put(f"/tail/{uuid}", data=b"x").status_code == 400          # no offset
    assert client.put(f"/tail/{uuid}", data=b"x" * (BLOCK_SIZE + 1),
                      headers={"Tail-Offset": "0"}).status_code == 400
    assert client.head(f"/tail/{uuid}").status_code == 404
    assert client.put(f"/tail/{uuid}", data=b"abc",
                      headers={"Tail-Offset": str(BLOCK_SIZE)}).status_code == 200
    assert client.put(f"/tail/{uuid}", data=b"abcdef",
                      headers={"Tail-Offset": str(BLOCK_SIZE)}).status_code == 200
    got = client.get(f"/tail/{uuid}")
    assert got.data == b"abcdef" and got.headers["Tail-Offset"] == str(BLOCK_SIZE)
    head = client.head(f"/tail/{uuid}")
    assert head.headers["Content-Length"] == "6" and head.headers["Tail-Offset"] == "1048576"
    assert client.get("/tail/..%2F..%2Fetc%2Fpasswd").status_code == 404
    storage = app.extensions["tessera.node"].storage
    assert tails.expire(storage, ttl=60) == 0
    assert client.delete(f"/temp/{uuid}").status_code == 200
    assert tails.expire(storage, ttl=60) == 1                  # its temp object is gone
    assert client.head(f"/tail/{uuid}").status_code == 404
    other = new_temp(client, 1000)
    client.put(f"/tail/{other}", data=b"z", headers={"Tail-Offset": "0"})
    old = time.time() - 120
    os.utime(tails.tails_dir(storage) / other, (old, old))
    assert tails.expire(storage, ttl=60) == 1                  # older than TEMP_TTL
    assert client.delete(f"/tail/{other}").status_code == 200
