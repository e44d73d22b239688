"""Bucket operations: ListBuckets, CreateBucket, HeadBucket, DeleteBucket, location,
versioning, and the canned ACLs that are accepted and ignored."""
from __future__ import annotations

import datetime

from api_server.s3 import xml
from api_server.s3.errors import S3Error, malformed_xml
from api_server.s3.request import Request, Response, empty, xml_response
from lib.metadata import ENABLED, SUSPENDED, UNVERSIONED

OWNER = [("ID", "tessera"), ("DisplayName", "tessera")]


def iso_time(seconds: float) -> str:
    """S3's timestamp form: ``2026-12-03T08:31:30.000Z`` (formatted by hand: a listing
    formats a thousand, and strftime takes longer than the rest of the entry)."""
    m = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return (f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:"
            f"{m.second:02d}.{m.microsecond // 1000:03d}Z")


def list_buckets(app, req: Request) -> Response:
    found = app.layer.buckets()
    return xml_response(xml.render("ListAllMyBucketsResult", [
        ("Owner", OWNER),
        ("Buckets", [("Bucket", [("Name", b.name), ("CreationDate", iso_time(b.created))])
                     for b in found]),
    ]))


def create(app, req: Request) -> Response:
    body = xml.read_body(req.input)
    if body.strip():
        config = xml.parse(body, "CreateBucketConfiguration")
        xml.child_text(config, "LocationConstraint")       # any region: one cluster
    owner = req.auth.access_key if req.auth else ""
    app.layer.create_bucket(req.bucket, owner)
    return empty(200, [("Location", f"/{req.bucket}")])


def head(app, req: Request) -> Response:
    app.layer.bucket(req.bucket)
    return empty(200, [("x-amz-bucket-region", app.config.s3_region)])


def delete(app, req: Request) -> Response:
    app.layer.bucket(req.bucket)
    app.layer.delete_bucket(req.bucket)
    return empty(204)


def get_location(app, req: Request) -> Response:
    app.layer.bucket(req.bucket)
    region = app.config.s3_region
    return xml_response(xml.render("LocationConstraint", []) if region == "us-east-1" else
                        xml.render("LocationConstraint", []).replace(
                            b"></LocationConstraint>", f">{region}</LocationConstraint>".encode()))


def get_versioning(app, req: Request) -> Response:
    bucket = app.layer.bucket(req.bucket)
    status = bucket.versioning if bucket.versioning != UNVERSIONED else None
    return xml_response(xml.render("VersioningConfiguration", [("Status", status)]))


def put_versioning(app, req: Request) -> Response:
    app.layer.bucket(req.bucket)
    config = xml.parse(xml.read_body(req.input), "VersioningConfiguration")
    status = xml.child_text(config, "Status")
    if status not in (ENABLED, SUSPENDED):
        raise malformed_xml("Status must be Enabled or Suspended")
    if xml.child_text(config, "MfaDelete") == "Enabled":
        raise S3Error("NotImplemented", "MFA delete is not implemented by Tessera", 501)
    app.layer.set_versioning(req.bucket, status)
    return empty(200)


def acl_document() -> bytes:
    """The only ACL Tessera has: the owner has full control."""
    return xml.render("AccessControlPolicy", [
        ("Owner", OWNER),
        ("AccessControlList", [("Grant", [
            ("Grantee", [("ID", "tessera"), ("DisplayName", "tessera")]),
            ("Permission", "FULL_CONTROL")])]),
    ]).replace(b"<Grantee>", b'<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
                             b' xsi:type="CanonicalUser">')


def get_acl(app, req: Request) -> Response:
    app.layer.bucket(req.bucket)
    return xml_response(acl_document())


def put_acl(app, req: Request) -> Response:
    """Canned and explicit ACLs are accepted and ignored (one owner, full control)."""
    app.layer.bucket(req.bucket)
    xml.read_body(req.input)
    return empty(200)
