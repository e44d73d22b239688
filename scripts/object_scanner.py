"""``python -m scripts.object_scanner``: check every stored object's shards, repair the damage.

The book runs its scanner on every data-server host, over the local shard files, so an
object is scanned once per host holding one of its shards, up to six times (BOOK W23).  This
one runs once for the whole cluster and pages over the distinct hashes the metadata store
references, so every object is scanned exactly once.  For each it locates the shards, reads
every one in full verifying every record (``lib/rs/verify.py``), checks the decoded content
against its SHA-256, and has missing or corrupt shards rebuilt with the repair code the api
server and the worker use (``lib/rs/repair.py``).  It reads every copy of each shard, not just
one: a data server that was away comes back with shards rebuilt elsewhere meanwhile.  A damaged
copy is retired like any damaged shard; of the good copies of one shard index, one is kept and
the others are moved to garbage/ once older than ``--grace`` seconds (``lib/rs/duplicates.py``).
``--rate`` bounds the objects started per second so a scan can run beside live traffic;
progress goes to stderr, one line per repaired, unrecoverable or deduplicated object and a
summary to stdout.  Exit status 1 when an object is unrecoverable.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable

from lib.config import Config
from lib.errors import ObjectStoreError
from lib.membership import ClusterView
from lib.metadata import MetadataStore
from lib.objects.repairs import record_repair
from lib.rs.duplicates import choose_keepers, collect_extra_copies, extra_copies
from lib.rs.params import ALL_SHARDS, DATA_SHARDS
from lib.rs.repair import rebuild, retire
from lib.rs.verify import ObjectCheck, check_object
from scripts import _tool

log = logging.getLogger(__name__)

#: Hashes fetched per metadata query.
PAGE = 1000
#: Who ran a repair, as the repair log says it.
SCANNER = "object_scanner"
#: Seconds between progress lines when stderr is not a terminal.
PROGRESS_EVERY = 5.0


class Pacer:
    """Let at most ``rate`` objects start per second (None or 0: no limit)."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self._interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    def wait(self) -> None:
        if not self._interval:
            return
        now = self._clock()
        if self._next is not None and self._next > now:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self._interval


@dataclasses.dataclass
class Stats:
    checked: int = 0
    healthy: int = 0
    repaired: int = 0
    damaged: int = 0          # found damaged, not repaired (--check-only)
    unrecoverable: int = 0
    bytes: int = 0
    extra: int = 0            # good extra copies of a shard found
    collected: int = 0        # of those, moved to garbage/

    def line(self, elapsed: float) -> str:
        rate = self.checked / elapsed if elapsed > 0 else 0.0
        return (f"{self.checked} objects checked ({self.bytes / 1e6:.1f} MB, {rate:.1f}/s): "
                f"{self.repaired} repaired, {self.damaged} damaged, "
                f"{self.unrecoverable} unrecoverable; {self.extra} extra shard copies, "
                f"{self.collected} collected")


