"""The console's bucket and object browser: buckets, a folder view of keys (delimiter
``/``, paged), an object's page, downloads and deletes.

Keys travel in query strings (``?key=``), never in paths, so any key (slashes, ``%``, ``?``,
unicode) round-trips through ``url_for`` unchanged.
"""
from __future__ import annotations

from urllib.parse import quote

from flask import Response, redirect, render_template, request, url_for

from api_server.admin import inspect
from api_server.console import api, bp
from lib.errors import BadRequest

#: Keys and CommonPrefixes on one page of the browser.
PAGE_SIZE = 100
DELIMITER = "/"


def _key_arg() -> str:
    key = request.values.get("key", "")
    if not key:
        raise BadRequest("which object? (key is missing)")
    return key


def parent_prefix(key: str) -> str:
    """The folder a key or prefix is shown in (``a/b/c`` and ``a/b/c/`` are in ``a/b/``)."""
    at = key.rstrip(DELIMITER).rfind(DELIMITER)
    return key[:at + 1] if at >= 0 else ""


def crumbs(prefix: str) -> list[tuple[str, str]]:
    """(label, prefix) of each folder on the way to ``prefix``."""
    found, start = [], 0
    while (at := prefix.find(DELIMITER, start)) >= 0:
        found.append((prefix[start:at + 1], prefix[:at + 1]))
        start = at + 1
    return found


@bp.get("/buckets/")
def buckets_page():
    return render_template("console/buckets.html", buckets=api().layer.buckets())


@bp.get("/buckets/<bucket>/")
def objects_page(bucket: str):
    prefix = request.args.get("prefix", "")
    after = request.args.get("after", "")
    page = api().layer.list(bucket, prefix, DELIMITER, after, PAGE_SIZE)
    last = page.last
    more = None
    if page.truncated and last is not None:
        more = last[1] if last[0] == "prefix" else last[1].key
    return render_template("console/objects.html", bucket=bucket, prefix=prefix, after=after,
                           page=page, more=more, crumbs=crumbs(prefix),
                           parent=parent_prefix(prefix))


@bp.get("/buckets/<bucket>/search")
def search_page(bucket: str):
    """Current keys of the bucket containing ``q`` (the metadata's key index, not a walk)."""
    api().layer.bucket(bucket)
    q = request.args.get("q", "")
    found, more = [], None
    if q:
        try:
            found, more = api().metadata.search_keys(bucket, q, PAGE_SIZE,
                                                     request.args.get("after") or None)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    return render_template("console/search.html", bucket=bucket, q=q, found=found, more=more)


@bp.get("/buckets/<bucket>/download")
def download(bucket: str):
    """The object's bytes as an attachment, streamed; an unreadable object is an error page
    before the first byte."""
    key = _key_arg()
    reader = api().layer.open(bucket, key, request.args.get("version") or None)
    name = key.rsplit(DELIMITER, 1)[-1] or "object"
    fallback = "".join(c if c.isascii() and c.isalnum() or c in "._-" else "_" for c in name)
    headers = {"Content-Length": str(reader.length),
               "Content-Disposition": f"attachment; filename=\"{fallback}\"; "
                                      f"filename*=UTF-8''{quote(name, safe='')}",
               "ETag": f'"{reader.version.etag}"'}
    body = iter(reader)            # closes the reader when it ends, fails or is closed
    head = next(body, b"")

    def chunks():
        if head:
            yield head
        yield from body

    response = Response(chunks(), headers=headers, mimetype="application/octet-stream",
                        direct_passthrough=True)
    response.call_on_close(body.close)       # also when the body is never iterated (HEAD)
    return response


@bp.post("/buckets/<bucket>/delete")
def delete(bucket: str):
    key = _key_arg()
    version_id = request.form.get("version") or None
    api().layer.delete(bucket, key, version_id)
    return redirect(url_for("console.objects_page", bucket=bucket,
                            prefix=parent_prefix(key) or None), 303)


@bp.get("/buckets/<bucket>/object")
def object_page(bucket: str):
    """An object's versions and the shards of one of them, checked on the data servers now."""
    key = _key_arg()
    info = inspect.object_info(api(), bucket, key, request.args.get("version") or None)
    return render_template("console/object.html", bucket=bucket, key=key, info=info,
                           parent=parent_prefix(key), crumbs=crumbs(parent_prefix(key)),
                           healthy=_healthy(info))


def _healthy(info: dict) -> bool:
    """Whether every shard of the version (of each of its parts) is present and verified."""
    groups = [info["shards"]] + [part["shards"] for part in info["parts"]]
    return any(groups) and all(s["present"] and s["verified"] for g in groups for s in g)
