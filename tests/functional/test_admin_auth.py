"""Admin credentials other than the token: an S3 key marked ``admin = true``, by a SigV4
signed request; and BOOK_API_TOKEN on the book API.  Refused requests change nothing."""
from __future__ import annotations

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config as BotoConfig
from botocore.credentials import Credentials

from api_server import create_app
from lib.config import Config
from lib.rabbitmq import Bus
from tests.conftest import sha256_b64
from tests.openapi_check import check

HOST = "127.0.2.1:1"
ADMIN, ADMIN_SECRET = "ADMINKEY", "admin-secret"
PLAIN, PLAIN_SECRET = "PLAINKEY", "plain-secret"


@pytest.fixture
def app(tmp_path):
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[ops]\naws_access_key_id = {ADMIN}\n"
                           f"aws_secret_access_key = {ADMIN_SECRET}\nadmin = true\n"
                           f"[user]\naws_access_key_id = {PLAIN}\n"
                           f"aws_secret_access_key = {PLAIN_SECRET}\n")
    config = Config(listen_address=HOST, metadata_db=tmp_path / "md.db",
                    s3_credentials_file=credentials, book_api_token="book-token")
    made = create_app(config, bus=Bus(config.rabbitmq_server, "never-started"))
    yield made
    made.extensions["tessera.stop"]()


def signed(method: str, path: str, key: str, secret: str, body: bytes = b"",
           unsigned_payload: bool = False) -> dict[str, str]:
    """Headers of a SigV4-signed request as botocore signs it."""
    request = AWSRequest(method=method, url=f"http://{HOST}{path}", data=body)
    request.context["client_config"] = BotoConfig(
        s3={"payload_signing_enabled": not unsigned_payload})
    S3SigV4Auth(Credentials(key, secret), "s3", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def call(app, method: str, path: str, headers: dict[str, str], body: bytes = b""):
    response = app.test_client().open(path, method=method, headers=headers, data=body,
                                      base_url=f"http://{HOST}")
    if path.startswith("/api/v1/"):
        check(method, path, response.status_code, response.get_json())
    return response


def test_an_admin_s3_key_may_call_the_management_api(app):
    ok = call(app, "GET", "/api/v1/stats", signed("GET", "/api/v1/stats", ADMIN, ADMIN_SECRET))
    assert ok.status_code == 200 and ok.json["buckets"] == 1
    listed = call(app, "GET", "/api/v1/objects?prefix=a&limit=5",
                  signed("GET", "/api/v1/objects?prefix=a&limit=5", ADMIN, ADMIN_SECRET))
    assert listed.status_code == 200


def test_other_keys_and_bad_signatures_are_refused_and_change_nothing(app):
    path = "/api/v1/objects?key=k"
    plain = call(app, "POST", path, signed("POST", path, PLAIN, PLAIN_SECRET, b"x", True), b"x")
    assert plain.status_code == 403 and plain.json["error"]["code"] == "NotAdmin"
    forged = call(app, "POST", path, signed("POST", path, ADMIN, "not-the-secret", b"x", True),
                  b"x")
    assert forged.status_code == 403 and forged.json["error"]["code"] == "SignatureDoesNotMatch"
    unknown = call(app, "GET", "/api/v1/stats", signed("GET", "/api/v1/stats", "NOBODY", "s"))
    assert unknown.status_code == 403 and unknown.json["error"]["code"] == "InvalidAccessKeyId"
    hashed = call(app, "POST", path, signed("POST", path, ADMIN, ADMIN_SECRET, b"x"), b"x")
    assert hashed.status_code == 400
    # No token configured: the bearer route stays closed even with admin keys present.
    bearer = call(app, "GET", "/api/v1/stats", {"Authorization": "Bearer anything"})
    assert bearer.status_code == 403 and bearer.json["error"]["code"] == "AdminDisabled"
    assert app.extensions["tessera.api"].metadata.version("book", "k") is None


def test_a_signed_upload_with_unsigned_payload_reaches_the_object_layer(app):
    path = "/api/v1/objects?key=k"
    response = call(app, "POST", path, signed("POST", path, ADMIN, ADMIN_SECRET, b"x", True),
                    b"x")
    assert response.status_code == 503      # past the gate: no data servers in this test
    assert response.json["error"]["code"] == "NotEnoughDataServers"


def test_book_api_token_guards_writes_and_deletes_not_reads(app):
    data = b"hello"
    digest = {"Digest": f"SHA-256={sha256_b64(data)}"}
    for method, path in [("PUT", "/objects/a"), ("DELETE", "/objects/a"),
                         ("POST", "/objects/a"), ("PUT", "/temp/sometoken"),
                         ("DELETE", "/temp/sometoken")]:
        missing = call(app, method, path, digest, data)
        assert missing.status_code == 401 and "Bearer" in missing.headers["WWW-Authenticate"]
        wrong = call(app, method, path, {**digest, "Authorization": "Bearer nope"}, data)
        assert wrong.status_code == 403
    assert app.extensions["tessera.api"].metadata.version("book", "a") is None
    assert call(app, "GET", "/objects/a", {}).status_code == 404           # reads stay open
    assert call(app, "GET", "/versions/a", {}).status_code == 200
    allowed = call(app, "PUT", "/objects/a", {**digest, "Authorization": "Bearer book-token"},
                   data)
    assert allowed.status_code == 503       # past the guard: no data servers in this test
