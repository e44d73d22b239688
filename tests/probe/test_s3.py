"""The S3 API against a real cluster, driven with boto3 as users drive it."""
from __future__ import annotations

import hashlib
import os
import uuid

import pytest
import requests
from botocore.exceptions import ClientError

from lib.config import Config
from lib.hashing import sha256_b64
from tests.probe.conftest import MIN_PART_SIZE, s3_client, s3_endpoint


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def status(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def bucket(s3):
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            s3.delete_object(Bucket=name, Key=item["Key"], VersionId=item["VersionId"])
    for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    s3.delete_bucket(Bucket=name)


# -- buckets -----------------------------------------------------------------------------------

def test_bucket_lifecycle(s3):
    name = f"life-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket=name)
    with pytest.raises(ClientError) as caught:
        s3.create_bucket(Bucket=name)
    assert code(caught.value) == "BucketAlreadyOwnedByYou"
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    with pytest.raises(ClientError) as caught:
        s3.delete_bucket(Bucket=name)
    assert code(caught.value) == "BucketNotEmpty"
    s3.delete_object(Bucket=name, Key="k")
    s3.delete_bucket(Bucket=name)
    with pytest.raises(ClientError) as caught:
        s3.head_bucket(Bucket=name)
    assert status(caught.value) == 404
    with pytest.raises(ClientError) as caught:
        s3.delete_bucket(Bucket=name)
    assert code(caught.value) == "NoSuchBucket"
    assert s3.get_bucket_location(Bucket="book")["LocationConstraint"] in (None, "")


@pytest.mark.parametrize("name", ["ab", "UPPER", "a..b", "-lead", "192.168.1.1", "x" * 64])
def test_invalid_bucket_names(s3, name):
    with pytest.raises(ClientError) as caught:
        s3.create_bucket(Bucket=name)
    assert code(caught.value) == "InvalidBucketName"


# -- objects -----------------------------------------------------------------------------------

def test_put_get_head_round_trip(s3, bucket):
    data = os.urandom(300_000)
    put = s3.put_object(Bucket=bucket, Key="dir/obj", Body=data, ContentType="text/x-test",
                        Metadata={"colour": "green", "n": "1"}, CacheControl="no-cache",
                        ContentDisposition="attachment")
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="dir/obj")
    assert got["Body"].read() == data
    assert got["ContentType"] == "text/x-test" and got["Metadata"] == {"colour": "green", "n": "1"}
    assert got["CacheControl"] == "no-cache" and got["ContentDisposition"] == "attachment"
    head = s3.head_object(Bucket=bucket, Key="dir/obj")
    assert head["ContentLength"] == len(data) and head["ETag"] == put["ETag"]
    part = s3.get_object(Bucket=bucket, Key="dir/obj", Range="bytes=1000-1999")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["ContentRange"] == f"bytes 1000-1999/{len(data)}"
    assert part["Body"].read() == data[1000:2000]
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="dir/obj", Range=f"bytes={len(data)}-")
    assert code(caught.value) == "InvalidRange"
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="dir/obj", IfNoneMatch=put["ETag"])
    assert status(caught.value) == 304
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="dir/obj", IfMatch='"nope"')
    assert status(caught.value) == 412
    over = s3.get_object(Bucket=bucket, Key="dir/obj", ResponseContentType="image/png",
                         ResponseContentDisposition="inline")
    assert over["ContentType"] == "image/png" and over["ContentDisposition"] == "inline"
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="missing")
    assert code(caught.value) == "NoSuchKey"
    assert caught.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"] == \
        caught.value.response["Error"].get("RequestId", caught.value.response[
            "ResponseMetadata"]["RequestId"])


