"""Multipart uploads on the object layer: parts are content objects, Complete writes a manifest.

Each part is stored like any body (``ObjectLayer.store``: erasure-coded as it arrives, shared
when its content is stored already), and recorded on the upload; re-sending a part number
replaces it.  A part copied from another object points at that object's content (a range of
one content object is a part with an offset into it), so no data is copied, except for a
range that spans parts of a multipart source, which is streamed into new content.  Complete
checks the requested list against the parts held (order, ETags, sizes), computes the ETag
(MD5 of the binary part MD5s, ``-N``) and any composite checksum, and writes the manifest
version in one metadata transaction; nothing is read back.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterable

from lib import checksums
from lib.errors import (EntityTooSmall, InvalidArgument, InvalidPart, InvalidPartOrder,
                        MalformedRequest, NoSuchUpload, RangeNotSatisfiable)
from lib.metadata import Draft, ObjectMeta, Part, Upload, Version, WriteCondition, validate_key
from lib.metadata import listing
from lib.objects.content import Expect
from lib.objects.layer import ObjectLayer, ReadConditions, Stored

log = logging.getLogger(__name__)

#: S3's limits.
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 << 30
MIN_PART_SIZE = 5 << 20


@dataclasses.dataclass(frozen=True)
class Requested:
    """One entry of a Complete request's part list."""

    number: int
    etag: str
    checksums: dict[str, str] = dataclasses.field(default_factory=dict)


