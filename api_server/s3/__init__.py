"""The S3 API: a WSGI app of its own on S3_LISTEN_ADDRESS, over the same object layer as the
book API (whose objects are the book bucket's).  ``app`` routes, ``auth`` verifies SigV4,
the handler modules translate S3 requests into object-layer calls."""
from __future__ import annotations

from api_server.s3.app import S3App
from api_server.s3.auth import Credentials


def create_s3_app(api) -> S3App:
    return S3App(api, Credentials.from_config(api.config))


class ByListener:
    """One gunicorn worker serving two listeners: requests that arrived on the S3 address
    go to the S3 app, the others to the book API (the accepted socket's local port says)."""

    def __init__(self, book, s3, s3_address: str):
        self._book = book
        self._s3 = s3
        host, _, port = s3_address.rpartition(":")
        self._s3_port = int(port)
        self._s3_host = host.strip("[]")

    def __call__(self, environ, start_response):
        sock = environ.get("gunicorn.socket")
        if sock is not None:
            try:
                host, port = sock.getsockname()[:2]
            except OSError:
                host, port = "", -1
            if port == self._s3_port and self._s3_host in ("", "0.0.0.0", "::", host):
                return self._s3(environ, start_response)
        return self._book(environ, start_response)
