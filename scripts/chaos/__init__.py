"""Chaos runs: load a cluster, break it on a schedule, then check every acknowledged write.

``python -m scripts.chaos SCENARIO.json`` starts a private cluster (``scripts/cluster.py``: its
own port, exchanges, storage roots, all on loopback) or targets a running one (``"target"``),
runs ``clients`` threads of PUTs (each a new name, bodies generated from a seed, streamed)
and GETs of names already acknowledged, and meanwhile follows the scenario's ``schedule``::

    {"at": 2,  "post_rule": {...}}          a fault rule, as /api/v1/faults/rules takes it
                                            ("node": "data1" names a node of its own cluster)
    {"at": 9,  "delete_rules": true}        every rule
    {"at": 4,  "kill": "data1"}             SIGKILL a node (own cluster only), "stop": SIGTERM
    {"at": 8,  "start": "data1"}            start it again; "restart": stop then start

When ``duration`` is over it deletes every rule, starts every node it stopped, waits
``settle`` seconds, and reads every acknowledged write back, comparing its SHA-256.  A GET
during the run that answers 200 with other bytes is a corrupt read.  It prints what it did
and what it verified, and exits 0 only when every acknowledged write came back exact and no
read was corrupt.  Only the standard library and the repository's modules are used.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import random
import shutil
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from lib.config import Config
from lib.hashing import b64_digest
from scripts.cluster import Cluster, free_port

#: Seconds of each client request.
REQUEST_TIMEOUT = 60.0
CHUNK = 1 << 16


def body(seed: int, size: int) -> Iterator[bytes]:
    """``size`` pseudo-random bytes from ``seed``, a chunk at a time."""
    rng = random.Random(seed)
    left = size
    while left:
        n = min(CHUNK, left)
        yield rng.randbytes(n)
        left -= n


def digest(seed: int, size: int) -> str:
    sha = hashlib.sha256()
    for chunk in body(seed, size):
        sha.update(chunk)
    return b64_digest(sha)


@dataclasses.dataclass(frozen=True)
class Write:
    name: str
    seed: int
    size: int
    hash: str


@dataclasses.dataclass
class Tally:
    """What the load saw, shared by its threads."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    acknowledged: list[Write] = dataclasses.field(default_factory=list)
    puts: Counter = dataclasses.field(default_factory=Counter)
    gets: Counter = dataclasses.field(default_factory=Counter)
    corrupt: list[str] = dataclasses.field(default_factory=list)


class Api:
    """One api server's book API and fault rules API, over http.client."""

    def __init__(self, address: str, admin_token: str):
        self.address = address
        self.admin_token = admin_token

    def _connection(self) -> http.client.HTTPConnection:
        host, _, port = self.address.rpartition(":")
        return http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT)

    def put(self, write: Write) -> int:
        conn = self._connection()
        try:
            conn.request("PUT", f"/objects/{urllib.parse.quote(write.name, safe='')}",
                         body=body(write.seed, write.size),
                         headers={"Digest": f"SHA-256={write.hash}",
                                  "Content-Length": str(write.size)})
            response = conn.getresponse()
            response.read(1 << 16)
            return response.status
        finally:
            conn.close()

    def get(self, name: str) -> tuple[int, str | None]:
        """(status, base64 SHA-256 of a 200's body) of a GET, streamed."""
        conn = self._connection()
        try:
            conn.request("GET", f"/objects/{urllib.parse.quote(name, safe='')}")
            response = conn.getresponse()
            if response.status != 200:
                response.read(1 << 16)
                return response.status, None
            sha = hashlib.sha256()
            while chunk := response.read(CHUNK):
                sha.update(chunk)
            return 200, b64_digest(sha)
        finally:
            conn.close()

    def admin(self, method: str, path: str, payload: dict | None = None) -> dict:
        conn = self._connection()
        try:
            data = None if payload is None else json.dumps(payload).encode()
            conn.request(method, f"/api/v1/faults/{path}", body=data,
                         headers={"Authorization": f"Bearer {self.admin_token}",
                                  "Content-Type": "application/json"})
            response = conn.getresponse()
            text = response.read(1 << 20)
            if response.status >= 300:
                raise RuntimeError(f"{method} /api/v1/faults/{path}: {response.status} "
                                   f"{text[:300]!r}")
            return json.loads(text) if text else {}
        finally:
            conn.close()


