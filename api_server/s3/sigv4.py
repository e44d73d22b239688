"""AWS Signature Version 4 for S3: who signed a request, from its raw method, path, query and
headers, by the Authorization header or a presigned query.  Standard library only; the
canonical forms and the signing key are ``lib/sigv4.py``'s (which also signs, as a client).

API::

    signed = verify(method, raw_path, raw_query, headers, secret_for, now)
    # None when the request carries no authentication at all (the caller decides; S3 answers
    # AccessDenied); otherwise a Signed, or an S3Error:
    #   400 AuthorizationHeaderMalformed, AuthorizationQueryParametersError, InvalidArgument,
    #       InvalidRequest (SigV2, by header or presigned);
    #   403 InvalidAccessKeyId, RequestTimeTooSkewed, SignatureDoesNotMatch, AccessDenied
    #       (expired, not yet valid, an x-amz-* header not signed);
    #   501 NotImplemented (SigV4A, the ECDSA variant).
    signed.access_key, signed.payload     # payload: a lower-case hex SHA-256 or one of
                                          # PAYLOAD_MODES (``x-amz-content-sha256``)
    signed.chunk_signature(previous, sha256_hex)   # what ``chunked`` checks each chunk against

Canonicalisation, and why:

- **URI.** S3 signs the path encoded once and never normalised.  Each ``/``-separated segment
  of the raw path (gunicorn's ``RAW_URI``) is percent-decoded and re-encoded with the AWS
  rules (unreserved ``A-Za-z0-9-._~`` kept, every other byte ``%XX`` upper case), so ``a//b``,
  a leading ``/`` and ``%2F`` inside a segment stay as sent, ``+`` is a plus (``%2B``), and a
  client that left ``!`` or ``é`` unencoded on the wire still verifies.  When that does not
  match, the raw path exactly as sent is tried too (clients that sign what they send).
- **Query.** From the raw query string: each ``name[=value]`` is decoded (``+`` is a space,
  ``%20``, as form encoding and MinIO have it) and re-encoded with the same rules (``/`` and
  ``=`` in a value become ``%2F`` and ``%3D``), a bare ``uploads`` becomes ``uploads=``, then
  the pairs are sorted by encoded name, then value.  The query exactly as sent is tried too
  (curl 7.88 signs it so); a signature over the bytes as sent authenticates them as well as
  one over their canonical form does.
- **Headers.** The signed ones, names lower case, values trimmed with inner runs of blanks
  collapsed; a signed header the request lacks counts as empty.  Every ``x-amz-*`` header the
  request carries must be signed (as S3 requires), so none can be added to a replayed request.
- **Payload.** ``x-amz-content-sha256`` as sent ends the canonical request.  Without it a
  presigned URL signed ``UNSIGNED-PAYLOAD`` and a header-signed request the empty body's hash
  (curl 7.88 sends none: it works for bodiless requests; a curl PUT adds
  ``-H "x-amz-content-sha256: UNSIGNED-PAYLOAD"``).  SigV2 (``AWS key:sig``, or the
  ``AWSAccessKeyId``/``Signature`` query boto3 presigns with unless configured ``s3v4``) is
  refused with InvalidRequest.

A WSGI path or query ``str`` holds the raw bytes decoded as latin-1 (PEP 3333); it is encoded
back the same way (or as UTF-8 if it is not latin-1), ``bytes`` are taken as they are.
"""
from __future__ import annotations

import calendar
import dataclasses
import email.utils
import hashlib
import hmac
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping

from api_server.s3.errors import S3Error
from lib.sigv4 import (ALGORITHM, EMPTY_SHA256, SERVICE, TERMINATOR, UNSIGNED_PAYLOAD,
                       canonical_query, canonical_uri, signing_key, string_to_sign)
from lib.sigv4 import canonical_headers as _canonical_headers
from lib.sigv4 import query_pairs as _query_pairs
from lib.sigv4 import raw_bytes as _raw_bytes

STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
#: The non-hash values of ``x-amz-content-sha256`` this server accepts.
PAYLOAD_MODES = (UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER,
                 STREAMING_UNSIGNED_TRAILER)
#: SigV4A (ECDSA) streaming modes: recognised, answered 501.
_ECDSA_MODES = ("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
                "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER")
_ECDSA_ALGORITHM = "AWS4-ECDSA-P256-SHA256"

#: Largest difference between the request's time and ours (S3, MinIO and Swift: 15 minutes).
MAX_SKEW = 15 * 60
#: Longest lifetime of a presigned URL: a week.
MAX_EXPIRES = 7 * 24 * 3600

_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
_HEX_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_PRESIGN_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature",
                   "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Expires")


