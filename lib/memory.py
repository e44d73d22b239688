"""Give the memory an api worker's threads freed back to the system (glibc's allocator).

An api worker moves every object through 1 MiB blocks and 256 KiB records, allocated and
freed on dozens of threads (gunicorn's and the shard senders').  glibc's malloc serves big
buffers from per-thread arenas (up to 8 per core) once its adaptive mmap threshold has risen
past them, and keeps what is freed there.  Measured with ``scripts/soak.py`` and tracemalloc
(issue 11): Python's own live allocations stayed at 3-4 MiB (20 MiB at peak) while a worker's
RSS climbed from 41 to about 90 MiB and stayed: not a leak, memory glibc kept.  So an api
worker caps its arenas at :data:`ARENAS` and, every :data:`TRIM_INTERVAL` seconds, asks glibc
to return the free pages inside them (``malloc_trim``, which walks the free lists: a
millisecond or so).  Elsewhere than glibc (no ``mallopt``), both are no-ops.
"""
from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

#: glibc's mallopt parameter number for the arena cap (malloc.h).
_M_ARENA_MAX = -8
ARENAS = 2
#: Seconds between two returns of free memory.
TRIM_INTERVAL = 10.0


def _libc():
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def limit_arenas() -> None:
    """At most :data:`ARENAS` malloc arenas from now on (call before starting threads)."""
    if _LIBC is not None and not _LIBC.mallopt(_M_ARENA_MAX, ARENAS):
        log.warning("mallopt(M_ARENA_MAX, %d) failed", ARENAS)


def trim() -> None:
    """Return the free pages of every arena to the system."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
