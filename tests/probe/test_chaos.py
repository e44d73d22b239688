"""``python -m scripts.chaos``: an example scenario, shortened, ends with every acknowledged
write verified."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from scripts.cluster import REPO

pytestmark = pytest.mark.probe


def test_example_scenario_verifies_every_acknowledged_write(tmp_path):
    run = subprocess.run([sys.executable, "-m", "scripts.chaos",
                          "scripts/chaos/data-server-faults.json", "--duration", "8",
                          "--root", str(tmp_path / "chaos")],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "posted rule" in out and "kill data3" in out and "start data3" in out
    verified = re.search(r"verified (\d+) of (\d+) acknowledged writes", out)
    assert verified and verified[1] == verified[2] and int(verified[2]) > 0, out
    assert "corrupt reads during the run: 0" in out and out.rstrip().endswith("OK")
    injected = re.search(r"faults injected (\d+)", out)
    assert injected and int(injected[1]) > 0, out
