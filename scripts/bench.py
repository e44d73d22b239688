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
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import hashlib
import http.client
import http.server
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

if __package__ in (None, ""):           # run as a file: python scripts/bench.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.config import Config  # noqa: E402
from lib.hashing import quote_hash  # noqa: E402
from lib.metadata import ENABLED, Draft, open_store  # noqa: E402
from lib.rs.params import DATA_SHARDS  # noqa: E402
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

FULL = {"large_mib": 256, "large_count": 3, "small_seconds": 15.0, "samples": 200}
QUICK = {"large_mib": 64, "large_count": 2, "small_seconds": 4.0, "samples": 50}

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

ratios compare with the baseline doing the same transfer: large_put with baseline_upload,
large_get and degraded_get with baseline_download, small and scale workloads with
baseline_small_put / baseline_small_get.

api RSS: VmHWM (lifetime peak) of the api server's gunicorn master and workers after each
workload; api_peak_rss_mb is the value after the large and degraded workloads.

--json keys: <workload>_mbps, <workload>_ops, <workload>_p50_ms, <workload>_p99_ms,
<workload>_ratio, <workload>_rss_mb and <workload>_cpu_ms (CPU of the cluster's processes
per operation) per workload (mbps only where bytes move, ratio only where a baseline
applies, rss and cpu only for cluster workloads), api_peak_rss_mb, cluster_log_errors (ERROR lines and tracebacks in
the cluster's logs), and the run's settings and machine: cpu_count, python_version, platform,
loadavg_start, loadavg_end, large_object_mib, large_count, small_object_bytes, clients,
small_seconds, latency_samples, quick, total_seconds.

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
    return base64.b64encode(sha.digest()).decode()


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
            digest: str | None = None) -> None:
        conn = self._conn
        conn.putrequest("PUT", path, skip_accept_encoding=True)
        conn.putheader("Content-Length", str(size))
        if digest is not None:
            conn.putheader("Digest", f"SHA-256={digest}")
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
        digest = base64.b64encode(sha.digest()).decode()
        if expect is not None and digest != expect:
            raise RuntimeError(f"GET {path}: body hashes to {digest}, expected {expect}")
        return size

    def get_json(self, path: str) -> dict:
        self._conn.request("GET", path)
        return json.loads(self._read(self._conn.getresponse(), f"GET {path}"))

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
def running_cluster(port: int, keep_root: bool) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    cluster = Cluster(root, port=port, data_servers=DATA_SERVERS, api_servers=1,
                      exchange_suffix=f".bench-{os.getpid()}-{time.time_ns()}")
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


def cluster_cpu_seconds(cluster: Cluster) -> float:
    """User and system CPU seconds of every running data and api server process (gunicorn
    masters and workers)."""
    pids = [pid for node in cluster.data + cluster.api if node.running
            for pid in [node.process.pid, *_children(node.process.pid)]]
    ticks = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
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

    @property
    def ops(self) -> float:
        return len(self.latencies) / self.elapsed

    @property
    def mbps(self) -> float:
        return self.nbytes / MIB / self.elapsed

    @property
    def ratio(self) -> float | None:
        return self.mbps / self.baseline.mbps if self.baseline else None

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

    def measure(self, key: str, label: str, address: str, op: Op, op_bytes: int,
                baseline: str | None = None, **how) -> Result:
        progress(f"{label} ...")
        cpu = cluster_cpu_seconds(self.cluster)
        latencies, elapsed = run_clients(address, op, **how)
        result = Result(key, label, latencies, elapsed, op_bytes * len(latencies),
                        self.results.get(baseline))
        if address == self.api:
            result.rss_mib = api_peak_rss_mib(self.cluster)
            result.cpu_ms = (cluster_cpu_seconds(self.cluster) - cpu) * 1000 / len(latencies)
        self.results[key] = result
        progress(f"{label}: {result.mbps:.1f} MB/s, {result.ops:.1f} ops/s, "
                 f"p50 {result.percentile_ms(0.5):.1f} ms")
        return result

    def run(self) -> None:
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

    def store_reference(self) -> str:
        """PUT one small object to locate and to point preloaded names at; its hash."""
        data = os.urandom(SMALL_SIZE)
        hash_ = sha256_b64([data])
        with contextlib.closing(Client(self.api)) as api:
            api.put("/objects/bench/reference", [data], SMALL_SIZE, hash_)
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


# -- report ------------------------------------------------------------------------------------

def machine() -> dict[str, object]:
    return {"cpu_count": os.cpu_count(), "python_version": platform.python_version(),
            "platform": platform.platform()}


def report_json(bench: Bench, info: dict[str, object]) -> str:
    out: dict[str, object] = {}
    for result in bench.results.values():
        out.update(result.to_json())
    out["api_peak_rss_mb"] = bench.api_peak_rss_mib
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
        f"{'workload':<20}{'MB/s':>9}{'ops/s':>10}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'api RSS MB':>12}",
    ]
    for r in bench.results.values():
        mbps = f"{r.mbps:.1f}" if r.nbytes else "-"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        rss = f"{r.rss_mib:.0f}" if r.rss_mib is not None else "-"
        lines.append(f"{r.label:<20}{mbps:>9}{r.ops:>10.1f}{ratio:>8}"
                     f"{r.percentile_ms(0.5):>9.1f}{r.percentile_ms(0.99):>9.1f}{rss:>12}")
    lines += ["", f"api server peak RSS after the large workloads: "
                  f"{bench.api_peak_rss_mib:.0f} MB; "
                  f"ERROR lines/tracebacks in cluster logs: {info['cluster_log_errors']}"]
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
    parser.add_argument("--keep-root", action="store_true",
                        help="keep the temp directory (logs, shards, metadata.db) and print "
                             "its path")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _raise_on_sigterm(_signum, _frame) -> None:
    raise SystemExit(143)                # unwind, so the cluster is stopped and removed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    started = time.monotonic()
    info: dict[str, object] = {**machine(), "loadavg_start": os.getloadavg()[0]}
    try:
        with baseline_server() as baseline, \
                running_cluster(args.port or free_port(DATA_SERVERS, 1), args.keep_root) as cluster:
            bench = Bench(args, baseline, cluster)
            bench.run()
            info["cluster_log_errors"] = log_errors(cluster)
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
                quick=args.quick)
    print(report_json(bench, info) if args.json else report_table(bench, info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