def test_checksums_are_verified_and_echoed(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="c", Body=b"checksummed", ChecksumAlgorithm="SHA256")
    assert put["ChecksumSHA256"] == sha256_b64(b"checksummed")
    head = s3.head_object(Bucket=bucket, Key="c", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == put["ChecksumSHA256"]
    for algorithm in ("CRC32", "CRC32C", "SHA1"):
        s3.put_object(Bucket=bucket, Key=f"c-{algorithm}", Body=b"x" * 1000,
                      ChecksumAlgorithm=algorithm)
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=bucket, Key="bad", Body=b"data", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")
    assert code(caught.value) == "BadDigest"
    with pytest.raises(ClientError) as caught:
        s3.head_object(Bucket=bucket, Key="bad")
    assert status(caught.value) == 404


KEYS = ["a", "a/b", "a//b", "/lead", "trail/", "sp ace+plus%25", "ü/日本/🎉", "q?x=1&y#z",
        "k" * 1024]


def test_odd_keys_round_trip_and_list_in_byte_order(s3, bucket):
    for key in KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    for key in KEYS:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(KEYS, key=lambda k: k.encode())
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=bucket, Key="k" * 1025, Body=b"")
    assert code(caught.value) == "KeyTooLongError"


def test_listing_v2_v1_and_paging(s3, bucket):
    keys = [f"p/{i:03d}" for i in range(25)] + ["p/sub/1", "p/sub/2", "q", "r/s"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    seen = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                              PaginationConfig={"PageSize": 7}):
        seen += [o["Key"] for o in page.get("Contents", [])]
    assert seen == sorted(keys)
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["p/", "r/"]
    assert [o["Key"] for o in top["Contents"]] == ["q"] and top["KeyCount"] == 3
    inner = s3.list_objects_v2(Bucket=bucket, Prefix="p/", Delimiter="/", MaxKeys=10)
    assert inner["IsTruncated"] and inner["KeyCount"] == 10
    rest = s3.list_objects_v2(Bucket=bucket, Prefix="p/", Delimiter="/",
                              ContinuationToken=inner["NextContinuationToken"])
    assert [p["Prefix"] for p in rest["CommonPrefixes"]] == ["p/sub/"]
    assert len(rest["Contents"]) == 15 and not rest["IsTruncated"]
    assert s3.list_objects_v2(Bucket=bucket, MaxKeys=0)["KeyCount"] == 0
    after = s3.list_objects_v2(Bucket=bucket, StartAfter="p/024")
    assert [o["Key"] for o in after["Contents"]] == ["p/sub/1", "p/sub/2", "q", "r/s"]
    v1 = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=1)
    assert v1["IsTruncated"] and v1["NextMarker"] == "p/"
    v1b = s3.list_objects(Bucket=bucket, Delimiter="/", Marker=v1["NextMarker"])
    assert [o["Key"] for o in v1b["Contents"]] == ["q"]
    with pytest.raises(ClientError) as caught:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="garbage")
    assert code(caught.value) == "InvalidArgument"
    with pytest.raises(ClientError) as caught:
        s3.list_objects_v2(Bucket=bucket, EncodingType="bogus")
    assert code(caught.value) == "InvalidArgument"
    encoded = s3.list_objects_v2(Bucket=bucket, Prefix="r/", EncodingType="url")
    assert [o["Key"] for o in encoded["Contents"]] == ["r/s"]


def test_book_objects_are_the_book_bucket(s3, client):
    data = os.urandom(5000)
    name = f"interop-{uuid.uuid4().hex[:8]}"
    assert client.put(name, data, sha256_b64(data)).status_code == 200
    assert s3.get_object(Bucket=Config.book_bucket, Key=name)["Body"].read() == data
    s3.put_object(Bucket=Config.book_bucket, Key=name, Body=b"from s3")
    assert client.get(name).content == b"from s3"
    assert client.get(name, params={"version": 1}).content == data
    versions = s3.list_object_versions(Bucket=Config.book_bucket, Prefix=name)["Versions"]
    assert len(versions) == 2


