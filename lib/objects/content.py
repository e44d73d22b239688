"""Content objects: bytes stored under their SHA-256, and what a writer expects of them.

A *content store* keeps bytes under their hash; the object layer (``lib/objects/layer.py``)
decides which versions point at which content.  Two implementations: the erasure-coded one
over the data servers (``lib/objects/erasure.py``) and, for the in-process conformance suite,
one in memory (``tests/fakes.py``).

Writing is *staged*: :meth:`ContentStore.stage` streams the body while hashing it, checks it
against what the client declared (:class:`Expect`: size, SHA-256, MD5, S3 checksums, some of
which may arrive after the body, in a trailer), and returns a :class:`Staged` content that the
layer then either commits or discards (content already stored: deduplicated after the fact).
When the hash is known up front and the content is already stored, :func:`digest` only hashes
the body, storing nothing.
"""
from __future__ import annotations

import abc
import base64
import binascii
import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping

from lib import checksums
from lib.errors import (ChecksumMismatch, EntityTooLarge, HashMismatch, IncompleteBody,
                        InvalidDigest, SizeMismatch)
from lib.hashing import b64_digest


@dataclasses.dataclass
class Expect:
    """What the client declared about a body; everything is verified before a commit."""

    #: Content-Length or S3's decoded length; None when the body is chunked without one.
    size: int | None = None
    #: The content hash (base64 SHA-256) when known up front: the book's Digest, S3's hex
    #: ``x-amz-content-sha256`` or ``x-amz-checksum-sha256``.
    sha256: str | None = None
    #: The error a SHA-256 mismatch raises (each source has its own S3 error code).
    sha256_mismatch: type[Exception] = HashMismatch
    #: Content-MD5 (base64), verified; and whether to compute the MD5 at all (S3's ETag).
    md5: str | None = None
    want_md5: bool = False
    #: S3 checksum algorithm -> declared base64 value, or None to compute it only (its value
    #: then comes from ``trailer`` after the body, or is just reported).
    checksums: dict[str, str | None] = dataclasses.field(default_factory=dict)
    #: Checksums that arrive after the body (aws-chunked trailers): called at its end.
    trailer: Callable[[], Mapping[str, str]] | None = None
    #: Largest body accepted (EntityTooLarge beyond).
    max_size: int | None = None


@dataclasses.dataclass(frozen=True)
class Digests:
    """What a body turned out to be."""

    size: int
    sha256: str
    #: Hex MD5, "" when not computed.
    md5: str
    checksums: Mapping[str, str]


class Digester:
    """Pass a body's chunks through, hashing them and enforcing its declared size."""

    def __init__(self, chunks: Iterable[bytes], expect: Expect):
        self._chunks = chunks
        self._expect = expect
        self._sha = hashlib.sha256()
        self._md5 = hashlib.md5() if expect.want_md5 or expect.md5 is not None else None
        self._sums = {name: checksums.new(name) for name in expect.checksums}
        self.size = 0
        limit = expect.size if expect.size is not None else expect.max_size
        self._limit = limit
        if expect.size is not None and expect.max_size is not None and \
                expect.size > expect.max_size:
            raise EntityTooLarge(f"{expect.size} bytes is more than the {expect.max_size} "
                                 "accepted")

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            if not chunk:
                continue
            self.size += len(chunk)
            if self._limit is not None and self.size > self._limit:
                if self._expect.size is not None:
                    raise SizeMismatch(f"the body is longer than the declared "
                                       f"{self._expect.size} bytes")
                raise EntityTooLarge(f"the body is longer than the {self._limit} bytes "
                                     "accepted")
            self._sha.update(chunk)
            if self._md5 is not None:
                self._md5.update(chunk)
            for calculator in self._sums.values():
                calculator.update(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        return b64_digest(self._sha)

    def finish(self) -> Digests:
        """After the last chunk: the digests, once they match what was declared."""
        expect = self._expect
        if expect.size is not None and self.size != expect.size:
            raise IncompleteBody(f"the body has {self.size} of the {expect.size} bytes "
                                 "declared")
        sha256 = self.sha256
        if expect.sha256 is not None and sha256 != expect.sha256:
            raise expect.sha256_mismatch(f"the body hashes to SHA-256={sha256}, "
                                         f"not {expect.sha256}")
        md5 = self._md5.digest() if self._md5 is not None else b""
        if expect.md5 is not None and base64.b64encode(md5).decode() != expect.md5:
            raise ChecksumMismatch("The Content-MD5 you specified did not match what we "
                                   "received.", "MD5")
        declared = dict(expect.checksums)
        if expect.trailer is not None:
            declared.update({k.upper(): v for k, v in expect.trailer().items()})
        computed = {}
        for name, calculator in self._sums.items():
            computed[name] = value = calculator.b64()
            wanted = declared.get(name)
            if wanted is not None and wanted != value:
                raise ChecksumMismatch(f"The {name} you specified did not match the calculated "
                                       "checksum.", name)
        return Digests(self.size, sha256, md5.hex(), computed)


def check_md5_header(value: str | None) -> str | None:
    """A Content-MD5 header as given (base64 of 16 bytes); InvalidDigest if malformed."""
    if value is None:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise InvalidDigest("The Content-MD5 you specified is not valid.")
    return base64.b64encode(raw).decode()


def digest(chunks: Iterable[bytes], expect: Expect) -> Digests:
    """Hash and verify a body without storing it (its content is stored already)."""
    digester = Digester(chunks, expect)
    for _ in digester:
        pass
    return digester.finish()


class Staged(abc.ABC):
    """A body written and verified, not yet visible: :meth:`commit` or :meth:`discard` it.
    Used as a context manager, leaving the block without a commit discards it."""

    digests: Digests

    @property
    def hash(self) -> str:
        return self.digests.sha256

    @abc.abstractmethod
    def commit(self) -> list[int]:
        """Make the content readable under its hash; the shard indexes left to rebuild."""

    @abc.abstractmethod
    def discard(self) -> None:
        """Drop what was written (it failed a check, or the content is stored already)."""

    def __enter__(self) -> "Staged":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not getattr(self, "_settled", False):
            self.discard()


class ContentReader(abc.ABC):
    """Bytes ``first..last`` of a content object; opened (first bytes read) before it is
    returned, so a failure is an error status, not a truncated answer."""

    @abc.abstractmethod
    def __iter__(self) -> Iterator[bytes]:
        ...

    @abc.abstractmethod
    def close(self) -> None:
        ...


class ContentStore(abc.ABC):
    """Where content objects live."""

    @abc.abstractmethod
    def stage(self, chunks: Iterable[bytes], expect: Expect) -> Staged:
        """Stream a body into storage, verified (raises on any mismatch, storing nothing)."""

    @abc.abstractmethod
    def readable(self, hash_: str, size: int) -> bool:
        """Whether content ``hash_`` can be read now (enough shards are located)."""

    @abc.abstractmethod
    def open(self, hash_: str, size: int, first: int, last: int) -> ContentReader:
        """Read bytes ``first..last`` (inclusive) of content ``hash_`` of ``size`` bytes."""

    @abc.abstractmethod
    def remove(self, hash_: str) -> None:
        """Delete the stored bytes of ``hash_`` (compensation, and garbage collection)."""

    def repair(self, hash_: str, size: int, missing: list[int]) -> None:
        """Have the pieces a commit could not place rebuilt (after the version is written)."""
