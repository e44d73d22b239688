"""scripts/setup.sh: a set-up project needs no package index; a failed pip never says ready."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from scripts.cluster import REPO
from tests.probe.conftest import RABBITMQ

pytestmark = pytest.mark.probe


def offline_env(tmp_path) -> dict[str, str]:
    """pip with no index, no find-links and no config file: any download fails at once."""
    (tmp_path / "no-wheels").mkdir()
    return {**os.environ, "RABBITMQ_SERVER": RABBITMQ, "PIP_NO_INDEX": "1",
            "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": str(tmp_path / "no-wheels")}


def setup(root, env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(root / "scripts" / "setup.sh")], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


def test_a_second_setup_calls_no_pip(tmp_path):
    if not (REPO / ".venv" / ".tessera-installed").exists():
        pytest.skip("this checkout has no .venv from scripts/setup.sh (scripts/test.sh makes it)")
    done = setup(REPO, offline_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "with pip" not in done.stderr
    assert "setup: ready" in done.stderr


def test_a_half_made_venv_is_made_again_and_a_failed_pip_stops_setup(tmp_path):
    project = tmp_path / "project"
    (project / "scripts").mkdir(parents=True)
    for name in ("setup.cfg", "pyproject.toml", "scripts/setup.sh"):
        shutil.copy(REPO / name, project / name)
    python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([python, "-m", "venv", "--without-pip", str(project / ".venv")], check=True)
    env = {**offline_env(tmp_path), "PYTHON": python}

    done = setup(project, env)
    assert done.returncode == 1
    assert "setup: .venv is incomplete" in done.stderr
    assert "ERROR" in done.stderr or "error" in done.stderr      # pip's own words
    assert "setup: pip could not install" in done.stderr
    assert "ready" not in done.stderr
    assert (project / ".venv" / "bin" / "python").exists()
    assert not (project / ".venv" / ".tessera-installed").exists()