class Multipart:
    def __init__(self, layer: ObjectLayer, min_part_size: int = MIN_PART_SIZE):
        self.layer = layer
        self.metadata = layer.metadata
        self.min_part_size = min_part_size

    def create(self, bucket: str, key: str, meta: ObjectMeta = ObjectMeta()) -> Upload:
        validate_key(key)
        self.layer.bucket(bucket)
        upload = self.metadata.create_upload(bucket, key, meta)
        log.info("multipart upload %s of %s/%r started", upload.upload_id, bucket, key)
        return upload

    def upload(self, upload_id: str, bucket: str | None = None, key: str | None = None,
               open_only: bool = True) -> Upload:
        """The upload, which must belong to ``bucket``/``key`` when given; NoSuchUpload."""
        upload = self.metadata.upload(upload_id)
        if upload is None or (open_only and upload.completed is not None) or \
                (bucket is not None and upload.bucket != bucket) or \
                (key is not None and upload.key != key):
            raise NoSuchUpload("The specified upload does not exist. The upload ID may be "
                               "invalid, or the upload may have been aborted or completed.")
        return upload

    @staticmethod
    def _check_number(number: int) -> None:
        if not 1 <= number <= MAX_PARTS:
            raise InvalidArgument(f"Part number must be an integer between 1 and {MAX_PARTS}, "
                                  "inclusive")

    def _record(self, upload_id: str, part: Part, stored: Stored | None, md5: str) -> Part:
        try:
            part = self.metadata.put_part(upload_id, part, shared=stored is None or stored.shared,
                                          md5=md5)
        except BaseException:
            self.layer._release(stored)
            raise
        if stored is not None and stored.missing:
            self.layer.contents.repair(stored.hash, stored.digests.size, list(stored.missing))
        return part

    def upload_part(self, upload_id: str, number: int, chunks: Iterable[bytes],
                    expect: Expect, bucket: str | None = None, key: str | None = None) -> Part:
        """Store one part as it arrives; its ETag is its MD5."""
        self._check_number(number)
        self.upload(upload_id, bucket, key)
        expect.want_md5 = True
        expect.max_size = MAX_PART_SIZE
        stored = self.layer.store(chunks, expect)
        part = Part(number, stored.hash, stored.digests.size, stored.digests.md5,
                    dict(stored.digests.checksums))
        return self._record(upload_id, part, stored, stored.digests.md5)

    def copy_part(self, upload_id: str, number: int, source_bucket: str, source_key: str,
                  source_version: str | None, byte_range: tuple[int, int] | None,
                  source_conditions: ReadConditions | None = None, bucket: str | None = None,
                  key: str | None = None) -> tuple[Part, Version]:
        """UploadPartCopy: the part is (a range of) an existing object's content."""
        self._check_number(number)
        self.upload(upload_id, bucket, key)
        source = self.layer.head(source_bucket, source_key, source_version)
        if source_conditions is not None:
            source_conditions.evaluate(source.etag, source.created, copy=True)
        first, last = byte_range if byte_range is not None else (0, source.size - 1)
        if byte_range is not None and (first > last or last >= source.size):
            raise RangeNotSatisfiable(f"The requested range bytes={first}-{last} is not "
                                      f"satisfiable", source.size)
        size = last - first + 1 if source.size else 0
        if size > MAX_PART_SIZE:
            raise InvalidArgument(f"a copied part is at most {MAX_PART_SIZE} bytes")
        whole = first == 0 and size == source.size
        if not source.parts:
            if whole and len(source.etag) == 32:
                part = Part(number, source.hash, size, source.etag,
                            dict(source.meta.checksums))
            else:
                part = Part(number, source.hash, size, self._md5(source, first, last),
                            content_offset=first, content_size=source.size)
            return self._record(upload_id, part, None, ""), source
        inner = self.metadata.parts(source, first, 1)
        holder = inner[0] if inner else None
        if holder is not None and holder.offset + holder.size > last:
            start = first - holder.offset + holder.content_offset
            part = Part(number, holder.hash, size, self._md5(source, first, last),
                        content_offset=start, content_size=holder.stored_size)
            return self._record(upload_id, part, None, ""), source
        reader = self.layer.read(source, first, last)       # spans parts: store the bytes
        try:
            stored = self.layer.store(reader, Expect(size=size, want_md5=True))
        finally:
            reader.close()
        part = Part(number, stored.hash, stored.digests.size, stored.digests.md5)
        return self._record(upload_id, part, stored, stored.digests.md5), source

    def _md5(self, version: Version, first: int, last: int) -> str:
        """The MD5 of a range of an object: one read, for a copied part's ETag."""
        md5 = hashlib.md5()
        reader = self.layer.read(version, first, last)
        try:
            for chunk in reader:
                md5.update(chunk)
        finally:
            reader.close()
        return md5.hexdigest()

    def parts(self, upload_id: str, after: int = 0, limit: int = 1000,
              bucket: str | None = None, key: str | None = None
              ) -> tuple[Upload, list[Part], bool]:
        """ListParts: (upload, up to ``limit`` parts after number ``after``, truncated)."""
        upload = self.upload(upload_id, bucket, key)
        found = self.metadata.upload_parts(upload_id, after, limit + 1)
        return upload, found[:limit], len(found) > limit

    def _held(self, upload_id: str) -> dict[int, Part]:
        held: dict[int, Part] = {}
        after = 0
        while page := self.metadata.upload_parts(upload_id, after, 1000):
            held.update((p.number, p) for p in page)
            after = page[-1].number
            if len(page) < 1000:
                break
        return held

    def complete(self, upload_id: str, requested: list[Requested],
                 condition: WriteCondition | None = None, bucket: str | None = None,
                 key: str | None = None) -> Version:
        """CompleteMultipartUpload; a repeated Complete answers the same version."""
        upload = self.upload(upload_id, bucket, key, open_only=False)
        if upload.completed is not None:
            return self.metadata.complete_upload(upload_id, None)
        if not requested:
            raise MalformedRequest("The XML you provided was not well-formed or did not "
                                   "validate against our published schema (no parts)")
        numbers = [r.number for r in requested]
        if any(b <= a for a, b in zip(numbers, numbers[1:])):
            raise InvalidPartOrder("The list of parts was not in ascending order. The parts "
                                   "list must be specified in order by part number.")
        held = self._held(upload_id)
        chosen = []
        for i, wanted in enumerate(requested):
            part = held.get(wanted.number)
            if part is None or part.etag != wanted.etag.strip().strip('"'):
                raise InvalidPart("One or more of the specified parts could not be found. The "
                                  "part may not have been uploaded, or the specified entity "
                                  f"tag may not match the part's entity tag (part "
                                  f"{wanted.number}).")
            for name, value in wanted.checksums.items():
                if part.checksums.get(name) != value:
                    raise InvalidPart(f"part {wanted.number}: the {name} checksum does not "
                                      "match the part's")
            if i < len(requested) - 1 and part.size < self.min_part_size:
                raise EntityTooSmall("Your proposed upload is smaller than the minimum allowed "
                                     f"object size (part {part.number}: {part.size} bytes, "
                                     f"minimum {self.min_part_size}).")
            chosen.append(part)
        etag = hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in chosen)).hexdigest()
        meta = upload.meta
        algorithms = set(chosen[0].checksums)
        for part in chosen[1:]:
            algorithms &= set(part.checksums)
        if algorithms:
            name = sorted(algorithms)[0]
            meta = dataclasses.replace(meta, checksums={name: checksums.composite(
                name, [p.checksums[name] for p in chosen])}, checksum_type="COMPOSITE")
        draft = Draft(upload.bucket, upload.key, sum(p.size for p in chosen), "",
                      f"{etag}-{len(chosen)}", meta, tuple(chosen), shared=True)
        if condition is not None:
            condition.check(self.metadata.version(upload.bucket, upload.key))
        version = self.metadata.complete_upload(upload_id, draft, condition)
        self.layer.stored(version)
        return version

    def abort(self, upload_id: str, bucket: str | None = None, key: str | None = None) -> None:
        self.upload(upload_id, bucket, key)
        if not self.metadata.abort_upload(upload_id):
            raise NoSuchUpload("The specified upload does not exist.")
        log.info("multipart upload %s aborted", upload_id)

    def uploads(self, bucket: str, prefix: str = "", delimiter: str = "", key_marker: str = "",
                upload_id_marker: str | None = None, limit: int = 1000) -> listing.Page[Upload]:
        """ListMultipartUploads: uploads in progress by key, then by creation."""
        self.layer.bucket(bucket)
        inner = upload_id_marker if key_marker and upload_id_marker else None
        return listing.walk(
            lambda c, end, n: self.metadata.uploads_page(
                bucket, c.key,
                c.inner if c.inner is not None else (None if c.inclusive else "\U0010ffff"),
                end, n),
            lambda row: listing.Cursor(row.key, row.upload_id), lambda row: row.key, prefix,
            delimiter, listing.start_cursor(prefix, delimiter, key_marker, inner), limit)
