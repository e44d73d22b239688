"""A third-party origin for tests: a threaded HTTP server on 127.0.3.x that serves registered
objects, well or badly, and counts the requests it gets.

``origin.add(key, data_or_body, **how)`` registers what ``GET /o/<key>`` answers:

* ``status``: answer that status (500, 404...) with no body;
* ``delay``: seconds to wait before the head (a slow or hanging origin);
* ``gate``: a ``threading.Event`` to wait for (at most 30 s) before the head;
* ``truncate``: send only that many body bytes of the declared Content-Length, then close;
* ``chunked``: no Content-Length (chunked transfer coding);
* ``md5``: the Content-MD5 to declare (a wrong one makes a body that fails its checksum);
* ``redirect``: answer 302 to that path (``/o/<other key>``) instead.

Bodies are ``bytes`` or a ``tests.conftest.Body`` (streamed, never held whole).  Nothing but
127.0.3.x is ever bound.
"""
from __future__ import annotations

import base64
import hashlib
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LAST_MODIFIED = "Wed, 21 Oct 2026 07:28:00 GMT"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        path = urllib.parse.urlsplit(self.path).path
        key = urllib.parse.unquote(path[len("/o/"):]) if path.startswith("/o/") else None
        origin = self.server.origin
        origin.count(self.command, key)
        entry = origin.objects.get(key)
        if entry is None:
            self._empty(404)
            return
        body, how = entry
        if how.get("delay"):
            time.sleep(how["delay"])
        if how.get("gate") is not None:
            how["gate"].wait(30)
        if how.get("status"):
            self._empty(how["status"])
            return
        if how.get("redirect"):
            self.send_response(302)
            self.send_header("Location", how["redirect"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = len(body)
        self.send_response(200)
        self.send_header("Content-Type", how.get("content_type", "text/plain; charset=utf-8"))
        self.send_header("ETag", f'"{how.get("etag", "origin-etag-" + str(size))}"')
        self.send_header("Last-Modified", LAST_MODIFIED)
        if how.get("md5"):
            self.send_header("Content-MD5", how["md5"])
        if how.get("chunked"):
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        if head:
            return
        left = how.get("truncate", size)
        pieces = [body] if isinstance(body, bytes) else body
        for piece in pieces:
            piece = piece[:left]
            left -= len(piece)
            if how.get("chunked"):
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                self.wfile.write(piece)
            if how.get("trickle"):
                time.sleep(how["trickle"])
            if left <= 0:
                break
        if how.get("chunked") and "truncate" not in how:
            self.wfile.write(b"0\r\n\r\n")
        if "truncate" in how:
            self.close_connection = True

    def _empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    origin: "Origin"

    def handle_error(self, request, client_address) -> None:
        pass                       # a client that hung up mid-body is part of the tests


class Origin:
    """One test origin; use as a context manager (or call :meth:`stop`)."""

    def __init__(self, host: str = "127.0.3.200", tls: tuple[str, str] | None = None):
        """:param tls: (certificate, key) PEM files: serve HTTPS."""
        assert host.startswith("127.0.3."), "test origins live on 127.0.3.x"
        self.objects: dict[str, tuple[object, dict]] = {}
        self.requests: Counter = Counter()
        self._lock = threading.Lock()
        self._server = _Server((host, 0), _Handler)
        self._server.origin = self
        self.scheme = "https" if tls else "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.address = f"{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def template(self) -> str:
        return f"{self.scheme}://{self.address}/o/{{key}}"

    def add(self, key: str, body, **how) -> None:
        self.objects[key] = (body, how)

    def count(self, method: str, key: str | None) -> None:
        with self._lock:
            self.requests[(method, key)] += 1

    def gets(self, key: str) -> int:
        with self._lock:
            return self.requests[("GET", key)]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "Origin":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()
