"""The Elasticsearch store against the in-process emulator (``test_elasticsearch_emulator``):
the whole conformance suite, then what only this backend has to get right, its steps
between documents, with a crash simulated at each (a step that raises, leaving the documents
as a killed process would).

What this proves is the store's logic over the API as the emulator answers it; the real
server runs the same suite when ``ES_SERVER`` is set (``test_metadata_conformance``).
"""
from __future__ import annotations

import inspect
import uuid
from collections.abc import Iterator

import pytest

from lib.errors import BucketNotEmpty, ConditionNotMet, NoSuchBucket, NoSuchUpload
from lib.metadata import (Draft, MetadataError, MetadataStore, ObjectMeta, Part,
                          WriteCondition)
from lib.metadata.elasticsearch import ElasticsearchStore, doc_id, encode_version_id
from tests.unit import test_metadata_conformance as conformance
from tests.unit.test_elasticsearch_emulator import EmulatorServer
from tests.unit.test_metadata_conformance import StoreSpec, put

# Every conformance test that runs on a store, here on the emulator (with ``spec`` below).
store = conformance.store
for _name, _test in vars(conformance).items():
    if _name.startswith("test_") and callable(_test) and \
            {"store", "spec"} & set(inspect.signature(_test).parameters):
        globals()[_name] = _test


class Crash(BaseException):
    """Stands for the process dying at that point: no ``except Exception`` cleans up after
    it (the store undoes a failed step only for an Exception)."""


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    server = EmulatorServer()
    yield server
    server.close()


@pytest.fixture
def spec(emulator: EmulatorServer) -> Iterator[StoreSpec]:
    made = StoreSpec("elasticsearch", emulator.address, f"t-{uuid.uuid4().hex[:12]}")
    yield made
    conformance.drop_es(made)


def crash_on(monkeypatch, store: ElasticsearchStore, method: str, after: int = 0) -> None:
    """Make ``store.<method>`` raise Crash on its call number ``after`` + 1."""
    real = getattr(store, method)
    calls = []

    def dying(*args, **kwargs):
        calls.append(args)
        if len(calls) == after + 1:
            raise Crash(method)
        return real(*args, **kwargs)

    monkeypatch.setattr(store, method, dying)


@pytest.fixture
def docs(emulator: EmulatorServer, store: ElasticsearchStore):
    """The documents of one of the store's indices, as the emulator holds them."""
    def of(kind: str) -> dict[str, dict]:
        index = emulator.emulator.indices[store._indices[kind]]
        return {i: s for i, (s, _) in index.docs.items()}

    return of


# -- steps between documents -------------------------------------------------------------------

def test_a_writer_dying_before_its_commit_leaves_only_a_count_too_high(monkeypatch, store):
    put(store, "k", "h1")
    crash_on(monkeypatch, store, "_commit")
    with pytest.raises(Crash):
        put(store, "k", "h2")
    monkeypatch.undo()
    assert [v.hash for v in store.versions_of("v", "k")] == ["h1"]    # h2 never visible
    assert store.version("v", "k").hash == "h1"
    assert store.content("h2").refs == 1               # leak: counted, never collected
    third = put(store, "k", "h3")
    assert third.number == 2 and [v.number for v in store.versions_of("v", "k")] == [1, 2]
    assert [v.hash for v in store.versions_page("v", "", None, None, 10)] == ["h3", "h1"]


def test_a_removal_dying_after_its_commit_is_finished_by_the_next_writer(monkeypatch, store, docs):
    a = put(store, "k", "h1")
    put(store, "k", "h2")
    crash_on(monkeypatch, store, "_finish_removal")
    with pytest.raises(Crash):
        store.delete_version("v", "k", a.version_id)
    monkeypatch.undo()
    # Listed as removing: invisible at once, its content still counted.
    assert store.version("v", "k", a.version_id) is None
    assert [v.hash for v in store.versions_of("v", "k")] == ["h2"]
    assert store.content("h1").refs == 1
    put(store, "k", "h3")                              # the next writer finishes it
    assert store.content("h1").refs == 0
    assert encode_version_id(a.seq) not in docs("versions")


def test_a_removal_finished_twice_releases_once(store):
    a = put(store, "k", "h1")
    put(store, "k2", "h1", shared=True)
    doc, state = store._settled("v", "k")
    state.removing.append(a.seq)                       # what _remove commits
    state.count, state.latest = 0, None
    store._commit(doc, state)
    store._finish_removal("v", "k", a.seq)
    store._finish_removal("v", "k", a.seq)             # a second process, late
    assert store.content("h1").refs == 1               # k2 still holds its reference
    assert store.version("v", "k") is None and store._key("v", "k")[0] is None


def test_null_replacement_dying_after_commit(monkeypatch, store, docs):
    put(store, "k", "h1", bucket="u")
    crash_on(monkeypatch, store, "_finish_removal")
    with pytest.raises(Crash):
        put(store, "k", "h2", bucket="u")
    monkeypatch.undo()
    assert [v.hash for v in store.versions_of("u", "k")] == ["h2"]
    assert store.content("h1").refs == 1               # not yet released
    store.delete_object("u", "k")
    assert store.content("h1").refs == 0 and store.content("h2").refs == 0
    assert docs("versions") == {}


