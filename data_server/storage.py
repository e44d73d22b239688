"""A data server's disk: STORAGE_ROOT layout, shard file names, temp objects, atomic commit.

Layout (BOOK section 4)::

    STORAGE_ROOT/objects/<quoted hash>.<shard index>.<quoted shard hash>   committed shards
    STORAGE_ROOT/temp/<uuid>.json   {"Uuid", "Name": "<quoted hash>.<shard index>", "Size", ...}
    STORAGE_ROOT/temp/<uuid>.dat    bytes received so far
    STORAGE_ROOT/garbage/<name>     shards moved away (orphans, corrupt ones: ``.corrupt.<ts>``)

A temp object is written, fsynced, then published with an atomic ``os.replace`` into
``objects/``.  File names are split from the right, so dots in STORAGE_ROOT never matter
(BOOK W14), and quoted hashes contain no ``/`` (BOOK W27).  All path arithmetic lives here.
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import time
import uuid as uuidlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from lib.errors import BadRequest, CorruptShard, ObjectNotFound, SizeMismatch
from lib.hashing import b64_digest, quote_hash, unquote_hash, validate_hash
from lib.rs import layout
from lib.rs.params import ALL_SHARDS
from lib.streams import iter_chunks, rechunk

log = logging.getLogger(__name__)

#: Seconds without a write after which a temp object past its lifetime is abandoned.
IDLE_GRACE = 600.0
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclasses.dataclass(frozen=True)
class ShardName:
    """``<quoted hash>.<shard index>``: which shard of which object."""

    hash: str
    index: int

    @property
    def quoted(self) -> str:
        return f"{quote_hash(self.hash)}.{self.index}"

    @classmethod
    def parse(cls, text: str) -> "ShardName":
        """Accept ``<hash>.<i>`` with the hash quoted or not (routers decode ``%2F``)."""
        head, dot, index = text.rpartition(".")
        if not dot or not index.isdigit() or int(index) >= ALL_SHARDS:
            raise BadRequest(f"not <hash>.<shard index>: {text!r}")
        return cls(validate_hash(unquote_hash(head)), int(index))


@dataclasses.dataclass(frozen=True)
class StoredShard:
    name: ShardName
    shard_hash: str
    path: Path


@dataclasses.dataclass
class TempInfo:
    uuid: str
    name: str
    #: Declared shard size; None when the sender streams it chunked without knowing it.
    size: int | None
    created: float
    #: SHA-256 of the .dat, known when the whole shard arrived in one verified stream.
    shard_hash: str | None = None


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_object_file(filename: str) -> StoredShard | None:
    """``<quoted hash>.<i>.<quoted shard hash>`` -> parts, or None for a foreign file."""
    parts = filename.rsplit(".", 2)
    if len(parts) != 3:
        return None
    try:
        name = ShardName.parse(f"{parts[0]}.{parts[1]}")
        shard_hash = validate_hash(unquote_hash(parts[2]))
    except BadRequest:
        return None
    return StoredShard(name, shard_hash, Path(filename))


class Storage:
    """One STORAGE_ROOT.  Thread-safe through the file system: every temp has its own uuid."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.temp = self.root / "temp"
        self.garbage = self.root / "garbage"
        for directory in (self.objects, self.temp, self.garbage):
            directory.mkdir(parents=True, exist_ok=True)

    # -- committed shards --------------------------------------------------------------------
    def scan(self) -> Iterator[StoredShard]:
        """Every committed shard on disk (the index is rebuilt from this at start)."""
        with os.scandir(self.objects) as entries:
            for entry in entries:
                shard = parse_object_file(entry.name)
                if shard is None:
                    log.warning("ignoring foreign file %s", entry.path)
                    continue
                yield dataclasses.replace(shard, path=self.objects / entry.name)

    def shard_path(self, name: ShardName, shard_hash: str) -> Path:
        return self.objects / f"{name.quoted}.{quote_hash(shard_hash)}"

    def read_shard(self, path: Path, first: int, length: int) -> Iterator[bytes]:
        """Stream ``length`` bytes from ``first``, verifying each whole record on the way.

        A record whose CRC does not match raises CorruptShard before it is sent.
        """
        record = layout.full_record_size()
        aligned = first % record == 0
        with open(path, "rb") as f:
            f.seek(first)
            for chunk in iter_chunks(f, length, chunk_size=record if aligned else 1 << 18):
                if aligned:
                    layout.unseal(chunk)
                yield chunk

    def move_to_garbage(self, path: Path, suffix: str = "") -> Path:
        target = self.garbage / (path.name + suffix)
        os.replace(path, target)
        return target

    def quarantine(self, path: Path) -> Path | None:
        """Move a corrupt shard aside (kept for inspection, never served again)."""
        try:
            return self.move_to_garbage(path, f".corrupt.{int(time.time())}")
        except FileNotFoundError:
            return None

    def _owns_shard_file(self, path: Path) -> bool:
        """Whether ``path`` is a committed shard file directly in this root's objects/."""
        path = Path(path)
        return path.parent.resolve() == self.objects.resolve() and \
            parse_object_file(path.name) is not None and path.is_file()

    def corrupt_shard_file(self, path: Path) -> bool:
        """Fault injection: flip one byte in the middle of a shard file of this root, so
        its record's CRC fails.  False (nothing touched) for any other path."""
        if not self._owns_shard_file(path):
            return False
        with open(path, "r+b") as f:
            f.seek(0, os.SEEK_END)
            middle = f.tell() // 2
            f.seek(middle)
            byte = f.read(1)
            if not byte:
                return False
            f.seek(middle)
            f.write(bytes([byte[0] ^ 0xFF]))
        return True

    def delete_shard_file(self, path: Path) -> bool:
        """Fault injection: remove a shard file of this root (False for any other path)."""
        if not self._owns_shard_file(path):
            return False
        Path(path).unlink(missing_ok=True)
        return True

    # -- temp objects ------------------------------------------------------------------------
    def _info_path(self, uuid: str) -> Path:
        if not _UUID.match(uuid):
            raise ObjectNotFound(f"no temp object {uuid!r}")
        return self.temp / f"{uuid}.json"

    def _dat_path(self, uuid: str) -> Path:
        return self.temp / f"{uuid}.dat"

    def create_temp(self, name: ShardName, size: int | None) -> TempInfo:
        info = TempInfo(str(uuidlib.uuid4()), name.quoted, size, time.time())
        self._dat_path(info.uuid).touch()
        self._write_info(info)
        return info

    def _write_info(self, info: TempInfo) -> None:
        path = self._info_path(info.uuid)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"Uuid": info.uuid, "Name": info.name, "Size": info.size,
                                   "Created": info.created, "ShardHash": info.shard_hash}))
        os.replace(tmp, path)

    def temp_info(self, uuid: str) -> TempInfo:
        try:
            raw = json.loads(self._info_path(uuid).read_text())
        except FileNotFoundError:
            raise ObjectNotFound(f"no temp object {uuid}") from None
        return TempInfo(raw["Uuid"], raw["Name"], raw["Size"], raw["Created"],
                        raw.get("ShardHash"))

    def temp_size(self, uuid: str) -> int:
        self.temp_info(uuid)
        return self._dat_path(uuid).stat().st_size

    def write_whole_temp(self, info: TempInfo, chunks: Iterable[bytes]) -> None:
        """Write a whole shard from one stream: verify its records, hash it, fsync it.

        Any failure removes the temp object, so a broken upload leaves nothing behind.
        """
        try:
            info.size, info.shard_hash = self._write_verified(
                self._dat_path(info.uuid), info.size, chunks)
            self._write_info(info)
        except BaseException:
            self.delete_temp(info.uuid)
            raise

    @staticmethod
    def _write_verified(path: Path, size: int | None,
                        chunks: Iterable[bytes]) -> tuple[int, str]:
        """Write records to ``path``, checking each CRC and the total size, then fsync.

        :returns: (bytes written, base64 SHA-256 of them).
        """
        sha = hashlib.sha256()
        got = 0
        with open(path, "wb") as f:
            for record in rechunk(chunks, layout.full_record_size()):
                got += len(record)
                if size is not None and got > size:
                    raise SizeMismatch(f"shard body exceeds the declared {size} bytes")
                layout.unseal(record)
                sha.update(record)
                f.write(record)
            if size is not None and got != size:
                raise SizeMismatch(f"shard body has {got} of {size} bytes")
            f.flush()
            os.fsync(f.fileno())
        return got, b64_digest(sha)

    def store_shard(self, name: ShardName, size: int, chunks: Iterable[bytes]) -> StoredShard:
        """Write, verify, fsync and publish a whole shard at once (no temp record kept).

        For short objects the api server has checked the digest before sending, so the
        two-phase temp object would only add round trips.
        """
        dat = self._dat_path(str(uuidlib.uuid4()))
        try:
            _, shard_hash = self._write_verified(dat, size, chunks)
            target = self.shard_path(name, shard_hash)
            os.replace(dat, target)
        except BaseException:
            dat.unlink(missing_ok=True)
            raise
        fsync_dir(self.objects)
        return StoredShard(name, shard_hash, target)

    def append_temp(self, uuid: str, chunks: Iterable[bytes]) -> int:
        """Append to a temp object (resumable uploads); never past its declared size."""
        info = self.temp_info(uuid)
        if info.size is None:
            raise BadRequest(f"temp object {uuid} has no declared size to append to")
        path = self._dat_path(uuid)
        with open(path, "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)     # one append at a time per temp object (W26)
            size = f.seek(0, os.SEEK_END)
            for chunk in chunks:
                size += len(chunk)
                if size > info.size:
                    f.close()
                    self.delete_temp(uuid)
                    raise SizeMismatch(f"temp object {uuid} exceeds {info.size} bytes")
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        return size

    def commit_temp(self, uuid: str, object_hash: str | None = None) -> StoredShard:
        """Publish a complete temp object into ``objects/`` (atomic rename, then dir fsync),
        as a shard of ``object_hash`` when given instead of the object it was created for."""
        info = self.temp_info(uuid)
        dat = self._dat_path(uuid)
        size = dat.stat().st_size
        if info.size is not None and size != info.size:
            self.delete_temp(uuid)
            raise SizeMismatch(f"temp object {uuid} has {size} of {info.size} bytes")
        shard_hash = info.shard_hash or self._verify_file(dat, uuid)
        name = ShardName.parse(info.name)
        if object_hash is not None:
            name = ShardName(object_hash, name.index)
        target = self.shard_path(name, shard_hash)
        os.replace(dat, target)
        self._info_path(uuid).unlink(missing_ok=True)
        fsync_dir(self.objects)
        return StoredShard(name, shard_hash, target)

    def _verify_file(self, dat: Path, uuid: str) -> str:
        sha = hashlib.sha256()
        with open(dat, "rb") as f:
            for record in layout.iter_records(f):
                try:
                    layout.unseal(record)
                except CorruptShard:
                    self.delete_temp(uuid)
                    raise
                sha.update(record)
        return b64_digest(sha)

    def delete_temp(self, uuid: str) -> None:
        self._info_path(uuid).unlink(missing_ok=True)
        self._dat_path(uuid).unlink(missing_ok=True)

    def expire_temps(self, ttl: float, now: float | None = None) -> int:
        """Remove temp objects created more than ``ttl`` seconds ago (an upload token lives
        that long) that no write touched for ``min(ttl, IDLE_GRACE)`` seconds (a long
        streaming upload is still writing); returns how many.

        So an abandoned upload goes soon after its token expires, not a whole ``ttl`` after
        its last write.  A ``.dat`` without its ``.json`` (a one-request store cut short)
        counts as created when it was last written.
        """
        now = time.time() if now is None else now
        idle = min(ttl, IDLE_GRACE)
        removed = 0
        for path in self.temp.glob("*.dat"):
            try:
                written = path.stat().st_mtime
            except FileNotFoundError:
                continue
            try:
                created = self.temp_info(path.stem).created
            except (ObjectNotFound, ValueError, KeyError):
                created = written
            if now - created > ttl and now - written > idle:
                self.delete_temp(path.stem)
                removed += 1
        return removed

