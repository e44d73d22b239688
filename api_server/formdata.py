"""multipart/form-data request bodies as the object layer wants them: decoded as they arrive.

A form that uploads a file is never spooled (werkzeug's ``request.files`` would write it to a
temporary file first): werkzeug's sans-IO decoder is fed bounded reads, the small text fields
before the file are collected (at most ``MAX_FIELD_BYTES``), and the file's bytes are handed
on chunk by chunk.  The file's generator reads on to the closing boundary before it ends, so
a truncated form, or a second file, fails the PUT it feeds before anything is committed.
"""
from __future__ import annotations

from collections.abc import Iterator

from werkzeug.sansio.multipart import NEED_DATA, Data, Epilogue, Field, File, MultipartDecoder

from api_server.body import client_body
from lib.errors import BadRequest, ClientBodyError

#: Bytes a form's text fields may hold together (a key is at most 1 KiB).
MAX_FIELD_BYTES = 64 * 1024
#: Bytes read from the client at once; the decoder holds at most two reads undecoded.
READ_SIZE = 64 * 1024
#: Parts a form may have: a few fields and the file.
MAX_PARTS = 16


class FormStream:
    """The events of one multipart/form-data body (``boundary`` from its Content-Type)."""

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


def fields_then_file(events: Iterator[object]) -> tuple[dict[str, str], File | None]:
    """The text fields before the first file, and that file's part (None: there is none)."""
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


def file_chunks(events: Iterator[object]) -> Iterator[bytes]:
    """The file's bytes (after :func:`fields_then_file`), then the rest of the form read up
    to its end."""
    for event in events:
        if isinstance(event, Data):
            if event.data:
                yield event.data
            if not event.more_data:
                break
    for event in events:
        if isinstance(event, File):
            raise BadRequest("upload one file at a time")
