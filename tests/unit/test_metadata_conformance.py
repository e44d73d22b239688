"""One conformance suite for every MetadataStore backend.

SQLite always runs.  Elasticsearch runs when ``ES_SERVER`` points at a reachable cluster (each
test in an index of its own, dropped afterwards) and is skipped with the reason otherwise: ES
cannot be installed on the development machines.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import multiprocessing
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lib.config import Config
from lib.metadata import Metadata, MetadataError, MetadataStore, open_store
from lib.metadata.elasticsearch import (
    ElasticsearchStore,
    doc_id,
    parse_total_hits,
    server_url,
)
from lib.metadata.sqlite import SqliteStore


def b64hash(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


@dataclasses.dataclass(frozen=True)
class StoreSpec:
    """Picklable recipe for a store, so child processes can open the same backend."""

    kind: str
    location: str  # sqlite file, or ES server
    index: str = ""

    def open(self) -> MetadataStore:
        if self.kind == "sqlite":
            return open_store(Config(metadata_db=Path(self.location)))
        return ElasticsearchStore(self.location, self.index, refresh_interval="50ms")


_es_status: dict[str, str | None] = {}


def _es_unavailable() -> str | None:
    """Why ES tests cannot run (None when they can); probed once per session."""
    if "reason" not in _es_status:
        server = os.environ.get("ES_SERVER")
        reason: str | None = None
        if not server:
            reason = "ES_SERVER not set/reachable: ES_SERVER is not set"
        else:
            probe = ElasticsearchStore(server, f"tessera-probe-{uuid.uuid4().hex}", timeout=5)
            try:
                probe.check()  # creates the probe index, dropped right away
                probe.drop_index()
            except MetadataError as exc:
                reason = f"ES_SERVER not set/reachable: {exc}"
            finally:
                probe.close()
        _es_status["reason"] = reason
    return _es_status["reason"]


@pytest.fixture(params=["sqlite", "elasticsearch"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreSpec]:
    if request.param == "sqlite":
        yield StoreSpec("sqlite", str(tmp_path / "db" / "metadata.db"))
        return
    reason = _es_unavailable()
    if reason:
        pytest.skip(reason)
    spec = StoreSpec("elasticsearch", os.environ["ES_SERVER"], f"tessera-test-{uuid.uuid4().hex}")
    yield spec
    dropper = spec.open()
    try:
        assert isinstance(dropper, ElasticsearchStore)
        dropper.drop_index()
    finally:
        dropper.close()


@pytest.fixture
def store(spec: StoreSpec) -> Iterator[MetadataStore]:
    opened = spec.open()
    try:
        yield opened
    finally:
        opened.close()


# -- versions, latest, get -------------------------------------------------------------------


def test_versions_start_at_one_and_increase(store: MetadataStore) -> None:
    h = b64hash(b"x")
    added = [store.add_version("obj", 1, h) for _ in range(5)]
    assert [m.version for m in added] == [1, 2, 3, 4, 5]
    assert added[0] == Metadata("obj", 1, 1, h)
    assert store.add_version("other", 2, h).version == 1


def test_latest(store: MetadataStore) -> None:
    assert store.latest("nothing") is None
    store.add_version("obj", 1, b64hash(b"1"))
    store.add_version("obj", 22, b64hash(b"22"))
    store.add_version("obj2", 333, b64hash(b"333"))
    assert store.latest("obj") == Metadata("obj", 2, 22, b64hash(b"22"))
    assert store.latest("obj2") == Metadata("obj2", 1, 333, b64hash(b"333"))


def test_get(store: MetadataStore) -> None:
    h = b64hash(b"get")
    store.add_version("obj", 3, h)
    store.add_version("obj", 3, h)
    assert store.get("obj", 2) == Metadata("obj", 2, 3, h)
    assert store.get("obj", 3) is None
    assert store.get("obj", 0) is None
    assert store.get("obj", -1) is None
    assert store.get("missing", 1) is None


def test_delete_marker(store: MetadataStore) -> None:
    h = b64hash(b"content")
    store.add_version("obj", 7, h)
    marker = store.add_version("obj", 0, "")
    assert marker == Metadata("obj", 2, 0, "")
    first = store.get("obj", 1)
    assert marker.is_delete_marker and first is not None and not first.is_delete_marker
    assert store.latest("obj") == marker
    assert store.get("obj", 2) == marker
    assert marker.to_book_json() == {"Name": "obj", "Version": 2, "Size": 0, "Hash": ""}
    assert store.has_hash("") is False
    assert store.hash_size("") is None
    assert store.hashes() == [h]
    # A name can come back after a delete marker.
    assert store.add_version("obj", 7, h).version == 3


def test_delete_version(store: MetadataStore) -> None:
    h = b64hash(b"d")
    for _ in range(3):
        store.add_version("obj", 1, h)
    store.delete_version("obj", 2)
    store.delete_version("obj", 2)  # already gone: not an error
    store.delete_version("never", 1)
    assert store.get("obj", 2) is None
    assert [m.version for m in store.versions("obj")] == [1, 3]
    store.delete_version("obj", 3)
    assert store.latest("obj") == Metadata("obj", 1, 1, h)
    store.delete_version("obj", 1)
    assert store.latest("obj") is None
    assert not store.has_hash(h)


def test_invalid_arguments(store: MetadataStore) -> None:
    with pytest.raises(ValueError):
        store.add_version("", 1, "h")
    with pytest.raises(ValueError):
        store.add_version("obj", -1, "h")
    with pytest.raises(ValueError):
        store.add_version("obj", 5, "")  # a delete marker has size 0
    with pytest.raises(ValueError):
        store.versions(limit=0)
    with pytest.raises(ValueError):
        store.versions(offset=-1)
    with pytest.raises(ValueError):
        store.add_version("bad \udcff surrogate", 1, "h")
    with pytest.raises(ValueError):
        store.latest("bad \udcff surrogate")
    assert store.latest("obj") is None
    assert store.get("obj", 2**64) is None
    store.delete_version("obj", 2**64)


def test_large_size(store: MetadataStore) -> None:
    big, huge = 5 * 2**31 + 3, 2**62 + 1
    h1, h2 = b64hash(b"big"), b64hash(b"huge")
    store.add_version("big", big, h1)
    store.add_version("big", huge, h2)
    assert store.get("big", 1) == Metadata("big", 1, big, h1)
    assert store.latest("big") == Metadata("big", 2, huge, h2)
    assert store.hash_size(h1) == big
    assert [m.size for m in store.versions("big")] == [big, huge]


# -- concurrency -----------------------------------------------------------------------------


def test_concurrent_add_version_threads(store: MetadataStore) -> None:
    threads, per_thread = 8, 25
    got: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def worker(i: int) -> None:
        try:
            start.wait()
            for j in range(per_thread):
                version = store.add_version("hot", i * 1000 + j, b64hash(b"%d" % i)).version
                with lock:
                    got.append(version)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors
    total = threads * per_thread
    assert sorted(got) == list(range(1, total + 1))
    stored = store.versions("hot", limit=1000)
    assert [m.version for m in stored] == list(range(1, total + 1))
    # No add was lost: every (thread, sequence) pair is stored exactly once.
    assert sorted(m.size for m in stored) == sorted(
        i * 1000 + j for i in range(threads) for j in range(per_thread)
    )


def _add_many(
    spec: StoreSpec, name: str, count: int, tag: int, start: Any, results: Any
) -> None:
    """Child process body: its own store, ``count`` adds, the versions it was given."""
    store = spec.open()
    try:
        store.check()
        start.wait(timeout=30)  # both processes hammer the backend at the same time
        got = []
        for i in range(count):
            got.append(store.add_version(name, tag * 1000 + i, b64hash(b"p")).version)
            time.sleep(0.001)  # let the other process in: SQLite's busy wait is not fair
        results.put((tag, got))
    except BaseException as exc:
        results.put((tag, repr(exc)))
    finally:
        store.close()


def test_concurrent_add_version_processes(spec: StoreSpec, store: MetadataStore) -> None:
    store.add_version("shared", 1, b64hash(b"p"))  # creates the file / index first
    processes, per_process = 2, 100
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(processes), ctx.Queue()
    children = [
        ctx.Process(target=_add_many, args=(spec, "shared", per_process, tag, start, results))
        for tag in range(processes)
    ]
    for child in children:
        child.start()
    outcomes = dict(results.get(timeout=60) for _ in children)
    for child in children:
        child.join(timeout=10)
    assert all(isinstance(v, list) for v in outcomes.values()), outcomes
    got = sorted(v for versions in outcomes.values() for v in versions)
    total = 1 + processes * per_process
    assert got == list(range(2, total + 1))
    assert [m.version for m in store.versions("shared", limit=1000)] == list(range(1, total + 1))


# -- listing ---------------------------------------------------------------------------------

ODD_NAMES = [
    "with space",
    "a/b/c",
    "/leading",
    "trailing/",
    "ünïcødé ✓",
    "日本語の名前",
    "emoji 🎉",
    "100%",
    "%2F",
    "a%",
    "under_score",
    "a_",
    "a_c",
    "abc",
    "a_1",
    "a",
    'quo"te',
    "it's",
    "back\\slash",
    "?query#frag&x=1",
    "*",
    "+plus+",
    ".",
    "..",
    "_id",
    "tab\tand\nnewline",
]


def test_odd_names_round_trip(store: MetadataStore) -> None:
    for i, name in enumerate(ODD_NAMES):
        for j in range(i % 3 + 1):
            store.add_version(name, i * 10 + j, b64hash(name.encode()))
    for i, name in enumerate(ODD_NAMES):
        count = i % 3 + 1
        expected = [Metadata(name, j + 1, i * 10 + j, b64hash(name.encode())) for j in range(count)]
        assert store.latest(name) == expected[-1], name
        assert store.get(name, 1) == expected[0], name
        assert store.versions(name) == expected, name  # no wildcard or prefix cross-talk
    assert store.latest("a_") != store.latest("ab")
    assert store.latest("ab") is None
    assert store.latest("%") is None
    all_names = [m.name for m in store.versions(limit=1000)]
    assert sorted(set(all_names)) == sorted(ODD_NAMES)


def test_versions_paging_and_sort(store: MetadataStore) -> None:
    rng = random.Random(7)
    plan = list(zip(["b", "a", "A", "ä", "a/b", "a b", "z", "Z1"], range(1, 9)))
    adds = [name for name, n in plan for _ in range(n % 4 + 1)]
    rng.shuffle(adds)
    for name in adds:
        store.add_version(name, len(name), b64hash(name.encode()))
    expected = sorted(
        (name, v) for name, n in plan for v in range(1, n % 4 + 2)
    )  # Python sorts by code point, as both backends must
    assert [(m.name, m.version) for m in store.versions(limit=1000)] == expected
    paged: list[tuple[str, int]] = []
    offset = 0
    while True:
        page = store.versions(offset=offset, limit=4)
        assert len(page) <= 4
        if not page:
            break
        paged.extend((m.name, m.version) for m in page)
        offset += len(page)
    assert paged == expected
    assert [m.version for m in store.versions("a", offset=1, limit=1)] == [2]
    assert store.versions("a", offset=10) == []
    assert store.versions("nobody") == []


def test_has_hash_and_hash_size(store: MetadataStore) -> None:
    # Hashes with the characters the book's q= queries mangled: '+', '/', '='.
    tricky = "+/+/abc+def/==" + "A" * 30
    spaced = tricky.replace("+", " ")
    h = b64hash(b"payload")
    store.add_version("x", 7, h)
    store.add_version("y", 12345, tricky)
    assert store.has_hash(h) and store.has_hash(tricky)
    assert not store.has_hash(spaced)
    assert not store.has_hash(tricky.lower())
    assert not store.has_hash(b64hash(b"other"))
    assert store.hash_size(h) == 7
    assert store.hash_size(tricky) == 12345
    assert store.hash_size(spaced) is None
    # Any version of any name counts.
    store.add_version("x", 0, "")
    assert store.has_hash(h)


def test_hashes_paging(store: MetadataStore) -> None:
    hashes = sorted({b64hash(b"%d" % i) for i in range(23)})
    for i, h in enumerate(hashes):
        store.add_version(f"n{i % 5}", i + 1, h)
        if i % 4 == 0:
            store.add_version(f"dup{i}", i + 1, h)  # same content under another name
            store.add_version(f"n{i % 5}", 0, "")  # delete markers are not hashes
    collected: list[str] = []
    after: str | None = None
    while True:
        page = store.hashes(after=after, limit=6)
        assert len(page) <= 6
        if not page:
            break
        collected.extend(page)
        after = page[-1]
    assert collected == hashes
    assert store.hashes(limit=1000) == hashes
    assert store.hashes(after=hashes[10], limit=3) == hashes[11:14]


def test_names_with_versions_over(store: MetadataStore) -> None:
    h = b64hash(b"r")
    over: dict[str, list[int]] = {}
    for i in range(14):  # more than the book's 10 terms buckets
        name = f"keep/{i:02d} ü"
        for _ in range(6):
            store.add_version(name, 1, h)
        store.delete_version(name, 2 + i % 3)  # non-contiguous versions
        over[name] = [v for v in range(1, 7) if v != 2 + i % 3]
    for i in range(5):
        store.add_version(f"few{i}", 1, h)
        store.add_version(f"few{i}", 1, h)
    store.add_version("exactly3", 1, h)
    store.add_version("exactly3", 1, h)
    store.add_version("exactly3", 1, h)
    expected = sorted(over.items())

    assert store.names_with_versions_over(3, limit=1000) == expected
    paged: list[tuple[str, list[int]]] = []
    after: str | None = None
    while True:
        page = store.names_with_versions_over(3, after=after, limit=4)
        assert len(page) <= 4
        if not page:
            break
        paged.extend(page)
        after = page[-1][0]
    assert paged == expected
    assert len(store.names_with_versions_over(1, limit=1000)) == 14 + 5 + 1
    assert store.names_with_versions_over(5, limit=1000) == []
    assert store.names_with_versions_over(3, after=expected[-1][0]) == []


def test_check(store: MetadataStore, spec: StoreSpec) -> None:
    description = store.check()
    assert isinstance(description, str) and description
    if spec.kind == "sqlite":
        assert description == f"sqlite:{spec.location}"
    else:
        assert description.startswith("elasticsearch ")


def test_many_threads_read_while_writing(store: MetadataStore) -> None:
    h = b64hash(b"rw")
    store.add_version("rw", 1, h)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(30):
                latest = store.latest("rw")
                assert latest is not None and latest.version >= 1
                assert store.has_hash(h)
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(6)]
    for t in readers:
        t.start()
    for _ in range(20):
        store.add_version("rw", 1, h)
    for t in readers:
        t.join()
    assert not errors
    assert store.latest("rw").version == 21  # type: ignore[union-attr]


# -- backend-independent helpers (no server needed) ------------------------------------------


def test_open_store_sqlite_creates_parent_dirs(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "metadata.db"
    with open_store(Config(metadata_db=path)) as store:
        assert isinstance(store, SqliteStore)
        assert path.exists()
        assert store.check() == f"sqlite:{path}"


def test_sqlite_group_commit_fails_a_refused_version_alone(tmp_path: Path) -> None:
    """Versions committed together: one the database refuses fails on its own, the rest of
    its batch is written, and a batch whose commit fails fails as a whole."""
    import sqlite3

    from lib.metadata.sqlite import _PendingVersion

    path = tmp_path / "md.db"
    with SqliteStore(path) as store:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON versions "
                         "WHEN NEW.name = 'refused' BEGIN SELECT RAISE(ABORT, 'no'); END")
        batch = [_PendingVersion(n, 1, b64hash(n.encode())) for n in ("a", "refused", "a")]
        store._commit_batch(batch)
        assert [p.version for p in batch] == [1, 0, 2]
        assert batch[0].error is None and isinstance(batch[1].error, MetadataError)
        assert [m.version for m in store.versions("a")] == [1, 2]
        assert store.versions("refused") == []

        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")             # nobody else can write meanwhile
        try:
            original = store._open

            def impatient():
                conn = original()
                conn.execute("PRAGMA busy_timeout=50")
                return conn

            store._idle.clear()
            store._open = impatient
            batch = [_PendingVersion("b", 1, b64hash(b"b"))]
            store._commit_batch(batch)
            assert isinstance(batch[0].error, MetadataError)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert store.add_version("b", 1, b64hash(b"b")).version == 1


def test_open_store_elasticsearch_is_lazy_and_reports_unreachable() -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    store = open_store(Config(es_server="127.0.0.1:9", es_index="x", http_timeout=2))
    try:
        assert isinstance(store, ElasticsearchStore)
        with pytest.raises(MetadataError):
            store.check()
        with pytest.raises(MetadataError):
            store.latest("a")
    finally:
        store.close()


def test_parse_total_hits() -> None:
    assert parse_total_hits(0) == 0
    assert parse_total_hits(42) == 42  # ES 6: a plain integer
    assert parse_total_hits({"value": 0, "relation": "eq"}) == 0  # ES 7/8
    assert parse_total_hits({"value": 10000, "relation": "gte"}) == 10000
    for garbage in [
        None,
        "3",
        -1,
        True,
        1.5,
        {},
        {"value": 3},
        {"value": "3", "relation": "eq"},
        {"value": 3, "relation": "about"},
        {"value": True, "relation": "eq"},
        {"value": 3, "relation": "eq", "extra": 1},
        [3],
    ]:
        with pytest.raises(MetadataError):
            parse_total_hits(garbage)


def test_es_helpers() -> None:
    assert server_url("127.0.0.1:9200") == "http://127.0.0.1:9200"
    assert server_url("https://es.example:9243") == "https://es.example:9243"
    assert server_url("localhost") == "http://localhost:9200"
    assert doc_id("a b/c", 3) == "a b/c_3"
    long_name = "é" * 400
    long_id = doc_id(long_name, 12)
    assert len(long_id.encode()) <= 512 and long_id.endswith("_12")
    assert long_id != doc_id(long_name + "x", 12)


def test_metadata_value() -> None:
    m = Metadata("n", 1, 2, "h")
    assert m.to_book_json() == {"Name": "n", "Version": 1, "Size": 2, "Hash": "h"}
    assert not m.is_delete_marker
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.version = 3  # type: ignore[misc]
