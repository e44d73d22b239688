"""What a data server tells an operator about its disk and its shards, for the management API.

``GET /stats``: shard count, bytes under ``objects/``, free and total disk, quarantined
(corrupt) shard files in ``garbage/``.  ``GET /verify/<quoted hash>.<i>``: read the shard in
full, checking every record's CRC-32 and the whole file against the shard hash in its name;
a corrupt shard is quarantined, as a GET would (``data_server/objects.py``).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil

from flask import Blueprint, Response, current_app, jsonify

from data_server.storage import ShardName
from lib.errors import CorruptShard, ObjectNotFound
from lib.hashing import b64_digest
from lib.rs import layout

log = logging.getLogger(__name__)
bp = Blueprint("inspect", __name__)

#: The suffix ``Storage.quarantine`` gives a corrupt shard moved to garbage/.
CORRUPT_MARK = ".corrupt."


def _node():
    return current_app.extensions["tessera.node"]


@bp.get("/stats")
def get_stats() -> Response:
    node = _node()
    size = 0
    with os.scandir(node.storage.objects) as entries:
        for entry in entries:
            try:
                size += entry.stat().st_size
            except FileNotFoundError:
                continue
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
