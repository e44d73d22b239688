"""The S3 API's WSGI app: parse the request, authenticate it, route it, answer in S3's terms.

A raw WSGI callable, not Flask: S3 routes on the bucket, the key and the query's subresources,
keys may contain anything (``a//b``, a leading ``/``, ``%2F``), and the canonical request that
SigV4 signs is built from the raw path and query.  Every answer carries ``x-amz-request-id``,
equal to the RequestId of an XML error body.  Handlers live in ``buckets``, ``objects``,
``listing`` and ``multipart``; they translate, the object layer decides.
"""
from __future__ import annotations

import logging
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterable

from api_server.s3 import auth, buckets, listing, multipart, objects
from api_server.s3.errors import S3Error, from_exception, not_implemented
from api_server.s3.request import Request, Response
from api_server.s3.xml import error_body

log = logging.getLogger(__name__)

Handler = Callable[["S3App", Request], Response]
#: An answer given before its request body was read (an error, mostly) first reads up to
#: this much of the body, so the connection stays usable; a longer body closes it.
DRAIN_LIMIT = 1 << 20

#: Subresources S3 defines that Tessera does not implement: 501 NotImplemented.
_UNSUPPORTED = frozenset({
    "accelerate", "analytics", "cors", "encryption", "intelligent-tiering", "inventory",
    "legal-hold", "lifecycle", "logging", "metrics", "notification", "object-lock",
    "ownershipControls", "policy", "policyStatus", "publicAccessBlock", "replication",
    "requestPayment", "restore", "retention", "select", "tagging", "torrent", "website",
    "attributes", "renameObject",
})


def _route(req: Request) -> Handler:
    q, m = req.query, req.method
    if not req.bucket:
        if m == "GET":
            return buckets.list_buckets
        raise S3Error("MethodNotAllowed", "The specified method is not allowed against this "
                      "resource.", 405)
    unsupported = _UNSUPPORTED.intersection(q)
    if unsupported:
        raise not_implemented(f"the {sorted(unsupported)[0]} subresource")
    if req.key is None:
        if "acl" in q:
            return buckets.get_acl if m == "GET" else buckets.put_acl
        table: dict[str, Handler] = {}
        if m == "GET":
            if "location" in q:
                return buckets.get_location
            if "versioning" in q:
                return buckets.get_versioning
            if "versions" in q:
                return listing.list_versions
            if "uploads" in q:
                return multipart.list_uploads
            return listing.list_objects
        table = {"PUT": buckets.put_versioning if "versioning" in q else buckets.create,
                 "HEAD": buckets.head, "DELETE": buckets.delete}
        if m == "POST":
            if "delete" in q:
                return objects.delete_many
            raise not_implemented("POST object (browser form upload)")
        if m in table:
            return table[m]
    else:
        if "acl" in q:
            return objects.get_acl if m == "GET" else objects.put_acl
        upload = "uploadId" in q
        if m == "PUT":
            if upload or "partNumber" in q:
                if "x-amz-copy-source" in req.headers:
                    return multipart.copy_part
                return multipart.upload_part
            if "x-amz-copy-source" in req.headers:
                return objects.copy
            return objects.put
        if m == "GET":
            return multipart.list_parts if upload else objects.get
        if m == "HEAD":
            return objects.head
        if m == "DELETE":
            return multipart.abort if upload else objects.delete
        if m == "POST":
            if "uploads" in q:
                return multipart.create
            if upload:
                return multipart.complete
            raise not_implemented("this POST")
    raise S3Error("MethodNotAllowed", "The specified method is not allowed against this "
                  "resource.", 405)


