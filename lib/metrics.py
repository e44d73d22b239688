"""Prometheus metrics: the series every process shares, and ``/metrics`` over all of them.

Any module may define its own series with ``prometheus_client`` directly
(``from prometheus_client import Counter``; ``Counter("tessera_x_total", "...", ["reason"])``,
at import or later): :func:`exposition` exports every series defined anywhere in the
process, because it reads prometheus_client's default registry (or, under gunicorn, the
multiprocess collector over every worker's files), never a list of our own.

Under gunicorn (``lib/server.py``) a server runs several worker processes; a scrape lands
on one of them, yet must count them all.  :func:`use_multiprocess_dir` is called by the
gunicorn master before it forks: it points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory
of that server start, so every worker writes its counters to mmapped files there and a
scrape sums them (:class:`prometheus_client.multiprocess.MultiProcessCollector`); the master
removes the directory when it exits and a worker that exits is marked dead
(:func:`worker_exited`).  Gauges defined elsewhere should pass a ``multiprocess_mode``
(``"livesum"``, ``"max"``...) saying how to combine workers.  ``PROMETHEUS_MULTIPROC_DIR``,
when the operator sets it, names where those directories are made (default: the system's
temp directory).

Values that are true of the process right now (live data servers, disk space, queue depth)
are not kept in files: the scraped worker computes them then, from collectors the server
hands to :func:`exposition` (:class:`Snapshot`).  CPU and resident memory are summed over
the server's processes (the gunicorn master and its workers, read from ``/proc``) as
``tessera_process_cpu_seconds_total`` and ``tessera_process_resident_memory_bytes``: one
series per server whatever its worker count; shared pages count once per process.

Label values come from small fixed sets (API, operation name, status code), never from
paths or keys, so the number of series stays bounded.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import (REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)
from prometheus_client import values
from prometheus_client.core import GaugeMetricFamily, CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST  # noqa: F401 - for /metrics
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from lib import logs

_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Latency buckets (seconds): small requests take about a millisecond, big ones seconds.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

#: Its ``_count`` is the number of requests answered (no separate counter: one write less
#: per request).
REQUEST_SECONDS = Histogram("tessera_request_duration_seconds",
                            "Seconds from a request's arrival to the end of its answer, by "
                            "API, operation and status.",
                            ["api", "operation", "status"], buckets=_BUCKETS)
IN_PROGRESS = Gauge("tessera_requests_in_progress", "Requests being served now.", ["api"],
                    multiprocess_mode="livesum")
BYTES_RECEIVED = Counter("tessera_received_bytes", "Request body bytes received.", ["api"])
BYTES_SENT = Counter("tessera_sent_bytes", "Answer body bytes sent.", ["api"])
REPAIRS = Counter("tessera_repairs", "Object repairs (missing or damaged shards rebuilt), "
                  "by event: started, done, failed.", ["event"])
CORRUPT_RECORDS = Counter("tessera_corrupt_records",
                          "Shard records whose CRC did not match (the shard is quarantined).")
for _event in ("started", "done", "failed"):        # every series exists from the start
    REPAIRS.labels(_event)
LOCATE_SECONDS = Histogram("tessera_locate_duration_seconds",
                           "Seconds a locate broadcast waited for the data servers' answers.",
                           buckets=_BUCKETS)
LOCATION_CACHE = Counter("tessera_location_cache", "Locates answered from the location "
                         "cache (hit) or by a broadcast (miss).", ["result"])

#: Where the gunicorn master of this process tree runs (set before forking), else None.
_server_pid: int | None = None


def use_multiprocess_dir(parent: Path | None = None) -> Path:
    """Make this process (and the workers it forks) write metrics to a fresh directory.

    Safe however early prometheus_client was imported: the value class is chosen again and
    series already created without labels get new, file-backed values.
    """
    global _server_pid
    _remove_orphans(Path(parent or tempfile.gettempdir()))
    path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=parent))
    os.environ[_ENV] = str(path)
    values.ValueClass = values.MultiProcessValue(process_identifier=logs.pid)
    for collector in list(REGISTRY._collector_to_names):
        if isinstance(collector, MetricWrapperBase):
            children = collector._metrics.values() if collector._labelnames else [collector]
            for metric in list(children):
                metric._metric_init()
    _server_pid = os.getpid()
    atexit.register(_remove, path, _server_pid)
    return path


_PREFIX = "tessera-metrics-"


def _remove_orphans(parent: Path) -> None:
    """Directories of servers that died without cleaning up (SIGKILL): their pid is gone."""
    for path in parent.glob(f"{_PREFIX}*-*"):
        pid = path.name[len(_PREFIX):].partition("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


def _remove(path: Path, owner: int) -> None:
    if os.getpid() == owner:          # forked workers inherit atexit handlers: not theirs
        shutil.rmtree(path, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """gunicorn's worker_exit hook: that worker's live gauges no longer count."""
    if os.environ.get(_ENV):
        mark_process_dead(pid)


class Snapshot:
    """A collector computed at scrape time: ``produce()`` yields metric families."""

    def __init__(self, produce: Callable[[], Iterable]):
        self._produce = produce

    def collect(self):
        return self._produce()


def gauge(name: str, documentation: str, value: float, labels: dict | None = None):
    """One gauge family with one sample, for :class:`Snapshot` producers."""
    family = GaugeMetricFamily(name, documentation, labels=list(labels or ()))
    family.add_metric(list((labels or {}).values()), value)
    return family


class _Default:
    def collect(self):
        return REGISTRY.collect()


def _process_pids() -> list[int]:
    """This server's processes: the gunicorn master and its children, or just this one."""
    if _server_pid is None or _server_pid == os.getpid():
        return [os.getpid()]
    pids = [_server_pid]
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == _server_pid:
                pids.append(int(entry.name))
    return pids


_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _process_families():
    cpu = rss = 0.0
    for pid in _process_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / _TICKS     # utime + stime
        rss += int(fields[21]) * _PAGE
    total = CounterMetricFamily("tessera_process_cpu_seconds", "CPU seconds used by this "
                                "server's processes (gunicorn master and workers).")
    total.add_metric([], cpu)
    yield total
    yield gauge("tessera_process_resident_memory_bytes",
                "Resident memory of this server's processes, summed.", rss)


def exposition(collectors: Iterable = ()) -> bytes:
    """The Prometheus text of every series of the process (all workers under gunicorn),
    this server's processes' CPU and memory, and ``collectors`` computed now."""
    registry = CollectorRegistry(auto_describe=False)
    path = os.environ.get(_ENV)
    if path and os.path.isdir(path):
        MultiProcessCollector(registry, path)
    else:
        registry.register(_Default())
    registry.register(Snapshot(_process_families))
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)
