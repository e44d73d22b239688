"""A bounded schemathesis run over the management API's OpenAPI document, in process through
its WSGI app: a fixed seed, a few dozen examples per route, no answer may be a 5xx and every
answer must be the documented one.

Two kinds of state it writes would reach past the run, so the test undoes them: a fault rule
is posted disabled (an enabled one could delay or fail the metadata calls of later cases;
``/api/v1/`` itself is never faulted) and every rule is removed after each case; an origin
it stores is contacted by the next read of a missing key of that bucket (a DELETE or an
inspect), at whatever host it made up, so every origin record is removed after each case.
Storing one contacts nothing, and a prefetch needs an origin: no case sends traffic off
loopback.
"""
from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from lib.faults.sync import KIND as RULE_KIND
from lib.objects.origin import RECORD_KIND as ORIGIN_KIND
from tests.functional.inproc_cluster import AUTH
from tests.openapi_check import check

EXAMPLES = 30


def test_no_5xx_and_every_answer_documented(admin_cluster):
    for key in ("fuzz/a.txt", "fuzz/b.txt"):
        admin_cluster.app.test_client().post(f"/api/v1/objects?key={key}", data=b"seed",
                                             headers=AUTH)
    loaded = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", admin_cluster.app)
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert sorted(o.label for o in operations) == [     # all but the document itself
        "DELETE /faults/rules", "DELETE /faults/rules/{rule_id}",
        "DELETE /objects/{bucket}/{key}", "DELETE /origins/{bucket}",
        "GET /faults/events", "GET /faults/rules", "GET /faults/rules/{rule_id}",
        "GET /faults/stats", "GET /nodes", "GET /objects", "GET /objects/{bucket}/{key}",
        "GET /origin/prefetch", "GET /origins", "GET /origins/{bucket}", "GET /repairs",
        "GET /search", "GET /stats", "POST /faults/rules", "POST /objects", "POST /origin/prefetch",
        "PUT /faults/rules/{rule_id}", "PUT /origins/{bucket}"]
    api = admin_cluster.api

    def undo() -> None:
        for rule in api.faults.store.load()[0]:
            api.faults.store.delete(rule.id)
        api.metadata.put_record(RULE_KIND, "fuzz-rule", {     # one to GET, PUT, DELETE
            "id": "fuzz-rule", "service": "api", "enabled": False,
            "action": {"type": "http_error", "http_code": 503}})
        for bucket, _ in api.metadata.records(ORIGIN_KIND):
            api.metadata.delete_record(ORIGIN_KIND, bucket)
            api.layer.origins.forget(bucket)
        assert not api.faults.engine.metadata

    undo()

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def answers_as_documented(case):
            if case.path.startswith("/faults/rules") and isinstance(case.body, dict):
                case.body["enabled"] = False
            if case.path == "/faults/rules/{rule_id}":       # made-up ids are all 404
                case.path_parameters["rule_id"] = "fuzz-rule"
            if case.path == "/origins/{bucket}":             # and so are made-up buckets
                case.path_parameters["bucket"] = "book"
                if isinstance(case.body, dict) and len(case.body) % 2:   # and most urls
                    case.body["url"] = "http://127.0.3.250:9/{key}"
            try:
                response = case.call(headers=AUTH)
            finally:
                undo()
            assert response.status_code < 500, (case.as_curl_command(), response.text)
            check(case.method, response.request.url, response.status_code,
                  response.json() if response.text else None)

        answers_as_documented()
