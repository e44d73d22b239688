"""S3 errors: the code, status and message a client sees in the XML error body.

One exception type, :class:`S3Error`, carries what the body says; ``extra`` adds elements
(``StringToSign``, ``HeadersNotSigned``, ...).  ``sigv4`` and ``chunked`` raise only this.
"""
from __future__ import annotations


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
