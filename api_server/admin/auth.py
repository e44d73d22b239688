"""Who may use the management API: the holder of ``ADMIN_TOKEN`` (``Authorization: Bearer``),
or an S3 key marked ``admin = true`` in ``S3_CREDENTIALS_FILE``, by a SigV4-signed request
(verified by the S3 API's own ``api_server/s3/sigv4.py``).

Without ``ADMIN_TOKEN`` and without admin keys the management API is closed (403 naming the
setting): an operator turns it on deliberately.  Comparisons are constant-time.  A signed
admin request declares no body (the empty payload hash) or ``UNSIGNED-PAYLOAD``: its body, if
any, is hashed by the object layer like any upload's.
"""
from __future__ import annotations

import dataclasses
import hmac
import time
from collections.abc import Mapping

from api_server.s3 import sigv4
from api_server.s3.auth import Credentials
from api_server.s3.errors import S3Error
from lib.config import Config


@dataclasses.dataclass(frozen=True)
class SignedRequest:
    """What a SigV4 check needs of a request besides its headers."""

    method: str
    #: Path and query as sent, still percent-encoded.
    raw_path: str
    raw_query: str
    has_body: bool
    credentials: Credentials


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    scheme, _, token = (headers.get("Authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def is_signed(headers: Mapping[str, str]) -> bool:
    return (headers.get("Authorization") or "").startswith(sigv4.ALGORITHM)


def check_admin(config: Config, headers: Mapping[str, str],
                signed: SignedRequest | None = None) -> tuple[int, str, str] | None:
    """None if the request carries admin credentials, else (status, code, message)."""
    if signed is not None and is_signed(headers):
        return _check_signature(headers, signed)
    if not config.admin_token:
        return 403, "AdminDisabled", "the management API is off: set ADMIN_TOKEN to use it"
    token = bearer(headers)
    if token is None:
        return 401, "Unauthorized", "admin credentials required: Authorization: Bearer <token>"
    if not hmac.compare_digest(token.encode(), config.admin_token.encode()):
        return 403, "Forbidden", "wrong admin token"
    return None


def _check_signature(headers: Mapping[str, str],
                     signed: SignedRequest) -> tuple[int, str, str] | None:
    try:
        verified = sigv4.verify(signed.method, signed.raw_path, signed.raw_query, headers,
                                signed.credentials.secret_for, time.time())
    except S3Error as exc:
        return exc.status, exc.code, exc.message
    if verified is None:                           # pragma: no cover - is_signed said it is
        return 401, "Unauthorized", "admin credentials required"
    if verified.access_key not in signed.credentials.admins:
        return 403, "NotAdmin", f"S3 key {verified.access_key} is not marked admin"
    if verified.payload == sigv4.EMPTY_SHA256 and signed.has_body:
        return 400, "InvalidArgument", ("a signed admin request with a body must sign "
                                        "x-amz-content-sha256: UNSIGNED-PAYLOAD")
    if verified.payload not in (sigv4.EMPTY_SHA256, sigv4.UNSIGNED_PAYLOAD):
        return 400, "InvalidArgument", ("sign admin requests with the empty payload hash or "
                                        "x-amz-content-sha256: UNSIGNED-PAYLOAD")
    return None
