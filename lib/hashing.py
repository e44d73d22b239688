"""Object and shard hashes: base64 SHA-256, and their quoted (path/file name) form.

``hash`` is the base64 string a client sends in ``Digest``; ``quoted_hash`` is the same with
``/`` written ``%2F`` so it can stand in a URL path segment or a file name (BOOK 0.3).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Iterator

from lib.errors import InvalidHash

_B64_SHA256 = re.compile(r"^[A-Za-z0-9+/]{43}=$")


def validate_hash(value: str) -> str:
    """Return ``value`` if it is the padded base64 of exactly 32 bytes, else raise."""
    if not isinstance(value, str) or not _B64_SHA256.match(value):
        raise InvalidHash(f"not a base64 SHA-256: {value!r}")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise InvalidHash(f"not a base64 SHA-256: {value!r}") from None
    if len(raw) != 32 or base64.b64encode(raw).decode() != value:
        raise InvalidHash(f"not a canonical base64 SHA-256: {value!r}")
    return value


def quote_hash(value: str) -> str:
    """The file-name / path-segment form of a hash (``/`` -> ``%2F``)."""
    return value.replace("/", "%2F")


def unquote_hash(quoted: str) -> str:
    """Inverse of :func:`quote_hash`; accepts ``%2f`` too."""
    return quoted.replace("%2F", "/").replace("%2f", "/")


def b64_digest(sha: "hashlib._Hash") -> str:
    return base64.b64encode(sha.digest()).decode()


def sha256_b64(data: bytes) -> str:
    return b64_digest(hashlib.sha256(data))


class HashingIter:
    """Pass chunks through while hashing them (the book's TeeReader)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = chunks
        self._sha = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._sha.update(chunk)
            self.size += len(chunk)
            yield chunk

    def hexdigest(self) -> str:
        return self._sha.hexdigest()

    def b64(self) -> str:
        return b64_digest(self._sha)
