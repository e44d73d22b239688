"""The management API described as an OpenAPI 3 document, served at ``/api/v1/openapi.json``.

Served without credentials: it tells no more than the README, and tools fetch it before they
have a token.  The tests validate every answer of the API against it and run schemathesis
over it (tests/functional/test_admin_api.py).
"""
from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from api_server.admin import bp

OPENAPI_PATH = "/openapi.json"

_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_TEXT = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ref("Error")}}}


_ERRORS = {
    "400": _error("a malformed argument or body"),
    "401": _error("no admin credentials"),
    "403": _error("wrong admin credentials, or the management API is off (no ADMIN_TOKEN)"),
    "404": _error("no such bucket, key, version, fault rule, origin or prefetch job"),
    "409": _error("a conflicting write"),
    "413": _error("too large"),
    "502": _error("a data server failed"),
    "503": _error("too few data servers, or the metadata store is unavailable"),
}


def _answer(schema: str, description: str = "OK", status: str = "200",
            errors: tuple[str, ...] = ("400", "401", "403", "502", "503")) -> dict[str, Any]:
    responses = {status: {"description": description,
                          "content": {"application/json": {"schema": _ref(schema)}}}}
    responses.update({code: _ERRORS[code] for code in errors})
    return responses


def _json_body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


def _no_content(errors: tuple[str, ...]) -> dict[str, Any]:
    return {"204": {"description": "done"}, **{code: _ERRORS[code] for code in errors}}


def _path(name: str, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


_LIMIT = _query("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 1000,
                                       "default": 100})
_CURSOR = _query("cursor", "the next_cursor of the previous page")
_PATH_OBJECT = [
    {"name": "bucket", "in": "path", "required": True, "schema": {"type": "string"}},
    {"name": "key", "in": "path", "required": True, "schema": {"type": "string"},
     "description": "the key, percent-encoded (a / may stay as it is)"},
    _query("versionId", "a version id (default: the latest version)"),
]

_COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
_RULE_FIELDS: dict[str, Any] = {
    "id": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
    "name": {"type": "string"}, "description": {"type": "string"},
    "service": {"type": "string", "description": "api, s3, data, metadata, broker, all "
                                               "(or MockS3's service names)"},
    "enabled": {"type": "boolean"},
    "node": {"type": "string", "description": "one process's address, host:port"},
    "match": {"type": "object", "properties": {
        "method": {"type": ["string", "array"], "items": {"type": "string"}},
        "path": {"type": "string", "description": "a regular expression"},
        "operation": {"type": "string"}, "bucket": {"type": "string"},
        "key": {"type": "string"}}},
    "conditions": {"type": "array", "maxItems": 20, "items": {
        "type": "object", "required": ["type"],
        "properties": {"type": {"enum": ["probability", "header", "time_window", "max_hits",
                                         "expires"]}}}},
    "action": {"type": "object", "required": ["type"], "properties": {
        "type": {"enum": ["http_error", "delay", "drop", "truncate", "corrupt", "corrupt_shard",
                          "delete_shard", "pause_heartbeat", "pause_locate", "fail"]}}},
}
_FAULT_SCHEMAS: dict[str, Any] = {
    "FaultRuleIn": {"type": "object", "required": ["action"],
                    "properties": {**_RULE_FIELDS, "created": {"type": "number"},
                                   "target": {"type": "object"}}},
    "FaultRule": _object({**_RULE_FIELDS, "created": {"type": "number"}},
                         ["id", "name", "description", "service", "enabled", "conditions",
                          "action", "created"]),
    "FaultRuleList": _object({"rules": {"type": "array", "items": _ref("FaultRule")},
                              "revision": {"type": "number"}}),
    "FaultRulesDeleted": _object({"deleted": {"type": "integer", "minimum": 0}}),
    "FaultStats": _object({
        "total": {"type": "integer", "minimum": 0}, "by_action": _COUNTS,
        "active_rules": {"type": "integer", "minimum": 0},
        "rules": {"type": "object", "additionalProperties": _object({
            "injected": {"type": "integer", "minimum": 0}, "name": {"type": "string"},
            "last": {"type": ["number", "null"]}, "by_action": _COUNTS,
            "by_process": _COUNTS, "by_service": _COUNTS}, ["injected", "name"])}}),
    "FaultEvents": _object({
        "events": {"type": "array", "items": {"type": "object", "required": ["seq"],
                                              "properties": {"seq": {"type": "integer"}}}},
        "next": {"type": "integer", "minimum": 0}, "more": {"type": "boolean"},
        "latest": {"type": "integer", "minimum": 0}}),
}

