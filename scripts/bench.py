"""Benchmark a real local Tessera cluster next to a raw-HTTP baseline on the same machine.

Why (issue 6): MB/s and ops/s alone say more about the machine than about Tessera, and they
cannot tell a slow change from a busy host.  So every run also streams the same bytes over plain
HTTP to a minimal server (a separate process on 127.0.3.1) that only discards or serves them,
and reports each throughput both in MB/s and as a ratio to that baseline.

The run starts its own cluster (6 data servers, 1 api server, SQLite, the local RabbitMQ) on
loopback with per-run exchange names, runs the workloads one after another, and always stops
what it started, deletes its exchanges and removes its temp directory, even on error or Ctrl-C.
Object bodies are generated in 1 MiB chunks and never held whole in memory.  Only the standard
library and the repository's own modules are used, and every byte goes to 127.x.y.z.

The other groups (``--only``; issues 12, 13, 14, 18) put numbers next to the ones they must be
compared with, in the same run, because this machine is shared: S3 through boto3 (the test
extra) next to the book API, multipart next to a single PUT, a second cluster on PostgreSQL
next to SQLite, conditional PUTs next to plain ones, and optionally moto's S3 server as a peer.
A multipart part (at most --part-mib, 8 at once) is the one body held whole, as boto3 sends it.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import http.client
import http.server
import io
import ipaddress
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

if __package__ in (None, ""):           # run as a file: python scripts/bench.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.config import Config  # noqa: E402
from lib.hashing import b64_digest, quote_hash  # noqa: E402
from lib.metadata import ENABLED, Draft, open_store  # noqa: E402
from lib.rs.params import ALL_SHARDS, DATA_SHARDS  # noqa: E402
from scripts.cluster import Cluster, Node, _children, free_port  # noqa: E402

MIB = 1 << 20
CHUNK = MIB
SMALL_SIZE = 4096
DATA_SERVERS = 6
STOPPED_SERVERS = 2
BASELINE_HOST = "127.0.3.1"
SCALE_LEVELS = (("scale_1k", 1_000), ("scale_100k", 100_000))
#: One incompressible block; every chunk of every body is it with a distinct 16-byte prefix.
_BLOCK = random.Random(6).randbytes(CHUNK)

FULL = {"large_mib": 256, "large_count": 3, "small_seconds": 15.0, "samples": 200,
        "multipart_mib": 256, "part_mib": 16, "complete_parts": 1000, "list_keys": 100_000}
QUICK = {"large_mib": 64, "large_count": 2, "small_seconds": 4.0, "samples": 50,
         "multipart_mib": 64, "part_mib": 8, "complete_parts": 1000, "list_keys": 2_000}

EPILOG = f"""\
workloads, in order (MB means MiB, 2**20 bytes; latencies are per request):
  baseline_upload / baseline_download   the large objects' bytes PUT to / GET from the
                          minimal server (1 MiB chunks, Content-Length, same client code)
  baseline_small_put / baseline_small_get   {SMALL_SIZE} B requests to the minimal server
                          from the same concurrent clients as small_put / small_get
  large_put / large_get   large objects (256 MiB; --quick 64 MiB), one client, with Digest;
                          GET bodies are verified by hashing the stream
  degraded_get            large GET with 2 of 6 data servers stopped, both holding data
                          shards (0..3) of the object, so Reed-Solomon decoding runs
  small_put / small_get   {SMALL_SIZE} B objects, distinct random content, concurrent clients
                          (threads with one keep-alive connection each), fixed duration
  locate                  GET /locate/<quoted hash> of a stored object, one client
  new_put                 PUT of new {SMALL_SIZE} B content, one client (p99 stays far below
                          LOCATE_TIMEOUT: new content is not located)
  scale_1k_* / scale_100k_*   small PUT (new content) / GET of random names among 1,000 and
                          then 100,000 names preloaded into the cluster's SQLite through
                          MetadataStore, on top of the objects stored earlier (not --quick)

groups (--only, comma-separated; each group runs in this order, on the same cluster):
  book                    the workloads above (the default)
  s3                      book_put/get_4k and _1m, then s3_put/get_4k and _1m: {SMALL_SIZE} B
                          and 1 MiB objects, distinct content, through the book API and
                          through boto3 on the S3 listener, concurrent clients, fixed duration;
                          with --peer moto also moto_put/get_*, with --s3-endpoint
                          peer_put/get_*, against the same boto3 code
  list                    list_keys / list_prefixes: one ListObjectsV2 page of 1,000 keys and
                          one of 1,000 CommonPrefixes (delimiter /), one client, in a bucket
                          of --list-keys keys written straight to the metadata; a presigned
                          URL fetched raw (boto3's XML parsing is not timed)
  multipart               mp_book_put (book large PUT), mp_single_put (S3 PutObject),
                          mp_multipart_put (parts of --part-mib, 8 at once), GETs of the
                          single and multipart objects, and mp_complete: the latency of
                          CompleteMultipartUpload of --complete-parts 1 KiB parts alone
  pg                      a second cluster on PostgreSQL (127.0.0.1:5432, database test, a
                          schema of its own, dropped at the end): sqlite_ / pg_small_put and
                          small_get (4 turns on each, A B B A, after an untimed
                          second), list_keys, list_prefixes
  cond                    cond_book_put / _none_match / _match and cond_s3_*: plain {SMALL_SIZE} B
                          PUTs, If-None-Match: * PUTs of new keys, If-Match read-modify-write
                          PUTs of one key per client, through both APIs
  observe                 what observing requests costs (issue 15: metrics and JSON access
                          lines within 3%): two more clusters, observed (LOG_FORMAT=json,
                          LOG_LEVEL=info) and unobserved (METRICS=off, LOG_LEVEL=warning),
                          take turns as in pg: observed_ / unobserved_small_put and
                          small_get, with their CPU per op; then scripts/observe_cost.py's
                          CPU us per api request (metrics + JSON line) and per data-server
                          request (metrics), as a share of the unobserved small PUT
                          (1 api + 6 data requests) and small GET (1 + 4)
  The cluster's S3_MIN_PART_SIZE is 1 KiB (for mp_complete's parts).

ratios compare with the baseline doing the same transfer: large_put with baseline_upload,
large_get and degraded_get with baseline_download, small and scale workloads with
baseline_small_put / baseline_small_get.  In the groups a ratio compares with the row
measured the same way just before: S3 with the book API, moto with Tessera's S3, multipart and
S3 single PUT with book large PUT, multipart GET with single-PUT GET, pg with sqlite,
conditional with plain.  It is a ratio of MB/s, or of ops/s where no bytes move.

api RSS: VmHWM (lifetime peak) of the api server's gunicorn master and workers after each
workload; api_peak_rss_mb is the value after the large and degraded workloads.

