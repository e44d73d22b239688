"""Soak a local cluster under mixed load for a bounded time; watch api worker RSS; verify writes.

Why (issue 11): an api worker's RSS grew from one benchmark series to the next, and one run
cannot tell a leak from a plateau.  This script starts its own cluster (6 data servers, 2 api
servers, a task worker, SQLite, the local RabbitMQ; loopback only, per-run exchange names),
runs client threads that mix small, medium and large PUTs, resumable uploads, whole and range
GETs (every byte checked) and DELETEs for ``--minutes``, and samples every api worker's
VmRSS from ``/proc/<pid>/status`` every ``--sample-seconds``.  At the end it reads back every
acknowledged write (each version by number, deleted or not) and checks each deleted name
answers 404.

Exit status 0 only when no write was lost or read wrong and every worker's RSS levelled off
below ``--rss-limit-mib``: no sample above the limit, and the second half of the run set no
peak more than ``--margin-mib`` above the first half's (a leak keeps setting new peaks).
Bodies are generated in 1 MiB chunks and never held whole.  Progress goes to stderr, the
samples and the verdict to stdout.
"""
from __future__ import annotations

import argparse
import dataclasses
import http.client
import random
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):           # run as a file: python scripts/soak.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench import body_chunks, sha256_b64  # noqa: E402
from scripts.cluster import Cluster, _children, free_port  # noqa: E402

MIB = 1 << 20
#: (operation, weight) of the mix each client thread draws from.
MIX = (("small_put", 30), ("medium_put", 8), ("large_put", 1), ("resumable_put", 3),
       ("get", 35), ("range_get", 12), ("delete", 4))
LARGE_SIZE = 48 * MIB
NAMES_PER_CLIENT = 40


@dataclasses.dataclass(frozen=True)
class Write:
    """An acknowledged write: what GET ``name?version=number`` must return."""

    name: str
    number: int
    seed: int
    size: int
    hash: str

    def chunks(self) -> Iterator[memoryview]:
        return body_chunks(self.seed, self.size)


class Ledger:
    """Every acknowledged write and deleted name, shared by the client threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.writes: dict[str, list[Write]] = {}
        self.deleted: set[str] = set()
        self.counts: dict[str, int] = {}
        #: Requests that failed during the load (the cluster is healthy: each is news).
        self.failures: list[str] = []
        #: GETs that answered wrong bytes: data lost or corrupted.
        self.wrong: list[str] = []

    def count(self, op: str) -> None:
        with self._lock:
            self.counts[op] = self.counts.get(op, 0) + 1

    def wrote(self, write: Write) -> None:
        with self._lock:
            self.writes.setdefault(write.name, []).append(write)
            self.deleted.discard(write.name)

    def was_deleted(self, name: str) -> None:
        """``name`` now answers 404; its versions stay readable by number (the delete is a
        marker), so they are still verified."""
        with self._lock:
            self.deleted.add(name)

    def fail(self, message: str, wrong: bool = False) -> None:
        with self._lock:
            (self.wrong if wrong else self.failures).append(message)
        progress(f"FAILED: {message}")

    def latest(self, name: str) -> Write | None:
        with self._lock:
            versions = self.writes.get(name)
            return versions[-1] if versions else None


class WrongBytes(RuntimeError):
    """A GET answered bytes other than the acknowledged write's."""


