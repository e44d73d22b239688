"""How a data server answers each store error (the table is the documentation)."""
from lib import errors

STATUS = {
    errors.BadRequest: 400,
    errors.CorruptShard: 400,       # a record damaged in transit: the sender must retry
    errors.ObjectNotFound: 404,
    errors.RangeNotSatisfiable: 416,
}