def test_copy(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"copy me", ContentType="text/a",
                  Metadata={"m": "1"})
    other = f"o-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=other)
    try:
        result = s3.copy_object(Bucket=other, Key="dst", CopySource={"Bucket": bucket,
                                                                   "Key": "src"})
        assert result["CopyObjectResult"]["ETag"] == s3.head_object(
            Bucket=bucket, Key="src")["ETag"]
        got = s3.get_object(Bucket=other, Key="dst")
        assert got["Body"].read() == b"copy me" and got["Metadata"] == {"m": "1"}
        s3.delete_object(Bucket=other, Key="dst")
    finally:
        s3.delete_bucket(Bucket=other)
    with pytest.raises(ClientError) as caught:
        s3.copy_object(Bucket=bucket, Key="src", CopySource=f"{bucket}/src")
    assert code(caught.value) == "InvalidRequest"
    s3.copy_object(Bucket=bucket, Key="src", CopySource=f"{bucket}/src",
                   MetadataDirective="REPLACE", ContentType="text/b", Metadata={"m": "2"})
    head = s3.head_object(Bucket=bucket, Key="src")
    assert head["ContentType"] == "text/b" and head["Metadata"] == {"m": "2"}
    with pytest.raises(ClientError) as caught:
        s3.copy_object(Bucket=bucket, Key="x", CopySource=f"{bucket}/src",
                       CopySourceIfMatch='"nope"')
    assert status(caught.value) == 412
    with pytest.raises(ClientError) as caught:
        s3.copy_object(Bucket=bucket, Key="x", CopySource=f"{bucket}/missing")
    assert code(caught.value) == "NoSuchKey"


def test_delete_objects(s3, bucket):
    for key in ("d1", "d2", "d3"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "d1"}, {"Key": "d2"}, {"Key": "never"}]})
    assert sorted(d["Key"] for d in answer["Deleted"]) == ["d1", "d2", "never"]
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "d3"}], "Quiet": True})
    assert "Deleted" not in quiet
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_versioning_state_machine(s3, bucket):
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    unversioned = s3.put_object(Bucket=bucket, Key="k", Body=b"zero")
    assert "VersionId" not in unversioned
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    one = s3.put_object(Bucket=bucket, Key="k", Body=b"one")["VersionId"]
    two = s3.put_object(Bucket=bucket, Key="k", Body=b"two")["VersionId"]
    assert len({one, two, "null"}) == 3
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"zero"
    deleted = s3.delete_object(Bucket=bucket, Key="k")
    assert deleted["DeleteMarker"] is True
    marker = deleted["VersionId"]
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="k")
    assert code(caught.value) == "NoSuchKey"
    assert caught.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == \
        "true"
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="k", VersionId=marker)
    assert status(caught.value) == 405
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="k", VersionId="00000000deadbeef")
    assert code(caught.value) == "NoSuchVersion"
    listed = s3.list_object_versions(Bucket=bucket)
    assert [v["VersionId"] for v in listed["Versions"]] == [two, one, "null"]
    assert [(m["VersionId"], m["IsLatest"]) for m in listed["DeleteMarkers"]] == [(marker, True)]
    s3.delete_object(Bucket=bucket, Key="k", VersionId=marker)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"
    page = s3.list_object_versions(Bucket=bucket, MaxKeys=1)
    assert page["IsTruncated"] and page["NextVersionIdMarker"] == two
    rest = s3.list_object_versions(Bucket=bucket, KeyMarker="k", VersionIdMarker=two)
    assert [v["VersionId"] for v in rest["Versions"]] == [one, "null"]
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"three")
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"three"
    answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "k", "VersionId": one}, {"Key": "k", "VersionId": "null"}]})
    assert sorted(d["VersionId"] for d in answer["Deleted"]) == sorted([one, "null"])


# -- multipart -----------------------------------------------------------------------------------

