"""Maintenance and async tasks (issue 5): retention, orphan collection, the object scanner,
the durable work queue and its worker, and tools that refuse a nonsensical metadata backend.

One private cluster for the module (the tools act on the whole cluster, so they must not see
the session cluster's objects), with one task worker whose "object stored" hook is a small
HTTP server in this process.  Tests that need a worker of their own start it on a queue of
their own, named after the cluster's suffix; the cluster's teardown deletes those queues too.
"""
from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lib.config import Config
from lib.hashing import quote_hash
from lib.metadata import Draft, open_store
from lib.rabbitmq import Outgoing, QueueClient
from lib.rs import layout
from lib.rs.params import ALL_SHARDS, BLOCK_SIZE
from lib.tasks import Task, TaskQueues
from scripts.cluster import REPO, Cluster, Node
from tests.conftest import sha256_b64
from tests.probe.conftest import RABBITMQ, Client, _make_cluster, _teardown, wait_for

pytestmark = pytest.mark.probe

OLD = 2 * 3600          # seconds: how far back "old" shards are dated


# -- helpers ----------------------------------------------------------------------------------

class Hook:
    """A loopback HTTP server recording POSTed JSON by path.  A path with a closed gate holds
    its requests until the gate opens; a path in ``failing`` answers 500."""

    def __init__(self):
        self.records: list[tuple[str, dict, float]] = []
        self.gates: dict[str, threading.Event] = {}
        self.failing: set[str] = set()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.records.append((self.path, body, time.monotonic()))
                gate = hook.gates.get(self.path)
                if gate is not None:
                    gate.wait(60)
                status = 500 if self.path in hook.failing else 200
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass                 # the worker that asked was killed meanwhile

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def bodies(self, path: str) -> list[dict]:
        return [body for p, body, _ in self.records if p == path]

    def close(self):
        for gate in self.gates.values():
            gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hook():
    h = Hook()
    yield h
    h.close()


@pytest.fixture(scope="module")
def maint(tmp_path_factory, hook):
    cluster = _make_cluster(tmp_path_factory.mktemp("maintenance"), workers=0)
    cluster.add_worker(env={"STORED_HOOK_URL": hook.url("/stored")})
    try:
        cluster.start()
        yield cluster
    finally:
        _teardown(cluster)


@pytest.fixture
def client(maint) -> Client:
    return Client(maint)


@pytest.fixture
def metadata(maint):
    store = open_store(Config(metadata_db=maint.metadata_db))
    yield store
    store.close()


