"""The web console: server-rendered HTML at ``/console/`` on the api servers' book listener.

An admin surface over the same collaborators as the management API (``api_server/admin``):
the cluster page (``cluster``), the bucket and object browser (``browser``: folders, key
search, an object's page, downloads, deletes), uploads (``upload``).  Every page but the login form (``login``) needs a console session
(``session``); every form that changes something carries a CSRF token.  Pages are Jinja
templates with autoescaping on and a Content-Security-Policy that runs no script at all, so a
key like ``<script>`` is text; downloads are always attachments of type
application/octet-stream, so stored content never runs as a page of this origin.
"""
from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

from flask import Blueprint, Flask, current_app, g, redirect, render_template, request, url_for

from api_server import errors as book_errors
from api_server.console import session
from lib import errors
from lib.webapp import error_answer

log = logging.getLogger(__name__)

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
               static_folder="static")

#: Endpoints a browser reaches without a session.
OPEN_ENDPOINTS = frozenset({"console.login", "console.post_login", "console.static"})
#: POST endpoints that check their CSRF token themselves, from a streamed body.
STREAMED_ENDPOINTS = frozenset({"console.upload"})

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def api():
    return current_app.extensions["tessera.api"]


def config():
    return api().config


def safe_next(target: str | None) -> str:
    """Where to go after login: a console path of this server, never another origin."""
    default = url_for("console.cluster_page")
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(bp.url_prefix + "/") \
            or target.startswith("//") or "\\" in target:
        return default
    return target


@bp.before_request
def _require_session():
    """No session: to the login form, nothing done.  A form POST: its CSRF token first."""
    g.console_nonce = session.session_nonce(config(), request.cookies.get(session.SESSION_COOKIE))
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if g.console_nonce is None:
        target = request.full_path if request.method == "GET" else None
        return redirect(url_for("console.login", next=target), 303)
    if request.method == "POST" and request.endpoint not in STREAMED_ENDPOINTS \
            and not session.check_csrf(config(), g.console_nonce, request.form.get("csrf")):
        return error_page(403, "the form's CSRF token is missing or wrong: reload the page")
    return None


@bp.after_request
def _security_headers(response):
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


@bp.app_template_global()
def csrf() -> str:
    """The CSRF token for the forms of the current session."""
    return session.csrf_token(config(), g.console_nonce) if g.get("console_nonce") else ""


@bp.app_template_filter("timestamp")
def timestamp(seconds: float | None) -> str:
    """A Unix time as UTC, to the second."""
    if not seconds:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


@bp.app_template_filter("size")
def size(count: int | None) -> str:
    """Bytes for people: 1023 B, 1.0 KiB, 12.3 MiB."""
    if count is None:
        return ""
    value, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            break
        value /= 1024
    return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"


def error_page(status: int, message: str):
    return render_template("console/error.html", status=status, message=message), status


@bp.errorhandler(errors.ObjectStoreError)
def _store_error(exc: Exception):
    status, _, text = error_answer(exc, book_errors.STATUS)
    return error_page(status, text.strip())


def install(app: Flask) -> None:
    """Register the console (its views import here: they add routes to :data:`bp`)."""
    from api_server.console import browser, cluster, login, upload  # noqa: F401

    app.register_blueprint(bp)
