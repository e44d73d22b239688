"""aws-chunked decoding: the AWS documentation's signed examples, boto3's unsigned trailer
bodies, tampering caught before the whole payload is out, bounded reads, framing errors."""
import calendar
import hashlib
import io
import time

import pytest

from api_server.s3 import chunked, sigv4
from api_server.s3.errors import S3Error
from lib import checksums
from tests import s3_signing
from tests.s3_signing import aws_chunked, capture, secret_for, streaming_put

AWS_EXAMPLE = calendar.timegm((2013, 5, 24, 0, 0, 0))
EXAMPLE_HEADERS = {
    "Host": "s3.amazonaws.com", "x-amz-date": "20130524T000000Z",
    "x-amz-storage-class": "REDUCED_REDUNDANCY", "Content-Encoding": "aws-chunked",
    "x-amz-decoded-content-length": "66560", "Content-Length": "66824"}
EXAMPLE_CHUNKS = [b"a" * 65536, b"a" * 1024]
#: sigv4-streaming.html, "Example: PUT Object": seed, chunk 1, chunk 2, final chunk.
STREAMING = ("4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
             "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
             "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
             "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9")
#: sigv4-streaming-trailers.html: seed, chunks, final chunk, and the trailer signature.
TRAILER = ("106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e",
           "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
           "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
           "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
           "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435")


class Trickle:
    """A raw body that hands out at most ``most`` bytes per read, and records each read."""

    def __init__(self, data: bytes, most: int = 1 << 30):
        self._data = io.BytesIO(data)
        self._most = most
        self.reads = []

    def read(self, size: int) -> bytes:
        self.reads.append(size)
        return self._data.read(min(size, self._most))


def _example(trailer: bool) -> tuple[sigv4.Signed, bytes]:
    headers = dict(EXAMPLE_HEADERS)
    if trailer:
        headers.update({"x-amz-content-sha256": sigv4.STREAMING_SIGNED_TRAILER,
                        "x-amz-trailer": "x-amz-checksum-crc32c"})
        signed_headers = ("content-encoding;host;x-amz-content-sha256;x-amz-date;"
                          "x-amz-decoded-content-length;x-amz-storage-class;x-amz-trailer")
        signatures = TRAILER
    else:
        headers["x-amz-content-sha256"] = sigv4.STREAMING_SIGNED
        signed_headers = ("content-encoding;content-length;host;x-amz-content-sha256;"
                          "x-amz-date;x-amz-decoded-content-length;x-amz-storage-class")
        signatures = STREAMING
    headers["Authorization"] = (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        f"SignedHeaders={signed_headers},Signature={signatures[0]}")
    signed = sigv4.verify("PUT", "/examplebucket/chunkObject.txt", "", headers, secret_for,
                          AWS_EXAMPLE)
    body = b"".join(f"{len(data):x};chunk-signature={sig}\r\n".encode() + data + b"\r\n"
                    for data, sig in zip(EXAMPLE_CHUNKS, signatures[1:3], strict=True))
    body += f"0;chunk-signature={signatures[3]}\r\n".encode()
    if trailer:
        body += (b"x-amz-checksum-crc32c:sOO8/Q==\r\n"
                 b"x-amz-trailer-signature:" + signatures[4].encode() + b"\r\n\r\n")
    else:
        body += b"\r\n"
    return signed, body


def _decode(signed, body, length, most=1 << 30):
    decoder = chunked.Decoder(Trickle(body, most), signed, length)
    return b"".join(decoder), decoder


def _refused(code, signed, body, length, most=1 << 30):
    """Decode until the error; return it and how much payload came out before it."""
    decoder = chunked.Decoder(Trickle(body, most), signed, length)
    received = 0
    with pytest.raises(S3Error) as caught:
        for piece in decoder:
            received += len(piece)
    assert caught.value.code == code, caught.value.message
    return caught.value, received


@pytest.mark.parametrize("trailer", [False, True])
@pytest.mark.parametrize("most", [1, 7, 4096, 1 << 30])
def test_aws_documentation_examples(trailer, most):
    signed, body = _example(trailer)
    if not trailer:
        assert len(body) == int(EXAMPLE_HEADERS["Content-Length"])
    payload, decoder = _decode(signed, body, 66560, most)
    assert payload == b"a" * 66560
    assert decoder.trailer_checksums() == ({"CRC32C": "sOO8/Q=="} if trailer else {})


def test_the_test_encoder_reproduces_the_aws_examples():
    # tests/s3_signing.aws_chunked, used below for bodies AWS gives no example of.
    for trailer in (False, True):
        signed, body = _example(trailer)
        ours = aws_chunked(EXAMPLE_CHUNKS, signed.signature, signed.signing_key,
                           signed.amz_date, signed.scope,
                           {"x-amz-checksum-crc32c": "sOO8/Q=="} if trailer else None)
        assert ours == body


