"""Fetch on miss, in process: the object layer over SQLite and content in files, wrapped by
the origin layer, against a real HTTP origin on 127.0.3.x (``tests/origin_server.py``)."""
from __future__ import annotations

import threading

import pytest

from lib.errors import (NoSuchKey, OriginCircuitOpen, OriginNotFound, OriginTimeout,
                        OriginTooLarge, OriginUnavailable)
from lib.metadata.sqlite import SqliteStore
from lib.objects import ObjectLayer
from lib.objects.guards import Breaker, NegativeCache
from lib.objects.origin import OriginLayer, Origins
from lib.upstream import Limits
from tests.conftest import Body
from tests.fakes import DirectoryContentStore
from tests.origin_server import LAST_MODIFIED, Origin, md5_b64


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def origin():
    with Origin("127.0.3.201") as o:
        yield o


@pytest.fixture
def setup(tmp_path, origin):
    metadata = SqliteStore(tmp_path / "md.db")
    contents = DirectoryContentStore(tmp_path / "contents")
    layer = ObjectLayer(metadata, contents)
    layer.create_bucket("cached")
    clock = Clock()
    limits = Limits(connect_timeout=2, read_timeout=1.0, max_size=8 << 20, max_redirects=2)
    wrapped = OriginLayer(layer, Origins(metadata, limits, {"cached": origin.template}),
                          NegativeCache(60, clock), Breaker(3, 30, clock), stall_timeout=2)
    yield wrapped, contents, clock
    metadata.close()


def read(reader) -> bytes:
    return b"".join(reader)


def test_miss_streams_stores_and_keeps_origin_headers(setup, origin):
    layer, contents, _ = setup
    body = Body(3 << 20, seed=1, chunk=100_000)
    origin.add("dir/a b.txt", body, content_type="text/x-test")
    reader = layer.open("cached", "dir/a b.txt")
    assert reader.length == body.size and reader.version.etag == f"origin-etag-{body.size}"
    assert read(reader) == body.bytes()
    version = layer.head("cached", "dir/a b.txt")
    assert version.number == 1 and version.hash == body.hash and version.size == body.size
    assert version.meta.content_type == "text/x-test"
    assert version.etag == f"origin-etag-{body.size}"
    assert version.meta.origin["last-modified"] == LAST_MODIFIED
    origin.stop()                           # what was stored is read without the origin
    assert read(layer.open("cached", "dir/a b.txt")) == body.bytes()
    assert origin.gets("dir/a b.txt") == 1


def test_other_buckets_and_deleted_keys_are_not_fetched(setup, origin):
    layer, _, _ = setup
    layer.create_bucket("plain")
    origin.add("k", b"from the origin")
    with pytest.raises(NoSuchKey):
        layer.open("plain", "k")
    assert read(layer.open("cached", "k")) == b"from the origin"
    layer.delete("cached", "k")                    # unversioned: the version goes (evicted)
    assert read(layer.open("cached", "k")) == b"from the origin"
    layer.set_versioning("cached", "Enabled")
    layer.delete("cached", "k")                    # a delete marker: deleted here wins
    with pytest.raises(NoSuchKey):
        layer.open("cached", "k")
    assert origin.gets("k") == 2


@pytest.mark.parametrize("how", [{"truncate": 150_000}, {"md5": md5_b64(b"other bytes")}])
def test_a_bad_body_is_not_stored_and_the_client_sees_an_error(setup, origin, how):
    layer, contents, _ = setup
    body = Body(300_000, seed=2, chunk=50_000)
    origin.add("bad", body, **how)
    reader = layer.open("cached", "bad")
    got = bytearray()
    with pytest.raises(OriginUnavailable) as error:
        for chunk in reader:
            got += chunk
    assert origin.address in str(error.value)
    assert len(got) < body.size                   # never the whole answer
    with pytest.raises(NoSuchKey):
        layer._layer.open("cached", "bad")
    assert contents.stored() == set()


