"""EventLog: the cluster's injected faults as one api worker heard them, and their counts.

Every process publishes each fault it injects (``lib/faults/sync.py``); every api worker
keeps the latest :data:`EVENT_LIMIT` in a ring, numbered in arrival order so a client pages
with ``after``, and counts them per rule, action and process since it started.
"""
from __future__ import annotations

import collections
import threading
from typing import Any

#: Events kept; older ones are only counted.
EVENT_LIMIT = 10_000
#: Most events one page returns.
PAGE_LIMIT = 1000


class EventLog:
    def __init__(self, limit: int = EVENT_LIMIT):
        self._lock = threading.Lock()
        self._ring: collections.deque[dict] = collections.deque(maxlen=limit)
        self._seq = 0
        self._rules: dict[str, dict[str, Any]] = {}
        self._actions: collections.Counter[str] = collections.Counter()

    def add(self, event: dict) -> None:
        with self._lock:
            self._seq += 1
            self._ring.append({"seq": self._seq, **event})
            rule = str(event.get("rule", ""))
            stats = self._rules.setdefault(rule, {"injected": 0, "by_action": {},
                                                  "by_process": {}, "by_service": {}})
            stats["injected"] += 1
            stats["name"] = event.get("name", "")
            stats["last"] = event.get("time")
            for field, key in (("by_action", "action"), ("by_process", "process"),
                               ("by_service", "service")):
                value = str(event.get(key, ""))
                stats[field][value] = stats[field].get(value, 0) + 1
            self._actions[str(event.get("action", ""))] += 1

    def page(self, after: int = 0, limit: int = 100, rule: str | None = None) -> dict:
        """Events numbered above ``after`` (oldest first), at most ``limit``; ``next`` is
        the ``after`` of the following page."""
        limit = max(1, min(limit, PAGE_LIMIT))
        with self._lock:
            events = [e for e in self._ring if e["seq"] > after and
                      (rule is None or e.get("rule") == rule)]
            last = self._seq
        page = events[:limit]
        return {"events": page, "next": page[-1]["seq"] if page else max(after, 0),
                "more": len(events) > limit, "latest": last}

    def stats(self) -> dict:
        with self._lock:
            return {"total": sum(s["injected"] for s in self._rules.values()),
                    "by_action": dict(self._actions),
                    "rules": {rule: {**s, "by_action": dict(s["by_action"]),
                                     "by_process": dict(s["by_process"]),
                                     "by_service": dict(s["by_service"])}
                              for rule, s in self._rules.items()}}
