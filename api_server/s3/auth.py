"""Who sent an S3 request, and how its body is framed: SigV4 (``sigv4``) and aws-chunked
(``chunked``) applied to one request, with the credentials from configuration.

Every request must be signed (header or presigned query); anonymous requests are refused
with AccessDenied before anything is read or written.
"""
from __future__ import annotations

import configparser
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from api_server.s3 import chunked, sigv4
from api_server.s3.errors import access_denied
from api_server.s3.request import Request
from lib.config import Config

STREAMING = "STREAMING-"


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Access key -> secret key, and the keys that may also use the management API."""

    secrets: Mapping[str, str]
    #: Access keys whose credentials-file section says ``admin = true``.
    admins: frozenset[str] = frozenset()

    def secret_for(self, access_key: str) -> str | None:
        return self.secrets.get(access_key)

    @classmethod
    def from_config(cls, config: Config) -> "Credentials":
        """The pair from S3_ACCESS_KEY / S3_SECRET_KEY, and every ``[section]`` of
        S3_CREDENTIALS_FILE with ``aws_access_key_id`` / ``aws_secret_access_key`` (the aws
        cli's credentials file format)."""
        found = {config.s3_access_key: config.s3_secret_key}
        admins = set()
        if config.s3_credentials_file is not None:
            parser = configparser.ConfigParser(interpolation=None)
            parser.read_string(Path(config.s3_credentials_file).read_text())
            for section in parser.sections():
                key = parser.get(section, "aws_access_key_id", fallback=None)
                secret = parser.get(section, "aws_secret_access_key", fallback=None)
                if key and secret:
                    found[key] = secret
                    if parser.getboolean(section, "admin", fallback=False):
                        admins.add(key)
        return cls(found, frozenset(admins))


@dataclasses.dataclass
class Auth:
    """A verified request: whose it is and what its payload claims."""

    access_key: str
    #: x-amz-content-sha256: a hex SHA-256, UNSIGNED-PAYLOAD or a STREAMING-... mode.
    payload: str
    signed: object

    @property
    def chunked(self) -> bool:
        return self.payload.startswith(STREAMING)

    def decode(self, raw, size: int | None) -> tuple[Iterator[bytes],
                                                     Callable[[], Mapping[str, str]]]:
        """The decoded chunks of an aws-chunked body (every signature checked as it
        arrives), and the trailing checksums once it has ended."""
        decoder = chunked.Decoder(raw, self.signed, size)
        return iter(decoder), decoder.trailer_checksums


def authenticate(req: Request, credentials: Credentials) -> Auth:
    """Any region in the scope verifies: one cluster answers for all of them."""
    signed = sigv4.verify(req.method, req.raw_path, req.raw_query, req.headers,
                          credentials.secret_for, time.time())
    if signed is None:
        raise access_denied("Anonymous access is forbidden for this operation")
    return Auth(signed.access_key, signed.payload, signed)
