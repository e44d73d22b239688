"""Benchmark the management API's key search (``MetadataStore.search_keys``) over many keys.

Fills a SQLite metadata file of its own (in a temp directory, removed afterwards) with
``--keys`` current objects named like an operator's files, then times searches of a rare, a
medium and a common substring, a short (prefix) query and a second page, each ``--repeat``
times, and prints the median and worst latency.  Filling runs the version writes' own
statements, so the index is the one they keep (see :func:`fill`).
Only the standard library and the repository's own modules are used; nothing leaves the host.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):           # run as a file: python scripts/bench_search.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.metadata import ENABLED, Draft  # noqa: E402
from lib.metadata.sqlite import SqliteStore  # noqa: E402

BUCKET = "bench"
WORDS = ("report", "invoice", "photo", "backup", "draft", "scan", "export", "notes", "video",
         "contract", "summary", "archive", "budget", "design", "minutes", "release")
DIRS = ("finance", "hr", "eng", "sales", "legal", "ops", "media", "research")
EXTS = ("pdf", "jpg", "txt", "csv", "log", "tar.gz", "mp4", "docx")
#: Versions written per transaction while filling.
BATCH = 5000


def key_name(i: int, rng: random.Random) -> str:
    return (f"{rng.choice(DIRS)}/{2015 + i % 12}/{rng.choice(WORDS)}-{i:07d}."
            f"{rng.choice(EXTS)}")


def fill(store: SqliteStore, count: int) -> float:
    """Write ``count`` keys; the seconds it took.  Each batch is one transaction running the
    statements of ``put_version`` (``_insert``, triggers and all): one fsync per version
    would take the better part of an hour for a million."""
    started = time.monotonic()
    rng = random.Random(15)
    store.put_version(Draft(BUCKET, key_name(0, rng), 100, "h", "e"))
    for first in range(1, count, BATCH):
        drafts = [Draft(BUCKET, key_name(i, rng), 100, "h", "e", shared=True)
                  for i in range(first, min(first + BATCH, count))]
        store._write(lambda tx: [store._insert(tx, draft, None, ENABLED) for draft in drafts])
        if (first // BATCH) % 50 == 0:
            print(f"  filled {first + len(drafts):,} keys", file=sys.stderr)
    return time.monotonic() - started


def timed(call, repeat: int) -> tuple[float, float, int]:
    """(median ms, worst ms, results of the last call)."""
    samples, found = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        page, _ = call()
        samples.append((time.perf_counter() - started) * 1000)
        found = len(page)
    return statistics.median(samples), max(samples), found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the temporary metadata file goes (e.g. /dev/shm: filling "
                             "is then not bound by the disk's syncs)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="tessera-bench-search-", dir=args.dir))
    try:
        store = SqliteStore(root / "metadata.db")
        store.create_bucket(BUCKET, versioning=ENABLED)
        fill_seconds = fill(store, args.keys)
        rare = f"{args.keys // 2:07d}"
        _, second = store.search_keys(BUCKET, "report", args.limit)
        cases = {
            "rare (one key)": lambda: store.search_keys(BUCKET, rare, args.limit),
            "medium (2019/budget)": lambda: store.search_keys(BUCKET, "2019/budget",
                                                              args.limit),
            "common (report)": lambda: store.search_keys(BUCKET, "report", args.limit),
            "common, all buckets": lambda: store.search_keys(None, "report", args.limit),
            "common, second page": lambda: store.search_keys(BUCKET, "report", args.limit,
                                                             second),
            "none (zzz-none)": lambda: store.search_keys(BUCKET, "zzz-none", args.limit),
            "short, a prefix (fi)": lambda: store.search_keys(BUCKET, "fi", args.limit),
        }
        results = {name: timed(call, args.repeat) for name, call in cases.items()}
        store.close()
        if args.json:
            print(json.dumps({"keys": args.keys, "fill_seconds": round(fill_seconds, 1),
                              "searches": {name: {"median_ms": round(m, 2), "max_ms": round(w, 2),
                                                  "results": n}
                                           for name, (m, w, n) in results.items()}}))
        else:
            print(f"{args.keys:,} keys filled in {fill_seconds:.0f} s; "
                  f"{args.repeat} searches each, limit {args.limit}")
            print(f"{'search':<28}{'median ms':>10}{'max ms':>10}{'results':>9}")
            for name, (median, worst, found) in results.items():
                print(f"{name:<28}{median:>10.2f}{worst:>10.2f}{found:>9}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