--json keys: <workload>_mbps, <workload>_ops, <workload>_p50_ms, <workload>_p99_ms,
<workload>_ratio, <workload>_rss_mb and <workload>_cpu_ms (CPU of the cluster's processes
per operation) per workload (mbps only where bytes move, ratio only where a baseline
applies, rss and cpu only for cluster workloads), observe_api_us, observe_data_us,
observe_small_put_share, observe_small_get_share, observe_small_put_cpu_ratio,
observe_small_get_cpu_ratio, their _user_cpu_ratio and the rows' _user_cpu_ms (the observe
group), api_peak_rss_mb,
cluster_log_errors (ERROR lines and tracebacks in the cluster's logs), and the run's
settings and machine: cpu_count, python_version, platform, loadavg_start, loadavg_end,
large_object_mib, large_count, small_object_bytes, clients, small_seconds, latency_samples,
quick, groups, peer, total_seconds.

Progress goes to stderr; with --json stdout carries only the JSON object.  Exit status is 0 on
success, 1 when a workload or the cluster fails (the cluster log tails are printed), 130 on
Ctrl-C.  RabbitMQ must be running at {Config.rabbitmq_server}.
"""


# -- bodies ------------------------------------------------------------------------------------

def body_chunks(seed: int, size: int) -> Iterator[memoryview]:
    """``size`` pseudo-random bytes in 1 MiB chunks that differ by their (seed, index) prefix.

    The chunks share one buffer: each must be used before the next is asked for.
    """
    buffer = bytearray(_BLOCK)
    view = memoryview(buffer)
    for index, offset in enumerate(range(0, size, CHUNK)):
        struct.pack_into(">QQ", buffer, 0, seed, index)
        yield view[:min(CHUNK, size - offset)]


def sha256_b64(chunks: Iterable[bytes | memoryview]) -> str:
    sha = hashlib.sha256()
    for chunk in chunks:
        sha.update(chunk)
    return b64_digest(sha)


@dataclasses.dataclass(frozen=True)
class LargeObject:
    name: str
    seed: int
    size: int
    hash: str

    @classmethod
    def make(cls, seed: int, size: int) -> "LargeObject":
        return cls(f"bench/large/{seed}", seed, size, sha256_b64(body_chunks(seed, size)))

    def chunks(self) -> Iterator[memoryview]:
        return body_chunks(self.seed, self.size)


# -- HTTP client -------------------------------------------------------------------------------

class Client:
    """One keep-alive HTTP/1.1 connection; bodies stream in 1 MiB chunks."""

    def __init__(self, address: str, timeout: float = 120.0):
        host, port = address.rsplit(":", 1)
        self._conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def put(self, path: str, chunks: Iterable[bytes | memoryview], size: int,
            digest: str | None = None, headers: dict[str, str] | None = None) -> None:
        conn = self._conn
        conn.putrequest("PUT", path, skip_accept_encoding=True)
        conn.putheader("Content-Length", str(size))
        if digest is not None:
            conn.putheader("Digest", f"SHA-256={digest}")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        try:
            for chunk in chunks:
                conn.send(chunk)
        except ConnectionError:
            pass                         # answered before reading it all: the status says why
        self._read(conn.getresponse(), f"PUT {path}")

    def get(self, path: str, expect: str | None = None) -> int:
        """Stream the body through SHA-256; check it against ``expect`` or the Digest header."""
        self._conn.request("GET", path)
        response = self._conn.getresponse()
        if response.status != 200:
            self._read(response, f"GET {path}")
        sha = hashlib.sha256()
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        size = 0
        while n := response.readinto(buffer):
            sha.update(view[:n])
            size += n
        expect = expect or _digest_header(response)
        digest = b64_digest(sha)
        if expect is not None and digest != expect:
            raise RuntimeError(f"GET {path}: body hashes to {digest}, expected {expect}")
        return size

    def get_json(self, path: str) -> dict:
        return json.loads(self.get_body(path))

    def get_body(self, path: str) -> bytes:
        self._conn.request("GET", path)
        return self._read(self._conn.getresponse(), f"GET {path}")

    def close(self) -> None:
        self._conn.close()

    @staticmethod
    def _read(response: http.client.HTTPResponse, what: str) -> bytes:
        body = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{what}: {response.status} {response.reason}: {body[:300]!r}")
        return body


def _digest_header(response: http.client.HTTPResponse) -> str | None:
    algorithm, _, value = (response.getheader("Digest") or "").partition("=")
    return value if algorithm.upper() == "SHA-256" else None


# -- baseline server ---------------------------------------------------------------------------

class _BaselineHandler(http.server.BaseHTTPRequestHandler):
    """PUT: read and discard the body.  GET /<seed>/<size>: serve body_chunks(seed, size)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True       # as gunicorn does: no 40 ms delayed-ACK stalls

    def do_PUT(self) -> None:
        remaining = int(self.headers["Content-Length"])
        buffer = memoryview(bytearray(min(CHUNK, remaining)))
        while remaining:
            n = self.rfile.readinto(buffer[:min(len(buffer), remaining)])
            if not n:
                raise ConnectionError("client closed the connection mid-body")
            remaining -= n
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        _, seed, size = self.path.split("/")
        self.send_response(200)
        self.send_header("Content-Length", size)
        self.end_headers()
        for chunk in body_chunks(int(seed), int(size)):
            self.wfile.write(chunk)

    def log_message(self, *args) -> None:
        pass


def _serve_baseline(port_pipe) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the bench process stops us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    server = http.server.ThreadingHTTPServer((BASELINE_HOST, 0), _BaselineHandler)
    port_pipe.send(server.server_address[1])
    server.serve_forever()


@contextlib.contextmanager
def baseline_server() -> Iterator[str]:
    """The minimal server in its own process (no GIL shared with the clients); its address."""
    receiver, sender = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.Process(target=_serve_baseline, args=(sender,), daemon=True)
    process.start()
    try:
        if not receiver.poll(10):
            raise RuntimeError(f"baseline server on {BASELINE_HOST} did not start")
        yield f"{BASELINE_HOST}:{receiver.recv()}"
    finally:
        process.terminate()
        process.join(5)


# -- cluster -----------------------------------------------------------------------------------

def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def log_errors(cluster: Cluster) -> int:
    """ERROR lines and tracebacks in every node's log."""
    count = 0
    for node in cluster.data + cluster.api:
        with contextlib.suppress(FileNotFoundError):
            text = node.log_path.read_text(errors="replace")
            count += text.count(" ERROR ") + text.count("Traceback (most recent call last)")
    return count


@contextlib.contextmanager
def running_cluster(port: int, keep_root: bool, env: dict | None = None) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    cluster = Cluster(root, port=port, data_servers=DATA_SERVERS, api_servers=1,
                      exchange_suffix=f".bench-{os.getpid()}-{time.time_ns()}",
                      env={"S3_MIN_PART_SIZE": "1024", **(env or {})})
    try:
        progress(f"starting cluster on port {port} in {root}")
        cluster.start()
        yield cluster
    except Exception:
        for node in cluster.data + cluster.api:
            progress(f"--- {node.name} {node.address} log tail:\n{node.log_tail(15)}")
        raise
    finally:
        cluster.stop()
        try:
            cluster.cleanup_broker()
        except Exception as exc:
            progress(f"could not delete exchanges {cluster.api_exchange}, "
                     f"{cluster.data_exchange}: {exc!r}")
        if keep_root:
            progress(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def wait_for_data_servers(api: Client, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while api.get_json("/health").get("data_servers") != count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"api server does not see {count} data servers after {timeout}s")
        time.sleep(0.1)


def data_shard_holders(api: Client, hash_: str) -> list[str]:
    """Distinct addresses holding data shards (0..DATA_SHARDS-1) of ``hash_``."""
    shards = api.get_json(f"/locate/{quote_hash(hash_)}")
    holders = [shards[str(i)] for i in range(DATA_SHARDS) if str(i) in shards]
    return list(dict.fromkeys(holders))


@contextlib.contextmanager
def degraded(cluster: Cluster, hash_: str) -> Iterator[list[Node]]:
    """Stop 2 data servers holding data shards of ``hash_``; restart them afterwards (not
    after an error: the run is over and the whole cluster is stopped anyway)."""
    api = Client(cluster.api[0].address)
    try:
        holders = data_shard_holders(api, hash_)[:STOPPED_SERVERS]
        victims = [node for node in cluster.data if node.address in holders]
        if len(victims) < STOPPED_SERVERS:
            raise RuntimeError(f"data shards of {hash_} are on {holders} only")
        for node in victims:
            cluster.stop_node(node)
        wait_for_data_servers(api, DATA_SERVERS - STOPPED_SERVERS)
    finally:
        api.close()
    yield victims
    for node in victims:
        cluster.start_node(node)
    cluster.wait_ready()


def api_peak_rss_mib(cluster: Cluster) -> float:
    """Largest VmHWM of the api server's gunicorn master and its workers."""
    master = cluster.api[0].process.pid
    return max(_vm_hwm_kib(pid) for pid in [master, *_children(master)]) / 1024


def cluster_cpu_seconds(cluster: Cluster, user_only: bool = False) -> float:
    """User and system (or only user) CPU seconds of every running data and api server
    process (gunicorn masters and workers)."""
    pids = [pid for node in cluster.data + cluster.api if node.running
            for pid in [node.process.pid, *_children(node.process.pid)]]
    ticks = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + (0 if user_only else int(fields[12]))
    return ticks / os.sysconf("SC_CLK_TCK")


def _vm_hwm_kib(pid: int) -> int:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith("VmHWM:")), 0)


