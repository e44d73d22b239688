"""/temp/: temp objects, the two-phase write of a shard (BOOK chapter 4, one request a shard).

POST /temp/<hash>.<i> (``Size`` header) creates one and, when a body comes along, writes the
whole shard in that same request (verified, hashed, fsynced); with ``?commit=1`` it also
publishes it at once (short objects, whose digest the api server checked before sending);
PATCH appends (resumable uploads); PUT commits it into objects/ atomically; DELETE aborts;
HEAD/GET read it back.
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request

from data_server import append
from data_server.storage import ShardName, StoredShard
from lib.errors import BadRequest
from lib.hashing import validate_hash
from lib.headers import parse_size
from lib.rs import layout
from lib.streams import iter_chunks

log = logging.getLogger(__name__)
bp = Blueprint("temp", __name__)


def _node():
    return current_app.extensions["tessera.node"]


def _has_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get(
        "Transfer-Encoding", "").lower()


@bp.post("/temp/<anypath:name>")
def post_temp(name: str) -> Response:
    node = _node()
    shard_name = ShardName.parse(name)
    declared = request.headers.get("Size")
    has_body = _has_body()
    if declared is None and not has_body:
        raise BadRequest("the Size header is required to create an empty temp object")
    if request.args.get("commit") == "1" and declared is not None:
        shard = store_and_publish(node, shard_name, declared, request.stream)
        return Response(headers={"Shard-Hash": shard.shard_hash})
    size = parse_size(declared) if declared is not None else None
    info = node.storage.create_temp(shard_name, size)
    if has_body:
        node.storage.write_whole_temp(info, layout.iter_records(request.stream))
    return Response(info.uuid, mimetype="text/plain")


@bp.patch("/temp/<uuid>")
def patch_temp(uuid: str) -> Response:
    return append.patch_temp(_node().storage, uuid)     # Temp-Offset: see data_server/append


@bp.put("/temp/<uuid>")
def put_temp(uuid: str) -> Response:
    """Commit; ``Object-Hash`` publishes it as a shard of that object instead (its hash was
    known only once the body had been sent)."""
    node = _node()
    final = request.headers.get("Object-Hash")
    shard = node.storage.commit_temp(uuid, validate_hash(final) if final else None)
    _publish(node, shard)
    return Response(headers={"Shard-Hash": shard.shard_hash})


def store_and_publish(node, shard_name: ShardName, size_header: str, stream) -> StoredShard:
    """``POST /temp/<hash>.<i>?commit=1``: the whole shard from ``stream``, written,
    verified, fsynced and published at once."""
    shard = node.storage.store_shard(shard_name, parse_size(size_header),
                                     layout.iter_records(stream))
    _publish(node, shard)
    return shard


def _publish(node, shard) -> None:
    """Index a committed shard; an older file of the same shard goes to garbage."""
    replaced = node.index.add(shard)
    if replaced is not None:
        node.storage.move_to_garbage(replaced.path)
    log.debug("committed %s", shard.path.name)


@bp.delete("/temp/<uuid>")
def delete_temp(uuid: str) -> Response:
    _node().storage.delete_temp(uuid)
    return Response()


@bp.get("/temp/<uuid>")   # HEAD too: the same headers, no body
def get_temp(uuid: str) -> Response:
    node = _node()
    size = node.storage.temp_size(uuid)
    path = node.storage.temp / f"{uuid}.dat"

    def body():
        with open(path, "rb") as f:
            yield from iter_chunks(f, size)

    return Response(body(), headers={"Content-Length": str(size)},
                    mimetype="application/octet-stream")
