"""Prefetch jobs: keys to fetch from a bucket's origin ahead of any GET, run by the task
workers (``prefetch`` tasks, ``lib/tasks.py``), their progress kept as metadata records.

A job is one record (``prefetch``, job id) with its bucket and key count; each key has a
record (``prefetch-key``, ``<job>/<index>``) whose ``state`` goes ``queued`` -> ``stored``
(fetched and stored), ``present`` (it had a version already), ``retrying`` (the origin
failed; the task comes back after its backoff) or ``failed`` (404 at the origin, or the last
attempt failed).  Each key record is written only by the task of that key, so no two writers
race on one record.
"""
from __future__ import annotations

import logging
import time
import uuid

from lib.errors import OriginError, OriginNotFound
from lib.metadata import MetadataStore
from lib.objects.origin import OriginLayer
from lib.tasks import Task, TaskPublisher

log = logging.getLogger(__name__)

JOB_KIND = "prefetch"
KEY_KIND = "prefetch-key"
STATES = ("queued", "stored", "present", "retrying", "failed")
#: Most keys one request may name.
MAX_KEYS = 1000


def start(metadata: MetadataStore, tasks: TaskPublisher, bucket: str, keys: list[str]) -> dict:
    """Record a job and queue one task per key; the job's first progress report."""
    job = uuid.uuid4().hex[:16]
    metadata.put_record(JOB_KIND, job, {"bucket": bucket, "keys": len(keys),
                                        "created": time.time()})
    for i, key in enumerate(keys):
        record_id = f"{job}/{i:04d}"
        state = {"key": key, "state": "queued"}
        if not tasks.publish(Task.prefetch(bucket, key, record_id)):
            state = {"key": key, "state": "failed", "error": "the task queue is unreachable"}
        metadata.put_record(KEY_KIND, record_id, state)
    return progress(metadata, job)


def run(layer: OriginLayer, metadata: MetadataStore, task: Task, last_attempt: bool) -> None:
    """One key of a job; an origin failure is raised again (the task is retried) unless
    this was its last attempt."""
    record = {"key": task.name}
    try:
        record["state"] = layer.prefetch(task.bucket, task.name)
    except OriginNotFound as exc:
        record.update(state="failed", error=str(exc))
    except OriginError as exc:
        record.update(state="failed" if last_attempt else "retrying", error=str(exc))
        metadata.put_record(KEY_KIND, task.job, record)
        raise
    metadata.put_record(KEY_KIND, task.job, record)
    log.info("prefetch %s/%r: %s", task.bucket, task.name, record["state"])


def progress(metadata: MetadataStore, job: str | None = None) -> dict:
    """Every job (or one), with the count of its keys in each state and the failed keys."""
    jobs = {id_: body for id_, body in metadata.records(JOB_KIND) if job in (None, id_)}
    report = {id_: {"job": id_, **body, **{state: 0 for state in STATES}, "errors": []}
              for id_, body in jobs.items()}
    for record_id, body in metadata.records(KEY_KIND):
        entry = report.get(record_id.split("/", 1)[0])
        if entry is None or body.get("state") not in STATES:
            continue
        entry[body["state"]] += 1
        if body.get("error") and len(entry["errors"]) < 100:
            entry["errors"].append({"key": body["key"], "state": body["state"],
                                    "error": body["error"]})
    for entry in report.values():
        entry["done"] = entry["stored"] + entry["present"] + entry["failed"] == entry["keys"]
    if job is not None:
        return report.get(job, {})
    return {"jobs": sorted(report.values(), key=lambda e: e["created"])}


def summary(metadata: MetadataStore) -> dict:
    """Totals over every job (for ``/api/v1/stats``): jobs, keys, and keys per state."""
    jobs = progress(metadata)["jobs"]
    totals = {"jobs": len(jobs), "keys": sum(j["keys"] for j in jobs)}
    totals.update({state: sum(j[state] for j in jobs) for state in STATES})
    return totals
