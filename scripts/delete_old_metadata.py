"""``python -m scripts.delete_old_metadata``: keep the newest N versions of every name.

The book's tool trims at most ten names per run (an Elasticsearch terms aggregation's default
size) and assumes version numbers are contiguous (BOOK W22).  This one pages over *every* name
with more than N versions (``MetadataStore.keys_with_versions_over``, in the book bucket) and
removes exactly the versions older than the newest N, whatever their numbers.  Content that
loses its last reference and has been unreferenced for ``--grace`` seconds is claimed and gets
a ``gc`` task on the durable task queue, so the worker moves its shards to garbage/; younger
content is collected by the worker's sweep after GC_GRACE.  When the broker cannot be reached,
metadata is still trimmed and the orphan collector finds the shards later.
"""
from __future__ import annotations

import sys

from lib.config import Config
from lib.metadata import MetadataStore
from lib.rabbitmq import BrokerError, Outgoing, QueueClient
from lib.tasks import Task, TaskQueues
from scripts import _tool

#: Names handled per metadata query.
PAGE = 500


def _parser():
    parser = _tool.parser("scripts.delete_old_metadata",
                          "Keep the newest N versions of every object name; queue garbage "
                          "collection of content no version references any more.")
    parser.add_argument("--keep", type=int, default=5, metavar="N",
                        help="versions to keep per name (default: %(default)s)")
    parser.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                        help="gc tasks leave shards younger than this alone "
                             "(default: GC_GRACE, 3600)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be removed, change nothing")
    return parser


class _GcQueue:
    """gc tasks, published with confirms; degrades to a warning when the broker is away."""

    def __init__(self, config: Config, grace: float):
        self._queues = TaskQueues.from_config(config)
        self._grace = grace
        self.queued = 0
        self.unqueued = 0
        try:
            self._client: QueueClient | None = QueueClient(config.rabbitmq_server,
                                                           "delete_old_metadata")
            self._client.declare(self._queues.name)
        except BrokerError as exc:
            print(f"warning: {exc}; shards of removed content will be left to "
                  f"scripts.delete_orphan_objects", file=sys.stderr)
            self._client = None

    def publish(self, hash_: str) -> None:
        if self._client is not None:
            try:
                self._client.publish(Outgoing(self._queues.name,
                                              Task.gc(hash_, self._grace).to_json()))
                self.queued += 1
                return
            except BrokerError as exc:
                print(f"warning: {exc}; further gc tasks are not queued", file=sys.stderr)
                self._client.close()
                self._client = None
        self.unqueued += 1

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def trim(metadata: MetadataStore, bucket: str, keep: int, dry_run: bool, grace: float,
         gc: _GcQueue | None) -> tuple:
    """Remove all but the newest ``keep`` versions of every key of ``bucket``; returns (keys,
    versions, contents that lost their last reference)."""
    keys = removed = unreferenced = 0
    after = None
    while True:
        page = metadata.keys_with_versions_over(bucket, keep, after=after, limit=PAGE)
        if not page:
            break
        dropped: set[str] = set()
        for key, versions in page:
            keys += 1
            for version in versions[:-keep]:
                what = version.hash or ("delete marker" if version.delete_marker else "parts")
                if dry_run:
                    print(f"would remove {key!r} version {version.number} ({what})")
                elif metadata.delete_version(bucket, key, version.version_id) is None:
                    continue                 # removed meanwhile
                removed += 1
                if version.hash:
                    dropped.add(version.hash)
        if not dry_run:
            for hash_ in sorted(dropped):
                content = metadata.content(hash_)
                if content is not None and content.refs <= 0:
                    unreferenced += 1
                    # Claimed now when its grace allows; else the worker's sweep takes it.
                    if gc is not None and metadata.claim_unreferenced(hash_, grace):
                        gc.publish(hash_)
        after = page[-1][0]
        if len(page) < PAGE:
            break
    return keys, removed, unreferenced


def _run(config: Config, args) -> int:
    if args.keep < 1:
        print("--keep must be at least 1", file=sys.stderr)
        return _tool.EXIT_USAGE
    grace = config.gc_grace if args.grace is None else args.grace
    metadata = _tool.open_metadata(config)
    gc = None if args.dry_run else _GcQueue(config, grace)
    try:
        names, removed, unreferenced = trim(metadata, config.book_bucket, args.keep,
                                            args.dry_run, grace, gc)
    finally:
        if gc is not None:
            gc.close()
        metadata.close()
    verb = "would remove" if args.dry_run else "removed"
    print(f"kept the newest {args.keep} versions of every name: {verb} {removed} version(s) "
          f"of {names} name(s)")
    if gc is not None:
        print(f"{unreferenced} object(s) lost their last reference: {gc.queued} gc task(s) "
              f"queued on {TaskQueues.from_config(config).name}"
              + (f", {gc.unqueued} left to the orphan collector" if gc.unqueued else ""))
    return _tool.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _tool.run(lambda config: _run(config, args))


if __name__ == "__main__":
    sys.exit(main())
