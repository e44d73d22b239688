"""Broken request bodies and out-of-range numbers are the client's fault: 400, nothing
written, and the api server goes on serving (issue 11, items 4 and 5)."""
from __future__ import annotations

import socket
import uuid

import pytest
import requests

from lib.hashing import sha256_b64


def raw_put(address: str, path: str, head_lines: list[str], body: bytes,
            half_close: bool = False) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        head = "\r\n".join([f"PUT {path} HTTP/1.1", f"Host: {address}", *head_lines, "", ""])
        sock.sendall(head.encode() + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer:
                    break
        except (socket.timeout, ConnectionResetError):
            pass
    return answer


@pytest.mark.parametrize("body, half_close", [
    (b"5\r\nhello\r\nzz\r\n", False),                 # a chunk size that is not hex
    (b"5\r\nhelloXX0\r\n\r\n", False),               # a chunk without its terminator
    (b"5\r\nhel", True),                             # the body ends inside a chunk
])
def test_malformed_chunked_bodies_are_400(client, body, half_close):
    name = f"chunked-{uuid.uuid4().hex[:8]}"
    digest = sha256_b64(b"hello")
    answer = raw_put(client.cluster.api[0].address, f"/objects/{name}",
                     [f"Digest: SHA-256={digest}", "Transfer-Encoding: chunked"], body,
                     half_close)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert client.get(name).status_code == 404
    assert client.temp_files() == []
    ok = client.put(f"{name}-ok", b"fine", sha256_b64(b"fine"))
    assert ok.status_code == 200


@pytest.mark.parametrize("query", ["from=1000000000000000000000000000000", "size=-1",
                                   "from=x", "size=99999999999999999999", "version=-2"])
def test_out_of_range_numbers_are_400(client, query):
    path = "versions/any" if not query.startswith("version=") else "objects/any"
    answer = requests.get(f"{client.api()}/{path}?{query}", timeout=10)
    assert answer.status_code == 400, answer.text
