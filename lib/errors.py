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
    """An object name is empty, not UTF-8, too long, or contains NUL."""


class InvalidHash(BadRequest):
    """A hash is not the 44-character base64 of 32 bytes."""


class HashMismatch(BadRequest):
    """The body does not hash to the digest the client declared."""


class SizeMismatch(BadRequest):
    """The body is shorter or longer than its declared size."""


class ClientBodyError(BadRequest):
    """The client's request body broke off (it hung up, or its chunked framing is bad)."""


class ObjectNotFound(ObjectStoreError):
    """No such object, version, shard or temp object."""


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
    """A data server failed or answered something unexpected."""

    def __init__(self, message: str, address: str):
        super().__init__(f"{address}: {message}")
        self.address = address


class Refused(DataServerError):
    """The data server answered, refusing the request (a 4xx status other than 404)."""


class CorruptShard(ObjectStoreError):
    """A shard's bytes do not match their checksum."""


class Forbidden(ObjectStoreError):
    """The request carries credentials the cluster did not issue (a forged upload token)."""


class Conflict(ObjectStoreError):
    """Another request is changing the same thing right now (e.g. one resumable upload)."""