@pytest.mark.parametrize("where", ["chunk 1", "end of chunk 1", "chunk 2", "end of chunk 2"])
def test_a_tampered_chunk_fails_before_the_payload_is_complete(where):
    signed, body = _example(trailer=False)
    position = {"chunk 1": 200, "end of chunk 1": body.index(b"\r\n400;") - 1,
                "chunk 2": body.index(b"\r\n400;") + 200,
                "end of chunk 2": body.index(b"\r\n0;") - 1}[where]
    assert body[position:position + 1] == b"a"
    tampered = body[:position] + b"b" + body[position + 1:]
    error, received = _refused("SignatureDoesNotMatch", signed, tampered, 66560)
    assert error.status == 403 and received < 66560


@pytest.mark.parametrize("change", ["swap", "drop-first", "final-signature", "seed",
                                    "signature-missing"])
def test_chunks_cannot_be_moved_dropped_or_resigned(change):
    signed, body = _example(trailer=False)
    first, second = body.split(b"\r\n400;")
    second = b"400;" + second
    chunk1, rest = first + b"\r\n", second
    chunk2, final = rest.split(b"\r\n0;")
    chunk2, final = chunk2 + b"\r\n", b"0;" + final
    code = "SignatureDoesNotMatch"
    if change == "swap":
        body = chunk2 + chunk1 + final
    elif change == "drop-first":
        body = chunk2 + final
    elif change == "final-signature":
        body = chunk1 + chunk2 + b"0;chunk-signature=" + b"0" * 64 + b"\r\n\r\n"
    elif change == "seed":
        other = s3_signing.streaming_put("/examplebucket/chunkObject.txt", EXAMPLE_CHUNKS)
        signed = sigv4.verify(other.method, other.path, other.query, other.headers,
                              secret_for, time.time())
    elif change == "signature-missing":
        body, code = b"10000\r\n" + chunk1.split(b"\r\n", 1)[1] + chunk2 + final, "InvalidRequest"
    _, received = _refused(code, signed, body, 66560)
    assert received < 66560


@pytest.mark.parametrize("change", ["value", "signature", "missing-signature", "name",
                                    "extra"])
def test_trailer_is_signed(change):
    signed, body = _example(trailer=True)
    code = "SignatureDoesNotMatch"
    if change == "value":
        body = body.replace(b"sOO8/Q==", b"AAAAAA==")
    elif change == "signature":
        body = body.replace(TRAILER[4].encode(), b"0" * 64)
    elif change == "missing-signature":
        body, code = body.split(b"x-amz-trailer-signature")[0] + b"\r\n", "MalformedTrailerError"
    elif change == "name":
        body = body.replace(b"x-amz-checksum-crc32c:", b"x-amz-checksum-crc32:")
    elif change == "extra":
        body = body.replace(b"x-amz-trailer-signature",
                            b"x-amz-meta-x:1\r\nx-amz-trailer-signature")
    _, received = _refused(code, signed, body, 66560)
    assert received < 66560


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
def test_boto3_unsigned_trailer_bodies(algorithm):
    # botocore sends STREAMING-UNSIGNED-PAYLOAD-TRAILER over https, 1 MiB per chunk.
    data = bytes(range(256)) * 9000
    wire = capture("put_object", s3=s3_signing.client(endpoint="https://127.0.2.1:9443"),
                   Bucket="bkt", Key="k", Body=io.BytesIO(data), ChecksumAlgorithm=algorithm)
    signed = sigv4.verify(wire.method, wire.path, wire.query, wire.headers, secret_for,
                          time.time())
    assert signed.payload == sigv4.STREAMING_UNSIGNED_TRAILER
    assert wire.body.count(b"\r\n") > 4  # several chunks
    length = int(wire.headers["x-amz-decoded-content-length"])
    payload, decoder = _decode(signed, wire.body, length, most=5000)
    assert payload == data
    calc = checksums.new(algorithm)
    calc.update(data)
    assert decoder.trailer_checksums() == {algorithm: calc.b64()}
    assert decoder.trailers == {checksums.header_name(algorithm): calc.b64()}


def test_signed_trailer_modes_from_our_encoder_with_large_chunks():
    chunks = [bytes([i]) * size for i, size in enumerate([3 << 20, 8192, 1, 700_000])]
    calc = checksums.new("SHA256")
    for data in chunks:
        calc.update(data)
    wire = streaming_put("/bkt/big", chunks, payload=sigv4.STREAMING_SIGNED_TRAILER,
                         trailers={"x-amz-checksum-sha256": calc.b64()})
    signed = sigv4.verify(wire.method, wire.path, wire.query, wire.headers, secret_for,
                          time.time())
    raw = Trickle(wire.body)
    decoder = chunked.Decoder(raw, signed, sum(map(len, chunks)))
    pieces = list(decoder)
    assert b"".join(pieces) == b"".join(chunks)
    assert max(map(len, pieces)) <= chunked.PIECE_SIZE
    assert max(raw.reads) <= max(chunked.PIECE_SIZE, chunked.READ_SIZE)
    assert decoder.trailer_checksums() == {"SHA256": calc.b64()}


