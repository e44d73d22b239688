"""FaultyMetadata: an api worker's MetadataStore, with metadata calls that fail or slow down.

Wraps the store the object layer uses.  Each attribute is looked up on the real store; while
no ``metadata`` rule exists the real attribute is returned as it is, so a call costs one extra
lookup.  With rules, each call is a probe whose ``operation`` is the method's name
(``put_version``, ``version``, ``records``...): ``delay`` sleeps before the call, ``fail``
raises :class:`lib.metadata.MetadataError` (503 on the book API, 503 ServiceUnavailable
on S3) without calling the store.
"""
from __future__ import annotations

import functools

from lib.faults.engine import FaultEngine
from lib.faults.rules import Probe
from lib.metadata import MetadataError, MetadataStore

#: Calls never faulted: the fault rules' own storage (a rule must stay removable) and the
#: health check.
_EXEMPT = frozenset({"put_record", "record", "records", "delete_record", "check", "close"})


class FaultyMetadata:
    def __init__(self, store: MetadataStore, engine: FaultEngine):
        self._store = store
        self._engine = engine

    @property
    def inner(self) -> MetadataStore:
        return self._store

    def __getattr__(self, name: str):
        attr = getattr(self._store, name)
        rules = self._engine.metadata
        if not rules or name in _EXEMPT or name.startswith("_") or not callable(attr):
            return attr
        engine = self._engine

        @functools.wraps(attr)
        def call(*args, **kwargs):
            rule = engine.hit("metadata", rules, Probe(operation=name))
            if rule is not None:
                if rule.action.type == "fail":
                    raise MetadataError(f"{rule.action.message} (fault rule {rule.id})")
                engine.sleep(rule)
            return attr(*args, **kwargs)

        return call