@dataclasses.dataclass(frozen=True)
class Signed:
    """A request whose signature verified: who sent it and what its body claims to be."""

    access_key: str
    #: Key derived from the secret for ``scope``; signs the chunks and the trailer.
    signing_key: bytes = dataclasses.field(repr=False)
    #: ``<yyyymmdd>/<region>/s3/aws4_request``.
    scope: str
    #: The request's time as signed, ``yyyymmddThhmmssZ``.
    amz_date: str
    #: The request's signature: the seed of the chunk signature chain.
    signature: str
    #: ``x-amz-content-sha256``: a lower-case hex SHA-256 or one of PAYLOAD_MODES.
    payload: str
    region: str
    presigned: bool = False
    #: ``x-amz-trailer``: the trailing header names the body announces, lower case.
    trailer: tuple[str, ...] = ()

    @property
    def payload_sha256(self) -> str | None:
        """The hex SHA-256 the body must have, if the client declared one."""
        return None if self.payload in PAYLOAD_MODES else self.payload

    @property
    def chunked(self) -> bool:
        """The body is aws-chunked (``chunked.Decoder`` reads it)."""
        return self.payload.startswith("STREAMING-")

    @property
    def signed_chunks(self) -> bool:
        """Every aws-chunked chunk carries a signature chained from :attr:`signature`."""
        return self.payload in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER)

    @property
    def has_trailer(self) -> bool:
        """The aws-chunked body ends with trailing headers (checksums)."""
        return self.payload in (STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)

    def sign(self, string_to_sign: str) -> str:
        return hmac.new(self.signing_key, string_to_sign.encode(), hashlib.sha256).hexdigest()

    def chunk_signature(self, previous: str, sha256_hex: str) -> str:
        """The signature of a chunk whose data hashes to ``sha256_hex``, following the
        signature ``previous`` (the seed for the first chunk)."""
        return self.sign("\n".join(("AWS4-HMAC-SHA256-PAYLOAD", self.amz_date, self.scope,
                                    previous, EMPTY_SHA256, sha256_hex)))

    def trailer_signature(self, previous: str, sha256_hex: str) -> str:
        """The signature of trailing headers whose canonical form (``name:value\\n`` each)
        hashes to ``sha256_hex``, following the final chunk's signature ``previous``."""
        return self.sign("\n".join(("AWS4-HMAC-SHA256-TRAILER", self.amz_date, self.scope,
                                    previous, sha256_hex)))


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _malformed_header(detail: str) -> S3Error:
    return S3Error("AuthorizationHeaderMalformed",
                   f"The authorization header is malformed; {detail}", 400)


def _malformed_query(detail: str) -> S3Error:
    return S3Error("AuthorizationQueryParametersError", detail, 400)


def _version_2() -> S3Error:
    return S3Error("InvalidRequest", "The authorization mechanism you have provided is not "
                   "supported. Please use AWS4-HMAC-SHA256.", 400)


def _not_implemented(what: str) -> S3Error:
    return S3Error("NotImplemented", f"{what} is not implemented by this server", 501)


@dataclasses.dataclass
class _Claim:
    """What a request says about its signature, before anything is checked."""

    access_key: str
    date: str
    region: str
    signed_headers: str
    signature: str
    amz_date: str
    presigned: bool
    expires: int = 0


def _credential(value: str, malformed: Callable[[str], S3Error]) -> tuple[str, str, str]:
    parts = value.rsplit("/", 4)
    if len(parts) != 5 or not parts[0] or not parts[2]:
        raise malformed('the Credential is mal-formed; expecting '
                        '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".')
    access_key, date, region, service, terminator = parts
    if not re.fullmatch(r"\d{8}", date):
        raise malformed(f'incorrect date format "{date}". This date in the credential must be '
                        'in the format "yyyyMMdd".')
    if service != SERVICE:
        raise malformed(f'incorrect service "{service}". This endpoint belongs to "{SERVICE}".')
    if terminator != TERMINATOR:
        raise malformed(f'incorrect terminal "{terminator}". This endpoint uses '
                        f'"{TERMINATOR}".')
    return access_key, date, region