_ORIGIN_FIELDS: dict[str, Any] = {
    "kind": {"enum": ["http", "s3"]},
    "url": {"type": "string", "description": "http: a URL template with {key}; s3: the "
                                             "endpoint, http(s)://host:port"},
    "bucket": {"type": "string", "description": "s3: the origin's bucket"},
    "access_key": {"type": "string"}, "region": {"type": "string"},
}
_PREFETCH_JOB = {
    "job": {"type": "string"}, "bucket": {"type": "string"},
    "keys": {"type": "integer", "minimum": 0}, "created": {"type": "number"},
    **{state: {"type": "integer", "minimum": 0} for state in (
        "queued", "stored", "present", "retrying", "failed")},
    "errors": {"type": "array", "maxItems": 100, "items": _object({
        "key": {"type": "string"}, "state": {"type": "string"},
        "error": {"type": "string"}})},
    "done": {"type": "boolean"},
}
_ORIGIN_SCHEMAS: dict[str, Any] = {
    "OriginIn": {"type": "object", "required": ["url"], "properties": {
        **_ORIGIN_FIELDS, "secret_key": {"type": "string", "description": "s3: stored, never "
                                                                         "answered; empty: "
                                                                         "keep the stored one"}}},
    "OriginSpec": _object({**_ORIGIN_FIELDS, "secret_key_set": {"enum": ["true"]}},
                          ["kind", "url"]),
    "Origin": _object({"bucket": {"type": "string"}, "origin": _ref("OriginSpec"),
                       "source": {"enum": ["management API", "ORIGIN_URL"]}}),
    "OriginList": _object({"origins": {"type": "array", "items": _ref("Origin")}}),
    "PrefetchIn": {"type": "object", "required": ["keys"], "properties": {
        "bucket": {"type": "string", "description": "default: the book bucket"},
        "keys": {"type": "array", "minItems": 1, "maxItems": 1000,
                 "items": {"type": "string", "minLength": 1}}}},
    "PrefetchJob": _object(_PREFETCH_JOB),
    "PrefetchStarted": _object({**_PREFETCH_JOB, "worker": {"type": "boolean"}}),
    "PrefetchJobs": _object({"jobs": {"type": "array", "items": _ref("PrefetchJob")},
                             "total": _ref("PrefetchTotals")}),
}

