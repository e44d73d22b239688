"""The two requests every short PUT and every GET make of a data server, served without Flask.

A short PUT sends each of six data servers one ``POST /temp/<hash>.<i>?commit=1`` and a GET
asks four for ``GET /objects/<hash>.<i>``.  Measured here, Flask's request context, routing
and response objects add about 0.15 ms of CPU to each such request, of about 0.95 ms in all.
This WSGI middleware answers exactly those shapes (and HEAD of a shard) by calling the same
functions as the Flask views (``temp.store_and_publish``, ``objects.serve_shard``) and
answering errors by the same table (``lib.webapp.error_answer``); every other request goes
to Flask unchanged.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus

from werkzeug.wsgi import get_input_stream

from data_server import errors
from data_server.objects import serve_shard
from data_server.storage import ShardName
from data_server.temp import store_and_publish
from lib.access import OPERATION_KEY
from lib.errors import ObjectStoreError
from lib.webapp import error_answer

_OBJECTS = "/objects/"
_TEMP = "/temp/"


def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


class FastPath:
    """WSGI middleware in front of the data server's Flask app."""

    def __init__(self, node, app: Callable):
        self._node = node
        self._app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        if (method == "POST" and path.startswith(_TEMP) and len(path) > len(_TEMP)
                and environ.get("QUERY_STRING") == "commit=1" and "HTTP_SIZE" in environ):
            environ[OPERATION_KEY] = "temp.post_temp"       # the Flask view it stands for
            return self._answer(start_response, self._commit, environ, path[len(_TEMP):])
        if (method in ("GET", "HEAD") and path.startswith(_OBJECTS)
                and len(path) > len(_OBJECTS)):
            environ[OPERATION_KEY] = "objects.get_object"
            return self._answer(start_response, self._shard, environ, path[len(_OBJECTS):])
        return self._app(environ, start_response)

    @staticmethod
    def _answer(start_response: Callable, handler: Callable, environ: dict,
                name: str) -> Iterable[bytes]:
        try:
            status, headers, body = handler(environ, name)
        except ObjectStoreError as exc:
            status, headers, text = error_answer(exc, errors.STATUS)
            data = text.encode()
            headers.update({"Content-Type": "text/plain; charset=utf-8",
                            "Content-Length": str(len(data))})
            body = [data]
        start_response(_status_line(status), list(headers.items()))
        return body

    def _commit(self, environ: dict, name: str):
        shard = store_and_publish(self._node, ShardName.parse(name), environ["HTTP_SIZE"],
                                  get_input_stream(environ))
        return 200, {"Content-Type": "text/plain", "Content-Length": "0",
                     "Shard-Hash": shard.shard_hash}, []

    def _shard(self, environ: dict, name: str):
        status, headers, body = serve_shard(self._node, name, environ.get("HTTP_RANGE"))
        if environ["REQUEST_METHOD"] == "HEAD":
            body.close()
            body = []
        return status, headers, body
