"""One conformance suite for every MetadataStore backend.

SQLite and PostgreSQL always run, for real (PostgreSQL in a schema of its own per test,
dropped afterwards; ``TEST_POSTGRES_URL`` names the server, default the local one).  Neither
may skip: a PostgreSQL that cannot be reached fails the suite.

Elasticsearch runs when ``ES_SERVER`` names a reachable server (each test in indices of its own
prefix, deleted afterwards) and is skipped, saying why, otherwise: none can be installed on the
development machines.  ``tests/unit/test_elasticsearch_store.py`` runs this suite against an
in-process emulator of the Elasticsearch API meanwhile.
"""
from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lib.config import Config
from lib.errors import (BucketExists, BucketNotEmpty, ConditionNotMet, ContentGone,
                        InvalidPart, NoSuchBucket, NoSuchKey, NoSuchUpload)
from lib.metadata import (ENABLED, REPAIR_DONE, REPAIR_FAILED, SUSPENDED, UNVERSIONED, Draft,
                          MetadataError, MetadataStore, ObjectMeta, Part, RepairRecord,
                          WriteCondition, decode_version_id, encode_version_id, open_store)
from lib.metadata.elasticsearch import ElasticsearchStore
from lib.metadata.listing import Cursor, start_cursor, successor, walk
from lib.metadata.postgres import PostgresStore, split_url
from lib.metadata.sqlite import SqliteStore

POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@dataclasses.dataclass(frozen=True)
class StoreSpec:
    """Picklable recipe for a store, so child processes can open the same backend."""

    kind: str
    location: str
    #: Elasticsearch: the index prefix (ES_INDEX).
    index: str = ""

    def open(self) -> MetadataStore:
        if self.kind == "sqlite":
            return SqliteStore(self.location)
        if self.kind == "elasticsearch":
            return ElasticsearchStore(self.location, self.index, timeout=30,
                                      refresh_interval="100ms")
        return PostgresStore(self.location)


@functools.cache
def es_unreachable(server: str) -> str | None:
    """Why the Elasticsearch at ``server`` cannot be tested against (None: it can)."""
    probe = ElasticsearchStore(server, "tessera-probe", timeout=5)
    try:
        probe._request("GET", "/")
        return None
    except MetadataError as exc:
        return str(exc)
    finally:
        probe.close()


def es_spec() -> StoreSpec:
    """A spec with indices of its own on ES_SERVER, or a skip saying why there is none."""
    server = os.environ.get("ES_SERVER")
    if not server:
        pytest.skip("ES_SERVER is not set: no Elasticsearch to test against (none can be "
                    "installed on these machines)")
    reason = es_unreachable(server)
    if reason is not None:
        pytest.skip(f"ES_SERVER={server} is not reachable: {reason}")
    return StoreSpec("elasticsearch", server, f"tessera-test-{uuid.uuid4().hex[:12]}")


def drop_es(spec: StoreSpec) -> None:
    with ElasticsearchStore(spec.location, spec.index) as opened:
        opened.drop_indices()


@pytest.fixture(params=["sqlite", "postgresql",
                        pytest.param("elasticsearch", marks=pytest.mark.es)])
def spec(request, tmp_path: Path) -> Iterator[StoreSpec]:
    if request.param == "sqlite":
        yield StoreSpec("sqlite", str(tmp_path / "md.db"))
        return
    if request.param == "elasticsearch":
        made = es_spec()
        yield made
        drop_es(made)
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield StoreSpec("postgresql", f"{POSTGRES}?schema={schema}")
    PostgresStore(f"{POSTGRES}?schema={schema}").drop_schema()


@pytest.fixture
def store(spec: StoreSpec) -> Iterator[MetadataStore]:
    opened = spec.open()
    opened.create_bucket("v", versioning=ENABLED)
    opened.create_bucket("u")
    try:
        yield opened
    finally:
        opened.close()


def put(store: MetadataStore, key: str, content: str = "c", bucket: str = "v",
        size: int = 1, condition: WriteCondition | None = None, **kw):
    return store.put_version(Draft(bucket, key, size=size, hash=content, etag=f"e-{content}",
                                   **kw), condition)


# -- buckets -----------------------------------------------------------------------------------

