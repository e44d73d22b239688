"""The cluster secret that signs resumable-upload tokens, shared by every api server.

A client may POST an upload on one api server and PUT its pieces on another, so all api
servers must verify each other's tokens.  ``CLUSTER_SECRET`` sets the secret explicitly (a
multi-host cluster must set it on every api server).  Without it, the secret is the file
``cluster.secret`` beside ``METADATA_DB``: api servers that share the SQLite metadata (one
host) share it too.  The first process to need it creates it, once, readable by its owner
only, atomically (written aside, then hard-linked into place: a concurrent reader never sees
a half-written file, and two creators cannot both win).
"""
from __future__ import annotations

import functools
import logging
import os
import secrets
from pathlib import Path

from lib.config import Config

log = logging.getLogger(__name__)

FILE_NAME = "cluster.secret"


def cluster_secret(config: Config) -> bytes:
    """The secret bytes for ``config`` (the environment's, else the shared file's)."""
    if config.cluster_secret:
        return config.cluster_secret.encode()
    return _file_secret(Path(config.metadata_db).resolve().parent / FILE_NAME)


@functools.lru_cache(maxsize=None)
def _file_secret(path: Path) -> bytes:
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(aside, path)
            log.info("created the cluster secret %s", path)
        except FileExistsError:
            pass                          # another process won the race: use its secret
    finally:
        aside.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> bytes:
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise ValueError(f"{path} holds no usable secret (at least 32 characters)")
    return secret.encode()