_SCHEMAS: dict[str, Any] = {
    "Error": _object({"error": _object({"code": {"type": "string"},
                                        "message": {"type": "string"}})}),
    "Listed": _object({"bucket": {"type": "string"}, "key": {"type": "string"},
                       "size": {"type": "integer", "minimum": 0}, "etag": _NULLABLE_TEXT,
                       "number": {"type": "integer"},
                       "last_modified": {"type": "number"}}),
    "ObjectList": _object({"bucket": {"type": "string"}, "prefix": {"type": "string"},
                           "objects": {"type": "array", "items": _ref("Listed")},
                           "prefixes": {"type": "array", "items": {"type": "string"}},
                           "next_cursor": _NULLABLE_TEXT}),
    "SearchResult": _object({"q": {"type": "string"}, "bucket": _NULLABLE_TEXT,
                             "match": {"enum": ["substring", "prefix"]},
                             "objects": {"type": "array", "items": _ref("Listed")},
                             "next_cursor": _NULLABLE_TEXT}),
    "Version": _object({"version_id": {"type": "string"}, "number": {"type": "integer"},
                        "size": {"type": "integer"}, "hash": _NULLABLE_TEXT,
                        "etag": _NULLABLE_TEXT, "content_type": _NULLABLE_TEXT,
                        "last_modified": {"type": "number"}, "is_latest": {"type": "boolean"},
                        "delete_marker": {"type": "boolean"}, "parts": {"type": "integer"}}),
    "Shard": _object({"index": {"type": "integer", "minimum": 0},
                      "data_server": _NULLABLE_TEXT, "present": {"type": "boolean"},
                      "verified": {"type": "boolean"}}),
    "Part": _object({"number": {"type": "integer"}, "hash": {"type": "string"},
                     "size": {"type": "integer"}, "etag": {"type": "string"},
                     "shards": {"type": "array", "items": _ref("Shard")}}),
    "ObjectInfo": _object({"bucket": {"type": "string"}, "key": {"type": "string"},
                           "version": _ref("Version"),
                           "versions": {"type": "array", "items": _ref("Version")},
                           "shards": {"type": "array", "items": _ref("Shard")},
                           "parts": {"type": "array", "items": _ref("Part")}}),
    "Uploaded": _object({"bucket": {"type": "string"}, "key": {"type": "string"},
                         "version_id": {"type": "string"}, "number": {"type": "integer"},
                         "size": {"type": "integer"}, "hash": {"type": "string"},
                         "etag": {"type": "string"}}),
    "Deleted": _object({"bucket": {"type": "string"}, "key": {"type": "string"},
                        "version_id": _NULLABLE_TEXT, "delete_marker": {"type": "boolean"}}),
    "Stats": _object({
        "buckets": {"type": "integer"}, "objects": {"type": "integer"},
        "versions": {"type": "integer"}, "logical_bytes": {"type": "integer"},
        "content_bytes": {"type": "integer"}, "physical_bytes": {"type": "integer"},
        "dedup_ratio": {"type": ["number", "null"]},
        "data_servers_live": {"type": "integer"}, "data_servers_expected": {"type": "integer"},
        "queue_depth": _NULLABLE_INT, "dead_letters": _NULLABLE_INT,
        "repairs": _object({
            "done": {"type": "integer", "minimum": 0,
                     "description": "every process's, ever (the repair log's counter)"},
            "pending": {"type": "integer", "minimum": 0,
                        "description": "this api worker's and the task queue's"},
            "failed": {"type": "integer", "minimum": 0,
                       "description": "every process's, ever (the repair log's counter)"}}),
        "corrupt_records": {"type": "integer"},
        "prefetch": _ref("PrefetchTotals")}),
    "Node": _object({"address": {"type": "string"}, "state": {"enum": ["live", "down"]},
                     "last_heartbeat_age": {"type": ["number", "null"]},
                     "shards": _NULLABLE_INT, "bytes": _NULLABLE_INT,
                     "disk_free": _NULLABLE_INT, "disk_total": _NULLABLE_INT,
                     "corrupt_shards": _NULLABLE_INT}),
    "NodeList": _object({"nodes": {"type": "array", "items": _ref("Node")}}),
    "Repair": _object({
        "seq": {"type": "integer", "minimum": 1}, "time": {"type": "number"},
        "hash": {"type": "string"},
        "shards": {"type": "array", "items": {"type": "integer", "minimum": 0},
                   "description": "rebuilt (done), or known damaged (failed)"},
        "outcome": {"enum": ["done", "failed"]}, "error": _NULLABLE_TEXT,
        "by": {"type": "string", "description": "an api server's address, worker or "
                                                "object_scanner"}}),
    "RepairList": _object({"repairs": {"type": "array", "items": _ref("Repair")}}),
    "PrefetchTotals": _object({name: {"type": "integer", "minimum": 0} for name in (
        "jobs", "keys", "queued", "stored", "present", "retrying", "failed")}),
    **_FAULT_SCHEMAS,
    **_ORIGIN_SCHEMAS,
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Tessera management API", "version": "1",
             "description": "JSON under /api/v1/ on the api servers' book listener. "
                            "Credentials: ADMIN_TOKEN as a bearer token, or a SigV4-signed "
                            "request by an S3 key marked admin."},
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}, {"sigv4": []}],
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "Authorization: Bearer <ADMIN_TOKEN>"},
            "sigv4": {"type": "apiKey", "in": "header", "name": "Authorization",
                      "description": "AWS Signature Version 4 (service s3) by an S3 key "
                                     "whose credentials-file section says admin = true"}},
        "schemas": _SCHEMAS},
    "paths": {
        "/objects": {
            "get": {"summary": "List current objects of a bucket", "operationId": "listObjects",
                    "parameters": [_query("bucket", "default: the book bucket"),
                                   _query("prefix", "keys starting with this"),
                                   _query("delimiter", "roll keys up into prefixes"),
                                   _LIMIT, _CURSOR],
                    "responses": _answer("ObjectList", errors=("400", "401", "403", "404",
                                                                "503"))},
            "post": {"summary": "Upload an object (the server computes its digest)",
                     "operationId": "postObject",
                     "parameters": [_query("bucket", "default: the book bucket"),
                                    _query("key", "required for a raw body")],
                     "requestBody": {"required": True, "content": {
                         "application/octet-stream": {"schema": {"type": "string",
                                                                 "format": "binary"}},
                         "multipart/form-data": {"schema": _object({
                             "bucket": {"type": "string"}, "key": {"type": "string"},
                             "file": {"type": "string", "format": "binary"}}, ["file"])}}},
                     "responses": _answer("Uploaded", "stored", "201",
                                          ("400", "401", "403", "404", "409", "413", "502",
                                           "503"))}},
        "/objects/{bucket}/{key}": {
            "get": {"summary": "An object's versions and the live state of its shards",
                    "operationId": "getObjectInfo", "parameters": _PATH_OBJECT,
                    "responses": _answer("ObjectInfo", errors=("400", "401", "403", "404",
                                                                "502", "503"))},
            "delete": {"summary": "Delete an object (a delete marker) or one version",
                       "operationId": "deleteObject", "parameters": _PATH_OBJECT,
                       "responses": _answer("Deleted", errors=("400", "401", "403", "404",
                                                                "409", "503"))}},
        "/search": {
            "get": {"summary": "Current objects whose key contains q (ASCII case ignored; "
                               "fewer than 3 characters: keys starting with q)",
                    "operationId": "searchObjects",
                    "parameters": [_query("q", "the text to find", {"type": "string",
                                                                    "minLength": 1}, True),
                                   _query("bucket", "one bucket (default: all)"),
                                   _LIMIT, _CURSOR],
                    "responses": _answer("SearchResult", errors=("400", "401", "403", "404",
                                                                  "503"))}},
        "/stats": {"get": {"summary": "Totals over the cluster", "operationId": "getStats",
                           "responses": _answer("Stats", errors=("401", "403", "503"))}},
        "/nodes": {"get": {"summary": "Every data server ever seen, live or down",
                           "operationId": "getNodes",
                           "responses": _answer("NodeList", errors=("401", "403", "503"))}},
        "/repairs": {"get": {"summary": "The newest finished repairs of the whole cluster "
                                        "(the last 1000 kept), newest first",
                             "operationId": "listRepairs", "parameters": [_LIMIT],
                             "responses": _answer("RepairList",
                                                  errors=("400", "401", "403", "503"))}},
        "/faults/rules": {
            "get": {"summary": "The fault rules, oldest first", "operationId": "listFaultRules",
                    "responses": _answer("FaultRuleList", errors=("401", "403", "503"))},
            "post": {"summary": "Add a fault rule (MockS3's JSON or Tessera's); it reaches "
                                "every process at once", "operationId": "createFaultRule",
                     "requestBody": _json_body("FaultRuleIn"),
                     "responses": _answer("FaultRule", "created", "201",
                                          ("400", "401", "403", "409", "503"))},
            "delete": {"summary": "Remove every fault rule", "operationId": "deleteFaultRules",
                       "responses": _answer("FaultRulesDeleted",
                                            errors=("401", "403", "503"))}},
        "/faults/rules/{rule_id}": {
            "parameters": [_path("rule_id")],
            "get": {"summary": "One fault rule", "operationId": "getFaultRule",
                    "responses": _answer("FaultRule", errors=("401", "403", "404", "503"))},
            "put": {"summary": "Replace a fault rule (its id and creation time stay)",
                    "operationId": "replaceFaultRule", "requestBody": _json_body("FaultRuleIn"),
                    "responses": _answer("FaultRule", errors=("400", "401", "403", "404",
                                                               "503"))},
            "delete": {"summary": "Remove a fault rule", "operationId": "deleteFaultRule",
                       "responses": _no_content(("401", "403", "404", "503"))}},
        "/faults/stats": {
            "get": {"summary": "Faults injected across the cluster since this api worker "
                               "started, per rule, action and process",
                    "operationId": "getFaultStats",
                    "responses": _answer("FaultStats", errors=("401", "403", "503"))}},
        "/faults/events": {
            "get": {"summary": "The latest injected faults, oldest first",
                    "operationId": "listFaultEvents",
                    "parameters": [
                        _query("after", "the next of the previous page",
                               {"type": "integer", "minimum": 0, "default": 0}),
                        _query("limit", "page size", {"type": "integer", "minimum": 1,
                                                      "maximum": 1000, "default": 100}),
                        _query("rule", "one rule's events")],
                    "responses": _answer("FaultEvents", errors=("400", "401", "403"))}},
        "/origins": {
            "get": {"summary": "Every bucket with an origin", "operationId": "listOrigins",
                    "responses": _answer("OriginList", errors=("401", "403", "503"))}},
        "/origins/{bucket}": {
            "parameters": [_path("bucket")],
            "get": {"summary": "The origin a bucket fetches missing keys from",
                    "operationId": "getOrigin",
                    "responses": _answer("Origin", errors=("401", "403", "404", "503"))},
            "put": {"summary": "Set a bucket's origin (stored, not contacted)",
                    "operationId": "putOrigin", "requestBody": _json_body("OriginIn"),
                    "responses": _answer("Origin", errors=("400", "401", "403", "404",
                                                            "503"))},
            "delete": {"summary": "Remove a bucket's origin record",
                       "operationId": "deleteOrigin",
                       "responses": _no_content(("401", "403", "404", "503"))}},
        "/origin/prefetch": {
            "get": {"summary": "Every prefetch job's progress and their totals, or one job's",
                    "operationId": "getPrefetch",
                    "parameters": [_query("job", "one job's id")],
                    "responses": {
                        "200": {"description": "OK", "content": {"application/json": {
                            "schema": {"anyOf": [_ref("PrefetchJobs"),
                                                 _ref("PrefetchJob")]}}}},
                        **{code: _ERRORS[code] for code in ("401", "403", "404", "503")}}},
            "post": {"summary": "Queue one task per key: the workers fetch them from the "
                                "bucket's origin", "operationId": "postPrefetch",
                     "requestBody": _json_body("PrefetchIn"),
                     "responses": _answer("PrefetchStarted", "queued", "202",
                                          ("400", "401", "403", "404", "409", "503"))}},
        "/openapi.json": {"get": {"summary": "This document (no credentials needed)",
                                  "operationId": "getOpenapi", "security": [],
                                  "responses": {"200": {"description": "OpenAPI 3",
                                                        "content": {"application/json": {
                                                            "schema": {"type": "object"}}}}}}},
    },
}


@bp.get(OPENAPI_PATH)
def get_openapi() -> Response:
    return jsonify(DOCUMENT)
