"""The aws-chunked request body: its payload decoded as it streams, every chunk signature and
the trailer signature checked, its trailing checksums kept for the caller.

API::

    decoder = Decoder(raw, signed, decoded_length)   # raw: .read(n); signed: sigv4.Signed
    for piece in decoder: ...                        # or decoder.read(n) until b""
    decoder.trailer_checksums()                      # {"CRC32": "<b64>"} once the body ended

The framing (https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html and
sigv4-streaming-trailers.html)::

    <hex size>;chunk-signature=<sig 1>\\r\\n <size bytes> \\r\\n      one per chunk
    ...
    0;chunk-signature=<sig n>\\r\\n                                   the final chunk
    x-amz-checksum-crc32:<b64>\\r\\n                                  trailers (-TRAILER modes)
    x-amz-trailer-signature:<sig>\\r\\n                               (signed trailer mode)
    \\r\\n

``sig k = HMAC(signing key, "AWS4-HMAC-SHA256-PAYLOAD\\n" date scope sig k-1
sha256("") sha256(chunk k))``, with ``sig 0`` the request's seed signature, so a chunk can
be neither changed, dropped nor moved.  The unsigned modes (STREAMING-UNSIGNED-PAYLOAD-TRAILER)
have bare ``<hex size>\\r\\n`` headers.  A chunk may be megabytes: it is passed on in pieces of
at most PIECE_SIZE while its hash runs.

**What the caller can rely on.** The last piece of each chunk is held back until the chunk's
signature has verified and the next chunk header has been read; when that header is the final
chunk, the whole rest of the body (final signature, trailers, trailer signature, decoded
length) is checked before the last piece is released.  So a consumer that has received all
``decoded_length`` bytes, or seen the end, has an authenticated body, and one that is given
an error (a tampered or truncated body) has not seen all of it: it aborts the store.  At most
PIECE_SIZE + READ_SIZE bytes are buffered.

Errors (:class:`S3Error`): 403 SignatureDoesNotMatch (a chunk or the trailer);
400 IncompleteBody (the body ends early, or decodes to fewer bytes than
``x-amz-decoded-content-length``); 400 InvalidRequest (malformed framing, or more bytes than
declared); 400 MalformedTrailerError (a malformed or undeclared trailer, a declared one
missing) and 400 InvalidRequest for a malformed checksum value in it.
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator

from api_server.s3.errors import S3Error
from api_server.s3.sigv4 import EMPTY_SHA256, Signed
from lib import checksums

#: Largest piece of payload handed on at once (a chunk is split into pieces this big).
PIECE_SIZE = 256 * 1024
#: Size of each read from the raw body while looking for a line end.
READ_SIZE = 64 * 1024
#: Longest chunk header line (``<16 hex digits>;chunk-signature=<64 hex>`` is 98 bytes).
MAX_LINE = 4096
#: Most trailing header bytes accepted.
MAX_TRAILER = 16 * 1024

_TRAILER_SIGNATURE = "x-amz-trailer-signature"
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def _malformed(detail: str) -> S3Error:
    return S3Error("InvalidRequest", f"Malformed aws-chunked body: {detail}", 400)


def _incomplete() -> S3Error:
    return S3Error("IncompleteBody", "You did not provide the number of bytes specified by the "
                   "Content-Length HTTP header (x-amz-decoded-content-length).", 400)


def _bad_trailer(detail: str) -> S3Error:
    return S3Error("MalformedTrailerError", "The request contained trailing data that was not "
                   f"well-formed or did not conform to our published schema: {detail}", 400)


def _signature_mismatch(what: str) -> S3Error:
    return S3Error("SignatureDoesNotMatch", f"The {what} signature we calculated does not "
                   "match the signature you provided.", 403)


def _line_too_long() -> S3Error:
    return _malformed("a chunk header line is too long")


class _Source:
    """The raw body read by lines and by exact counts, with one bounded look-ahead buffer."""

    def __init__(self, raw):
        self._raw = raw
        self._buffer = bytearray()

    def line(self, limit: int = MAX_LINE, too_long=_line_too_long) -> bytes | None:
        """The next line without its CRLF; None at the end of the body.

        :param too_long: makes the error for a line longer than ``limit``.
        """
        searched = 0
        while True:
            end = self._buffer.find(b"\r\n", searched)
            if end > limit or (end < 0 and len(self._buffer) > limit):
                raise too_long()
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[:end + 2]
                return line
            searched = max(0, len(self._buffer) - 1)
            data = self._raw.read(READ_SIZE)
            if not data:
                if self._buffer:
                    raise _incomplete()
                return None
            self._buffer += data

    def exactly(self, size: int) -> bytes:
        """The next ``size`` bytes; IncompleteBody if the body ends first."""
        if len(self._buffer) >= size:
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data
        parts = [bytes(self._buffer)]
        wanted = size - len(self._buffer)
        self._buffer.clear()
        while wanted:
            data = self._raw.read(wanted)
            if not data:
                raise _incomplete()
            parts.append(data)
            wanted -= len(data)
        return b"".join(parts)


def _chunk_header(line: bytes, signed: bool) -> tuple[int, str | None]:
    size_field, _, extensions = line.partition(b";")
    size_field = size_field.strip()
    if not size_field or len(size_field) > 16 or not set(size_field) <= _HEX_DIGITS:
        raise _malformed("a chunk size is not hexadecimal")
    signature = None
    for extension in extensions.split(b";") if extensions else ():
        name, _, value = extension.partition(b"=")
        if name.strip() == b"chunk-signature":
            signature = value.strip().decode("ascii", "replace")
    if signed and signature is None:
        raise _malformed("a chunk has no chunk-signature")
    return int(size_field, 16), signature


class Decoder:
    """The decoded payload of an aws-chunked body, checked as it streams (module docstring).

    :param raw: the body as sent (``wsgi.input``): anything with ``read(n)``.
    :param signed: the request's verified signature (``sigv4.verify``); its ``payload`` says
        whether chunks are signed and a trailer follows, its ``trailer`` which one.
    :param decoded_length: ``x-amz-decoded-content-length``; None to skip the length check.
    """

    def __init__(self, raw, signed: Signed, decoded_length: int | None):
        self._source = _Source(raw)
        self._signed = signed
        self._length = decoded_length
        self._received = 0
        self._trailers: dict[str, str] | None = None
        self._pieces = self._decode()
        self._pending = b""

    def __iter__(self) -> Iterator[bytes]:
        if self._pending:
            yield self._pending
            self._pending = b""
        yield from self._pieces

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` decoded bytes (up to PIECE_SIZE if negative: never the whole body);
        b"" only at the end."""
        if size is None or size < 0:
            size = PIECE_SIZE
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._pending = piece
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    @property
    def trailers(self) -> dict[str, str]:
        """Every trailing header but the trailer signature, names lower case."""
        if self._trailers is None:
            raise RuntimeError("the aws-chunked body has not been read to its end")
        return dict(self._trailers)

    def trailer_checksums(self) -> dict[str, str]:
        """The trailing ``x-amz-checksum-*`` values by algorithm (``{"CRC32": "<b64>"}``),
        once the body has been read to its end."""
        return {checksums.from_header_name(name): value for name, value in self.trailers.items()
                if checksums.from_header_name(name) is not None}

    def _decode(self) -> Iterator[bytes]:
        signed = self._signed.signed_chunks
        previous = self._signed.signature
        held = b""
        while True:
            line = self._source.line()
            if line is None:
                raise _incomplete()
            size, signature = _chunk_header(line, signed)
            if size == 0:
                if signed:
                    previous = self._check_chunk(previous, EMPTY_SHA256, signature)
                self._finish(previous)
                if held:
                    yield held
                return
            if held:
                yield held
                held = b""
            if self._length is not None and self._received + size > self._length:
                raise _malformed("the chunks hold more bytes than x-amz-decoded-content-length")
            self._received += size
            digest = hashlib.sha256() if signed else None
            left = size
            while left:
                piece = self._source.exactly(min(left, PIECE_SIZE))
                left -= len(piece)
                if digest is not None:
                    digest.update(piece)
                if left:
                    yield piece
                else:
                    held = piece
            if self._source.exactly(2) != b"\r\n":
                raise _malformed("a chunk's data is not followed by CRLF")
            if signed:
                previous = self._check_chunk(previous, digest.hexdigest(), signature)

    def _check_chunk(self, previous: str, sha256_hex: str, provided: str) -> str:
        expected = self._signed.chunk_signature(previous, sha256_hex)
        if not hmac.compare_digest(expected.encode(), provided.encode()):
            raise _signature_mismatch("chunk")
        return expected

    def _finish(self, previous: str) -> None:
        """Read the rest of the body after the final chunk: the trailers (checked) in the
        trailer modes, else only the closing CRLF.  Blank lines are tolerated anywhere in it
        (clients differ on the CRLF between the final chunk and the trailers)."""
        trailers: dict[str, str] = {}
        lines = []
        budget = MAX_TRAILER
        def too_long():
            return _bad_trailer("the trailing headers are too long")

        while (line := self._source.line(budget, too_long)) is not None:
            budget -= len(line) + 2
            if budget < 0:
                raise too_long()
            if line:
                lines.append(line)
        if lines and not self._signed.has_trailer:
            raise _malformed("data follows the final chunk")
        provided_signature = None
        canonical = []
        for line in lines:
            name, colon, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if not colon or not name:
                raise _bad_trailer(f"{line[:64]!r} is not a header")
            if name == _TRAILER_SIGNATURE:
                provided_signature = value
                continue
            trailers[name] = value
            canonical.append(f"{name}:{value}\n")
        if self._signed.payload == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER":
            if provided_signature is None:
                raise _bad_trailer("x-amz-trailer-signature is missing")
            digest = hashlib.sha256("".join(canonical).encode("latin-1")).hexdigest()
            expected = self._signed.trailer_signature(previous, digest)
            if not hmac.compare_digest(expected.encode(), provided_signature.encode()):
                raise _signature_mismatch("trailer")
        self._check_trailers(trailers)
        if self._length is not None and self._received != self._length:
            raise _incomplete()
        self._trailers = trailers

    def _check_trailers(self, trailers: dict[str, str]) -> None:
        declared = set(self._signed.trailer)
        if declared:
            undeclared = sorted(set(trailers) - declared)
            if undeclared:
                raise _bad_trailer(f"{', '.join(undeclared)} not declared in x-amz-trailer")
            missing = sorted(declared - set(trailers))
            if missing:
                raise _bad_trailer(f"{', '.join(missing)} declared in x-amz-trailer but not "
                                   "sent")
        for name, value in trailers.items():
            algorithm = checksums.from_header_name(name)
            if algorithm is not None and not checksums.is_valid(algorithm, value):
                raise S3Error("InvalidRequest", f"Value for {name} trailing header is invalid.",
                              400)