def test_multipart_upload(s3, bucket):
    size = MIN_PART_SIZE
    parts = [os.urandom(size), os.urandom(size), os.urandom(1000)]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp", ContentType="video/x",
                                        Metadata={"a": "b"})["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=i + 1,
                            Body=data)["ETag"] for i, data in enumerate(parts)]
    listed = s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2, 3]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [
        upload]
    with pytest.raises(ClientError) as caught:
        s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                     MultipartUpload={"Parts": [
                                         {"PartNumber": 2, "ETag": etags[1]},
                                         {"PartNumber": 1, "ETag": etags[0]}]})
    assert code(caught.value) == "InvalidPartOrder"
    with pytest.raises(ClientError) as caught:
        s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                     MultipartUpload={"Parts": [
                                         {"PartNumber": 1, "ETag": '"0000"'}]})
    assert code(caught.value) == "InvalidPart"
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in
                                   enumerate(etags)]})
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-3"'
    whole = b"".join(parts)
    got = s3.get_object(Bucket=bucket, Key="mp")
    assert got["Body"].read() == whole and got["ContentType"] == "video/x"
    assert got["Metadata"] == {"a": "b"}
    span = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={size - 10}-{size + 9}")
    assert span["Body"].read() == whole[size - 10:size + 10]
    second = s3.get_object(Bucket=bucket, Key="mp", PartNumber=2)
    assert second["Body"].read() == parts[1] and second["PartsCount"] == 3
    with pytest.raises(ClientError) as caught:
        s3.head_object(Bucket=bucket, Key="mp", PartNumber=4)
    assert code(caught.value) in ("InvalidPart", "416", "InvalidRange") or status(
        caught.value) in (400, 416)
    with pytest.raises(ClientError) as caught:
        s3.upload_part(Bucket=bucket, Key="mp", UploadId="nope", PartNumber=1, Body=b"x")
    assert code(caught.value) == "NoSuchUpload"


def test_multipart_small_parts_and_abort(s3, bucket):
    upload = s3.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    etags = [s3.upload_part(Bucket=bucket, Key="small", UploadId=upload, PartNumber=n,
                            Body=b"s" * 100)["ETag"] for n in (1, 2)]
    with pytest.raises(ClientError) as caught:
        s3.complete_multipart_upload(Bucket=bucket, Key="small", UploadId=upload,
                                     MultipartUpload={"Parts": [
                                         {"PartNumber": n, "ETag": e} for n, e in
                                         zip((1, 2), etags)]})
    assert code(caught.value) == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket=bucket, Key="small", UploadId=upload)
    with pytest.raises(ClientError) as caught:
        s3.list_parts(Bucket=bucket, Key="small", UploadId=upload)
    assert code(caught.value) == "NoSuchUpload"


def test_upload_file_and_download_file_in_concurrent_parts(s3, bucket, tmp_path):
    from boto3.s3.transfer import TransferConfig

    source = tmp_path / "big"
    source.write_bytes(os.urandom(40 * 1024 * 1024 + 17))
    config = TransferConfig(multipart_threshold=5 * 1024 * 1024,
                            multipart_chunksize=5 * 1024 * 1024, max_concurrency=8)
    s3.upload_file(str(source), bucket, "big", Config=config)
    target = tmp_path / "back"
    s3.download_file(bucket, "big", str(target), Config=config)
    assert target.read_bytes() == source.read_bytes()
    assert s3.head_object(Bucket=bucket, Key="big")["ETag"].endswith('-9"')


def test_upload_part_copy(s3, bucket):
    source = os.urandom(2 * MIN_PART_SIZE)
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    parts = []
    for n, (first, last) in enumerate([(0, MIN_PART_SIZE - 1),
                                       (MIN_PART_SIZE, 2 * MIN_PART_SIZE - 1)], 1):
        copied = s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=upload,
                                     PartNumber=n, CopySource={"Bucket": bucket, "Key": "src"},
                                     CopySourceRange=f"bytes={first}-{last}")
        parts.append({"PartNumber": n, "ETag": copied["CopyPartResult"]["ETag"]})
    with pytest.raises(ClientError) as caught:
        s3.upload_part_copy(Bucket=bucket, Key="assembled", UploadId=upload, PartNumber=3,
                            CopySource={"Bucket": bucket, "Key": "src"},
                            CopySourceRange="bytes=0-")
    assert code(caught.value) == "InvalidArgument"
    s3.complete_multipart_upload(Bucket=bucket, Key="assembled", UploadId=upload,
                                 MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="assembled")["Body"].read() == source


# -- authentication ------------------------------------------------------------------------------

