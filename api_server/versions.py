"""/versions/ and /versions/<name>: every version of the book bucket, as the book's JSON lines.

``from`` (offset, default 0) and ``size`` (how many, default all) page the list; it is read
from the metadata store a page at a time, so any number of versions streams in bounded memory.
Each line also carries the version's S3 ``VersionId``: the same version, by its other name.
"""
from __future__ import annotations

import json

from flask import Blueprint, Response, current_app

from api_server.objects import int_arg, object_name

bp = Blueprint("versions", __name__)

PAGE = 1000


@bp.get("/versions/<anypath:name>")
def get_versions(name: str) -> Response:
    api = current_app.extensions["tessera.api"]
    bucket = api.config.book_bucket
    name = object_name("/versions/", required=False) or None
    offset = int_arg("from", 0)
    remaining = int_arg("size", None)
    if remaining == 0:
        return Response(b"", mimetype="application/x-ndjson")
    first_page = api.metadata.versions_of(bucket, name, offset, min(PAGE, remaining or PAGE))

    def generate():
        nonlocal offset, remaining
        page = first_page
        while page:
            for version in page:
                yield json.dumps(version.to_book_json(), ensure_ascii=False) + "\n"
            offset += len(page)
            if remaining is not None:
                remaining -= len(page)
                if remaining <= 0:
                    return
            if len(page) < PAGE:
                return
            page = api.metadata.versions_of(bucket, name, offset, min(PAGE, remaining or PAGE))

    return Response(generate(), mimetype="application/x-ndjson")
