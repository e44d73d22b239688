"""Resumable upload on the real cluster (BOOK chapter 6, W17, W18): POST, HEAD, PUT pieces of
any size on either api server, a client killed mid-piece and resumed by another process, wrong
offsets, forged and expired tokens, digest mismatch, dedup, a data server lost mid-upload,
and abandoned uploads cleaned up."""
from __future__ import annotations

import base64
import hashlib
import json
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import requests

from lib.rs.params import BLOCK_SIZE
from lib.upload_token import UploadToken, sign
from tests.conftest import Body, sha256_b64
from tests.probe.conftest import wait_for

pytestmark = pytest.mark.probe


def slashy_body(size: int) -> Body:
    """Content whose hash contains '/': the book wrote those quoted into metadata (W17)."""
    seed = 0
    while "/" not in (body := Body(size, seed=seed)).hash:
        seed += 1
    return body


def start(client, name: str, hash_: str, size: int, i: int = 0) -> requests.Response:
    return client.session.post(client.url(name, i), timeout=30,
                               headers={"Digest": f"SHA-256={hash_}", "Size": str(size)})


def upload_url(client, response: requests.Response, i: int = 0) -> str:
    assert response.status_code == 201, response.text
    return client.api(i) + response.headers["Location"]


def put_piece(url: str, offset: int, data, **headers) -> requests.Response:
    return requests.put(url, data=data, timeout=60, headers={"Range": f"bytes={offset}-",
                                                              **headers})


def offset_of(url: str) -> int:
    response = requests.head(url, timeout=30)
    assert response.status_code == 200, response.status_code
    assert response.headers["Upload-Offset"] == response.headers["Content-Length"]
    return int(response.headers["Content-Length"])


def token_of(url: str) -> dict:
    payload = url.rsplit("/", 1)[1].split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def leftovers(client, url: str) -> list:
    uuids = [u for u in token_of(url)["uuids"] if u]
    found = []
    for node in client.cluster.data:
        for uuid in uuids:
            found += list((node.storage_root / "temp").glob(f"{uuid}*"))
            found += list((node.storage_root / "tails").glob(f"{uuid}*"))
    return found


def test_pieces_of_any_size_on_either_api_server(client):
    body = slashy_body(3 * BLOCK_SIZE + 12345)
    data = body.bytes()
    url = upload_url(client, start(client, "resumable/a", body.hash, body.size))
    urls = [url, url.replace(client.api(0), client.api(1))]
    assert offset_of(urls[1]) == 0
    cuts = [0, 1, 1000, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1, 2 * BLOCK_SIZE + 5000,
            body.size]
    for n, (a, b) in enumerate(zip(cuts, cuts[1:])):
        response = put_piece(urls[n % 2], a, data[a:b])
        assert response.status_code == 200, response.text
        assert int(response.headers["Upload-Offset"]) == b
        if b < body.size:
            assert "Version" not in response.headers
            assert offset_of(urls[(n + 1) % 2]) == b        # every byte counted, none dropped
    assert response.headers["Version"] == "1"
    got = client.get("resumable/a", i=1)
    assert got.status_code == 200 and got.content == data
    versions = client.session.get(f"{client.api()}/versions/resumable%2Fa", timeout=10).text
    assert json.loads(versions)["Hash"] == body.hash              # raw, not quoted (W17)
    assert len(client.shard_files(body.hash)) == 6
    assert leftovers(client, url) == []
    assert offset_of(url) == body.size        # a client whose last answer was lost learns it
    assert put_piece(url, body.size, b"").status_code == 200