def preload(db: Path, start: int, stop: int, hash_: str, size: int) -> None:
    """Metadata rows for names ``scale_name(start..stop-1)``, all pointing at one object."""
    config = Config(metadata_db=db)
    with open_store(config) as store:
        store.ensure_bucket(config.book_bucket, versioning=ENABLED)
        for i in range(start, stop):
            store.put_version(Draft(config.book_bucket, scale_name(i), size, hash_,
                                    shared=store.has_hash(hash_)))


def scale_name(i: int) -> str:
    return f"bench/scale/{i:06d}"


# -- measurement -------------------------------------------------------------------------------

#: op(client, worker index, operation index within that worker)
Op = Callable[[Client, int, int], None]


@dataclasses.dataclass
class Result:
    key: str
    label: str
    latencies: list[float]               # seconds per operation
    elapsed: float                       # wall seconds for all of them
    nbytes: int                          # payload bytes moved
    baseline: "Result | None" = None
    rss_mib: float | None = None
    #: CPU milliseconds the cluster's processes (api and data servers) spent per operation:
    #: on a busy machine it moves far less than ops/s.
    cpu_ms: float | None = None
    #: Its user-space part (observe group): what the kernel does for the files a PUT creates
    #: depends on the file system's recent past more than on the code.
    user_cpu_ms: float | None = None

    @property
    def ops(self) -> float:
        return len(self.latencies) / self.elapsed

    @property
    def mbps(self) -> float:
        return self.nbytes / MIB / self.elapsed

    @property
    def ratio(self) -> float | None:
        if self.baseline is None:
            return None
        if self.nbytes and self.baseline.nbytes:
            return self.mbps / self.baseline.mbps
        return self.ops / self.baseline.ops

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000

    def to_json(self) -> dict[str, float]:
        out = {f"{self.key}_ops": self.ops,
               f"{self.key}_p50_ms": self.percentile_ms(0.50),
               f"{self.key}_p99_ms": self.percentile_ms(0.99)}
        if self.nbytes:
            out[f"{self.key}_mbps"] = self.mbps
        if self.ratio is not None:
            out[f"{self.key}_ratio"] = self.ratio
        if self.rss_mib is not None:
            out[f"{self.key}_rss_mb"] = self.rss_mib
        if self.cpu_ms is not None:
            out[f"{self.key}_cpu_ms"] = self.cpu_ms
        if self.user_cpu_ms is not None:
            out[f"{self.key}_user_cpu_ms"] = self.user_cpu_ms
        return out


