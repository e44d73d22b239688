"""Management of third-party origins: which origin each bucket fetches missing keys from
(``/api/v1/origins/<bucket>``), and prefetch jobs (``/api/v1/origin/prefetch``).

An origin is kept as the metadata record (``origin``, bucket); the api servers re-read it
within ``ORIGIN_CACHE_TTL`` seconds.  A secret key is stored, never answered: the answers
say ``secret_key_set`` instead.  A PUT of an ``s3`` origin without ``secret_key`` keeps the
one already stored.  The book bucket falls back to ``ORIGIN_URL`` when it has no record.
"""
from __future__ import annotations

from flask import current_app, jsonify, request

from api_server.admin import AdminError, bp
from lib.objects import prefetch
from lib.objects.origin import RECORD_KIND
from lib.upstream import OriginSpec


def _api():
    return current_app.extensions["tessera.api"]


def _json_body() -> dict:
    body = request.get_json(silent=True) if request.content_length and \
        request.content_length <= 64 * 1024 else None
    if not isinstance(body, dict):
        raise AdminError(400, "MalformedRequest", "the body must be a JSON object (at most "
                         "64 KiB)")
    return body


def _describe(bucket: str) -> dict | None:
    api = _api()
    record = api.metadata.record(RECORD_KIND, bucket)
    if record is not None:
        return {"bucket": bucket, "origin": OriginSpec.from_record(record).public(),
                "source": "management API"}
    if bucket == api.config.book_bucket and api.config.origin_url:
        return {"bucket": bucket, "origin": {"kind": "http", "url": api.config.origin_url},
                "source": "ORIGIN_URL"}
    return None


@bp.get("/origins")
def list_origins():
    api = _api()
    buckets = [bucket for bucket, _ in api.metadata.records(RECORD_KIND)]
    if api.config.origin_url and api.config.book_bucket not in buckets:
        buckets.append(api.config.book_bucket)
    return jsonify(origins=[_describe(bucket) for bucket in sorted(buckets)])


@bp.get("/origins/<bucket>")
def get_origin(bucket: str):
    described = _describe(bucket)
    if described is None:
        raise AdminError(404, "NoSuchOrigin", f"bucket {bucket!r} has no origin")
    return jsonify(described)


@bp.put("/origins/<bucket>")
def put_origin(bucket: str):
    api = _api()
    api.layer.bucket(bucket)                          # NoSuchBucket: 404
    body = _json_body()
    old = api.metadata.record(RECORD_KIND, bucket) or {}
    if body.get("kind") == "s3" and not body.get("secret_key") and old.get("kind") == "s3":
        body = {**body, "secret_key": old.get("secret_key", "")}
    spec = OriginSpec.from_record(body)
    api.metadata.put_record(RECORD_KIND, bucket, spec.to_record())
    api.layer.origins.forget(bucket)
    return jsonify(_describe(bucket))


@bp.delete("/origins/<bucket>")
def delete_origin(bucket: str):
    api = _api()
    if not api.metadata.delete_record(RECORD_KIND, bucket):
        raise AdminError(404, "NoSuchOrigin", f"bucket {bucket!r} has no origin record")
    api.layer.origins.forget(bucket)
    return "", 204


@bp.post("/origin/prefetch")
def post_prefetch():
    """``{"bucket": "<bucket, default the book's>", "keys": ["k", ...]}``: one task per key
    for the workers; 202 with the job's progress."""
    api = _api()
    body = _json_body()
    bucket = body.get("bucket") or api.config.book_bucket
    keys = body.get("keys")
    if not isinstance(bucket, str) or not isinstance(keys, list) or not keys or \
            len(keys) > prefetch.MAX_KEYS or not all(isinstance(k, str) and k for k in keys):
        raise AdminError(400, "MalformedRequest", "keys must be a list of 1 to "
                         f"{prefetch.MAX_KEYS} non-empty strings, bucket a string")
    api.layer.bucket(bucket)
    if api.layer.origins.of(bucket) is None:
        raise AdminError(409, "NoOrigin", f"bucket {bucket!r} has no origin to prefetch from")
    if api.tasks is None:
        raise AdminError(503, "NoTaskQueue", "this api server has no task queue")
    report = prefetch.start(api.metadata, api.tasks, bucket, keys)
    report["worker"] = api.tasks.has_worker()
    return jsonify(report), 202


@bp.get("/origin/prefetch")
def get_prefetch():
    """Every job's progress, or one job's with ``?job=<id>``."""
    job = request.args.get("job")
    if job is None:
        return jsonify(prefetch.progress(_api().metadata) | {
            "total": prefetch.summary(_api().metadata)})
    report = prefetch.progress(_api().metadata, job)
    if not report:
        raise AdminError(404, "NoSuchJob", f"no prefetch job {job!r}")
    return jsonify(report)
