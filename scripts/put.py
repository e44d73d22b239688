"""``python -m scripts.put FILE http://<api>/objects/<name>``: upload a file, resumably.

Computes the file's SHA-256 for you, starts a resumable upload (``POST /objects/<name>`` with
``Digest`` and ``Size``), and sends the file in pieces (``PUT /temp/<token>`` with
``Range: bytes=<offset>-``), showing a progress bar on stderr.  When a piece fails (network,
api server restart, data server trouble) it asks the upload's offset (``HEAD``) and goes on
from there.  When the command itself is interrupted (Ctrl-C, kill, reboot), running the same
command again resumes: the upload's token and the file's digest are kept in a small state
file (``~/.cache/tessera/uploads/``, or ``--state-dir``) until the upload completes.  Memory
use is one chunk (1 MiB).  Prints ``<name> version <n>`` when the object is stored.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from scripts.progress import ProgressBar
from scripts.transfer import (CHUNK, Backoff, HTTPStatusError, TransferError, check,
                              object_name, parse_bytes, request, run_transfer, split_url)


def log(message: str) -> None:
    print(f"put: {message}", file=sys.stderr, flush=True)


def file_digest(path: Path, size: int) -> str:
    sha = hashlib.sha256()
    bar = ProgressBar(size, "hashing ")
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            bar.advance(len(chunk))
    bar.close()
    return base64.b64encode(sha.digest()).decode()


class State:
    """The resumable part of an upload, kept on disk between runs.

    Keyed by the file and the object's path, not the api server: a token is good on every
    api server of its cluster, so a run may resume through another one.
    """

    def __init__(self, directory: Path, path: Path, object_path: str, stat: os.stat_result):
        key = hashlib.sha256(f"{path.resolve()}\n{object_path}".encode()).hexdigest()[:32]
        self.file = directory / f"{key}.json"
        self.identity = {"path": str(path.resolve()), "object": object_path,
                         "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def load(self) -> dict:
        try:
            saved = json.loads(self.file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        if any(saved.get(k) != v for k, v in self.identity.items()):
            return {}                     # another file, or this one changed: start afresh
        return saved

    def save(self, **values) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        aside = self.file.with_suffix(".tmp")
        aside.write_text(json.dumps({**self.identity, **values}))
        os.replace(aside, self.file)

    def forget(self) -> None:
        self.file.unlink(missing_ok=True)


class Uploader:
    def __init__(self, path: Path, url: str, piece: int, rate: int | None, retries: int,
                 state_dir: Path):
        self.path = path
        self.netloc, self.object_path = split_url(url)
        self.stat = path.stat()
        self.size = self.stat.st_size
        self.piece = piece
        self.rate = rate
        self.backoff = Backoff(retries)
        self.state = State(state_dir, path, self.object_path, self.stat)

    def run(self) -> str:
        saved = self.state.load()
        digest = saved.get("digest") or file_digest(self.path, self.size)
        location = saved.get("location")
        if location:
            log(f"resuming the upload started earlier ({self.state.file})")
        while True:
            if location is None:
                version = self._start(digest)
                if version is not None:
                    return version
                location = self.state.load()["location"]
            try:
                return self._send(location)
            except HTTPStatusError as exc:
                if exc.status not in (403, 404):
                    if exc.status == 400:
                        self.state.forget()       # refused (digest mismatch): nothing kept
                    raise
                log(f"the upload is gone ({exc}); starting a new one")
                self.state.forget()
                location = None

    def _start(self, digest: str) -> str | None:
        """POST the upload; the version when the content was stored already (dedup)."""
        headers = {"Digest": f"SHA-256={digest}", "Size": str(self.size)}
        while True:
            try:
                status, response, data = request(self.netloc, "POST", self.object_path,
                                                  headers)
                check(status, data, 200, 201)
                break
            except TransferError as exc:
                self.backoff.failed(exc, log)
        if status == 200:
            log("the server already holds this content: stored without uploading")
            return response["Version"]
        self.state.save(digest=digest, location=response["Location"])
        return None

    def _offset(self, location: str) -> int:
        while True:
            try:
                status, response, data = request(self.netloc, "HEAD", location)
                check(status, data, 200)
                return int(response["Content-Length"])
            except TransferError as exc:
                self.backoff.failed(exc, log)

    def _send(self, location: str) -> str:
        offset = self._offset(location)
        if offset:
            log(f"resuming at byte {offset} of {self.size}")
        bar = ProgressBar(self.size, "upload  ", start=offset)
        try:
            while True:
                end = min(self.size, offset + self.piece)
                try:
                    status, response, data = request(
                        self.netloc, "PUT", location, {"Range": f"bytes={offset}-"},
                        self._read(offset, end, bar), length=end - offset)
                    if status == 416 and "Upload-Offset" in response:
                        offset = int(response["Upload-Offset"])
                        bar.update(offset)
                        continue
                    check(status, data, 200)
                except TransferError as exc:
                    self.backoff.failed(exc, log)
                    offset = self._offset(location)
                    bar.update(offset)
                    continue
                self.backoff.progress()
                offset = int(response.get("Upload-Offset", end))
                bar.update(offset)
                if response.get("Version"):
                    self.state.forget()
                    return response["Version"]
                if offset >= self.size:       # complete earlier; its answer was lost
                    self.state.forget()
                    return "(stored earlier)"
        finally:
            bar.close()

    def _read(self, start: int, end: int, bar: ProgressBar):
        began = time.monotonic()
        with open(self.path, "rb") as f:
            f.seek(start)
            position = start
            while position < end:
                chunk = f.read(min(CHUNK, end - position, self.rate or CHUNK))
                if not chunk:
                    raise SystemExit(f"{self.path} shrank while it was being uploaded")
                yield chunk
                position += len(chunk)
                bar.update(position)
                if self.rate:
                    ahead = (position - start) / self.rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.put", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path)
    parser.add_argument("url", help="http://<api server>/objects/<name>")
    parser.add_argument("--piece-size", type=parse_bytes, default=None,
                        help="bytes sent per PUT (default: the whole rest of the file, which "
                             "spares the server a read-back); any size works")
    parser.add_argument("--limit-rate", type=parse_bytes, default=None,
                        help="at most this many bytes per second (e.g. 10M)")
    parser.add_argument("--retries", type=int, default=8,
                        help="failed attempts in a row before giving up (default 8)")
    parser.add_argument("--state-dir", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "tessera" / "uploads")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        parser.error(f"{args.file} is not a file")
    piece = max(args.piece_size, 1) if args.piece_size else max(args.file.stat().st_size, 1)
    uploader = Uploader(args.file, args.url, piece, args.limit_rate,
                        args.retries, args.state_dir)
    version, status = run_transfer(uploader.run, log)
    if version is None:
        return status
    print(f"{object_name(args.url)} version {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
