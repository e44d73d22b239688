"""Request bodies as the object layer wants them: chunks, and a client's failure named as such.

gunicorn reports a body the client broke (a socket closed early, malformed chunked framing:
``ChunkMissingTerminator``, ``InvalidChunkSize``, ``NoMoreData``) by raising from ``read``;
a timeout on a stalled client raises ``OSError``.  Those are the client's fault: they become
:class:`lib.errors.ClientBodyError` (400), never a data server's fault, and nothing is stored.
"""
from __future__ import annotations

from collections.abc import Iterator

from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected

from lib.errors import ClientBodyError
from lib.rs.params import BLOCK_SIZE


def client_body(stream, chunk_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """The chunks of a request body (``wsgi.input``), reads of at most ``chunk_size``."""
    while True:
        try:
            chunk = stream.read(chunk_size)
        except (OSError, ValueError, ParseException, ClientDisconnected) as exc:
            raise ClientBodyError(f"the request body could not be read: "
                                  f"{type(exc).__name__}: {exc}") from exc
        if not chunk:
            return
        yield chunk
