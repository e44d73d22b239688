"""``BOOK_API_TOKEN``: when set, the book API's writes and deletes need it as a bearer token.

The book API is open, as in the book; an operator who must keep strangers from writing sets
``BOOK_API_TOKEN`` and clients send ``Authorization: Bearer <token>`` with every PUT, POST,
PATCH and DELETE (``/objects/``, ``/temp/`` uploads).  Reads stay open.  Checked before any
byte of the body is read; the management API (``/api/v1/``) and the web console
(``/console/``) have their own credentials.
"""
from __future__ import annotations

import hmac

from flask import Flask, Response, current_app, request

from api_server.admin import PREFIX

#: Paths under their own credentials (the management API's token, the console's session).
OWN_CREDENTIALS = (PREFIX, "/console/")
from api_server.admin.auth import bearer

#: Methods that change something.
WRITES = frozenset({"PUT", "POST", "PATCH", "DELETE"})


def _require_token() -> Response | None:
    token = current_app.extensions["tessera.api"].config.book_api_token
    if not token or request.method not in WRITES or request.path.startswith(OWN_CREDENTIALS):
        return None
    sent = bearer(request.headers)
    if sent is None:
        return Response("this book API needs Authorization: Bearer <BOOK_API_TOKEN> to write\n",
                        status=401, mimetype="text/plain",
                        headers={"WWW-Authenticate": 'Bearer realm="tessera"'})
    if not hmac.compare_digest(sent.encode(), token.encode()):
        return Response("wrong book API token\n", status=403, mimetype="text/plain")
    return None


def install(app: Flask) -> None:
    app.before_request(_require_token)
