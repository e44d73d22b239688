"""Placeholder until the checksums module lands: S3 checksum calculators by algorithm name."""
from __future__ import annotations

import base64
import hashlib
import zlib


class _Crc32:
    def __init__(self):
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = zlib.crc32(data, self._value)

    def b64(self) -> str:
        return base64.b64encode(self._value.to_bytes(4, "big")).decode()


class _Hash:
    def __init__(self, name: str):
        self._hash = hashlib.new(name)

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def b64(self) -> str:
        return base64.b64encode(self._hash.digest()).decode()


def new(algorithm: str):
    name = algorithm.upper()
    if name == "CRC32":
        return _Crc32()
    if name in ("SHA1", "SHA256"):
        return _Hash(name.lower())
    raise ValueError(f"unknown checksum algorithm {algorithm!r}")


def composite(algorithm: str, values: list[str]) -> str:
    calculator = new(algorithm)
    for value in values:
        calculator.update(base64.b64decode(value))
    return f"{calculator.b64()}-{len(values)}"
