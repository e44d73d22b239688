"""Upstream fetchers: GET or HEAD one key from a bucket's third-party origin, streamed, with
every wait and size bounded.

Two kinds of origin (:class:`OriginSpec`):

* ``http``: a URL template, ``https://host/path/{key}`` (the key percent-encoded, ``/`` kept);
  redirects are followed, at most ``max_redirects`` of them, to http(s) URLs only.
* ``s3``: another S3 endpoint and bucket (a second Tessera counts), each request signed with
  SigV4 (``lib/sigv4.py``) with the origin's own credentials; no redirects.

:meth:`Upstream.get` opens the answer and checks its status before any byte is read; the
:class:`Answer` then yields the body in chunks, each read bounded by the read timeout, and
raises instead of ending early (a body shorter than its Content-Length, or longer than
ORIGIN_MAX_SIZE).  Failures are :mod:`lib.errors` origin errors whose message names the
origin: 404 -> OriginNotFound, refused, 5xx or anything unexpected -> OriginUnavailable, a
timeout -> OriginTimeout.  ``http.client`` (standard library, HTTPS through ``ssl``) is
imported here only.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import http.client
import logging
import re
import socket
import ssl
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

from lib import sigv4
from lib.errors import (InvalidArgument, OriginError, OriginNotFound, OriginTimeout,
                        OriginTooLarge, OriginUnavailable)
from lib.headers import parse_http_date

log = logging.getLogger(__name__)

#: Bytes asked of the origin's socket per read.
CHUNK = 256 * 1024
KINDS = ("http", "s3")
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")


@dataclasses.dataclass(frozen=True)
class OriginSpec:
    """Where a bucket's missing keys come from (kept as a metadata record per bucket)."""

    kind: str
    #: ``http``: the URL template with ``{key}``; ``s3``: the endpoint, ``http(s)://host:port``.
    url: str
    #: ``s3`` only: the origin's bucket, credentials and region.
    bucket: str = ""
    access_key: str = ""
    secret_key: str = dataclasses.field(default="", repr=False)
    region: str = "us-east-1"

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "OriginSpec":
        """Validate a record (the management API's JSON); InvalidArgument naming the field."""
        kind = record.get("kind", "http")
        if kind not in KINDS:
            raise InvalidArgument(f"origin kind must be one of {', '.join(KINDS)}, "
                                  f"got {kind!r}")
        fields = {}
        for name in ("url", "bucket", "access_key", "secret_key", "region"):
            value = record.get(name, "")
            if not isinstance(value, str):
                raise InvalidArgument(f"origin {name} must be a string")
            if value:
                fields[name] = value
        spec = cls(kind, **{"url": "", **fields})
        split = urllib.parse.urlsplit(spec.url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise InvalidArgument(f"origin url must be http(s)://host..., got {spec.url!r}")
        if kind == "http" and "{key}" not in spec.url:
            raise InvalidArgument("an http origin's url is a template with {key}, e.g. "
                                  "https://host/path/{key}")
        if kind == "s3" and not (spec.bucket and spec.access_key and spec.secret_key):
            raise InvalidArgument("an s3 origin needs bucket, access_key and secret_key")
        return spec

    def to_record(self) -> dict[str, str]:
        return {name: value for name, value in dataclasses.asdict(self).items() if value}

    def public(self) -> dict[str, str]:
        """The record without its secret (what the management API answers)."""
        record = self.to_record()
        if record.pop("secret_key", None):
            record["secret_key_set"] = "true"
        return record

    @property
    def name(self) -> str:
        """How messages and metrics name the origin (never with its credentials)."""
        split = urllib.parse.urlsplit(self.url)
        where = f"{split.scheme}://{split.hostname}" + (f":{split.port}" if split.port else "")
        return f"{where}/{self.bucket}" if self.kind == "s3" else where


@dataclasses.dataclass(frozen=True)
class Limits:
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_size: int = 5 << 30
    max_redirects: int = 5
    #: Extra certificate authorities for HTTPS origins (PEM), besides the system's.
    ca_file: str | None = None

    @classmethod
    def from_config(cls, config) -> "Limits":
        return cls(config.origin_connect_timeout, config.origin_read_timeout,
                   config.origin_max_size, config.origin_max_redirects,
                   str(config.origin_ca_file) if config.origin_ca_file else None)


class Answer:
    """An origin's 200 answer: what it said of the object, and its body (:meth:`__iter__`,
    once).  ``size`` is None when the origin sent no Content-Length."""

    def __init__(self, origin: str, key: str, response: http.client.HTTPResponse | None,
                 conn: http.client.HTTPConnection | None, headers: Mapping[str, str],
                 max_size: int):
        self.origin = origin
        self.key = key
        self._response = response
        self._conn = conn
        self._max_size = max_size
        length = headers.get("content-length")
        self.size = int(length) if length is not None and length.isdigit() else None
        self.content_type = headers.get("content-type", "")
        etag = headers.get("etag", "").strip()
        self.etag = etag[1:-1] if len(etag) > 1 and etag[0] == etag[-1] == '"' else etag
        self.last_modified = parse_http_date(headers.get("last-modified"))
        #: Checksums the origin declared, to verify the body against (base64).
        self.md5 = _b64(headers.get("content-md5"), 16)
        self.sha256 = _b64(headers.get("x-amz-checksum-sha256"), 32) or _digest_sha256(
            headers.get("digest"))
        if self.size is not None and self.size > max_size:
            self.close()
            raise OriginTooLarge(f"origin {origin}: {key!r} is {self.size} bytes, more "
                                    f"than the {max_size} accepted (ORIGIN_MAX_SIZE)")

    def trust_md5_etag(self) -> None:
        """An S3 origin's ETag of a single-part object is its MD5: verify the body by it."""
        if self.md5 is None and _MD5_ETAG.match(self.etag):
            self.md5 = base64.b64encode(bytes.fromhex(self.etag)).decode()

    def __iter__(self) -> Iterator[bytes]:
        if self._response is None:
            return
        got = 0
        try:
            while True:
                chunk = self._response.read(CHUNK)
                if not chunk:
                    break
                got += len(chunk)
                if got > self._max_size:
                    raise OriginTooLarge(f"origin {self.origin}: {self.key!r} is longer "
                                            f"than the {self._max_size} bytes accepted "
                                            "(ORIGIN_MAX_SIZE)")
                yield chunk
        except OriginError:
            raise
        except (TimeoutError, socket.timeout):
            raise OriginTimeout(f"origin {self.origin}: no data for {self.key!r} within the "
                                "read timeout") from None
        except (OSError, http.client.HTTPException) as exc:
            raise OriginUnavailable(f"origin {self.origin}: the body of {self.key!r} failed "
                                    f"after {got} bytes: {exc!r}") from None
        finally:
            self.close()
        if self.size is not None and got != self.size:
            raise OriginUnavailable(f"origin {self.origin}: the body of {self.key!r} ended "
                                    f"after {got} of {self.size} bytes")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _b64(value: str | None, length: int) -> str | None:
    if not value:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return base64.b64encode(raw).decode() if len(raw) == length else None


def _digest_sha256(value: str | None) -> str | None:
    """``Digest: SHA-256=<base64>`` (RFC 3230; what a Tessera book API sends)."""
    for item in (value or "").split(","):
        name, _, encoded = item.strip().partition("=")
        if name.upper() == "SHA-256":
            return _b64(encoded, 32)
    return None


class Upstream:
    """Fetch keys from one origin."""

    def __init__(self, spec: OriginSpec, limits: Limits):
        self.spec = spec
        self.limits = limits
        self._context = ssl.create_default_context()
        if limits.ca_file:
            self._context.load_verify_locations(limits.ca_file)

    @property
    def name(self) -> str:
        return self.spec.name

    def get(self, key: str) -> Answer:
        """Open ``key``'s body at the origin (status checked, no byte read yet)."""
        return self._request("GET", key)

    def head(self, key: str) -> Answer:
        """What the origin says of ``key`` without its body."""
        return self._request("HEAD", key)

    def _request(self, method: str, key: str) -> Answer:
        url, headers = self._target(method, key)
        for _ in range(self.limits.max_redirects + 1):
            conn, response = self._exchange(method, url, headers, key)
            status = response.status
            if status == 200:
                answer = Answer(self.name, key, response if method == "GET" else None, conn,
                                {k.lower(): v for k, v in response.getheaders()},
                                self.limits.max_size)
                if method == "HEAD":
                    answer.close()
                if self.spec.kind == "s3":
                    answer.trust_md5_etag()
                return answer
            location = response.getheader("location")
            conn.close()
            if status in (404, 410):
                raise OriginNotFound(f"origin {self.name} has no {key!r} either ({status})")
            if status in _REDIRECTS and location and self.spec.kind == "http":
                url = urllib.parse.urljoin(url, location)
                if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                    raise OriginUnavailable(f"origin {self.name} redirected {key!r} to a "
                                            f"non-HTTP URL {url[:200]!r}")
                continue
            raise OriginUnavailable(f"origin {self.name} answered {status} "
                                    f"{response.reason} for {key!r}")
        raise OriginUnavailable(f"origin {self.name}: more than {self.limits.max_redirects} "
                                f"redirects for {key!r}")

    def _target(self, method: str, key: str) -> tuple[str, dict[str, str]]:
        quoted = urllib.parse.quote(key.encode("utf-8"), safe="/")
        if self.spec.kind == "http":
            return self.spec.url.replace("{key}", quoted), {}
        path = f"/{self.spec.bucket}/{quoted}"
        split = urllib.parse.urlsplit(self.spec.url)
        headers = sigv4.sign_headers(method, split.netloc, path, "", self.spec.access_key,
                                     self.spec.secret_key, self.spec.region)
        return f"{split.scheme}://{split.netloc}{path}", headers

    def _exchange(self, method: str, url: str, headers: dict[str, str], key: str):
        split = urllib.parse.urlsplit(url)
        limits = self.limits
        if split.scheme == "https":
            conn = http.client.HTTPSConnection(split.hostname, split.port,
                                               timeout=limits.connect_timeout,
                                               context=self._context)
        else:
            conn = http.client.HTTPConnection(split.hostname, split.port,
                                              timeout=limits.connect_timeout)
        target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        try:
            conn.connect()
            conn.sock.settimeout(limits.read_timeout)
            conn.request(method, target, headers={"Accept-Encoding": "identity", **headers})
            return conn, conn.getresponse()
        except (TimeoutError, socket.timeout):
            conn.close()
            raise OriginTimeout(f"origin {self.name} did not answer for {key!r} within "
                                f"{limits.connect_timeout:g}s (connect) / "
                                f"{limits.read_timeout:g}s (read)") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise OriginUnavailable(f"origin {self.name} failed for {key!r}: {exc!r}") \
                from None
