"""What every maintenance tool shares: configuration, logging, the metadata sanity check, and
turning failures into exit statuses.

Tools read the same environment variables as the servers (``Config.from_env``), run once, print
what they did on stdout, log on stderr, and exit 0 on success.  Before touching anything they
ask the metadata store to prove it answers sensibly (``MetadataStore.check``); a backend that
fails, or answers something we do not understand (for instance an Elasticsearch whose total-hits
format is unknown, BOOK W21), stops the run with EXIT_REFUSED instead of being taken for "no
version references this object" and deleting data.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from lib import logs
from lib.config import Config, ConfigError
from lib.errors import ObjectStoreError
from lib.metadata import MetadataError, MetadataStore, open_store
from lib.rabbitmq import BrokerError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3

log = logging.getLogger(__name__)


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"python -m {prog}", description=description,
        epilog="Settings come from the servers' environment variables (RABBITMQ_SERVER, "
               "METADATA_DB or ES_SERVER, ...; see README). Exit status: 0 success, "
               "1 failure, 2 usage, 3 refused (metadata backend failed or answered "
               "nonsense).")


def configure_logging(config: Config) -> None:
    logs.configure(config.log_level, config.log_format, config.listen_address,
                   "%(asctime)s %(name)s %(levelname)s %(message)s")


def open_metadata(config: Config) -> MetadataStore:
    """The configured store, after it proved that it answers sensibly."""
    metadata = open_store(config)
    try:
        print(f"metadata: {metadata.check()}", flush=True)
    except BaseException:
        metadata.close()
        raise
    return metadata


def run(main: Callable[[Config], int]) -> int:
    """Read the configuration and run ``main``, mapping failures to exit statuses."""
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config)
    try:
        return main(config)
    except MetadataError as exc:
        print(f"refusing to go on: the metadata backend failed or answered something not "
              f"understood: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (BrokerError, ObjectStoreError) as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILED
