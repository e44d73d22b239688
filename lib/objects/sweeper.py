"""The object layer's housekeeping: collect content no version references any more, and
end multipart uploads left idle.

Versions reference contents (``contents.refs``); the last reference going only dates the
content (``unreferenced_since``), because a concurrent PUT of the same bytes may be about to
share it.  After ``gc_grace`` seconds the sweeper *claims* it (one atomic delete of the record
that fails if anything referenced it meanwhile) and only then has its shards collected, so
collection never races a writer: one that shares claimed content gets ContentGone (503,
send again).  Uploads idle past ``multipart_ttl`` are aborted (their parts then age the same
way); completed ones are forgotten after the same time (their repeat-Complete window).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from lib.metadata import MetadataStore

log = logging.getLogger(__name__)

#: Records handled per metadata query.
PAGE = 500


class Sweeper:
    def __init__(self, metadata: MetadataStore, collect: Callable[[str], object],
                 gc_grace: float, multipart_ttl: float):
        """:param collect: have the shards of one claimed content hash collected."""
        self._metadata = metadata
        self._collect = collect
        self._gc_grace = gc_grace
        self._multipart_ttl = multipart_ttl

    def sweep(self) -> tuple[int, int]:
        """One pass; returns (contents collected, uploads ended)."""
        ended = 0
        for upload in self._metadata.idle_uploads(self._multipart_ttl, limit=PAGE):
            if upload.completed is not None:
                self._metadata.forget_upload(upload.upload_id)
            elif self._metadata.abort_upload(upload.upload_id):
                log.info("aborted multipart upload %s of %s/%r: idle for %.0fs",
                         upload.upload_id, upload.bucket, upload.key, self._multipart_ttl)
            ended += 1
        collected = 0
        for content in self._metadata.unreferenced(self._gc_grace, limit=PAGE):
            if self._metadata.claim_unreferenced(content.hash, self._gc_grace):
                self._collect(content.hash)
                collected += 1
        if collected or ended:
            log.info("sweep: %d unreferenced content(s) collected, %d upload(s) ended",
                     collected, ended)
        return collected, ended

    def run(self, interval: float, stop: threading.Event) -> None:
        """Sweep every ``interval`` seconds until ``stop``; a failing pass is logged."""
        while not stop.wait(interval):
            try:
                while sum(self.sweep()) >= PAGE and not stop.is_set():
                    pass
            except Exception:
                log.exception("sweep failed; trying again in %.0fs", interval)
