"""Cluster MACs: the proof that a request to a data server comes from a cluster member.

Whoever can reach a data server could otherwise write, commit, delete and read its shards
(issue 11.7).  Every request that api servers, the task worker and the maintenance tools send
a data server (all through :class:`lib.objectstream.DataServerClient`) carries::

    Cluster-Mac: <unix seconds>:<hex HMAC-SHA256(key, "<method>\\n<target>\\n<seconds>")>

where ``<target>`` is the request target exactly as sent (path and query) and ``key`` is
derived from the cluster secret (``lib/secret.py``) for this one purpose,
``HMAC-SHA256(secret, "tessera cluster-mac v1")``: a MAC can never pass for an upload
token's signature, which uses the secret itself.  The data server recomputes the MAC,
compares in constant time, and accepts a time at most ``CLUSTER_MAC_SKEW`` seconds from its
own clock.

What it does not do: bodies are not covered (a shard streams before its end is known; its
records carry CRCs and its object's hash is checked by the api server), and a MAC seen on the
wire can be replayed, for the same method and target only, within the skew.  It keeps
strangers out; an eavesdropper on the cluster's network needs that network kept private.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from lib.config import Config
from lib.secret import cluster_secret

HEADER = "Cluster-Mac"
#: The same header as a WSGI environ key.
ENVIRON_KEY = "HTTP_CLUSTER_MAC"
_PURPOSE = b"tessera cluster-mac v1"


def derive_key(secret: bytes) -> bytes:
    """The MAC key of cluster secret ``secret``."""
    return hmac.digest(secret, _PURPOSE, hashlib.sha256)


def _mac(key: bytes, method: str, target: str, seconds: str) -> str:
    return hmac.digest(key, f"{method}\n{target}\n{seconds}".encode("utf-8", "replace"),
                       hashlib.sha256).hex()


class ClusterMac:
    """Signs requests (clients) and checks them (data servers) with one cluster's key."""

    def __init__(self, key: bytes, skew: float = Config.cluster_mac_skew,
                 clock: Callable[[], float] = time.time):
        self._key = key
        self.skew = skew
        self._clock = clock

    @classmethod
    def from_config(cls, config: Config) -> "ClusterMac":
        return cls(derive_key(cluster_secret(config)), config.cluster_mac_skew)

    def sign(self, method: str, target: str) -> str:
        """The ``Cluster-Mac`` value for ``method`` on ``target`` (path and query), now."""
        seconds = str(int(self._clock()))
        return f"{seconds}:{_mac(self._key, method, target, seconds)}"

    def headers(self, method: str, target: str, headers: dict | None = None) -> dict:
        """``headers`` (copied) with the ``Cluster-Mac`` of this request added."""
        return {**(headers or {}), HEADER: self.sign(method, target)}

    def check(self, method: str, target: str, value: str | None) -> str | None:
        """Why ``value`` does not authenticate ``method`` on ``target``; None when it does."""
        if not value:
            return "no Cluster-Mac"
        seconds, _, mac = value.partition(":")
        if not (seconds.isascii() and seconds.isdigit() and len(seconds) <= 12):
            return "malformed Cluster-Mac"
        if not hmac.compare_digest(mac.encode("latin-1", "replace"),
                                   _mac(self._key, method, target, seconds).encode()):
            return "wrong Cluster-Mac"
        if abs(self._clock() - int(seconds)) > self.skew:
            return f"Cluster-Mac time {seconds} is more than {self.skew:.0f}s off"
        return None
