"""Resumable-upload token (sign, verify, tamper, expiry), the cluster secret, Accept-Encoding
negotiation and the gzip stream."""
from __future__ import annotations

import base64
import gzip
import json
import os
import stat
import threading

import pytest

from lib.compression import accepts_gzip, gunzip, gzip_pays, gzip_stream
from lib.config import Config
from lib.secret import cluster_secret
from lib.upload_token import TokenExpired, TokenInvalid, UploadToken, sign, verify

H = base64.b64encode(b"\xff\xff\xfb" + bytes(29)).decode()       # "///" and "+" inside
SECRET = b"s" * 32
UUIDS = tuple(f"00000000-0000-4000-8000-00000000000{i}" for i in range(6))


def token(**changes) -> UploadToken:
    fields = dict(name="dir/a b", size=3 << 20, hash=H,
                  servers=tuple(f"127.0.1.{i}:7000" for i in range(1, 7)), uuids=UUIDS,
                  expires=1000)
    fields.update(changes)
    return UploadToken(**fields)


def test_round_trip_keeps_the_raw_hash_and_is_url_safe():
    t = token(servers=(None,) + token().servers[1:], uuids=(None,) + UUIDS[1:])
    text = sign(t, SECRET)
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    back = verify(text, SECRET, clock=lambda: 999)
    assert back == t and back.hash == H                        # raw, never quoted (BOOK W17)
    assert sorted(back.slots()) == [1, 2, 3, 4, 5]


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1:]


@pytest.mark.parametrize("where", [0, 10, -3])
def test_any_changed_character_is_refused(where):
    text = sign(token(), SECRET)
    with pytest.raises(TokenInvalid):
        verify(_flip(text, where % len(text)), SECRET, clock=lambda: 0)


def test_forged_payload_wrong_secret_and_garbage_are_refused():
    text = sign(token(), SECRET)
    payload, signature = text.split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged["servers"][0] = "169.254.169.254:80"                # SSRF attempt (BOOK W17)
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=")
    for bad in (f"{forged_payload.decode()}.{signature}", sign(token(), b"x" * 32), "", ".",
                "abc", "a.b.c", "x" * 9000, payload):
        with pytest.raises(TokenInvalid):
            verify(bad, SECRET, clock=lambda: 0)


def test_expiry_is_checked_after_the_signature():
    text = sign(token(expires=1000), SECRET)
    assert verify(text, SECRET, clock=lambda: 999.9)
    with pytest.raises(TokenExpired):
        verify(text, SECRET, clock=lambda: 1000)
    with pytest.raises(TokenInvalid):                          # a forgery is 403, not 404
        verify(_flip(text, 5), SECRET, clock=lambda: 5000)


@pytest.mark.parametrize("changes", [
    {"servers": ("../../etc:1",) + token().servers[1:]},
    {"uuids": ("../x",) + UUIDS[1:]},
    {"servers": token().servers[:5], "uuids": UUIDS[:5]},
    {"servers": (None,) + token().servers[1:]},                # a server without its uuid
    {"hash": "not a hash"},
    {"size": -1},
    {"name": ""},
])
def test_even_a_correctly_signed_token_must_be_well_formed(changes):
    with pytest.raises(TokenInvalid):
        verify(sign(token(**changes), SECRET), SECRET, clock=lambda: 0)


def test_cluster_secret_from_the_environment_or_a_shared_file(tmp_path):
    assert cluster_secret(Config(cluster_secret="from-env")) == b"from-env"
    db = tmp_path / "meta" / "metadata.db"
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        cluster_secret(Config(metadata_db=db)))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    path = tmp_path / "meta" / "cluster.secret"
    assert len(set(results)) == 1 and results[0] == path.read_text().strip().encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["cluster.secret"]
    assert Config.from_env({}).cluster_secret == ""            # no random per-process secret


@pytest.mark.parametrize("header, expected", [
    ("gzip", True), ("GZip", True), ("x-gzip", True), ("deflate, gzip, br, zstd", True),
    ("gzip, deflate", True), ("*", True), ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
    ("gzip;q=0.5", True), ("identity;q=0, gzip", True), ("identity;q=0.5, gzip;q=1", True),
    (None, False), ("", False), ("identity", False), ("br", False), ("gzip;q=0", False),
    ("gzip ; q=0.000", False), ("*;q=0", False), ("gzip;q=0.5, identity;q=1", False),
    ("gzip;q=nonsense", False), ("*, gzip;q=0", False),
])
def test_accept_encoding(header, expected):
    assert accepts_gzip(header) is expected


def test_gzip_stream_is_standard_gzip_and_closes_its_source():
    data = b"".join(b"line %d of a compressible text\n" % i for i in range(100000))
    closed = []

    def source():
        try:
            for i in range(0, len(data), 100000):
                yield data[i:i + 100000]
        finally:
            closed.append(True)

    out = b"".join(gzip_stream(source()))
    assert gzip.decompress(out) == data == gunzip(out)
    assert len(out) < len(data) / 5 and closed == [True]
    stream = gzip_stream(source())
    next(stream)
    stream.close()
    assert closed == [True, True]


def test_compression_is_skipped_when_it_does_not_pay():
    assert gzip_pays(b"abc" * 30000)
    assert not gzip_pays(os.urandom(100000))
    assert not gzip_pays(b"")
    assert not gzip_pays(b"tiny")
