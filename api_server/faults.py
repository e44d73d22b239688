"""Fault injection in an api worker: its engine, rules and event log, and its hooks.

The hooks are the book listener (:func:`wrap_book`: every path but the management API,
``/health`` and ``/metrics``, so a rule can always be removed and a monitor still sees the
server), the S3 listener (``api_server/s3/faults.py``) and the metadata calls of the object
layer (``lib/faults/metadata.py``).  Rules are stored with the metadata and reach every
process through the faults exchange (``lib/faults/sync.py``).
"""
from __future__ import annotations

from lib.config import Config
from lib.faults.engine import FaultEngine
from lib.faults.events import EventLog
from lib.faults.metadata import FaultyMetadata
from lib.faults.rules import Probe
from lib.faults.sync import FaultSync, RuleStore
from lib.faults.wsgi import FaultMiddleware, http_probe
from lib.metadata import MetadataStore
from lib.rabbitmq import Bus

#: Book-listener paths no rule touches.
_EXEMPT = ("/api/v1/", "/health", "/metrics")


class ApiFaults:
    """What the management API and the hooks of one api worker share."""

    def __init__(self, config: Config, metadata: MetadataStore):
        self.engine = FaultEngine(("api", "s3", "metadata"),
                                  [a for a in (config.listen_address,
                                               config.s3_listen_address) if a])
        self.store = RuleStore(metadata)
        self.events = EventLog()
        self.sync: FaultSync | None = None

    def wrap_metadata(self, metadata: MetadataStore) -> MetadataStore:
        return FaultyMetadata(metadata, self.engine)       # type: ignore[return-value]

    def attach(self, bus: Bus, config: Config) -> None:
        """Take part in the faults exchange and install the stored rules now."""
        self.sync = FaultSync(bus, config, self.engine, self.store, self.events)
        self.sync.load()

    def changed(self) -> None:
        """The stored rules changed: install them here and tell every process."""
        if self.sync is not None:
            self.sync.broadcast()


def _book_probe(environ: dict) -> Probe | None:
    if environ.get("PATH_INFO", "").startswith(_EXEMPT):
        return None
    return http_probe(environ)


def wrap_book(app, faults: ApiFaults) -> FaultMiddleware:
    return FaultMiddleware(app, faults.engine, "api", probe=_book_probe)