def run_clients(address: str, op: Op, *, clients: int = 1, count: int | None = None,
                seconds: float | None = None) -> tuple[list[float], float]:
    """Run ``op`` from ``clients`` threads, each with its own connection, until each has done
    ``count`` operations or ``seconds`` have passed; returns (latencies, wall seconds)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        client = Client(address)
        try:
            barrier.wait()
            deadline = time.perf_counter() + seconds if seconds else math.inf
            i = 0
            while (count is None or i < count) and time.perf_counter() < deadline:
                started = time.perf_counter()
                op(client, index, i)
                latencies[index].append(time.perf_counter() - started)
                i += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return [t for worker_latencies in latencies for t in worker_latencies], elapsed


class Bench:
    """The workloads of one run, with what they share: settings, addresses, results."""

    def __init__(self, args: argparse.Namespace, baseline: str, cluster: Cluster):
        self.args = args
        self.baseline = baseline
        self.cluster = cluster
        self.api = cluster.api[0].address
        self.results: dict[str, Result] = {}
        self.api_peak_rss_mib = 0.0
        self.small_names: list[list[str]] = [[] for _ in range(args.clients)]
        #: The small object every preloaded name or key points at.
        self.reference_data = os.urandom(SMALL_SIZE)
        #: ERROR lines in the logs of the other clusters the groups started.
        self.extra_log_errors = 0
        #: The observe group's figures (``observe_*`` keys).
        self.observed: dict[str, float] = {}

    def measure(self, key: str, label: str, address: str, op: Op, op_bytes: int,
                baseline: str | None = None, **how) -> Result:
        progress(f"{label} ...")
        cpu = cluster_cpu_seconds(self.cluster)
        latencies, elapsed = run_clients(address, op, **how)
        result = self.record(key, label, latencies, elapsed, op_bytes * len(latencies),
                             baseline)
        if address == self.api:
            result.rss_mib = api_peak_rss_mib(self.cluster)
            result.cpu_ms = (cluster_cpu_seconds(self.cluster) - cpu) * 1000 / len(latencies)
        return result

    def record(self, key: str, label: str, latencies: list[float], elapsed: float,
               nbytes: int, baseline: str | None = None) -> Result:
        result = Result(key, label, latencies, elapsed, nbytes, self.results.get(baseline))
        self.results[key] = result
        progress(f"{label}: {result.mbps:.1f} MB/s, {result.ops:.1f} ops/s, "
                 f"p50 {result.percentile_ms(0.5):.1f} ms")
        return result

    def run(self, peer: str | None = None) -> None:
        only = self.args.only
        if "book" in only:
            self.run_book()
        if only != ["book"]:
            groups = GroupBench(self, peer)
            for group in GROUPS[1:]:
                if group in only:
                    getattr(groups, f"{group}_workloads")()

    def run_book(self) -> None:
        args = self.args
        run_seed = random.getrandbits(40) << 16
        progress(f"hashing {args.large_count} x {args.large_mib} MiB bodies")
        objects = [LargeObject.make(run_seed + i, args.large_mib * MIB)
                   for i in range(args.large_count)]
        self.large_workloads(objects)
        self.small_workloads()
        reference = self.store_reference()
        self.latency_workloads(reference)
        if not args.quick:
            self.scale_workloads(reference)

    def large_workloads(self, objects: list[LargeObject]) -> None:
        n, size = len(objects), objects[0].size

        def upload(client: Client, _w: int, i: int) -> None:
            client.put("/discard", objects[i].chunks(), size)

        def download(client: Client, _w: int, i: int) -> None:
            client.get(f"/{objects[i].seed}/{size}", expect=objects[i].hash)

        def put(client: Client, _w: int, i: int) -> None:
            client.put(f"/objects/{objects[i].name}", objects[i].chunks(), size, objects[i].hash)

        def get(client: Client, _w: int, i: int) -> None:
            client.get(f"/objects/{objects[i].name}", expect=objects[i].hash)

        def get_first(client: Client, _w: int, _i: int) -> None:
            get(client, 0, 0)

        self.measure("baseline_upload", "baseline upload", self.baseline, upload, size, count=n)
        self.measure("baseline_download", "baseline download", self.baseline, download, size,
                     count=n)
        self.measure("large_put", "large PUT", self.api, put, size, "baseline_upload", count=n)
        self.measure("large_get", "large GET", self.api, get, size, "baseline_download",
                     count=n)
        with degraded(self.cluster, objects[0].hash) as stopped:
            progress(f"stopped {', '.join(node.address for node in stopped)}")
            self.measure("degraded_get", "degraded GET", self.api, get_first, size,
                         "baseline_download", count=n)
        self.api_peak_rss_mib = api_peak_rss_mib(self.cluster)

    def small_put_op(self, path: Callable[[int, int], str]) -> Op:
        def op(client: Client, worker: int, i: int) -> None:
            data = os.urandom(SMALL_SIZE)
            client.put(path(worker, i), [data], SMALL_SIZE, sha256_b64([data]))
        return op

    def small_workloads(self) -> None:
        how = {"clients": self.args.clients, "seconds": self.args.small_seconds}
        names = self.small_names

        def get(client: Client, worker: int, i: int) -> None:
            client.get(f"/objects/{names[worker][i % len(names[worker])]}")

        def put_path(worker: int, i: int) -> str:
            names[worker].append(f"bench/small/{worker}/{i}")
            return f"/objects/{names[worker][-1]}"

        self.measure("baseline_small_put", "baseline small PUT", self.baseline,
                     self.small_put_op(lambda _w, _i: "/discard"), SMALL_SIZE, **how)
        self.measure("baseline_small_get", "baseline small GET", self.baseline,
                     lambda client, _w, _i: client.get(f"/0/{SMALL_SIZE}"), SMALL_SIZE, **how)
        self.measure("small_put", "small PUT", self.api, self.small_put_op(put_path),
                     SMALL_SIZE, "baseline_small_put", **how)
        self.measure("small_get", "small GET", self.api, get, SMALL_SIZE, "baseline_small_get",
                     **how)

    def store_reference(self, address: str | None = None) -> str:
        """PUT the small object to locate and to point preloaded names at; its hash."""
        hash_ = sha256_b64([self.reference_data])
        with contextlib.closing(Client(address or self.api)) as api:
            api.put("/objects/bench/reference", [self.reference_data], SMALL_SIZE, hash_)
        return hash_

    def latency_workloads(self, reference: str) -> None:
        quoted = quote_hash(reference)
        count = self.args.samples
        self.measure("locate", "locate", self.api,
                     lambda client, _w, _i: client.get_json(f"/locate/{quoted}"), 0, count=count)
        self.measure("new_put", "new small PUT", self.api,
                     self.small_put_op(lambda _w, i: f"/objects/bench/new/{i}"), SMALL_SIZE,
                     count=count)

    def scale_workloads(self, reference: str) -> None:
        how = {"clients": self.args.clients, "seconds": self.args.small_seconds}
        preloaded = 0
        for key, names in SCALE_LEVELS:
            progress(f"preloading metadata to {names:,} names")
            preload(self.cluster.metadata_db, preloaded, names, reference, SMALL_SIZE)
            preloaded = names
            pick = [random.Random(w) for w in range(self.args.clients)]

            def path(worker: int, _i: int, names=names) -> str:
                return f"/objects/{scale_name(pick[worker].randrange(names))}"

            def get(client: Client, worker: int, i: int) -> None:
                client.get(path(worker, i))

            self.measure(f"{key}_put", f"{key} PUT", self.api, self.small_put_op(path),
                         SMALL_SIZE, "baseline_small_put", **how)
            self.measure(f"{key}_get", f"{key} GET", self.api, get, SMALL_SIZE,
                         "baseline_small_get", **how)


# -- S3, multipart, PostgreSQL and conditional-write groups -------------------------------------

#: The groups ``--only`` selects; "book" is the workloads above, the others follow.
GROUPS = ("book", "s3", "list", "multipart", "pg", "cond", "observe")
S3_BUCKET = "bench-s3"
LIST_BUCKET = "bench-list"
META_LIST_BUCKET = "bench-meta-list"
#: Keys (and prefixes) one listing page returns, as S3's default max-keys.
PAGE = 1000
PEER_HOST = "127.0.3.2"
#: Turns each side takes in the pg and observe groups' PUT and GET workloads (even: each
#: side goes first as often as second).
PG_ROUNDS = 4


def s3_client(address: str, access_key: str = Config.s3_access_key,
              secret_key: str = Config.s3_secret_key):
    """A boto3 client with one connection, path-style, no retries (a failure fails the run).
    boto3 is a test dependency, imported only by the groups that speak S3."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3", endpoint_url=f"http://{address}", aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                          signature_version="s3v4", max_pool_connections=1, connect_timeout=10,
                          read_timeout=120))


def payload(size: int) -> bytes:
    """``size`` bytes no other payload of the run shares (so nothing is deduplicated)."""
    if size <= 64 * 1024:
        return os.urandom(size)
    return b"".join(bytes(c) for c in body_chunks(random.getrandbits(63), size))


def body_range(seed: int, size: int, start: int, length: int) -> bytes:
    """Bytes ``start`` to ``start + length`` of ``body_chunks(seed, size)`` (a part's)."""
    out = bytearray()
    for index, chunk in enumerate(body_chunks(seed, size)):
        low, high = index * CHUNK, index * CHUNK + len(chunk)
        if high > start and low < start + length:
            out += chunk[max(0, start - low):min(len(chunk), start + length - low)]
    return bytes(out)


class BodyFile(io.RawIOBase):
    """``body_chunks(seed, size)`` as a seekable file: boto3 hashes a body, rewinds, sends it."""

    def __init__(self, seed: int, size: int):
        self.seed, self.size, self.pos = seed, size, 0
        self._buffer = bytearray(_BLOCK)
        self._index = -1

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, min(self.size, base + offset))
        return self.pos

    def readinto(self, target) -> int:
        if self.pos >= self.size:
            return 0
        index, start = divmod(self.pos, CHUNK)
        if index != self._index:            # one chunk made per 1 MiB, however small the reads
            struct.pack_into(">QQ", self._buffer, 0, self.seed, index)
            self._index = index
        n = min(len(target), min(CHUNK, self.size - index * CHUNK) - start)
        target[:n] = self._buffer[start:start + n]
        self.pos += n
        return n


def s3_get(s3, bucket: str, key: str, expect: str | None = None) -> int:
    """GET an object through boto3, its body hashed in 1 MiB pieces (checked if ``expect``)."""
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    sha, size = hashlib.sha256(), 0
    for piece in body.iter_chunks(CHUNK):
        sha.update(piece)
        size += len(piece)
    if expect is not None and b64_digest(sha) != expect:
        raise RuntimeError(f"GET s3://{bucket}/{key}: body does not hash to {expect}")
    return size


