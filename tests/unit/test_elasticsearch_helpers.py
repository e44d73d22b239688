"""The Elasticsearch store's pure parts, without any server: names, documents, queries, and
the parsing of answers (whose shape, when unknown, must stop the caller, never be guessed)."""
from __future__ import annotations

import pytest

from lib.config import Config
from lib.metadata import Draft, MetadataError, ObjectMeta, Part, open_store
from lib.metadata.elasticsearch import (
    COUNTER_ID, FIELDS, MAPPINGS, Doc, ElasticsearchStore, KeyState, _display, check_mapping,
    doc_id, index_names, key_id, key_range, parse_bulk, parse_get, parse_hits,
    parse_total_hits, resume_query, server_url, version_from_source, version_source)


def test_server_url_and_display():
    assert server_url("127.0.0.1") == "http://127.0.0.1:9200"
    assert server_url(" 127.0.0.1:9201 ") == "http://127.0.0.1:9201"
    assert server_url("[::1]") == "http://[::1]:9200"
    assert server_url("https://u:p@127.0.0.1:9243/es") == "https://u:p@127.0.0.1:9243/es"
    assert _display("https://u:p@127.0.0.1:9243/es/") == "127.0.0.1:9243/es"


def test_index_names_under_the_prefix():
    assert index_names("metadata") == {kind: f"metadata-{kind}" for kind in FIELDS}
    for bad in ("Metadata", "-x", "a b", "a/b", "a,b", "a*", ""):
        with pytest.raises(MetadataError):
            index_names(bad)


def test_doc_ids_are_fixed_length_hex_and_unambiguous():
    assert doc_id("key", "a", "b/c") != doc_id("key", "a/b", "c")
    assert doc_id("key", "a", "b") == key_id("a", "b") != key_id("b", "a")
    long_key = "ü" * 1024
    assert len(key_id("bucket", long_key)) == 64 and int(key_id("b", long_key), 16) >= 0
    assert COUNTER_ID not in {key_id("", ""), key_id("b", "k")}


def test_parse_total_hits_accepts_both_forms_and_nothing_else():
    assert parse_total_hits(7) == 7
    assert parse_total_hits({"value": 10000, "relation": "gte"}) == 10000
    for nonsense in ("lots", -1, True, None, {"value": 1}, {"value": 1, "relation": "lt"},
                     {"value": "1", "relation": "eq"}, {"value": 1, "relation": "eq", "x": 0}):
        with pytest.raises(MetadataError):
            parse_total_hits(nonsense)


def test_parse_get():
    found = {"_index": "i", "_id": "x", "found": True, "_seq_no": 4, "_primary_term": 2,
             "_source": {"a": 1}}
    assert parse_get(found) == Doc({"a": 1}, 4, 2)
    assert parse_get({"_index": "i", "_id": "x", "found": False}) is None
    for nonsense in ({**found, "_seq_no": None}, {**found, "_source": []},
                     {"error": {"type": "index_not_found_exception"}, "status": 404},
                     {"found": "yes"}, [], None):
        with pytest.raises(MetadataError):
            parse_get(nonsense)


def test_parse_hits():
    hit = {"_id": "x", "_source": {"key": "k"}, "sort": ["k"]}
    assert parse_hits({"hits": {"hits": [hit]}}) == [hit]
    assert parse_hits({"hits": {"total": {"value": 1, "relation": "eq"}, "hits": [hit]}})
    for nonsense in ({"hits": {"total": "lots", "hits": []}}, {"hits": {"hits": [{"_id": 1}]}},
                     {"hits": []}, {}, {"hits": {"hits": None}}):
        with pytest.raises(MetadataError):
            parse_hits(nonsense)


def test_parse_bulk():
    answer = {"errors": True, "items": [
        {"create": {"_id": "a", "status": 201, "result": "created"}},
        {"delete": {"_id": "b", "status": 404, "result": "not_found"}},
        {"update": {"_id": "c", "status": 404,
                    "error": {"type": "document_missing_exception"}}}]}
    assert parse_bulk(answer, 3) == [(201, "created"), (404, "not_found"),
                                     (404, "document_missing_exception")]
    with pytest.raises(MetadataError):
        parse_bulk(answer, 2)
    for items in ([{"create": {"status": "201"}}], [{}], [{"a": {"status": 1}, "b": {}}]):
        with pytest.raises(MetadataError):
            parse_bulk({"items": items}, 1)


