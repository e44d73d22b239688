"""/versions/ and /versions/<name>: every version, as the book's JSON lines, paged.

``from`` (offset, default 0) and ``size`` (how many, default all) page the list; it is read
from the metadata store a page at a time, so any number of versions streams in bounded memory.
"""
from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, request

from api_server.objects import object_name
from lib.errors import BadRequest

bp = Blueprint("versions", __name__)

PAGE = 1000


def _int_arg(name: str, default: int | None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer, got {raw!r}")
    return int(raw)


@bp.get("/versions/<anypath:name>")
def get_versions(name: str) -> Response:
    metadata = current_app.extensions["tessera.api"].metadata
    name = object_name("/versions/", required=False) or None
    offset = _int_arg("from", 0)
    remaining = _int_arg("size", None)
    first_page = metadata.versions(name, offset, min(PAGE, remaining or PAGE))

    def generate():
        nonlocal offset, remaining
        page = first_page
        while page:
            for meta in page:
                yield json.dumps(meta.to_book_json(), ensure_ascii=False) + "\n"
            offset += len(page)
            if remaining is not None:
                remaining -= len(page)
                if remaining <= 0:
                    return
            if len(page) < PAGE:
                return
            page = metadata.versions(name, offset, min(PAGE, remaining or PAGE))

    return Response(generate(), mimetype="application/x-ndjson")