@dataclasses.dataclass
class S3Target:
    """An S3 endpoint the same workloads run against: Tessera's, or a peer's."""

    name: str
    address: str
    access_key: str = Config.s3_access_key
    secret_key: str = Config.s3_secret_key
    clients: list = dataclasses.field(default_factory=list)

    def client(self, worker: int):
        while len(self.clients) <= worker:
            self.clients.append(s3_client(self.address, self.access_key, self.secret_key))
        return self.clients[worker]


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server (``pip install 'moto[server]'``, in-memory) on PEER_HOST; its address."""
    port = _free_tcp_port(PEER_HOST)
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H",
                                PEER_HOST, "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection((PEER_HOST, port), timeout=1).close()
                break
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"moto_server did not start: {log.read()[-2000:]!r}")
            time.sleep(0.2)
        yield f"{PEER_HOST}:{port}"
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        if process.poll() is None:
            process.kill()
            process.wait(5)
        log.close()


def _free_tcp_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def fill_bucket(config: Config, bucket: str, keys: list[str], hash_: str, size: int,
                md5: str, threads: int = 8) -> None:
    """Versions of ``keys`` in ``bucket`` written straight to the metadata, all pointing at one
    stored object (listing costs nothing per byte); from several threads, so that SQLite
    commits them in groups."""
    errors: list[BaseException] = []
    with open_store(config) as store:
        def fill(share: list[str]) -> None:
            try:
                for key in share:
                    store.put_version(Draft(bucket, key, size, hash_, md5, md5=md5,
                                            shared=True))
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=fill, args=(keys[i::threads],), daemon=True)
                   for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    if errors:
        raise errors[0]


def pg_url() -> str:
    """A schema of its own in the test database, dropped at the end of the run."""
    return (f"postgresql://127.0.0.1:5432/test?schema=bench_{os.getpid()}_"
            f"{time.time_ns() % 10**9}")


def drop_pg_schema(url: str) -> None:
    from lib.metadata.postgres import PostgresStore

    store = PostgresStore(url)
    try:
        store.drop_schema()
    finally:
        store.close()


class GroupBench:
    """The groups besides "book", on the Bench's cluster (and a PostgreSQL one for "pg")."""

    def __init__(self, bench: "Bench", peer: str | None):
        self.bench = bench
        self.args = bench.args
        self.tessera = S3Target("S3", bench.cluster.api[0].env["S3_LISTEN_ADDRESS"])
        self.peer = None
        if peer:
            self.peer = S3Target(self.args.peer, peer)
        elif self.args.s3_endpoint:
            self.peer = S3Target("peer", self.args.s3_endpoint, self.args.s3_access_key,
                                 self.args.s3_secret_key)
        self.reference = bench.store_reference()
        self.reference_md5 = hashlib.md5(bench.reference_data).hexdigest()

    @property
    def targets(self) -> list[S3Target]:
        return [self.tessera] + ([self.peer] if self.peer else [])

    def timed(self) -> dict:
        return {"clients": self.args.clients, "seconds": self.args.small_seconds}

    def ensure_bucket(self, target: S3Target, bucket: str) -> None:
        s3 = target.client(0)
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)

    # -- s3: PUT / GET next to the book API ---------------------------------------------------
    def s3_workloads(self) -> None:
        bench = self.bench
        for target in self.targets:
            self.ensure_bucket(target, S3_BUCKET)
        for size, tag, label in ((SMALL_SIZE, "4k", "4 KiB"), (MIB, "1m", "1 MiB")):
            names: list[list[str]] = [[] for _ in range(self.args.clients)]

            def book_put(client: Client, worker: int, i: int, size=size, tag=tag,
                         names=names) -> None:
                data = payload(size)
                names[worker].append(f"bench/{tag}/{worker}/{i}")
                client.put(f"/objects/{names[worker][-1]}", [data], size, sha256_b64([data]))

            def book_get(client: Client, worker: int, i: int, names=names) -> None:
                client.get(f"/objects/{names[worker][i % len(names[worker])]}")

            bench.measure(f"book_put_{tag}", f"book {label} PUT", bench.api, book_put, size,
                          **self.timed())
            bench.measure(f"book_get_{tag}", f"book {label} GET", bench.api, book_get, size,
                          **self.timed())
            for target in self.targets:
                self._s3_pair(target, size, tag, label)

    def _s3_pair(self, target: S3Target, size: int, tag: str, label: str) -> None:
        keys: list[list[str]] = [[] for _ in range(self.args.clients)]
        prefix = target.name.lower()
        for worker in range(self.args.clients):
            target.client(worker)

        def put(_c: Client, worker: int, i: int) -> None:
            keys[worker].append(f"{tag}/{worker}/{i}")
            target.client(worker).put_object(Bucket=S3_BUCKET, Key=keys[worker][-1],
                                             Body=payload(size))

        def get(_c: Client, worker: int, i: int) -> None:
            s3_get(target.client(worker), S3_BUCKET, keys[worker][i % len(keys[worker])])

        reference = "" if target is self.tessera else "s3_"
        self.bench.measure(f"{prefix}_put_{tag}", f"{target.name} {label} PUT", target.address,
                           put, size, f"{reference or 'book_'}put_{tag}", **self.timed())
        self.bench.measure(f"{prefix}_get_{tag}", f"{target.name} {label} GET", target.address,
                           get, size, f"{reference or 'book_'}get_{tag}", **self.timed())

    # -- list: one page of keys, one page of common prefixes ----------------------------------
    def list_workloads(self) -> None:
        self._list_pages(LIST_BUCKET, "", self.args.list_keys,
                         Config(metadata_db=self.bench.cluster.metadata_db), self.tessera)

    def _list_pages(self, bucket: str, tag: str, total: int, config: Config,
                    target: S3Target, compare: str | None = None) -> None:
        """Fill ``bucket`` to ``total`` keys (a page of keys under keys/, a page of prefixes
        under dirs/, the rest under fill/), then time both pages, one client (``compare``:
        the tag of the rows to compare with)."""
        self.ensure_bucket(target, bucket)
        page = min(PAGE, total // 2)
        progress(f"filling {bucket} with {total:,} keys")
        fill_bucket(config, bucket,
                    [f"keys/{i:06d}" for i in range(page)] +
                    [f"dirs/{i:06d}/x" for i in range(page)] +
                    [f"fill/{i:07d}" for i in range(total - 2 * page)],
                    self.reference, SMALL_SIZE, self.reference_md5)

        def page_op(element: bytes, **params: str) -> Op:
            """GET a presigned ListObjectsV2 URL on the bench's own connection: the time of
            the server and the wire, without boto3's parsing of the XML (which takes as long
            again for 1,000 keys); the page must hold ``page`` of ``element``."""
            url = urllib.parse.urlsplit(target.client(0).generate_presigned_url(
                "list_objects_v2", ExpiresIn=3600,
                Params={"Bucket": bucket, "MaxKeys": PAGE, **params}))

            def op(client: Client, _w: int, _i: int) -> None:
                found = client.get_body(f"{url.path}?{url.query}").count(element)
                if found != page:
                    raise RuntimeError(f"page of {params} has {found} {element!r}, not {page}")
            return op

        count, label = self.args.samples, tag.replace("_", " ")
        self.bench.measure(f"{tag}list_keys", f"{label}list {page:,} keys", target.address,
                           page_op(b"<Key>", Prefix="keys/"), 0,
                           compare and f"{compare}list_keys", count=count)
        self.bench.measure(f"{tag}list_prefixes", f"{label}list {page:,} prefixes",
                           target.address,
                           page_op(b"<CommonPrefixes>", Prefix="dirs/", Delimiter="/"), 0,
                           compare and f"{compare}list_prefixes", count=count)

    # -- multipart ----------------------------------------------------------------------------
    def multipart_workloads(self) -> None:
        bench, args = self.bench, self.args
        self.ensure_bucket(self.tessera, S3_BUCKET)
        size, part = args.multipart_mib * MIB, args.part_mib * MIB
        count = args.large_count
        seed = random.getrandbits(40) << 16
        progress(f"hashing 3 x {count} x {args.multipart_mib} MiB bodies")
        book, single, multi = ([LargeObject.make(seed + k * count + i, size)
                                for i in range(count)] for k in range(3))
        s3 = self.tessera.client(0)

        def book_put(client: Client, _w: int, i: int) -> None:
            client.put(f"/objects/{book[i].name}", book[i].chunks(), size, book[i].hash)

        def single_put(_c: Client, _w: int, i: int) -> None:
            s3.put_object(Bucket=S3_BUCKET, Key=f"single/{i}", Body=BodyFile(single[i].seed, size))

        def multi_put(_c: Client, _w: int, i: int) -> None:
            self._multipart(f"multi/{i}", multi[i].seed, size, part)

        def single_get(_c: Client, _w: int, i: int) -> None:
            s3_get(s3, S3_BUCKET, f"single/{i}", single[i].hash)

        def multi_get(_c: Client, _w: int, i: int) -> None:
            s3_get(s3, S3_BUCKET, f"multi/{i}", multi[i].hash)

        address = self.tessera.address
        bench.measure("mp_book_put", "book large PUT", bench.api, book_put, size, count=count)
        bench.measure("mp_single_put", "S3 single PUT", address, single_put, size,
                      "mp_book_put", count=count)
        bench.measure("mp_multipart_put", "S3 multipart PUT", address, multi_put, size,
                      "mp_book_put", count=count)
        bench.measure("mp_single_get", "S3 single-PUT GET", address, single_get, size,
                      count=count)
        bench.measure("mp_multipart_get", "S3 multipart GET", address, multi_get, size,
                      "mp_single_get", count=count)
        label = f"Complete {args.complete_parts:,} parts"
        progress(f"{label} ...")
        self.complete_seconds: list[float] = []
        run_clients(address, self._complete_op(args.complete_parts), count=count)
        bench.record("mp_complete", label, self.complete_seconds, sum(self.complete_seconds), 0)

    def _multipart(self, key: str, seed: int, size: int, part: int,
                   workers: int = 8) -> None:
        """A multipart upload of ``body_chunks(seed, size)`` in ``part``-byte parts, up to
        ``workers`` at once (each part's bytes in memory while it is sent)."""
        s3 = self.tessera.client(0)
        upload = s3.create_multipart_upload(Bucket=S3_BUCKET, Key=key)["UploadId"]
        numbers = list(range(1, math.ceil(size / part) + 1))
        etags: dict[int, str] = {}

        def send(worker: int, number: int) -> None:
            start = (number - 1) * part
            body = body_range(seed, size, start, min(part, size - start))
            etags[number] = self.tessera.client(worker + 1).upload_part(
                Bucket=S3_BUCKET, Key=key, UploadId=upload, PartNumber=number,
                Body=body)["ETag"]

        self._in_parallel(send, numbers, workers)
        s3.complete_multipart_upload(
            Bucket=S3_BUCKET, Key=key, UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in numbers]})

    def _in_parallel(self, work: Callable[[int, int], None], items: list[int],
                     workers: int) -> None:
        """``work(worker, item)`` for every item, from ``workers`` threads."""
        pending = list(reversed(items))
        errors: list[BaseException] = []
        lock = threading.Lock()

        def loop(worker: int) -> None:
            while not errors:
                with lock:
                    if not pending:
                        return
                    item = pending.pop()
                try:
                    work(worker, item)
                except BaseException as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=loop, args=(w,), daemon=True)
                   for w in range(min(workers, len(items)))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    def _complete_op(self, parts: int) -> Op:
        """An op timing only CompleteMultipartUpload of ``parts`` 1 KiB parts (uploaded
        first, untimed, by 8 threads; identical content, stored once)."""
        body = os.urandom(1024)

        def op(_c: Client, _w: int, i: int) -> None:
            s3 = self.tessera.client(0)
            key = f"complete/{i}"
            upload = s3.create_multipart_upload(Bucket=S3_BUCKET, Key=key)["UploadId"]
            etags: dict[int, str] = {}

            def send(worker: int, number: int) -> None:
                etags[number] = self.tessera.client(worker + 1).upload_part(
                    Bucket=S3_BUCKET, Key=key, UploadId=upload, PartNumber=number,
                    Body=body)["ETag"]

            self._in_parallel(send, list(range(1, parts + 1)), 8)
            started = time.perf_counter()
            s3.complete_multipart_upload(
                Bucket=S3_BUCKET, Key=key, UploadId=upload,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]}
                                           for n in range(1, parts + 1)]})
            self.complete_seconds.append(time.perf_counter() - started)

        return op

    # -- pg: PostgreSQL against SQLite ---------------------------------------------------------
    def pg_workloads(self) -> None:
        bench, args = self.bench, self.args
        url = pg_url()
        env = {"METADATA_URL": url}
        try:
            with running_cluster(free_port(DATA_SERVERS, 1), args.keep_root, env) as pg:
                stores = (("sqlite", bench.cluster, Config(metadata_db=bench.cluster.metadata_db)),
                          ("pg", pg, Config(metadata_url=url)))
                self._small_turns({tag: cluster for tag, cluster, _ in stores}, "meta")
                bench.store_reference(pg.api[0].address)     # what the listed keys point at
                for tag, cluster, config in stores:
                    target = S3Target(tag, cluster.api[0].env["S3_LISTEN_ADDRESS"])
                    self._list_pages(META_LIST_BUCKET, f"{tag}_", min(2 * PAGE, args.list_keys),
                                     config, target, "sqlite_" if tag == "pg" else None)
                bench.extra_log_errors += log_errors(pg)
        finally:
            try:
                drop_pg_schema(url)
            except Exception as exc:
                progress(f"could not drop the schema of {url}: {exc!r}")

    def _small_turns(self, clusters: dict[str, Cluster], folder: str,
                     cpu: bool = False) -> None:
        """Small PUTs, then GETs of what each side stored, on every cluster by turns
        (:meth:`_alternate`; ``cpu``: with each cluster's CPU per op)."""
        names = {tag: [[] for _ in range(self.args.clients)] for tag in clusters}

        def put(tag: str) -> Op:
            def path(worker: int, _i: int) -> str:
                mine = names[tag][worker]
                mine.append(f"bench/{folder}/{worker}/{len(mine)}")
                return f"/objects/{mine[-1]}"
            return self.bench.small_put_op(path)

        def get(tag: str) -> Op:
            def op(client: Client, worker: int, i: int) -> None:
                mine = names[tag][worker]
                client.get(f"/objects/{mine[i % len(mine)]}")
            return op

        for what, make in (("PUT", put), ("GET", get)):
            self._alternate(f"small_{what.lower()}", f"small {what}",
                            [(tag, c.api[0].address, make(tag)) for tag, c in clusters.items()],
                            clusters if cpu else None)

    def _alternate(self, key: str, label: str, sides: list[tuple[str, str, Op]],
                   clusters: dict[str, Cluster] | None = None) -> None:
        """One workload on each side (tag, address, op): first a second untimed on each
        (pools fill, statements get prepared), then PG_ROUNDS timed turns each, side after
        side, so that a noisy neighbour hits both alike, the order reversed every other
        round (A B B A ...: the first turn of a round was measured dearer than the next);
        the turns add up to one row each.  With ``clusters`` (tag -> its cluster) each row
        also gets its cluster's CPU per op."""
        clients, turn = self.args.clients, self.args.small_seconds / PG_ROUNDS
        for _tag, address, op in sides:
            run_clients(address, op, clients=clients, seconds=min(1.0, turn))
        progress(f"{label}: {PG_ROUNDS} turns of {turn:.1f} s on each of "
                 f"{', '.join(tag for tag, _, _ in sides)} ...")
        taken: dict[str, tuple[list[float], float]] = {tag: ([], 0.0) for tag, _, _ in sides}
        cpu, user = dict.fromkeys(taken, 0.0), dict.fromkeys(taken, 0.0)
        for round_ in range(PG_ROUNDS):
            for tag, address, op in (sides if round_ % 2 == 0 else sides[::-1]):
                if clusters:
                    before = (cluster_cpu_seconds(clusters[tag]),
                              cluster_cpu_seconds(clusters[tag], user_only=True))
                latencies, elapsed = run_clients(address, op, clients=clients, seconds=turn)
                if clusters:
                    cpu[tag] += cluster_cpu_seconds(clusters[tag]) - before[0]
                    user[tag] += cluster_cpu_seconds(clusters[tag], user_only=True) - before[1]
                taken[tag] = (taken[tag][0] + latencies, taken[tag][1] + elapsed)
        first = sides[0][0]
        for tag, _, _ in sides:
            latencies, elapsed = taken[tag]
            result = self.bench.record(f"{tag}_{key}", f"{tag} {label}", latencies, elapsed,
                                       SMALL_SIZE * len(latencies),
                                       f"{first}_{key}" if tag != first else None)
            if clusters:
                result.cpu_ms = cpu[tag] * 1000 / len(latencies)
                result.user_cpu_ms = user[tag] * 1000 / len(latencies)

    # -- cond: conditional PUTs against plain ones ---------------------------------------------
    def cond_workloads(self) -> None:
        bench, clients = self.bench, self.args.clients
        self.ensure_bucket(self.tessera, S3_BUCKET)
        s3 = self.tessera
        run = random.getrandbits(32)
        etags = [""] * clients
        hashes = [""] * clients
        for worker in range(clients):
            data = os.urandom(SMALL_SIZE)
            etags[worker] = s3.client(worker).put_object(
                Bucket=S3_BUCKET, Key=f"cond/{run}/{worker}", Body=data)["ETag"]
            hashes[worker] = sha256_b64([data])
            with contextlib.closing(Client(bench.api)) as api:
                api.put(f"/objects/bench/cond/{run}/{worker}", [data], SMALL_SIZE,
                        hashes[worker])

        def s3_put(kind: str) -> Op:
            def op(_c: Client, worker: int, i: int) -> None:
                client, body = s3.client(worker), os.urandom(SMALL_SIZE)
                if kind == "match":
                    etags[worker] = client.put_object(
                        Bucket=S3_BUCKET, Key=f"cond/{run}/{worker}", Body=body,
                        IfMatch=etags[worker])["ETag"]
                else:
                    client.put_object(Bucket=S3_BUCKET, Key=f"cond/{run}/{kind}/{worker}/{i}",
                                      Body=body, **({"IfNoneMatch": "*"} if kind == "absent"
                                                    else {}))
            return op

        def book_put(kind: str) -> Op:
            def op(client: Client, worker: int, i: int) -> None:
                data = os.urandom(SMALL_SIZE)
                digest = sha256_b64([data])
                if kind == "match":
                    client.put(f"/objects/bench/cond/{run}/{worker}", [data], SMALL_SIZE,
                               digest, {"If-Match": f'"{hashes[worker]}"'})
                    hashes[worker] = digest
                else:
                    client.put(f"/objects/bench/cond/{run}/{kind}/{worker}/{i}", [data],
                               SMALL_SIZE, digest,
                               {"If-None-Match": "*"} if kind == "absent" else None)
            return op

        for worker in range(clients):
            s3.client(worker)
        how = self.timed()
        bench.measure("cond_book_put", "book plain PUT", bench.api, book_put("plain"),
                      SMALL_SIZE, **how)
        bench.measure("cond_book_none_match", "book If-None-Match", bench.api,
                      book_put("absent"), SMALL_SIZE, "cond_book_put", **how)
        bench.measure("cond_book_match", "book If-Match", bench.api, book_put("match"),
                      SMALL_SIZE, "cond_book_put", **how)
        bench.measure("cond_s3_put", "S3 plain PUT", s3.address, s3_put("plain"),
                      SMALL_SIZE, **how)
        bench.measure("cond_s3_none_match", "S3 If-None-Match", s3.address,
                      s3_put("absent"), SMALL_SIZE, "cond_s3_put", **how)
        bench.measure("cond_s3_match", "S3 If-Match", s3.address,
                      s3_put("match"), SMALL_SIZE, "cond_s3_put", **how)


    def observe_workloads(self) -> None:
        """Two more clusters, one observed as an operator would run it (metrics,
        LOG_FORMAT=json, access lines at INFO), one not (METRICS=off, LOG_LEVEL=warning),
        taking turns at small PUTs and GETs; then the in-process figures, which the clusters'
        noise cannot hide."""
        bench, args = self.bench, self.args
        envs = {"observed": {"LOG_FORMAT": "json", "LOG_LEVEL": "info"},
                "unobserved": {"METRICS": "off", "LOG_LEVEL": "warning"}}
        with contextlib.ExitStack() as stack:
            clusters = {tag: stack.enter_context(running_cluster(
                            free_port(DATA_SERVERS, 1), args.keep_root, env))
                        for tag, env in envs.items()}
            self._small_turns(clusters, "observe", cpu=True)
            for cluster in clusters.values():
                bench.extra_log_errors += log_errors(cluster)
        progress("observe: CPU per observed request, in process ...")
        done = subprocess.run([sys.executable, str(Path(__file__).with_name("observe_cost.py"))],
                              capture_output=True, text=True, check=True, timeout=300)
        cost = json.loads(done.stdout)
        results = bench.results
        put = results["unobserved_small_put"].cpu_ms
        get = results["unobserved_small_get"].cpu_ms
        bench.observed = {
            "observe_api_us": cost["api_us"], "observe_data_us": cost["data_us"],
            "observe_small_put_share": (cost["api_us"] + ALL_SHARDS * cost["data_us"])
                                       / (put * 1000),
            "observe_small_get_share": (cost["api_us"] + DATA_SHARDS * cost["data_us"])
                                       / (get * 1000),
            "observe_small_put_cpu_ratio": results["observed_small_put"].cpu_ms / put,
            "observe_small_get_cpu_ratio": results["observed_small_get"].cpu_ms / get,
            "observe_small_put_user_cpu_ratio": results["observed_small_put"].user_cpu_ms
                                                / results["unobserved_small_put"].user_cpu_ms,
            "observe_small_get_user_cpu_ratio": results["observed_small_get"].user_cpu_ms
                                                / results["unobserved_small_get"].user_cpu_ms}


