"""The data server's gate: only cluster members may change (or, by default, read) its storage.

WSGI middleware in front of everything else (the fast path and Flask alike), so that no route
can be added without it.  A request passes when its ``Cluster-Mac`` (``lib/clustermac.py``)
authenticates its method and target; ``GET /health`` and ``GET /metrics`` always pass (the
cluster's tools, monitors and Prometheus poll them; neither tells anything of the data), and with ``DATA_READS_OPEN=1`` every GET and HEAD does.  Anything else is
403 before a byte of its body is read, so a stranger changes nothing, and the connection's
read side is shut so that the server does not drain the body at the stranger's pace.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from urllib.parse import quote

from lib.clustermac import ENVIRON_KEY, ClusterMac
from lib.pacing import refuse_body

log = logging.getLogger(__name__)

_OPEN = ("/health", "/metrics")
_READS = ("GET", "HEAD")


def request_target(environ: dict) -> str:
    """The request target as the client sent it (gunicorn and werkzeug keep it in
    ``RAW_URI``; otherwise rebuilt from the decoded path)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return raw
    query = environ.get("QUERY_STRING", "")
    path = quote(environ.get("PATH_INFO", "").encode("latin-1"), safe="/")
    return f"{path}?{query}" if query else path


class ClusterGate:
    def __init__(self, app: Callable, mac: ClusterMac, reads_open: bool = False):
        self._app = app
        self._mac = mac
        self._reads_open = reads_open

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method in _READS and (self._reads_open or environ.get("PATH_INFO") in _OPEN):
            return self._app(environ, start_response)
        target = request_target(environ)
        problem = self._mac.check(method, target, environ.get(ENVIRON_KEY))
        if problem is None:
            return self._app(environ, start_response)
        log.warning("403 %s %s from %s: %s", method, target[:200],
                    environ.get("REMOTE_ADDR"), problem)
        refuse_body(environ)
        body = f"{problem}: data servers answer cluster members only\n".encode()
        start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(body)))])
        return [body]