def test_buckets(store: MetadataStore) -> None:
    assert [b.name for b in store.buckets()] == ["u", "v"]
    assert store.bucket("v").versioning == ENABLED
    assert store.bucket("u").versioning == UNVERSIONED
    assert store.bucket("nope") is None
    with pytest.raises(BucketExists) as caught:
        store.create_bucket("v")
    assert caught.value.bucket.name == "v"
    put(store, "k", bucket="u")
    with pytest.raises(BucketNotEmpty):
        store.delete_bucket("u")
    store.delete_object("u", "k")
    store.delete_bucket("u")
    assert store.bucket("u") is None
    with pytest.raises(NoSuchBucket):
        store.delete_bucket("u")
    with pytest.raises(NoSuchBucket):
        put(store, "k", bucket="u")
    assert store.set_versioning("v", SUSPENDED).versioning == SUSPENDED
    assert store.set_bucket_config("v", "origin", {"url": "http://x/{key}"}).config == {
        "origin": {"url": "http://x/{key}"}}
    assert store.set_bucket_config("v", "origin", None).config == {}
    assert store.ensure_bucket("book", versioning=ENABLED).versioning == ENABLED


def test_a_bucket_created_by_many_at_once_is_created_once(store: MetadataStore) -> None:
    """Two api servers starting together both ensure the book bucket: one creates it, the
    others see it exists (BucketExists), never a store error."""
    for round_ in range(10):                           # the race window is narrow
        name = f"raced{round_}"
        barrier = threading.Barrier(6)
        outcomes: list[str] = []

        def create() -> None:
            barrier.wait()
            try:
                store.create_bucket(name, "me")
                outcomes.append("created")
            except BucketExists as exc:
                outcomes.append("exists" if exc.bucket.name == name else repr(exc))
            except Exception as exc:                   # noqa: BLE001 - the failure to show
                outcomes.append(repr(exc))

        threads = [threading.Thread(target=create) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(outcomes) == ["created"] + ["exists"] * 5


def test_delete_marker_keeps_bucket_non_empty(store: MetadataStore) -> None:
    store.create_bucket("m", versioning=ENABLED)
    put(store, "k", bucket="m")
    store.delete_object("m", "k")
    with pytest.raises(BucketNotEmpty):
        store.delete_bucket("m")


# -- versions ----------------------------------------------------------------------------------

def test_versioned_puts_get_new_ids_and_numbers(store: MetadataStore) -> None:
    meta = ObjectMeta(content_type="text/plain", headers={"cache-control": "no-cache"},
                      user={"name": "wert ✓"}, checksums={"CRC32": "AAAAAA=="})
    a = put(store, "k", "h1", size=10, meta=meta)
    b = put(store, "k", "h2", size=2**40)
    assert (a.number, b.number) == (1, 2)
    assert a.version_id != b.version_id and decode_version_id(b.version_id) == b.seq
    latest = store.version("v", "k")
    assert latest.hash == "h2" and latest.size == 2**40 and latest.is_latest
    first = store.version("v", "k", a.version_id)
    assert first.meta == meta and not first.is_latest and first.etag == "e-h1"
    assert store.numbered("v", "k", 1).hash == "h1"
    assert store.numbered("v", "k", 3) is None and store.numbered("v", "k", -1) is None
    assert store.version("v", "k", "garbage") is None
    assert store.version("v", "k", encode_version_id(10**6)) is None
    assert store.version("v", "nothing") is None


def test_version_ids_are_never_reused(store: MetadataStore) -> None:
    a = put(store, "k", "h1")
    b = put(store, "k", "h2")
    store.delete_version("v", "k", b.version_id)
    c = put(store, "k", "h3")
    assert c.version_id not in (a.version_id, b.version_id)
    assert c.number == 3                        # numbers are not reused either


def test_delete_marker_and_delete_version(store: MetadataStore) -> None:
    a = put(store, "k", "h1")
    marker = store.delete_object("v", "k")
    assert marker.delete_marker and marker.is_latest and marker.number == 2
    assert store.version("v", "k").delete_marker
    assert [v.key for v in store.current_page("v", "", True, None, 10)] == []
    assert store.version("v", "k", a.version_id).hash == "h1"
    removed = store.delete_version("v", "k", marker.version_id)
    assert removed.delete_marker
    assert store.version("v", "k").version_id == a.version_id       # promoted back
    assert [v.key for v in store.current_page("v", "", True, None, 10)] == ["k"]
    assert store.delete_version("v", "k", "0000000000ffffff") is None
    store.delete_version("v", "k", a.version_id)
    assert store.version("v", "k") is None and store.versions_of("v", "k") == []


def test_unversioned_bucket_keeps_one_null_version(store: MetadataStore) -> None:
    put(store, "k", "h1", bucket="u")
    second = put(store, "k", "h2", bucket="u")
    assert second.is_null and second.version_id == "null"
    assert [v.hash for v in store.versions_of("u", "k")] == ["h2"]
    assert store.content("h1").refs == 0               # replaced: its content is released
    assert store.delete_object("u", "k") is None
    assert store.version("u", "k") is None
    assert store.content("h2").refs == 0


def test_suspended_bucket_replaces_null_and_keeps_older_ids(store: MetadataStore) -> None:
    kept = put(store, "k", "h1")
    store.set_versioning("v", SUSPENDED)
    put(store, "k", "h2")
    null = put(store, "k", "h3")
    ids = [v.version_id for v in store.versions_page("v", "k", None, None, 10)]
    assert ids == ["null", kept.version_id]
    assert null.is_null and store.version("v", "k", "null").hash == "h3"
    marker = store.delete_object("v", "k")            # suspended: a null delete marker
    assert marker.is_null and marker.delete_marker
    assert [v.version_id for v in store.versions_page("v", "k", None, None, 10)] == \
        ["null", kept.version_id]


def test_conditions_are_checked_with_the_write(store: MetadataStore) -> None:
    first = put(store, "k", "h1", condition=WriteCondition(absent=True))
    with pytest.raises(ConditionNotMet):
        put(store, "k", "h2", condition=WriteCondition(absent=True))
    with pytest.raises(ConditionNotMet):
        put(store, "k", "h2", condition=WriteCondition(etag="other"))
    put(store, "k", "h2", condition=WriteCondition(etag=first.etag))
    with pytest.raises(ConditionNotMet):
        put(store, "k", "h3", condition=WriteCondition(hash="h1"))
    put(store, "k", "h3", condition=WriteCondition(hash="h2", number=2))
    with pytest.raises(NoSuchKey):
        put(store, "new", "h", condition=WriteCondition(etag="*"))
    with pytest.raises(ConditionNotMet):
        store.delete_object("v", "k", WriteCondition(etag="nope"))
    store.delete_object("v", "k")
    put(store, "k", "h4", condition=WriteCondition(absent=True))   # a marker is "absent"
    assert [v.number for v in store.versions_of("v", "k")] == [1, 2, 3, 4, 5]
    assert store.content("h2").refs == 1                # refused writes referenced nothing


def test_invalid_arguments(store: MetadataStore) -> None:
    with pytest.raises(ValueError):
        store.put_version(Draft("v", "", size=1, hash="h"))
    with pytest.raises(ValueError):
        store.put_version(Draft("v", "k", size=-1, hash="h"))
    with pytest.raises(ValueError):
        store.put_version(Draft("v", "\ud800", size=1, hash="h"))
    with pytest.raises(ValueError):
        store.versions_of("v", "k", offset=-1)


def test_odd_keys_round_trip_and_sort_as_bytes(store: MetadataStore) -> None:
    keys = ["a", "a/b", "a//b", "/lead", "trail/", "a_b", "a%b", "ü", "日本", "🎉", "a b",
            "tab\tnl\n", "\x7f", "Z", "a0", "\U0010fffe"]
    for key in keys:
        put(store, key, key)
    listed = [v.key for v in store.current_page("v", "", True, None, 100)]
    assert listed == sorted(keys, key=lambda k: k.encode("utf-8"))
    for key in keys:
        assert store.version("v", key).hash == key
    # no LIKE: _ and % are plain characters
    assert [v.key for v in store.current_page("v", "a_", True, "a_c", 10)] == ["a_b"]


# -- listing -------------------------------------------------------------------------------------

def _list(store: MetadataStore, prefix="", delimiter="", marker="", limit=1000):
    def fetch(cursor: Cursor, end, n):
        return store.current_page("v", cursor.key, cursor.inclusive, end, n)

    return walk(fetch, lambda v: Cursor(v.key), lambda v: v.key, prefix, delimiter,
                start_cursor(prefix, delimiter, marker), limit)


def test_listing_prefix_delimiter_and_markers(store: MetadataStore) -> None:
    for key in ["a", "a/1", "a/2", "a/b/3", "ab", "b/x", "b/y", "c", "d//e"]:
        put(store, key)
    page = _list(store, delimiter="/")
    assert page.prefixes == ["a/", "b/", "d/"] and [v.key for v in page.rows] == ["a", "ab", "c"]
    assert [kind for kind, _ in page.items] == ["row", "prefix", "row", "prefix", "row", "prefix"]
    page = _list(store, prefix="a/", delimiter="/")
    assert [v.key for v in page.rows] == ["a/1", "a/2"] and page.prefixes == ["a/b/"]
    first = _list(store, delimiter="/", limit=2)
    assert first.truncated and [i[1] if i[0] == "prefix" else i[1].key
                                for i in first.items] == ["a", "a/"]
    rest = _list(store, delimiter="/", marker="a/", limit=10)
    assert not rest.truncated and [v.key for v in rest.rows] == ["ab", "c"]
    assert _list(store, prefix="b/", limit=1).truncated
    assert not _list(store, prefix="b/", limit=2).truncated
    assert _list(store, limit=0).items == []
    assert [v.key for v in _list(store, prefix="zz").rows] == []
    assert _list(store, delimiter="//").prefixes == ["d//"]


def test_listing_hides_delete_markers_and_shows_latest(store: MetadataStore) -> None:
    put(store, "a", "1")
    put(store, "a", "2")
    put(store, "b")
    store.delete_object("v", "b")
    rows = _list(store).rows
    assert [(v.key, v.etag) for v in rows] == [("a", "e-2")]


def test_versions_page_orders_and_resumes(store: MetadataStore) -> None:
    a1, a2 = put(store, "a", "1"), put(store, "a", "2")
    b1 = put(store, "b", "3")
    everything = store.versions_page("v", "", None, None, 10)
    assert [(v.key, v.version_id) for v in everything] == [
        ("a", a2.version_id), ("a", a1.version_id), ("b", b1.version_id)]
    assert [v.is_latest for v in everything] == [True, False, True]
    after = store.versions_page("v", "a", a2.seq, None, 10)
    assert [v.version_id for v in after] == [a1.version_id, b1.version_id]
    assert [v.key for v in store.versions_page("v", "a", None, "b", 10)] == ["a", "a"]


def test_versions_of_and_keys_with_versions_over(store: MetadataStore) -> None:
    for i in range(4):
        put(store, "many", str(i))
    put(store, "one")
    assert [v.number for v in store.versions_of("v", "many", offset=1, limit=2)] == [2, 3]
    assert [(v.key, v.number) for v in store.versions_of("v", None, limit=10)][-1] == ("one", 1)
    over = store.keys_with_versions_over("v", 2)
    assert [(key, [v.number for v in versions]) for key, versions in over] == [
        ("many", [1, 2, 3, 4])]
    assert store.keys_with_versions_over("v", 2, after="many") == []


# -- key search ----------------------------------------------------------------------------------

def _search_all(store: MetadataStore, bucket, q: str, limit: int) -> list[tuple[str, str]]:
    """Every page of a search, followed by its cursors; no key may come twice."""
    found, after = [], None
    while True:
        page, after = store.search_keys(bucket, q, limit, after)
        assert len(page) <= limit
        found += [(v.bucket, v.key) for v in page]
        if after is None:
            assert len(found) == len(set(found))
            return found
        assert len(page) == limit


def test_search_keys_by_substring(store: MetadataStore) -> None:
    for key in ["logs/app.LOG", "logs/web.log", "img/cat.png", "a_log%", "catalog", "x"]:
        put(store, key)
    put(store, "logs/old.log", bucket="u")
    put(store, "blog", content="c2")
    store.delete_object("v", "blog")                     # a delete marker: not listed
    assert sorted(_search_all(store, "v", "log", 100)) == [
        ("v", "a_log%"), ("v", "catalog"), ("v", "logs/app.LOG"), ("v", "logs/web.log")]
    everywhere = _search_all(store, None, "LOG", 2)       # ASCII case ignored, paged by 2
    assert sorted(everywhere) == sorted([("u", "logs/old.log"), ("v", "a_log%"),
                                         ("v", "catalog"), ("v", "logs/app.LOG"),
                                         ("v", "logs/web.log")])
    assert _search_all(store, None, "_log%", 10) == [("v", "a_log%")]   # % and _ are literal
    assert _search_all(store, "v", "g/c", 10) == [("v", "img/cat.png")]
    assert _search_all(store, "v", "nothing-like-it", 10) == []
    (found,), _ = store.search_keys("v", "web", 10)
    assert found.size == 1 and found.number == 1 and found.is_latest


def test_search_keys_shorter_than_a_trigram_is_a_prefix(store: MetadataStore) -> None:
    for key in ["ab1", "ab2", "Ab3", "zab"]:
        put(store, key)
    put(store, "ab9", bucket="u")
    assert _search_all(store, "v", "ab", 1) == [("v", "ab1"), ("v", "ab2")]
    assert _search_all(store, None, "ab", 2) == [("u", "ab9"), ("v", "ab1"), ("v", "ab2")]
    assert _search_all(store, None, "A", 10) == [("v", "Ab3")]
    for bad in [("", None), ("ab", "not a cursor"), ("abc", "not a cursor")]:
        with pytest.raises(ValueError):
            store.search_keys("v", bad[0], 10, bad[1])


def test_usage(store: MetadataStore) -> None:
    put(store, "a", "h1", size=10)
    put(store, "a", "h2", size=20)
    put(store, "b", "h1", size=10)
    store.delete_object("v", "b")
    usage = store.usage()
    assert (usage.buckets, usage.objects, usage.versions) == (2, 1, 4)
    assert (usage.logical_bytes, usage.content_bytes) == (40, 30)


# -- contents ----------------------------------------------------------------------------------

def test_content_references_and_collection(store: MetadataStore) -> None:
    a = put(store, "k1", "shared")
    put(store, "k2", "shared", shared=True)
    assert store.content("shared").refs == 2 and store.has_hash("shared")
    assert store.hash_size("shared") == 1
    store.delete_version("v", "k1", a.version_id)
    assert store.content("shared").refs == 1
    store.delete_version("v", "k2", store.version("v", "k2").version_id)
    gone = store.content("shared")
    assert gone.refs == 0 and gone.unreferenced_since is not None
    assert store.claim_unreferenced("shared", older_than=3600) is False   # in its grace
    assert [c.hash for c in store.unreferenced(older_than=0)] == ["shared"]
    assert store.touch_content("shared")                 # a writer shares it again
    assert store.claim_unreferenced("shared", older_than=0) is True
    assert store.content("shared") is None and not store.has_hash("shared")
    with pytest.raises(ContentGone):
        put(store, "k3", "shared", shared=True)
    assert store.touch_content("shared") is False
    put(store, "k3", "shared")                           # stored again: known again
    assert store.hashes() == ["shared"] and store.hashes(after="shared") == []


def test_delete_marker_does_not_release_content(store: MetadataStore) -> None:
    put(store, "k", "h")
    store.delete_object("v", "k")
    assert store.content("h").refs == 1


# -- multipart -----------------------------------------------------------------------------------

def _part(number: int, hash_: str, size: int = 5) -> Part:
    return Part(number, hash_, size, f"etag-{hash_}", {"CRC32": "x"})


def test_multipart_complete_is_a_manifest(store: MetadataStore) -> None:
    meta = ObjectMeta(content_type="video/mp4")
    upload = store.create_upload("v", "big", meta)
    assert store.upload(upload.upload_id).meta == meta
    for number, hash_ in [(1, "p1"), (2, "p2"), (3, "p3"), (2, "p2b")]:   # 2 re-sent
        store.put_part(upload.upload_id, _part(number, hash_), md5=f"md5-{hash_}")
    assert [p.hash for p in store.upload_parts(upload.upload_id)] == ["p1", "p2b", "p3"]
    assert [p.number for p in store.upload_parts(upload.upload_id, after=1, limit=1)] == [2]
    assert store.content("p2").refs == 0                 # the replaced part is released
    chosen = (_part(1, "p1"), _part(3, "p3"))
    with pytest.raises(InvalidPart):
        store.complete_upload(upload.upload_id, Draft("v", "big", 5, etag="m-2",
                                                      parts=(_part(2, "p2"),)))
    version = store.complete_upload(upload.upload_id, Draft("v", "big", 10, etag="m-2",
                                                            meta=meta, parts=chosen))
    assert version.parts == 2 and version.size == 10 and version.hash == ""
    again = store.complete_upload(upload.upload_id, None)
    assert again.version_id == version.version_id
    assert store.content("p2b").refs == 0 and store.content("p1").refs == 1
    parts = store.parts(version)
    assert [(p.number, p.offset) for p in parts] == [(1, 0), (3, 5)]
    assert [p.number for p in store.parts(version, offset=7)] == [3]
    assert [p.number for p in store.parts(version, offset=5)] == [3]
    assert [p.number for p in store.parts(version, offset=4)] == [1, 3]
    assert store.version("v", "big").meta.content_type == "video/mp4"
    with pytest.raises(NoSuchUpload):
        store.put_part(upload.upload_id, _part(4, "p4"))
    store.delete_version("v", "big", version.version_id)
    assert store.content("p1").refs == 0 and store.content("p3").refs == 0


def test_multipart_abort_listing_and_idle(store: MetadataStore) -> None:
    one = store.create_upload("v", "a", ObjectMeta())
    two = store.create_upload("v", "a", ObjectMeta())
    three = store.create_upload("v", "b", ObjectMeta())
    assert one.upload_id < two.upload_id
    page = store.uploads_page("v", "", None, None, 10)
    assert [u.upload_id for u in page] == [one.upload_id, two.upload_id, three.upload_id]
    assert [u.upload_id for u in store.uploads_page("v", "a", one.upload_id, None, 10)] == [
        two.upload_id, three.upload_id]
    store.put_part(one.upload_id, _part(1, "q"))
    assert store.abort_upload(one.upload_id) is True
    assert store.abort_upload(one.upload_id) is False
    assert store.content("q").refs == 0
    assert store.upload(one.upload_id) is None
    with pytest.raises(NoSuchUpload):
        store.put_part(one.upload_id, _part(1, "q"))
    with pytest.raises(NoSuchUpload):
        store.complete_upload("nope", Draft("v", "a", 5, parts=(_part(1, "q"),)))
    assert {u.upload_id for u in store.idle_uploads(older_than=0)} == {
        two.upload_id, three.upload_id}
    assert store.idle_uploads(older_than=3600) == []
    store.put_part(two.upload_id, _part(1, "r"))
    store.complete_upload(two.upload_id, Draft("v", "a", 5, parts=(_part(1, "r"),)))
    store.forget_upload(two.upload_id)
    assert store.upload(two.upload_id) is None
    store.forget_upload(three.upload_id)                 # in progress: not forgotten
    assert store.upload(three.upload_id) is not None


def test_delete_bucket_aborts_its_uploads(store: MetadataStore) -> None:
    store.create_bucket("tmp")
    upload = store.create_upload("tmp", "k", ObjectMeta())
    store.put_part(upload.upload_id, _part(1, "z"))
    store.delete_bucket("tmp")
    assert store.upload(upload.upload_id) is None and store.content("z").refs == 0


def test_complete_checks_condition(store: MetadataStore) -> None:
    put(store, "k", "old")
    upload = store.create_upload("v", "k", ObjectMeta())
    store.put_part(upload.upload_id, _part(1, "n"))
    with pytest.raises(ConditionNotMet):
        store.complete_upload(upload.upload_id, Draft("v", "k", 5, parts=(_part(1, "n"),)),
                              WriteCondition(absent=True))
    assert store.version("v", "k").hash == "old" and store.upload(upload.upload_id) is not None


# -- records ---------------------------------------------------------------------------------------

def test_records(store: MetadataStore) -> None:
    store.put_record("fault", "r1", {"name": "one", "n": 1})
    store.put_record("fault", "r1", {"name": "uno"})
    store.put_record("fault", "r2", {"name": "two"})
    assert store.record("fault", "r1") == {"name": "uno"}
    assert [i for i, _ in store.records("fault")] == ["r1", "r2"]
    assert store.delete_record("fault", "r1") and not store.delete_record("fault", "r1")
    assert store.record("fault", "r1") is None and store.records("other") == []


# -- the repair log ----------------------------------------------------------------------------

def test_repair_log_keeps_the_newest_records_and_counts_every_one(store: MetadataStore) -> None:
    assert store.repairs() == [] and store.repair_counts() == (0, 0)
    store.repairs_kept = 3
    first = store.record_repair(RepairRecord.finished("h1", [4, 1], by="127.0.2.1:1"))
    assert first.seq > 0 and first.shards == (1, 4) and first.outcome == REPAIR_DONE
    for i in range(2, 5):
        store.record_repair(RepairRecord.finished(f"h{i}", [i % 6], by="worker"))
    store.record_repair(RepairRecord.finished("h5", [2], "only shards [0, 1] are left",
                                              by="worker"))
    listed = store.repairs()
    assert [r.hash for r in listed] == ["h5", "h4", "h3"]            # newest first, pruned
    assert listed[0].seq > listed[1].seq > listed[2].seq > first.seq
    failed = listed[0]
    assert (failed.outcome, failed.error, failed.by, failed.shards) == (
        REPAIR_FAILED, "only shards [0, 1] are left", "worker", (2,))
    assert listed[1].error == "" and listed[1].shards == (4,)
    assert abs(failed.time - first.time) < 60
    assert [r.hash for r in store.repairs(limit=2)] == ["h5", "h4"]
    assert store.repair_counts() == (4, 1)                           # counters never pruned


def test_repair_log_refuses_what_it_cannot_store(store: MetadataStore) -> None:
    with pytest.raises(ValueError):
        store.record_repair(RepairRecord(0.0, "h", (), "maybe"))
    with pytest.raises(ValueError):
        store.record_repair(RepairRecord(0.0, "", (), REPAIR_DONE))
    with pytest.raises(ValueError):
        store.record_repair(RepairRecord(0.0, "h", (-1,), REPAIR_DONE))
    with pytest.raises(ValueError):
        store.repairs(limit=0)
    long = RepairRecord.finished("h", [], "x" * 10_000)
    assert len(long.error) == 500 and store.record_repair(long).error == long.error
    assert store.repair_counts() == (0, 1)


def test_concurrent_repair_records_get_distinct_seqs(store: MetadataStore) -> None:
    threads, each = 6, 5
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            start.wait()
            for n in range(each):
                store.record_repair(RepairRecord.finished(f"h{i}-{n}", [i % 6],
                                                          None if n % 2 else "no"))
        except BaseException as exc:       # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert not errors
    listed = store.repairs(limit=1000)
    assert len(listed) == threads * each == len({r.seq for r in listed})
    assert {r.hash for r in listed} == {f"h{i}-{n}" for i in range(threads) for n in range(each)}
    assert store.repair_counts() == (threads * 2, threads * 3)


# -- concurrency -------------------------------------------------------------------------------------

def test_concurrent_writers_of_one_key_threads(store: MetadataStore) -> None:
    threads, each = 8, 20
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def worker(i: int) -> None:
        try:
            start.wait()
            for j in range(each):
                put(store, "hot", f"{i}-{j}")
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors
    stored = store.versions_of("v", "hot", limit=1000)
    assert [v.number for v in stored] == list(range(1, threads * each + 1))
    assert sorted(v.hash for v in stored) == sorted(f"{i}-{j}" for i in range(threads)
                                                    for j in range(each))
    assert sum(v.is_latest for v in stored) == 1


def test_create_only_race_has_one_winner(store: MetadataStore) -> None:
    threads = 12
    outcomes: list[str] = []
    start = threading.Barrier(threads)

    def worker(i: int) -> None:
        start.wait()
        try:
            put(store, "once", f"w{i}", condition=WriteCondition(absent=True))
            outcomes.append("won")
        except ConditionNotMet:
            outcomes.append("lost")

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert sorted(outcomes) == ["lost"] * (threads - 1) + ["won"]
    assert len(store.versions_of("v", "once")) == 1


def _put_many(spec: StoreSpec, tag: int, count: int, start, results) -> None:
    """Child process body: its own store, ``count`` versions of one key."""
    store = spec.open()
    try:
        start.wait(timeout=30)
        got = [put(store, "shared", f"{tag}-{i}").number for i in range(count)]
        results.put((tag, got))
    except BaseException as exc:
        results.put((tag, repr(exc)))
    finally:
        store.close()


def test_concurrent_writers_of_one_key_processes(spec: StoreSpec,
                                                  store: MetadataStore) -> None:
    processes, each = 2, 60
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(processes), ctx.Queue()
    children = [ctx.Process(target=_put_many, args=(spec, tag, each, start, results))
                for tag in range(processes)]
    for child in children:
        child.start()
    outcomes = dict(results.get(timeout=120) for _ in children)
    for child in children:
        child.join(timeout=10)
    assert all(isinstance(v, list) for v in outcomes.values()), outcomes
    got = sorted(n for numbers in outcomes.values() for n in numbers)
    assert got == list(range(1, processes * each + 1))
    assert len(store.versions_of("v", "shared", limit=1000)) == processes * each


# -- backends ------------------------------------------------------------------------------------------

def test_check_names_the_backend(store: MetadataStore, spec: StoreSpec) -> None:
    assert store.check().startswith(spec.kind)


def test_listing_helpers() -> None:
    assert successor("a") == "b" and successor("a/") == "a0"
    assert successor("\U0010ffff") is None and successor("a\U0010ffff") == "b"
    assert successor("\ud7ff") == "\ue000"
    assert start_cursor("p/", "/", "p/a/x") == Cursor(successor("p/a/"), None, True)
    assert start_cursor("p/", "", "a") == Cursor("p/", None, True)


def test_open_store_selects_backend(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "metadata.db"
    with open_store(Config(metadata_db=path)) as opened:
        assert isinstance(opened, SqliteStore) and path.exists()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    url = f"{POSTGRES}?schema={schema}"
    with open_store(Config(metadata_url=url)) as opened:
        assert isinstance(opened, PostgresStore)
        opened.drop_schema()
    assert split_url("postgresql://h/db?schema=s_1&sslmode=disable") == (
        "postgresql://h/db?sslmode=disable", "s_1")
    with pytest.raises(ValueError):
        split_url("postgresql://h/db?schema=x;drop")


def test_postgres_unreachable_is_a_metadata_error() -> None:
    with pytest.raises(MetadataError):
        PostgresStore("postgresql://postgres@127.0.0.1:9/test?connect_timeout=1")


def test_sqlite_migrates_a_first_release_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE versions (name TEXT NOT NULL, version INTEGER NOT NULL, "
                     "size INTEGER NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (name, version))")
        conn.executemany("INSERT INTO versions VALUES (?, ?, ?, ?)", [
            ("a", 1, 3, "h1"), ("a", 2, 4, "h2"), ("a", 3, 0, ""), ("b", 1, 5, "h1")])
    with SqliteStore(path, book_bucket="book") as migrated:
        assert migrated.bucket("book").versioning == ENABLED
        assert [(v.number, v.delete_marker) for v in migrated.versions_of("book", "a")] == [
            (1, False), (2, False), (3, True)]
        assert migrated.version("book", "a").delete_marker
        assert migrated.numbered("book", "b", 1).hash == "h1"
        assert migrated.content("h1").refs == 2
        assert put(migrated, "a", "h3", bucket="book").number == 4
        assert [v.key for v in migrated.current_page("book", "", True, None, 10)] == ["a", "b"]
    with SqliteStore(path) as again:                       # migrated once, then left alone
        assert again.check() == f"sqlite:{path}"
        assert len(again.versions_of("book", "a")) == 4


def test_sqlite_migrates_schema_2_in_place(tmp_path: Path) -> None:
    """A database of schema 2 (no key search) gets its index built from its current keys."""
    path = tmp_path / "v2.db"
    with SqliteStore(path) as store:
        store.create_bucket("v", versioning=ENABLED)
        put(store, "logs/a.log")
        put(store, "gone.log")
        store.delete_object("v", "gone.log")
    with sqlite3.connect(path) as conn:                  # back to what schema 2 was
        for statement in ["DROP TRIGGER current_added", "DROP TRIGGER current_removed",
                          "DROP TABLE key_search", "DROP TABLE key_ids",
                          "DROP TABLE repair_log", "DROP TABLE repair_totals",
                          "PRAGMA user_version = 2"]:
            conn.execute(statement)
    with SqliteStore(path) as migrated:
        assert migrated.check() == f"sqlite:{path}"
        assert [v.key for v in migrated.search_keys("v", ".log")[0]] == ["logs/a.log"]
        put(migrated, "new.log")
        assert sorted(v.key for v in migrated.search_keys(None, "log")[0]) == [
            "logs/a.log", "new.log"]
        assert migrated.record_repair(RepairRecord.finished("h", [1])).seq == 1


def test_sqlite_migrates_schema_3_in_place(tmp_path: Path) -> None:
    """A database of schema 3 (no repair log) keeps its data and gets an empty log."""
    path = tmp_path / "v3.db"
    with SqliteStore(path) as store:
        store.create_bucket("v", versioning=ENABLED)
        put(store, "kept")
    with sqlite3.connect(path) as conn:                  # back to what schema 3 was
        for statement in ["DROP TABLE repair_log", "DROP TABLE repair_totals",
                          "PRAGMA user_version = 3"]:
            conn.execute(statement)
    with SqliteStore(path) as migrated:
        assert migrated.check() == f"sqlite:{path}"
        assert migrated.version("v", "kept").hash == "c"
        assert migrated.repairs() == [] and migrated.repair_counts() == (0, 0)
        migrated.record_repair(RepairRecord.finished("h", [0, 5], by="127.0.2.1:1"))
    with SqliteStore(path) as again:                     # migrated once, then left alone
        assert [(r.hash, r.shards) for r in again.repairs()] == [("h", (0, 5))]
        assert again.repair_counts() == (1, 0)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (4,)


def test_postgres_migrates_schema_2_with_a_trigram_index() -> None:
    url = f"{POSTGRES}?schema=t_{uuid.uuid4().hex[:16]}"
    store = PostgresStore(url)
    try:
        assert store.trigram
        store._run(lambda tx: tx.run("DROP INDEX current_key_trgm"))
        store._run(lambda tx: tx.run("UPDATE tessera_schema SET version = 2"))
        store.close()
        store = PostgresStore(url)
        assert store.check().startswith("postgresql:")
        assert store._read(lambda tx: tx.one(
            "SELECT indexname FROM pg_indexes WHERE indexname = 'current_key_trgm' "
            "AND schemaname = current_schema()")) == ("current_key_trgm",)
    finally:
        store.drop_schema()
        store.close()


def test_postgres_migrates_schema_3_with_a_repair_log() -> None:
    url = f"{POSTGRES}?schema=t_{uuid.uuid4().hex[:16]}"
    store = PostgresStore(url)
    try:
        store.create_bucket("v", versioning=ENABLED)
        put(store, "kept")
        store._run(lambda tx: tx.run("DROP TABLE repair_log"))
        store._run(lambda tx: tx.run("DROP TABLE repair_totals"))
        store._run(lambda tx: tx.run("UPDATE tessera_schema SET version = 3"))
        store.close()
        store = PostgresStore(url)
        assert store.check().startswith("postgresql:")
        assert store.version("v", "kept").hash == "c" and store.repair_counts() == (0, 0)
        store.record_repair(RepairRecord.finished("h", [3], "gone", by="worker"))
        assert [(r.outcome, r.error) for r in store.repairs()] == [(REPAIR_FAILED, "gone")]
    finally:
        store.drop_schema()
        store.close()


def test_sqlite_group_commit_fails_a_refused_write_alone(tmp_path: Path) -> None:
    from lib.metadata.sqlite import _Pending

    path = tmp_path / "md.db"
    with SqliteStore(path) as store:
        store.create_bucket("v", versioning=ENABLED)
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON versions "
                         "WHEN NEW.key = 'refused' BEGIN SELECT RAISE(ABORT, 'no'); END")
        batch = [_Pending(lambda tx, k=k: store._insert(tx, Draft("v", k, 1, "h"), None,
                                                         ENABLED))
                 for k in ("a", "refused", "a")]
        store._commit_batch(batch)
        assert batch[0].error is None and isinstance(batch[1].error, MetadataError)
        assert [v.number for v in store.versions_of("v", "a")] == [1, 2]
        assert store.versions_of("v", "refused") == []
