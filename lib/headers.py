"""Grammar of the HTTP headers clients send: Digest, Size, Range, entity tags, HTTP-dates."""
from __future__ import annotations

import datetime
import email.utils
import re

from lib.errors import BadDigest, BadRequest, InvalidHash, RangeNotSatisfiable
from lib.hashing import validate_hash

_DIGEST_PREFIX = "SHA-256="
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


def parse_digest(value: str | None) -> str:
    """Return the base64 hash from ``Digest: SHA-256=<base64>``.

    Several comma-separated digests are allowed (RFC 3230); the SHA-256 one is used.
    """
    if not value:
        raise BadDigest("the Digest header is required: Digest: SHA-256=<base64 sha256>")
    for item in value.split(","):
        item = item.strip()
        if item[:len(_DIGEST_PREFIX)].upper() == _DIGEST_PREFIX:
            try:
                return validate_hash(item[len(_DIGEST_PREFIX):])
            except InvalidHash:
                raise BadDigest(f"malformed SHA-256 digest: {item!r}") from None
    raise BadDigest(f"no SHA-256 digest in Digest header: {value!r}")


def parse_size(value: str | None, name: str = "Size") -> int:
    """A non-negative decimal byte count (the book's auto-detected base is not accepted)."""
    if value is None or not value.strip().isdigit():
        raise BadRequest(f"the {name} header must be a non-negative decimal integer")
    return int(value)


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """Resolve a single ``Range: bytes=...`` against ``size``: ``(first, last)`` inclusive.

    ``None`` means "send the whole object" (no header, or a header we may ignore per
    RFC 9110: another unit or several ranges).  Raises RangeNotSatisfiable for a range that
    lies outside the object.
    """
    if not value:
        return None
    match = _RANGE.match(value)
    if not match:
        return None
    first_s, last_s = match.groups()
    if not first_s and not last_s:
        return None
    if not first_s:                      # bytes=-n: the last n bytes
        n = int(last_s)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(f"empty suffix range {value!r}", size)
        return max(0, size - n), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None                      # syntactically invalid: ignore, as RFC 9110 says
    if first >= size:
        raise RangeNotSatisfiable(f"range {value!r} starts beyond {size} bytes", size)
    return first, min(last, size - 1)


def content_range(first: int, last: int, size: int) -> str:
    return f"bytes {first}-{last}/{size}"


def parse_etags(value: str | None) -> list[str] | None:
    """An If-Match / If-None-Match list: the entity tags without quotes or ``W/`` (``["*"]``
    for ``*``); None when the header is absent."""
    if value is None:
        return None
    tags = []
    for item in value.split(","):
        item = item.strip()
        if item.startswith("W/"):
            item = item[2:]
        if len(item) >= 2 and item[0] == item[-1] == '"':
            item = item[1:-1]
        if item:
            tags.append(item)
    return tags


def parse_http_date(value: str | None) -> float | None:
    """An HTTP-date (RFC 9110, any of its three forms) as seconds since the epoch; None when
    absent or not a date (such a condition is ignored, as the RFC says)."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed.timestamp()


def http_date(seconds: float) -> str:
    """``Last-Modified`` form of a time (whole seconds, GMT)."""
    return email.utils.formatdate(int(seconds), usegmt=True)
