"""Test doubles shared by the functional tests.

:class:`DirectoryContentStore` keeps each content object as one file named by its hash, so
the object layer's conformance tests run in process without data servers, and bodies still
stream (to disk) instead of being held whole.
"""
from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from lib.errors import NotEnoughDataServers
from lib.objects.content import ContentReader, ContentStore, Digester, Expect, Staged


def _name(hash_: str) -> str:
    return base64.urlsafe_b64encode(base64.b64decode(hash_)).decode()


class _FileStaged(Staged):
    def __init__(self, store: "DirectoryContentStore", temp: Path, digests):
        self._store = store
        self._temp = temp
        self.digests = digests

    def commit(self) -> list[int]:
        self._settled = True
        os.replace(self._temp, self._store.path(self.hash))
        self._store.commits += 1
        return []

    def discard(self) -> None:
        self._settled = True
        self._temp.unlink(missing_ok=True)


class _FileReader(ContentReader):
    def __init__(self, path: Path, first: int, last: int):
        try:
            self._file = open(path, "rb")
        except FileNotFoundError:
            raise NotEnoughDataServers(f"content {path.name} is not stored") from None
        self._file.seek(first)
        self._left = last - first + 1

    def __iter__(self) -> Iterator[bytes]:
        while self._left > 0:
            chunk = self._file.read(min(65536, self._left))
            if not chunk:
                raise NotEnoughDataServers("content shorter than recorded")
            self._left -= len(chunk)
            yield chunk

    def close(self) -> None:
        self._file.close()


class DirectoryContentStore(ContentStore):
    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self.commits = 0
        self.opened: list[tuple[str, int, int]] = []
        self.removed: list[str] = []

    def path(self, hash_: str) -> Path:
        return self.root / _name(hash_)

    def stage(self, chunks: Iterable[bytes], expect: Expect) -> Staged:
        digester = Digester(chunks, expect)
        temp = self.root / "tmp" / uuid.uuid4().hex
        try:
            with open(temp, "wb") as out:
                for chunk in digester:
                    out.write(chunk)
            digests = digester.finish()
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return _FileStaged(self, temp, digests)

    def readable(self, hash_: str, size: int) -> bool:
        path = self.path(hash_)
        return path.exists() and path.stat().st_size == size

    def open(self, hash_: str, size: int, first: int, last: int) -> ContentReader:
        self.opened.append((hash_, first, last))
        return _FileReader(self.path(hash_), first, last)

    def remove(self, hash_: str) -> None:
        self.removed.append(hash_)
        self.path(hash_).unlink(missing_ok=True)

    def stored(self) -> set[str]:
        return {p.name for p in self.root.iterdir() if p.is_file()}