#: S3's name for each operation a handler serves (fault rules match on it).
_OPERATIONS: dict[Handler, str] = {
    buckets.list_buckets: "ListBuckets", buckets.get_acl: "GetBucketAcl",
    buckets.put_acl: "PutBucketAcl", buckets.get_location: "GetBucketLocation",
    buckets.get_versioning: "GetBucketVersioning", buckets.put_versioning:
    "PutBucketVersioning", buckets.create: "CreateBucket", buckets.head: "HeadBucket",
    buckets.delete: "DeleteBucket", listing.list_versions: "ListObjectVersions",
    listing.list_objects: "ListObjects", multipart.list_uploads: "ListMultipartUploads",
    objects.delete_many: "DeleteObjects", objects.get_acl: "GetObjectAcl",
    objects.put_acl: "PutObjectAcl", multipart.copy_part: "UploadPartCopy",
    multipart.upload_part: "UploadPart", objects.copy: "CopyObject", objects.put: "PutObject",
    multipart.list_parts: "ListParts", objects.get: "GetObject", objects.head: "HeadObject",
    multipart.abort: "AbortMultipartUpload", objects.delete: "DeleteObject",
    multipart.create: "CreateMultipartUpload", multipart.complete: "CompleteMultipartUpload",
}


def operation(req: Request) -> str:
    """S3's name for the operation ``req`` asks for ("" when it routes to an error)."""
    try:
        name = _OPERATIONS.get(_route(req), "")
    except S3Error:
        return ""
    return "ListObjectsV2" if name == "ListObjects" and req.query.get("list-type") == "2" \
        else name


class S3App:
    """The WSGI callable for one api worker's S3 listener."""

    def __init__(self, api, credentials: auth.Credentials):
        self.api = api
        self.layer = api.layer
        self.multipart = api.multipart
        self.config = api.config
        self.credentials = credentials

    def __call__(self, environ: dict, start_response) -> Iterable[bytes]:
        request_id = secrets.token_hex(8).upper()
        started = time.monotonic()
        req = None
        try:
            req = Request(environ, self.config.s3_domain, request_id)
            req.auth = auth.authenticate(req, self.credentials)
            response = _route(req)(self, req)
        except BaseException as exc:            # noqa: BLE001 - every error is an answer
            response = self._error(exc, req, environ, request_id)
        headers = [("x-amz-request-id", request_id), ("x-amz-id-2", request_id),
                   ("Server", "Tessera")] + response.headers
        if req is not None and req.body_unread() and not req.drain(DRAIN_LIMIT):
            headers.append(("Connection", "close"))     # the rest of the body is not ours
        start_response(f"{response.status} {_REASONS.get(response.status, 'OK')}", headers)
        log.debug("s3 %s %s -> %d in %.1f ms", environ.get("REQUEST_METHOD"),
                  environ.get("RAW_URI", ""), response.status,
                  (time.monotonic() - started) * 1000)
        if environ.get("REQUEST_METHOD") == "HEAD":
            close = getattr(response.body, "close", None)
            if close is not None:
                close()
            return []
        return response.body

    def _error(self, exc: BaseException, req: Request | None, environ: dict,
               request_id: str) -> Response:
        error = from_exception(exc)
        if error is None:
            if not isinstance(exc, Exception):
                raise exc
            log.exception("s3 %s %s: unexpected error", environ.get("REQUEST_METHOD"),
                          environ.get("RAW_URI", ""))
            error = S3Error("InternalError", "We encountered an internal error. Please try "
                            "again.", 500)
        elif error.status >= 500:
            log.warning("s3 %s %s: %s %s", environ.get("REQUEST_METHOD"),
                        environ.get("RAW_URI", ""), error.code, error.message)
        resource = urllib.parse.unquote(environ.get("RAW_URI", "/").split("?", 1)[0])
        body = error_body(error, resource, request_id)
        headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
        headers += list(error.headers.items())
        if req is not None:
            headers += req.error_headers
        return Response(error.status, headers, [body])


_REASONS = {200: "OK", 204: "No Content", 206: "Partial Content", 304: "Not Modified",
            400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            409: "Conflict", 411: "Length Required", 412: "Precondition Failed",
            416: "Range Not Satisfiable", 500: "Internal Server Error",
            501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}
