"""The console's upload: a multipart/form-data POST streamed into ``api.layer.put``.

The form (``api_server/formdata.py``) puts its small fields before the file; the CSRF token
among them is checked before the first byte of the file is read, and the file's chunks go
straight to the object layer.
"""
from __future__ import annotations

import logging

from flask import g, redirect, request, url_for

from api_server import formdata
from api_server.console import api, bp, error_page, session
from lib.metadata import ObjectMeta
from lib.objects import Expect

log = logging.getLogger(__name__)


def _basename(filename: str) -> str:
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


@bp.post("/buckets/<bucket>/upload")
def upload(bucket: str):
    boundary = request.mimetype_params.get("boundary", "")
    if request.mimetype != "multipart/form-data" or not boundary:
        return error_page(400, "an upload is a multipart/form-data form")
    events = iter(formdata.FormStream(request.stream, boundary.encode("latin-1")))
    fields, file = formdata.fields_then_file(events)
    if not session.check_csrf(api().config, g.console_nonce, fields.get("csrf")):
        return error_page(403, "the form's CSRF token is missing or wrong: reload the page")
    if file is None or not file.filename:
        return error_page(400, "choose a file to upload")
    key = fields.get("prefix", "") + (fields.get("name") or _basename(file.filename))
    content_type = file.headers.get("Content-Type", "")
    version = api().layer.put(bucket, key, formdata.file_chunks(events), Expect(),
                              meta=ObjectMeta(content_type=content_type))
    log.info("console: uploaded %s/%r (%d bytes)", bucket, key, version.size)
    return redirect(url_for("console.object_page", bucket=bucket, key=key,
                            version=version.version_id), 303)
