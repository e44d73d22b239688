"""Check answers of the management API against its OpenAPI document
(api_server/admin/openapi.py): the status must be documented for that route and method,
and the JSON body must match the documented schema."""
from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

import jsonschema

from api_server.admin.openapi import DOCUMENT

_PREFIX = DOCUMENT["servers"][0]["url"]
_ROUTES = [(re.compile("^" + re.sub(r"\\{(\w+)\\}", lambda m: "(?P<%s>%s)" % (
    m.group(1), ".+" if m.group(1) == "key" else "[^/]+"), re.escape(path)) + "$"), path)
    for path in DOCUMENT["paths"]]


def route_of(url: str) -> str:
    path = unquote(urlsplit(url).path)
    assert path.startswith(_PREFIX + "/"), path
    rest = path[len(_PREFIX):]
    for pattern, template in sorted(_ROUTES, key=lambda r: r[1].count("{")):
        if pattern.match(rest):
            return template
    raise AssertionError(f"{path} is not in the OpenAPI document")


def check(method: str, url: str, status: int, body: object) -> None:
    """Assert that ``status`` and the JSON ``body`` are what the document says."""
    operation = DOCUMENT["paths"][route_of(url)][method.lower()]
    answer = operation["responses"].get(str(status))
    assert answer is not None, f"{method} {url}: status {status} is not documented"
    schema = answer["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**schema, "components": DOCUMENT["components"]},
                        cls=jsonschema.Draft202012Validator)


class CheckedClient:
    """A Flask test client whose every answer under /api/v1/ is checked against the
    document (and which sends the admin token unless told otherwise)."""

    def __init__(self, app, headers: dict[str, str] | None = None):
        self._client = app.test_client()
        self._headers = headers or {}

    def open(self, method: str, url: str, **kwargs):
        headers = {**self._headers, **kwargs.pop("headers", {})}
        response = self._client.open(url, method=method, headers=headers, **kwargs)
        check(method, url, response.status_code, response.get_json())
        return response

    def get(self, url: str, **kwargs):
        return self.open("GET", url, **kwargs)

    def post(self, url: str, **kwargs):
        return self.open("POST", url, **kwargs)

    def delete(self, url: str, **kwargs):
        return self.open("DELETE", url, **kwargs)
