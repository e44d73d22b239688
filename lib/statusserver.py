"""A process without a web app of its own (the task worker) answers ``/metrics`` and
``/health`` on a small HTTP server of its own, in a daemon thread.

``/health`` answers :func:`lib.health.evaluate` of the given checks; ``/metrics`` answers
:func:`lib.metrics.exposition` with the given scrape-time collectors.  Requests are served
one thread each, bounded by a socket timeout; nothing else is routed.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lib import health, metrics

log = logging.getLogger(__name__)

#: Seconds a status client may take to send its request.
REQUEST_TIMEOUT = 10.0


class StatusServer:
    def __init__(self, address: str, checks: dict[str, Callable[[], object]], fields: dict,
                 collectors: Iterable = ()):
        host, _, port = address.rpartition(":")
        status = self

        class Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT

            def do_GET(self) -> None:            # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, metrics.CONTENT_TYPE_LATEST,
                                 metrics.exposition(status.collectors))
                elif path == "/health":
                    code, body = health.evaluate(status.checks, status.fields)
                    self._answer(code, "application/json", json.dumps(body).encode())
                else:
                    self._answer(404, "text/plain", b"only /metrics and /health here\n")

            def _answer(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args) -> None:     # noqa: A002
                log.debug("status %s: " + format, self.address_string(), *args)

        self.checks = checks
        self.fields = fields
        self.collectors = list(collectors)
        self._server = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
        self._server.daemon_threads = True
        self.address = address

    def start(self) -> "StatusServer":
        threading.Thread(target=self._server.serve_forever, name="status",
                         daemon=True).start()
        log.info("status (/metrics, /health) on %s", self.address)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
