"""A client that hangs up in the middle of a PUT body costs only its own request (issue 11.1).

The api server must not take the end of its own upload for the data servers' failure: before
the fix, one such PUT dropped all six data servers from the worker's live set and the next
requests got 503 until heartbeats re-admitted them.  The client half-closes its socket after
part of the body: to the api server that is the same end of the body as a hang-up, and the
answer it still sends tells the test when the api server is done with the request.
"""
from __future__ import annotations

import os
import socket

import pytest

from lib.rs.params import BLOCK_SIZE
from tests.conftest import sha256_b64
from tests.probe.conftest import Client, wait_for

pytestmark = pytest.mark.probe

SENT = 3 << 20


def _log_sizes(cluster) -> list[int]:
    return [n.log_path.stat().st_size for n in cluster.api]


def _log_since(cluster, sizes: list[int]) -> str:
    text = []
    for node, size in zip(cluster.api, sizes):
        with open(node.log_path, "rb") as f:
            f.seek(size)
            text.append(f.read().decode(errors="replace"))
    return "\n".join(text)


def _chunked(data: bytes) -> bytes:
    piece = 64 << 10
    return b"".join(b"%x\r\n" % len(data[i:i + piece]) + data[i:i + piece] + b"\r\n"
                    for i in range(0, len(data), piece))


def _hang_up(address: str, name: str, framing: str, body: bytes) -> bytes:
    """Send a PUT head and part of its body, half-close, return the status line."""
    host, port = address.rsplit(":", 1)
    digest = sha256_b64(os.urandom(16))             # never matches: nothing may be stored
    head = f"PUT /objects/{name} HTTP/1.1\r\nHost: {address}\r\nDigest: SHA-256={digest}\r\n"
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(f"{head}{framing}\r\n".encode() + body)
        sock.shutdown(socket.SHUT_WR)
        answer = sock.makefile("rb").readline()
    return answer


@pytest.mark.parametrize("framing, chunked", [
    (f"Content-Length: {20 << 20}\r\n", False),
    (f"Content-Length: {10 ** 12}\r\n", False),
    ("Transfer-Encoding: chunked\r\n", True),
], ids=["20MiB-declared", "1TB-declared", "chunked-cut"])
def test_a_client_hanging_up_mid_put_drops_no_data_server(client: Client, framing, chunked):
    cluster = client.cluster
    sizes = _log_sizes(cluster)
    partial = os.urandom(SENT)
    name = f"hangup-{os.urandom(4).hex()}"
    status = _hang_up(cluster.api[0].address, name, framing,
                      _chunked(partial) if chunked else partial)
    assert status.startswith(b"HTTP/1.1 ") and b" 503 " not in status, status
    for i in range(len(cluster.api)):               # at once: no 503 on either api server
        data = os.urandom(2 * BLOCK_SIZE + 5)
        put = client.put(f"{name}-after-{i}", data, sha256_b64(data), i=i)
        assert put.status_code == 200, put.text
        got = client.get(f"{name}-after-{i}", i=i)
        assert got.status_code == 200 and got.content == data
    assert client.get(name).status_code == 404
    log = _log_since(cluster, sizes)
    assert " dropped: " not in log, log
    wait_for(lambda: client.temp_files() == [])     # each data server removed its own
