"""Header grammar (Digest, Range, Size), hash validation and quoting."""
import base64

import pytest

from lib.errors import BadDigest, BadRequest, InvalidHash, RangeNotSatisfiable
from lib.hashing import quote_hash, unquote_hash, validate_hash
from lib.headers import content_range, parse_digest, parse_range, parse_size

H = "MBMxWHrPMsuOBaVYHkwScZQRyTRMQyiKp2oelpLZza8="
#: Starts with "/", contains "//" and "+": the hashes the book's router lost (BOOK W27).
SLASHY = base64.b64encode(b"\xff\xff\xff\xfb\xef\xbe" + bytes(26)).decode()


def test_digest_accepts_sha256_and_lists():
    assert parse_digest(f"SHA-256={H}") == H
    assert parse_digest(f"sha-256={H}") == H
    assert parse_digest(f"MD5=abc, SHA-256={H}") == H


@pytest.mark.parametrize("value", [None, "", "SHA-256=", "SHA-256=abc", f"MD5={H}",
                                   f"SHA-256={H[:-1]}", f"SHA-256={H}x", "SHA-1=" + H])
def test_digest_rejects_missing_and_malformed(value):
    with pytest.raises(BadDigest):
        parse_digest(value)


@pytest.mark.parametrize("value", ["", "x" * 44, H[:-1] + "A", H.replace("=", "A"),
                                   "A" * 42 + "==", None])
def test_validate_hash_rejects(value):
    with pytest.raises(InvalidHash):
        validate_hash(value)


def test_quote_round_trip_keeps_plus_and_equals():
    assert SLASHY.startswith("////+") and SLASHY.endswith("=")
    assert quote_hash(SLASHY).startswith("%2F%2F%2F%2F+")
    assert unquote_hash(quote_hash(SLASHY)) == SLASHY
    assert validate_hash(SLASHY) == SLASHY
    assert quote_hash("a+b=") == "a+b="


@pytest.mark.parametrize("header,size,expected", [
    (None, 10, None), ("bytes=0-", 10, (0, 9)), ("bytes=2-5", 10, (2, 5)),
    ("bytes=2-100", 10, (2, 9)), ("bytes=-3", 10, (7, 9)), ("bytes=-30", 10, (0, 9)),
    ("bytes=9-9", 10, (9, 9)), ("items=0-1", 10, None), ("bytes=0-1,3-4", 10, None),
    ("bytes=5-2", 10, None), ("bytes=-", 10, None),
])
def test_range(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header,size", [("bytes=10-", 10), ("bytes=10-20", 10),
                                         ("bytes=-0", 10), ("bytes=0-", 0), ("bytes=-1", 0)])
def test_unsatisfiable_range(header, size):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def test_content_range():
    assert content_range(0, 9, 10) == "bytes 0-9/10"


def test_size():
    assert parse_size("0") == 0
    assert parse_size("123") == 123
    for bad in (None, "", "-1", "0x10", "1.5", "abc"):
        with pytest.raises(BadRequest):
            parse_size(bad)
