"""The api side's client for data servers' /temp, /tail, /objects and /garbage.

Calls go through :mod:`lib.httpclient` (one pool of keep-alive connections per process; a
small GET makes four calls, a small PUT six, so each call's CPU counts).  Every call has a
timeout and a Cluster-Mac (``lib/clustermac.py``: data servers answer cluster members only);
every shard travels in one streaming request with Content-Length (BOOK W10); every
status is checked and turned into a DataServerError or ObjectNotFound (BOOK W9).  A streamed
body whose own source fails raises :class:`lib.httpclient.BodyFailed`, never a
DataServerError: the data server is not to blame for it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Iterator

from lib.clustermac import ClusterMac
from lib.errors import (Conflict, DataServerError, InvalidHash, ObjectNotFound,
                        ObjectStoreError, Refused)
from lib.hashing import quote_hash, validate_hash
from lib.httpclient import ConnectionPool, ProtocolError, Response
from lib.streams import read_exact

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """One shard file: its object's hash, its shard index, seconds since it was written."""

    hash: str
    index: int
    age: float


class AppendConflict(Conflict):
    """The temp object did not hold the expected number of bytes: nothing was appended."""

    def __init__(self, address: str, size: int):
        super().__init__(f"{address}: temp object holds {size} bytes")
        self.size = size


def _int(response: Response, header: str, address: str) -> int:
    try:
        return int(response.headers[header])
    except (KeyError, ValueError):
        raise DataServerError(f"no valid {header} header", address) from None

#: Idle keep-alive connections kept per data server.
_POOL_SIZE = 64


class ShardResponse:
    """A streaming GET of (part of) a shard; read it with :meth:`read` and close it."""

    def __init__(self, response: Response, address: str, length: int):
        self._response = response
        self._left = length
        self.address = address

    def read(self, size: int) -> bytes:
        try:
            data = read_exact(self._response, size)
        except (ProtocolError, OSError) as exc:
            raise DataServerError(f"read failed: {exc!r}", self.address) from exc
        self._left -= len(data)
        return data

    def close(self) -> None:
        """Return the connection to the pool when the body was read to its end."""
        if self._left == 0:
            self._response.release_conn()
        else:
            self._response.close()


