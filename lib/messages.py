"""Inter-server messages on RabbitMQ and their JSON wire form.

Book-compatible where the book defines the message: a heartbeat is the JSON string of the data
server's address, a locate request the JSON string of the quoted hash.  We add what the book
lacks: a departure notice, a ping that asks data servers to announce themselves at once, and a
locate reply that every data server sends (with the shard indexes it holds, possibly none), so
a locate can finish as soon as every live data server has answered (BOOK W1).
"""
from __future__ import annotations

import dataclasses
import json
import re

#: ``host:port`` as a data server advertises it (a name, IPv4, or [IPv6]).
_ADDRESS = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
                      r":(?:[1-9][0-9]{0,4})$")


class MalformedMessage(ValueError):
    """A message body we do not understand; it is logged and dropped."""


def _address(value: object, body: bytes) -> str:
    if not isinstance(value, str) or not _ADDRESS.match(value) or int(
            value.rpartition(":")[2]) > 65535:
        raise MalformedMessage(f"not a host:port address: {body[:100]!r}")
    return value


def _load(body: bytes):
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedMessage(f"not JSON: {body[:100]!r}") from None


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """A data server is alive (``leaving=False``) or stopping cleanly (``leaving=True``)."""

    addr: str
    leaving: bool = False

    def to_json(self) -> bytes:
        if self.leaving:
            return json.dumps({"Addr": self.addr, "Leaving": True}).encode()
        return json.dumps(self.addr).encode()

    @classmethod
    def from_json(cls, body: bytes) -> "Heartbeat":
        value = _load(body)
        if isinstance(value, str) and value:
            return cls(_address(value, body))
        if isinstance(value, dict) and isinstance(value.get("Addr"), str):
            return cls(_address(value["Addr"], body), bool(value.get("Leaving")))
        raise MalformedMessage(f"not a heartbeat: {body[:100]!r}")


@dataclasses.dataclass(frozen=True)
class LocateRequest:
    """Which shards of this object do you hold?  ``ping`` asks only for a heartbeat."""

    quoted_hash: str = ""
    ping: bool = False

    def to_json(self) -> bytes:
        if self.ping:
            return json.dumps({"Ping": True}).encode()
        return json.dumps(self.quoted_hash).encode()

    @classmethod
    def from_json(cls, body: bytes) -> "LocateRequest":
        value = _load(body)
        if isinstance(value, str) and value:
            return cls(value)
        if isinstance(value, dict) and value.get("Ping") is True:
            return cls(ping=True)
        raise MalformedMessage(f"not a locate request: {body[:100]!r}")


@dataclasses.dataclass(frozen=True)
class LocateReply:
    """The shard indexes ``addr`` holds of the located object (empty: none)."""

    addr: str
    ids: tuple[int, ...] = ()

    def to_json(self) -> bytes:
        return json.dumps({"Addr": self.addr, "Ids": list(self.ids)}).encode()

    @classmethod
    def from_json(cls, body: bytes) -> "LocateReply":
        value = _load(body)
        if not isinstance(value, dict) or not isinstance(value.get("Addr"), str):
            raise MalformedMessage(f"not a locate reply: {body[:100]!r}")
        ids = value.get("Ids")
        if ids is None and "Id" in value:          # the book's one-shard reply
            ids = [value["Id"]]
        if not isinstance(ids, list) or not all(type(i) is int and i >= 0 for i in ids):
            raise MalformedMessage(f"bad shard ids in locate reply: {body[:100]!r}")
        return cls(_address(value["Addr"], body), tuple(ids))
