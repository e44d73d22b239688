"""An in-process stand-in for the part of Elasticsearch 8 that ``lib/metadata/elasticsearch.py``
uses, so that its logic runs here, where no Elasticsearch can be installed.

It is stricter than Elasticsearch where that finds bugs, never laxer:

* searches see only what a write with ``refresh=wait_for`` (or ``true``) made visible, and
  nothing is ever refreshed on a timer, so a read that depends on an unrefreshed write fails;
  GET and ``_mget`` are real time, as in Elasticsearch;
* documents must fit the index's strict mapping (field names and value types), queries and
  sorts may only name indexed, mapped fields, and ``from + size`` may not pass 10,000;
* writing to a missing index fails (Elasticsearch would create one with a guessed mapping).

Conditional writes (``if_seq_no``/``if_primary_term``, ``_create``) behave as Elasticsearch's:
409 ``version_conflict_engine_exception``; one lock serialises all writes (one shard each).
It is a test double, not a model of Elasticsearch's behaviour under faults or load.
"""
from __future__ import annotations

import copy
import functools
import http.server
import json
import re
import threading
import urllib.parse
from typing import Any

import pytest

MAX_WINDOW = 10_000


class Failure(Exception):
    def __init__(self, status: int, kind: str, reason: str = ""):
        super().__init__(reason)
        self.status, self.kind, self.reason = status, kind, reason

    def body(self) -> dict[str, Any]:
        return {"error": {"type": self.kind, "reason": self.reason}, "status": self.status}


class _Index:
    def __init__(self, name: str, mappings: dict[str, Any]):
        self.name = name
        self.mappings = mappings
        self.docs: dict[str, tuple[dict[str, Any], int]] = {}
        self.visible: dict[str, dict[str, Any]] = {}
        self.dirty: set[str] = set()          # written since the last refresh
        self.next_seq = 0

    def field(self, name: str, indexed: bool = True) -> dict[str, Any]:
        spec = self.mappings.get("properties", {}).get(name)
        if spec is None:
            raise Failure(400, "query_shard_exception", f"no field [{name}] in {self.name}")
        if indexed and (spec.get("index") is False or spec.get("enabled") is False):
            raise Failure(400, "query_shard_exception", f"field [{name}] is not indexed")
        return spec


def _values(source: dict[str, Any], field: str) -> list[Any]:
    value = source.get(field)
    if value is None:
        return []
    return [v for v in value if v is not None] if isinstance(value, list) else [value]


def _wildcard(value: str, case_insensitive: bool) -> "re.Pattern[str]":
    """ES's wildcard syntax: ``*`` any run, ``?`` one character, ``\\`` escapes the next."""
    out, chars = [], iter(value)
    for char in chars:
        if char == "\\":
            out.append(re.escape(next(chars, "\\")))
        elif char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL | (re.IGNORECASE if case_insensitive else 0))


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return True
    return type(a) is type(b)


def _check_value(index: _Index, field: str, value: Any) -> None:
    spec = index.field(field, indexed=False)
    kind = spec.get("type", "object")
    if value is None or kind == "object" and spec.get("enabled") is False:
        return
    for item in value if isinstance(value, list) else [value]:
        ok = {"keyword": lambda v: isinstance(v, str),
              "long": lambda v: isinstance(v, int) and not isinstance(v, bool)
              and -2**63 <= v < 2**63,
              "double": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "boolean": lambda v: isinstance(v, bool)}.get(kind, lambda v: False)(item)
        if not ok:
            raise Failure(400, "document_parsing_exception",
                          f"[{field}] of type {kind} cannot hold {item!r}")