# -- report ------------------------------------------------------------------------------------

def machine() -> dict[str, object]:
    return {"cpu_count": os.cpu_count(), "python_version": platform.python_version(),
            "platform": platform.platform()}


def report_json(bench: Bench, info: dict[str, object]) -> str:
    out: dict[str, object] = {}
    for result in bench.results.values():
        out.update(result.to_json())
    out["api_peak_rss_mb"] = bench.api_peak_rss_mib
    out.update(bench.observed)
    out.update(info)
    return json.dumps(out, indent=2, sort_keys=True)


def report_table(bench: Bench, info: dict[str, object]) -> str:
    args = bench.args
    lines = [
        f"Tessera benchmark{' (--quick)' if args.quick else ''}: {info['cpu_count']} CPUs, "
        f"Python {info['python_version']}, {info['platform']}, load average "
        f"{info['loadavg_start']:.2f} -> {info['loadavg_end']:.2f}, "
        f"{info['total_seconds']:.0f} s",
        f"large: {args.large_count} x {args.large_mib} MiB, one client; small: {SMALL_SIZE} B, "
        f"{args.clients} clients, {args.small_seconds:g} s each; MB = MiB",
        "",
        f"{'workload':<26}{'MB/s':>9}{'ops/s':>10}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'api RSS MB':>12}",
    ]
    for r in bench.results.values():
        mbps = f"{r.mbps:.1f}" if r.nbytes else "-"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        rss = f"{r.rss_mib:.0f}" if r.rss_mib is not None else "-"
        lines.append(f"{r.label:<26}{mbps:>9}{r.ops:>10.1f}{ratio:>8}"
                     f"{r.percentile_ms(0.5):>9.1f}{r.percentile_ms(0.99):>9.1f}{rss:>12}")
    if bench.observed:
        o = bench.observed
        lines += ["", f"observed / unobserved cluster, CPU per small PUT "
                      f"{o['observe_small_put_cpu_ratio']:.3f} (user "
                      f"{o['observe_small_put_user_cpu_ratio']:.3f}), per small GET "
                      f"{o['observe_small_get_cpu_ratio']:.3f} (user "
                      f"{o['observe_small_get_user_cpu_ratio']:.3f})",
                  f"in process (CPU us a request): api {o['observe_api_us']:.1f} with its JSON "
                  f"line, data server {o['observe_data_us']:.1f}: "
                  f"{o['observe_small_put_share']:.1%} of an unobserved small PUT's CPU, "
                  f"{o['observe_small_get_share']:.1%} of a small GET's"]
    rss = (f"api server peak RSS after the large workloads: {bench.api_peak_rss_mib:.0f} MB; "
           if "book" in args.only else "")
    lines += ["", f"{rss}ERROR lines/tracebacks in cluster logs: {info['cluster_log_errors']}"]
    return "\n".join(lines)


