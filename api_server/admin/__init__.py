"""The management API: JSON under ``/api/v1/`` on the api servers' book listener.

Every route needs admin credentials (``auth``) except the ones a monitor must reach without
them (``/health``, ``/metrics``, which live outside ``/api/v1/``) and the OpenAPI document
(``OPEN_PATHS``).  Errors answer as JSON
``{"error": {"code": ..., "message": ...}}`` with the status the book API's table gives.

Each concern adds its routes to :data:`bp` in a module of its own, listed in
:data:`MODULES`; ``install`` imports them and registers the blueprint.
"""
from __future__ import annotations

import importlib
import logging

from flask import Blueprint, Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from api_server import errors as book_errors
from api_server.admin.auth import SignedRequest, check_admin
from api_server.s3.auth import Credentials
from lib import errors

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__, url_prefix="/api/v1")

#: Modules under ``api_server/admin/`` that add routes to :data:`bp`.
MODULES: tuple[str, ...] = ("faults", "objects", "openapi", "origin")


class AdminError(Exception):
    """A management request refused: status, a stable code, a message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code


def error_response(status: int, code: str, message: str):
    response = jsonify(error={"code": code, "message": message})
    response.status_code = status
    return response


PREFIX = "/api/v1/"
#: Paths under PREFIX that need no credentials (api_server/admin/openapi.py says why).
OPEN_PATHS = frozenset({PREFIX + "openapi.json"})


def _require_admin():
    """Runs before routing resolves anything under /api/v1/: an unknown path needs the
    token too, so strangers learn nothing about which routes exist."""
    if not request.path.startswith(PREFIX) or request.path in OPEN_PATHS:
        return None
    target = (request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
              or request.full_path)
    raw_path, _, raw_query = target.partition("?")
    signed = SignedRequest(request.method, raw_path, raw_query,
                           bool(request.content_length) or "chunked" in (
                               request.headers.get("Transfer-Encoding") or "").lower(),
                           current_app.extensions["tessera.admin.credentials"])
    denied = check_admin(current_app.extensions["tessera.api"].config, request.headers, signed)
    if denied is not None:
        return error_response(*denied)
    return None


@bp.errorhandler(AdminError)
def _admin_error(exc: AdminError):
    return error_response(exc.status, exc.code, str(exc))


@bp.errorhandler(errors.ObjectStoreError)
def _store_error(exc: Exception):
    status = next((book_errors.STATUS[cls] for cls in type(exc).__mro__
                   if cls in book_errors.STATUS), 500)
    (log.warning if status >= 500 else log.info)("admin %s: %s", status, exc)
    return error_response(status, type(exc).__name__, str(exc))


def _http_error(exc: HTTPException):
    """JSON for routing and method errors under /api/v1/; the book API keeps its own."""
    if not request.path.startswith(PREFIX):
        return exc
    return error_response(exc.code or 500, exc.name.replace(" ", ""), exc.description or "")


def install(app: Flask) -> None:
    """Register the management API (after every route module has added its routes)."""
    for name in MODULES:
        importlib.import_module(f"api_server.admin.{name}")
    app.extensions["tessera.admin.credentials"] = Credentials.from_config(
        app.extensions["tessera.api"].config)
    app.register_blueprint(bp)
    app.before_request(_require_admin)
    app.register_error_handler(HTTPException, _http_error)
