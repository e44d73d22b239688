"""A bounded schemathesis run over the management API's OpenAPI document, in process through
its WSGI app: a fixed seed, a few dozen examples per route, no answer may be a 5xx and every
answer must be the documented one."""
from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

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
        "DELETE /objects/{bucket}/{key}", "GET /nodes", "GET /objects",
        "GET /objects/{bucket}/{key}", "GET /search", "GET /stats", "POST /objects"]

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def answers_as_documented(case):
            response = case.call(headers=AUTH)
            assert response.status_code < 500, (case.as_curl_command(), response.text)
            check(case.method, response.request.url, response.status_code, response.json())

        answers_as_documented()
