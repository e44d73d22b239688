"""S3 checksums: known vectors, botocore's own calculators, the pure-Python CRC fallback."""
import base64
import hashlib
import importlib.util
import random
import sys
import zlib

import pytest
from botocore import httpchecksum

from lib import checksums

CHECK = b"123456789"
#: The CRC catalogue's check values (reveng.sourceforge.io) for "123456789".
CHECK_VALUES = {"CRC32": 0xCBF43926, "CRC32C": 0xE3069283, "CRC64NVME": 0xAE8B14860A799888}

#: botocore's calculator classes; CRC32C and CRC64NVME exist only with awscrt.
BOTOCORE = {"CRC32": httpchecksum.Crc32Checksum, "SHA1": httpchecksum.Sha1Checksum,
            "SHA256": httpchecksum.Sha256Checksum, "SHA512": httpchecksum.Sha512Checksum,
            "CRC32C": getattr(httpchecksum, "CrtCrc32cChecksum", None),
            "CRC64NVME": getattr(httpchecksum, "CrtCrc64NvmeChecksum", None)}


def _b64(value: int, size: int) -> str:
    return base64.b64encode(value.to_bytes(size, "big")).decode()


@pytest.mark.parametrize("name", sorted(CHECK_VALUES))
def test_crc_check_values(name):
    calc = checksums.new(name)
    calc.update(CHECK)
    assert calc.b64() == _b64(CHECK_VALUES[name], checksums.DIGEST_SIZES[name])


def test_crc32c_of_the_aws_trailer_example():
    # sigv4-streaming-trailers: 66560 bytes of "a" carry x-amz-checksum-crc32c:sOO8/Q==.
    calc = checksums.new("crc32c")
    calc.update(b"a" * 65536)
    calc.update(b"a" * 1024)
    assert calc.b64() == "sOO8/Q=="


@pytest.mark.parametrize("name", checksums.ALGORITHMS)
def test_empty_body(name):
    assert base64.b64decode(checksums.new(name).b64()) == (
        bytes(checksums.DIGEST_SIZES[name]) if name.startswith("CRC")
        else hashlib.new(name.lower()).digest())


@pytest.mark.parametrize("name", checksums.ALGORITHMS)
def test_matches_botocore_in_any_split(name):
    if BOTOCORE[name] is None:
        pytest.skip("botocore computes CRC32C and CRC64NVME only with awscrt")
    rng = random.Random(name)
    data = rng.randbytes(100_003)
    expected = BOTOCORE[name]()
    expected.update(data)
    for cuts in ([], [1], [7, 8, 9], [4096, 65536]):
        calc = checksums.new(name.lower())
        start = 0
        for cut in cuts + [len(data)]:
            calc.update(data[start:cut])
            start = cut
        assert calc.b64() == expected.b64digest(), cuts


@pytest.mark.parametrize("fallback, name", [(checksums._python_crc32c, "CRC32C"),
                                            (checksums._python_crc64nvme, "CRC64NVME")])
def test_pure_python_fallback_agrees(fallback, name):
    rng = random.Random(7)
    assert fallback(CHECK) == CHECK_VALUES[name]
    assert fallback(b"") == 0
    for size in (1, 2, 15, 16, 17, 1000, 65_537):
        data = rng.randbytes(size)
        reference = checksums.new(name)
        reference.update(data)
        whole = fallback(data)
        assert whole.to_bytes(checksums.DIGEST_SIZES[name], "big") == reference.digest()
        half = size // 2
        assert fallback(memoryview(data)[half:], fallback(data[:half])) == whole


def test_pure_python_crc32_construction_matches_zlib():
    # The same table-driven construction with CRC32's polynomial reproduces zlib exactly.
    crc32 = checksums._reflected_crc(0xEDB88320, 32)
    data = random.Random(1).randbytes(5000)
    assert crc32(data) == zlib.crc32(data)
    assert crc32(data[100:], crc32(data[:100])) == zlib.crc32(data)


def test_composite_is_the_checksum_of_the_part_checksums():
    parts = [b"first part", b"second", b"3"]
    values = []
    for part in parts:
        calc = checksums.new("CRC32")
        calc.update(part)
        values.append(calc.b64())
    joined = b"".join(base64.b64decode(value) for value in values)
    assert checksums.composite("crc32", values) == _b64(zlib.crc32(joined), 4) + "-3"
    assert checksums.composite("SHA256", iter(values)).endswith("-3")
    with pytest.raises(ValueError):
        checksums.composite("CRC32", ["not base64!"])


def test_names():
    assert checksums.header_name("crc64nvme") == "x-amz-checksum-crc64nvme"
    assert checksums.header_name(" SHA256 ") == "x-amz-checksum-sha256"
    assert checksums.from_header_name("X-Amz-Checksum-CRC32C") == "CRC32C"
    assert checksums.from_header_name("x-amz-checksum-type") is None
    assert checksums.from_header_name("x-amz-checksum-mode") is None
    assert checksums.from_header_name("x-amz-checksum-md4") is None
    assert checksums.from_header_name("content-md5") is None
    assert checksums.algorithm("crc32c") == "CRC32C"
    for bad in ("", "MD5", "crc-32", None):
        with pytest.raises(checksums.UnknownAlgorithm):
            checksums.algorithm(bad)
    with pytest.raises(ValueError):
        checksums.new("XXHASH64")


def test_is_valid():
    assert checksums.is_valid("CRC32", "AAAAAA==")
    assert checksums.is_valid("crc64nvme", "AAAAAAAAAAA=")
    assert checksums.is_valid("SHA256", base64.b64encode(bytes(32)).decode())
    for value in ("AAAAAA=", "AAAAAAA=", "AAAAAAAAAAA=", "AAAAAA==\n", "AA AAA==", "", "é"):
        assert not checksums.is_valid("CRC32", value), value
    assert not checksums.is_valid("SHA1", base64.b64encode(bytes(32)).decode())


def test_without_awscrt_the_fallback_is_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "awscrt", None)  # makes ``import awscrt`` fail
    spec = importlib.util.spec_from_file_location("checksums_without_crt", checksums.__file__)
    bare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bare)
    assert not bare.ACCELERATED
    for name in ("CRC32C", "CRC64NVME"):
        calc = bare.new(name)
        calc.update(CHECK)
        assert calc.b64() == _b64(CHECK_VALUES[name], checksums.DIGEST_SIZES[name])