def test_not_found_is_remembered_for_the_negative_ttl(setup, origin):
    layer, _, clock = setup
    for _ in range(3):
        with pytest.raises(OriginNotFound) as error:
            layer.open("cached", "nowhere")
        assert origin.address in str(error.value)
    assert origin.gets("nowhere") == 1
    clock.now += 61
    with pytest.raises(OriginNotFound):
        layer.head("cached", "nowhere")
    assert origin.requests[("HEAD", "nowhere")] == 1


def test_failures_open_the_breaker_then_one_trial_closes_it(setup, origin):
    layer, _, clock = setup
    origin.add("flaky", b"", status=503)
    for _ in range(3):
        with pytest.raises(OriginUnavailable, match="503"):
            layer.open("cached", "flaky")
    with pytest.raises(OriginCircuitOpen) as error:
        layer.open("cached", "flaky")
    assert origin.address in str(error.value) and origin.gets("flaky") == 3
    clock.now += 31
    origin.add("flaky", b"back again")
    assert read(layer.open("cached", "flaky")) == b"back again"
    assert origin.gets("flaky") == 4


def test_timeouts_refusals_and_redirects(setup, origin):
    layer, _, _ = setup
    origin.add("slow", b"late", delay=2.5)
    with pytest.raises(OriginTimeout):
        layer.open("cached", "slow")
    origin.add("there", b"after two hops")
    origin.add("hop1", b"", redirect="/o/there")
    origin.add("hop2", b"", redirect="/o/hop1")
    assert read(layer.open("cached", "hop2")) == b"after two hops"
    origin.add("loop", b"", redirect="/o/loop")
    with pytest.raises(OriginUnavailable, match="redirects"):
        layer.open("cached", "loop")
    origin.stop()
    with pytest.raises(OriginUnavailable, match="refused|Connection"):
        layer.open("cached", "refused")


def test_too_large_and_unknown_length(setup, origin):
    layer, contents, _ = setup
    origin.add("huge", Body(9 << 20, seed=3))
    with pytest.raises(OriginUnavailable, match="ORIGIN_MAX_SIZE"):
        layer.open("cached", "huge")
    origin.add("huge-chunked", Body(9 << 20, seed=3), chunked=True)
    with pytest.raises(OriginUnavailable, match="ORIGIN_MAX_SIZE"):
        layer.open("cached", "huge-chunked")
    assert contents.stored() == set()
    for _ in range(3):                       # too large is not a failure of the origin
        with pytest.raises(OriginTooLarge):
            layer.open("cached", "huge")
    layer.breaker.check(layer.origins.of("cached").name)      # still closed
    body = Body(2 << 20, seed=4, chunk=70_000)
    origin.add("chunked", body, chunked=True)
    reader = layer.open("cached", "chunked", byte_range="bytes=-10")
    assert reader.partial and read(reader) == body.bytes()[-10:]
    assert layer.head("cached", "chunked").size == body.size


def test_range_on_a_miss_answers_the_range_and_stores_the_whole(setup, origin):
    layer, _, _ = setup
    body = Body(1_000_000, seed=5, chunk=64_000)
    origin.add("ranged", body)
    reader = layer.open("cached", "ranged", byte_range="bytes=100000-100009")
    assert reader.partial and (reader.first, reader.last) == (100_000, 100_009)
    assert read(reader) == body.bytes()[100_000:100_010]
    assert read(layer.open("cached", "ranged")) == body.bytes()


def test_concurrent_misses_make_one_origin_fetch(setup, origin):
    """The origin holds its answer until seven followers wait on the leader's flight."""
    from prometheus_client import REGISTRY

    from tests.probe.conftest import wait_for

    def coalesced():
        return REGISTRY.get_sample_value("tessera_origin_coalesced_total") or 0

    before = coalesced()
    layer, _, _ = setup
    body = Body(500_000, seed=6, chunk=50_000)
    gate = threading.Event()
    origin.add("hot", body, gate=gate)
    results, errors = [], []

    def fetch():
        try:
            results.append(read(layer.open("cached", "hot")))
        except Exception as exc:               # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: coalesced() - before == 7)
    gate.set()
    for t in threads:
        t.join(30)
    assert not errors and results == [body.bytes()] * 8
    assert origin.gets("hot") == 1 and len(layer.flights) == 0


