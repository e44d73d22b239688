"""The object layer's behaviour, in process: a real SQLite metadata store, content in files.

What every protocol relies on: dedup before and after the body, verification before any
commit, version writes with conditions and compensation, reads of ranges across parts,
deletes and markers, listings, copies that share content, multipart, and the sweep.
"""
from __future__ import annotations

import base64
import hashlib
import os

import pytest

from lib.errors import (BucketNotEmpty, ChecksumMismatch, ConditionNotMet, DeleteMarkerVersion,
                        EntityTooSmall, HashMismatch, IncompleteBody, InvalidPart,
                        InvalidPartOrder, InvalidRequest, MalformedRequest, NoSuchBucket,
                        NoSuchKey, NoSuchUpload, NoSuchVersion, NotModified)
from lib.metadata import ENABLED, SUSPENDED, ObjectMeta, WriteCondition
from lib.metadata.sqlite import SqliteStore
from lib.objects import Multipart, ObjectLayer
from lib.objects.content import Expect
from lib.objects.layer import ReadConditions
from lib.objects.multipart import Requested
from lib.objects.sweeper import Sweeper
from tests.fakes import DirectoryContentStore


def sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def chunks(data: bytes, size: int = 1000):
    return (data[i:i + size] for i in range(0, len(data), size))


@pytest.fixture
def metadata(tmp_path):
    store = SqliteStore(tmp_path / "md.db")
    yield store
    store.close()


@pytest.fixture
def contents(tmp_path):
    return DirectoryContentStore(tmp_path / "contents")


@pytest.fixture
def layer(metadata, contents):
    layer = ObjectLayer(metadata, contents)
    layer.create_bucket("plain")
    metadata.create_bucket("versioned", versioning=ENABLED)
    return layer


def put(layer, key, data, bucket="plain", known=False, **kw):
    expect = Expect(size=len(data), sha256=sha(data) if known else None, want_md5=True)
    return layer.put(bucket, key, chunks(data), expect, **kw)


def read(layer, bucket, key, **kw) -> bytes:
    return b"".join(layer.open(bucket, key, **kw))


def test_put_and_read_back_with_md5_etag(layer):
    data = os.urandom(5000)
    version = put(layer, "k", data, meta=ObjectMeta(content_type="text/plain",
                                                    user={"a": "ü"}))
    assert version.etag == hashlib.md5(data).hexdigest() and version.hash == sha(data)
    assert read(layer, "plain", "k") == data
    head = layer.head("plain", "k")
    assert head.meta.content_type == "text/plain" and head.meta.user == {"a": "ü"}


def test_dedup_before_and_after_the_body(layer, contents):
    data = os.urandom(3000)
    put(layer, "a", data)
    assert contents.commits == 1
    put(layer, "b", data, known=True)            # hash up front: only hashed
    put(layer, "c", data)                        # hash unknown: staged, then dropped
    assert contents.commits == 1 and len(contents.stored()) == 1
    assert not list((contents.root / "tmp").iterdir())
    assert layer.metadata.content(sha(data)).refs == 3
    assert read(layer, "plain", "c") == data


@pytest.mark.parametrize("expect, error", [
    (Expect(size=10), IncompleteBody),
    (Expect(size=3), Exception),
    (Expect(sha256=sha(b"other")), HashMismatch),
    (Expect(md5=md5_b64(b"other")), ChecksumMismatch),
    (Expect(checksums={"CRC32": "AAAAAA=="}), ChecksumMismatch),
])
def test_a_body_that_fails_a_check_stores_nothing(layer, contents, expect, error):
    with pytest.raises(error):
        layer.put("plain", "bad", chunks(b"hello"), expect)
    assert contents.commits == 0 and not list((contents.root / "tmp").iterdir())
    assert layer.metadata.version("plain", "bad") is None


def test_unknown_bucket_fails_before_the_body(layer, contents):
    def body():
        raise AssertionError("the body was read")
        yield b""

    with pytest.raises(NoSuchBucket):
        layer.put("nope", "k", body(), Expect(size=1))


