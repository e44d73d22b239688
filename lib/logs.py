"""Log lines: text or one JSON object per line (``LOG_FORMAT``), each with its request id.

The request id of the request a thread is serving lives in :data:`REQUEST_ID` (a context
variable set by ``lib/access.py``), so every line logged while serving it carries the id,
and ``lib/httpclient.py`` sends it to the data servers as ``X-Request-Id``: one request can
be followed across processes by grepping one id.

Lines are written in batches (:class:`BatchingHandler`): one write per line cost an api
server about 50 us a line here, as much as the rest of the request's bookkeeping.
"""
from __future__ import annotations

import json
import logging
import re
import random
import os
import sys
import threading
import time
from contextvars import ContextVar

#: The id of the request being served in this context ("" outside requests).
REQUEST_ID: ContextVar[str] = ContextVar("tessera_request_id", default="")
#: A client's X-Request-Id is kept when it looks like this, else a new id is made.
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: Seconds a line below WARNING may wait before it is written; WARNING and above are written
#: at once, and so is a batch reaching FLUSH_SIZE characters.
FLUSH_INTERVAL = 0.5
FLUSH_SIZE = 32 * 1024


def new_request_id() -> str:
    """16 hex digits: unique enough to follow a request, and no system call (an id is no
    secret)."""
    return f"{random.getrandbits(64):016X}"


def sane_request_id(value: str | None) -> str | None:
    return value if value and _SANE_ID.fullmatch(value) else None


class JsonFormatter(logging.Formatter):
    """time, level, logger, request_id, address, message, the access fields when present,
    and the traceback as ``exception``."""

    def __init__(self, address: str):
        super().__init__()
        self._address = address

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _utc_stamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get() or None,
            "address": self._address,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry)


#: One encoder for every line (json.dumps with options builds a new one each call).
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


#: (second, its formatted date and time): lines of one second share the formatting.
_stamp: tuple[int, str] = (-1, "")


def _utc_stamp(created: float) -> str:
    """``2026-12-04T18:32:58.714Z``."""
    global _stamp
    second = int(created)
    cached_second, text = _stamp
    if second != cached_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _stamp = (second, text)
    return f"{text}.{int((created - second) * 1000):03d}Z"


class AccessRecord(logging.LogRecord):
    """An access line: its message already formatted, its ``fields`` (method, path, status,
    bytes...) added to the JSON object.  Built without LogRecord's own constructor, which
    looks up the thread, the process and the caller's file for every line: those lookups
    were most of an access line's cost, and an api server writes one a request."""

    def __init__(self, name: str, level: int, message: str, fields: dict):
        # LogRecord.__init__ is not called: every attribute a handler reads is set here
        self.name = name
        self.msg = message
        self.args = None
        self.levelname = logging.getLevelName(level)
        self.levelno = level
        self.pathname = self.filename = self.module = __name__
        self.exc_info = self.exc_text = self.stack_info = None
        self.lineno = 0
        self.funcName = None
        self.created = time.time()
        self.msecs = (self.created - int(self.created)) * 1000
        self.relativeCreated = (self.created - logging._startTime) * 1000
        self.thread = self.threadName = self.processName = self.taskName = None
        self.process = _pid
        self.fields = fields

    def getMessage(self) -> str:
        return self.msg


_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def pid() -> int:
    """This process's id, without a system call (every access line, every metric write)."""
    return _pid


class _RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to text lines (``-`` outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get() or "-"
        return True


class BatchingHandler(logging.StreamHandler):
    """A StreamHandler that writes whole lines in batches: at a WARNING, when FLUSH_SIZE is
    reached, and every FLUSH_INTERVAL seconds (:func:`_flush_forever`)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._pending: list[str] = []
        self._size = 0

    def emit(self, record: logging.LogRecord) -> None:        # called with self.lock held
        try:
            line = self.format(record) + self.terminator
            self._pending.append(line)
            self._size += len(line)
            if record.levelno >= logging.WARNING or self._size >= FLUSH_SIZE:
                self._write()
        except Exception:                          # noqa: BLE001 - logging must not raise
            self.handleError(record)

    def _write(self) -> None:
        if self._pending:
            data = "".join(self._pending)
            self._pending.clear()
            self._size = 0
            self.stream.write(data)
            self.stream.flush()

    def flush(self) -> None:
        with self.lock:
            self._write()


_handler: BatchingHandler | None = None
_flusher_pid: int | None = None


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL)
        handler = _handler
        if handler is not None:
            try:
                handler.flush()
            except Exception:                      # noqa: BLE001 - a closed stream: go on
                pass


_formatter: logging.Formatter | None = None


def adopt(logger: logging.Logger) -> None:
    """Give a logger with handlers of its own (gunicorn's) the JSON format too."""
    if _formatter is not None:
        for handler in logger.handlers:
            handler.setFormatter(_formatter)


def configure(level: str, log_format: str, address: str, text_format: str) -> None:
    """Log to stderr at ``level``, as JSON lines or as ``text_format`` (which may use
    ``%(request_id)s``)."""
    global _formatter, _handler, _flusher_pid
    if _handler is not None:
        _handler.flush()
    handler = _handler = BatchingHandler(sys.stderr)
    if _flusher_pid != os.getpid():          # threads do not survive a fork: one per process
        _flusher_pid = os.getpid()
        threading.Thread(target=_flush_forever, name="log-flush", daemon=True).start()
    _formatter = None
    if log_format == "json":
        _formatter = JsonFormatter(address)
        handler.setFormatter(_formatter)
    else:
        handler.addFilter(_RequestIdFilter())
        handler.setFormatter(logging.Formatter(text_format))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("pika").setLevel(logging.WARNING)