def test_a_malformed_origin_url_fails_at_start(tmp_path):
    from lib.config import Config, ConfigError

    layer = ObjectLayer(SqliteStore(tmp_path / "md.db"), DirectoryContentStore(tmp_path / "c"))
    with pytest.raises(ConfigError, match="ORIGIN_URL"):
        OriginLayer.from_config(layer, Config(origin_url="http://127.0.3.1/no-key-template"))


def test_a_client_that_leaves_does_not_stop_the_store(setup, origin):
    layer, _, _ = setup
    body = Body(2 << 20, seed=7, chunk=32_000)
    origin.add("left", body)
    reader = layer.open("cached", "left")
    next(iter(reader))
    reader.close()
    assert read(layer.open("cached", "left")) == body.bytes()
    assert origin.gets("left") == 1


def test_head_asks_the_origin_and_stores_nothing(setup, origin):
    layer, contents, _ = setup
    origin.add("meta", b"12345", content_type="image/png")
    version = layer.head("cached", "meta")
    assert (version.size, version.number, version.meta.content_type) == (5, 0, "image/png")
    assert origin.gets("meta") == 0 and contents.stored() == set()


def test_prefetch(setup, origin):
    layer, _, _ = setup
    origin.add("pre", b"prefetched")
    assert layer.prefetch("cached", "pre") == "stored"
    assert layer.prefetch("cached", "pre") == "present"
    origin.stop()
    assert read(layer.open("cached", "pre")) == b"prefetched"


def test_conditions_and_bad_ranges_on_a_miss_answer_the_client_and_store_anyway(setup, origin):
    from lib.errors import NotModified, RangeNotSatisfiable
    from lib.objects.layer import ReadConditions
    from tests.probe.conftest import wait_for

    layer, _, _ = setup
    origin.add("cond", b"conditional", etag="v1")
    with pytest.raises(NotModified):
        layer.open("cached", "cond", conditions=ReadConditions(if_none_match=["v1"]))
    origin.add("past", b"short")
    with pytest.raises(RangeNotSatisfiable):
        layer.open("cached", "past", byte_range="bytes=100-")
    def stored(key):
        try:
            return layer._layer.head("cached", key)
        except NoSuchKey:
            return None

    for key, data in (("cond", b"conditional"), ("past", b"short")):
        wait_for(lambda: stored(key))
        assert read(layer._layer.open("cached", key)) == data
    assert origin.gets("cond") == origin.gets("past") == 1


def test_https_origin_is_verified(tmp_path, setup):
    """An HTTPS origin on 127.0.3.x with a certificate of our own: trusted through
    ORIGIN_CA_FILE, refused (502) without it."""
    import subprocess

    cert, key = tmp_path / "origin.pem", tmp_path / "origin.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.3.202", "-addext", "subjectAltName=IP:127.0.3.202",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    layer, _, _ = setup
    metadata = layer.metadata
    with Origin("127.0.3.202", tls=(str(cert), str(key))) as secure:
        secure.add("tls", b"over https")
        for ca_file, bucket in ((str(cert), "trusted"), (None, "untrusted")):
            layer.create_bucket(bucket)
            limits = Limits(connect_timeout=2, read_timeout=2, ca_file=ca_file)
            wrapped = OriginLayer(layer._layer, Origins(metadata, limits,
                                                        {bucket: secure.template}),
                                  NegativeCache(60), Breaker(3, 30), stall_timeout=2)
            if ca_file:
                assert read(wrapped.open(bucket, "tls")) == b"over https"
            else:
                with pytest.raises(OriginUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                    wrapped.open(bucket, "tls")