def test_conditional_writes_and_compensation(layer, contents):
    first = put(layer, "k", b"one", condition=WriteCondition(absent=True))
    with pytest.raises(ConditionNotMet):
        put(layer, "k", b"two", condition=WriteCondition(absent=True))
    with pytest.raises(ConditionNotMet):
        put(layer, "k", b"two", condition=WriteCondition(etag="nope"))
    put(layer, "k", b"two", condition=WriteCondition(etag=first.etag))
    with pytest.raises(NoSuchKey):
        put(layer, "absent", b"x", condition=WriteCondition(etag="*"))
    assert read(layer, "plain", "k") == b"two"
    assert not contents.path(sha(b"x")).exists()


def test_ranges_and_read_conditions(layer):
    data = bytes(range(256)) * 10
    version = put(layer, "r", data)
    reader = layer.open("plain", "r", byte_range="bytes=10-19")
    assert (reader.first, reader.last, reader.partial) == (10, 19, True)
    assert b"".join(reader) == data[10:20]
    assert read(layer, "plain", "r", byte_range="bytes=-5") == data[-5:]
    with pytest.raises(NotModified):
        layer.head("plain", "r", conditions=ReadConditions(if_none_match=[version.etag]))
    with pytest.raises(ConditionNotMet):
        layer.head("plain", "r", conditions=ReadConditions(if_match=["other"]))
    empty = put(layer, "empty", b"")
    assert read(layer, "plain", "empty") == b"" and empty.size == 0


def test_versioned_delete_markers(layer):
    one = put(layer, "k", b"one", bucket="versioned")
    put(layer, "k", b"two", bucket="versioned")
    result = layer.delete("versioned", "k")
    assert result.delete_marker
    with pytest.raises(NoSuchKey) as caught:
        layer.head("versioned", "k")
    assert caught.value.delete_marker.version_id == result.version_id
    with pytest.raises(DeleteMarkerVersion):
        layer.head("versioned", "k", result.version_id)
    assert read(layer, "versioned", "k", version_id=one.version_id) == b"one"
    with pytest.raises(NoSuchVersion):
        layer.head("versioned", "k", "00000000000fffff")
    layer.delete("versioned", "k", result.version_id)
    assert read(layer, "versioned", "k") == b"two"
    layer.set_versioning("versioned", SUSPENDED)
    assert put(layer, "k", b"three", bucket="versioned").version_id == "null"


def test_unversioned_delete_removes_and_releases(layer, metadata):
    put(layer, "k", b"gone")
    assert layer.delete("plain", "k").version_id is None
    with pytest.raises(NoSuchKey):
        layer.head("plain", "k")
    assert metadata.content(sha(b"gone")).refs == 0
    with pytest.raises(BucketNotEmpty):
        put(layer, "x", b"x")
        layer.delete_bucket("plain")


def test_listing(layer):
    for key in ["a/1", "a/2", "b", "c/d/e"]:
        put(layer, key, key.encode())
    page = layer.list("plain", delimiter="/")
    assert page.prefixes == ["a/", "c/"] and [v.key for v in page.rows] == ["b"]
    assert [v.key for v in layer.list("plain", prefix="a/", after="a/1").rows] == ["a/2"]


def test_copy_shares_content(layer, contents):
    data = os.urandom(2000)
    put(layer, "src", data, meta=ObjectMeta(content_type="a/b"))
    commits = contents.commits
    copied, source = layer.copy("plain", "src", None, "versioned", "dst")
    assert contents.commits == commits and copied.hash == source.hash
    assert read(layer, "versioned", "dst") == data
    assert layer.head("versioned", "dst").meta.content_type == "a/b"
    with pytest.raises(InvalidRequest):
        layer.copy("plain", "src", None, "plain", "src")
    replaced, _ = layer.copy("plain", "src", None, "plain", "src",
                             meta=ObjectMeta(content_type="c/d"))
    assert replaced.meta.content_type == "c/d"
    assert layer.metadata.content(sha(data)).refs == 2     # the replaced src + dst