def _header_claim(authorization: str, headers: dict[str, str]) -> _Claim:
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme == _ECDSA_ALGORITHM:
        raise _not_implemented("Signature Version 4A (AWS4-ECDSA-P256-SHA256)")
    if scheme == "AWS":
        raise _version_2()
    if scheme != ALGORITHM:
        raise S3Error("InvalidArgument", "Unsupported Authorization Type", 400,
                      ArgumentName="Authorization", ArgumentValue=authorization)
    fields = {}
    for item in rest.split(","):
        name, equals, value = item.strip().partition("=")
        if equals:
            fields[name] = value.strip()
    missing = [name for name in ("Credential", "SignedHeaders", "Signature")
               if not fields.get(name)]
    if missing:
        raise _malformed_header(f"missing {', '.join(missing)}.")
    access_key, date, region = _credential(fields["Credential"], _malformed_header)
    amz_date = headers.get("x-amz-date")
    if amz_date is None and "date" in headers:
        parsed = email.utils.parsedate_tz(headers["date"])
        if parsed is not None:
            amz_date = time.strftime("%Y%m%dT%H%M%SZ",
                                     time.gmtime(email.utils.mktime_tz(parsed)))
    if amz_date is None or not _AMZ_DATE.match(amz_date.strip()):
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or "
                      "x-amz-date header", 403)
    amz_date = amz_date.strip()
    if amz_date[:8] != date:
        raise _malformed_header("Invalid credential date. Date is not the same as X-Amz-Date.")
    return _Claim(access_key, date, region, fields["SignedHeaders"], fields["Signature"],
                  amz_date, presigned=False)


def _query_claim(query: dict[bytes, bytes]) -> _Claim:
    params = {name.decode("utf-8", "replace"): value.decode("utf-8", "replace")
              for name, value in query.items()}
    if any(name not in params for name in _PRESIGN_PARAMS):
        raise _malformed_query("Query-string authentication version 4 requires the "
                               "X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, "
                               "X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.")
    algorithm = params["X-Amz-Algorithm"]
    if algorithm == _ECDSA_ALGORITHM:
        raise _not_implemented("Signature Version 4A (AWS4-ECDSA-P256-SHA256)")
    if algorithm != ALGORITHM:
        raise _malformed_query(f'X-Amz-Algorithm only supports "{ALGORITHM}"')
    access_key, date, region = _credential(
        params["X-Amz-Credential"],
        lambda detail: _malformed_query(f"Error parsing the X-Amz-Credential parameter; "
                                        f"{detail}"))
    amz_date = params["X-Amz-Date"]
    if not _AMZ_DATE.match(amz_date):
        raise _malformed_query("X-Amz-Date must be in the ISO8601 Long Format "
                               "\"yyyyMMdd'T'HHmmss'Z'\"")
    if amz_date[:8] != date:
        raise _malformed_query("Error parsing the X-Amz-Credential parameter; Invalid "
                               "credential date. Date is not the same as X-Amz-Date.")
    expires = params["X-Amz-Expires"]
    if not re.fullmatch(r"-?\d{1,12}", expires):
        raise _malformed_query("X-Amz-Expires should be a number")
    if not 1 <= int(expires) <= MAX_EXPIRES:
        raise _malformed_query(f"X-Amz-Expires must be between 1 and {MAX_EXPIRES} seconds "
                               f"(a week)")
    return _Claim(access_key, date, region, params["X-Amz-SignedHeaders"],
                  params["X-Amz-Signature"], amz_date, presigned=True, expires=int(expires))


def _epoch(amz_date: str) -> int:
    return calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _check_time(claim: _Claim, now: float) -> None:
    try:
        signed_at = _epoch(claim.amz_date)
    except ValueError:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or "
                      "x-amz-date header", 403) from None
    if claim.presigned:
        if signed_at - now > MAX_SKEW:
            raise S3Error("AccessDenied", "Request is not valid yet", 403)
        if now > signed_at + claim.expires:
            raise S3Error("AccessDenied", "Request has expired", 403,
                          **{"X-Amz-Expires": str(claim.expires),
                             "Expires": _iso(signed_at + claim.expires),
                             "ServerTime": _iso(now)})
    elif abs(now - signed_at) > MAX_SKEW:
        raise S3Error("RequestTimeTooSkewed", "The difference between the request time and "
                      "the current time is too large.", 403, RequestTime=claim.amz_date,
                      ServerTime=_iso(now), MaxAllowedSkewMilliseconds=str(MAX_SKEW * 1000))


def _payload(headers: dict[str, str], presigned: bool) -> tuple[str, str]:
    """The payload hash as signed (the canonical request's last line) and what it means:
    a lower-case hex SHA-256 or one of PAYLOAD_MODES."""
    value = headers.get("x-amz-content-sha256")
    if value is None:
        # A presigned URL signs no body; a header-signed request without the header (curl
        # --aws-sigv4 7.88) signed the hash of its body, which is only known for an empty
        # one: the caller then checks the body is empty.
        value = UNSIGNED_PAYLOAD if presigned else EMPTY_SHA256
        return value, value
    declared = value.strip()
    if declared in PAYLOAD_MODES:
        return value, declared
    if _HEX_SHA256.match(declared):
        return value, declared.lower()
    if declared in _ECDSA_MODES:
        raise _not_implemented(f"x-amz-content-sha256: {declared}")
    raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                  "STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, "
                  "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, or a valid sha256 value.", 400,
                  ArgumentName="x-amz-content-sha256", ArgumentValue=value)