class DataServerClient:
    """Talks to data servers, signing every request with ``mac``; thread-safe (the
    connection pool is)."""

    def __init__(self, timeout: float, mac: ClusterMac):
        self.timeout = timeout
        self._mac = mac
        self._pool = ConnectionPool(timeout, max_idle=_POOL_SIZE)

    @classmethod
    def from_config(cls, config) -> "DataServerClient":
        return cls(config.http_timeout, ClusterMac.from_config(config))

    def _request(self, method: str, address: str, path: str, *, body=None,
                 headers: dict | None = None, stream: bool = False,
                 chunked: bool = False) -> Response:
        """Send a request; unless ``stream``, read its whole (short) answer too."""
        try:
            response = self._pool.request(method, address, path, body=body,
                                          headers=self._mac.headers(method, path, headers),
                                          chunked=chunked)
            if not stream:
                response.data
            return response
        except (ProtocolError, OSError) as exc:
            raise DataServerError(f"{method} {path}: {exc!r}", address) from exc

    def _call(self, method: str, address: str, path: str, body: bytes | None,
              headers: dict) -> tuple:
        """One signed request for :meth:`ConnectionPool.request_many`."""
        return method, address, path, body, self._mac.headers(method, path, headers)

    @staticmethod
    def _check(response: Response, address: str, what: str) -> Response:
        if response.status in (200, 206):
            return response
        text = response.data[:200].decode(errors="replace").strip()
        response.release_conn()
        if response.status == 404:
            raise ObjectNotFound(f"{address}: {what}: 404 {text}")
        error = Refused if 400 <= response.status < 500 else DataServerError
        raise error(f"{what}: {response.status} {text}", address, response.status)

    def _outcome(self, call: tuple, response: Response | Exception, stream: bool,
                 then: Callable[[Response], object]):
        """What one of :meth:`ConnectionPool.request_many`'s answers means: ``then(response)``
        for a 2xx, else the ObjectStoreError it stands for (returned, not raised)."""
        method, address, path = call[:3]
        try:
            try:
                if isinstance(response, Exception):
                    raise response
                if not stream:
                    response.data
            except (ProtocolError, OSError) as exc:
                raise DataServerError(f"{method} {path}: {exc!r}", address) from exc
            return then(self._check(response, address, f"{method} {path}"))
        except ObjectStoreError as exc:
            return exc

    # -- temp objects ------------------------------------------------------------------------
    def post_temp(self, address: str, quoted_name: str, size: int | None,
                  body: Iterable[bytes] | None = None) -> str:
        """Create a temp object for shard ``quoted_name``, sending its bytes when given.

        ``size`` None streams the body chunked (the sender does not know its length).
        :returns: the temp object's uuid.
        """
        headers = {}
        if size is not None:
            headers["Size"] = str(size)
            if body is not None:
                headers["Content-Length"] = str(size)
        response = self._request("POST", address, f"/temp/{quoted_name}", body=body,
                                 headers=headers, chunked=body is not None and size is None)
        uuid = self._check(response, address, f"POST /temp/{quoted_name}").data.decode().strip()
        if len(uuid) != 36:
            raise DataServerError(f"POST /temp/{quoted_name}: bad uuid {uuid[:60]!r}", address)
        return uuid

    def patch_temp(self, address: str, uuid: str, body: Iterable[bytes], length: int) -> None:
        response = self._request("PATCH", address, f"/temp/{uuid}", body=body,
                                 headers={"Content-Length": str(length)})
        self._check(response, address, f"PATCH /temp/{uuid}")

    def head_temp(self, address: str, uuid: str) -> int:
        response = self._request("HEAD", address, f"/temp/{uuid}")
        self._check(response, address, f"HEAD /temp/{uuid}")
        return int(response.headers.get("Content-Length", "0"))

    def append_temp(self, address: str, uuid: str, offset: int,
                    records: Iterable[bytes]) -> int:
        """Append whole records at ``offset`` (streamed, chunked); the temp's new size.

        :raises AppendConflict: the temp object does not hold exactly ``offset`` bytes.
        """
        response = self._request("PATCH", address, f"/temp/{uuid}", body=records,
                                 headers={"Temp-Offset": str(offset)}, chunked=True)
        if response.status == 409:
            size = int(response.headers.get("Temp-Size", "-1"))
            response.release_conn()
            raise AppendConflict(address, size)
        self._check(response, address, f"PATCH /temp/{uuid}")
        return _int(response, "Temp-Size", address)

    def open_temp(self, address: str, uuid: str) -> ShardResponse:
        """Stream a whole temp object back."""
        response = self._request("GET", address, f"/temp/{uuid}", stream=True)
        self._check(response, address, f"GET /temp/{uuid}")
        return ShardResponse(response, address, _int(response, "Content-Length", address))

    # -- tails: the partial last block of a resumable upload (data_server/tails.py) -------------
    def put_tail(self, address: str, uuid: str, offset: int, data: bytes) -> None:
        response = self._request("PUT", address, f"/tail/{uuid}", body=data,
                                 headers={"Tail-Offset": str(offset)})
        self._check(response, address, f"PUT /tail/{uuid}")

    def tail_info(self, address: str, uuid: str) -> tuple[int, int] | None:
        """(object offset, length) of the tail kept with temp ``uuid``, None if there is none."""
        response = self._request("HEAD", address, f"/tail/{uuid}")
        try:
            self._check(response, address, f"HEAD /tail/{uuid}")
        except ObjectNotFound:
            return None
        return _int(response, "Tail-Offset", address), _int(response, "Content-Length", address)

    def get_tail(self, address: str, uuid: str) -> tuple[int, bytes]:
        response = self._request("GET", address, f"/tail/{uuid}")
        self._check(response, address, f"GET /tail/{uuid}")
        return _int(response, "Tail-Offset", address), response.data

    def delete_tail(self, address: str, uuid: str) -> None:
        response = self._request("DELETE", address, f"/tail/{uuid}")
        self._check(response, address, f"DELETE /tail/{uuid}")

    def put_shard(self, address: str, quoted_name: str, data: bytes) -> str:
        """Store and commit one whole (short) shard in one request; returns its shard hash."""
        result = self.put_shards([(address, quoted_name, data)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def put_shards(self, shards: list[tuple[str, str, bytes]]) -> list[str | ObjectStoreError]:
        """Store and commit whole (short) shards, ``(address, quoted name, bytes)`` each, one
        request a shard, all sent before any answer is read; the shard hash of each, or the
        error it met."""
        calls = [self._call("POST", address, f"/temp/{name}?commit=1", data,
                            {"Size": str(len(data))}) for address, name, data in shards]
        return [self._outcome(call, response, stream=False,
                              then=lambda r: r.headers.get("Shard-Hash", ""))
                for call, response in zip(calls, self._pool.request_many(calls))]

    def commit_temp(self, address: str, uuid: str, object_hash: str | None = None) -> str:
        """Publish the temp object; returns the shard hash the data server computed.

        :param object_hash: publish it as a shard of this object instead of the one it was
            created for (content whose hash was known only after its body was sent).
        """
        headers = {"Object-Hash": object_hash} if object_hash else None
        response = self._request("PUT", address, f"/temp/{uuid}", headers=headers)
        return self._check(response, address, f"PUT /temp/{uuid}").headers.get("Shard-Hash", "")

    def delete_temp(self, address: str, uuid: str) -> None:
        response = self._request("DELETE", address, f"/temp/{uuid}")
        self._check(response, address, f"DELETE /temp/{uuid}")

    # -- committed shards --------------------------------------------------------------------
    def open_shards(self, ranges: list[tuple[str, str, int, int]]
                    ) -> list[ShardResponse | ObjectStoreError]:
        """Start streaming GETs of shard bytes, ``(address, quoted name, first, last)`` each
        (``last`` inclusive), all sent before any answer is read; a ShardResponse for each,
        or the error it met."""
        calls = [self._call("GET", address, f"/objects/{name}", None,
                            {"Range": f"bytes={first}-{last}"})
                 for address, name, first, last in ranges]
        results = []
        for call, (address, _, first, last), answer in zip(calls, ranges,
                                                            self._pool.request_many(calls)):
            results.append(self._outcome(call, answer, stream=True, then=lambda r: ShardResponse(
                r, address, int(r.headers.get("Content-Length", last - first + 1)))))
        return results

    def has_shard(self, address: str, quoted_name: str) -> bool:
        """Whether ``address`` still holds the shard (HEAD: nothing is read)."""
        response = self._request("HEAD", address, f"/objects/{quoted_name}")
        try:
            self._check(response, address, f"HEAD /objects/{quoted_name}")
        except ObjectNotFound:
            return False
        return True

    def delete_shards(self, address: str, quoted_name: str) -> None:
        """Move ``<hash>`` or ``<hash>.<i>`` to the data server's garbage/."""
        response = self._request("DELETE", address, f"/objects/{quoted_name}")
        self._check(response, address, f"DELETE /objects/{quoted_name}")

    # -- inspection: the management API (api_server/admin/inspect.py) -------------------------
    def stats(self, address: str) -> dict:
        """``GET /stats``: shards, bytes, disk_free, disk_total, corrupt_shards."""
        return self._json("GET", address, "/stats")

    def verify_shard(self, address: str, quoted_name: str) -> bool | None:
        """Whether ``address`` holds shard ``quoted_name`` intact (read in full and checked
        there); None when it does not hold it."""
        try:
            return bool(self._json("GET", address, f"/verify/{quoted_name}").get("verified"))
        except ObjectNotFound:
            return None

    # -- maintenance: orphan collection (lib/collector.py) -----------------------------------
    def _json(self, method: str, address: str, path: str) -> dict:
        response = self._check(self._request(method, address, path), address, path)
        try:
            answer = json.loads(response.data)
        except ValueError as exc:
            raise DataServerError(f"{method} {path}: bad answer: {exc}", address) from exc
        if not isinstance(answer, dict):
            raise DataServerError(f"{method} {path}: bad answer {answer!r}", address)
        return answer

    def list_shards(self, address: str) -> Iterator[ShardInfo]:
        """Every shard ``address`` holds (``GET /objects/``, one JSON line each)."""
        response = self._check(self._request("GET", address, "/objects/", stream=True),
                               address, "GET /objects/")
        try:
            for line in response.iter_lines():
                try:
                    raw = json.loads(line)
                    yield ShardInfo(validate_hash(raw["hash"]), int(raw["index"]),
                                    float(raw["age"]))
                except (ValueError, KeyError, TypeError, InvalidHash) as exc:
                    raise DataServerError(f"GET /objects/: bad line {line[:100]!r}: {exc}",
                                          address) from None
        except (ProtocolError, OSError) as exc:
            raise DataServerError(f"GET /objects/: {exc!r}", address) from exc
        finally:
            response.release_conn()

    def collect(self, address: str, hash_: str, older_than: float,
                index: int | None = None) -> tuple[int, int]:
        """Move the shards of ``hash_`` (only shard ``index`` when given) older than
        ``older_than`` seconds to garbage/ on ``address``; returns (moved, kept because
        younger)."""
        name = quote_hash(hash_) if index is None else f"{quote_hash(hash_)}.{index}"
        answer = self._json("POST", address, f"/garbage/{name}?older_than={older_than:.3f}")
        return int(answer.get("moved", 0)), int(answer.get("kept", 0))

    def purge_garbage(self, address: str, older_than: float) -> int:
        """Delete what has lain in ``address``'s garbage/ for more than ``older_than`` s."""
        answer = self._json("DELETE", address, f"/garbage/?older_than={older_than:.3f}")
        return int(answer.get("purged", 0))
