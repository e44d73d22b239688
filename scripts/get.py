"""``python -m scripts.get http://<api>/objects/<name> [OUT]``: download an object, resumably.

Downloads into ``OUT.part`` (OUT defaults to the object name's last path segment), showing a
progress bar on stderr.  The first response's ``Version`` and ``Digest`` are kept beside it
(``OUT.part.json``); every later request asks for that version with ``Range: bytes=<bytes
already on disk>-``, so a download broken by the network, or a command interrupted and run
again, goes on exactly where it stopped.  At the end the file's SHA-256 must equal the
``Digest`` the api server sent; only then is ``OUT.part`` renamed to ``OUT``.  Memory use is
one chunk (1 MiB).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.parse
from pathlib import Path

from scripts.progress import ProgressBar
from scripts.transfer import (CHUNK, Backoff, HTTPStatusError, TransferError, check,
                              object_name, parse_bytes, request, run_transfer, split_url)


def log(message: str) -> None:
    print(f"get: {message}", file=sys.stderr, flush=True)


class Downloader:
    def __init__(self, url: str, out: Path, retries: int, rate: int | None = None):
        self.netloc, self.path = split_url(url)
        self.rate = rate
        self.out = out
        self.part = out.with_name(out.name + ".part")
        self.meta_file = out.with_name(out.name + ".part.json")
        self.backoff = Backoff(retries)

    def _meta(self) -> dict:
        try:
            meta = json.loads(self.meta_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return meta if meta.get("path") == self.path and self.part.exists() else {}

    def _versioned_path(self, version: str) -> str:
        parts = urllib.parse.urlsplit(self.path)
        query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query) if k != "version"]
        query.append(("version", version))
        return f"{parts.path}?{urllib.parse.urlencode(query)}"

    def run(self) -> str:
        meta = self._meta()
        if meta:
            log(f"resuming at byte {self.part.stat().st_size} of {meta['size']}")
        else:
            self.part.unlink(missing_ok=True)
        bar = None
        while True:
            have = self.part.stat().st_size if self.part.exists() else 0
            try:
                if meta and have >= meta["size"]:
                    break
                headers = {"Range": f"bytes={have}-"} if meta else {}
                path = self._versioned_path(meta["version"]) if meta else self.path
                response, connection = request(self.netloc, "GET", path, headers, stream=True)
                try:
                    if not meta:
                        check(response.status, b"" if response.status == 200 else
                              response.read(), 200)
                        meta = self._start(response)
                    else:
                        check(response.status, b"" if response.status == 206 else
                              response.read(), 206)
                    if bar is None:
                        bar = ProgressBar(meta["size"], "download", start=have)
                    if not self._copy(response, bar) and have < meta["size"]:
                        raise TransferError("the response ended before any byte arrived")
                finally:
                    connection.close()
            except (TransferError, OSError, http.client.HTTPException) as exc:
                self.backoff.failed(exc if isinstance(exc, TransferError)
                                    else TransferError(repr(exc)), log)
        if bar is not None:
            bar.close()
        return self._finish(meta)

    def _start(self, response) -> dict:
        digest = (response.getheader("Digest") or "").partition("SHA-256=")[2]
        if not digest or not response.getheader("Version"):
            raise HTTPStatusError(response.status, "the server sent no Digest or Version")
        meta = {"path": self.path, "version": response.getheader("Version"),
                "digest": digest, "size": int(response.getheader("Content-Length"))}
        self.part.write_bytes(b"")
        aside = self.meta_file.with_suffix(".tmp")
        aside.write_text(json.dumps(meta))
        os.replace(aside, self.meta_file)
        return meta

    def _copy(self, response, bar: ProgressBar) -> int:
        """Append the body to the .part file (flushed as it comes: a broken download keeps
        every byte that arrived); the bytes written."""
        written = 0
        began = time.monotonic()
        with open(self.part, "ab") as f:
            try:
                while chunk := response.read(min(CHUNK, self.rate or CHUNK)):
                    f.write(chunk)
                    f.flush()
                    written += len(chunk)
                    bar.advance(len(chunk))
                    self.backoff.progress()
                    if self.rate:
                        ahead = written / self.rate - (time.monotonic() - began)
                        if ahead > 0:
                            time.sleep(ahead)
            finally:
                f.flush()
                os.fsync(f.fileno())
        return written

    def _finish(self, meta: dict) -> str:
        sha = hashlib.sha256()
        bar = ProgressBar(meta["size"], "verify  ")
        with open(self.part, "rb") as f:
            while chunk := f.read(CHUNK):
                sha.update(chunk)
                bar.advance(len(chunk))
        bar.close()
        digest = base64.b64encode(sha.digest()).decode()
        if digest != meta["digest"] or self.part.stat().st_size != meta["size"]:
            self.part.unlink(missing_ok=True)
            self.meta_file.unlink(missing_ok=True)
            raise HTTPStatusError(0, f"downloaded bytes hash to SHA-256={digest}, the server "
                                     f"said {meta['digest']}: removed, run again")
        os.replace(self.part, self.out)
        self.meta_file.unlink(missing_ok=True)
        return meta["version"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.get", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="http://<api server>/objects/<name>[?version=<n>]")
    parser.add_argument("out", type=Path, nargs="?",
                        help="where to write it (default: the name's last segment)")
    parser.add_argument("--limit-rate", type=parse_bytes, default=None,
                        help="at most this many bytes per second (e.g. 10M)")
    parser.add_argument("--retries", type=int, default=8,
                        help="failed attempts in a row before giving up (default 8)")
    args = parser.parse_args(argv)
    name = object_name(args.url)
    out = args.out or Path(name.rstrip("/").rsplit("/", 1)[-1] or "object")
    version, status = run_transfer(
        Downloader(args.url, out, args.retries, args.limit_rate).run, log)
    if version is None:
        return status
    print(f"{out} ({name} version {version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
