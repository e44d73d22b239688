"""WSGI middleware that gives every request an id, then counts, times and logs it.

The id is the client's ``X-Request-Id`` when it looks sane, else a new one; it goes into
``environ["tessera.request_id"]`` for the app (the S3 app answers it as
``x-amz-request-id``), into :data:`lib.logs.REQUEST_ID` for every line logged meanwhile and
every call to a data server, and back to the client as ``X-Request-Id``.

The app names the operation in ``environ["tessera.operation"]`` (Flask apps: the endpoint,
``lib/webapp.py``; the S3 app: the S3 operation name); a request that never got one counts
as ``other``.  Metrics and the access line are written when the answer's body is closed, so
the duration covers streaming it.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from lib import metrics
from lib.logs import REQUEST_ID, AccessRecord, new_request_id, pid, sane_request_id

REQUEST_ID_KEY = "tessera.request_id"
OPERATION_KEY = "tessera.operation"

log = logging.getLogger("tessera.access")


class _CountingInput:
    """``wsgi.input`` of a chunked body (no Content-Length to count by): counts what is read.
    Only then: wrapping every GET's input cost a data server 50 us a request, measured."""

    def __init__(self, stream):
        self._stream = stream
        self.count = 0

    def read(self, *args):
        data = self._stream.read(*args)
        self.count += len(data)
        return data

    def readline(self, *args):
        data = self._stream.readline(*args)
        self.count += len(data)
        return data

    def __iter__(self):
        return iter(self.readline, b"")


class _InProgress:
    """Requests being served through one Observed app, counted in memory and written to the
    ``tessera_requests_in_progress`` gauge every PUBLISH_INTERVAL seconds by one thread per
    process: a gauge write is a file write (prometheus_client's multiprocess files), and two
    of them a request were a third of the metrics' cost per request."""

    PUBLISH_INTERVAL = 1.0
    _all: list["_InProgress"] = []
    _publisher_pid: int | None = None
    _lock = threading.Lock()

    def __init__(self, api: str):
        self._gauge = metrics.IN_PROGRESS.labels(api)
        self._count = 0
        self._count_lock = threading.Lock()
        with _InProgress._lock:
            _InProgress._all.append(self)

    def add(self, delta: int) -> None:
        with self._count_lock:
            self._count += delta
        if _InProgress._publisher_pid != pid():    # first request of this process
            _InProgress._start_publisher()

    @classmethod
    def _start_publisher(cls) -> None:
        with cls._lock:
            if cls._publisher_pid == pid():
                return
            cls._publisher_pid = pid()
        threading.Thread(target=cls._publish_forever, name="in-progress", daemon=True).start()

    @classmethod
    def _publish_forever(cls) -> None:
        while True:
            for counter in list(cls._all):
                counter._gauge.set(counter._count)
            time.sleep(cls.PUBLISH_INTERVAL)


class _Body:
    """The answer's iterable, counting the bytes it yields; closing it finishes the request."""

    def __init__(self, body: Iterable[bytes], finish: Callable[[int], None]):
        self._body = body
        self._finish = finish
        self._sent = 0

    def __iter__(self):
        for chunk in self._body:
            self._sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._finish(self._sent)


class Observed:
    """Wrap ``app`` (one API: ``book``, ``s3``, ``data``).  Operations whose Flask
    blueprint is in ``sub_apis`` (``admin``) count under that API instead.  Access lines
    are logged at ``access_level``; ``counted`` False (METRICS=off) leaves requests out of
    the metrics, keeping their ids and access lines."""

    def __init__(self, app: Callable, api: str, sub_apis: frozenset[str] = frozenset(),
                 access_level: int = logging.INFO, counted: bool = True):
        self._app = app
        self._api = api
        self._counted = counted
        self._sub_apis = sub_apis
        self._access_level = access_level
        self._in_progress = _InProgress(api)
        self._bytes = {name: (metrics.BYTES_RECEIVED.labels(name), metrics.BYTES_SENT.labels(name))
                       for name in (api, *sub_apis)}      # every series exists from the start
        #: (api, operation, status) -> its histogram series, looked up once.
        self._timers: dict[tuple[str, str, int], object] = {}

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        request_id = sane_request_id(environ.get("HTTP_X_REQUEST_ID")) or new_request_id()
        environ[REQUEST_ID_KEY] = request_id
        REQUEST_ID.set(request_id)
        counting = None
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "") and "wsgi.input" in environ:
            counting = environ["wsgi.input"] = _CountingInput(environ["wsgi.input"])
        status = [500]
        if self._counted:
            self._in_progress.add(1)

        def start(line: str, headers: list, exc_info=None):
            status[0] = int(line[:3])
            headers.append(("X-Request-Id", request_id))
            return start_response(line, headers, exc_info)

        def finish(sent: int) -> None:
            received = counting.count if counting is not None else int(
                environ.get("CONTENT_LENGTH") or 0)
            if self._counted:
                self._in_progress.add(-1)
            self._record(environ, status[0], received, sent, time.perf_counter() - started)
            REQUEST_ID.set("")

        try:
            body = self._app(environ, start)
        except BaseException:
            finish(0)
            raise
        return _Body(body, finish)

    def _record(self, environ: dict, status: int, received: int, sent: int,
                seconds: float) -> None:
        operation = environ.get(OPERATION_KEY) or "other"
        api = self._api
        if self._sub_apis and operation.partition(".")[0] in self._sub_apis:
            api = operation.partition(".")[0]
        if self._counted:
            key = (api, operation, status)
            timer = self._timers.get(key)
            if timer is None:
                timer = self._timers[key] = metrics.REQUEST_SECONDS.labels(api, operation,
                                                                           str(status))
            timer.observe(seconds)
            bytes_received, bytes_sent = self._bytes[api]
            if received:
                bytes_received.inc(received)
            if sent:
                bytes_sent.inc(sent)
        if log.isEnabledFor(self._access_level):
            method = environ.get("REQUEST_METHOD", "")
            path = (environ.get("RAW_URI") or environ.get("PATH_INFO", "")).split("?", 1)[0]
            duration_ms = round(seconds * 1000, 2)
            log.handle(AccessRecord(
                log.name, self._access_level,
                f"{method} {path} {status} {sent}B {duration_ms:.2f}ms",
                {"method": method, "path": path, "status": status, "bytes": sent,
                 "received": received, "duration_ms": duration_ms,
                 "client": environ.get("REMOTE_ADDR"), "api": api, "operation": operation}))
