"""lib.httpclient against a scripted in-process HTTP server: framing, keep-alive, limits."""
from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from lib import httpclient
from lib.httpclient import ConnectionPool, ProtocolError


def _read_request(rfile) -> tuple[str, str, dict, bytes] | None:
    line = rfile.readline()
    if not line:
        return None
    method, path, _ = line.decode().split(" ", 2)
    headers = {}
    while (line := rfile.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if headers.get("transfer-encoding") == "chunked":
        while size := int(rfile.readline().strip(), 16):
            body += rfile.read(size)
            rfile.readline()
        rfile.readline()
    elif path != "/early-error":
        body = rfile.read(int(headers.get("content-length", 0)))
    return method, path, headers, body


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        self.server.connections += 1
        while request := _read_request(self.rfile):
            method, path, headers, body = request
            self.server.requests.append(request)
            answer = self.server.routes[path.split("?")[0]](method, headers, body)
            if answer is None:
                return                           # close without answering
            if method == "HEAD":
                answer = answer.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            self.wfile.write(answer)
            self.wfile.flush()
            if b"Connection: close" in answer or path in ("/close-after", "/short"):
                return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _ok(body: bytes = b"ok", extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.connections = 0
    srv.requests = []
    srv.routes = {
        "/echo": lambda m, h, b: _ok(b, f"X-Method: {m}\r\nX-Len: {len(b)}\r\n"),
        "/close-after": lambda m, h, b: _ok(b"bye"),
        "/doc": lambda m, h, b: _ok(b"doc!"),
        "/chunked": lambda m, h, b: (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"6\r\n{\"a\":1\r\n3;ext=1\r\n}\n{\r\n6\r\n\"b\":2}\r\n"
                                     b"0\r\nTrailer: x\r\n\r\n"),
        "/short": lambda m, h, b: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        "/no-length": lambda m, h, b: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it",
        "/garbage": lambda m, h, b: b"SMTP ready\r\n\r\n",
        "/many-headers": lambda m, h, b: b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n",
        "/early-error": lambda m, h, b: (b"HTTP/1.1 413 Too Large\r\nContent-Length: 4\r\n"
                                         b"Connection: close\r\n\r\nbig!"),
        "/silent": lambda m, h, b: time.sleep(3) or None,
        "/continue": lambda m, h, b: b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(b"after"),
    }
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, "127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_keep_alive_reuses_one_connection(server):
    srv, address = server
    pool = ConnectionPool(5)
    for i in range(3):
        response = pool.request("POST", address, "/echo", body=b"x" * i)
        assert (response.status, response.data) == (200, b"x" * i)
        assert response.headers["x-method"] == "POST" and response.headers.get("X-Len") == str(i)
    assert srv.connections == 1
    assert srv.requests[0][2]["content-length"] == "0"


def test_streamed_bodies_with_length_and_chunked(server):
    srv, address = server
    pool = ConnectionPool(5)
    parts = [b"a" * 70_000, b"", b"b" * 5]
    response = pool.request("PUT", address, "/echo", body=iter(parts),
                            headers={"Content-Length": "70005"})
    assert response.data == b"".join(parts)
    response = pool.request("PATCH", address, "/echo", body=iter(parts), chunked=True)
    assert response.data == b"".join(parts)
    assert srv.requests[-1][2]["transfer-encoding"] == "chunked"
    with pytest.raises(ValueError):
        pool.request("PUT", address, "/echo", body=iter(parts))     # neither length nor chunked
    for wrong in ("70004", "70006"):                 # longer, shorter than the body
        with pytest.raises(ValueError, match="Content-Length"):
            pool.request("PUT", address, "/echo", body=iter(parts),
                         headers={"Content-Length": wrong})
    assert pool.request("GET", address, "/doc").data == b"doc!"


def test_chunked_answer_streams_and_splits_lines(server):
    _, address = server
    pool = ConnectionPool(5)
    response = pool.request("GET", address, "/chunked")
    assert list(response.iter_lines()) == [b'{"a":1}', b'{"b":2}']
    response.release_conn()
    assert pool.request("GET", address, "/chunked").data == b'{"a":1}\n{"b":2}'


def test_head_has_no_body_and_keeps_the_connection(server):
    srv, address = server
    pool = ConnectionPool(5)
    response = pool.request("HEAD", address, "/doc")
    assert response.headers["content-length"] == "4" and response.data == b""
    assert pool.request("GET", address, "/doc").data == b"doc!"
    assert srv.connections == 1


def test_body_ending_early_is_a_protocol_error(server):
    _, address = server
    response = ConnectionPool(5).request("GET", address, "/short")
    with pytest.raises(ProtocolError, match="early"):
        response.read(10)


def test_body_delimited_by_close(server):
    _, address = server
    assert ConnectionPool(5).request("GET", address, "/no-length").data == b"all of it"


def test_connection_the_server_closed_is_replaced(server):
    srv, address = server
    pool = ConnectionPool(5)
    assert pool.request("GET", address, "/close-after").data == b"bye"
    time.sleep(0.1)
    assert pool.request("GET", address, "/doc").data == b"doc!"
    assert srv.connections == 2


def test_stale_pooled_connection_is_sent_again(server, monkeypatch):
    """A pooled connection that looks alive but gets no answer: a replayable request is
    sent again on a new connection."""
    srv, address = server
    pool = ConnectionPool(5)
    assert pool.request("GET", address, "/close-after").data == b"bye"
    time.sleep(0.1)
    monkeypatch.setattr(httpclient._Connection, "dropped", lambda self: False)
    assert pool.request("GET", address, "/doc").data == b"doc!"
    assert srv.connections == 2


def test_error_answered_before_the_body_was_read(server):
    """The server refuses an upload without reading it: the client gets its status."""
    _, address = server
    body = (b"z" * 65536 for _ in range(256))                     # 16 MiB
    response = ConnectionPool(5).request("PUT", address, "/early-error", body=body,
                                         headers={"Content-Length": str(16 << 20)})
    assert (response.status, response.data) == (413, b"big!")


@pytest.mark.parametrize("error", [RuntimeError, ConnectionResetError])
def test_a_body_that_raises_closes_the_connection(server, error):
    """The server must see the upload end early, not wait for the rest of it; and the body's
    own failure, even a socket error of its source, is told apart from the connection's."""
    srv, address = server
    pool = ConnectionPool(5)

    def body():
        yield b"first"
        raise error("aborted")

    with pytest.raises(httpclient.BodyFailed) as raised:
        pool.request("PUT", address, "/echo", body=body(), headers={"Content-Length": "100"})
    assert isinstance(raised.value.__cause__, error)
    assert pool._idle == {}
    assert pool.request("GET", address, "/doc").data == b"doc!"
    assert srv.connections == 2


def test_interim_answers_are_skipped(server):
    _, address = server
    response = ConnectionPool(5).request("GET", address, "/continue")
    assert (response.status, response.data) == (200, b"after")


@pytest.mark.parametrize("path, match", [("/garbage", "status line"),
                                         ("/many-headers", "header lines")])
def test_malformed_answers(server, path, match):
    _, address = server
    with pytest.raises(ProtocolError, match=match):
        ConnectionPool(5).request("GET", address, path)


def test_every_wait_has_a_timeout(server):
    _, address = server
    started = time.monotonic()
    with pytest.raises(OSError):
        ConnectionPool(0.5).request("GET", address, "/silent")
    assert time.monotonic() - started < 2.5


def test_refused_connection_is_an_os_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]                 # bound, never listening
        with pytest.raises(OSError):
            ConnectionPool(1).request("GET", f"127.0.0.1:{port}", "/")


def test_answers_are_bounded(server, monkeypatch):
    _, address = server
    monkeypatch.setattr(httpclient, "MAX_DATA", 4)
    with pytest.raises(ProtocolError, match="larger"):
        ConnectionPool(5).request("POST", address, "/echo", body=b"12345").data


@pytest.mark.parametrize("path, headers", [("/a b", {}), ("/a\r\nX: y", {}),
                                           ("/a", {"X": "1\r\nEvil: 1"}), ("/é", {})])
def test_request_head_injection_is_refused(path, headers):
    with pytest.raises(ValueError):
        ConnectionPool(1).request("GET", "127.0.0.1:1", path, headers=headers)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_request_many_sends_all_then_reads_all(server, monkeypatch):
    srv, address = server
    pool = ConnectionPool(5)
    assert pool.request("GET", address, "/close-after").data == b"bye"
    time.sleep(0.1)
    monkeypatch.setattr(httpclient._Connection, "dropped", lambda self: False)
    results = pool.request_many([
        ("POST", address, "/echo", b"one", {"X": "1"}),            # on the stale connection
        ("GET", f"127.0.0.1:{_closed_port()}", "/doc", None, None),
        ("GET", "not-an-address", "/doc", None, None),
        ("HEAD", address, "/doc", None, None),
    ])
    assert (results[0].status, results[0].data) == (200, b"one")
    assert isinstance(results[1], OSError) and isinstance(results[2], OSError)
    assert results[3].headers["content-length"] == "4" and results[3].data == b""
    assert srv.connections == 3
