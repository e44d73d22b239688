"""How an api server's book API answers each store error (the table is the documentation)."""
from lib import errors
from lib.metadata import MetadataError

STATUS = {
    errors.BadRequest: 400,           # BadDigest, InvalidName, InvalidHash, HashMismatch, ...
    errors.Forbidden: 403,            # a forged or malformed upload token
    errors.ObjectNotFound: 404,       # OriginNotFound too: the origin has no such object       # NoSuchKey, NoSuchVersion, NoSuchBucket, NoSuchUpload
    errors.DeleteMarkerVersion: 404,  # the book has no "405 for a marker": it is not there
    errors.Conflict: 409,
    errors.BucketExists: 409,
    errors.BucketNotEmpty: 409,
    errors.ConditionalConflict: 409,  # a conditional write lost a race with a delete
    errors.ConditionNotMet: 412,      # If-None-Match: *, If-Match, If-Version
    errors.RangeNotSatisfiable: 416,
    errors.NotEnoughDataServers: 503,
    errors.ContentGone: 503,
    errors.DataServerError: 502,
    errors.CorruptShard: 503,
    MetadataError: 503,
    errors.OriginUnavailable: 502,    # the bucket's origin refused, failed or sent a bad body
    errors.OriginTimeout: 504,
    errors.OriginCircuitOpen: 503,    # the origin failed too often lately: not asked for now
}
