"""/objects/<quoted hash>.<shard index>: serve a committed shard, or move shards to garbage.

GET streams the file once, verifying each record's CRC before sending it; a corrupt record
quarantines the file, drops it from the index and cuts the response short, so the api server
sees the damage and rebuilds from other shards (BOOK W12, W13).
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request

from data_server.storage import ShardName
from lib.errors import CorruptShard, ObjectNotFound
from lib.hashing import unquote_hash, validate_hash
from lib.headers import content_range, parse_range

log = logging.getLogger(__name__)
bp = Blueprint("objects", __name__)


def _node():
    return current_app.extensions["tessera.node"]


@bp.get("/objects/<anypath:name>")
def get_object(name: str) -> Response:
    node = _node()
    shard_name = ShardName.parse(name)
    shard = node.index.get(shard_name.hash, shard_name.index)
    if shard is None:
        raise ObjectNotFound(f"no shard {shard_name.quoted}")
    try:
        size = shard.path.stat().st_size
    except FileNotFoundError:
        node.index.remove(shard_name.hash, shard_name.index, shard.path)
        raise ObjectNotFound(f"shard file of {shard_name.quoted} vanished") from None
    byte_range = parse_range(request.headers.get("Range"), size)
    first, last = byte_range or (0, size - 1)
    headers = {"Content-Length": str(last - first + 1), "Accept-Ranges": "bytes"}
    if byte_range:
        headers["Content-Range"] = content_range(first, last, size)

    def body():
        try:
            yield from node.storage.read_shard(shard.path, first, last - first + 1)
        except CorruptShard:
            log.error("corrupt shard %s: quarantined", shard.path.name)
            node.index.remove(shard_name.hash, shard_name.index, shard.path)
            node.storage.quarantine(shard.path)
            raise

    return Response(body(), status=206 if byte_range else 200, headers=headers,
                    mimetype="application/octet-stream")


@bp.delete("/objects/<anypath:name>")
def delete_object(name: str) -> Response:
    """Move every shard of ``<hash>`` (or just ``<hash>.<i>``) to garbage/."""
    node = _node()
    if "." in name[-2:]:
        shard_name = ShardName.parse(name)
        hash_, index = shard_name.hash, shard_name.index
    else:
        hash_, index = validate_hash(unquote_hash(name)), None
    moved = 0
    for shard in node.index.remove(hash_, index):
        try:
            node.storage.move_to_garbage(shard.path)
            moved += 1
        except FileNotFoundError:
            pass
    log.info("moved %d shard(s) of %s to garbage", moved, hash_)
    return Response(f"{moved}\n", mimetype="text/plain")
