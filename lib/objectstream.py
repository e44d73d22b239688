"""The only ``requests`` import: the api side's HTTP client for data servers' /temp and /objects.

One pooled keep-alive Session per process; every call has a timeout (requests has none by
default); every shard travels in one streaming request with Content-Length (BOOK W10); every
status is checked and turned into a DataServerError or ObjectNotFound (BOOK W9).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import requests
import requests.adapters

from lib.errors import DataServerError, ObjectNotFound
from lib.streams import read_exact

log = logging.getLogger(__name__)

_POOL_SIZE = 128


class SizedBody:
    """An iterable request body with a known length, so requests sends Content-Length."""

    def __init__(self, chunks: Iterable[bytes], length: int):
        self._chunks = chunks
        self._length = length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)


class ShardResponse:
    """A streaming GET of (part of) a shard; read it with :meth:`read` and close it."""

    def __init__(self, response: requests.Response, address: str):
        self._response = response
        self.address = address

    def read(self, size: int) -> bytes:
        try:
            return read_exact(self._response.raw, size)
        except (requests.RequestException, OSError, ValueError) as exc:
            raise DataServerError(f"read failed: {exc}", self.address) from exc
        except Exception as exc:          # urllib3 protocol errors (IncompleteRead, ...)
            raise DataServerError(f"read failed: {exc!r}", self.address) from exc

    def close(self) -> None:
        self._response.close()


class DataServerClient:
    """Talks to data servers; thread-safe (urllib3 pools are)."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=32, pool_maxsize=_POOL_SIZE,
                                                max_retries=0)
        self._session.mount("http://", adapter)

    def _request(self, method: str, address: str, path: str, **kwargs) -> requests.Response:
        try:
            return self._session.request(method, f"http://{address}{path}",
                                         timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise DataServerError(f"{method} {path}: {exc}", address) from exc

    @staticmethod
    def _check(response: requests.Response, address: str, what: str) -> requests.Response:
        if response.status_code == 404:
            response.close()
            raise ObjectNotFound(f"{address}: {what}: 404")
        if response.status_code not in (200, 206):
            text = response.text[:200].strip() if not response.raw.closed else ""
            response.close()
            raise DataServerError(f"{what}: {response.status_code} {text}", address)
        return response

    # -- temp objects ------------------------------------------------------------------------
    def post_temp(self, address: str, quoted_name: str, size: int | None,
                  body: Iterable[bytes] | None = None) -> str:
        """Create a temp object for shard ``quoted_name``, sending its bytes when given.

        :returns: the temp object's uuid.
        """
        headers = {"Size": str(size)} if size is not None else {}
        if body is not None and size is not None:
            body = SizedBody(body, size)
        response = self._request("POST", address, f"/temp/{quoted_name}",
                                 headers=headers, data=body)
        uuid = self._check(response, address, f"POST /temp/{quoted_name}").text.strip()
        if len(uuid) != 36:
            raise DataServerError(f"POST /temp/{quoted_name}: bad uuid {uuid[:60]!r}", address)
        return uuid

    def patch_temp(self, address: str, uuid: str, body: Iterable[bytes], length: int) -> None:
        response = self._request("PATCH", address, f"/temp/{uuid}", data=SizedBody(body, length))
        self._check(response, address, f"PATCH /temp/{uuid}").close()

    def head_temp(self, address: str, uuid: str) -> int:
        response = self._request("HEAD", address, f"/temp/{uuid}")
        self._check(response, address, f"HEAD /temp/{uuid}")
        return int(response.headers.get("Content-Length", "0"))

    def commit_temp(self, address: str, uuid: str) -> str:
        """Publish the temp object; returns the shard hash the data server computed."""
        response = self._request("PUT", address, f"/temp/{uuid}")
        return self._check(response, address, f"PUT /temp/{uuid}").headers.get("Shard-Hash", "")

    def delete_temp(self, address: str, uuid: str) -> None:
        response = self._request("DELETE", address, f"/temp/{uuid}")
        self._check(response, address, f"DELETE /temp/{uuid}").close()

    # -- committed shards --------------------------------------------------------------------
    def open_shard(self, address: str, quoted_name: str, first: int, last: int) -> ShardResponse:
        """GET bytes ``first..last`` (inclusive) of a shard, streaming."""
        response = self._request("GET", address, f"/objects/{quoted_name}", stream=True,
                                 headers={"Range": f"bytes={first}-{last}"})
        self._check(response, address, f"GET /objects/{quoted_name}")
        return ShardResponse(response, address)

    def delete_shards(self, address: str, quoted_name: str) -> None:
        """Move ``<hash>`` or ``<hash>.<i>`` to the data server's garbage/."""
        response = self._request("DELETE", address, f"/objects/{quoted_name}")
        self._check(response, address, f"DELETE /objects/{quoted_name}").close()