def test_an_unknown_commit_outcome_is_never_undone(monkeypatch, store):
    """A timeout on the key's commit: the version may exist, so its references stay."""
    real = store._commit

    def lost_answer(doc, state):
        real(doc, state)
        raise MetadataError("timed out")

    monkeypatch.setattr(store, "_commit", lost_answer)
    with pytest.raises(MetadataError):
        put(store, "k", "h1")
    monkeypatch.undo()
    assert store.version("v", "k").hash == "h1" and store.content("h1").refs == 1


def test_refused_writes_release_what_they_referenced(store, docs):
    put(store, "k", "h1")
    put(store, "m", "h0")
    with pytest.raises(ConditionNotMet):
        put(store, "k", "h2", condition=WriteCondition(absent=True))
    assert store.content("h2") is None
    upload = store.create_upload("v", "m", ObjectMeta())
    store.put_part(upload.upload_id, Part(1, "p1", 5, "e1"))
    with pytest.raises(ConditionNotMet):
        store.complete_upload(upload.upload_id, Draft("v", "m", 5, parts=(
            Part(1, "p1", 5, "e1"),)), WriteCondition(hash="nope", number=None, etag="*"))
    assert store.content("p1").refs == 1               # the upload's part only
    assert docs("parts") == {}                  # the manifest written is dropped
    assert store.upload(upload.upload_id) is not None  # open again


def test_a_part_written_after_its_upload_ended_is_taken_back(monkeypatch, store, docs):
    upload = store.create_upload("v", "m", ObjectMeta())
    real = store._reference

    def abort_meanwhile(draft):
        counted = real(draft)
        store.abort_upload(upload.upload_id)
        return counted

    monkeypatch.setattr(store, "_reference", abort_meanwhile)
    with pytest.raises(NoSuchUpload, match="ended meanwhile"):
        store.put_part(upload.upload_id, Part(1, "late", 5, "e"))
    monkeypatch.undo()
    assert store.content("late").refs == 0 and docs("upload_parts") == {}


def test_an_abort_that_died_is_finished_by_the_sweep(monkeypatch, store):
    upload = store.create_upload("v", "m", ObjectMeta())
    store.put_part(upload.upload_id, Part(1, "q", 5, "e"))
    crash_on(monkeypatch, store, "_drop_upload_parts")
    with pytest.raises(Crash):
        store.abort_upload(upload.upload_id)
    monkeypatch.undo()
    assert store.upload(upload.upload_id) is None      # aborting: gone for clients
    assert [u.upload_id for u in store.idle_uploads(0)] == [upload.upload_id]
    store.abort_upload(upload.upload_id)               # what the sweeper does
    assert store.content("q").refs == 0 and store.idle_uploads(0) == []


def test_a_put_racing_delete_bucket_takes_its_version_back(monkeypatch, store):
    """delete_bucket marks the bucket just after this PUT committed: the PUT, seeing the mark,
    takes its version back (or delete_bucket would drop a bucket that has a version)."""
    store.create_bucket("gone")
    real = store._commit

    def delete_bucket_after(doc, state):
        real(doc, state)
        monkeypatch.setattr(store, "_commit", real)
        store._cas("buckets", doc_id("bucket", "gone"), lambda d: (
            "put", {**d.source, "state": "deleting"}, None))

    monkeypatch.setattr(store, "_commit", delete_bucket_after)
    with pytest.raises(NoSuchBucket):
        put(store, "k", "h", bucket="gone")
    assert store.content("h").refs == 0
    assert store._key("gone", "k")[0] is None


def test_delete_bucket_refuses_while_a_key_has_versions_then_restores_it(store):
    put(store, "k", "h")
    with pytest.raises(BucketNotEmpty):
        store.delete_bucket("v")
    assert put(store, "k2", "h2").number == 1          # the bucket works again


def test_seqs_grow_per_key_across_stores_and_are_never_reused(spec: StoreSpec, store):
    other = spec.open()
    try:
        seqs = [put(s, "k", f"h{i}").seq for i, s in enumerate([store, other] * 5)]
    finally:
        other.close()
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_listing_pages_through_many_keys_with_search_after(store: MetadataStore):
    keys = [f"k{i:04d}" for i in range(2100)]
    for key in keys[:2100:7]:
        put(store, key, key)
    listed = conformance._list(store, limit=5000).rows
    assert [v.key for v in listed] == keys[:2100:7]


def test_indices_with_another_mapping_are_refused(emulator: EmulatorServer):
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    emulator.emulator.handle("PUT", f"/{prefix}-versions", {}, {"mappings": {
        "properties": {"name": {"type": "keyword"}, "size": {"type": "integer"}}}})
    store = ElasticsearchStore(emulator.address, prefix)
    try:
        with pytest.raises(MetadataError, match="lacks the metadata v2 mapping"):
            store.check()
    finally:
        store.drop_indices()
        store.close()
