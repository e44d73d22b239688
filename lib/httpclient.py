"""A lean HTTP/1.1 client for the api side's calls to data servers: pooled keep-alive
connections, bounded header parsing, Content-Length and chunked bodies, streamed both ways.

Why not urllib3: measured here, a 4 KiB shard POST costs 260-320 us of client CPU through
urllib3 (it re-parses and re-encodes every URL, and parses headers with the ``email``
package) against about 35 us through a plain socket; a small PUT makes six such calls and a
small GET four.  Our data servers speak plain HTTP/1.1 that we control, so this client only
implements what they speak, and checks every limit: header lines and counts, chunk sizes,
and bodies that end early (:class:`ProtocolError`).  Socket errors surface as ``OSError``; an
error raised by a streamed request body's own iterable surfaces as :class:`BodyFailed`, so a
caller never takes its source's failure (a client that hung up) for the server's.
"""
from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterable, Iterator

from lib.logs import REQUEST_ID

#: Longest status or header line accepted, and most header lines.
MAX_LINE = 64 * 1024
MAX_HEADERS = 100
#: Most bytes :attr:`Response.data` reads into memory (answers that are not streamed).
MAX_DATA = 8 * 1024 * 1024
#: Bodies up to this size go out in the same send as the request head.
_COALESCE = 64 * 1024
_BUFFER = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})


class ProtocolError(Exception):
    """The server broke HTTP/1.1: a malformed head, or a body that ended early."""


class BodyFailed(Exception):
    """The request body's own iterable raised: its source failed, not the connection nor the
    server.  The original exception is the ``__cause__``."""


class NoAnswer(ProtocolError):
    """The connection closed before a byte of the answer came (a pooled connection the
    server had closed: the request may be sent again)."""


class Headers(dict):
    """Response headers, looked up case-insensitively (stored lower-case)."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default=None):
        return super().get(key.lower(), default)


class _Connection:
    __slots__ = ("sock", "file")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.file = sock.makefile("rb", buffering=_BUFFER)

    def dropped(self) -> bool:
        """Whether an idle connection was closed by its server (or has stray bytes)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Response:
    """Status, headers and a body read through :meth:`read`; give the connection back with
    :meth:`release_conn` (reused only when the body was read to its end) or :meth:`close`."""

    def __init__(self, pool: "ConnectionPool", address: str, conn: _Connection, status: int,
                 reason: str, headers: Headers, has_body: bool, reusable: bool):
        self.status = status
        self.reason = reason
        self.headers = headers
        self._pool = pool
        self._address = address
        self._conn: _Connection | None = conn
        self._reusable = reusable
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._chunk_left = 0
        self._left: int | None = None          # None: until the end of the chunks / close
        if not has_body:
            self._left = 0
        elif not self._chunked:
            length = headers.get("content-length")
            if length is not None:
                if not length.isdigit():
                    raise ProtocolError(f"bad Content-Length {length!r}")
                self._left = int(length)
            else:
                self._reusable = False         # delimited by the server closing
        self._done = self._left == 0
        self._data: bytes | None = None

    # -- reading -------------------------------------------------------------------------------
    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of body (fewer only at its end); ``b""`` once it has ended."""
        if self._done or self._conn is None:
            return b""
        if self._chunked:
            return self._read_chunked(size)
        if self._left is None:                 # until close
            data = self._conn.file.read(size)
            self._done = not data
            return data
        want = min(size, self._left)
        data = self._conn.file.read(want)
        self._left -= len(data)
        if len(data) < want:
            raise ProtocolError(f"body ended {self._left} bytes early")
        self._done = self._left == 0
        return data

    def _read_chunked(self, want: int) -> bytes:
        parts = []
        while want > 0:
            if self._chunk_left == 0:
                self._chunk_left = self._next_chunk_size()
                if self._chunk_left == 0:
                    self._skip_trailers()
                    self._done = True
                    break
            take = min(want, self._chunk_left)
            data = self._conn.file.read(take)
            if len(data) < take:
                raise ProtocolError("chunked body ended early")
            parts.append(data)
            self._chunk_left -= take
            want -= take
            if self._chunk_left == 0 and self._conn.file.read(2) != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
        return b"".join(parts)

    def _next_chunk_size(self) -> int:
        line = _read_line(self._conn.file)
        text = line.split(b";", 1)[0].strip()
        try:
            size = int(text, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
        if size < 0:
            raise ProtocolError(f"bad chunk size {size}")
        return size

    def _skip_trailers(self) -> None:
        for _ in range(MAX_HEADERS + 1):
            if _read_line(self._conn.file) in (b"\r\n", b"\n"):
                return
        raise ProtocolError("too many trailer lines")

    @property
    def data(self) -> bytes:
        """The whole body, at most :data:`MAX_DATA` bytes, read once; releases the
        connection."""
        if self._data is not None:
            return self._data
        parts = []
        got = 0
        while chunk := self.read(_BUFFER):
            got += len(chunk)
            if got > MAX_DATA:
                self.close()
                raise ProtocolError(f"answer larger than {MAX_DATA} bytes")
            parts.append(chunk)
        self.release_conn()
        self._data = b"".join(parts)
        return self._data

    def iter_lines(self, max_line: int = MAX_LINE) -> Iterator[bytes]:
        """The body's lines (without their ``\\n``), each at most ``max_line`` bytes."""
        pending = b""
        while chunk := self.read(_BUFFER):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            yield from lines
            if len(pending) > max_line:
                raise ProtocolError(f"line longer than {max_line} bytes")
        if pending:
            yield pending

    # -- giving the connection back ----------------------------------------------------------
    def release_conn(self) -> None:
        """Pool the connection when the body ended and the server keeps it alive."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self._reusable:
            self._pool._put(self._address, conn)
        else:
            conn.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _from_source(body: Iterable[bytes]) -> Iterator[bytes]:
    """``body``'s chunks; whatever its iteration raises comes out as BodyFailed (a socket
    error of the body's own source must not pass for one of this connection)."""
    chunks = iter(body)
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except Exception as exc:
            raise BodyFailed(f"the request body failed: {exc!r}") from exc
        yield chunk


