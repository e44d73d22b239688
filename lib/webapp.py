"""Flask plumbing both servers share: slash-preserving routes, the error-to-status table,
``/metrics``, and naming each request's operation (its endpoint) for ``lib/access.py``."""
from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.routing import PathConverter

from lib import errors, metrics
from lib.access import OPERATION_KEY

log = logging.getLogger(__name__)

#: ``app.extensions`` key of the collectors a scrape computes (``lib.metrics.Snapshot``).
COLLECTORS = "tessera.collectors"


def error_answer(exc: Exception, table: dict[type, int]) -> tuple[int, dict[str, str], str]:
    """(status, headers, text body) for a store error: the status the table gives its class
    or nearest base class, else 500.  Logged here, once."""
    status = next((table[cls] for cls in type(exc).__mro__ if cls in table), 500)
    if status >= 500:
        log.warning("%s: %s", status, exc)
    else:
        log.info("%s: %s", status, exc)
    headers = {}
    if isinstance(exc, errors.RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{exc.size}"
        headers["Accept-Ranges"] = "bytes"
    return status, headers, f"{exc}\n"


def register_error_table(app: Flask, table: dict[type, int]) -> None:
    """Answer every ObjectStoreError by :func:`error_answer`."""

    def handle(exc: Exception) -> Response:
        status, headers, text = error_answer(exc, table)
        return Response(text, status=status, mimetype="text/plain", headers=headers)

    for cls in {errors.ObjectStoreError, *table}:
        app.register_error_handler(cls, handle)


class AnyPathConverter(PathConverter):
    """Like ``path`` but also matches a leading or doubled ``/``: base64 hashes and object
    names may start with ``/`` or contain ``//`` (BOOK W27)."""

    regex = ".*"
    part_isolating = False     # werkzeug infers True from a regex without "/"


def create_flask_app(name: str, table: dict[type, int]) -> Flask:
    """A Flask app that never merges or redirects slashes and answers store errors by table."""
    app = Flask(name)
    app.url_map.converters["anypath"] = AnyPathConverter
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    register_error_table(app, table)
    app.extensions[COLLECTORS] = []

    @app.before_request
    def _name_operation():
        request.environ[OPERATION_KEY] = request.endpoint

    @app.get("/metrics")
    def get_metrics():
        return Response(metrics.exposition(app.extensions[COLLECTORS]),
                        headers={"Content-Type": metrics.CONTENT_TYPE_LATEST})

    return app
