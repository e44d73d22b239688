"""S3 requests as clients sign them, for tests: boto3's exact wire form without a server, and
aws-chunked bodies signed chunk by chunk (which botocore does not do).

``capture("put_object", Bucket=..., Key=...)`` runs a real boto3 call and stops it at
``before-send``: the request is what boto3 would put on the socket (path and query exactly as
encoded, headers, body).  ``streaming_put`` signs a STREAMING-AWS4-HMAC-SHA256-PAYLOAD PUT with
botocore's signer and frames its body with :func:`aws_chunked`, a client-side encoder written
from the AWS documentation (checked against its example signatures in tests/unit/test_chunked).
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import urllib.parse

import boto3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

#: The AWS documentation's example credentials.
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ENDPOINT = "http://127.0.2.1:9000"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def secret_for(access_key: str) -> str | None:
    return SECRET_KEY if access_key == ACCESS_KEY else None


@dataclasses.dataclass
class Wire:
    """One request as sent: what a WSGI server hands the S3 app (header names lower case)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def url(self) -> str:
        return self.path + ("?" + self.query if self.query else "")


def to_wire(method: str, url: str, headers, body) -> Wire:
    split = urllib.parse.urlsplit(url)
    found = {name.lower(): value.decode() if isinstance(value, bytes) else value
             for name, value in headers.items()}
    # botocore signs ``host`` without a default port; http.client sends it the same way.
    default = {"http": 80, "https": 443}[split.scheme]
    host = split.hostname + (f":{split.port}" if split.port not in (None, default) else "")
    found.setdefault("host", host)
    if body is None:
        data = b""
    elif isinstance(body, (bytes, bytearray)):
        data = bytes(body)
    else:
        data = b"".join(iter(lambda: body.read(1 << 16), b""))
    return Wire(method, split.path, split.query, found, data)


class _Captured(Exception):
    pass


def client(endpoint: str = ENDPOINT, region: str = "us-east-1", secret: str = SECRET_KEY,
           **config):
    """A boto3 S3 client for :func:`capture` and :func:`presign`.  Presigned URLs are SigV4
    only with ``signature_version="s3v4"``: boto3 presigns with SigV2 by default."""
    config = {"s3": {"addressing_style": "path"}, "signature_version": "s3v4",
              "retries": {"total_max_attempts": 1}, **config}
    return boto3.client("s3", endpoint_url=endpoint, region_name=region,
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=secret,
                        config=Config(**config))


def capture(operation: str, s3=None, **params) -> Wire:
    """The request boto3 sends for ``s3.<operation>(**params)``."""
    s3 = s3 or client()

    def stop(request, **_):
        raise _Captured(request)

    s3.meta.events.register_first("before-send.s3", stop)
    try:
        getattr(s3, operation)(**params)
    except _Captured as captured:
        request = captured.args[0]
        return to_wire(request.method, request.url, request.headers, request.body)
    finally:
        s3.meta.events.unregister("before-send.s3", stop)
    raise AssertionError(f"{operation} sent nothing")


def presign(operation: str, expires: int = 3600, s3=None, **params) -> str:
    """The path and query of a presigned URL."""
    url = (s3 or client()).generate_presigned_url(operation, Params=params, ExpiresIn=expires)
    split = urllib.parse.urlsplit(url)
    return split.path + "?" + split.query


def _hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def signing_key(secret: str, date: str, region: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def aws_chunked(chunks: list[bytes], seed: str | None, key: bytes = b"", amz_date: str = "",
                scope: str = "", trailers: dict[str, str] | None = None,
                sign_trailer: bool = True) -> bytes:
    """An aws-chunked body of ``chunks`` (a final empty chunk is added).  With a ``seed``
    each chunk is signed, chained from it; without, chunk headers are bare sizes.  Trailers
    follow the final chunk, with an ``x-amz-trailer-signature`` when signed."""
    out = []
    previous = seed
    for data in list(chunks) + [b""]:
        size = f"{len(data):x}"
        if seed is None:
            out.append(f"{size}\r\n".encode())
        else:
            previous = _hmac_hex(key, "\n".join((
                "AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY_SHA256,
                hashlib.sha256(data).hexdigest())))
            out.append(f"{size};chunk-signature={previous}\r\n".encode())
        if data:
            out.append(data + b"\r\n")
    if trailers is None:
        out.append(b"\r\n")
        return b"".join(out)
    canonical = "".join(f"{name}:{value}\n" for name, value in trailers.items())
    out.extend(f"{name}:{value}\r\n".encode() for name, value in trailers.items())
    if seed is not None and sign_trailer:
        signature = _hmac_hex(key, "\n".join((
            "AWS4-HMAC-SHA256-TRAILER", amz_date, scope, previous,
            hashlib.sha256(canonical.encode()).hexdigest())))
        out.append(f"x-amz-trailer-signature:{signature}\r\n".encode())
    out.append(b"\r\n")
    return b"".join(out)


class PayloadAuth(S3SigV4Auth):
    """botocore's S3 signer with the ``x-amz-content-sha256`` value given."""

    def __init__(self, credentials, region: str, payload: str):
        super().__init__(credentials, "s3", region)
        self._payload = payload

    def payload(self, request):
        return self._payload


def streaming_put(path: str, chunks: list[bytes], *, trailers: dict[str, str] | None = None,
                  payload: str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", region: str = "us-east-1",
                  endpoint: str = ENDPOINT, secret: str = SECRET_KEY) -> Wire:
    """A signed aws-chunked PUT of ``chunks`` to ``path`` (already URL-encoded): headers
    signed by botocore, chunks (and trailers) signed by :func:`aws_chunked`."""
    headers = {"Content-Encoding": "aws-chunked", "X-Amz-Content-SHA256": payload,
               "X-Amz-Decoded-Content-Length": str(sum(map(len, chunks)))}
    if trailers:
        headers["X-Amz-Trailer"] = ",".join(trailers)
    request = AWSRequest(method="PUT", url=endpoint + path, headers=headers)
    PayloadAuth(Credentials(ACCESS_KEY, secret), region, payload).add_auth(request)
    seed = request.headers["Authorization"].rsplit("Signature=", 1)[1]
    amz_date = request.headers["X-Amz-Date"]
    signed = payload.startswith("STREAMING-AWS4-HMAC")
    body = aws_chunked(chunks, seed if signed else None, signing_key(secret, amz_date[:8], region),
                       amz_date, f"{amz_date[:8]}/{region}/s3/aws4_request", trailers)
    return to_wire("PUT", request.url, request.headers, body)