def test_refused_credentials_write_nothing(cluster, s3, bucket):
    wrong = s3_client(cluster, secret_key="wrong-secret")
    with pytest.raises(ClientError) as caught:
        wrong.put_object(Bucket=bucket, Key="forged", Body=b"x")
    assert code(caught.value) == "SignatureDoesNotMatch" and status(caught.value) == 403
    unknown = s3_client(cluster, access_key="nobody")
    with pytest.raises(ClientError) as caught:
        unknown.put_object(Bucket=bucket, Key="forged", Body=b"x")
    assert code(caught.value) == "InvalidAccessKeyId"
    anonymous = requests.put(f"{s3_endpoint(cluster)}/{bucket}/forged", data=b"x", timeout=10)
    assert anonymous.status_code == 403 and b"AccessDenied" in anonymous.content
    assert anonymous.headers["x-amz-request-id"].encode() in anonymous.content
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_presigned_urls(s3, bucket):
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre"},
                                        ExpiresIn=300)
    assert requests.put(put_url, data=b"presigned body", timeout=10).status_code == 200
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre"},
                                        ExpiresIn=300)
    answer = requests.get(get_url, timeout=10)
    assert answer.status_code == 200 and answer.content == b"presigned body"
    tampered = get_url.replace("pre?", "other?")
    assert requests.get(tampered, timeout=10).status_code == 403
    expired = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre"},
                                        ExpiresIn=604801)
    refused = requests.get(expired, timeout=10)
    assert refused.status_code in (400, 403)


def test_unimplemented_operations_answer_501(s3, bucket):
    with pytest.raises(ClientError) as caught:
        s3.get_bucket_policy(Bucket=bucket)
    assert status(caught.value) == 501 and code(caught.value) == "NotImplemented"
    s3.put_bucket_acl(Bucket=bucket, ACL="private")            # accepted, ignored
    s3.put_object(Bucket=bucket, Key="acl", Body=b"", ACL="public-read")


