"""Probe fixtures: real gunicorn processes on 127.0.1.x / 127.0.2.x against the real RabbitMQ.

Each test session picks a free port and its own exchange names, so runs never cross-talk with
each other or with a developer's cluster; teardown stops only our PIDs, deletes our exchanges
and storage roots.
"""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from lib.config import Config
from lib.hashing import quote_hash
from scripts.cluster import Cluster, free_port
from tests.s3_signing import ACCESS_KEY as EXAMPLE_ACCESS_KEY
from tests.s3_signing import SECRET_KEY as EXAMPLE_SECRET_KEY

RABBITMQ = os.environ.get("RABBITMQ_SERVER", Config.rabbitmq_server)
#: Test clusters accept multipart parts this small (S3's 5 MiB minimum is configurable).
MIN_PART_SIZE = 64 * 1024
#: Test clusters' virtual-hosted-style domain (resolved by the tests themselves).
S3_DOMAIN = "s3.tessera.test"


@pytest.fixture(scope="session", autouse=True)
def rabbitmq():
    """RabbitMQ is required: fail loudly (never skip) when it cannot be reached."""
    from lib.rabbitmq import check_broker
    try:
        check_broker(RABBITMQ)
    except Exception as exc:
        pytest.exit(f"RabbitMQ is not reachable at {RABBITMQ}: {exc!r}. Start it with "
                    f"`rabbitmq-server -detached` (scripts/setup.sh installs it).", returncode=3)


class Client:
    """Small helper bound to one cluster: URLs, PUT with digest, shard files on disk."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.session = requests.Session()

    def api(self, i: int = 0) -> str:
        return f"http://{self.cluster.api[i].address}"

    def url(self, name: str, i: int = 0) -> str:
        return f"{self.api(i)}/objects/{requests.utils.quote(name, safe='')}"

    def put(self, name: str, data, hash_: str, i: int = 0, **kwargs) -> requests.Response:
        headers = {"Digest": f"SHA-256={hash_}", **kwargs.pop("headers", {})}
        return self.session.put(self.url(name, i), data=data, headers=headers, timeout=120,
                                **kwargs)

    def get(self, name: str, i: int = 0, **kwargs) -> requests.Response:
        return self.session.get(self.url(name, i), timeout=120, **kwargs)

    def shard_files(self, hash_: str) -> dict[int, list[Path]]:
        """shard index -> files of that shard, over every data server's objects/."""
        found: dict[int, list[Path]] = {}
        prefix = quote_hash(hash_) + "."
        for node in self.cluster.data:
            for path in (node.storage_root / "objects").glob("*"):
                if path.name.startswith(prefix):
                    index = int(path.name[len(prefix):].split(".")[0])
                    found.setdefault(index, []).append(path)
        return found

    def temp_files(self) -> list[Path]:
        return [p for node in self.cluster.data for p in (node.storage_root / "temp").glob("*")]


def _make_cluster(root: Path, env: dict | None = None, **kwargs) -> Cluster:
    root.mkdir(parents=True, exist_ok=True)
    credentials = root / "s3-credentials"
    credentials.write_text(f"[aws-example]\naws_access_key_id = {EXAMPLE_ACCESS_KEY}\n"
                           f"aws_secret_access_key = {EXAMPLE_SECRET_KEY}\n")
    return Cluster(root, port=free_port(), rabbitmq_server=RABBITMQ,
                   exchange_suffix=f".test-{uuid.uuid4().hex[:8]}",
                   env={"LOG_LEVEL": "info", "HEARTBEAT_INTERVAL": "1", "SERVER_TTL": "3",
                        "S3_MIN_PART_SIZE": str(MIN_PART_SIZE),
                        "S3_CREDENTIALS_FILE": str(credentials), "S3_DOMAIN": S3_DOMAIN,
                        **(env or {})},
                   **kwargs)


def _teardown(cluster: Cluster) -> None:
    cluster.stop()
    cluster.cleanup_broker()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """One shared 6+2 cluster for tests that leave it as they found it."""
    c = _make_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        yield c
    finally:
        _teardown(c)


@pytest.fixture
def client(cluster) -> Client:
    return Client(cluster)


def s3_endpoint(cluster: Cluster, i: int = 0) -> str:
    return f"http://{cluster.api[i].env['S3_LISTEN_ADDRESS']}"


def s3_client(cluster: Cluster, i: int = 0, access_key: str = Config.s3_access_key,
              secret_key: str = Config.s3_secret_key, **config):
    """A boto3 S3 client for api server ``i``'s S3 listener (path-style, no retries)."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3", endpoint_url=s3_endpoint(cluster, i), aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                          signature_version="s3v4",
                          connect_timeout=10, read_timeout=120, **config))


@pytest.fixture
def s3(cluster):
    return s3_client(cluster)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "call" and outcome.get_result().failed:
        item.tessera_failed = True


def _print_trouble(cluster: Cluster, lines: int = 30) -> None:
    """The last warnings and errors of each api server and worker, for a failed test."""
    for node in cluster.api + cluster.workers:
        try:
            text = node.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        trouble = [line[:300] for line in text
                   if " WARNING " in line or " ERROR " in line or "Error" in line]
        print(f"--- {node.name} {node.address}: last {lines} warnings/errors")
        print("\n".join(trouble[-lines:]))


@pytest.fixture
def make_cluster(tmp_path, request):
    """Factory for a private cluster a test may damage; stopped at teardown (printing the
    api servers' and workers' warnings first when the test failed)."""
    made: list[Cluster] = []

    def make(start: bool = True, **kwargs) -> Cluster:
        c = _make_cluster(tmp_path / f"c{len(made)}", **kwargs)
        made.append(c)
        if start:
            c.start()
        return c

    yield make
    for c in made:
        if getattr(request.node, "tessera_failed", False):
            _print_trouble(c)
        _teardown(c)


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=120)