def test_read_interface():
    wire = streaming_put("/bkt/k", [b"hello ", b"world"])
    signed = sigv4.verify(wire.method, wire.path, wire.query, wire.headers, secret_for,
                          time.time())
    decoder = chunked.Decoder(io.BytesIO(wire.body), signed, 11)
    out = []
    while piece := decoder.read(4):
        assert len(piece) <= 4
        out.append(piece)
    assert b"".join(out) == b"hello world" and decoder.read() == b""
    decoder = chunked.Decoder(io.BytesIO(wire.body), signed, 11)
    assert decoder.read(3) == b"hel"
    assert b"".join(decoder) == b"lo world"
    with pytest.raises(RuntimeError):
        chunked.Decoder(io.BytesIO(wire.body), signed, 11).trailer_checksums()


def test_decoded_length_is_checked():
    wire = streaming_put("/bkt/k", [b"x" * 100, b"y" * 50])
    signed = sigv4.verify(wire.method, wire.path, wire.query, wire.headers, secret_for,
                          time.time())
    assert _decode(signed, wire.body, None)[0] == b"x" * 100 + b"y" * 50
    error, received = _refused("IncompleteBody", signed, wire.body, 151)
    assert error.status == 400 and received < 150
    _, received = _refused("InvalidRequest", signed, wire.body, 120)
    assert received < 120


@pytest.mark.parametrize("keep", [0, 5, 90, 150, -10, -3, -1])
def test_truncated_bodies_are_incomplete(keep):
    wire = streaming_put("/bkt/k", [b"x" * 100])
    signed = sigv4.verify(wire.method, wire.path, wire.query, wire.headers, secret_for,
                          time.time())
    body = wire.body[:keep if keep >= 0 else len(wire.body) + keep]
    _, received = _refused("IncompleteBody", signed, body, 100)
    assert received < 100


def test_the_closing_crlf_may_be_missing():
    wire = streaming_put("/bkt/k", [b"x" * 100])
    signed = sigv4.verify(wire.method, wire.path, wire.query, wire.headers, secret_for,
                          time.time())
    assert wire.body.endswith(b"\r\n\r\n")
    assert _decode(signed, wire.body[:-2], 100)[0] == b"x" * 100


UNSIGNED = sigv4.Signed("AK", b"", "", "", "", sigv4.STREAMING_UNSIGNED_TRAILER, "r",
                        trailer=("x-amz-checksum-crc32",))


@pytest.mark.parametrize("body, code", [
    (b"zz\r\nab\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n", "InvalidRequest"),
    (b"-2\r\nab\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n", "InvalidRequest"),
    (b"2\r\nabX\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n", "InvalidRequest"),
    (b"2" + b" " * 5000 + b"\r\nab\r\n0\r\n\r\n", "InvalidRequest"),
    (b"11111111111111111\r\n", "InvalidRequest"),
    (b"2\r\nab\r\n0\r\nx-amz-checksum-crc32 AAAAAA==\r\n\r\n", "MalformedTrailerError"),
    (b"2\r\nab\r\n0\r\nx-amz-checksum-crc32:AAAA\r\n\r\n", "InvalidRequest"),
    (b"2\r\nab\r\n0\r\nx-amz-checksum-sha1:AAAAAA==\r\n\r\n", "MalformedTrailerError"),
    (b"2\r\nab\r\n0\r\n\r\n", "MalformedTrailerError"),
    (b"2\r\nab\r\n0\r\nx-amz-checksum-crc32:" + b"A" * 20000 + b"\r\n\r\n",
     "MalformedTrailerError"),
    (b"", "IncompleteBody"),
], ids=["size-not-hex", "negative-size", "no-crlf-after-data", "long-line", "size-too-long",
        "trailer-not-header", "checksum-malformed", "trailer-undeclared", "trailer-missing",
        "trailer-too-long", "empty"])
def test_malformed_framing(body, code):
    _, received = _refused(code, UNSIGNED, body, 2)
    assert received < 2


def test_blank_lines_around_trailers_are_tolerated():
    for body in (b"2\r\nab\r\n0\r\n\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n",
                 b"2\r\nab\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n",
                 b"2\r\nab\r\n0\r\nx-amz-checksum-crc32: AAAAAA== \r\n\r\n\r\n"):
        payload, decoder = _decode(UNSIGNED, body, 2)
        assert payload == b"ab" and decoder.trailer_checksums() == {"CRC32": "AAAAAA=="}


def test_data_after_the_final_chunk_without_trailer_mode():
    wire = streaming_put("/bkt/k", [b"abc"])
    signed = sigv4.verify(wire.method, wire.path, wire.query, wire.headers, secret_for,
                          time.time())
    _refused("InvalidRequest", signed, wire.body + b"x-amz-checksum-crc32:AAAAAA==\r\n", 3)


def test_signed_chunks_hash_what_they_pass_on():
    # Each piece handed on belongs to the hash that the signature check covers.
    chunks = [bytes(range(256)) * 4096]  # 1 MiB in one chunk: four pieces
    wire = streaming_put("/bkt/k", chunks)
    signed = sigv4.verify(wire.method, wire.path, wire.query, wire.headers, secret_for,
                          time.time())
    pieces = list(chunked.Decoder(io.BytesIO(wire.body), signed, 1 << 20))
    assert len(pieces) == 4
    assert hashlib.sha256(b"".join(pieces)).digest() == hashlib.sha256(chunks[0]).digest()