def test_mappings_are_strict_and_checked_field_by_field():
    for kind, mapping in MAPPINGS.items():
        assert mapping["dynamic"] == "strict" and mapping["properties"] == FIELDS[kind]
    answer = {"p-keys": {"mappings": MAPPINGS["keys"]}}
    check_mapping("p-keys", answer, FIELDS["keys"])
    wrong = {"p-keys": {"mappings": {"properties": {**FIELDS["keys"],
                                                     "count": {"type": "integer"}}}}}
    with pytest.raises(MetadataError, match="field types"):
        check_mapping("p-keys", wrong, FIELDS["keys"])
    book = {"p-keys": {"mappings": {"properties": {"name": {"type": "keyword"}}}}}
    with pytest.raises(MetadataError, match="lacks"):
        check_mapping("p-keys", book, FIELDS["keys"])
    with pytest.raises(MetadataError, match="lacks"):
        check_mapping("p-keys", {}, FIELDS["keys"])
    # An object field is answered without "type" by Elasticsearch for plain objects.
    plain = {"p-records": {"mappings": {"properties": {
        **FIELDS["records"], "body": {"properties": {}}}}}}
    check_mapping("p-records", plain, FIELDS["records"])


def test_key_range_and_resume_query():
    assert key_range("a", True, None) == {"range": {"key": {"gte": "a"}}}
    assert key_range("a", False, "b") == {"range": {"key": {"gt": "a", "lt": "b"}}}
    assert resume_query("v", "k", "seq", None, "lt", "z") == {"bool": {"filter": [
        {"term": {"bucket": "v"}}, {"range": {"key": {"gte": "k", "lt": "z"}}}]}}
    resumed = resume_query("v", "k", "seq", 5, "lt", None, [{"term": {"state": "open"}}])
    (should,) = [f for f in resumed["bool"]["filter"] if "bool" in f]
    assert should["bool"]["minimum_should_match"] == 1
    assert should["bool"]["should"] == [
        {"bool": {"filter": [{"term": {"key": "k"}}, {"range": {"seq": {"lt": 5}}}]}},
        {"range": {"key": {"gt": "k"}}}]
    assert {"term": {"state": "open"}} in resumed["bool"]["filter"]


def test_version_documents_round_trip():
    meta = ObjectMeta(content_type="text/plain", user={"a": "ü"})
    draft = Draft("v", "k", 5, "h", "e", meta)
    source = version_source(draft, 17, 3, True, "", 12.5)
    assert set(source) == set(FIELDS["versions"])
    assert source["committed"] is False
    version = version_from_source(source, True)
    assert (version.seq, version.number, version.is_null, version.is_latest, version.meta,
            version.version_id) == (17, 3, True, True, meta, "null")
    assert version_from_source(source, False, meta=False).meta == ObjectMeta()
    manifest = version_source(Draft("v", "k", 10, parts=(Part(1, "a", 5, "x"),
                                                          Part(2, "b", 5, "y"))),
                              18, 4, False, "tok", 1.0)
    assert (manifest["parts"], manifest["manifest"], manifest["hash"]) == (2, "tok", "")
    for broken in ({**source, "seq": "17"}, {**source, "is_null": 1},
                   {k: v for k, v in source.items() if k != "etag"}, {**source, "meta": "{"}):
        with pytest.raises(MetadataError):
            version_from_source(broken, False)


def test_key_state_visibility_and_documents():
    empty = KeyState.parse("v", "k", None)
    assert (empty.count, empty.latest, empty.removing, empty.empty()) == (0, None, [], True)
    latest = version_source(Draft("v", "k", 1, "h"), 9, 2, False, "", 1.0)
    state = KeyState("v", "k", 2, 2, 9, latest, None, [4])
    source = state.source()
    assert set(source) == set(FIELDS["keys"]) and source["listed"] is True
    assert KeyState.parse("v", "k", Doc(source, 1, 1)) == state
    assert state.visible({"seq": 9, "committed": False})           # the latest, unflagged
    assert not state.visible({"seq": 8, "committed": False})       # not committed
    assert state.visible({"seq": 8, "committed": True})
    assert not state.visible({"seq": 4, "committed": True})        # being removed
    marker = KeyState("v", "k", 1, 1, 3, {**latest, "delete_marker": True})
    assert marker.source()["listed"] is False
    with pytest.raises(MetadataError):
        KeyState.parse("v", "other", Doc(source, 1, 1))
    with pytest.raises(MetadataError):
        KeyState.parse("v", "k", Doc({**source, "count": "2"}, 1, 1))


def test_construction_is_lazy_and_an_unreachable_server_fails_on_first_use():
    store = ElasticsearchStore("127.0.0.1:9", timeout=2)          # nothing listens there
    try:
        with pytest.raises(MetadataError, match="unreachable"):
            store.version("v", "k")
        with pytest.raises(MetadataError, match="unreachable"):
            store.check()
    finally:
        store.close()
    with open_store(Config(es_server="127.0.0.1:9", es_index="lazy")) as opened:
        assert isinstance(opened, ElasticsearchStore) and "lazy" in repr(opened)
    with pytest.raises(MetadataError):
        ElasticsearchStore("127.0.0.1:9", "Bad Index")