def test_multipart_manifest_reads_only_the_parts_a_range_covers(metadata, contents):
    layer = ObjectLayer(metadata, contents)
    layer.create_bucket("mpu")
    multipart = Multipart(layer, min_part_size=1000)
    upload = multipart.create("mpu", "big", ObjectMeta(content_type="video/mp4"))
    parts = [os.urandom(1500), os.urandom(1200), os.urandom(700)]
    etags = []
    for number, data in enumerate(parts, 1):
        part = multipart.upload_part(upload.upload_id, number, chunks(data),
                                     Expect(size=len(data)))
        etags.append(part.etag)
    extra = multipart.upload_part(upload.upload_id, 9, chunks(b"x" * 1000), Expect(size=1000))
    with pytest.raises(InvalidPartOrder):
        multipart.complete(upload.upload_id, [Requested(2, etags[1]), Requested(1, etags[0])])
    with pytest.raises(InvalidPart):
        multipart.complete(upload.upload_id, [Requested(1, "wrong")])
    with pytest.raises(MalformedRequest):
        multipart.complete(upload.upload_id, [])
    requested = [Requested(i + 1, f'"{e}"') for i, e in enumerate(etags)]
    version = multipart.complete(upload.upload_id, requested)
    expected = hashlib.md5(b"".join(bytes.fromhex(e) for e in etags)).hexdigest() + "-3"
    assert version.etag == expected and version.size == 3400
    assert multipart.complete(upload.upload_id, requested).version_id == version.version_id
    whole = b"".join(parts)
    assert read(layer, "mpu", "big") == whole
    contents.opened.clear()
    assert read(layer, "mpu", "big", byte_range="bytes=1600-1700") == whole[1600:1701]
    assert [h for h, _, _ in contents.opened] == [sha(parts[1])]
    reader = layer.open("mpu", "big", part_number=3)
    assert b"".join(reader) == parts[2] and reader.parts_count == 3
    assert metadata.content(extra.hash).refs == 0          # not listed: released
    small = multipart.create("mpu", "small")
    for number in (1, 2):
        multipart.upload_part(small.upload_id, number, chunks(b"s" * 10), Expect(size=10))
    tag = hashlib.md5(b"s" * 10).hexdigest()
    with pytest.raises(EntityTooSmall):
        multipart.complete(small.upload_id, [Requested(1, tag), Requested(2, tag)])
    multipart.abort(small.upload_id)
    with pytest.raises(NoSuchUpload):
        multipart.abort(small.upload_id)


def test_copy_part_points_at_existing_content(metadata, contents):
    layer = ObjectLayer(metadata, contents)
    layer.create_bucket("mpu")
    source = os.urandom(4000)
    put(layer, "src", source, bucket="mpu")
    multipart = Multipart(layer, min_part_size=1000)
    upload = multipart.create("mpu", "assembled")
    commits = contents.commits
    one, _ = multipart.copy_part(upload.upload_id, 1, "mpu", "src", None, (0, 1999))
    two, _ = multipart.copy_part(upload.upload_id, 2, "mpu", "src", None, (2000, 3999))
    assert contents.commits == commits
    multipart.complete(upload.upload_id, [Requested(1, one.etag), Requested(2, two.etag)])
    assert read(layer, "mpu", "assembled") == source
    assert one.etag == hashlib.md5(source[:2000]).hexdigest()


def test_sweeper_collects_unreferenced_content_after_its_grace(layer, metadata):
    put(layer, "k", b"sweep me")
    layer.delete("plain", "k")
    collected = []
    upload = Multipart(layer).create("plain", "idle")
    assert Sweeper(metadata, collected.append, gc_grace=3600, multipart_ttl=3600).sweep() \
        == (0, 0)
    assert Sweeper(metadata, collected.append, gc_grace=0, multipart_ttl=0).sweep() == (1, 1)
    assert collected == [sha(b"sweep me")] and metadata.content(sha(b"sweep me")) is None
    assert metadata.upload(upload.upload_id) is None
