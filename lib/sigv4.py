"""AWS Signature Version 4, the parts both sides share: canonical forms, the signing key, and
signing a request as a client does (for an S3 origin, ``lib/upstream.py``).

The S3 API's verifier (``api_server/s3/sigv4.py``) builds on the same functions, so what this
module signs is what that one checks.  Standard library only.
"""
from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Mapping

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """The SigV4 signing key for a secret, a ``yyyymmdd`` date and a region."""
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, TERMINATOR):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def raw_bytes(text: str | bytes) -> bytes:
    """The bytes of a WSGI ``str`` (latin-1 decoded, PEP 3333), or UTF-8 if not latin-1."""
    if isinstance(text, bytes):
        return text
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def encode(raw: bytes) -> str:
    """AWS's URI encoding of one component."""
    # urllib's always-safe set is exactly AWS's unreserved set; hex digits come upper case.
    return urllib.parse.quote_from_bytes(raw, safe="")


def canonical_uri(raw_path: str | bytes) -> str:
    """The canonical URI of a raw request path: each segment decoded once and re-encoded."""
    segments = raw_bytes(raw_path).split(b"/")
    return "/".join(encode(urllib.parse.unquote_to_bytes(segment)) for segment in segments)


def query_pairs(raw_query: str | bytes) -> list[tuple[bytes, bytes]]:
    """A raw query string's (name, value) pairs, decoded (``+`` is a space)."""
    pairs = []
    for item in raw_bytes(raw_query).split(b"&"):
        if not item:
            continue
        name, _, value = item.partition(b"=")
        pairs.append((urllib.parse.unquote_to_bytes(name.replace(b"+", b" ")),
                      urllib.parse.unquote_to_bytes(value.replace(b"+", b" "))))
    return pairs


def canonical_query(raw_query: str | bytes, exclude: tuple[str, ...] = ()) -> str:
    """The canonical query string of a raw query string, without the parameters named in
    ``exclude`` (a presigned URL's ``X-Amz-Signature``)."""
    skip = {name.encode() for name in exclude}
    encoded = sorted((encode(name), encode(value))
                     for name, value in query_pairs(raw_query) if name not in skip)
    return "&".join(f"{name}={value}" for name, value in encoded)


def canonical_headers(names: list[str], headers: Mapping[str, str]) -> str:
    """The signed headers block: ``name:value`` with inner blanks collapsed, one a line."""
    return "".join(f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in names)


def string_to_sign(amz_date: str, scope: str, canonical_request: str) -> str:
    digest = hashlib.sha256(raw_bytes(canonical_request)).hexdigest()
    return "\n".join((ALGORITHM, amz_date, scope, digest))


def sign_headers(method: str, host: str, path: str, query: str, access_key: str, secret: str,
                 region: str, payload: str = UNSIGNED_PAYLOAD,
                 now: float | None = None) -> dict[str, str]:
    """The headers that sign a request (``Host``, ``x-amz-date``, ``x-amz-content-sha256``,
    ``Authorization``) for ``path`` (already URI-encoded) and ``query`` (raw)."""
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    scope = f"{amz_date[:8]}/{region}/{SERVICE}/{TERMINATOR}"
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    names = sorted(headers)
    signed_names = ";".join(names)
    canonical_request = "\n".join((method.upper(), canonical_uri(path), canonical_query(query),
                                   canonical_headers(names, headers), signed_names, payload))
    key = signing_key(secret, amz_date[:8], region)
    signature = hmac.new(key, string_to_sign(amz_date, scope, canonical_request).encode(),
                         hashlib.sha256).hexdigest()
    headers["authorization"] = (f"{ALGORITHM} Credential={access_key}/{scope}, "
                                f"SignedHeaders={signed_names}, Signature={signature}")
    return headers
