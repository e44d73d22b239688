"""HTTP-free error hierarchy shared by both servers.

Each server maps these to status codes in one table (``<server>/errors.py``); ``lib`` never
knows about HTTP, exits or panics.
"""


class ObjectStoreError(Exception):
    """Base of every error the store reports to a client."""


class BadRequest(ObjectStoreError):
    """The request is malformed (header, name, query parameter)."""


class BadDigest(BadRequest):
    """The Digest header is missing or not ``SHA-256=<base64 of 32 bytes>``."""


class InvalidName(BadRequest):
    """An object name (key) is empty, not UTF-8, too long, or contains NUL."""

    def __init__(self, message: str, too_long: bool = False):
        super().__init__(message)
        self.too_long = too_long


class InvalidBucketName(BadRequest):
    """A bucket name breaks the naming rules."""


class InvalidArgument(BadRequest):
    """A query parameter or header has a value out of range or of the wrong form."""


class InvalidRequest(BadRequest):
    """The request as a whole is not allowed (a combination of arguments, a self-copy)."""


class InvalidHash(BadRequest):
    """A hash is not the 44-character base64 of 32 bytes."""


class HashMismatch(BadRequest):
    """The body does not hash to the digest the client declared."""


class ContentSha256Mismatch(HashMismatch):
    """The body does not hash to the hex SHA-256 the request was signed with."""


class ChecksumMismatch(BadRequest):
    """The body does not match a checksum the client sent (Content-MD5, x-amz-checksum-*)."""

    def __init__(self, message: str, algorithm: str):
        super().__init__(message)
        self.algorithm = algorithm


class InvalidDigest(BadRequest):
    """A checksum the client sent is malformed (not base64 of the algorithm's length)."""


class SizeMismatch(BadRequest):
    """The body is shorter or longer than its declared size."""


class IncompleteBody(SizeMismatch):
    """The body ended before the length the client declared."""


class ClientBodyError(BadRequest):
    """Reading the request body failed on the client's side (it went away, or sent malformed
    chunked framing): never a data server's fault, and nothing is stored."""


class EntityTooLarge(BadRequest):
    """An object or part larger than the store accepts."""


class EntityTooSmall(BadRequest):
    """A multipart part other than the last is smaller than the minimum part size."""


class InvalidPart(BadRequest):
    """A multipart Complete names a part that is not uploaded, or with another ETag."""


class InvalidPartOrder(BadRequest):
    """A multipart Complete lists its parts out of ascending order."""


class MalformedRequest(BadRequest):
    """A request document (XML, JSON) is malformed or breaks its schema."""


class ObjectNotFound(ObjectStoreError):
    """No such object, version, shard or temp object."""


class NoSuchKey(ObjectNotFound):
    """The key has no version, or its latest version is a delete marker."""

    def __init__(self, message: str, delete_marker: "object | None" = None):
        super().__init__(message)
        #: The delete marker that is the key's latest version, if that is why.
        self.delete_marker = delete_marker


class NoSuchVersion(ObjectNotFound):
    """The key has no version with that id (or number)."""


class NoSuchBucket(ObjectNotFound):
    """No bucket by that name."""


class NoSuchUpload(ObjectNotFound):
    """No multipart upload in progress by that id."""


class DeleteMarkerVersion(ObjectStoreError):
    """A read named a delete marker by its version id (S3: 405 MethodNotAllowed)."""

    def __init__(self, message: str, marker: object):
        super().__init__(message)
        self.marker = marker


class BucketExists(ObjectStoreError):
    """CreateBucket of a name already taken (``bucket`` is the existing one)."""

    def __init__(self, message: str, bucket: object):
        super().__init__(message)
        self.bucket = bucket


class BucketNotEmpty(ObjectStoreError):
    """DeleteBucket of a bucket that still holds versions."""


class NotModified(ObjectStoreError):
    """A conditional read whose condition says the client's copy is current (304)."""

    def __init__(self, message: str, version: object):
        super().__init__(message)
        self.version = version


class ConditionNotMet(ObjectStoreError):
    """A precondition (If-Match, If-None-Match, If-Unmodified-Since...) is false (412)."""


class ConditionalConflict(ObjectStoreError):
    """A conditional write lost a race with a concurrent change of the same key (409):
    the client may retry."""


class RangeNotSatisfiable(ObjectStoreError):
    """The requested byte range lies outside the object."""

    def __init__(self, message: str, size: int):
        super().__init__(message)
        self.size = size


class NotEnoughDataServers(ObjectStoreError):
    """Too few live data servers (or shards) to do what was asked."""


class ContentGone(ObjectStoreError):
    """Content a PUT meant to share was collected while its body arrived: send it again."""


class DataServerError(ObjectStoreError):
    """A data server failed or answered something unexpected.

    ``status`` is the HTTP status it answered with, None when it gave no answer (refused
    or broke the connection, timed out, sent something that is not HTTP).
    """

    def __init__(self, message: str, address: str, status: int | None = None):
        super().__init__(f"{address}: {message}")
        self.address = address
        self.status = status


class Refused(DataServerError):
    """The data server answered, refusing the request (a 4xx status other than 404)."""


class CorruptShard(ObjectStoreError):
    """A shard's bytes do not match their checksum."""


class Forbidden(ObjectStoreError):
    """The request carries credentials the cluster did not issue (a forged upload token)."""


class Conflict(ObjectStoreError):
    """Another request is changing the same thing right now (e.g. one resumable upload)."""


class OriginError(ObjectStoreError):
    """A bucket's third-party origin could not give a missing object (the message names the
    origin); each subclass is one way it failed."""


class OriginNotFound(OriginError, ObjectNotFound):
    """The origin has no such object either (404), remembered for ORIGIN_NEGATIVE_TTL."""


class OriginUnavailable(OriginError):
    """The origin failed: refused, a 5xx or another unexpected status, a body that ended early
    or failed its length or checksum, an object larger than ORIGIN_MAX_SIZE (502)."""


class OriginTooLarge(OriginUnavailable):
    """The origin's object is larger than ORIGIN_MAX_SIZE (not a failure of the origin: its
    circuit breaker does not count it)."""


class OriginTimeout(OriginError):
    """The origin did not connect or answer within its timeouts (504)."""


class OriginCircuitOpen(OriginError):
    """The origin failed too often lately; it is not asked until the breaker resets (503)."""
