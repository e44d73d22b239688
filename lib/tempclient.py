"""The api side's calls for resumable uploads: conditional appends, temp read-back, tails.

Built on DataServerClient's connection pool and status checks (``lib/objectstream.py`` stays
the only HTTP-library importer), so every call has its timeout and every status is checked.
"""
from __future__ import annotations

from collections.abc import Iterable

from lib.errors import Conflict, DataServerError, ObjectNotFound
from lib.objectstream import DataServerClient, ShardResponse


class AppendConflict(Conflict):
    """The temp object did not hold the expected number of bytes: nothing was appended."""

    def __init__(self, address: str, size: int):
        super().__init__(f"{address}: temp object holds {size} bytes")
        self.size = size


class TempClient:
    def __init__(self, client: DataServerClient):
        self._client = client

    @property
    def timeout(self) -> float:
        return self._client.timeout

    def create(self, address: str, quoted_name: str, size: int) -> str:
        return self._client.post_temp(address, quoted_name, size)

    def size(self, address: str, uuid: str) -> int:
        return self._client.head_temp(address, uuid)

    def append(self, address: str, uuid: str, offset: int, records: Iterable[bytes]) -> int:
        """Append whole records at ``offset`` (streamed, chunked); the temp's new size."""
        response = self._client._request("PATCH", address, f"/temp/{uuid}", body=records,
                                         headers={"Temp-Offset": str(offset)}, chunked=True)
        if response.status == 409:
            size = int(response.headers.get("Temp-Size", "-1"))
            response.release_conn()
            raise AppendConflict(address, size)
        self._client._check(response, address, f"PATCH /temp/{uuid}")
        return _int(response, "Temp-Size", address)

    def open(self, address: str, uuid: str) -> ShardResponse:
        """Stream a whole temp object back."""
        response = self._client._request("GET", address, f"/temp/{uuid}", stream=True)
        self._client._check(response, address, f"GET /temp/{uuid}")
        return ShardResponse(response, address, _int(response, "Content-Length", address))

    def commit(self, address: str, uuid: str) -> str:
        return self._client.commit_temp(address, uuid)

    def delete(self, address: str, uuid: str) -> None:
        self._client.delete_temp(address, uuid)

    # -- tails: the partial last block of an upload (data_server/tails.py) ---------------------
    def put_tail(self, address: str, uuid: str, offset: int, data: bytes) -> None:
        response = self._client._request("PUT", address, f"/tail/{uuid}", body=data,
                                         headers={"Tail-Offset": str(offset)})
        self._client._check(response, address, f"PUT /tail/{uuid}")

    def tail_info(self, address: str, uuid: str) -> tuple[int, int] | None:
        """(object offset, length) of the tail kept with temp ``uuid``, None if there is none."""
        response = self._client._request("HEAD", address, f"/tail/{uuid}")
        try:
            self._client._check(response, address, f"HEAD /tail/{uuid}")
        except ObjectNotFound:
            return None
        return _int(response, "Tail-Offset", address), _int(response, "Content-Length", address)

    def get_tail(self, address: str, uuid: str) -> tuple[int, bytes]:
        response = self._client._request("GET", address, f"/tail/{uuid}")
        self._client._check(response, address, f"GET /tail/{uuid}")
        return _int(response, "Tail-Offset", address), response.data

    def delete_tail(self, address: str, uuid: str) -> None:
        response = self._client._request("DELETE", address, f"/tail/{uuid}")
        self._client._check(response, address, f"DELETE /tail/{uuid}")


def _int(response, header: str, address: str) -> int:
    try:
        return int(response.headers[header])
    except (KeyError, ValueError):
        raise DataServerError(f"no valid {header} header", address) from None
