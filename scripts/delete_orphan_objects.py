"""``python -m scripts.delete_orphan_objects``: move shards no version references to garbage/.

Run it on each data server's host, as in the book (``STORAGE_ROOT`` is scanned,
``LISTEN_ADDRESS`` names the local data server, which does the moving), or once with
``--cluster`` to ask every live data server (found through RabbitMQ heartbeats) for its
shards.  An object whose shards are all older than ``--grace`` seconds and that no version
references is collected; a younger one may belong to an upload that committed its shards and
is about to write its metadata (BOOK W6), so it is left for a later run.  Then files that have
lain in garbage/ longer than ``--purge-garbage-older-than`` seconds are deleted (the book never
purges them, W22).  See ``lib/collector.py``.
"""
from __future__ import annotations

import sys

from lib.collector import OrphanCollector, local_shards, purge_local_garbage
from lib.objectstream import DataServerClient
from lib.config import Config
from lib.membership import ClusterView
from lib.rs.params import ALL_SHARDS
from scripts import _tool


def _parser():
    parser = _tool.parser("scripts.delete_orphan_objects",
                          "Move shards that no metadata version references to garbage/, "
                          "and purge old garbage.")
    parser.add_argument("--cluster", action="store_true",
                        help="every live data server (needs RABBITMQ_SERVER) instead of the "
                             "local one (STORAGE_ROOT and LISTEN_ADDRESS)")
    parser.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                        help="leave objects with a shard younger than this alone "
                             "(default: ORPHAN_GRACE, 3600)")
    parser.add_argument("--purge-garbage-older-than", type=float, default=None,
                        metavar="SECONDS", dest="purge",
                        help="delete files in garbage/ moved there longer ago than this "
                             "(default: GARBAGE_TTL, 604800)")
    parser.add_argument("--keep-garbage", action="store_true", help="purge nothing")
    return parser


def _run(config: Config, args) -> int:
    grace = config.orphan_grace if args.grace is None else args.grace
    purge = config.garbage_ttl if args.purge is None else args.purge
    if grace < 0 or purge < 0:
        print("--grace and --purge-garbage-older-than must be >= 0", file=sys.stderr)
        return _tool.EXIT_USAGE
    root = None if args.cluster else config.require_storage_root()
    metadata = _tool.open_metadata(config)
    client = DataServerClient.from_config(config)
    collector = OrphanCollector(metadata, client, grace)
    try:
        if args.cluster:
            with ClusterView(config, "delete_orphan_objects") as cluster:
                servers = cluster.wait_for_data_servers(ALL_SHARDS)
                if not servers:
                    print("no live data server answered", file=sys.stderr)
                    return _tool.EXIT_FAILED
                collector.collect({address: list(client.list_shards(address))
                                   for address in servers})
                if not args.keep_garbage:
                    for address in servers:
                        collector.report.purged += client.purge_garbage(address, purge)
            where = f"{len(servers)} data server(s)"
        else:
            collector.collect({config.listen_address: local_shards(root)})
            if not args.keep_garbage:
                collector.report.purged += purge_local_garbage(root, purge)
            where = f"{config.listen_address} ({root})"
    finally:
        metadata.close()
    print(f"{where}: {collector.report.summary()}")
    return _tool.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _tool.run(lambda config: _run(config, args))


if __name__ == "__main__":
    sys.exit(main())
