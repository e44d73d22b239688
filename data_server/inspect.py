"""What a data server tells an operator about its disk and its shards, for the management API.

``GET /stats``: shard count, bytes under ``objects/`` (a scan at most every BYTES_TTL
seconds, :class:`ScannedTotal`), free and total disk, quarantined (corrupt) shard files in
``garbage/``.  ``GET /verify/<quoted hash>.<i>``: read the shard in
full, checking every record's CRC-32 and the whole file against the shard hash in its name;
a corrupt shard is quarantined, as a GET would (``data_server/objects.py``).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from flask import Blueprint, Response, current_app, jsonify

from data_server.storage import ShardName
from lib.errors import CorruptShard, ObjectNotFound
from lib.hashing import b64_digest
from lib.rs import layout

log = logging.getLogger(__name__)
bp = Blueprint("inspect", __name__)

#: The suffix ``Storage.quarantine`` gives a corrupt shard moved to garbage/.
CORRUPT_MARK = ".corrupt."


#: Seconds a scanned byte total of ``objects/`` is answered again before the next scan.
BYTES_TTL = 5.0
_BYTES = "tessera.inspect.bytes"


class ScannedTotal:
    """The bytes of the files in one directory, scanned at most once every ``ttl`` seconds.

    Why a cached scan and not the index: the index knows which shards are held, not their
    sizes, and it cannot see files removed or replaced behind the server's back, which the
    scan does.  A scan is one stat per shard file, and every view of the console's cluster
    page or of /api/v1/stats asks every data server: with the cache, a cluster page
    refreshed by several operators costs one scan per data server every few seconds.  One
    scan at a time: callers arriving meanwhile wait for its answer instead of scanning too.
    """

    def __init__(self, directory: Path, ttl: float = BYTES_TTL,
                 clock: Callable[[], float] = time.monotonic):
        self._directory = directory
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._value = 0
        self._scanned: float | None = None

    def get(self) -> int:
        with self._lock:
            now = self._clock()
            if self._scanned is None or now - self._scanned >= self._ttl:
                self._value = _scan_bytes(self._directory)
                self._scanned = now
            return self._value


def _scan_bytes(directory: Path) -> int:
    size = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                size += entry.stat().st_size
            except FileNotFoundError:
                continue
    return size


def _node():
    return current_app.extensions["tessera.node"]


def _object_bytes(node) -> int:
    total = current_app.extensions.get(_BYTES)
    if total is None:           # two first callers may both make one: either is right
        total = current_app.extensions[_BYTES] = ScannedTotal(node.storage.objects)
    return total.get()


@bp.get("/stats")
def get_stats() -> Response:
    node = _node()
    size = _object_bytes(node)
    with os.scandir(node.storage.garbage) as entries:
        corrupt = sum(1 for entry in entries if CORRUPT_MARK in entry.name)
    disk = shutil.disk_usage(node.storage.root)
    return jsonify(address=node.config.listen_address, shards=len(node.index), bytes=size,
                   disk_free=disk.free, disk_total=disk.total, corrupt_shards=corrupt)


@bp.get("/verify/<anypath:name>")
def verify_shard(name: str) -> Response:
    """``{"verified": bool, "size": n}`` for a shard held; 404 when it is not."""
    node = _node()
    shard_name = ShardName.parse(name)
    shard = node.index.get(shard_name.hash, shard_name.index)
    if shard is None:
        raise ObjectNotFound(f"no shard {shard_name.quoted}")
    sha = hashlib.sha256()
    size = 0
    try:
        with open(shard.path, "rb") as f:
            for record in layout.iter_records(f):
                layout.unseal(record)
                sha.update(record)
                size += len(record)
    except FileNotFoundError:
        node.index.remove(shard_name.hash, shard_name.index, shard.path)
        raise ObjectNotFound(f"shard file of {shard_name.quoted} vanished") from None
    except CorruptShard as exc:
        log.error("corrupt shard %s: %s; quarantined", shard.path.name, exc)
        node.index.remove(shard_name.hash, shard_name.index, shard.path)
        node.storage.quarantine(shard.path)
        return jsonify(verified=False, size=size, error=str(exc))
    verified = b64_digest(sha) == shard.shard_hash
    if not verified:
        log.error("shard %s does not match its shard hash; quarantined", shard.path.name)
        node.index.remove(shard_name.hash, shard_name.index, shard.path)
        node.storage.quarantine(shard.path)
    return jsonify(verified=verified, size=size)