def _load(apis: list[Api], tally: Tally, sizes: list[int], read_ratio: float,
          stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        api = rng.choice(apis)
        with tally.lock:
            known = list(tally.acknowledged[-200:])
        reading = bool(known) and rng.random() < read_ratio
        try:
            if reading:
                write = rng.choice(known)
                status, got = api.get(write.name)
                with tally.lock:
                    tally.gets[status] += 1
                    if status == 200 and got != write.hash:
                        tally.corrupt.append(write.name)
                continue
            size = rng.choice(sizes)
            write_seed = rng.getrandbits(48)
            write = Write(f"chaos-{uuid.uuid4().hex[:12]}", write_seed, size,
                          digest(write_seed, size))
            status = api.put(write)
            with tally.lock:
                tally.puts[status] += 1
                if status == 200:
                    tally.acknowledged.append(write)
        except (OSError, http.client.HTTPException) as exc:
            with tally.lock:
                (tally.gets if reading else tally.puts)[type(exc).__name__] += 1
            stop.wait(0.05)


def _say(started: float, text: str) -> None:
    print(f"[{time.monotonic() - started:6.1f}s] {text}", flush=True)


def _act(step: dict, cluster: Cluster | None, apis: list[Api], started: float,
         stopped: set[str]) -> None:
    if "post_rule" in step:
        rule = dict(step["post_rule"])
        names = {n.name: n.address for n in cluster.nodes} if cluster is not None else {}
        if rule.get("node") in names:             # "data1": that node's address
            rule["node"] = names[rule["node"]]
        rule = apis[0].admin("POST", "rules", rule)
        _say(started, f"posted rule {rule['id']} ({rule.get('name') or rule['action']['type']}"
                      f" on {rule['service']}{' ' + rule['node'] if rule.get('node') else ''})")
        return
    if step.get("delete_rules"):
        deleted = apis[0].admin("DELETE", "rules").get("deleted", 0)
        _say(started, f"deleted {deleted} rule(s)")
        return
    for verb in ("kill", "stop", "start", "restart"):
        if verb in step:
            if cluster is None:
                raise SystemExit(f"schedule step {step}: {verb} needs a cluster this run "
                                 f"started (a targeted cluster's processes are not ours)")
            node = next((n for n in cluster.nodes if n.name == step[verb]), None)
            if node is None:
                raise SystemExit(f"schedule step {step}: no node {step[verb]!r} "
                                 f"(names: {', '.join(n.name for n in cluster.nodes)})")
            if verb in ("kill", "stop", "restart"):
                (cluster.kill_node if verb == "kill" else cluster.stop_node)(node)
                stopped.add(node.name)
            if verb in ("start", "restart"):
                cluster.start_node(node)
                stopped.discard(node.name)
            _say(started, f"{verb} {node.name} ({node.address})")
            return
    raise SystemExit(f"schedule step {step}: nothing to do")


def run(scenario: dict, duration: float | None = None, root: Path | None = None) -> int:
    """Run one scenario; the exit status."""
    duration = float(scenario.get("duration", 30) if duration is None else duration)
    load = scenario.get("load", {})
    sizes = [int(s) for s in load.get("sizes", [1024, 100_000, 1_100_000])]
    target = scenario.get("target")
    cluster = None
    own_root = None
    if target is None:
        spec = scenario.get("cluster", {})
        own_root = Path(tempfile.mkdtemp(prefix="tessera-chaos-")) if root is None else root
        cluster = Cluster(own_root, port=free_port(), data_servers=spec.get("data_servers", 6),
                          api_servers=spec.get("api_servers", 2),
                          workers=spec.get("workers", 1),
                          exchange_suffix=f".chaos-{uuid.uuid4().hex[:8]}",
                          rabbitmq_server=Config.from_env().rabbitmq_server,
                          env={"HEARTBEAT_INTERVAL": "1", "SERVER_TTL": "3",
                               **spec.get("env", {})})
    started = time.monotonic()
    stopped: set[str] = set()
    try:
        if cluster is not None:
            cluster.start()
            apis = [Api(n.address, cluster.admin_token) for n in cluster.api]
            _say(started, f"cluster up: {len(cluster.data)} data servers, {len(cluster.api)} "
                          f"api servers, root {cluster.root}")
        else:
            apis = [Api(a, target["admin_token"]) for a in target["api"]]
            _say(started, f"targeting api servers {', '.join(target['api'])}")
        print(f"scenario {scenario.get('name', '?')}: {duration:.0f}s, "
              f"{load.get('clients', 4)} clients, sizes {sizes}", flush=True)
        tally = Tally()
        stop = threading.Event()
        threads = [threading.Thread(target=_load, args=(apis, tally, sizes,
                                                        float(load.get("read_ratio", 0.5)),
                                                        stop, i), daemon=True)
                   for i in range(int(load.get("clients", 4)))]
        load_started = time.monotonic()
        for thread in threads:
            thread.start()
        for step in sorted(scenario.get("schedule", []), key=lambda s: s.get("at", 0)):
            at = min(float(step.get("at", 0)), duration)
            stop.wait(max(0.0, load_started + at - time.monotonic()))
            _act(step, cluster, apis, started, stopped)
        stop.wait(max(0.0, load_started + duration - time.monotonic()))
        stop.set()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT + 5)
        stats = apis[0].admin("GET", "stats")
        _say(started, f"load over: PUT {dict(tally.puts)}, GET {dict(tally.gets)}, "
                      f"faults injected {stats.get('total', 0)} {stats.get('by_action', {})}")
        for rule_id, counts in sorted(stats.get("rules", {}).items()):
            _say(started, f"  rule {rule_id} ({counts.get('name') or '-'}): "
                          f"{counts.get('injected', 0)} injected")
        apis[0].admin("DELETE", "rules")
        if cluster is not None:
            for node in cluster.nodes:
                if node.name in stopped:
                    cluster.start_node(node)
                    _say(started, f"start {node.name} for verification")
            cluster.wait_ready()
        time.sleep(float(scenario.get("settle", 3)))
        return _verify(apis, tally, started)
    finally:
        if cluster is not None:
            cluster.stop()
            cluster.cleanup_broker()
            if root is None and own_root is not None:
                shutil.rmtree(own_root, ignore_errors=True)


def _verify(apis: list[Api], tally: Tally, started: float) -> int:
    bad = []
    for i, write in enumerate(tally.acknowledged):
        status, got = apis[i % len(apis)].get(write.name)
        if status != 200 or got != write.hash:
            bad.append((write.name, status))
    ok = len(tally.acknowledged) - len(bad)
    _say(started, f"verified {ok} of {len(tally.acknowledged)} acknowledged writes by "
                  f"SHA-256; corrupt reads during the run: {len(tally.corrupt)}")
    for name, status in bad[:20]:
        print(f"  LOST or WRONG: {name} (GET {status})", flush=True)
    if bad or tally.corrupt or not tally.acknowledged:
        print("FAILED" + ("" if tally.acknowledged else ": no write was acknowledged"),
              flush=True)
        return 1
    print("OK", flush=True)
    return 0


