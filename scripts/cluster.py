"""Start and stop a local Tessera cluster: N data servers on 127.0.1.x, M api servers on
127.0.2.x, all on one port, K task workers, SQLite metadata, the local RabbitMQ.

The only way a cluster starts, for developers (``python -m scripts.cluster``), the probe tests
and the benchmark.  Every process is a real ``python -m data_server`` / ``python -m api_server``
/ ``python -m scripts.worker`` with its own log file; we stop only the processes we started,
by PID.  A worker answers /metrics and /health on its address (127.0.3.101 up).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from lib.config import Config
from lib.rabbitmq import QueueClient, check_broker, delete_exchanges, delete_queues
from lib.tasks import TaskQueues

REPO = Path(__file__).resolve().parent.parent
#: Seconds a node may take to answer /health after it is started.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 25.0


def data_address(i: int, port: int) -> str:
    return f"127.0.1.{i}:{port}"


def api_address(i: int, port: int) -> str:
    return f"127.0.2.{i}:{port}"


def worker_address(i: int, port: int) -> str:
    """127.0.3.101 up: 127.0.3.1 and the like stand for other hosts' api servers in tests."""
    return f"127.0.3.{100 + i}:{port}"


#: What each node role runs.
MODULES = {"data": "data_server", "api": "api_server", "worker": "scripts.worker"}


def _can_bind(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def s3_address(i: int, port: int) -> str:
    """Api server i's S3 listener: its host, the next port."""
    return f"{api_address(i, port).rsplit(':', 1)[0]}:{port + 1}"


def free_port(data_servers: int = 8, api_servers: int = 2) -> int:
    """A port free on every cluster address, below the kernel's ephemeral range."""
    hosts = [data_address(i, 0).split(":")[0] for i in range(1, data_servers + 1)] + \
            [api_address(i, 0).split(":")[0] for i in range(1, api_servers + 1)]
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20_000, 32_000)
        if all(_can_bind(host, port) for host in hosts) and \
                all(_can_bind(host, port + 1) for host in hosts[data_servers:]):
            return port
    raise RuntimeError(f"no port free on all of {hosts}")


def get_json(address: str, path: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as response:
        return json.loads(response.read())


@dataclasses.dataclass
class Node:
    role: str
    index: int
    address: str
    log_path: Path
    storage_root: Path | None = None
    process: subprocess.Popen | None = None
    #: Environment of this node only, over the cluster's.
    env: dict = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.role}{self.index}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


