"""One S3 request as the handlers see it, and the answer they give.

The bucket and key come from the raw request target (gunicorn's ``RAW_URI``): path-style
``/bucket/key``, or virtual-hosted ``bucket.<S3_DOMAIN>/key``.  The key is percent-decoded
exactly once and never normalised, so ``a//b``, ``/lead`` and ``%2F`` are the keys sent.
"""
from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Iterable, Iterator

from api_server.body import client_body
from api_server.s3.errors import S3Error, invalid_argument


class _Input:
    """``wsgi.input`` that remembers whether the body was read to its end."""

    def __init__(self, stream, declared: bool):
        self._stream = stream
        self.finished = not declared

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if not data or size < 0:
            self.finished = True
        return data


@dataclasses.dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: Iterable[bytes] = ()


def empty(status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, (headers or []) + [("Content-Length", "0")], [])


def xml_response(body: bytes, status: int = 200,
                 headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, [("Content-Type", "application/xml"),
                             ("Content-Length", str(len(body)))] + (headers or []), [body])


class Request:
    def __init__(self, environ: dict, domain: str, request_id: str):
        self.environ = environ
        self.request_id = request_id
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        # WSGI's PATH_INFO is the decoded path's bytes as latin-1: quote those bytes.
        target = environ.get("RAW_URI") or (urllib.parse.quote(
            environ.get("PATH_INFO", "/").encode("latin-1"))
                                             + ("?" + environ["QUERY_STRING"]
                                                if environ.get("QUERY_STRING") else ""))
        if target.startswith(("http://", "https://")):
            split = urllib.parse.urlsplit(target)
            target = split.path + ("?" + split.query if split.query else "")
        self.raw_path, _, self.raw_query = target.partition("?")
        if not self.raw_path.startswith("/"):
            raise S3Error("InvalidURI", "Couldn't parse the specified URI.", 400)
        self.headers: dict[str, str] = {}
        for name, value in environ.items():
            if name.startswith("HTTP_"):
                self.headers[name[5:].replace("_", "-").lower()] = value
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(name):
                self.headers[name.replace("_", "-").lower()] = environ[name]
        try:
            pairs = urllib.parse.parse_qsl(self.raw_query, keep_blank_values=True,
                                           errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise S3Error("InvalidURI", "Couldn't parse the specified URI.", 400) from None
        self.query: dict[str, str] = {}
        for name, value in pairs:
            self.query.setdefault(name, value)
        self.host = self.headers.get("host", "")
        self.bucket, self.key = self._locate(domain)
        self.auth = None
        #: Headers an error answer carries too (a delete marker's, a version id).
        self.error_headers: list[tuple[str, str]] = []
        declared = bool(self.headers.get("content-length", "0") not in ("", "0")
                        or "chunked" in self.headers.get("transfer-encoding", "").lower())
        self.input = _Input(environ["wsgi.input"], declared) if "wsgi.input" in environ \
            else _Input(None, False)

    def _locate(self, domain: str) -> tuple[str, str | None]:
        path = self.raw_path
        hostname = self.host.rsplit(":", 1)[0].lower() if not self.host.startswith("[") \
            else self.host
        if domain and hostname.endswith("." + domain.lower()):
            bucket = hostname[:-len(domain) - 1]
            key = path[1:]
            return bucket, (_unquote(key) if key else None)
        bucket, slash, key = path[1:].partition("/")
        bucket = _unquote(bucket)
        if not slash or key == "":
            return bucket, None
        return bucket, _unquote(key)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def int_query(self, name: str, default: int | None = None, low: int = 0,
                  high: int = 2**31 - 1) -> int | None:
        """An integer query parameter (InvalidArgument when not one, or out of range)."""
        raw = self.query.get(name)
        if raw is None:
            return default
        if not raw.strip().lstrip("-").isdigit() or len(raw) > 20:
            raise invalid_argument(f"Provided {name} not an integer or within integer range",
                                   name, raw)
        value = int(raw)
        if not low <= value <= high:
            raise invalid_argument(f"Argument {name} must be an integer between {low} and "
                                   f"{high}", name, raw)
        return value

    def raw_body(self) -> Iterator[bytes]:
        """The body as sent (chunked transfer decoded by the server), client failures named."""
        return client_body(self.input)

    def body_unread(self) -> bool:
        return not self.input.finished

    def drain(self, limit: int) -> bool:
        """Read and drop what is left of the body, up to ``limit`` bytes; True when it
        ended (the connection can carry the next request)."""
        left = limit
        try:
            while left > 0:
                chunk = self.input.read(min(65536, left))
                if not chunk:
                    return True
                left -= len(chunk)
            return not self.input.read(1)
        except Exception:                       # noqa: BLE001 - a broken body: close
            return False


def _unquote(text: str) -> str:
    try:
        return urllib.parse.unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", "Couldn't parse the specified URI (not UTF-8).",
                      400) from None
