"""SigV4 verification against botocore's signer (boto3's exact wire requests), the AWS
documentation's examples and curl's requests, with hostile keys and every refusal."""
import calendar
import hashlib
import hmac
import time

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from api_server.s3 import sigv4
from api_server.s3.errors import S3Error
from tests import s3_signing
from tests.s3_signing import ACCESS_KEY, SECRET_KEY, capture, presign, secret_for

HOSTILE_KEYS = ["a+b", "a b", "100%", "%2F", "%zz", "~tilde", "a//b", "/leading", "//", "end/",
                "ключ/ü", "日本語 キー", "q=1&x/y?z", "*!'()@$,;:", "tab\there", "x" * 1024]
AWS_EXAMPLE = calendar.timegm((2013, 5, 24, 0, 0, 0))


def _verify(wire, now=None, secrets=secret_for):
    return sigv4.verify(wire.method, wire.path, wire.query, wire.headers, secrets,
                        time.time() if now is None else now)


def _refused(code, wire, now=None, secrets=secret_for):
    with pytest.raises(S3Error) as caught:
        _verify(wire, now, secrets)
    assert caught.value.code == code, caught.value.message
    return caught.value


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_keys_verify_as_boto3_sends_them(key):
    put = capture("put_object", Bucket="bkt", Key=key, Body=b"hello",
                  Metadata={"note": "a  b"}, ContentType="text/plain")
    signed = _verify(put)
    assert signed.access_key == ACCESS_KEY
    assert signed.payload == put.headers["x-amz-content-sha256"]  # hex: botocore over http
    assert signed.payload_sha256 == signed.payload and not signed.chunked
    for operation, params in [
            ("get_object", {"Key": key, "Range": "bytes=0-1", "VersionId": "v/1+2="}),
            ("head_object", {"Key": key}),
            ("delete_object", {"Key": key}),
            ("copy_object", {"Key": key + "-copy", "CopySource": {"Bucket": "bkt", "Key": key}}),
            ("list_objects_v2", {"Prefix": key, "Delimiter": "/", "StartAfter": key,
                                 "ContinuationToken": "a=b/c+d=="}),
            ("list_objects", {"Prefix": key, "Marker": key}),
            ("create_multipart_upload", {"Key": key}),
            ("upload_part", {"Key": key, "UploadId": "u/+=", "PartNumber": 1, "Body": b"x"})]:
        _verify(capture(operation, Bucket="bkt", **params))


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_keys_verify_presigned(key):
    for operation in ("get_object", "put_object"):
        path, _, query = presign(operation, Bucket="bkt", Key=key).partition("?")
        wire = s3_signing.Wire("GET" if operation == "get_object" else "PUT", path, query,
                               {"host": "127.0.2.1:9000"}, b"")
        signed = _verify(wire)
        assert signed.presigned and signed.payload == sigv4.UNSIGNED_PAYLOAD


def test_any_region_and_virtual_host_style():
    for region in ("us-east-1", "eu-central-1", "garage", "tessera-local"):
        signed = _verify(capture("list_buckets", s3=s3_signing.client(region=region)))
        assert signed.region == region
        assert signed.scope.endswith(f"/{region}/s3/aws4_request")
    s3 = s3_signing.client(endpoint="http://s3.tessera.test:9000",
                           s3={"addressing_style": "virtual"})
    wire = capture("get_object", s3=s3, Bucket="bkt", Key="a b")
    assert wire.headers["host"] == "bkt.s3.tessera.test:9000" and wire.path == "/a%20b"
    _verify(wire)


def test_sigv4_query_auth_and_header_auth_from_botocore_directly():
    # Header values with runs of blanks, a signed header in odd case, an empty query value.
    credentials = Credentials(ACCESS_KEY, SECRET_KEY)
    request = AWSRequest(method="GET", url="http://127.0.2.1:9000/bkt/k%2Bx?uploads&a=&b=1",
                         headers={"X-Amz-Meta-Spaced": "  two   words  ",
                                  "Content-Type": "text/plain"})
    S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    wire = s3_signing.to_wire("GET", request.url, request.headers, None)
    assert _verify(wire).payload == sigv4.EMPTY_SHA256
    request = AWSRequest(method="GET", url="http://127.0.2.1:9000/bkt/k%2Bx?versionId=3")
    S3SigV4QueryAuth(credentials, "s3", "us-east-1", expires=60).add_auth(request)
    wire = s3_signing.to_wire("GET", request.url, {}, None)
    assert _verify(wire).presigned


