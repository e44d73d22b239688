"""``/health``: 200 when every dependency of a process answers, else 503 naming the ones that
do not.

Each check is a callable whose result goes into the JSON answer under its name (the metadata
backend's description, True for a connected broker...); one that raises, or returns False or
None, failed, and its name is listed in ``failed``.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def evaluate(checks: dict[str, Callable[[], object]], fields: dict) -> tuple[int, dict]:
    """(status, JSON body): ``fields``, each check's result, ``status`` and ``failed``."""
    body = dict(fields)
    failed = []
    for name, check in checks.items():
        try:
            result = check()
        except Exception as exc:                  # noqa: BLE001 - a failed check is an answer
            result = None
            body[name] = f"error: {exc}"
        else:
            body[name] = result
        if result is None or result is False:
            failed.append(name)
    if failed:
        log.warning("health: %s failed", ", ".join(failed))
    body["status"] = "unavailable" if failed else "ok"
    body["failed"] = failed
    return (503 if failed else 200), body


def writable(directory: Path) -> bool:
    """Whether a file can be created, written and removed in ``directory`` now (a read-only
    remount or a vanished disk fails here, where ``os.access`` would not notice)."""
    probe = directory / f".health.{os.getpid()}.{threading.get_ident()}"
    with open(probe, "wb") as file:
        file.write(b"ok")
    probe.unlink()
    return True
