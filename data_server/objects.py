"""/objects/<quoted hash>.<shard index>: serve a committed shard, or move shards to garbage.

GET streams the file once, verifying each record's CRC before sending it; a corrupt record
quarantines the file, drops it from the index and cuts the response short, so the api server
sees the damage and rebuilds from other shards (BOOK W12, W13).

For the orphan collector (``scripts/delete_orphan_objects.py``): ``GET /objects/`` lists the
shards held with their age, ``POST /garbage/<quoted hash>?older_than=S`` moves only the shards
of that object whose content is older than S seconds (a shard just committed by an upload
that has not written its metadata yet is left alone, BOOK W6), ``POST
/garbage/<quoted hash>.<i>?older_than=S`` only shard ``i`` (the object scanner collecting an
extra copy of a shard held elsewhere too), and
``DELETE /garbage/?older_than=S`` purges what has lain in garbage/ longer than S seconds.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, jsonify, request

from data_server.storage import ShardName
from lib import metrics
from lib.collector import purge_local_garbage
from lib.errors import BadRequest, CorruptShard, ObjectNotFound
from lib.hashing import unquote_hash, validate_hash
from lib.headers import content_range, parse_range
from lib.rs.params import ALL_SHARDS

log = logging.getLogger(__name__)
bp = Blueprint("objects", __name__)


def _node():
    return current_app.extensions["tessera.node"]


def serve_shard(node, name: str, range_header: str | None
                ) -> tuple[int, dict[str, str], Iterator[bytes]]:
    """(status, headers, lazy body) of ``GET /objects/<hash>.<i>``; nothing is opened until
    the body is iterated, so a HEAD reads nothing."""
    shard_name = ShardName.parse(name)
    shard = node.index.get(shard_name.hash, shard_name.index)
    if shard is None:
        raise ObjectNotFound(f"no shard {shard_name.quoted}")
    try:
        size = shard.path.stat().st_size
    except FileNotFoundError:
        node.index.remove(shard_name.hash, shard_name.index, shard.path)
        raise ObjectNotFound(f"shard file of {shard_name.quoted} vanished") from None
    byte_range = parse_range(range_header, size)
    first, last = byte_range or (0, size - 1)
    headers = {"Content-Type": "application/octet-stream",
               "Content-Length": str(last - first + 1), "Accept-Ranges": "bytes"}
    if byte_range:
        headers["Content-Range"] = content_range(first, last, size)

    def body():
        try:
            yield from node.storage.read_shard(shard.path, first, last - first + 1)
        except CorruptShard:
            log.error("corrupt shard %s: quarantined", shard.path.name)
            metrics.CORRUPT_RECORDS.inc()
            node.index.remove(shard_name.hash, shard_name.index, shard.path)
            node.storage.quarantine(shard.path)
            raise

    return 206 if byte_range else 200, headers, body()


@bp.get("/objects/<anypath:name>")
def get_object(name: str) -> Response:
    status, headers, body = serve_shard(_node(), name, request.headers.get("Range"))
    return Response(body, status=status, headers=headers)


def _hash_and_index(name: str) -> tuple[str, int | None]:
    """``<quoted hash>.<i>`` -> (hash, i); ``<quoted hash>`` -> (hash, None): all shards."""
    if "." in name[-2:]:
        shard_name = ShardName.parse(name)
        return shard_name.hash, shard_name.index
    return validate_hash(unquote_hash(name)), None


@bp.delete("/objects/<anypath:name>")
def delete_object(name: str) -> Response:
    """Move every shard of ``<hash>`` (or just ``<hash>.<i>``) to garbage/."""
    node = _node()
    hash_, index = _hash_and_index(name)
    moved = 0
    for shard in node.index.remove(hash_, index):
        try:
            node.storage.move_to_garbage(shard.path)
            moved += 1
        except FileNotFoundError:
            pass
    log.info("moved %d shard(s) of %s to garbage", moved, hash_)
    return Response(f"{moved}\n", mimetype="text/plain")


# -- orphan collection ------------------------------------------------------------------------

def _older_than() -> float:
    raw = request.args.get("older_than", "")
    try:
        seconds = float(raw)
    except ValueError:
        raise BadRequest(f"older_than must be a number of seconds, got {raw!r}") from None
    if not seconds >= 0:
        raise BadRequest(f"older_than must be >= 0, got {raw!r}")
    return seconds


@bp.get("/objects/")
def list_objects() -> Response:
    """Every shard held, one JSON line each: ``{"hash", "index", "age"}``, ``age`` being the
    seconds since its content was written (the file's mtime)."""
    node = _node()

    def lines():
        now = time.time()
        for hash_ in node.index.hashes():
            for index in range(ALL_SHARDS):
                shard = node.index.get(hash_, index)
                if shard is None:
                    continue
                try:
                    age = now - shard.path.stat().st_mtime
                except FileNotFoundError:
                    continue
                yield json.dumps({"hash": hash_, "index": index, "age": age}) + "\n"

    return Response(lines(), mimetype="application/x-ndjson")


@bp.post("/garbage/<anypath:name>")
def collect_object(name: str) -> Response:
    """Move the shards of ``<quoted hash>`` (or just shard ``<quoted hash>.<i>``) older than
    ``older_than`` seconds to garbage/."""
    node = _node()
    hash_, only = _hash_and_index(name)
    older_than = _older_than()
    moved = kept = 0
    for index in range(ALL_SHARDS) if only is None else [only]:
        shard = node.index.get(hash_, index)
        if shard is None:
            continue
        try:
            age = time.time() - shard.path.stat().st_mtime
        except FileNotFoundError:
            node.index.remove(hash_, index, shard.path)
            continue
        if age < older_than:
            kept += 1
            continue
        node.index.remove(hash_, index, shard.path)
        try:
            node.storage.move_to_garbage(shard.path)
            moved += 1
        except FileNotFoundError:
            pass
    log.info("collected %d shard(s) of %s into garbage (%d younger than %.0fs kept)",
             moved, hash_, kept, older_than)
    return jsonify(moved=moved, kept=kept)


@bp.delete("/garbage/")
def purge_garbage() -> Response:
    """Delete files that have lain in garbage/ for more than ``older_than`` seconds (since
    they were moved there: a rename sets the ctime, while the mtime is the content's)."""
    node = _node()
    older_than = _older_than()
    purged = purge_local_garbage(node.storage.root, older_than)
    log.info("purged %d file(s) older than %.0fs from garbage", purged, older_than)
    return jsonify(purged=purged)