def test_aws_documentation_examples():
    # sig-v4-header-based-auth.html, "Example: GET Object".
    get = s3_signing.Wire("GET", "/test.txt", "", {
        "Host": "examplebucket.s3.amazonaws.com", "Range": "bytes=0-9",
        "x-amz-content-sha256": sigv4.EMPTY_SHA256, "x-amz-date": "20130524T000000Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/"
                         "s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;"
                         "x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48"
                         "dd91039c6036bdb41"}, b"")
    assert _verify(get, AWS_EXAMPLE).payload == sigv4.EMPTY_SHA256
    # sigv4-query-string-auth.html, the presigned GET valid for a day.
    query = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524"
             "%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400"
             "&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f99533"
             "0da4c265957d157751f604d404")
    presigned = s3_signing.Wire("GET", "/test.txt", query,
                                {"Host": "examplebucket.s3.amazonaws.com"}, b"")
    assert _verify(presigned, AWS_EXAMPLE + 86400).presigned
    _refused("AccessDenied", presigned, AWS_EXAMPLE + 86401)


def test_curl_7_88_requests():
    # Captured from Debian's curl 7.88.1 --aws-sigv4 "aws:amz:us-east-1:s3" --user AK:SK: it
    # leaves "+" and "/" unencoded, signs its query unsorted as sent, and sends no
    # x-amz-content-sha256 on a GET (it signed the empty body's hash).
    def secrets(key):
        return "SK" if key == "AK" else None

    get = s3_signing.Wire("GET", "/b/a+b%20c", "x=1&prefix=a/b", {
        "Host": "127.0.3.9:44537", "X-Amz-Date": "20261203T085458Z", "User-Agent": "curl/7.88.1",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AK/20261203/us-east-1/s3/aws4_request, "
                         "SignedHeaders=host;x-amz-date, Signature=0763b6778ada6da7f4a87c4f9f4cb"
                         "91b8615e5b1566bb0a6beae5eee7983dce4"}, b"")
    now = calendar.timegm((2026, 12, 3, 8, 55, 0))
    assert _verify(get, now, secrets).payload == sigv4.EMPTY_SHA256
    put = s3_signing.Wire("PUT", "/b/k%20x", "", {
        "Host": "127.0.3.9:33099", "X-Amz-Date": "20261203T090043Z",
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "Content-Length": "6",
        "Expect": "100-continue",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AK/20261203/us-east-1/s3/aws4_request, "
                         "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=0a62b424"
                         "25ec6a7aab686141357b43667cc1907ae5cd5173dde5e83ee8f44b26"}, b"")
    assert _verify(put, now, secrets).payload == sigv4.UNSIGNED_PAYLOAD


def test_anonymous_is_none():
    assert sigv4.verify("GET", "/bkt/key", "versionId=1", {"Host": "h"}, secret_for,
                        time.time()) is None


def test_signature_version_2_is_refused():
    # boto3 presigns with SigV2 unless told signature_version="s3v4".
    v2 = s3_signing.client(signature_version="s3").generate_presigned_url(
        "get_object", Params={"Bucket": "bkt", "Key": "k"})
    path, _, query = v2.partition("127.0.2.1:9000")[2].partition("?")
    wire = s3_signing.Wire("GET", path, query, {"host": "127.0.2.1:9000"}, b"")
    assert "AWSAccessKeyId=" in query
    assert _refused("InvalidRequest", wire).status == 400


