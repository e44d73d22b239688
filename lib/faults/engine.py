"""FaultEngine: one process's fault rules, sorted by hook, and the decision to hit.

Each hook (an api server's book and S3 listeners and metadata calls, a data server's requests,
heartbeats and locate answers) reads its own tuple of rules: empty unless a rule for it
exists, so with no rule a hook costs one truth test of an empty tuple.  :meth:`hit` walks a
hook's rules, first match wins, checks the rule's conditions, counts the hit (``max_hits``
per process) and reports it: to :data:`INJECTED` (``/metrics``) and to ``report``, which
publishes the event for the cluster's log (``lib/faults/sync.py``).
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client import Counter

from lib.faults.rules import Probe, Rule

log = logging.getLogger(__name__)

INJECTED = Counter("tessera_faults_injected_total", "Faults injected by fault rules",
                   ["rule", "action", "target"])

#: The hooks a process may have, each the service name rules give.
HOOKS = ("api", "s3", "data", "metadata", "heartbeat", "locate")


def _hook_service(hook: str) -> str:
    return "broker" if hook in ("heartbeat", "locate") else hook


class FaultEngine:
    """The rules of one process (``hooks``: the ones it has), thread-safe."""

    def __init__(self, hooks: Iterable[str], addresses: Iterable[str],
                 report: Callable[[dict], None] | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None):
        self.hooks = tuple(hooks)
        self.addresses = frozenset(addresses)
        #: This process, as events name it.
        self.process = f"{min(self.addresses, default='?')}/{os.getpid()}"
        self.report = report
        self._clock = clock
        self._random = rng or random.Random()
        self._lock = threading.Lock()
        self._hits: dict[str, int] = {}
        self.rules: tuple[Rule, ...] = ()
        self.revision = 0.0
        self.api: tuple[Rule, ...] = ()
        self.s3: tuple[Rule, ...] = ()
        self.data: tuple[Rule, ...] = ()
        self.metadata: tuple[Rule, ...] = ()
        self.heartbeat: tuple[Rule, ...] = ()
        self.locate: tuple[Rule, ...] = ()

    def install(self, rules: Iterable[Rule], revision: float | None = None) -> bool:
        """Replace the rule set (an older ``revision`` than the one installed is ignored:
        broadcasts may cross).  Hit counts survive for rules that stay."""
        rules = tuple(rules)
        with self._lock:
            if revision is not None:
                if revision < self.revision:
                    return False
                self.revision = revision
            self.rules = rules
            ids = {r.id for r in rules}
            self._hits = {i: n for i, n in self._hits.items() if i in ids}
            for hook in HOOKS:
                mine = tuple(r for r in rules if hook in self.hooks and (
                    not r.node or r.node in self.addresses) and r.applies_to(
                        _hook_service(hook)) and _fits_hook(r, hook))
                setattr(self, hook, mine)
        return True

    def hit(self, hook: str, rules: tuple[Rule, ...], probe: Probe) -> Rule | None:
        """The first of ``rules`` that matches ``probe`` and whose conditions hold, counted
        and reported; None when no fault is to be injected."""
        now = self._clock()
        for rule in rules:
            cond = rule.conditions
            if not rule.match.matches(probe) or not cond.active(now):
                continue
            if cond.headers and not cond.headers_match(probe.headers):
                continue
            if cond.probability < 1.0 and self._random.random() >= cond.probability:
                continue
            with self._lock:
                hits = self._hits.get(rule.id, 0)
                if cond.max_hits is not None and hits >= cond.max_hits:
                    continue
                self._hits[rule.id] = hits + 1
            self._record(rule, hook, probe, now)
            return rule
        return None

    def _record(self, rule: Rule, hook: str, probe: Probe, now: float) -> None:
        INJECTED.labels(rule.id, rule.action.type, _hook_service(hook)).inc()
        event = {"rule": rule.id, "name": rule.name, "action": rule.action.type,
                 "service": _hook_service(hook), "hook": hook, "process": self.process,
                 "request_id": probe.request_id, "time": now}
        for name in ("method", "path", "operation", "bucket", "key"):
            value = getattr(probe, name)
            if value:
                event[name] = value
        log.info("fault injected: rule %s (%s) %s on %s %s", rule.id, rule.name,
                 rule.action.type, hook, probe.path or probe.operation)
        if self.report is not None:
            try:
                self.report(event)
            except Exception:         # the fault is injected whether or not it is told
                log.exception("could not report fault event %s", event)

    def sleep(self, rule: Rule) -> None:
        """Wait out a delay action."""
        action = rule.action
        time.sleep(action.delay_min if action.delay_min == action.delay_max
                   else self._random.uniform(action.delay_min, action.delay_max))


def _fits_hook(rule: Rule, hook: str) -> bool:
    """Heartbeat and locate hooks take only their own pause; request hooks take the rest."""
    kind = rule.action.type
    if hook == "heartbeat":
        return kind == "pause_heartbeat"
    if hook == "locate":
        return kind == "pause_locate"
    return kind not in ("pause_heartbeat", "pause_locate")