# -- main --------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python scripts/bench.py",
        description="Benchmark Tessera on this machine: start a private local cluster "
                    "(6 data servers, 1 api server, SQLite, RabbitMQ) on loopback, run the "
                    "workloads below next to a raw-HTTP baseline, stop everything, print a "
                    "table.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="short run, under a minute with cluster start: "
                             f"{QUICK['large_count']} x {QUICK['large_mib']} MiB large objects, "
                             f"{QUICK['small_seconds']:g} s per small workload, "
                             f"{QUICK['samples']} latency samples, no metadata-scale workload")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (keys below) instead of the table")
    parser.add_argument("--large-mib", type=int, metavar="MIB",
                        help=f"size of each large object (default {FULL['large_mib']})")
    parser.add_argument("--large-count", type=int, metavar="N",
                        help=f"large objects PUT and GETs of each kind "
                             f"(default {FULL['large_count']})")
    parser.add_argument("--small-seconds", type=float, metavar="S",
                        help=f"duration of each small-object and scale workload "
                             f"(default {FULL['small_seconds']:g})")
    parser.add_argument("--samples", type=int, metavar="N",
                        help=f"requests timed for locate and new_put (default {FULL['samples']})")
    parser.add_argument("--clients", type=int, default=8, metavar="N",
                        help="concurrent clients for small-object workloads (default 8)")
    parser.add_argument("--port", type=int,
                        help="cluster port, on 127.0.1.1-6 and 127.0.2.1 "
                             "(default: a random free one)")
    parser.add_argument("--only", default="book", metavar="GROUPS",
                        help=f"comma-separated groups to run, of {','.join(GROUPS)} "
                             "(default book; see the groups below)")
    parser.add_argument("--peer", choices=("moto",),
                        help="run the s3 group's workloads against this S3 server too, "
                             f"started on {PEER_HOST} (moto: pip install 'moto[server]')")
    parser.add_argument("--s3-endpoint", metavar="HOST:PORT",
                        help="run the s3 group's workloads against this S3 server too (rows "
                             "peer_put/get_*), path-style over plain http; on loopback only "
                             "(127.0.0.0/8), so both servers share the machine's cores")
    parser.add_argument("--s3-access-key", metavar="KEY",
                        default=os.environ.get("AWS_ACCESS_KEY_ID", ""),
                        help="--s3-endpoint's access key (default: $AWS_ACCESS_KEY_ID)")
    parser.add_argument("--s3-secret-key", metavar="SECRET",
                        default=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
                        help="its secret key (default: $AWS_SECRET_ACCESS_KEY)")
    parser.add_argument("--multipart-mib", type=int, metavar="MIB",
                        help=f"multipart group's object size (default {FULL['multipart_mib']})")
    parser.add_argument("--part-mib", type=int, metavar="MIB",
                        help=f"its part size (default {FULL['part_mib']}), 8 parts at once")
    parser.add_argument("--complete-parts", type=int, metavar="N",
                        help=f"parts of the timed CompleteMultipartUpload "
                             f"(default {FULL['complete_parts']})")
    parser.add_argument("--list-keys", type=int, metavar="N",
                        help=f"keys in the list group's bucket (default {FULL['list_keys']:,}; "
                             f"the pg group fills {2 * PAGE:,} at most)")
    parser.add_argument("--keep-root", action="store_true",
                        help="keep the temp directory (logs, shards, metadata.db) and print "
                             "its path")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.only = [group.strip() for group in args.only.split(",") if group.strip()]
    unknown = set(args.only) - set(GROUPS)
    if unknown or not args.only:
        parser.error(f"--only: unknown group(s) {', '.join(sorted(unknown))}; "
                     f"choose from {','.join(GROUPS)}")
    if (args.peer or args.s3_endpoint) and "s3" not in args.only:
        parser.error("--peer and --s3-endpoint apply to the s3 group: add s3 to --only")
    if args.peer and args.s3_endpoint:
        parser.error("--peer and --s3-endpoint each name the one peer: choose one")
    if args.s3_endpoint:
        args.s3_endpoint = args.s3_endpoint.removeprefix("http://").rstrip("/")
        host, _, port = args.s3_endpoint.rpartition(":")
        if not port.isdigit() or not _is_loopback(host):
            parser.error(f"--s3-endpoint {args.s3_endpoint}: give HOST:PORT with HOST in "
                         "127.0.0.0/8 (a remote server would measure the network)")
        if not (args.s3_access_key and args.s3_secret_key):
            parser.error("--s3-endpoint needs --s3-access-key and --s3-secret-key (or "
                         "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
    return args


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        return False


def _raise_on_sigterm(_signum, _frame) -> None:
    raise SystemExit(143)                # unwind, so the cluster is stopped and removed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    started = time.monotonic()
    info: dict[str, object] = {**machine(), "loadavg_start": os.getloadavg()[0]}
    try:
        port = args.port or free_port(DATA_SERVERS, 1)
        with baseline_server() as baseline, running_cluster(port, args.keep_root) as cluster, \
                (moto_server() if args.peer == "moto" else contextlib.nullcontext()) as peer:
            bench = Bench(args, baseline, cluster)
            bench.run(peer)
            info["cluster_log_errors"] = log_errors(cluster) + bench.extra_log_errors
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    except Exception:
        progress(f"FAILED:\n{traceback.format_exc()}")
        return 1
    info.update(loadavg_end=os.getloadavg()[0], total_seconds=time.monotonic() - started,
                large_object_mib=args.large_mib, large_count=args.large_count,
                small_object_bytes=SMALL_SIZE, clients=args.clients,
                small_seconds=args.small_seconds, latency_samples=args.samples,
                quick=args.quick, groups=",".join(args.only),
                peer=args.peer or args.s3_endpoint or "")
    print(report_json(bench, info) if args.json else report_table(bench, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
