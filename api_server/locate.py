"""``GET /locate/<quoted hash>``: the book's locate endpoint, a JSON map shard index -> address."""
from __future__ import annotations

import json

from flask import Blueprint, Response, current_app

from lib.errors import ObjectNotFound
from lib.hashing import unquote_hash, validate_hash

bp = Blueprint("locate", __name__)


@bp.get("/locate/<anypath:quoted_hash>")
def get_locate(quoted_hash: str) -> Response:
    hash_ = validate_hash(unquote_hash(quoted_hash))
    shards = current_app.extensions["tessera.api"].locator.locate(hash_, fresh=True)
    if not shards:
        raise ObjectNotFound(f"no shard of {hash_} found")
    body = json.dumps({str(i): shards[i] for i in sorted(shards)})
    return Response(body + "\n", mimetype="application/json")
