"""Fault injection in front of a WSGI app: errors, delays, dropped connections, short or
corrupt bodies.

:class:`FaultMiddleware` wraps the book API, the S3 API and the data servers.  With no rule
for its hook it hands the request on after one truth test of an empty tuple.  With rules it
builds a :class:`Probe` of the request (the S3 API adds its operation, bucket and key), asks
the engine for a hit, and acts.  A connection is dropped by shutting down gunicorn's socket
and raising ``ECONNRESET``, which gunicorn takes for a client that went away (no traceback).
Disk actions (``corrupt_shard``, ``delete_shard``) are the data server's own: it passes
``disk``.
"""
from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus

from lib.faults.engine import FaultEngine
from lib.faults.rules import Probe, Rule
from lib.pacing import shutdown_client

log = logging.getLogger(__name__)

#: An error answer: (status, headers, body) for a rule's http_error.
ErrorAnswer = Callable[[Rule, dict, Probe], tuple[int, list[tuple[str, str]], bytes]]


class EnvironHeaders(Mapping):
    """A request's headers, by lower-case name, read from the WSGI environ on demand."""

    def __init__(self, environ: dict):
        self._environ = environ

    @staticmethod
    def _key(name: str) -> str:
        upper = name.upper().replace("-", "_")
        return upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + upper

    def __getitem__(self, name: str) -> str:
        return self._environ[self._key(name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._environ

    def __iter__(self) -> Iterator[str]:
        return (k[5:].replace("_", "-").lower() for k in self._environ if k.startswith("HTTP_"))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def request_id(environ: dict) -> str:
    return environ.get("tessera.request_id") or environ.get("HTTP_X_REQUEST_ID") or ""


def http_probe(environ: dict) -> Probe:
    return Probe(method=environ.get("REQUEST_METHOD", ""), path=environ.get("PATH_INFO", ""),
                 headers=EnvironHeaders(environ), request_id=request_id(environ))


def text_error(rule: Rule, _environ: dict, _probe: Probe
               ) -> tuple[int, list[tuple[str, str]], bytes]:
    body = f"{rule.action.message}\n".encode()
    return rule.action.http_code, [("Content-Type", "text/plain; charset=utf-8"),
                                   ("Content-Length", str(len(body)))], body


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Fault Injected"


class ConnectionDropped(ConnectionResetError):
    """Raised to make the server close the connection without a (complete) answer."""

    def __init__(self):
        super().__init__(errno.ECONNRESET, "connection dropped by a fault rule")


def drop_connection(environ: dict) -> None:
    """Shut the client's connection down (gunicorn's socket), then raise."""
    shutdown_client(environ, socket.SHUT_RDWR)
    raise ConnectionDropped()


def _has_body(environ: dict) -> bool:
    return environ.get("CONTENT_LENGTH") not in (None, "", "0") or \
        "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()


class FaultMiddleware:
    """WSGI middleware injecting the faults of one hook (api, s3, data)."""

    def __init__(self, app: Callable, engine: FaultEngine, hook: str, *,
                 probe: Callable[[dict], Probe | None] = http_probe,
                 error: ErrorAnswer = text_error,
                 disk: Callable[[Rule, Probe], None] | None = None):
        self._app = app
        self._engine = engine
        self._hook = hook
        self._probe = probe
        self._error = error
        self._disk = disk

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        rules = getattr(self._engine, self._hook)
        if not rules:
            return self._app(environ, start_response)
        probe = self._probe(environ)
        rule = None if probe is None else self._engine.hit(self._hook, rules, probe)
        if rule is None:
            return self._app(environ, start_response)
        return self._act(rule, probe, environ, start_response)

    def _act(self, rule: Rule, probe: Probe, environ: dict,
             start_response: Callable) -> Iterable[bytes]:
        action = rule.action
        kind = action.type
        if kind == "delay":
            self._engine.sleep(rule)
        elif kind == "http_error":
            status, headers, body = self._error(rule, environ, probe)
            if _has_body(environ):
                headers.append(("Connection", "close"))     # its body stays unread
            start_response(_status_line(status), headers)
            return [body]
        elif kind == "drop" and action.when == "before_head":
            drop_connection(environ)
        elif kind in ("corrupt_shard", "delete_shard") and self._disk is not None:
            self._disk(rule, probe)
        body = self._app(environ, start_response)
        if kind == "drop":
            return _cut(body, 0, environ)
        if kind == "truncate":
            return _cut(body, action.bytes, environ)
        if kind == "corrupt":
            return _corrupt(body, action.every)
        return body


def _close(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()


def _cut(body: Iterable[bytes], limit: int, environ: dict) -> Iterator[bytes]:
    """The first ``limit`` bytes of ``body`` (the head is sent first), then a dropped
    connection."""
    sent = 0
    try:
        yield b""                               # the server sends the head with this
        for chunk in body:
            if sent + len(chunk) >= limit:
                if limit > sent:
                    yield chunk[:limit - sent]
                break
            sent += len(chunk)
            yield chunk
    finally:
        _close(body)
    drop_connection(environ)


def _corrupt(body: Iterable[bytes], every: int) -> Iterator[bytes]:
    """``body`` with one bit flipped in every ``every`` bytes (lengths unchanged)."""
    offset = 0
    try:
        for chunk in body:
            if chunk:
                data = bytearray(chunk)
                first = (-offset) % every
                for i in range(first, len(data), every):
                    data[i] ^= 0x01
                offset += len(data)
                chunk = bytes(data)
            yield chunk
    finally:
        _close(body)
