"""S3 errors: the code, status and message a client sees, and how object-layer errors map.

One exception type, :class:`S3Error`, carries what the XML error body says.  Errors raised
below the protocol (``lib.errors``) are translated by :func:`from_exception`, most specific
class first; anything unknown is a 500 InternalError with its type logged, never its text.
"""
from __future__ import annotations

from lib import errors
from lib.metadata import MetadataError


class S3Error(Exception):
    """An S3 error answer.  ``extra`` adds elements to the XML body (e.g. ``Key``)."""

    def __init__(self, code: str, message: str, status: int = 400,
                 headers: dict[str, str] | None = None, **extra: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers = headers or {}
        self.extra = extra


def access_denied(message: str = "Access Denied") -> S3Error:
    return S3Error("AccessDenied", message, 403)


def not_implemented(what: str) -> S3Error:
    return S3Error("NotImplemented", f"{what} is not implemented by Tessera", 501)


def malformed_xml(detail: str = "") -> S3Error:
    return S3Error("MalformedXML", "The XML you provided was not well-formed or did not "
                   "validate against our published schema" + (f": {detail}" if detail else ""))


def invalid_argument(message: str, name: str = "", value: str = "") -> S3Error:
    extra = {"ArgumentName": name, "ArgumentValue": value} if name else {}
    return S3Error("InvalidArgument", message, 400, **extra)


#: lib.errors class -> (S3 code, status); checked in order, so subclasses come first.
_TABLE: tuple[tuple[type, str, int], ...] = (
    (errors.InvalidBucketName, "InvalidBucketName", 400),
    (errors.InvalidDigest, "InvalidDigest", 400),
    (errors.ContentSha256Mismatch, "XAmzContentSHA256Mismatch", 400),
    (errors.ChecksumMismatch, "BadDigest", 400),
    (errors.HashMismatch, "BadDigest", 400),
    (errors.BadDigest, "BadDigest", 400),
    (errors.IncompleteBody, "IncompleteBody", 400),
    (errors.ClientBodyError, "IncompleteBody", 400),
    (errors.SizeMismatch, "IncompleteBody", 400),
    (errors.EntityTooLarge, "EntityTooLarge", 400),
    (errors.EntityTooSmall, "EntityTooSmall", 400),
    (errors.InvalidPartOrder, "InvalidPartOrder", 400),
    (errors.InvalidPart, "InvalidPart", 400),
    (errors.MalformedRequest, "MalformedXML", 400),
    (errors.InvalidRequest, "InvalidRequest", 400),
    (errors.InvalidArgument, "InvalidArgument", 400),
    (errors.InvalidHash, "InvalidArgument", 400),
    (errors.BadRequest, "InvalidRequest", 400),
    (errors.NoSuchBucket, "NoSuchBucket", 404),
    (errors.OriginNotFound, "NoSuchKey", 404),
    (errors.NoSuchUpload, "NoSuchUpload", 404),
    (errors.NoSuchVersion, "NoSuchVersion", 404),
    (errors.NoSuchKey, "NoSuchKey", 404),
    (errors.ObjectNotFound, "NoSuchKey", 404),
    (errors.DeleteMarkerVersion, "MethodNotAllowed", 405),
    (errors.BucketNotEmpty, "BucketNotEmpty", 409),
    (errors.ConditionalConflict, "ConditionalRequestConflict", 409),
    (errors.ConditionNotMet, "PreconditionFailed", 412),
    (errors.RangeNotSatisfiable, "InvalidRange", 416),
    (errors.Forbidden, "AccessDenied", 403),
    (errors.NotEnoughDataServers, "ServiceUnavailable", 503),
    (errors.ContentGone, "ServiceUnavailable", 503),
    (errors.CorruptShard, "ServiceUnavailable", 503),
    (errors.DataServerError, "ServiceUnavailable", 503),
    (MetadataError, "ServiceUnavailable", 503),
    (errors.Conflict, "OperationAborted", 409),
    # A bucket's third-party origin (codes of our own: S3 has no gateway errors).
    (errors.OriginUnavailable, "OriginUnavailable", 502),
    (errors.OriginTimeout, "OriginTimeout", 504),
    (errors.OriginCircuitOpen, "ServiceUnavailable", 503),
)


def from_exception(exc: BaseException) -> S3Error | None:
    """The S3 answer for an object-layer error; None for an unexpected exception."""
    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, errors.InvalidName):
        if exc.too_long:
            return S3Error("KeyTooLongError", "Your key is too long", 400)
        return S3Error("InvalidArgument", str(exc), 400)
    if isinstance(exc, errors.BucketExists):
        return S3Error("BucketAlreadyOwnedByYou", "Your previous request to create the named "
                       "bucket succeeded and you already own it.", 409)
    if isinstance(exc, errors.RangeNotSatisfiable):
        return S3Error("InvalidRange", "The requested range is not satisfiable", 416,
                       headers={"Content-Range": f"bytes */{exc.size}"},
                       ActualObjectSize=str(exc.size))
    for cls, code, status in _TABLE:
        if isinstance(exc, cls):
            message = str(exc) or code
            if status == 503:
                message = f"Please reduce your request rate or retry: {message}"
            return S3Error(code, message, status)
    return None