class Emulator:
    def __init__(self, version: str = "8.15.0"):
        self.version = version
        self.indices: dict[str, _Index] = {}
        self.lock = threading.RLock()
        self.requests = 0

    # -- documents -------------------------------------------------------------------------------
    def _index(self, name: str) -> _Index:
        index = self.indices.get(name)
        if index is None:
            raise Failure(404, "index_not_found_exception", f"no such index [{name}]")
        return index

    def _validate(self, index: _Index, source: Any) -> None:
        if not isinstance(source, dict):
            raise Failure(400, "document_parsing_exception", "a document is an object")
        for field, value in source.items():
            _check_value(index, field, value)

    def get(self, name: str, id_: str) -> tuple[int, dict[str, Any]]:
        index = self._index(name)
        found = index.docs.get(id_)
        if found is None:
            return 404, {"_index": name, "_id": id_, "found": False}
        source, seq_no = found
        return 200, {"_index": name, "_id": id_, "_version": 1, "_seq_no": seq_no,
                     "_primary_term": 1, "found": True, "_source": copy.deepcopy(source)}

    def _condition(self, index: _Index, id_: str, params: dict[str, Any]) -> None:
        if "if_seq_no" in params or "if_primary_term" in params:
            found = index.docs.get(id_)
            if found is None or found[1] != int(params.get("if_seq_no", -1)) or \
                    int(params.get("if_primary_term", -1)) != 1:
                raise Failure(409, "version_conflict_engine_exception",
                              f"[{id_}]: version conflict")

    def write(self, name: str, id_: str, source: Any, params: dict[str, Any],
              create: bool = False) -> tuple[int, dict[str, Any]]:
        index = self._index(name)
        self._validate(index, source)
        if create and id_ in index.docs:
            raise Failure(409, "version_conflict_engine_exception",
                          f"[{id_}]: document already exists")
        self._condition(index, id_, params)
        result = "updated" if id_ in index.docs else "created"
        index.docs[id_] = (copy.deepcopy(source), index.next_seq)
        index.dirty.add(id_)
        index.next_seq += 1
        return (201 if result == "created" else 200), {
            "_index": name, "_id": id_, "result": result, "_seq_no": index.next_seq - 1,
            "_primary_term": 1}

    def update(self, name: str, id_: str, body: Any, params: dict[str, Any]):
        index = self._index(name)
        found = index.docs.get(id_)
        if found is None:
            raise Failure(404, "document_missing_exception", f"[{id_}]: document missing")
        self._condition(index, id_, params)
        merged = {**found[0], **body["doc"]}
        if merged == found[0]:
            return 200, {"_index": name, "_id": id_, "result": "noop", "_seq_no": found[1],
                         "_primary_term": 1}
        return self.write(name, id_, merged, {})

    def delete(self, name: str, id_: str, params: dict[str, Any]) -> tuple[int, dict]:
        index = self._index(name)
        self._condition(index, id_, params)
        if index.docs.pop(id_, None) is None:
            return 404, {"_index": name, "_id": id_, "result": "not_found"}
        index.dirty.add(id_)
        index.next_seq += 1
        return 200, {"_index": name, "_id": id_, "result": "deleted"}

    def refresh(self, names) -> None:
        for name in names:
            index = self.indices.get(name)
            if index is None:
                continue
            for id_ in index.dirty:
                if id_ in index.docs:
                    index.visible[id_] = copy.deepcopy(index.docs[id_][0])
                else:
                    index.visible.pop(id_, None)
            index.dirty.clear()

    # -- search ----------------------------------------------------------------------------------
    def _matches(self, index: _Index, query: dict[str, Any], source: dict[str, Any]) -> bool:
        if not isinstance(query, dict) or len(query) != 1:
            raise Failure(400, "parsing_exception", f"bad query {query!r}")
        (kind, spec), = query.items()
        if kind == "match_all":
            return True
        if kind == "bool":
            def clauses(name):
                value = spec.get(name, [])
                return value if isinstance(value, list) else [value]
            required = clauses("filter") + clauses("must")
            should = clauses("should")
            wanted = spec.get("minimum_should_match", 0 if required else 1 if should else 0)
            return (all(self._matches(index, q, source) for q in required)
                    and not any(self._matches(index, q, source) for q in clauses("must_not"))
                    and sum(self._matches(index, q, source) for q in should) >= wanted)
        (field, arg), = spec.items()
        index.field(field)
        values = _values(source, field)
        if kind == "term":
            arg = arg["value"] if isinstance(arg, dict) else arg
            return any(_same_kind(v, arg) and v == arg for v in values)
        if kind == "terms":
            return any(_same_kind(v, a) and v == a for v in values for a in arg)
        if kind == "range":
            tests = {"gt": lambda v, b: v > b, "gte": lambda v, b: v >= b,
                     "lt": lambda v, b: v < b, "lte": lambda v, b: v <= b}
            return any(all(_same_kind(v, b) and tests[op](v, b) for op, b in arg.items())
                       for v in values)
        if kind == "wildcard":
            if index.field(field).get("type") != "keyword":
                raise Failure(400, "query_shard_exception", f"[{field}] is not a keyword")
            pattern = _wildcard(arg["value"], bool(arg.get("case_insensitive")))
            return any(isinstance(v, str) and pattern.fullmatch(v) for v in values)
        raise Failure(400, "parsing_exception", f"unknown query [{kind}]")

    def _check_query(self, index: _Index, query: Any) -> None:
        """Every clause of a query names a known query and an indexed, mapped field."""
        if not isinstance(query, dict) or len(query) != 1:
            raise Failure(400, "parsing_exception", f"bad query {query!r}")
        (kind, spec), = query.items()
        if kind == "bool":
            for name in ("filter", "must", "must_not", "should"):
                clauses = spec.get(name, [])
                for clause in clauses if isinstance(clauses, list) else [clauses]:
                    self._check_query(index, clause)
        elif kind in ("term", "terms", "range", "wildcard"):
            (field, _), = spec.items()
            index.field(field)
        elif kind != "match_all":
            raise Failure(400, "parsing_exception", f"unknown query [{kind}]")

    def search(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        index = self._index(name)
        size, start = int(body.get("size", 10)), int(body.get("from", 0))
        if start + size > MAX_WINDOW:
            raise Failure(400, "illegal_argument_exception", "Result window is too large")
        query = body.get("query", {"match_all": {}})
        order = []
        for item in body.get("sort", []):
            (field, how), = item.items()
            index.field(field)
            if index.field(field).get("doc_values") is False:
                raise Failure(400, "illegal_argument_exception", f"cannot sort on [{field}]")
            order.append((field, how if isinstance(how, str) else how.get("order", "asc")))
        self._check_query(index, query)         # a bad query fails on an empty index too
        found = [(i, s) for i, s in index.visible.items() if self._matches(index, query, s)]

        def keys(source):
            return [(_values(source, f) or [None])[0] for f, _ in order]

        def compare(a, b):
            for (_, how), x, y in zip(order, a, b):
                if x == y:
                    continue
                if x is None or y is None:          # missing values sort last, either way
                    return 1 if x is None else -1
                return (-1 if x < y else 1) * (1 if how == "asc" else -1)
            return 0

        ranked = sorted(found, key=lambda hit: functools.cmp_to_key(compare)(keys(hit[1])))
        if "search_after" in body:
            after = body["search_after"]
            ranked = [hit for hit in ranked if compare(keys(hit[1]), after) > 0]
        hits = [{"_index": name, "_id": i, "_score": None, "_source": copy.deepcopy(s),
                 "sort": keys(s)} for i, s in ranked[start:start + size]]
        answer: dict[str, Any] = {"hits": {"hits": hits}}
        if body.get("track_total_hits", True) is not False:
            answer["hits"]["total"] = {"value": len(found), "relation": "eq"}
        if body.get("aggs"):
            answer["aggregations"] = {name: self._aggregate(index, spec, found)
                                      for name, spec in body["aggs"].items()}
        return answer

    def _aggregate(self, index: _Index, spec: dict[str, Any], found) -> dict[str, Any]:
        """The ``sum`` metric (ES answers a double, 0.0 over no documents)."""
        if list(spec) != ["sum"]:
            raise Failure(400, "parsing_exception", f"unknown aggregation {spec!r}")
        field = spec["sum"]["field"]
        if index.field(field).get("type") not in ("long", "double"):
            raise Failure(400, "illegal_argument_exception", f"[{field}] is not numeric")
        return {"value": float(sum(v for _, source in found for v in _values(source, field)))}

    # -- requests --------------------------------------------------------------------------------
    def handle(self, method: str, path: str, params: dict[str, str], body: Any) -> tuple:
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/") if p]
        refresh = params.get("refresh") in ("", "true", "wait_for")
        with self.lock:
            self.requests += 1
            if not parts:
                return 200, {"version": {"number": self.version}, "tagline": "You Know"}
            if parts == ["_mget"]:
                docs = []
                for doc in body["docs"]:
                    try:
                        docs.append(self.get(doc["_index"], doc["_id"])[1])
                    except Failure as exc:
                        docs.append({"_index": doc["_index"], "_id": doc["_id"],
                                     "error": exc.body()["error"]})
                return 200, {"docs": docs}
            if parts == ["_bulk"]:
                return self._bulk(body, refresh)
            name, rest = parts[0], parts[1:]
            if rest == ["_mapping"] and method == "GET":
                names = name.split(",")
                if params.get("ignore_unavailable") != "true":
                    for n in names:
                        self._index(n)
                return 200, {n: {"mappings": self.indices[n].mappings}
                             for n in names if n in self.indices}
            if not rest and method == "PUT":
                if name in self.indices:
                    raise Failure(400, "resource_already_exists_exception", name)
                self.indices[name] = _Index(name, copy.deepcopy(body.get("mappings", {})))
                return 200, {"acknowledged": True, "index": name}
            if not rest and method == "DELETE":
                self._index(name)
                del self.indices[name]
                return 200, {"acknowledged": True}
            if rest == ["_search"]:
                return 200, self.search(name, body or {})
            if rest == ["_refresh"]:
                self.refresh([name])
                return 200, {"_shards": {}}
            if len(rest) == 2:
                op, id_ = rest
                if op == "_doc" and method == "GET":
                    return self.get(name, id_)
                if op == "_doc" and method in ("PUT", "POST"):
                    answer = self.write(name, id_, body, params,
                                        create=params.get("op_type") == "create")
                elif op == "_create":
                    answer = self.write(name, id_, body, params, create=True)
                elif op == "_update":
                    answer = self.update(name, id_, body, params)
                elif op == "_doc" and method == "DELETE":
                    answer = self.delete(name, id_, params)
                else:
                    raise Failure(400, "invalid_request", f"{method} {path}")
                if refresh:
                    self.refresh([name])
                return answer
            raise Failure(400, "invalid_request", f"{method} {path}")

    def _bulk(self, lines: list[dict[str, Any]], refresh: bool) -> tuple[int, dict]:
        items, touched, position = [], set(), 0
        while position < len(lines):
            (op, meta), = lines[position].items()
            position += 1
            body = None
            if op in ("index", "create", "update"):
                body = lines[position]
                position += 1
            name, id_ = meta["_index"], meta["_id"]
            conditions = {k: v for k, v in meta.items() if k.startswith("if_")}
            try:
                if op == "delete":
                    status, answer = self.delete(name, id_, conditions)
                elif op == "update":
                    status, answer = self.update(name, id_, body, conditions)
                else:
                    status, answer = self.write(name, id_, body, conditions,
                                                create=op == "create")
                touched.add(name)
            except Failure as exc:
                status, answer = exc.status, {"_index": name, "_id": id_,
                                              "error": exc.body()["error"]}
            items.append({op: {**answer, "status": status}})
        if refresh:
            self.refresh(touched)
        return 200, {"errors": any(next(iter(i.values()))["status"] >= 300 for i in items),
                     "items": items}


class EmulatorServer:
    """The emulator on a loopback port, one thread per connection (HTTP/1.1 keep-alive)."""

    def __init__(self, emulator: Emulator | None = None, host: str = "127.0.0.1"):
        self.emulator = emulator or Emulator()
        emulator = self.emulator

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _serve(self):
                url = urllib.parse.urlsplit(self.path)
                params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    if "ndjson" in (self.headers.get("Content-Type") or ""):
                        body = [json.loads(line) for line in raw.splitlines() if line.strip()]
                    else:
                        body = json.loads(raw) if raw else None
                    status, answer = emulator.handle(self.command, url.path, params, body)
                except Failure as exc:
                    status, answer = exc.status, exc.body()
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    status, answer = 400, Failure(400, "parsing_exception", repr(exc)).body()
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Elastic-Product", "Elasticsearch")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _serve

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.address = f"{host}:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the emulator's own strictness (what makes the store's tests on it worth something) ------

def _emulator_with_index() -> Emulator:
    emulator = Emulator()
    emulator.handle("PUT", "/i", {}, {"mappings": {"dynamic": "strict", "properties": {
        "key": {"type": "keyword"}, "n": {"type": "long"},
        "blob": {"type": "keyword", "index": False, "doc_values": False}}}})
    return emulator


def test_searches_see_only_refreshed_writes_and_gets_see_all():
    emulator = _emulator_with_index()
    emulator.handle("PUT", "/i/_doc/a", {}, {"key": "a", "n": 1})
    assert emulator.handle("GET", "/i/_doc/a", {}, None)[1]["found"]
    assert emulator.search("i", {"query": {"match_all": {}}})["hits"]["hits"] == []
    emulator.handle("PUT", "/i/_doc/b", {"refresh": "wait_for"}, {"key": "b", "n": 2})
    assert [h["_id"] for h in emulator.search("i", {"sort": [{"key": "asc"}]})["hits"][
        "hits"]] == ["a", "b"]
    emulator.handle("DELETE", "/i/_doc/a", {}, None)
    assert len(emulator.search("i", {})["hits"]["hits"]) == 2      # not refreshed yet


def test_conditional_writes_and_strict_mappings():
    emulator = _emulator_with_index()
    status, answer = emulator.handle("PUT", "/i/_create/a", {}, {"key": "a"})
    assert status == 201
    for params in ({"if_seq_no": "7", "if_primary_term": "1"}, {}):
        with pytest.raises(Failure) as caught:
            emulator.handle("PUT", "/i/_create/a" if not params else "/i/_doc/a", params,
                            {"key": "a"})
        assert caught.value.status == 409
    emulator.handle("PUT", "/i/_doc/a", {"if_seq_no": str(answer["_seq_no"]),
                                         "if_primary_term": "1"}, {"key": "a2"})
    for body, kind in (({"other": 1}, "query_shard_exception"),
                       ({"n": "1"}, "document_parsing_exception")):
        with pytest.raises(Failure) as caught:
            emulator.handle("PUT", "/i/_doc/b", {}, body)
        assert caught.value.kind == kind
    with pytest.raises(Failure):
        emulator.search("i", {"query": {"term": {"blob": "x"}}})
    with pytest.raises(Failure):
        emulator.search("i", {"size": 10_001})
    with pytest.raises(Failure):
        emulator.handle("PUT", "/missing/_doc/a", {}, {"key": "a"})


def test_sort_is_by_code_point_with_search_after():
    emulator = _emulator_with_index()
    keys = ["b", "a", "ü", "Z", "\U0001f389", "\uffff", "a\x00"]
    for i, key in enumerate(keys):
        emulator.handle("PUT", f"/i/_doc/{i}", {"refresh": "true"}, {"key": key, "n": i})
    body = {"sort": [{"key": "asc"}], "size": 3}
    first = emulator.search("i", body)["hits"]["hits"]
    rest = emulator.search("i", {**body, "size": 10,
                                 "search_after": first[-1]["sort"]})["hits"]["hits"]
    listed = [h["_source"]["key"] for h in first + rest]
    assert listed == sorted(keys, key=lambda k: k.encode("utf-8"))
