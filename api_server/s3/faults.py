"""Fault injection on the S3 listener: rules match S3's operation, bucket and key, and an
``http_error`` answers as S3 does, with an XML error body (``s3_code``, or the code S3 uses
for that status)."""
from __future__ import annotations

import secrets
import urllib.parse

from api_server.s3.app import operation
from api_server.s3.errors import S3Error
from api_server.s3.request import Request
from api_server.s3.xml import error_body
from lib.faults.engine import FaultEngine
from lib.faults.rules import Probe, Rule
from lib.faults.wsgi import EnvironHeaders, FaultMiddleware, request_id

#: The code S3 answers with each status, for a rule that names none.
_CODES = {400: "InvalidRequest", 403: "AccessDenied", 404: "NoSuchKey",
          405: "MethodNotAllowed", 409: "OperationAborted", 412: "PreconditionFailed",
          500: "InternalError", 501: "NotImplemented", 503: "SlowDown"}


def _probe(domain: str):
    def probe(environ: dict) -> Probe:
        rid = request_id(environ) or secrets.token_hex(8).upper()
        headers = EnvironHeaders(environ)
        try:
            req = Request(environ, domain, rid)
        except S3Error:
            return Probe(method=environ.get("REQUEST_METHOD", ""),
                         path=environ.get("PATH_INFO", ""), headers=headers, request_id=rid)
        return Probe(method=req.method, path=urllib.parse.unquote(req.raw_path),
                     operation=operation(req), bucket=req.bucket, key=req.key,
                     headers=headers, request_id=rid)
    return probe


def _xml_error(rule: Rule, environ: dict, probe: Probe):
    action = rule.action
    code = action.s3_code or _CODES.get(action.http_code, "InternalError")
    body = error_body(S3Error(code, action.message, action.http_code),
                      urllib.parse.unquote(environ.get("RAW_URI", "/").split("?", 1)[0]),
                      probe.request_id)
    return action.http_code, [("Content-Type", "application/xml"),
                              ("Content-Length", str(len(body))),
                              ("x-amz-request-id", probe.request_id),
                              ("Server", "Tessera")], body


def wrap(s3_app, engine: FaultEngine, domain: str) -> FaultMiddleware:
    return FaultMiddleware(s3_app, engine, "s3", probe=_probe(domain), error=_xml_error)