def _check_headers_signed(names: list[str], headers: dict[str, str]) -> None:
    signed = set(names)
    unsigned = sorted(name for name in headers
                      if name.startswith("x-amz-") and name not in signed)
    if "host" not in signed:
        unsigned.insert(0, "host")
    if unsigned:
        raise S3Error("AccessDenied", "There were headers present in the request which were "
                      "not signed", 403, HeadersNotSigned=", ".join(unsigned))


def _as_sent(raw_query: str | bytes, exclude: tuple[str, ...]) -> str:
    skip = {name.encode() for name in exclude}
    items = [item for item in _raw_bytes(raw_query).split(b"&")
             if item and urllib.parse.unquote_to_bytes(item.partition(b"=")[0]) not in skip]
    return b"&".join(items).decode("latin-1")


def _candidates(raw_path: str | bytes, raw_query: str | bytes,
                exclude: tuple[str, ...]) -> list[tuple[str, str]]:
    """The (URI, query) forms a client may have signed: canonical first, then each part as
    sent (curl up to 7.88 signs its query unsorted and unencoded)."""
    uris = [canonical_uri(raw_path), _raw_bytes(raw_path).decode("latin-1")]
    queries = [canonical_query(raw_query, exclude), _as_sent(raw_query, exclude)]
    found: list[tuple[str, str]] = []
    for query in queries:
        for uri in uris:
            if (uri, query) not in found:
                found.append((uri, query))
    return found


def verify(method: str, raw_path: str | bytes, raw_query: str | bytes,
           headers: Mapping[str, str], secret_for: Callable[[str], str | None],
           now: float) -> Signed | None:
    """Check a request's SigV4 signature (Authorization header or presigned query).

    :param raw_path: the path as sent, still percent-encoded (``RAW_URI`` before ``?``).
    :param raw_query: the query string as sent (``""`` if none).
    :param headers: the request headers, names in any case.
    :param secret_for: the secret key of an access key, None if there is no such key.
    :param now: the current time, seconds since the epoch.
    :returns: None when the request carries no authentication at all.
    :raises S3Error: the request is signed, but not validly (see the module docstring).
    """
    lowered = _lower_headers(headers)
    authorization = lowered.get("authorization")
    query = dict(_query_pairs(raw_query))
    presigned = any(name.encode() in query for name in ("X-Amz-Algorithm", "X-Amz-Credential",
                                                         "X-Amz-Signature"))
    if authorization is None and not presigned:
        if b"AWSAccessKeyId" in query and b"Signature" in query:
            raise _version_2()
        return None
    if authorization is not None and presigned:
        raise S3Error("InvalidArgument", "Only one auth mechanism allowed; only the "
                      "X-Amz-Algorithm query parameter, Signature query string parameter or "
                      "the Authorization header should be specified", 400,
                      ArgumentName="Authorization", ArgumentValue=authorization)
    claim = _query_claim(query) if presigned else _header_claim(authorization, lowered)
    signed_payload, payload = _payload(lowered, presigned)
    names = claim.signed_headers.split(";")
    _check_headers_signed(names, lowered)
    secret = secret_for(claim.access_key)
    if secret is None:
        raise S3Error("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist "
                      "in our records.", 403, AWSAccessKeyId=claim.access_key)
    _check_time(claim, now)

    key = signing_key(secret, claim.date, claim.region)
    scope = f"{claim.date}/{claim.region}/{SERVICE}/{TERMINATOR}"
    exclude = ("X-Amz-Signature",) if presigned else ()
    headers_block = _canonical_headers(names, lowered)
    provided = claim.signature.encode("utf-8", "replace")
    first = None
    for uri, query_string in _candidates(raw_path, raw_query, exclude):
        canonical_request = "\n".join((method.upper(), uri, query_string, headers_block,
                                       claim.signed_headers, signed_payload))
        # Header values are latin-1-decoded bytes (WSGI): hash the bytes the client signed.
        to_sign = string_to_sign(claim.amz_date, scope, canonical_request)
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected.encode(), provided):
            trailer = tuple(name.strip().lower()
                            for name in lowered.get("x-amz-trailer", "").split(",")
                            if name.strip())
            return Signed(claim.access_key, key, scope, claim.amz_date, claim.signature,
                          payload, claim.region, presigned, trailer)
        first = first or (canonical_request, to_sign)
    raise S3Error("SignatureDoesNotMatch", "The request signature we calculated does not match "
                  "the signature you provided. Check your key and signing method.", 403,
                  AWSAccessKeyId=claim.access_key, StringToSign=first[1],
                  SignatureProvided=claim.signature, CanonicalRequest=first[0])