def run_tool(cluster: Cluster, module: str, *args: str, node: Node | None = None,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` with the environment the cluster gives ``node``."""
    full = cluster.env_for(node or cluster.workers[0])
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full,
                          capture_output=True, text=True, timeout=120)


BOOK = Config().book_bucket


def add_version(metadata, name: str, size: int, hash_: str):
    """A version written straight into the metadata (a delete marker without a hash)."""
    return metadata.put_version(Draft(BOOK, name, size, hash_, delete_marker=not hash_,
                                      shared=metadata.has_hash(hash_)))


def numbers(metadata, name: str) -> list[int]:
    return [v.number for v in metadata.versions_of(BOOK, name)]


def delete_number(metadata, name: str, number: int, forget: bool = False) -> None:
    """Remove a version; ``forget``: its content's record too, as if it had never been
    written (or the sweep had claimed it)."""
    version = metadata.delete_version(BOOK, name,
                                      metadata.numbered(BOOK, name, number).version_id)
    if forget:
        assert metadata.claim_unreferenced(version.hash, 0)


def put(client: Client, name: str, data: bytes) -> str:
    hash_ = sha256_b64(data)
    response = client.put(name, data, hash_)
    assert response.status_code == 200, response.text
    return hash_


def garbage_files(cluster: Cluster, hash_: str) -> list:
    prefix = quote_hash(hash_) + "."
    return [p for n in cluster.data for p in (n.storage_root / "garbage").iterdir()
            if p.name.startswith(prefix)]


def backdate(paths, seconds: float) -> None:
    when = time.time() - seconds
    for path in paths:
        os.utime(path, (when, when))


def shard_paths(client: Client, hash_: str) -> list:
    return [p for files in client.shard_files(hash_).values() for p in files]


def fully_stored(client: Client, hash_: str) -> bool:
    files = client.shard_files(hash_)
    return sorted(files) == list(range(ALL_SHARDS)) and all(
        sha256_b64(p.read_bytes()) == p.name.rsplit(".", 1)[1].replace("%2F", "/")
        for paths in files.values() for p in paths)


def queue_counts(queue: str) -> tuple[int, int] | None:
    with QueueClient(RABBITMQ, "test") as qc:
        return qc.counts(queue)


def publish(queue: str, *bodies: bytes) -> None:
    with QueueClient(RABBITMQ, "test") as qc:
        for body in bodies:
            qc.publish(Outgoing(queue, body))


def start_worker(cluster: Cluster, queue: str, **env: str) -> Node:
    node = cluster.add_worker(env={"TASK_QUEUE": queue, **env})
    cluster.start_node(node)
    wait_for(lambda: (queue_counts(queue) or (0, 0))[1] == 1, timeout=30)
    return node


# -- the "object stored" hook -----------------------------------------------------------------

def test_a_put_sends_a_stored_event_through_the_worker(client, hook):
    data = os.urandom(70_000)
    hash_ = put(client, "event/one", data)
    event = wait_for(lambda: next((b for b in hook.bodies("/stored")
                                   if b["name"] == "event/one"), None))
    assert event == {"event": "stored", "name": "event/one", "version": 1, "hash": hash_,
                     "size": len(data), "id": event["id"]}


# -- retention --------------------------------------------------------------------------------

def test_retention_keeps_the_newest_versions_of_every_name(maint, client, metadata):
    """More than ten names (the book trims ten per run), version numbers with gaps (the book
    assumes them contiguous), delete markers; content that loses its last reference is
    garbage-collected by the worker, content still referenced is not."""
    expected = {}
    for i in range(25):
        name = f"retention/{i:02d}"
        for v in range(i % 8 + 1):
            if v == 3:
                add_version(metadata, name, 0, "")                 # a delete marker
            else:
                add_version(metadata, name, 10, sha256_b64(f"{name} {v}".encode()))
        versions = numbers(metadata, name)
        if len(versions) > 4:
            delete_number(metadata, name, versions[1])      # a gap
            versions.remove(versions[1])
        expected[name] = versions[-2:]
    c1, c2, c3 = (os.urandom(200_000 + i) for i in range(3))
    h1, h2, h3 = (put(client, "retention/real", c) for c in (c1, c2, c3))
    assert put(client, "retention/real", c1) == h1          # v4: c1 again, deduplicated
    expected["retention/real"] = [3, 4]
    before = {n: numbers(metadata, n) for n in expected}
    removed = sum(len(v) - len(expected[n]) for n, v in before.items() if len(v) > 2)

    done = run_tool(maint, "scripts.delete_old_metadata", "--keep", "2", "--grace", "0")
    assert done.returncode == 0, done.stderr
    assert f"removed {removed} version(s) of " in done.stdout
    assert "gc task(s) queued" in done.stdout
    for name, versions in expected.items():
        assert numbers(metadata, name) == versions, name
    wait_for(lambda: client.shard_files(h2) == {} and len(garbage_files(maint, h2)) == 6)
    assert fully_stored(client, h1) and fully_stored(client, h3)
    assert client.get("retention/real").content == c1
    assert client.get("retention/real", params={"version": 1}).status_code == 404

    for name in expected:                                   # leave no shardless objects
        if name != "retention/real":
            for number in numbers(metadata, name):
                delete_number(metadata, name, number)


# -- orphan collection ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["per-server", "cluster"])
def test_orphans_are_collected_but_not_an_upload_in_flight(maint, client, metadata, mode):
    """An orphan: its PUT committed the shards, then its metadata write never happened (we
    remove the row it wrote).  An upload in flight looks the same except that its shards were
    just committed.  Collection takes the first (its shards dated two hours back), leaves the
    second (and a referenced object) alone, and garbage is purged by age."""
    orphan, flight, kept = (os.urandom(BLOCK_SIZE + 5000 + i) for i in range(3))
    h_orphan = put(client, f"orphan/{mode}", orphan)
    h_flight = put(client, f"flight/{mode}", flight)
    h_kept = put(client, f"kept/{mode}", kept)
    delete_number(metadata, f"orphan/{mode}", 1, forget=True)
    delete_number(metadata, f"flight/{mode}", 1, forget=True)
    backdate(shard_paths(client, h_orphan) + shard_paths(client, h_kept), OLD)

    def collect(*args: str) -> list[subprocess.CompletedProcess]:
        if mode == "cluster":
            runs = [run_tool(maint, "scripts.delete_orphan_objects", "--cluster", *args)]
        else:
            runs = [run_tool(maint, "scripts.delete_orphan_objects", *args, node=node)
                    for node in maint.data]
        for done in runs:
            assert done.returncode == 0, done.stderr
        return runs

    runs = collect("--grace", "600", "--keep-garbage")
    assert sum(" 1 orphaned " in done.stdout for done in runs) == (1 if mode == "cluster" else 6)
    assert client.shard_files(h_orphan) == {} and len(garbage_files(maint, h_orphan)) == 6
    assert fully_stored(client, h_flight) and fully_stored(client, h_kept)
    assert garbage_files(maint, h_flight) == []

    time.sleep(1.2)                      # the orphan's shards have been in garbage/ 1.2 s
    fresh = maint.data[0].storage_root / "garbage" / "just-moved"
    fresh.write_bytes(b"x")
    collect("--grace", "600", "--purge-garbage-older-than", "1")
    assert garbage_files(maint, h_orphan) == [] and fresh.exists()
    fresh.unlink()

    add_version(metadata, f"flight/{mode}", len(flight), h_flight)   # the upload completes
    assert client.get(f"flight/{mode}").content == flight


# -- the object scanner -----------------------------------------------------------------------

def test_scanner_repairs_missing_and_corrupt_shards(maint, client, metadata):
    lost = os.urandom(2 * BLOCK_SIZE + 17)
    flipped = os.urandom(3 * BLOCK_SIZE)
    truncated = os.urandom(BLOCK_SIZE + 99)
    ruined = os.urandom(5000)
    h_lost = put(client, "scan/lost", lost)
    h_flipped = put(client, "scan/flipped", flipped)
    h_truncated = put(client, "scan/truncated", truncated)
    h_ruined = put(client, "scan/ruined", ruined)
    for index in (0, 4):
        client.shard_files(h_lost)[index][0].unlink()
    (path,) = client.shard_files(h_flipped)[2]
    raw = bytearray(path.read_bytes())
    raw[layout.full_record_size() + 777] ^= 0x40            # block 1 of shard 2
    path.write_bytes(bytes(raw))
    (path,) = client.shard_files(h_truncated)[5]
    path.write_bytes(path.read_bytes()[:layout.full_record_size()])   # a whole record gone
    for index in (1, 2, 3):
        client.shard_files(h_ruined)[index][0].unlink()
    objects = 0
    after = None
    while page := metadata.hashes(after=after):
        objects += sum(metadata.content(h).refs > 0 for h in page)
        after = page[-1]

    done = run_tool(maint, "scripts.object_scanner", "--rate", "0")
    assert done.returncode == 1, done.stderr                # one object is unrecoverable
    out = done.stdout
    for hash_ in (h_lost, h_flipped, h_truncated):
        assert f"repaired {hash_}" in out
    assert f"UNRECOVERABLE {h_ruined}" in out
    assert f"scan complete: {objects} objects checked" in out      # each object once
    assert "3 repaired, 0 damaged, 1 unrecoverable" in out
    assert "scanning:" in done.stderr                       # the progress line
    for hash_, data in ((h_lost, lost), (h_flipped, flipped), (h_truncated, truncated)):
        assert fully_stored(client, hash_)
    assert client.get("scan/flipped").content == flipped
    logged = {r.hash: r for r in metadata.repairs() if r.by == "object_scanner"
              and r.hash in (h_lost, h_flipped, h_truncated, h_ruined)}
    assert set(logged) == {h_lost, h_flipped, h_truncated}         # the ruined one never ran
    assert logged[h_lost].shards == (0, 4) and logged[h_lost].outcome == "done"

    delete_number(metadata, "scan/ruined", 1, forget=True)
    again = run_tool(maint, "scripts.object_scanner", "--rate", "1000")
    assert again.returncode == 0, again.stderr
    assert "0 repaired, 0 damaged, 0 unrecoverable" in again.stdout


def _holders(client: Client, hash_: str) -> dict[int, list]:
    """shard index -> the data server nodes whose objects/ hold a copy of it."""
    roots = {n.storage_root: n for n in client.cluster.data}
    return {i: [roots[p.parent.parent] for p in paths]
            for i, paths in client.shard_files(hash_).items()}


def _stored_without(client: Client, hash_: str, away) -> bool:
    """Whether every shard of ``hash_`` has a copy on a node other than ``away``."""
    holders = _holders(client, hash_)
    return len(holders) == ALL_SHARDS and all(
        any(node is not away for node in nodes) for nodes in holders.values())


def test_scanner_collects_the_extra_copies_a_returning_server_brings(maint, client):
    """A data server is away while repair rebuilds its shards elsewhere, then comes back with
    its old copies: the scanner verifies every copy, retires a corrupt one at once, and of two
    good copies keeps one, collecting the other once it is older than the grace period."""
    good = os.urandom(2 * BLOCK_SIZE + 17)
    spoilt = os.urandom(BLOCK_SIZE + 5)
    h_good = put(client, "dup/good", good)
    h_spoilt = put(client, "dup/spoilt", spoilt)
    away = _holders(client, h_good)[2][0]
    (spoilt_index,) = [i for i, nodes in _holders(client, h_spoilt).items() if away in nodes]
    maint.stop_node(away)
    for name, data in (("dup/good", good), ("dup/spoilt", spoilt)):
        assert client.get(name).content == data          # degraded: the worker rebuilds
    wait_for(lambda: _stored_without(client, h_good, away)
             and _stored_without(client, h_spoilt, away), timeout=30)
    maint.start_node(away)
    maint.wait_ready()
    assert len(_holders(client, h_good)[2]) == 2
    assert len(_holders(client, h_spoilt)[spoilt_index]) == 2
    (old_copy,) = [p for p in client.shard_files(h_spoilt)[spoilt_index]
                   if p.parent.parent == away.storage_root]
    raw = bytearray(old_copy.read_bytes())
    raw[layout.full_record_size() - 9] ^= 0x10         # inside the first record's payload
    old_copy.write_bytes(bytes(raw))

    first = run_tool(maint, "scripts.object_scanner", "--rate", "0", "--grace", "3600")
    assert first.returncode == 0, first.stderr
    assert f"repaired {h_spoilt}: damaged extra copies (shard {spoilt_index} on " \
           f"{away.address})" in first.stdout
    assert f"extra copies of {h_good}: " in first.stdout
    assert "0 moved to garbage, 1 kept for now" in first.stdout      # the rebuilt one: young
    assert [n.address for n in _holders(client, h_spoilt)[spoilt_index]] != [away.address]
    assert all(len(nodes) == 1 for nodes in _holders(client, h_spoilt).values())
    assert any(p.parent.parent == away.storage_root for p in garbage_files(maint, h_spoilt))
    assert len(_holders(client, h_good)[2]) == 2

    backdate(shard_paths(client, h_good), OLD)
    second = run_tool(maint, "scripts.object_scanner", "--rate", "0", "--grace", "3600")
    assert second.returncode == 0, second.stderr
    assert f"extra copies of {h_good}: " in second.stdout
    assert "1 moved to garbage, 0 kept for now" in second.stdout
    holders = _holders(client, h_good)
    assert sorted(holders) == list(range(ALL_SHARDS))
    assert all(len(nodes) == 1 for nodes in holders.values())
    assert holders[2] == [away]            # the copy on the server holding no other shard
    assert len({n.address for nodes in holders.values() for n in nodes}) == ALL_SHARDS
    assert fully_stored(client, h_good) and fully_stored(client, h_spoilt)
    assert client.get("dup/good").content == good
    assert client.get("dup/spoilt").content == spoilt
    third = run_tool(maint, "scripts.object_scanner", "--rate", "0", "--check-only")
    assert f"extra copies of {h_good}" not in third.stdout and h_spoilt not in third.stdout


# -- the work queue ---------------------------------------------------------------------------

def test_a_degraded_get_is_repaired_by_the_worker(maint, client, metadata):
    data = os.urandom(BLOCK_SIZE + 1)
    hash_ = put(client, "queue/degraded", data)
    client.shard_files(hash_)[2][0].unlink()
    assert client.get("queue/degraded").content == data
    wait_for(lambda: fully_stored(client, hash_))
    log = maint.workers[0].log_path
    wait_for(lambda: f"repair {hash_}: rebuilt shards [2]" in log.read_text())
    (record,) = [r for r in metadata.repairs() if r.hash == hash_]
    assert (record.by, record.outcome, record.shards) == ("worker", "done", (2,))


def test_a_worker_killed_mid_task_does_not_lose_it(maint, hook):
    queue = f"{maint.task_queue}.kill"
    hook.gates["/slow"] = threading.Event()
    worker = start_worker(maint, queue, STORED_HOOK_URL=hook.url("/slow"))
    task = Task.stored("killed/mid-task", 1, sha256_b64(b"k"), 1)
    publish(queue, task.to_json())
    wait_for(lambda: len(hook.bodies("/slow")) == 1)        # the worker is inside the task
    maint.kill_node(worker)
    wait_for(lambda: queue_counts(queue) == (1, 0))         # back in the queue, unacked

    hook.gates["/slow"].set()
    maint.start_node(worker)
    wait_for(lambda: len(hook.bodies("/slow")) == 2, timeout=30)
    assert [b["id"] for b in hook.bodies("/slow")] == [task.id, task.id]
    wait_for(lambda: queue_counts(queue) == (0, 1))
    assert queue_counts(TaskQueues(queue).dead) == (0, 0)

    # SIGTERM while a task runs: the task is finished and acknowledged, then the worker exits
    hook.gates["/slow"] = threading.Event()
    second = Task.stored("terminated/mid-task", 1, sha256_b64(b"t"), 1)
    publish(queue, second.to_json())
    wait_for(lambda: len(hook.bodies("/slow")) == 3)
    process = worker.process
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert process.poll() is None                           # still finishing its task
    hook.gates["/slow"].set()
    assert process.wait(20) == 0
    worker.process = None
    assert "worker stopped" in worker.log_path.read_text()
    assert queue_counts(queue) == (0, 0)                    # acknowledged: not redelivered
    assert [b["id"] for b in hook.bodies("/slow")].count(second.id) == 1


def test_a_poison_task_ends_in_the_dead_letter_queue(maint, hook):
    queue = f"{maint.task_queue}.poison"
    hook.failing.add("/fail")
    worker = start_worker(maint, queue, STORED_HOOK_URL=hook.url("/fail"),
                          TASK_MAX_ATTEMPTS="3", TASK_RETRY_DELAY="0.3")
    task = Task.stored("poison", 1, sha256_b64(b"p"), 1)
    publish(queue, task.to_json(), b"{this is not a task")
    dead = TaskQueues(queue).dead
    wait_for(lambda: (queue_counts(dead) or (0, 0))[0] == 2, timeout=30)
    tries = [t for p, b, t in hook.records if p == "/fail" and b["id"] == task.id]
    assert len(tries) == 3
    assert tries[1] - tries[0] >= 0.25 and tries[2] - tries[1] >= 0.55     # 0.3 s, then 0.6 s

    listed = run_tool(maint, "scripts.worker", "--list-dead", env={"TASK_QUEUE": queue})
    assert listed.returncode == 0, listed.stderr
    parked = [json.loads(line) for line in listed.stdout.splitlines() if line.startswith("{")]
    (record,) = [r for r in parked if r.get("id") == task.id]
    assert record["attempt"] == 3 and "500" in record["error"]
    assert any("malformed" in r.get("error", "") for r in parked)
    assert f"2 task(s) in {dead}" in listed.stdout

    hook.failing.discard("/fail")                            # the operator fixed the hook
    requeued = run_tool(maint, "scripts.worker", "--requeue-dead", env={"TASK_QUEUE": queue})
    assert "1 task(s) moved" in requeued.stdout, requeued.stderr
    wait_for(lambda: len([b for b in hook.bodies("/fail") if b["id"] == task.id]) == 4)
    wait_for(lambda: queue_counts(queue) == (0, 1) and queue_counts(dead) == (1, 0))
    maint.stop_node(worker)


# -- a metadata backend that answers nonsense -------------------------------------------------

class FakeElasticsearch:
    """Answers like Elasticsearch ``version`` on the root and with our mappings, and nonsense
    to every search (a total-hits format nobody knows)."""

    def __init__(self, version: str):
        from lib.metadata.elasticsearch import MAPPINGS, index_names

        kinds = {name: kind for kind, name in index_names(Config().es_index).items()}
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Elastic-Product", "Elasticsearch")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path.endswith("/_mapping"):
                    names = path.strip("/").split("/")[0].split(",")
                    self._answer({n: {"mappings": MAPPINGS[kinds[n]]} for n in names})
                else:
                    self._answer({"version": {"number": version}, "tagline": "You Know"})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.searches += 1
                self._answer({"hits": {"total": "lots", "hits": []}})

            def log_message(self, *args):
                pass

        self.searches = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_tools_refuse_a_metadata_backend_that_answers_nonsense(maint, client):
    put(client, "nonsense/victim", os.urandom(3000))
    every_shard = sorted(p for n in maint.data for p in (n.storage_root / "objects").iterdir())
    assert every_shard
    for version, tools in (
        ("8.13.4", [("scripts.delete_old_metadata", "--keep", "1"),
                    ("scripts.delete_orphan_objects", "--grace", "0"),
                    ("scripts.delete_orphan_objects", "--cluster", "--grace", "0"),
                    ("scripts.object_scanner", "--rate", "0")]),
        ("7.17.0", [("scripts.delete_orphan_objects", "--cluster", "--grace", "0")]),
    ):
        fake = FakeElasticsearch(version)
        try:
            for module, *args in tools:
                done = run_tool(maint, module, *args, node=maint.data[0],
                                env={"ES_SERVER": fake.address})
                assert done.returncode == 3, (module, done.stdout, done.stderr)
                assert "refusing to go on" in done.stderr, done.stderr
        finally:
            fake.close()
        assert (fake.searches > 0) == (version == "8.13.4")
    assert sorted(p for n in maint.data for p in (n.storage_root / "objects").iterdir()) \
        == every_shard


def test_readme_maintenance_commands_run_as_written(make_cluster):
    """The README's maintenance block, run on a data server's host environment."""
    from tests.probe.test_readme import readme_block
    cluster = make_cluster()
    client = Client(cluster)
    for i in range(7):
        data = f"kept or not {i}".encode()
        assert client.put("many-versions", data, sha256_b64(data)).status_code == 200
    script = readme_block("maintenance")
    env = cluster.env_for(cluster.data[0])
    # The README's "python" is the project environment's (". .venv/bin/activate").
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    versions = client.session.get(f"{client.api()}/versions/many-versions").text.splitlines()
    assert len(versions) == 5
