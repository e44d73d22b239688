"""The client commands (``scripts.put``, ``scripts.get``) killed and resumed by a new process,
and the README's resumable-upload, ranges and gzip examples run as written."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from scripts.cluster import REPO
from tests.conftest import Body
from tests.probe.conftest import wait_for
from tests.probe.test_readme import readme_block

pytestmark = pytest.mark.probe


def command(tmp_path: Path, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def finish(process: subprocess.Popen) -> tuple[str, str]:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return out, err


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)


def test_put_and_get_resume_after_being_killed(client, tmp_path):
    body = Body(6 * 1024 * 1024 + 321, seed=21)
    source = tmp_path / "source"
    source.write_bytes(body.bytes())
    url = client.url("commands/file")
    first = command(tmp_path, "scripts.put", str(source), url, "--piece-size", "700k",
                    "--limit-rate", "2M")
    states = tmp_path / "cache" / "tessera" / "uploads"
    try:
        state = wait_for(lambda: list(states.glob("*.json")), timeout=20)[0]
        location = re.search(r'"location": "([^"]+)"', state.read_text()).group(1)
        wait_for(lambda: int(requests.head(client.api(1) + location, timeout=5)
                             .headers["Content-Length"]) > 1024 * 1024, timeout=20)
    finally:
        kill(first)
    other_api = client.url("commands/file", i=1)                 # resumed through the other
    out, err = finish(command(tmp_path, "scripts.put", str(source), other_api))
    offset = int(re.search(r"resuming at byte (\d+)", err).group(1))
    assert 1024 * 1024 < offset < body.size
    assert out.strip() == "commands/file version 1"
    assert list(states.glob("*.json")) == []
    assert client.get("commands/file").content == body.bytes()

    target = tmp_path / "copy"
    first = command(tmp_path, "scripts.get", url, str(target), "--limit-rate", "2M")
    part = tmp_path / "copy.part"
    try:
        wait_for(lambda: part.exists() and part.stat().st_size > 1024 * 1024, timeout=20)
    finally:
        kill(first)
    assert not target.exists()
    out, err = finish(command(tmp_path, "scripts.get", url, str(target)))
    assert "resuming at byte" in err
    assert out.strip() == f"{target} (commands/file version 1)"
    assert target.read_bytes() == body.bytes()
    assert not part.exists() and not (tmp_path / "copy.part.json").exists()


def test_get_refuses_bytes_that_do_not_match_the_digest(client, tmp_path):
    body = Body(300000, seed=22)
    assert client.put("commands/checked", body.bytes(), body.hash).status_code == 200
    url = client.url("commands/checked")
    target = tmp_path / "checked"
    first = command(tmp_path, "scripts.get", url, str(target), "--limit-rate", "100k")
    part = tmp_path / "checked.part"
    try:
        wait_for(lambda: part.exists() and part.stat().st_size > 1000, timeout=20)
    finally:
        kill(first)
    damaged = bytearray(part.read_bytes())
    damaged[10] ^= 1
    part.write_bytes(bytes(damaged))
    process = command(tmp_path, "scripts.get", url, str(target))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1 and "SHA-256" in err
    assert not target.exists() and not part.exists()


def run_readme(client, tmp_path: Path, name: str) -> str:
    script = readme_block(name).replace("12345", str(client.cluster.port)).replace(
        "/tmp/", f"{tmp_path}/")
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_readme_resumable_upload_with_curl(client, tmp_path):
    out = run_readme(client, tmp_path, "resumable-curl").lower()
    assert "content-length: 1000000" in out
    assert "version: 1" in out and out.endswith("same\n")


def test_readme_transfer_commands(client, tmp_path):
    out = run_readme(client, tmp_path, "transfer-commands")
    assert out == f"file version 1\n{tmp_path}/file.copy (file version 1)\nsame\n"


def test_readme_ranges_and_gzip(client, tmp_path):
    out = run_readme(client, tmp_path, "ranges-gzip")
    assert out.startswith("1\n2\n3\n4\n5\n6\n300000\n416\nsame\n")
    assert re.search(r"(?i)content-encoding: gzip\r?\nsame\n300000\n$", out), out

