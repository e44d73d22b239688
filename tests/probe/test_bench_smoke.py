"""Smoke test of the benchmark (issue 6): ``scripts/bench.py --quick --json`` runs end to end
against its own cluster and reports every required number.

No timing assertions: the numbers depend on the machine and on whatever else runs on it.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
