"""How an api server answers each store error (the table is the documentation)."""
from lib import errors
from lib.metadata import MetadataError

STATUS = {
    errors.BadRequest: 400,           # BadDigest, InvalidName, InvalidHash, HashMismatch, ...
    errors.Forbidden: 403,            # a forged or malformed upload token
    errors.ObjectNotFound: 404,
    errors.Conflict: 409,
    errors.RangeNotSatisfiable: 416,
    errors.NotEnoughDataServers: 503,
    errors.ContentGone: 503,
    errors.DataServerError: 502,
    errors.CorruptShard: 503,
    MetadataError: 503,
}
