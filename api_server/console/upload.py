"""The console's upload: a multipart/form-data POST streamed into ``api.layer.put``.

The form is decoded as it arrives (werkzeug's sans-IO decoder), never spooled: the small
fields come first (the form puts them before the file), the CSRF token among them is checked
before the first byte of the file is read, and the file's chunks go straight to the object
layer.  The generator that feeds it reads on to the closing boundary before it ends, so a
truncated form, or a second file, fails the PUT before anything is committed.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import g, redirect, request, url_for
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import NEED_DATA, Data, Epilogue, Field, File, MultipartDecoder

from api_server.body import client_body
from api_server.console import api, bp, error_page, session
from lib.errors import BadRequest, ClientBodyError
from lib.metadata import ObjectMeta
from lib.objects import Expect

log = logging.getLogger(__name__)

#: Bytes a form's text fields may hold together (the key and the prefix are at most 1 KiB).
MAX_FIELD_BYTES = 16 * 1024
#: Bytes read from the client at once; the decoder holds at most two reads undecoded.
READ_SIZE = 64 * 1024
#: Parts a form may have: a few fields and the file.
MAX_PARTS = 8


class FormStream:
    """The events of one multipart/form-data body, decoded from bounded reads."""

    def __init__(self, stream, boundary: bytes):
        self._decoder = MultipartDecoder(boundary, 2 * READ_SIZE, max_parts=MAX_PARTS)
        self._chunks = client_body(stream, READ_SIZE)

    def __iter__(self) -> Iterator[object]:
        ended = False
        while True:
            try:
                event = self._decoder.next_event()
            except ValueError as exc:
                raise ClientBodyError(f"the form is malformed or cut short: {exc}") from None
            if event is NEED_DATA:
                if ended:
                    raise ClientBodyError("the form ends before its closing boundary")
                chunk = next(self._chunks, None)
                ended = chunk is None
                self._decoder.receive_data(chunk)
                continue
            yield event
            if isinstance(event, Epilogue):
                return


def _fields_then_file(events: Iterator[object]) -> tuple[dict[str, str], File | None]:
    """The text fields before the file, and the file's part (None: the form has none)."""
    fields: dict[str, str] = {}
    name, parts, held = None, [], 0
    for event in events:
        if isinstance(event, File):
            return fields, event
        if isinstance(event, Field):
            name, parts = event.name, []
        elif isinstance(event, Data) and name is not None:
            held += len(event.data)
            if held > MAX_FIELD_BYTES:
                raise BadRequest(f"the form's fields exceed {MAX_FIELD_BYTES} bytes")
            parts.append(event.data)
            if not event.more_data:
                try:
                    fields[name] = b"".join(parts).decode("utf-8")
                except UnicodeDecodeError:
                    raise BadRequest(f"form field {name!r} is not UTF-8") from None
                name = None
    return fields, None


def _file_chunks(events: Iterator[object]) -> Iterator[bytes]:
    """The file's bytes, then the rest of the form read up to its end."""
    for event in events:
        if isinstance(event, Data):
            if event.data:
                yield event.data
            if not event.more_data:
                break
    for event in events:
        if isinstance(event, File):
            raise BadRequest("upload one file at a time")


def _basename(filename: str) -> str:
    return filename.replace("\\", "/").rsplit("/", 1)[-1]


@bp.post("/buckets/<bucket>/upload")
def upload(bucket: str):
    mimetype, options = parse_options_header(request.headers.get("Content-Type", ""))
    if mimetype != "multipart/form-data" or not options.get("boundary"):
        return error_page(400, "an upload is a multipart/form-data form")
    events = iter(FormStream(request.stream, options["boundary"].encode("latin-1")))
    fields, file = _fields_then_file(events)
    if not session.check_csrf(api().config, g.console_nonce, fields.get("csrf")):
        return error_page(403, "the form's CSRF token is missing or wrong: reload the page")
    if file is None or not file.filename:
        return error_page(400, "choose a file to upload")
    key = fields.get("prefix", "") + (fields.get("name") or _basename(file.filename))
    content_type = file.headers.get("Content-Type", "")
    version = api().layer.put(bucket, key, _file_chunks(events), Expect(),
                              meta=ObjectMeta(content_type=content_type))
    log.info("console: uploaded %s/%r (%d bytes)", bucket, key, version.size)
    return redirect(url_for("console.object_page", bucket=bucket, key=key,
                            version=version.version_id), 303)
