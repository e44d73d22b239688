"""Small stdlib HTTP helpers shared by the transfer commands (``scripts.put``, ``scripts.get``).

Standard library only, so the commands run anywhere Python does.  Every request has a
timeout; connection errors are raised as :class:`TransferError` subclasses the commands
retry, and HTTP errors carry their status.
"""
from __future__ import annotations

import http.client
import time
import urllib.parse
from collections.abc import Callable, Iterable

#: Seconds for connecting and for each read.
TIMEOUT = 60.0
#: Bytes read from a file or a response at once.
CHUNK = 1024 * 1024
_SUFFIXES = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


class TransferError(Exception):
    """Worth retrying: the connection failed or a server was unavailable."""


class HTTPStatusError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def parse_bytes(text: str) -> int:
    """``1048576``, ``64M``, ``512k``, ``1G`` -> bytes."""
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    suffix = text[-1:] if text[-1:] in "kmg" else ""
    return int(float(text[:len(text) - len(suffix)]) * _SUFFIXES[suffix])


def object_name(url: str) -> str:
    """The object name an ``.../objects/<name>`` URL addresses (percent-decoded)."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.split("/objects/", 1)[-1])


def run_transfer(transfer: Callable[[], int],
                 log: Callable[[str], None]) -> tuple[int | None, int]:
    """Run an upload or download: ``(version, 0)``, or ``(None, exit status)`` after saying
    why it stopped (130 interrupted, to be resumed by running it again; 1 failed)."""
    try:
        return transfer(), 0
    except KeyboardInterrupt:
        log("interrupted: run the same command again to resume")
        return None, 130
    except (TransferError, HTTPStatusError) as exc:
        log(f"failed: {exc}")
        return None, 1


def split_url(url: str) -> tuple[str, str]:
    """``(host:port, path?query)``; characters a path may not hold are percent-encoded."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.netloc:
        raise SystemExit(f"expected an http://host:port/objects/<name> URL, got {url!r}")
    path = urllib.parse.quote(parts.path, safe="/%:@!$&'()*+,;=~")
    return parts.netloc, path + (f"?{parts.query}" if parts.query else "")


def request(netloc: str, method: str, path: str, headers: dict[str, str] | None = None,
            body: Iterable[bytes] | bytes | None = None, length: int | None = None,
            stream: bool = False):
    """One request on a fresh connection; returns (response, connection) when ``stream``,
    else (status, headers, body bytes)."""
    connection = http.client.HTTPConnection(netloc, timeout=TIMEOUT)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        headers = dict(headers or {})
        if length is not None:
            headers["Content-Length"] = str(length)
        elif isinstance(body, bytes):
            headers["Content-Length"] = str(len(body))
        elif body is None and method in ("PUT", "POST", "PATCH"):
            headers["Content-Length"] = "0"
        for key, value in headers.items():
            connection.putheader(key, value)
        connection.endheaders()
        if isinstance(body, bytes):
            connection.send(body)
        elif body is not None:
            for chunk in body:
                connection.send(chunk)
        response = connection.getresponse()
        if stream:
            return response, connection
        data = response.read()
        connection.close()
        return response.status, response.headers, data
    except (OSError, http.client.HTTPException) as exc:
        connection.close()
        raise TransferError(f"{method} {netloc}{path[:60]}: {exc!r}") from exc


def check(status: int, data: bytes, *expected: int) -> None:
    if status in expected:
        return
    message = data.decode(errors="replace").strip()[:300]
    if status in (502, 503, 504):
        raise TransferError(f"HTTP {status}: {message}")
    raise HTTPStatusError(status, message)


class Backoff:
    """Waits 0.5 s, 1 s, 2 s ... (at most 10 s) between attempts; ``attempts`` without
    progress in a row, then the last error is raised."""

    def __init__(self, attempts: int):
        self.attempts = attempts
        self._failures = 0

    def progress(self) -> None:
        self._failures = 0

    def failed(self, error: Exception, log) -> None:
        self._failures += 1
        if self._failures > self.attempts:
            raise error
        delay = min(0.5 * 2 ** (self._failures - 1), 10.0)
        log(f"{error}; retrying in {delay:.1f}s ({self._failures}/{self.attempts})")
        time.sleep(delay)