def progress(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Http:
    """One keep-alive connection to an api server, reopened after any error."""

    def __init__(self, address: str):
        self.address = address
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, chunks=None, headers: dict | None = None
                ) -> tuple[int, dict[str, str], Iterator[bytes]]:
        if self._conn is None:
            host, port = self.address.rsplit(":", 1)
            self._conn = http.client.HTTPConnection(host, int(port), timeout=120)
        try:
            self._conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                self._conn.putheader(name, value)
            self._conn.endheaders()
            for chunk in chunks or ():
                self._conn.send(chunk)
            response = self._conn.getresponse()
        except Exception:
            self.close()
            raise
        return response.status, {k.lower(): v for k, v in response.getheaders()}, \
            self._body(response)

    def _body(self, response: http.client.HTTPResponse) -> Iterator[bytes]:
        try:
            while chunk := response.read(MIB):
                yield chunk
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _quoted(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _text(body: Iterator[bytes]) -> str:
    return b"".join(body)[:300].decode(errors="replace")


class SoakClient:
    """One client thread's loop: draw an operation, run it, record what was acknowledged."""

    def __init__(self, index: int, addresses: list[str], ledger: Ledger, seed: int):
        self.index = index
        self.http = [Http(address) for address in addresses]
        self.ledger = ledger
        self.rng = random.Random(seed)
        self._seeds = iter(range(seed * 1_000_000, (seed + 1) * 1_000_000))

    def name(self) -> str:
        return f"soak/{self.index}/{self.rng.randrange(NAMES_PER_CLIENT)}"

    def api(self) -> Http:
        return self.rng.choice(self.http)

    def run(self, deadline: float, pause: float) -> None:
        ops, weights = zip(*MIX)
        while time.monotonic() < deadline:
            time.sleep(pause)
            op = self.rng.choices(ops, weights)[0]
            try:
                getattr(self, op)()
                self.ledger.count(op)
            except Exception as exc:
                self.ledger.fail(f"client {self.index} {op}: {exc!r}",
                                 wrong=isinstance(exc, WrongBytes))
        for conn in self.http:
            conn.close()

    def _put(self, size: int) -> None:
        seed, name = next(self._seeds), self.name()
        digest = sha256_b64(body_chunks(seed, size))
        status, headers, body = self.api().request(
            "PUT", f"/objects/{_quoted(name)}", body_chunks(seed, size),
            {"Content-Length": str(size), "Digest": f"SHA-256={digest}"})
        text = _text(body)
        if status != 200:
            raise RuntimeError(f"PUT {name} ({size} B): {status} {text}")
        self.ledger.wrote(Write(name, int(headers["version"]), seed, size, digest))

    def small_put(self) -> None:
        self._put(self.rng.randrange(1, 64 * 1024))

    def medium_put(self) -> None:
        self._put(self.rng.randrange(MIB, 4 * MIB))

    def large_put(self) -> None:
        self._put(LARGE_SIZE + self.rng.randrange(MIB))

    def resumable_put(self) -> None:
        """POST, then two pieces, the first ending inside a block (possibly on the other api
        server)."""
        seed, name = next(self._seeds), self.name()
        size = self.rng.randrange(2 * MIB, 6 * MIB)
        digest = sha256_b64(body_chunks(seed, size))
        status, headers, body = self.api().request(
            "POST", f"/objects/{_quoted(name)}", None,
            {"Digest": f"SHA-256={digest}", "Size": str(size), "Content-Length": "0"})
        text = _text(body)
        if status != 201:
            raise RuntimeError(f"POST {name}: {status} {text}")
        location, cut = headers["location"], self.rng.randrange(1, size)
        version = None
        for first, last in ((0, cut), (cut, size)):
            status, headers, body = self.api().request(
                "PUT", location, _slice(body_chunks(seed, size), first, last),
                {"Content-Length": str(last - first), "Range": f"bytes={first}-"})
            text = _text(body)
            if status != 200:
                raise RuntimeError(f"PUT {location} bytes {first}-{last}: {status} {text}")
            version = headers.get("version")
        if version is None:
            raise RuntimeError(f"resumable {name}: no Version after the last piece")
        self.ledger.wrote(Write(name, int(version), seed, size, digest))

    def get(self) -> None:
        name = self.name()
        write = self.ledger.latest(name)
        if write is None:
            return
        status, _, body = self.api().request("GET", f"/objects/{_quoted(name)}"
                                             f"?version={write.number}")
        if status != 200:
            raise RuntimeError(f"GET {name} v{write.number}: {status} {_text(body)}")
        got = sha256_b64(body)
        if got != write.hash:
            raise WrongBytes(f"GET {name} v{write.number}: bytes hash to {got}, "
                               f"not {write.hash}")

    def range_get(self) -> None:
        write = self.ledger.latest(self.name())
        if write is None:
            return
        first = self.rng.randrange(write.size)
        last = min(write.size - 1, first + self.rng.randrange(2 * MIB))
        status, _, body = self.api().request(
            "GET", f"/objects/{_quoted(write.name)}?version={write.number}", None,
            {"Range": f"bytes={first}-{last}"})
        if status != 206:
            raise RuntimeError(f"GET {write.name} bytes={first}-{last}: {status} {_text(body)}")
        expected = sha256_b64(_slice(write.chunks(), first, last + 1))
        if sha256_b64(body) != expected:
            raise WrongBytes(f"GET {write.name} bytes={first}-{last}: wrong bytes")

    def delete(self) -> None:
        name = self.name()
        status, _, body = self.api().request("DELETE", f"/objects/{_quoted(name)}")
        text = _text(body)
        if status == 200:
            self.ledger.was_deleted(name)
        elif status != 404:
            raise RuntimeError(f"DELETE {name}: {status} {text}")


def _slice(chunks: Iterator[memoryview], first: int, stop: int) -> Iterator[memoryview]:
    """Bytes ``first`` up to ``stop`` (exclusive) of a chunk stream."""
    offset = 0
    for chunk in chunks:
        end = offset + len(chunk)
        if end > first and offset < stop:
            yield chunk[max(0, first - offset):min(len(chunk), stop - offset)]
        offset = end
        if offset >= stop:
            return


# -- RSS ---------------------------------------------------------------------------------------

def worker_pids(cluster: Cluster) -> dict[str, int]:
    """``api<i>/<pid>`` -> pid of every gunicorn worker of every api server."""
    return {f"{node.name}/{pid}": pid for node in cluster.api if node.running
            for pid in _children(node.process.pid)}


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return None


class RssSampler(threading.Thread):
    """Samples every api worker's RSS every ``interval`` seconds until stopped."""

    def __init__(self, cluster: Cluster, interval: float):
        super().__init__(daemon=True)
        self.cluster, self.interval = cluster, interval
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self._stopping = threading.Event()
        self._start = time.monotonic()

    def sample(self) -> None:
        elapsed = (time.monotonic() - self._start) / 60
        row = []
        for label, pid in worker_pids(self.cluster).items():
            value = rss_mib(pid)
            if value is not None:
                self.samples.setdefault(label, []).append((elapsed, value))
                row.append(f"{label} {value:.1f}")
        print(f"rss t={elapsed:5.1f} min  " + "  ".join(row) + "  (MiB)", flush=True)

    def run(self) -> None:
        self.sample()
        while not self._stopping.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stopping.set()
        self.join()
        self.sample()


def rss_verdicts(samples: dict[str, list[tuple[float, float]]], limit: float,
                 margin: float) -> list[str]:
    """Why the RSS series fail (empty: every worker levelled off below ``limit``)."""
    problems = []
    for label, series in samples.items():
        values = [value for _, value in series]
        peak = max(values)
        if peak > limit:
            problems.append(f"{label}: RSS reached {peak:.1f} MiB (limit {limit:.0f})")
        half = len(values) // 2
        if half >= 2 and max(values[half:]) > max(values[:half]) + margin:
            problems.append(f"{label}: RSS still growing: second half peaked at "
                            f"{max(values[half:]):.1f} MiB, first half at "
                            f"{max(values[:half]):.1f} (margin {margin:.0f})")
    return problems


# -- verification ------------------------------------------------------------------------------

def verify(addresses: list[str], ledger: Ledger) -> tuple[int, list[str]]:
    """Read back every acknowledged write and every deleted name; (checked, problems)."""
    http_ = Http(addresses[0])
    problems, checked = [], 0
    try:
        for name, versions in sorted(ledger.writes.items()):
            for write in versions:
                status, _, body = http_.request(
                    "GET", f"/objects/{_quoted(name)}?version={write.number}")
                got = sha256_b64(body) if status == 200 else _text(body)
                checked += 1
                if status != 200 or got != write.hash:
                    problems.append(f"{name} v{write.number}: {status} {got[:100]}")
        for name in sorted(ledger.deleted):
            status, _, body = http_.request("GET", f"/objects/{_quoted(name)}")
            _text(body)
            checked += 1
            if status != 404:
                problems.append(f"{name} was deleted but GET answers {status}")
    finally:
        http_.close()
    return checked, problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.soak", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="duration of the load (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=4,
                        help="client threads (default: %(default)s)")
    parser.add_argument("--pause", type=float, default=0.05,
                        help="seconds each client waits between operations, so that a long "
                             "soak leaves the machine some CPU (default: %(default)s)")
    parser.add_argument("--sample-seconds", type=float, default=60.0,
                        help="seconds between RSS samples (default: %(default)s)")
    parser.add_argument("--rss-limit-mib", type=float, default=80.0)
    parser.add_argument("--margin-mib", type=float, default=8.0,
                        help="growth of the second half's peak over the first half's "
                             "still counted as level (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep-root", action="store_true",
                        help="keep the cluster's directory (logs, storage) afterwards")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="tessera-soak-"))
    cluster = Cluster(root, port=free_port(), exchange_suffix=f".soak-{time.time_ns()}")
    ledger = Ledger()
    try:
        progress(f"starting cluster in {root}")
        cluster.start()
        addresses = [node.address for node in cluster.api]
        sampler = RssSampler(cluster, args.sample_seconds)
        sampler.start()
        deadline = time.monotonic() + args.minutes * 60
        clients = [SoakClient(i, addresses, ledger, args.seed * 100 + i)
                   for i in range(args.clients)]
        threads = [threading.Thread(target=c.run, args=(deadline, args.pause)) for c in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sampler.stop()
        progress(f"load done: {dict(sorted(ledger.counts.items()))}; verifying")
        checked, lost = verify(addresses, ledger)
    finally:
        cluster.stop()
        cluster.cleanup_broker()
        if args.keep_root:
            progress(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    problems = ledger.wrong + lost + rss_verdicts(sampler.samples, args.rss_limit_mib,
                                                     args.margin_mib)
    writes = sum(len(v) for v in ledger.writes.values())
    print(f"operations: {dict(sorted(ledger.counts.items()))}")
    print(f"verified: {checked} reads at the end ({writes} acknowledged versions, "
          f"{len(ledger.deleted)} deleted names); request failures during the load: "
          f"{len(ledger.failures)}")
    for label, series in sorted(sampler.samples.items()):
        print(f"{label}: " + " ".join(f"{value:.1f}" for _, value in series) + " MiB")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("OK" if not problems else f"FAILED: {len(problems)} problem(s)")
    return 0 if not problems else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
