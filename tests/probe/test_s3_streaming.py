"""aws-chunked bodies on the wire: signed chunks, trailing checksums, tampering, and boto3 over
HTTPS (a TLS front on 127.0.3.1 with a self-signed certificate), where it sends trailers."""
from __future__ import annotations

import base64
import os
import socket
import ssl
import subprocess
import threading
import uuid
import zlib
from contextlib import contextmanager

import pytest
import requests

from tests.probe.conftest import s3_client, s3_endpoint
from tests.s3_signing import streaming_put


def send(cluster, wire) -> requests.Response:
    headers = {k: v for k, v in wire.headers.items() if k != "host"}
    headers["Host"] = wire.headers["host"]
    return requests.put(f"{s3_endpoint(cluster)}{wire.url}", data=wire.body, headers=headers,
                        timeout=60)


@pytest.fixture
def bucket(s3):
    name = f"st-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    yield name
    for item in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=item["Key"])
    s3.delete_bucket(Bucket=name)


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _wire(cluster, path, chunks, **kw):
    return streaming_put(path, chunks, endpoint=s3_endpoint(cluster), **kw)


def test_signed_chunks_store_the_decoded_body(cluster, s3, bucket):
    chunks = [os.urandom(65536), os.urandom(65536), os.urandom(1234)]
    answer = send(cluster, _wire(cluster, f"/{bucket}/signed", chunks))
    assert answer.status_code == 200, answer.text
    got = s3.get_object(Bucket=bucket, Key="signed")
    assert got["Body"].read() == b"".join(chunks)
    assert "aws-chunked" not in got.get("ContentEncoding", "")


def test_a_large_chunked_body_streams_under_a_provisional_name(cluster, s3, bucket):
    chunks = [os.urandom(256 * 1024) for _ in range(10)]       # 2.5 MiB: several blocks
    answer = send(cluster, _wire(cluster, f"/{bucket}/large", chunks,
                                 payload="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                                 trailers={"x-amz-checksum-crc32":
                                           crc32_b64(b"".join(chunks))}))
    assert answer.status_code == 200, answer.text
    assert s3.get_object(Bucket=bucket, Key="large")["Body"].read() == b"".join(chunks)
    again = send(cluster, _wire(cluster, f"/{bucket}/large-again", chunks))   # deduplicated
    assert again.status_code == 200 and again.headers["ETag"] == answer.headers["ETag"]


def test_a_tampered_chunk_stores_nothing(cluster, s3, bucket):
    chunks = [b"a" * 70000, b"b" * 100]
    wire = _wire(cluster, f"/{bucket}/tampered", chunks)
    wire.body = wire.body.replace(b"b" * 100, b"c" * 100)
    answer = send(cluster, wire)
    assert answer.status_code == 403 and b"SignatureDoesNotMatch" in answer.content
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


@pytest.mark.parametrize("payload", ["STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                                     "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"])
def test_trailing_checksums_are_verified(cluster, s3, bucket, payload):
    chunks = [os.urandom(9000), os.urandom(10)]
    good = _wire(cluster, f"/{bucket}/trailer", chunks, payload=payload,
                 trailers={"x-amz-checksum-crc32": crc32_b64(b"".join(chunks))})
    assert send(cluster, good).status_code == 200
    head = s3.head_object(Bucket=bucket, Key="trailer", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc32_b64(b"".join(chunks))
    bad = _wire(cluster, f"/{bucket}/bad-trailer", chunks, payload=payload,
                trailers={"x-amz-checksum-crc32": crc32_b64(b"other")})
    answer = send(cluster, bad)
    assert answer.status_code == 400 and b"BadDigest" in answer.content
    with pytest.raises(Exception):
        s3.head_object(Bucket=bucket, Key="bad-trailer")


def test_missing_decoded_length_and_short_bodies(cluster, s3, bucket):
    wire = _wire(cluster, f"/{bucket}/nolength", [b"x" * 10])
    del wire.headers["x-amz-decoded-content-length"]
    assert send(cluster, wire).status_code in (403, 411)     # the header is signed, too
    short = _wire(cluster, f"/{bucket}/short", [b"x" * 5000])
    short.body = short.body[:len(short.body) // 2]
    answer = send(cluster, short)
    assert answer.status_code in (400, 403), answer.text
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


# -- boto3 over HTTPS ------------------------------------------------------------------------------

@contextmanager
def tls_front(target: str, workdir):
    """A TLS listener on 127.0.3.1 that relays each connection to ``target``."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.3.1", "-addext", "subjectAltName=IP:127.0.3.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.3.1", 0))
    stop = threading.Event()
    host, port = target.rsplit(":", 1)

    def pipe(src, dst):
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except (socket.timeout, OSError):
                continue
            try:
                tls = context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                raw.close()
                continue
            upstream = socket.create_connection((host, int(port)))
            threading.Thread(target=pipe, args=(tls, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, tls), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.3.1:{listener.getsockname()[1]}", str(cert)
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_boto3_over_https_sends_trailers_and_they_verify(cluster, bucket, tmp_path):
    import boto3
    from botocore.config import Config as BotoConfig

    from lib.config import Config

    with tls_front(cluster.api[0].env["S3_LISTEN_ADDRESS"], tmp_path) as (url, cert):
        s3 = boto3.client("s3", endpoint_url=url, verify=cert, region_name="us-east-1",
                          aws_access_key_id=Config.s3_access_key,
                          aws_secret_access_key=Config.s3_secret_key,
                          config=BotoConfig(s3={"addressing_style": "path"},
                                            retries={"max_attempts": 1}))
        seen = []
        s3.meta.events.register("before-send.s3", lambda request, **_: seen.append(
            request.headers.get("x-amz-content-sha256")))
        data = os.urandom(3 * 1024 * 1024 + 5)
        s3.put_object(Bucket=bucket, Key="tls", Body=data)
        assert seen[-1] in (b"STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                            "STREAMING-UNSIGNED-PAYLOAD-TRAILER"), seen
        assert s3.get_object(Bucket=bucket, Key="tls")["Body"].read() == data
        for algorithm in ("CRC32C", "SHA256", "CRC64NVME"):
            s3.put_object(Bucket=bucket, Key=f"tls-{algorithm}", Body=b"x" * 100_000,
                          ChecksumAlgorithm=algorithm)
    assert s3_client(cluster).head_object(Bucket=bucket, Key="tls")["ContentLength"] == \
        len(data)
