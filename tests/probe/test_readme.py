"""The README's shell examples, run as written (port, paths and exchanges swapped for ours)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from lib.rabbitmq import delete_exchanges, delete_queues
from lib.tasks import TaskQueues
from scripts.cluster import REPO, get_json
from tests.probe.conftest import RABBITMQ, free_port, wait_for

pytestmark = pytest.mark.probe


def readme_block(name: str) -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(rf"```sh readme-test={name}\n(.*?)```", text, re.S)
    assert match, f"README block {name} is missing"
    return match.group(1)


def first_command(name: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.search(r"```sh\n(.*?)```", text, re.S).group(1).split("\n")[:2]


def test_readme_starts_with_the_two_commands():
    run, test = first_command("top")
    assert run.startswith("scripts/run.sh ") and test.startswith("scripts/test.sh ")
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/test.sh" in ci


@pytest.fixture
def book_nodes(tmp_path):
    """The README's shell loop, as a user types it; yields (port, env) and stops every PID."""
    port = free_port()
    suffix = f".readme-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "RABBITMQ_SERVER": RABBITMQ, "API_EXCHANGE": f"apiServers{suffix}",
           "DATA_EXCHANGE": f"dataServers{suffix}", "METADATA_DB": str(tmp_path / "md.db"),
           "FAULTS_EXCHANGE": f"faults{suffix}",
           "TASK_QUEUE": f"tessera.tasks{suffix}",
           "PYTHONPATH": str(REPO), "HEARTBEAT_INTERVAL": "1", "PATH":
           f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = readme_block("nodes").replace("12345", str(port)).replace(
        "/tmp/stg/", f"{tmp_path}/stg/")
    shell = subprocess.Popen(["bash", "-c", script + '\necho PIDS $(jobs -p)\nwait'],
                             cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=open(tmp_path / "nodes.log", "wb"), text=True)
    pids = [int(p) for p in shell.stdout.readline().split()[1:]]
    try:
        assert len(pids) == 8
        wait_for(lambda: _data_servers(f"127.0.2.1:{port}") == 6, timeout=30)
        wait_for(lambda: _data_servers(f"127.0.2.2:{port}") == 6, timeout=30)
        yield port, env, tmp_path
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        shell.wait(40)
        delete_exchanges(RABBITMQ, [env["API_EXCHANGE"], env["DATA_EXCHANGE"],
                                    env["FAULTS_EXCHANGE"]])
        delete_queues(RABBITMQ, TaskQueues(env["TASK_QUEUE"]).all_names())


def _data_servers(address: str) -> int:
    try:
        return get_json(address, "/health")["data_servers"]
    except Exception:
        return -1


def test_readme_walkthrough_on_nodes_started_by_the_book_loop(book_nodes):
    port, env, tmp = book_nodes
    script = readme_block("walkthrough").replace("12345", str(port)).replace(
        "/tmp/object", f"{tmp}/object")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("this object will be separate to 4+2 shards\n") == 2  # GET, ?version=1
    assert re.search(r'\{"0": "127\.0\.1\.\d:\d+", "1"', out)
    assert '"Name": "test", "Version": 2, "Size": 11' in out
    assert "\n404\n" in out
    assert '"data_servers":6' in out
    per_server = [len(list(root.glob("objects/*"))) for root in (tmp / "stg").iterdir()]
    assert per_server == [2] * 6               # as the README says: one shard of each version


def test_run_command_prints_where_everything_is_and_stops_on_ctrl_c(tmp_path):
    """`scripts/run.sh` ends in `python -m scripts.cluster`: run that part as a user would."""
    port = free_port()
    env = {**os.environ, "RABBITMQ_SERVER": RABBITMQ, "PYTHONPATH": str(REPO)}
    suffix = f".cli-{uuid.uuid4().hex[:8]}"
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.cluster", "--root", str(tmp_path), "--port", str(port),
         "--exchange-suffix", suffix],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # as in a terminal: a test run started in the background (CI, nohup ... &) ignores
        # SIGINT, the child would inherit that, and Ctrl-C would do nothing
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = "".join(lines)
        assert "Tessera is running" in text, text
        for i in range(1, 7):
            assert f"data server 127.0.1.{i}:{port}" in text
        assert f"api server  127.0.2.1:{port}" in text and f"127.0.2.2:{port}" in text
        assert "metadata    sqlite" in text
        assert f"worker      worker1  task queue tessera.tasks{suffix}" in text
        assert get_json(f"127.0.2.2:{port}", "/health")["data_servers"] == 6
    finally:
        process.send_signal(signal.SIGINT)
        try:
            rest = process.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            process.terminate()                  # SIGTERM: it stops its nodes, then exits
            process.communicate(timeout=60)
            raise
        delete_exchanges(RABBITMQ, [f"apiServers{suffix}", f"dataServers{suffix}",
                                    f"faults{suffix}"])
        delete_queues(RABBITMQ, TaskQueues(f"tessera.tasks{suffix}").all_names())
    assert process.returncode == 0, rest
    assert "stopping" in rest
    with pytest.raises(OSError):
        get_json(f"127.0.2.1:{port}", "/health", timeout=1)


def test_readme_s3_examples_run_as_written(cluster, tmp_path):
    """The S3 section's shell block (aws cli and curl --aws-sigv4) and its boto3 snippet."""
    endpoint = cluster.api[0].env["S3_LISTEN_ADDRESS"]
    script = readme_block("s3-cli").replace("127.0.2.1:12346", endpoint).replace(
        "/tmp/hello.txt", f"{tmp_path}/hello.txt").replace("demo", "demo-readme")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "AWS_CONFIG_FILE": str(tmp_path / "cfg"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "creds")}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("hello from the aws cli") == 2, done.stdout
    assert "hello.txt" in done.stdout
    text = (REPO / "README.md").read_text()
    snippet = re.search(r"```python\n(import boto3\n.*?)```", text, re.S).group(1)
    snippet = snippet.replace("127.0.2.1:12346", endpoint)
    ran = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                         timeout=60, env=env)
    assert ran.returncode == 0 and "stored as 4+2 shards" in ran.stdout, ran.stderr