def test_virtual_hosted_style(cluster, s3, bucket, monkeypatch):
    """``<bucket>.<S3_DOMAIN>``: the test resolves the name to the api server itself."""
    import socket

    import boto3
    from botocore.config import Config as BotoConfig

    from tests.probe.conftest import S3_DOMAIN

    host, port = cluster.api[0].env["S3_LISTEN_ADDRESS"].rsplit(":", 1)
    real = socket.getaddrinfo

    def resolve(name, *args, **kwargs):
        if isinstance(name, str) and name.endswith(S3_DOMAIN):
            name = host
        return real(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    virtual = boto3.client("s3", endpoint_url=f"http://{S3_DOMAIN}:{port}",
                           region_name="us-east-1", aws_access_key_id=Config.s3_access_key,
                           aws_secret_access_key=Config.s3_secret_key,
                           config=BotoConfig(s3={"addressing_style": "virtual"},
                                             retries={"max_attempts": 1}))
    virtual.put_object(Bucket=bucket, Key="v/hosted", Body=b"virtual")
    assert s3.get_object(Bucket=bucket, Key="v/hosted")["Body"].read() == b"virtual"
    assert [o["Key"] for o in virtual.list_objects_v2(Bucket=bucket)["Contents"]] == \
        ["v/hosted"]


def test_an_early_error_leaves_the_connection_usable(cluster, bucket):
    session = requests.Session()
    url = f"{s3_endpoint(cluster)}/{bucket}/x"
    refused = session.put(url, data=os.urandom(200_000), timeout=10)      # anonymous
    assert refused.status_code == 403 and refused.headers.get("Connection") != "close"
    again = session.get(url, timeout=10)
    assert again.status_code == 403


def test_a_data_server_lost_during_a_multipart_upload(make_cluster):
    """The upload completes with one data server killed between its parts, and the
    object is rebuilt to full width afterwards."""
    from tests.probe.conftest import Client, wait_for

    cluster = make_cluster()
    s3 = s3_client(cluster)
    s3.create_bucket(Bucket="lossy")
    upload = s3.create_multipart_upload(Bucket="lossy", Key="k")["UploadId"]
    parts = [os.urandom(2 * 1024 * 1024 + 1) for _ in range(3)]
    etags = [s3.upload_part(Bucket="lossy", Key="k", UploadId=upload, PartNumber=1,
                            Body=parts[0])["ETag"]]
    cluster.kill_node(cluster.data[2])
    for n in (2, 3):
        etags.append(s3.upload_part(Bucket="lossy", Key="k", UploadId=upload, PartNumber=n,
                                    Body=parts[n - 1])["ETag"])
    s3.complete_multipart_upload(Bucket="lossy", Key="k", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    assert s3.get_object(Bucket="lossy", Key="k")["Body"].read() == b"".join(parts)
    client = Client(cluster)
    for data in parts:
        wait_for(lambda: len(client.shard_files(sha256_b64(data))) == 6, timeout=30)


def test_conditional_writes_with_boto3(cluster, s3, bucket):
    """16 create-only PUTs of one key through two api servers: one winner; read-modify-write
    with If-Match loses no update; Complete, Copy and Delete honour their conditions."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    clients = [s3_client(cluster, 0), s3_client(cluster, 1)]
    start = threading.Barrier(16)

    def create(i: int) -> int:
        start.wait()
        try:
            clients[i % 2].put_object(Bucket=bucket, Key="once", Body=f"{i}".encode(),
                                      IfNoneMatch="*")
            return 200
        except ClientError as exc:
            return status(exc)

    with ThreadPoolExecutor(16) as pool:
        assert sorted(pool.map(create, range(16))) == [200] + [412] * 15

    s3.put_object(Bucket=bucket, Key="counter", Body=b"0")
    wins = []

    def increment(i: int) -> None:
        mine = 0
        for _ in range(100):
            if mine == 3:
                return
            got = clients[i % 2].get_object(Bucket=bucket, Key="counter")
            value = int(got["Body"].read())
            try:
                clients[i % 2].put_object(Bucket=bucket, Key="counter", IfMatch=got["ETag"],
                                          Body=str(value + 1).encode())
                mine += 1
                wins.append(value + 1)
            except ClientError as exc:
                assert status(exc) in (409, 412), exc.response

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(increment, range(6)))
    assert int(s3.get_object(Bucket=bucket, Key="counter")["Body"].read()) == len(wins) == 18
    assert sorted(wins) == list(range(1, 19))

    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=bucket, Key="absent", Body=b"x", IfMatch='"abc"')
    assert code(caught.value) == "NoSuchKey"
    upload = s3.create_multipart_upload(Bucket=bucket, Key="once")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="once", UploadId=upload, PartNumber=1,
                          Body=b"part")["ETag"]
    with pytest.raises(ClientError) as caught:
        s3.complete_multipart_upload(Bucket=bucket, Key="once", UploadId=upload,
                                     IfNoneMatch="*", MultipartUpload={
                                         "Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert status(caught.value) == 412
    with pytest.raises(ClientError) as caught:
        s3.copy_object(Bucket=bucket, Key="once", CopySource=f"{bucket}/counter",
                       IfNoneMatch="*")
    assert status(caught.value) == 412
    with pytest.raises(ClientError) as caught:
        s3.delete_object(Bucket=bucket, Key="counter", IfMatch='"stale"')
    assert status(caught.value) == 412
    s3.abort_multipart_upload(Bucket=bucket, Key="once", UploadId=upload)


def test_skewed_clock_and_expired_urls_are_refused(cluster, s3, bucket):
    """Signed 20 minutes ago (botocore's pure-Python signers, their clock moved back)."""
    import datetime
    from unittest import mock

    from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    credentials = Credentials(Config.s3_access_key, Config.s3_secret_key)
    url = f"{s3_endpoint(cluster)}/{bucket}/skewed"
    late = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - \
        datetime.timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=late):
        put = AWSRequest(method="PUT", url=url, data=b"late",
                         headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
        S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(put)
        presigned = AWSRequest(method="GET", url=url)
        S3SigV4QueryAuth(credentials, "s3", "us-east-1", expires=60).add_auth(presigned)
    answer = requests.put(url, data=b"late", headers=dict(put.headers.items()), timeout=10)
    assert answer.status_code == 403 and b"RequestTimeTooSkewed" in answer.content
    expired = requests.get(presigned.url, timeout=10)
    assert expired.status_code == 403 and b"AccessDenied" in expired.content
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
