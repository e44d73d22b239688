"""S3's XML, both ways: answers built from nested tuples, request bodies parsed with a size cap.

Answers: ``render("ListBucketResult", [("Name", "b"), ("Contents", [("Key", "k")])])``; a
value of None leaves the element out, a bool is ``true``/``false``.  Request bodies are parsed
with the standard library's expat (no external entities, entity expansion bounded) after a
bounded read; namespaces are dropped so ``{ns}Part`` and ``Part`` read the same.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Union
from xml.sax.saxutils import escape

from api_server.s3.errors import S3Error, malformed_xml

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
#: Largest request body parsed (DeleteObjects with 1,000 long keys fits).
MAX_BODY = 2 << 20

Node = tuple[str, Union[str, int, bool, None, Iterable["Node"]]]

#: What XML 1.0 cannot carry as such: control characters but tab, newline and return.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _entity(match: re.Match) -> str:
    return f"&#x{ord(match.group()):x};"


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = escape(value if isinstance(value, str) else str(value))
    # S3 clients read control characters back from entities (one regex scan of a listing's
    # thousands of values instead of a Python loop over their characters).
    return _CONTROL.sub(_entity, text) if _CONTROL.search(text) else text


def _emit(out: list[str], node: Node) -> None:
    tag, value = node
    if value is None:
        return
    if isinstance(value, (str, int, float, bool)):
        out.append(f"<{tag}>{_text(value)}</{tag}>")
        return
    out.append(f"<{tag}>")
    for child in value:
        _emit(out, child)
    out.append(f"</{tag}>")


def render(root: str, children: Iterable[Node]) -> bytes:
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n', f'<{root} xmlns="{NS}">']
    for child in children:
        _emit(out, child)
    out.append(f"</{root}>")
    return "".join(out).encode("utf-8")


def error_body(error: S3Error, resource: str, request_id: str) -> bytes:
    children: list[Node] = [("Code", error.code), ("Message", error.message)]
    children += list(error.extra.items())
    children += [("Resource", resource), ("RequestId", request_id)]
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n', "<Error>"]
    for child in children:
        _emit(out, child)
    out.append("</Error>")
    return "".join(out).encode("utf-8")


def read_body(stream, limit: int = MAX_BODY) -> bytes:
    """A small request body, whole; MalformedXML beyond ``limit`` bytes."""
    data = bytearray()
    while True:
        chunk = stream.read(min(65536, limit + 1 - len(data)))
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise malformed_xml(f"the body is larger than {limit} bytes")


def parse(body: bytes, root: str) -> ET.Element:
    """The document's root element, which must be ``root``; namespaces stripped."""
    if not body.strip():
        raise malformed_xml("the body is empty")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise malformed_xml("DTDs are not accepted")
    try:
        element = ET.fromstring(body)
    except ET.ParseError as exc:
        raise malformed_xml(str(exc)) from None
    for node in element.iter():
        if isinstance(node.tag, str) and "}" in node.tag:
            node.tag = node.tag.split("}", 1)[1]
    if element.tag != root:
        raise malformed_xml(f"expected <{root}>, got <{element.tag}>")
    return element


def child_text(element: ET.Element, tag: str, default: str | None = None) -> str | None:
    found = element.find(tag)
    return default if found is None else (found.text or "")
