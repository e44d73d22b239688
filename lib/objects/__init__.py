"""The object layer (``layer.py``, ``multipart.py``) over content stores (``content.py``,
``erasure.py``) and repairs (``repairs.py``): everything a protocol needs, nothing of HTTP."""
from lib.objects.content import ContentStore, Digests, Expect, Staged
from lib.objects.layer import DeleteResult, ObjectLayer, ObjectReader, ReadConditions, Stored
from lib.objects.multipart import Multipart, Requested

__all__ = ["ContentStore", "DeleteResult", "Digests", "Expect", "Multipart", "ObjectLayer",
           "ObjectReader", "ReadConditions", "Requested", "Staged", "Stored"]