class Cluster:
    """A set of data server, api server and worker processes sharing one root directory."""

    def __init__(self, root: Path, *, port: int = 12345, data_servers: int = 6,
                 api_servers: int = 2, workers: int = 1, exchange_suffix: str = "",
                 rabbitmq_server: str = Config.rabbitmq_server, env: dict | None = None):
        self.root = Path(root)
        self.port = port
        self.rabbitmq_server = rabbitmq_server
        self.api_exchange = f"apiServers{exchange_suffix}"
        self.data_exchange = f"dataServers{exchange_suffix}"
        self.faults_exchange = f"{Config.faults_exchange}{exchange_suffix}"
        self.task_queue = f"{Config.task_queue}{exchange_suffix}"
        self.metadata_db = self.root / "metadata.db"
        self._extra_env = dict(env or {})
        #: The management API's bearer token (ADMIN_TOKEN, else one made for this cluster).
        self.admin_token = (self._extra_env.get("ADMIN_TOKEN") or os.environ.get("ADMIN_TOKEN")
                            or secrets.token_urlsafe(18))
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.data = [Node("data", i, data_address(i, port), logs / f"data{i}.log",
                          storage_root=self.root / "stg" / str(i))
                     for i in range(1, data_servers + 1)]
        self.api = [Node("api", i, api_address(i, port), logs / f"api{i}.log",
                         env={"S3_LISTEN_ADDRESS": s3_address(i, port)})
                    for i in range(1, api_servers + 1)]
        self.workers: list[Node] = []
        for _ in range(workers):
            self.add_worker()

    def add_worker(self, env: dict | None = None) -> Node:
        """One more worker (not started); ``env`` overrides the cluster's, e.g. its own
        TASK_QUEUE or STORED_HOOK_URL."""
        i = len(self.workers) + 1
        node = Node("worker", i, worker_address(i, self.port),
                    self.root / "logs" / f"worker{i}.log", env=dict(env or {}))
        self.workers.append(node)
        return node

    @property
    def nodes(self) -> list[Node]:
        return self.data + self.api + self.workers

    # -- processes ---------------------------------------------------------------------------
    def env_for(self, node: Node) -> dict:
        env = {k: v for k, v in os.environ.items()
               if k not in ("LISTEN_ADDRESS", "STORAGE_ROOT", "ES_SERVER")}
        env.update({
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
            "LISTEN_ADDRESS": node.address,
            "RABBITMQ_SERVER": self.rabbitmq_server,
            "API_EXCHANGE": self.api_exchange,
            "DATA_EXCHANGE": self.data_exchange,
            "FAULTS_EXCHANGE": self.faults_exchange,
            "METADATA_DB": str(self.metadata_db),
            "TASK_QUEUE": self.task_queue,
        })
        env.setdefault("CLUSTER_SECRET", "tessera-local-" + str(self.root))
        env["ADMIN_TOKEN"] = self.admin_token
        if node.storage_root is not None:
            env["STORAGE_ROOT"] = str(node.storage_root)
        if node.role == "worker":
            env["WORKER_STATUS_ADDRESS"] = node.address          # its /metrics and /health
        env.update(self._extra_env)
        env.update(node.env)
        return env

    def start_node(self, node: Node) -> None:
        if node.running:
            return
        log = open(node.log_path, "ab")
        node.process = subprocess.Popen([sys.executable, "-m", MODULES[node.role]], cwd=REPO,
                                        env=self.env_for(node), stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def stop_node(self, node: Node, sig: int = signal.SIGTERM,
                  timeout: float = STOP_TIMEOUT) -> None:
        """Signal our own process; SIGKILL it if it outlives ``timeout``."""
        process = node.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        node.process = None

    def kill_node(self, node: Node) -> None:
        """kill -9: the process gets no chance to say goodbye (gunicorn's worker too)."""
        process = node.process
        if process is None:
            return
        children = _children(process.pid)
        process.kill()
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait(5)
        node.process = None

    def start(self, timeout: float = START_TIMEOUT) -> "Cluster":
        check_broker(self.rabbitmq_server)
        for node in self.nodes:
            self.start_node(node)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Poll /health until every running node answers and api servers see every live
        data server."""
        deadline = time.monotonic() + timeout
        expected = sum(node.running for node in self.data)
        pending = [n for n in self.data + self.api if n.running]
        while pending:
            node = pending[0]
            if not node.running:
                raise RuntimeError(f"{node.name} ({node.address}) exited:\n{node.log_tail()}")
            try:
                health = get_json(node.address, "/health")
                ready = health.get("rabbitmq") and (
                    node.role == "data" or health.get("data_servers") == expected)
            except (OSError, ValueError, urllib.error.URLError):
                ready = False
            if ready:
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"{node.name} ({node.address}) not ready after {timeout}s:"
                                   f"\n{node.log_tail()}")
            time.sleep(0.1)
        self._wait_workers(deadline, timeout)

    def _wait_workers(self, deadline: float, timeout: float) -> None:
        """Wait until the running workers of the cluster's task queue consume it."""
        workers = [n for n in self.workers if n.running and "TASK_QUEUE" not in n.env]
        if not workers:
            return
        with QueueClient(self.rabbitmq_server, "cluster") as client:
            while True:
                for node in workers:
                    if not node.running:
                        raise RuntimeError(f"{node.name} exited:\n{node.log_tail()}")
                counts = client.counts(self.task_queue)
                if counts is not None and counts[1] >= len(workers):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{workers[0].name} not consuming {self.task_queue} "
                                       f"after {timeout}s:\n{workers[0].log_tail()}")
                time.sleep(0.1)

    def stop(self) -> None:
        nodes = [n for n in self.api + self.workers + self.data if n.process is not None]
        for node in nodes:
            if node.running:
                node.process.send_signal(signal.SIGTERM)
        for node in nodes:
            self.stop_node(node)

    def cleanup_broker(self) -> None:
        """Delete this cluster's exchanges and task queues (only for per-run names)."""
        delete_exchanges(self.rabbitmq_server, [self.api_exchange, self.data_exchange,
                                                self.faults_exchange])
        queues = {self.task_queue} | {n.env["TASK_QUEUE"] for n in self.workers
                                      if "TASK_QUEUE" in n.env}
        delete_queues(self.rabbitmq_server,
                      [name for queue in sorted(queues) for name in TaskQueues(queue).all_names()])

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (gunicorn workers of one of our masters)."""
    children = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(status.parent.name))
    return children


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.cluster",
        description="Run a local Tessera cluster until Ctrl-C: data servers on 127.0.1.x, "
                    "api servers on 127.0.2.x, SQLite metadata, the local RabbitMQ.")
    parser.add_argument("--root", default=str(REPO / ".cluster"),
                        help="directory for storage roots, logs and metadata.db "
                             "(default: %(default)s)")
    parser.add_argument("--port", type=int, default=12345)
    parser.add_argument("--data-servers", type=int, default=6)
    parser.add_argument("--api-servers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1,
                        help="task workers (python -m scripts.worker) (default: %(default)s)")
    parser.add_argument("--exchange-suffix", default="",
                        help="appended to the exchange names apiServers/dataServers/faults, "
                             "to run beside another cluster on the same broker")
    args = parser.parse_args(argv)
    cluster = Cluster(Path(args.root), port=args.port, data_servers=args.data_servers,
                      api_servers=args.api_servers, workers=args.workers,
                      exchange_suffix=args.exchange_suffix)
    try:
        cluster.start()
    except (Exception, KeyboardInterrupt) as exc:
        cluster.stop()
        print(f"cluster failed to start: {exc!r}", file=sys.stderr)
        return 1
    print(f"Tessera is running (root {cluster.root}):")
    for node in cluster.data:
        print(f"  data server {node.address}  STORAGE_ROOT={node.storage_root}  "
              f"log {node.log_path}")
    for node in cluster.api:
        print(f"  api server  {node.address}  S3 http://{node.env['S3_LISTEN_ADDRESS']}  "
              f"log {node.log_path}")
    for node in cluster.workers:
        print(f"  worker      {node.name}  task queue {cluster.task_queue}  log {node.log_path}")
    print(f"  metadata    sqlite {cluster.metadata_db}")
    print(f"  rabbitmq    {cluster.rabbitmq_server}")
    config = Config.from_env()
    print(f"  S3 keys     access key {config.s3_access_key}  secret key {config.s3_secret_key}"
          "  (S3_ACCESS_KEY / S3_SECRET_KEY)")
    print(f"  admin token {cluster.admin_token}  (ADMIN_TOKEN; "
          f"curl -H 'Authorization: Bearer ...' http://{cluster.api[0].address}/api/v1/...)")
    print(f"  console     http://{cluster.api[0].address}/console/  (log in with the admin token)")
    print(f"Try: curl http://{cluster.api[0].address}/health    Ctrl-C stops everything.",
          flush=True)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        while not stop["now"]:
            time.sleep(0.5)
            for node in cluster.nodes:
                if not node.running and node.process is not None:
                    print(f"{node.name} exited; see {node.log_path}", file=sys.stderr)
                    node.process = None
    except KeyboardInterrupt:
        pass
    print("stopping...", flush=True)
    cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
