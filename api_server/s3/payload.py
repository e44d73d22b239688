"""What an S3 request body is and what it must hash to: the object layer's ``Expect``.

The body is whatever SigV4 said it is (``req.auth.body``: plain, or aws-chunked decoded with
every chunk signature checked), its length from ``Content-Length`` or
``x-amz-decoded-content-length``, its SHA-256 from a hex ``x-amz-content-sha256`` or an
``x-amz-checksum-sha256``, Content-MD5, and the S3 checksums declared in headers or trailers.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator

from api_server.s3.errors import S3Error, invalid_argument
from api_server.s3.request import Request
from lib import checksums
from lib.errors import ChecksumMismatch, ContentSha256Mismatch
from lib.metadata import ObjectMeta
from lib.objects.content import Expect, check_md5_header

#: The standard headers stored with a version and answered on GET/HEAD.
STANDARD_HEADERS = ("cache-control", "content-disposition", "content-encoding",
                    "content-language", "expires")


def _length(req: Request) -> int | None:
    raw = req.header("x-amz-decoded-content-length")
    if raw is None and req.auth is not None and req.auth.chunked:
        raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP "
                      "header (x-amz-decoded-content-length for aws-chunked).", 411)
    if raw is None:
        raw = req.header("content-length")
    if raw is None:
        if "chunked" in req.header("transfer-encoding", "").lower():
            return None
        raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP "
                      "header.", 411)
    if not raw.isdigit() or len(raw) > 19:
        raise invalid_argument("Content-Length is not a non-negative integer",
                               "Content-Length", raw)
    return int(raw)


def _checksum_headers(req: Request) -> dict[str, str | None]:
    wanted: dict[str, str | None] = {}
    for name in checksums.ALGORITHMS:
        value = req.header(checksums.header_name(name))
        if value is not None:
            wanted[name] = value.strip()
    for header in ("x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm"):
        algorithm = req.header(header)
        if algorithm:
            name = algorithm.strip().upper()
            if name not in checksums.ALGORITHMS:
                raise invalid_argument(f"Value for {header} header is invalid.", header,
                                       algorithm)
            wanted.setdefault(name, None)
    trailer = req.header("x-amz-trailer")
    if trailer:
        for item in trailer.split(","):
            name = item.strip().lower().removeprefix("x-amz-checksum-").upper()
            if name not in checksums.ALGORITHMS:
                raise invalid_argument(f"The trailer {item.strip()!r} is not a checksum "
                                       "S3 defines.", "x-amz-trailer", trailer)
            wanted.setdefault(name, None)
    if len([v for v in wanted.values() if v is not None]) > 1:
        raise invalid_argument("Expecting a single x-amz-checksum- header. Multiple checksum "
                               "Types are not allowed.")
    return wanted


def body(req: Request, max_size: int | None = None) -> tuple[Iterator[bytes], Expect]:
    """The body's chunks and what they must turn out to be."""
    size = _length(req)
    expect = Expect(size=size, want_md5=True, max_size=max_size)
    declared = req.auth.payload if req.auth is not None else "UNSIGNED-PAYLOAD"
    if len(declared) == 64 and all(c in "0123456789abcdef" for c in declared):
        expect.sha256 = base64.b64encode(bytes.fromhex(declared)).decode()
        expect.sha256_mismatch = ContentSha256Mismatch
    expect.md5 = check_md5_header(req.header("content-md5"))
    expect.checksums = _checksum_headers(req)
    sha = expect.checksums.get("SHA256")
    if sha is not None and expect.sha256 is None:
        try:
            if len(base64.b64decode(sha, validate=True)) == 32:
                expect.sha256 = sha
                expect.sha256_mismatch = _checksum_mismatch_sha256
        except (binascii.Error, ValueError):
            raise invalid_argument("Value for x-amz-checksum-sha256 header is invalid.",
                                   "x-amz-checksum-sha256", sha) from None
    if req.auth is not None and req.auth.chunked:
        chunks, trailer = req.auth.decode(req.input, size)
        expect.trailer = trailer
        return chunks, expect
    return req.raw_body(), expect


def _checksum_mismatch_sha256(message: str) -> Exception:
    return ChecksumMismatch("The SHA256 you specified did not match the calculated checksum.",
                            "SHA256")


def object_meta(req: Request) -> ObjectMeta:
    """The Content-Type, standard headers and ``x-amz-meta-*`` a write stores."""
    headers = {}
    for name in STANDARD_HEADERS:
        value = req.header(name)
        if name == "content-encoding" and value is not None:
            value = ",".join(v.strip() for v in value.split(",")
                             if v.strip() and v.strip().lower() != "aws-chunked")
        if value:
            headers[name] = value
    user = {}
    size = 0
    for name, value in req.headers.items():
        if name.startswith("x-amz-meta-"):
            # WSGI hands header bytes over as latin-1: S3 metadata values are UTF-8.
            try:
                value = value.encode("latin-1").decode("utf-8")
            except (UnicodeEncodeError, UnicodeDecodeError):
                pass
            user[name[len("x-amz-meta-"):]] = value
            size += len(name) + len(value.encode("utf-8"))
    if size > 2048:
        raise S3Error("MetadataTooLarge", "Your metadata headers exceed the maximum allowed "
                      "metadata size (2 KB).", 400)
    return ObjectMeta(content_type=req.header("content-type") or "binary/octet-stream",
                      headers=headers, user=user)


def checksum_headers(values: dict[str, str], kind: str = "") -> list[tuple[str, str]]:
    out = [(checksums.header_name(name), value) for name, value in sorted(values.items())]
    if out and kind:
        out.append(("x-amz-checksum-type", kind))
    return out
