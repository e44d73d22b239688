"""Content coding of GET /objects/<name> responses (BOOK W19): gzip when the client accepts
it and it pays, for whole objects and ranges alike.

A range with gzip is the *selected bytes, compressed*: ``206``, ``Content-Range: bytes
a-b/size`` counted in the object's own bytes, ``Content-Encoding: gzip`` and no
Content-Length.  This is what the book does and what standard clients decode as meant:
``curl --compressed -r a-b`` and ``curl --compressed -C -`` write exactly the object's bytes
a..b (a resumed download stays exact), Python ``requests`` and ``urllib3`` hand back the
decoded bytes.  (A range of the gzip stream itself, RFC 9110's literal reading, would be
undecodable by all of them.)  Decisions:

* identity when the client does not accept gzip, or when the first bytes do not shrink by
  10% (``lib/compression.gzip_pays``): no CPU spent on media, archives or random bytes;
* ``Vary: Accept-Encoding`` on every response, so a cache never serves one coding to a client
  that asked for the other; a gzip response gets its own ETag (``"<hash>+gzip"``);
* ``Digest`` (sent on whole-object GETs) stays the SHA-256 of the object itself, as RFC 3230's
  instance digest is defined before content coding.
"""
from __future__ import annotations

from collections.abc import Iterable

from lib.compression import accepts_gzip, gzip_pays, gzip_stream


def encode(accept_encoding: str | None, head: bytes, body: Iterable[bytes],
           headers: dict[str, str]) -> Iterable[bytes]:
    """The body to send, gzip-coded or not; updates ``headers`` to match.

    ``head`` is the first chunk of ``body`` (already read to fail before a status is sent),
    used to decide whether compression pays.
    """
    headers["Vary"] = "Accept-Encoding"
    if not accepts_gzip(accept_encoding) or not gzip_pays(head):
        return body
    headers.pop("Content-Length", None)
    headers["Content-Encoding"] = "gzip"
    etag = headers.get("ETag")
    if etag and etag.endswith('"'):
        headers["ETag"] = etag[:-1] + '+gzip"'
    return gzip_stream(body)
