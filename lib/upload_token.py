"""The resumable-upload token: the whole state of an upload, signed by the cluster.

The book's token is plain base64 JSON of ``{Name, Size, Hash, Servers, Uuids}``: anybody can
forge one and make an api server talk to arbitrary hosts (SSRF), it never expires, and it
carries the *quoted* hash, which then lands in metadata (BOOK section 6, W17).  Ours keeps the
same idea (api servers stay stateless: the temp objects live on the data servers the token
names) but is::

    <base64url(JSON)>.<base64url(HMAC-SHA256(cluster secret, base64url(JSON)))>

with the raw hash and an expiry time.  It contains only URL-safe characters, so it stands in
``/temp/<token>`` unquoted.  :func:`verify` checks the signature (constant time) and then the
expiry *before* anything in the token is used, so a tampered or stale token never makes an api
server contact anybody.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable

from lib.errors import Forbidden, InvalidHash, ObjectNotFound
from lib.hashing import validate_hash
from lib.rs.params import ALL_SHARDS

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
#: Refuse absurd tokens before decoding them (a 1024-byte name and 6 slots fit easily).
MAX_TOKEN_LENGTH = 8192


class TokenInvalid(Forbidden):
    """The token was not signed by this cluster or is malformed (the api answers 403)."""


class TokenExpired(ObjectNotFound):
    """The token is genuine but its upload expired; its temp objects are (being) removed."""


@dataclasses.dataclass(frozen=True)
class UploadToken:
    """One resumable upload: what is uploaded and where each shard's temp object lives.

    ``servers[i]``/``uuids[i]`` hold shard ``i``; both are None for a shard whose temp object
    could not be created (it is rebuilt after the upload completes).
    """

    name: str
    size: int
    hash: str
    servers: tuple[str | None, ...]
    uuids: tuple[str | None, ...]
    expires: int

    def slots(self) -> dict[int, tuple[str, str]]:
        """shard index -> (address, temp uuid), for the shards that have a temp object."""
        return {i: (a, u) for i, (a, u) in enumerate(zip(self.servers, self.uuids))
                if a is not None and u is not None}

    def _payload(self) -> dict:
        return {"v": 1, "name": self.name, "size": self.size, "hash": self.hash,
                "servers": list(self.servers), "uuids": list(self.uuids),
                "expires": self.expires}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def sign(token: UploadToken, secret: bytes) -> str:
    payload = _b64(json.dumps(token._payload(), separators=(",", ":"),
                              ensure_ascii=False).encode())
    return f"{payload}.{_mac(secret, payload)}"


def verify(text: str, secret: bytes, clock: Callable[[], float] = time.time) -> UploadToken:
    """The token ``text`` stands for; TokenInvalid if forged or malformed, TokenExpired if old."""
    if not text or len(text) > MAX_TOKEN_LENGTH or text.count(".") != 1:
        raise TokenInvalid("malformed upload token")
    payload, signature = text.split(".")
    if not hmac.compare_digest(signature.encode(), _mac(secret, payload).encode()):
        raise TokenInvalid("upload token signature does not match: not issued by this cluster")
    try:
        token = _parse(json.loads(_unb64(payload)))
    except (ValueError, KeyError, TypeError, binascii.Error, InvalidHash) as exc:
        raise TokenInvalid(f"malformed upload token: {exc}") from None
    if clock() >= token.expires:
        raise TokenExpired("this upload expired; start a new one with POST /objects/<name>")
    return token


def _parse(raw: dict) -> UploadToken:
    """Validate every field although the signature is good: a cluster secret shared with an
    older, buggier version must not turn into path traversal or SSRF."""
    if raw.get("v") != 1:
        raise ValueError(f"unknown token version {raw.get('v')!r}")
    servers, uuids = tuple(raw["servers"]), tuple(raw["uuids"])
    if len(servers) != ALL_SHARDS or len(uuids) != ALL_SHARDS:
        raise ValueError("a token names one slot per shard")
    for address, uuid in zip(servers, uuids):
        if (address is None) != (uuid is None):
            raise ValueError("server and uuid come in pairs")
        if address is not None and not (_ADDRESS.match(address) and _UUID.match(uuid)):
            raise ValueError("bad server address or temp uuid")
    size, expires, name = raw["size"], raw["expires"], raw["name"]
    if not isinstance(size, int) or size < 0 or not isinstance(expires, int):
        raise ValueError("bad size or expiry")
    if not isinstance(name, str) or not name:
        raise ValueError("bad name")
    return UploadToken(name, size, validate_hash(raw["hash"]), servers, uuids, expires)