def _read_line(file) -> bytes:
    line = file.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise ProtocolError(f"line longer than {MAX_LINE} bytes")
    if not line.endswith(b"\n"):
        raise ProtocolError("connection closed in the middle of a line")
    return line


def _check_text(text: str, what: str) -> str:
    if not (text.isascii() and text.isprintable()) or " " in text:
        raise ValueError(f"{what} has a space, control or non-ASCII character: {text!r}")
    return text


def _declared_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError("no Content-Length in the request head")


#: Failures that show a pooled connection was closed by its server before it read a request.
_CLOSED_UNREAD = (NoAnswer, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class ConnectionPool:
    """Keep-alive connections to any number of ``host:port`` addresses; thread-safe.

    Every socket operation has ``timeout`` seconds (connecting at most ``connect_timeout``).
    A request on a pooled connection that the server closed meanwhile is sent again on a new
    connection when its body can be replayed (none, or bytes).
    """

    def __init__(self, timeout: float, connect_timeout: float | None = None,
                 max_idle: int = 64):
        self.timeout = timeout
        self.connect_timeout = min(timeout, 5.0) if connect_timeout is None else connect_timeout
        self.max_idle = max_idle
        self._idle: dict[str, list[_Connection]] = {}
        self._lock = threading.Lock()

    def request(self, method: str, address: str, path: str, *,
                body: bytes | Iterable[bytes] | None = None, headers: dict | None = None,
                chunked: bool = False) -> Response:
        """Send a request and read its answer's head; the body is read from the Response.

        ``body`` bytes go with a Content-Length; an iterable streams either chunked or with
        the Content-Length given in ``headers``, which it must match (ValueError, and the
        connection is closed, when it does not).
        """
        head = self._head(method, address, path, body, headers or {}, chunked)
        replayable = body is None or isinstance(body, (bytes, bytearray, memoryview))
        while True:
            conn, reused = self._get(address)
            try:
                return self._exchange(conn, address, method, head, body, chunked)
            except BaseException as exc:      # a body that raises, too: never half-sent
                conn.close()
                if not (reused and replayable and isinstance(exc, _CLOSED_UNREAD)):
                    raise

    def _head(self, method: str, address: str, path: str, body, headers: dict,
              chunked: bool) -> bytes:
        lines = [f"{method} {_check_text(path, 'path')} HTTP/1.1", f"Host: {address}"]
        request_id = REQUEST_ID.get()
        if request_id:                 # the request this call serves (lib/logs.py)
            lines.append(f"X-Request-Id: {request_id}")
        names = {name.lower() for name in headers}
        for name, value in headers.items():
            value = str(value)
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name} has a line break")
            lines.append(f"{_check_text(name, 'header name')}: {value}")
        if body is None:
            if method in ("POST", "PUT", "PATCH") and "content-length" not in names:
                lines.append("Content-Length: 0")
        elif isinstance(body, (bytes, bytearray, memoryview)):
            if "content-length" not in names:
                lines.append(f"Content-Length: {len(body)}")
        elif chunked:
            lines.append("Transfer-Encoding: chunked")
        elif "content-length" not in names:
            raise ValueError("a streamed body needs chunked=True or a Content-Length")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1")

    def request_many(self, requests: list[tuple[str, str, str, bytes | None, dict | None]]
                     ) -> list[Response | Exception]:
        """Send every ``(method, address, path, body, headers)`` request, then read every
        answer's head, all from this thread: the servers work in parallel while no thread is
        handed anything (a short PUT's six shards, a GET's four).  One result per request:
        its Response, or the exception it met.
        """
        sent: list[tuple[_Connection, bool, BaseException | None] | Exception] = []
        for method, address, path, body, headers in requests:
            try:
                head = self._head(method, address, path, body, headers or {}, False)
                conn, reused = self._get(address)
            except Exception as exc:
                sent.append(exc)
                continue
            try:
                self._send(conn.sock, head, body, False)
                sent.append((conn, reused, None))
            except (BrokenPipeError, ConnectionResetError) as exc:
                sent.append((conn, reused, exc))         # it may have answered: read below
            except Exception as exc:
                conn.close()
                sent.append(exc)
        results: list[Response | Exception] = []
        for (method, address, path, body, headers), item in zip(requests, sent):
            if isinstance(item, Exception):
                results.append(item)
                continue
            conn, reused, send_error = item
            try:
                results.append(self._read_head(conn, address, method))
                continue
            except Exception as exc:
                conn.close()
                error = send_error or exc
            if reused and isinstance(error, _CLOSED_UNREAD):
                try:
                    results.append(self.request(method, address, path, body=body,
                                                headers=headers))
                except Exception as exc:
                    results.append(exc)
            else:
                results.append(error)
        return results

    def _exchange(self, conn: _Connection, address: str, method: str, head: bytes, body,
                  chunked: bool) -> Response:
        try:
            self._send(conn.sock, head, body, chunked)
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The server may have answered (an error) before reading the whole body.
            try:
                return self._read_head(conn, address, method)
            except (OSError, ProtocolError):
                raise exc from None
        return self._read_head(conn, address, method)

    @staticmethod
    def _send(sock: socket.socket, head: bytes, body, chunked: bool) -> None:
        if body is None:
            sock.sendall(head)
        elif isinstance(body, (bytes, bytearray, memoryview)):
            if len(body) <= _COALESCE:
                sock.sendall(head + bytes(body))
            else:
                sock.sendall(head)
                sock.sendall(body)
        else:
            sock.sendall(head)
            left = None if chunked else _declared_length(head)
            for chunk in _from_source(body):
                if not chunk:
                    continue
                if chunked:
                    sock.sendall(b"%x\r\n" % len(chunk))
                    sock.sendall(chunk)
                    sock.sendall(b"\r\n")
                    continue
                left -= len(chunk)
                if left < 0:        # the excess would be read as the next request
                    raise ValueError("the body is longer than its Content-Length")
                sock.sendall(chunk)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
            elif left:
                raise ValueError(f"the body ended {left} bytes short of its Content-Length")

    def _read_head(self, conn: _Connection, address: str, method: str) -> Response:
        file = conn.file
        if not file.peek(1):
            raise NoAnswer("connection closed before an answer")
        while True:
            status_line = _read_line(file)
            version, _, rest = status_line.decode("latin-1").rstrip("\r\n").partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/1.") or not (code.isdigit() and len(code) == 3):
                raise ProtocolError(f"bad status line {status_line[:80]!r}")
            status = int(code)
            headers = Headers()
            for _ in range(MAX_HEADERS + 1):
                line = _read_line(file)
                if line in (b"\r\n", b"\n"):
                    break
                name, colon, value = line.decode("latin-1").partition(":")
                if not colon:
                    raise ProtocolError(f"bad header line {line[:80]!r}")
                name = name.strip().lower()
                value = value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            else:
                raise ProtocolError(f"more than {MAX_HEADERS} header lines")
            if status >= 200:
                break                          # 1xx (100 Continue): read the real answer
        keep_alive = "close" not in headers.get("connection", "").lower() and (
            version != "HTTP/1.0" or "keep-alive" in headers.get("connection", "").lower())
        has_body = method != "HEAD" and status not in _NO_BODY_STATUS
        return Response(self, address, conn, status, reason, headers, has_body, keep_alive)

    # -- the pool -------------------------------------------------------------------------------
    def _get(self, address: str) -> tuple[_Connection, bool]:
        while True:
            with self._lock:
                idle = self._idle.get(address)
                conn = idle.pop() if idle else None
            if conn is None:
                return self._connect(address), False
            if not conn.dropped():
                conn.sock.settimeout(self.timeout)
                return conn, True
            conn.close()

    def _connect(self, address: str) -> _Connection:
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            raise OSError(f"not host:port: {address!r}")
        sock = socket.create_connection((host, int(port)), timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.timeout)
        except OSError:
            sock.close()
            raise
        return _Connection(sock)

    def _put(self, address: str, conn: _Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(address, [])
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def clear(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