def test_payload_modes():
    for mode in sigv4.PAYLOAD_MODES:
        trailers = {"x-amz-checksum-crc32": "AAAAAA=="} if mode.endswith("TRAILER") else None
        signed = _verify(s3_signing.streaming_put("/bkt/k", [b"x"], payload=mode,
                                                  trailers=trailers))
        assert signed.payload == mode and signed.payload_sha256 is None
        assert signed.chunked == mode.startswith("STREAMING-")
        assert signed.signed_chunks == mode.startswith("STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
        assert signed.has_trailer == (trailers is not None)
        assert signed.trailer == (("x-amz-checksum-crc32",) if trailers else ())
    digest = hashlib.sha256(b"x").hexdigest().upper()
    request = AWSRequest(method="PUT", url="http://127.0.2.1:9000/bkt/k",
                         headers={"X-Amz-Content-SHA256": digest})
    s3_signing.PayloadAuth(Credentials(ACCESS_KEY, SECRET_KEY), "us-east-1",
                           digest).add_auth(request)
    signed = _verify(s3_signing.to_wire("PUT", request.url, request.headers, b"x"))
    assert signed.payload == signed.payload_sha256 == digest.lower()


def test_malformed_content_sha256():
    wire = capture("get_object", Bucket="bkt", Key="k")
    wire.headers["x-amz-content-sha256"] = "SHA256-PLEASE"
    assert _refused("InvalidArgument", wire).status == 400
    wire.headers["x-amz-content-sha256"] = "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"
    assert _refused("NotImplemented", wire).status == 501


def test_wrong_secret_and_unknown_key():
    wire = capture("get_object", s3=s3_signing.client(secret="not the secret"), Bucket="b",
                   Key="k")
    error = _refused("SignatureDoesNotMatch", wire)
    assert error.status == 403 and error.extra["AWSAccessKeyId"] == ACCESS_KEY
    assert error.extra["CanonicalRequest"].startswith("GET\n/b/k\n")
    assert error.extra["StringToSign"].startswith("AWS4-HMAC-SHA256\n")
    error = _refused("InvalidAccessKeyId", capture("get_object", Bucket="b", Key="k"),
                     secrets=lambda key: None)
    assert error.status == 403


@pytest.mark.parametrize("change", ["method", "path", "query", "header", "payload", "date",
                                    "signature", "drop-query", "encoding"])
def test_tampered_requests_fail(change):
    wire = capture("put_object", Bucket="bkt", Key="a b", Body=b"hello",
                   Metadata={"m": "v"})
    if change == "method":
        wire.method = "POST"
    elif change == "path":
        wire.path = "/bkt/a%20c"
    elif change == "query":
        wire.query = "acl"
    elif change == "header":
        wire.headers["x-amz-meta-m"] = "w"
    elif change == "payload":
        wire.headers["x-amz-content-sha256"] = sigv4.UNSIGNED_PAYLOAD
    elif change == "date":
        wire.headers["x-amz-date"] = wire.headers["x-amz-date"][:-3] + "00Z"
    elif change == "signature":
        auth = wire.headers["authorization"]
        wire.headers["authorization"] = auth[:-1] + ("0" if auth[-1] != "0" else "1")
    elif change == "drop-query":
        wire = capture("list_objects_v2", Bucket="bkt", Prefix="p")
        wire.query = wire.query.replace("prefix=p&", "")
    elif change == "encoding":
        wire.path = "/bkt/a+b"  # the same key to a sloppy router, not to the signature
    _refused("SignatureDoesNotMatch", wire)


def test_unsigned_amz_header_is_refused():
    wire = capture("put_object", Bucket="bkt", Key="k", Body=b"x")
    wire.headers["x-amz-metadata-directive"] = "REPLACE"
    error = _refused("AccessDenied", wire)
    assert error.extra["HeadersNotSigned"] == "x-amz-metadata-directive"
    path, _, query = presign("get_object", Bucket="bkt", Key="k").partition("?")
    wire = s3_signing.Wire("GET", path, query, {"host": "127.0.2.1:9000", "X-Amz-Acl": "x"}, b"")
    assert _refused("AccessDenied", wire).extra["HeadersNotSigned"] == "x-amz-acl"


def test_clock_skew():
    wire = capture("get_object", Bucket="bkt", Key="k")
    signed_at = calendar.timegm(time.strptime(wire.headers["x-amz-date"], "%Y%m%dT%H%M%SZ"))
    for delta in (-sigv4.MAX_SKEW, 0, sigv4.MAX_SKEW):
        _verify(wire, signed_at + delta)
    for delta in (-sigv4.MAX_SKEW - 1, sigv4.MAX_SKEW + 1, 86400):
        error = _refused("RequestTimeTooSkewed", wire, signed_at + delta)
        assert error.status == 403 and error.extra["RequestTime"] == wire.headers["x-amz-date"]


def test_date_header_instead_of_x_amz_date():
    # Only Date: sign the request by hand as the AWS documentation describes.
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
    key = s3_signing.signing_key(SECRET_KEY, stamp[:8], "us-east-1")
    scope = f"{stamp[:8]}/us-east-1/s3/aws4_request"
    canonical = "\n".join(["GET", "/bkt/k", "", f"date:{date}\nhost:h\n", "date;host",
                           sigv4.EMPTY_SHA256])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers = {"Host": "h", "Date": date, "Authorization":
               f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, SignedHeaders=date;host, "
               f"Signature={signature}"}
    wire = s3_signing.Wire("GET", "/bkt/k", "", headers, b"")
    assert _verify(wire).amz_date == stamp
    del headers["Date"]
    _refused("AccessDenied", wire)


def test_presigned_expiry():
    path, _, query = presign("get_object", expires=60, Bucket="bkt", Key="k").partition("?")
    wire = s3_signing.Wire("GET", path, query, {"host": "127.0.2.1:9000"}, b"")
    signed_at = calendar.timegm(time.strptime(_param(query, "X-Amz-Date"), "%Y%m%dT%H%M%SZ"))
    _verify(wire, signed_at + 60)
    _verify(wire, signed_at - sigv4.MAX_SKEW)
    error = _refused("AccessDenied", wire, signed_at + 61)
    assert error.message == "Request has expired" and error.status == 403
    assert _refused("AccessDenied", wire, signed_at - sigv4.MAX_SKEW - 1).message == (
        "Request is not valid yet")


def _param(query, name):
    return dict(item.split("=", 1) for item in query.split("&"))[name]


@pytest.mark.parametrize("expires", ["0", "604801", "-1", "abc", "1e3", ""])
def test_presigned_expires_out_of_range(expires):
    path, _, query = presign("get_object", Bucket="bkt", Key="k").partition("?")
    query = query.replace(f"X-Amz-Expires={_param(query, 'X-Amz-Expires')}",
                          f"X-Amz-Expires={expires}")
    wire = s3_signing.Wire("GET", path, query, {"host": "127.0.2.1:9000"}, b"")
    assert _refused("AuthorizationQueryParametersError", wire).status == 400


def test_presigned_a_week_is_accepted():
    path, _, query = presign("get_object", expires=604800, Bucket="b", Key="k").partition("?")
    _verify(s3_signing.Wire("GET", path, query, {"host": "127.0.2.1:9000"}, b""))


@pytest.mark.parametrize("drop", ["X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders",
                                  "X-Amz-Signature", "X-Amz-Expires", "X-Amz-Algorithm"])
def test_presigned_missing_parameter(drop):
    path, _, query = presign("get_object", Bucket="bkt", Key="k").partition("?")
    query = "&".join(item for item in query.split("&") if not item.startswith(drop + "="))
    wire = s3_signing.Wire("GET", path, query, {"host": "127.0.2.1:9000"}, b"")
    _refused("AuthorizationQueryParametersError", wire)


def test_presigned_and_header_together():
    path, _, query = presign("get_object", Bucket="bkt", Key="k").partition("?")
    wire = capture("get_object", Bucket="bkt", Key="k")
    wire.query = query
    _refused("InvalidArgument", wire)


@pytest.mark.parametrize("authorization, code", [
    ("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00", "AuthorizationHeaderMalformed"),
    ("AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws4_request, Signature=0",
     "AuthorizationHeaderMalformed"),
    ("AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/ec2/aws4_request, "
     "SignedHeaders=host, Signature=00", "AuthorizationHeaderMalformed"),
    ("AWS4-HMAC-SHA256 Credential=AKID/2013-05-24/us-east-1/s3/aws4_request, "
     "SignedHeaders=host, Signature=00", "AuthorizationHeaderMalformed"),
    ("AWS4-HMAC-SHA256 Credential=AKID/20130524/us-east-1/s3/aws5_request, "
     "SignedHeaders=host, Signature=00", "AuthorizationHeaderMalformed"),
    ("AWS4-HMAC-SHA256 Credential=AKID/20130524/s3/aws4_request, SignedHeaders=host, "
     "Signature=00", "AuthorizationHeaderMalformed"),
    ("AWS4-HMAC-SHA256 Credential=AKID/20130525/us-east-1/s3/aws4_request, "
     "SignedHeaders=host, Signature=00", "AuthorizationHeaderMalformed"),
    ("AWS AKID:c2lnbmF0dXJl", "InvalidRequest"),
    ("Bearer token", "InvalidArgument"),
    ("AWS4-ECDSA-P256-SHA256 Credential=AKID/20130524/s3/aws4_request, SignedHeaders=host, "
     "Signature=00", "NotImplemented"),
])
def test_malformed_authorization(authorization, code):
    wire = s3_signing.Wire("GET", "/b/k", "", {"Host": "h", "X-Amz-Date": "20130524T000000Z",
                                               "Authorization": authorization}, b"")
    _refused(code, wire, AWS_EXAMPLE, secrets=lambda key: "secret")


def test_host_must_be_signed():
    credentials = Credentials(ACCESS_KEY, SECRET_KEY)
    request = AWSRequest(method="GET", url="http://127.0.2.1:9000/bkt/k")
    S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    wire = s3_signing.to_wire("GET", request.url, request.headers, None)
    auth = wire.headers["authorization"]
    wire.headers["authorization"] = auth.replace("SignedHeaders=host;", "SignedHeaders=")
    assert "host" in _refused("AccessDenied", wire).extra["HeadersNotSigned"]


def test_canonical_forms():
    assert sigv4.canonical_uri("/b/a+b%20c/%7e/%2f//x") == "/b/a%2Bb%20c/~/%2F//x"
    assert sigv4.canonical_uri(b"/b/\xc3\xa9") == "/b/%C3%A9"
    assert sigv4.canonical_uri("/b/\u00c3\u00a9") == "/b/%C3%A9"  # WSGI's latin-1 str
    assert sigv4.canonical_uri("/b/ключ") == "/b/%D0%BA%D0%BB%D1%8E%D1%87"
    assert sigv4.canonical_query("uploads") == "uploads="
    assert sigv4.canonical_query("b=2&a=3&a=1&c") == "a=1&a=3&b=2&c="
    assert sigv4.canonical_query("prefix=a/b=c&x=a+b%2Bc") == "prefix=a%2Fb%3Dc&x=a%20b%2Bc"
    assert sigv4.canonical_query("X-Amz-Signature=abc&x=1", ("X-Amz-Signature",)) == "x=1"
    assert sigv4.canonical_query("&&a=1&") == "a=1"


def test_what_lib_sigv4_signs_the_verifier_accepts():
    """The S3 origin fetcher's signer (lib/sigv4.py) and the S3 API's verifier share their
    canonical forms: a signed GET of an awkward key verifies, a changed path does not."""
    from lib.sigv4 import sign_headers

    now = 1_790_000_000
    path = "/bkt/dir/a%20b%2Bc%C3%A9"
    headers = sign_headers("GET", "127.0.3.9:9000", path, "", ACCESS_KEY, SECRET_KEY,
                           "us-east-1", now=now)
    signed = sigv4.verify("GET", path, "", headers, secret_for, now)
    assert signed.access_key == ACCESS_KEY and signed.payload == "UNSIGNED-PAYLOAD"
    with pytest.raises(S3Error) as error:
        sigv4.verify("GET", path + "x", "", headers, secret_for, now)
    assert error.value.code == "SignatureDoesNotMatch"
