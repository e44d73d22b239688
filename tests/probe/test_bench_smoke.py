"""Smoke test of the benchmark (issue 6): ``scripts/bench.py --quick --json`` runs end to end
against its own cluster and reports every required number.

No timing assertions: the numbers depend on the machine and on whatever else runs on it.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lib.config import Config

REPO = Path(__file__).resolve().parents[2]
REQUIRED_KEYS = (
    "large_put_mbps", "large_get_mbps", "degraded_get_mbps",
    "baseline_upload_mbps", "baseline_download_mbps",
    "small_put_ops", "small_get_ops", "small_put_p50_ms", "small_get_p50_ms",
    "locate_p50_ms", "api_peak_rss_mb",
)


@pytest.mark.probe
def test_quick_json_run_reports_every_required_number():
    process = subprocess.Popen([sys.executable, "scripts/bench.py", "--quick", "--json"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        stdout, stderr = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        process.terminate()              # SIGTERM: the bench stops its cluster, then exits
        stdout, stderr = process.communicate(timeout=60)
        pytest.fail(f"bench --quick still running after 180 s; stderr:\n{stderr[-4000:]}")
    assert process.returncode == 0, stderr[-4000:]
    result = json.loads(stdout)
    for key in REQUIRED_KEYS:
        value = result.get(key)
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        assert value > 0, (key, value)


GROUP_KEYS = (
    "book_put_4k_ops", "book_get_1m_mbps", "s3_put_4k_ops", "s3_get_4k_ops", "s3_put_1m_mbps",
    "s3_get_1m_mbps", "s3_put_4k_ratio",
    "list_keys_p50_ms", "list_prefixes_p50_ms",
    "mp_book_put_mbps", "mp_single_put_mbps", "mp_multipart_put_mbps", "mp_multipart_put_ratio",
    "mp_single_get_mbps", "mp_multipart_get_mbps", "mp_complete_p50_ms",
    "sqlite_small_put_ops", "pg_small_put_ops", "pg_small_put_ratio", "pg_small_get_ops",
    "sqlite_list_keys_p50_ms", "pg_list_keys_p50_ms", "pg_list_prefixes_ratio",
    "cond_book_put_ops", "cond_book_none_match_ratio", "cond_book_match_ratio",
    "cond_s3_put_ops", "cond_s3_none_match_ratio", "cond_s3_match_ratio",
    "observe_api_us", "observe_data_us", "observe_small_put_share", "observe_small_get_share",
    "observe_small_put_cpu_ratio", "observe_small_get_cpu_ratio",
    "observed_small_put_ops", "unobserved_small_get_ops",
)


@pytest.mark.probe
def test_groups_run_with_tiny_sizes_and_print_their_rows():
    """Every group besides book, at sizes that only show it runs: the table has their rows
    and the JSON their numbers; the PostgreSQL cluster's schema is dropped."""
    tiny = ["--quick", "--small-seconds", "0.3",
            "--multipart-mib", "2", "--part-mib", "1", "--complete-parts", "5",
            "--list-keys", "30", "--samples", "3", "--large-count", "1"]
    # the table run leaves out observe, whose two clusters the JSON run has shown
    for extra in (["--only", "s3,list,multipart,pg,cond,observe", "--json"],
                  ["--only", "s3,list,multipart,pg,cond"]):
        process = subprocess.Popen([sys.executable, "scripts/bench.py", *tiny, *extra],
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        try:
            stdout, stderr = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            process.terminate()
            stdout, stderr = process.communicate(timeout=60)
            pytest.fail(f"bench groups still running after 240 s; stderr:\n{stderr[-4000:]}")
        assert process.returncode == 0, stderr[-4000:]
        assert f"bench_{process.pid}_" not in _schemas()
        if "--json" in extra:
            result = json.loads(stdout)
            for key in GROUP_KEYS:
                value = result.get(key)
                assert isinstance(value, (int, float)) and not isinstance(value, bool), \
                    (key, value)
                assert value > 0, (key, value)
            assert result["cluster_log_errors"] == 0
        else:
            for label in ("S3 4 KiB PUT", "S3 1 MiB GET", "list 15 keys", "list 15 prefixes",
                          "S3 multipart PUT", "Complete 5 parts", "pg small PUT",
                          "pg list 15 keys", "book If-None-Match", "S3 If-Match"):
                assert label in stdout, (label, stdout)


def _schemas() -> str:
    import psycopg

    with psycopg.connect("postgresql://127.0.0.1:5432/test") as conn:
        return " ".join(name for (name,) in conn.execute(
            "SELECT schema_name FROM information_schema.schemata"))


@pytest.mark.probe
def test_s3_endpoint_runs_the_s3_workloads_against_another_server_too(cluster, s3):
    """``--s3-endpoint`` with keys: the peer_* rows, here against the shared test cluster's S3
    listener (another S3 server on loopback); the bench's bucket there is removed after."""
    endpoint = cluster.api[0].env["S3_LISTEN_ADDRESS"]
    try:
        done = subprocess.run(
            [sys.executable, "scripts/bench.py", "--quick", "--only", "s3", "--json",
             "--small-seconds", "0.3", "--samples", "3", "--large-count", "1",
             "--s3-endpoint", endpoint, "--s3-access-key", Config.s3_access_key,
             "--s3-secret-key", Config.s3_secret_key],
            cwd=REPO, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-4000:]
        result = json.loads(done.stdout)
        for key in ("peer_put_4k_ops", "peer_get_4k_ops", "peer_put_1m_mbps",
                    "peer_get_1m_mbps", "peer_put_4k_ratio"):
            assert result.get(key, 0) > 0, (key, result.get(key))
        assert result["peer"] == endpoint
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench-s3"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket="bench-s3", Delete={"Objects": keys})
        with contextlib.suppress(s3.exceptions.NoSuchBucket):
            s3.delete_bucket(Bucket="bench-s3")


@pytest.mark.parametrize("argv, message", [
    (["--s3-endpoint", "10.1.2.3:9000"], "127.0.0.0/8"),
    (["--s3-endpoint", "127.0.3.9"], "HOST:PORT"),
    (["--s3-endpoint", "127.0.3.9:9000", "--s3-access-key", "", "--s3-secret-key", ""],
     "needs --s3-access-key"),
    (["--only", "book", "--s3-endpoint", "127.0.3.9:9000"], "add s3 to --only"),
])
def test_s3_endpoint_is_checked_before_anything_starts(argv, message):
    argv = (["--only", "s3"] if "--only" not in argv else []) + argv
    done = subprocess.run([sys.executable, "scripts/bench.py", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