def test_wrong_offsets_are_416_and_nothing_moves(client):
    body = Body(BLOCK_SIZE + 10, seed=2)
    data = body.bytes()
    url = upload_url(client, start(client, "resumable/offsets", body.hash, body.size, i=1), 1)
    wrong = put_piece(url, 5, data[5:100])
    assert wrong.status_code == 416 and wrong.headers["Upload-Offset"] == "0"
    assert put_piece(url, 0, data[:1000]).status_code == 200
    for offset in (0, 999, 1001, body.size):
        response = put_piece(url, offset, data[offset:offset + 10])
        assert response.status_code == 416, offset
        assert response.headers["Upload-Offset"] == "1000"
    assert requests.put(url, data=data[:10], timeout=10).status_code == 416   # no Range: 0
    assert put_piece(url, 1000, data[1000:] + b"extra").status_code == 400    # past Size
    assert put_piece(url, 1000, b"x", Range="bytes=abc").status_code == 400
    assert offset_of(url) == 1000
    standard = requests.put(url, data=data[1000:], timeout=30, headers={
        "Content-Range": f"bytes 1000-{body.size - 1}/{body.size}"})
    assert standard.status_code == 200 and standard.headers["Version"] == "1"
    assert client.get("resumable/offsets").content == data


class Listener:
    """A socket that records whether anybody connected to it."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.3.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.address = "%s:%d" % self.sock.getsockname()

    def contacted(self) -> bool:
        try:
            self.sock.accept()[0].close()
            return True
        except BlockingIOError:
            return False


def test_forged_and_expired_tokens_contact_nobody(client):
    body = Body(1000, seed=3)
    url = upload_url(client, start(client, "resumable/forged", body.hash, body.size))
    prefix, text = url.rsplit("/", 1)
    listener = Listener()
    genuine = token_of(url)
    genuine["servers"] = [listener.address] * 6
    payload = base64.urlsafe_b64encode(json.dumps(genuine).encode()).rstrip(b"=").decode()
    secret = client.cluster.env_for(client.cluster.api[0])["CLUSTER_SECRET"].encode()
    expired = UploadToken(genuine["name"], genuine["size"], genuine["hash"],
                          tuple(genuine["servers"]), tuple(genuine["uuids"]),
                          int(time.time()) - 1)
    cases = {
        f"{payload}.{text.split('.')[1]}": 403,                  # servers swapped, old signature
        sign(expired, b"not the cluster secret" * 2): 403,
        text[:-2] + ("AA" if text[-2:] != "AA" else "BB"): 403,
        "garbage": 403,
        sign(expired, secret): 404,                              # genuine but expired
    }
    for token, status in cases.items():
        for method in ("HEAD", "PUT", "DELETE"):
            response = requests.request(method, f"{prefix}/{token}", data=body.bytes(),
                                        timeout=10, headers={"Range": "bytes=0-"})
            assert response.status_code == status, (method, token[:20], response.text)
    assert not listener.contacted()
    assert offset_of(url) == 0
    assert requests.delete(url, timeout=10).status_code == 200       # the client gives up
    assert requests.head(url, timeout=10).status_code == 404
    assert leftovers(client, url) == []


def test_a_digest_mismatch_keeps_nothing(client):
    body = Body(2 * BLOCK_SIZE + 3, seed=4)
    lie = sha256_b64(b"something else")
    url = upload_url(client, start(client, "resumable/lie", lie, body.size))
    data = body.bytes()
    assert put_piece(url, 0, data[:BLOCK_SIZE + 7]).status_code == 200
    last = put_piece(url, BLOCK_SIZE + 7, data[BLOCK_SIZE + 7:])
    assert last.status_code == 400 and "SHA-256" in last.text
    assert requests.head(url, timeout=10).status_code == 404
    assert client.get("resumable/lie").status_code == 404
    assert client.shard_files(lie) == {}
    assert leftovers(client, url) == []


def test_an_upload_sent_in_one_request_is_checked_on_the_way(client):
    body = Body(2 * BLOCK_SIZE + 3, seed=9)
    lie = sha256_b64(b"another thing")
    url = upload_url(client, start(client, "resumable/one-lie", lie, body.size))
    assert put_piece(url, 0, body.bytes()).status_code == 400
    assert requests.head(url, timeout=10).status_code == 404
    assert client.shard_files(lie) == {} and leftovers(client, url) == []
    url = upload_url(client, start(client, "resumable/one", body.hash, body.size))
    response = put_piece(url, 0, body.bytes())
    assert response.status_code == 200 and response.headers["Version"] == "1"
    assert client.get("resumable/one").content == body.bytes()


def test_known_or_empty_content_needs_no_upload(client):
    body = Body(5000, seed=5)
    assert client.put("resumable/original", body.bytes(), body.hash).status_code == 200
    again = start(client, "resumable/copy", body.hash, body.size)
    assert again.status_code == 200 and again.headers["Version"] == "1"
    assert client.get("resumable/copy").content == body.bytes()
    assert start(client, "resumable/copy", body.hash, body.size + 1).status_code == 400
    empty = start(client, "resumable/empty", sha256_b64(b""), 0)
    assert empty.status_code == 200 and client.get("resumable/empty").content == b""
    assert start(client, "resumable/empty", body.hash, 0).status_code == 400
    no_size = client.session.post(client.url("x"), timeout=10,
                                  headers={"Digest": f"SHA-256={body.hash}"})
    no_digest = client.session.post(client.url("x"), timeout=10, headers={"Size": "5"})
    assert no_size.status_code == 400 and no_digest.status_code == 400


KILLED_CLIENT = textwrap.dedent("""
    import socket, sys, time
    host, port, path, offset, length, file = sys.argv[1:]
    data = open(file, "rb").read()
    s = socket.create_connection((host, int(port)))
    s.sendall((f"PUT {path} HTTP/1.1\\r\\nHost: {host}\\r\\nRange: bytes={offset}-\\r\\n"
               f"Content-Length: {length}\\r\\n\\r\\n").encode() + data)
    print("sent", flush=True)
    time.sleep(60)
