"""api_server/formdata.py: upload forms decoded as they arrive, in bounded reads."""
from __future__ import annotations

import io

import pytest

from api_server import formdata
from lib.errors import BadRequest, ClientBodyError


class _Recorded(io.BytesIO):
    """A request body that remembers its largest read."""

    largest = 0

    def read(self, size=-1):
        self.largest = max(self.largest, size if size >= 0 else len(self.getvalue()))
        return super().read(size)


def _form(*parts: tuple[str, str | None, bytes], end: bool = True) -> bytes:
    body = b"".join(
        b"--b\r\nContent-Disposition: form-data; name=\"" + name.encode() + b"\""
        + (b"; filename=\"" + filename.encode() + b"\"" if filename is not None else b"")
        + b"\r\n\r\n" + value + b"\r\n" for name, filename, value in parts)
    return body + (b"--b--\r\n" if end else b"")


def test_a_form_is_decoded_as_it_arrives_in_bounded_reads():
    big = b"y" * (8 * formdata.READ_SIZE)
    body = _Recorded(_form(("csrf", None, b"t"), ("file", "f", big)))
    events = iter(formdata.FormStream(body, b"b"))
    fields, file = formdata.fields_then_file(events)
    assert fields == {"csrf": "t"} and file.filename == "f"
    chunks = formdata.file_chunks(events)
    first = next(chunks)
    assert body.tell() <= 2 * formdata.READ_SIZE        # the file flows before it is all read
    assert first + b"".join(chunks) == big and body.largest == formdata.READ_SIZE


@pytest.mark.parametrize("body, error", [
    (_form(("file", "f", b"cut"), end=False)[:-2], ClientBodyError),
    (_form(("file", "one", b"1"), ("file", "two", b"2")), BadRequest),
])
def test_a_form_cut_short_or_with_two_files_fails_at_its_end(body, error):
    events = iter(formdata.FormStream(io.BytesIO(body), b"b"))
    _, file = formdata.fields_then_file(events)
    with pytest.raises(error):
        b"".join(formdata.file_chunks(events))


def test_fields_are_bounded_and_utf8():
    huge = _form(("key", None, b"k" * (formdata.MAX_FIELD_BYTES + 1)), ("file", "f", b""))
    with pytest.raises(BadRequest, match="exceed"):
        formdata.fields_then_file(iter(formdata.FormStream(io.BytesIO(huge), b"b")))
    latin = _form(("key", None, b"\xe9"), ("file", "f", b""))
    with pytest.raises(BadRequest, match="UTF-8"):
        formdata.fields_then_file(iter(formdata.FormStream(io.BytesIO(latin), b"b")))