class Progress:
    """One progress line on stderr: rewritten in place on a terminal, else every few seconds."""

    def __init__(self, stream=sys.stderr, clock: Callable[[], float] = time.monotonic):
        self._stream = stream
        self._clock = clock
        self._tty = stream.isatty()
        self._started = clock()
        self._shown = self._started

    @property
    def elapsed(self) -> float:
        return self._clock() - self._started

    def update(self, stats: Stats, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._shown < (0.2 if self._tty else PROGRESS_EVERY):
            return
        self._shown = now
        text = f"scanning: {stats.line(self.elapsed)}"
        self._stream.write(f"\r{text}\x1b[K" if self._tty else text + "\n")
        self._stream.flush()

    def finish(self, stats: Stats) -> None:
        self.update(stats, force=True)
        if self._tty:
            self._stream.write("\n")


class Scanner:
    def __init__(self, metadata: MetadataStore, cluster: ClusterView, repair: bool,
                 grace: float):
        self._metadata = metadata
        self._cluster = cluster
        self._repair = repair
        self._grace = grace
        self.stats = Stats()

    def scan(self, pacer: Pacer, progress: Progress) -> None:
        after = None
        while True:
            page = self._metadata.hashes(after=after, limit=PAGE)
            for hash_ in page:
                content = self._metadata.content(hash_)
                if content is None or content.refs <= 0:
                    continue                     # unreferenced: the sweep collects it
                pacer.wait()
                self.scan_object(hash_, content.size)
                progress.update(self.stats)
            if len(page) < PAGE:
                return
            after = page[-1]

    def scan_object(self, hash_: str, size: int) -> None:
        cluster = self._cluster
        check = check_object(cluster.client, cluster.locator.locate_copies(hash_), hash_, size)
        self.stats.checked += 1
        self.stats.bytes += size
        if not check.recoverable:
            self._unrecoverable(hash_, _damage(check))
            return
        keep = choose_keepers(check.good)
        if check.healthy:
            self.stats.healthy += 1
        elif not self._repair:
            self.stats.damaged += 1
            print(f"damaged {hash_}: {_damage(check)}", flush=True)
        elif not self._mend(check, keep, size):
            return
        extra = extra_copies(check.good, keep)
        if not extra:
            return
        self.stats.extra += len(extra)
        if not self._repair:
            print(f"extra copies of {hash_}: {_copies(extra)}", flush=True)
            return
        moved, kept = collect_extra_copies(cluster.client, hash_, keep, extra, self._grace)
        self.stats.collected += moved
        print(f"extra copies of {hash_}: {_copies(extra)}; {moved} moved to garbage, "
              f"{kept} kept for now", flush=True)

    def _mend(self, check: ObjectCheck, keep: dict[int, str], size: int) -> bool:
        """Retire the damaged copies and rebuild the missing shards from the kept good ones;
        whether that worked."""
        cluster = self._cluster
        what = _damage(check)
        try:
            retire(cluster.client, check.hash, check.damaged)
            rebuilt = rebuild(cluster.client, cluster.registry, keep, check.hash, size)
        except ObjectStoreError as exc:
            self._unrecoverable(check.hash, f"{what}; repair failed: {exc}")
            record_repair(self._metadata, check.hash, check.missing,
                          f"{type(exc).__name__}: {exc}", SCANNER)
            return False
        finally:
            cluster.locator.forget(check.hash)
        record_repair(self._metadata, check.hash, rebuilt, None, SCANNER)
        self.stats.repaired += 1
        print(f"repaired {check.hash}: {what}; rebuilt shards {sorted(rebuilt)}", flush=True)
        return True

    def _unrecoverable(self, hash_: str, what: str) -> None:
        self.stats.unrecoverable += 1
        log.error("object %s is unrecoverable: %s", hash_, what)
        print(f"UNRECOVERABLE {hash_}: {what}", flush=True)


def _copies(copies) -> str:
    return ", ".join(f"shard {i} on {address}" for i, address in sorted(copies))


def _damage(check: ObjectCheck) -> str:
    """What is wrong with an object, in words."""
    if check.content_ok is False:
        return "content does not match its hash"
    missing = check.missing
    parts = [f"shards {missing} missing or damaged"] if missing else []
    spare = sorted((i, a) for i, a in check.damaged if i not in missing)
    if spare:
        parts.append(f"damaged extra copies ({_copies(spare)})")
    return "; ".join(parts)


def _parser():
    parser = _tool.parser("scripts.object_scanner",
                          "Read every shard of every stored object, verify it, and rebuild "
                          "what is missing or corrupt.")
    parser.add_argument("--rate", type=float, default=50.0, metavar="OBJECTS_PER_SECOND",
                        help="objects started per second at most; 0: no limit "
                             "(default: %(default)s)")
    parser.add_argument("--check-only", action="store_true",
                        help="report damage and extra shard copies, change nothing")
    parser.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                        help="extra copies of a shard younger than this are left for a later "
                             "scan (default: ORPHAN_GRACE, 3600)")
    return parser


def _run(config: Config, args) -> int:
    grace = config.orphan_grace if args.grace is None else args.grace
    if args.rate < 0 or grace < 0:
        print("--rate and --grace must be >= 0", file=sys.stderr)
        return _tool.EXIT_USAGE
    metadata = _tool.open_metadata(config)
    try:
        with ClusterView(config, "object_scanner") as cluster:
            servers = cluster.wait_for_data_servers(ALL_SHARDS)
            if len(servers) < DATA_SHARDS:
                print(f"only {len(servers)} live data server(s): at least {DATA_SHARDS} are "
                      f"needed to read anything", file=sys.stderr)
                return _tool.EXIT_FAILED
            if len(servers) < ALL_SHARDS:
                print(f"warning: only {len(servers)} live data servers; shards on the others "
                      f"will look missing and be rebuilt elsewhere", file=sys.stderr)
            scanner = Scanner(metadata, cluster, repair=not args.check_only, grace=grace)
            progress = Progress()
            scanner.scan(Pacer(args.rate), progress)
            progress.finish(scanner.stats)
    finally:
        metadata.close()
    print(f"scan complete: {scanner.stats.line(progress.elapsed)}, "
          f"{scanner.stats.healthy} healthy")
    return _tool.EXIT_FAILED if scanner.stats.unrecoverable else _tool.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _tool.run(lambda config: _run(config, args))


if __name__ == "__main__":
    sys.exit(main())