""")


def test_a_client_killed_mid_piece_is_resumed_by_another_process(client, tmp_path):
    body = Body(4 * BLOCK_SIZE + 999, seed=6)
    data = body.bytes()
    url = upload_url(client, start(client, "resumable/killed", body.hash, body.size))
    assert put_piece(url, 0, data[:700]).status_code == 200
    sent = 2 * BLOCK_SIZE + 4321                # ends inside a block: the tail must survive
    (tmp_path / "piece").write_bytes(data[700:700 + sent])
    host, port = client.cluster.api[1].address.split(":")
    path = url.split(client.api(0), 1)[1]
    killed = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLIENT, host, port, path, "700",
         str(body.size - 700), str(tmp_path / "piece")], stdout=subprocess.PIPE, text=True)
    try:
        assert killed.stdout.readline().strip() == "sent"
        time.sleep(0.3)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
    wait_for(lambda: offset_of(url) == 700 + sent, timeout=15)
    offset = offset_of(url)
    response = put_piece(url, offset, data[offset:])
    assert response.status_code == 200 and response.headers["Version"] == "1"
    got = client.get("resumable/killed")
    assert hashlib.sha256(got.content).digest() == base64.b64decode(body.hash)


def test_a_lost_data_server_and_abandoned_uploads(make_cluster, monkeypatch):
    """A data server dies mid-upload: the upload completes on the other five.  An upload
    left alone expires (TEMP_TTL): its token is refused and every file of it is removed."""
    from tests.probe.conftest import Client
    monkeypatch.setenv("TEMP_TTL", "5")
    cluster = make_cluster()
    c = Client(cluster)
    body = Body(2 * BLOCK_SIZE + 5, seed=7)
    data = body.bytes()
    url = upload_url(c, start(c, "lost", body.hash, body.size))
    assert put_piece(url, 0, data[:BLOCK_SIZE + 9]).status_code == 200
    first_server = token_of(url)["servers"][0]
    victim = next(n for n in cluster.data if n.address == first_server)
    cluster.kill_node(victim)
    response = put_piece(url, BLOCK_SIZE + 9, data[BLOCK_SIZE + 9:])
    assert response.status_code == 200, response.text
    assert c.get("lost").content == data

    abandoned = Body(BLOCK_SIZE + 100, seed=8)
    url = upload_url(c, start(c, "abandoned", abandoned.hash, abandoned.size))
    assert put_piece(url, 0, abandoned.bytes()[:BLOCK_SIZE + 50]).status_code == 200
    assert leftovers(c, url)
    wait_for(lambda: requests.head(url, timeout=5).status_code == 404, timeout=10)
    assert put_piece(url, BLOCK_SIZE + 50, abandoned.bytes()[BLOCK_SIZE + 50:]).status_code \
        == 404
    wait_for(lambda: leftovers(c, url) == [], timeout=20)
