"""The web console in process: real data servers in threads (tests/functional/inproc_cluster.py),
a real SQLite store.  Pages render, keys are escaped, the session and CSRF gates refuse, and
uploads and downloads carry the bytes exactly."""
from __future__ import annotations

import io
import re

import pytest

import api_server
from api_server.admin import inspect
from api_server.console import browser, session
from lib.config import Config
from lib.metadata import RepairRecord
from lib.objects import Expect, Requested
from lib.rabbitmq import Bus
from lib.rs.params import BLOCK_SIZE
from tests.functional.inproc_cluster import TOKEN

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
HOSTILE_KEY = 'dir/<script>alert("x")</script> \'é&ü\u202e.txt'


@pytest.fixture
def cluster(admin_cluster):
    return admin_cluster


def login(client, token: str = TOKEN):
    form = client.get("/console/login")
    return client.post("/console/login", data={"csrf": CSRF.search(form.text).group(1),
                                               "token": token,
                                               "next": "/console/buckets/"})


@pytest.fixture
def console(cluster):
    client = cluster.app.test_client()
    assert login(client).status_code == 303
    return client


def csrf_of(client, path: str = "/console/buckets/") -> str:
    return CSRF.search(client.get(path).text).group(1)


def send_file(client, data: bytes, filename: str, bucket: str = "book", **fields):
    fields.setdefault("csrf", csrf_of(client))
    return client.post(f"/console/buckets/{bucket}/upload", content_type="multipart/form-data",
                       data={**fields, "file": (io.BytesIO(data), filename)})


def test_without_a_session_every_page_redirects_to_the_login(cluster):
    client = cluster.app.test_client()
    for path in ("/console/", "/console/cluster", "/console/buckets/",
                 "/console/buckets/book/", "/console/buckets/book/object?key=a",
                 "/console/buckets/book/download?key=a"):
        response = client.get(path)
        assert response.status_code == 303, path
        assert response.location.startswith("/console/login")
    posted = client.post("/console/buckets/book/delete", data={"key": "a"})
    assert posted.status_code == 303 and posted.location.startswith("/console/login")
    client.set_cookie(session.SESSION_COOKIE, "9999999999.nonce.forged", path="/console/")
    assert client.get("/console/cluster").status_code == 303


def test_login_sets_a_strict_httponly_cookie_and_refuses_wrong_tokens(cluster):
    client = cluster.app.test_client()
    assert login(client, "wrong").status_code == 403
    assert client.get("/console/cluster").status_code == 303
    stale = client.post("/console/login", data={"csrf": "nope", "token": TOKEN})
    assert stale.status_code == 403 and "expired" in stale.text
    response = login(client)
    assert response.status_code == 303 and response.location == "/console/buckets/"
    cookie = next(c for c in response.headers.getlist("Set-Cookie")
                  if c.startswith(session.SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console/" in cookie
    assert client.get("/console/cluster").status_code == 200
    client.post("/console/logout", data={"csrf": csrf_of(client)})
    assert client.get("/console/cluster").status_code == 303


def test_login_never_redirects_off_the_console(cluster):
    for target in ("//evil.example/", "http://evil.example/console/", "/objects/x"):
        client = cluster.app.test_client()
        form = client.get("/console/login")
        response = client.post("/console/login", data={
            "csrf": CSRF.search(form.text).group(1), "token": TOKEN, "next": target})
        assert response.location == "/console/cluster", target


def test_a_session_ends_when_the_admin_token_changes(cluster):
    config = cluster.api.config
    value = session.new_session(config)
    assert session.session_nonce(config, value) is not None
    changed = Config(**{**config.__dict__, "admin_token": "another"})
    assert session.session_nonce(changed, value) is None
    expired = session.new_cookie(config, -1, b"session")
    assert session.session_nonce(config, expired) is None


def test_the_console_is_off_without_an_admin_token(tmp_path):
    config = Config(listen_address="127.0.2.1:1", metadata_db=tmp_path / "md.db")
    app = api_server.create_app(config, bus=Bus(config.rabbitmq_server, "never-started"))
    try:
        client = app.test_client()
        page = client.get("/console/login")
        assert page.status_code == 403 and "ADMIN_TOKEN" in page.text
        assert client.post("/console/login", data={"token": ""}).status_code == 403
        assert client.get("/console/cluster").status_code == 303
    finally:
        app.extensions["tessera.stop"]()


def test_cluster_page_shows_live_and_down_data_servers(console, cluster):
    page = console.get("/console/cluster")
    assert page.status_code == 200
    assert page.text.count('data-state="live"') == len(cluster.addresses)
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    down = cluster.addresses[0]
    cluster.kill(down)
    page = console.get("/console/cluster").text
    assert f'data-address="{down}" data-state="down"' in page
    assert page.count('data-state="live"') == len(cluster.addresses) - 1


def test_upload_streams_into_the_layer_and_download_gives_the_bytes_back(console, cluster):
    data = bytes(range(256)) * (2 * BLOCK_SIZE // 256) + b"tail"
    response = send_file(console, data, "big.bin", prefix="folder/")
    assert response.status_code == 303
    assert response.location.startswith("/console/buckets/book/object?key=folder/big.bin")
    version = cluster.api.metadata.version("book", "folder/big.bin")
    assert version.size == len(data)
    page = console.get(response.location)
    assert page.status_code == 200 and 'id="health" class="shard-ok"' in page.text
    assert page.text.count('class="shard shard-ok"') == 6
    download = console.get("/console/buckets/book/download?key=folder/big.bin")
    assert download.status_code == 200 and download.data == data
    assert download.headers["Content-Type"] == "application/octet-stream"
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert download.headers["Content-Length"] == str(len(data))


def test_hostile_keys_are_escaped_everywhere(console, cluster):
    data = "<html><script>alert(1)</script></html>".encode()
    assert send_file(console, data, "x.html", name=HOSTILE_KEY).status_code == 303
    folder = HOSTILE_KEY.rsplit("/", 1)[0] + "/"          # "</script>" holds a delimiter
    for path, query in (("/console/buckets/book/", {"prefix": folder}),
                        ("/console/buckets/book/object", {"key": HOSTILE_KEY})):
        page = console.get(path, query_string=query)
        assert page.status_code == 200
        assert "<script>" not in page.text and "&lt;script&gt;alert(&#34;x&#34;)" in page.text
        assert "\u202e" in page.text and "&#39;é&amp;ü" in page.text
    download = console.get("/console/buckets/book/download", query_string={"key": HOSTILE_KEY})
    assert download.data == data and download.headers["Content-Type"] == \
        "application/octet-stream"
    disposition = download.headers["Content-Disposition"]
    assert "<" not in disposition and '"' not in disposition.split('filename="')[1][:-1] \
        .split('";')[0]
    missing = console.get("/console/buckets/book/object", query_string={"key": "<b>no</b>"})
    assert missing.status_code == 404 and "&lt;b&gt;no&lt;/b&gt;" in missing.text


def test_forms_without_the_sessions_csrf_token_do_nothing(console, cluster):
    assert send_file(console, b"kept", "kept.txt").status_code == 303
    refused = console.post("/console/buckets/book/delete", data={"key": "kept.txt"})
    assert refused.status_code == 403
    other = cluster.app.test_client()
    login(other)
    foreign = csrf_of(other)
    assert console.post("/console/buckets/book/delete",
                        data={"key": "kept.txt", "csrf": foreign}).status_code == 403
    assert cluster.api.metadata.version("book", "kept.txt") is not None
    assert send_file(console, b"never", "never.txt", csrf="forged").status_code == 403
    assert send_file(console, b"never", "never.txt", csrf=foreign).status_code == 403
    assert cluster.api.metadata.version("book", "never.txt") is None


def test_a_form_cut_short_stores_nothing(console, cluster):
    token = csrf_of(console)
    body = (b"--b\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n" + token.encode()
            + b"\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.bin\""
            b"\r\n\r\n" + b"x" * 100_000)
    response = console.post("/console/buckets/book/upload", data=body,
                            content_type="multipart/form-data; boundary=b")
    assert response.status_code == 400
    assert cluster.api.metadata.version("book", "cut.bin") is None
    two = (b"--b\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n" + token.encode()
           + b"".join(b"\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\""
                      + name + b"\"\r\n\r\nbytes" for name in (b"one", b"two")) + b"\r\n--b--\r\n")
    response = console.post("/console/buckets/book/upload", data=two,
                            content_type="multipart/form-data; boundary=b")
    assert response.status_code == 400 and "one file" in response.text
    assert cluster.api.metadata.version("book", "one") is None


def test_browser_navigates_prefixes_and_pages(console, cluster, monkeypatch):
    monkeypatch.setattr(browser, "PAGE_SIZE", 2)
    for key in ("a/1", "a/2", "b", "c", "d/x/y"):
        assert send_file(console, key.encode(), "f", name=key).status_code == 303
    first = console.get("/console/buckets/book/")
    assert 'href="/console/buckets/book/?prefix=a/"' in first.text and ">b</a>" in first.text
    after = re.search(r'id="next" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
    second = console.get(after)
    assert ">c</a>" in second.text and ">d/</a>" in second.text and 'id="next"' not in second.text
    inside = console.get("/console/buckets/book/", query_string={"prefix": "a/"})
    assert ">1</a>" in inside.text and ">2</a>" in inside.text and ">b</a>" not in inside.text
    assert console.get("/console/buckets/").text.count('href="/console/buckets/book/"') == 1


def test_delete_removes_the_object_from_the_listing(console, cluster):
    assert send_file(console, b"bye", "bye.txt").status_code == 303
    response = console.post("/console/buckets/book/delete",
                            data={"key": "bye.txt", "csrf": csrf_of(console)})
    assert response.status_code == 303 and response.location == "/console/buckets/book/"
    assert "bye.txt" not in console.get("/console/buckets/book/").text
    assert console.get("/console/buckets/book/download?key=bye.txt").status_code == 404


def test_empty_files_and_removing_one_version(console, cluster):
    assert send_file(console, b"", "empty").status_code == 303
    assert console.get("/console/buckets/book/download?key=empty").data == b""
    assert send_file(console, b"two", "empty").status_code == 303
    info = inspect.object_info(cluster.api, "book", "empty")
    older = info["versions"][1]["version_id"]
    page = console.get("/console/buckets/book/object", query_string={"key": "empty"}).text
    assert page.count("(latest)") == 1 and older in page
    response = console.post("/console/buckets/book/delete", data={
        "key": "empty", "version": older, "csrf": csrf_of(console)})
    assert response.status_code == 303
    assert [v["size"] for v in inspect.object_info(cluster.api, "book", "empty")["versions"]] \
        == [3]


def test_a_multipart_objects_page_shows_the_shards_of_each_part(console, cluster, monkeypatch):
    monkeypatch.setattr(cluster.api.multipart, "min_part_size", 1)
    created = cluster.api.multipart.create("book", "joined")
    parts = [cluster.api.multipart.upload_part(created.upload_id, n, iter([data]), Expect())
             for n, data in ((1, b"first part "), (2, b"second part"))]
    cluster.api.multipart.complete(created.upload_id,
                                   [Requested(p.number, p.etag) for p in parts])
    page = console.get("/console/buckets/book/object?key=joined").text
    for number in (1, 2):
        table = page.split(f'id="shards-part-{number}"')[1].split("</table>")[0]
        assert table.count('class="shard shard-ok"') == 6
    assert 'id="health" class="shard-ok"' in page
    assert console.get("/console/buckets/book/download?key=joined").data == \
        b"first part second part"


def test_search_finds_keys_by_substring_and_escapes_the_query(console, cluster, monkeypatch):
    monkeypatch.setattr(browser, "PAGE_SIZE", 1)
    for key in ("logs/2026/app.log", "logs/2025/app.log", "other.txt"):
        assert send_file(console, b"x", "f", name=key).status_code == 303
    page = console.get("/console/buckets/book/search", query_string={"q": "app.lo"})
    assert page.status_code == 200 and page.text.count('class="key"') == 1
    after = re.search(r'id="next" href="([^"]+)"', page.text).group(1).replace("&amp;", "&")
    second = console.get(after).text
    keys = re.findall(r'class="key" href="[^"]+">([^<]+)<', page.text + second)
    assert sorted(keys) == ["logs/2025/app.log", "logs/2026/app.log"]
    hostile = console.get("/console/buckets/book/search", query_string={"q": '<i>"x'})
    assert hostile.status_code == 200 and "&lt;i&gt;&#34;x" in hostile.text
    assert "<i>" not in hostile.text


def test_the_console_writes_under_its_session_when_book_api_token_is_set(tmp_path):
    config = Config(listen_address="127.0.2.1:1", metadata_db=tmp_path / "md.db",
                    admin_token=TOKEN, book_api_token="book-secret")
    app = api_server.create_app(config, bus=Bus(config.rabbitmq_server, "never-started"))
    try:
        client = app.test_client()
        assert login(client).status_code == 303
        response = client.post("/console/buckets/book/delete",
                               data={"key": "absent", "csrf": csrf_of(client)})
        assert response.status_code == 303
        assert client.delete("/objects/absent").status_code == 401     # the book API: still gated
    finally:
        app.extensions["tessera.stop"]()


def test_cluster_page_lists_recent_repairs_escaped(console, cluster):
    assert "No repair has been recorded yet." in console.get("/console/cluster").text
    store = cluster.api.metadata
    store.record_repair(RepairRecord.finished("h/one+=", [1, 4], by="127.0.2.1:1"))
    store.record_repair(RepairRecord.finished("h-two", [0], "<b>broken</b> & gone",
                                              by="worker"))
    page = console.get("/console/cluster").text
    rows = re.findall(r'<tr class="repair" data-outcome="(\w+)">(.*?)</tr>', page, re.S)
    assert [outcome for outcome, _ in rows] == ["failed", "done"]        # newest first
    failed, done = (row for _, row in rows)
    assert "h-two" in failed and "worker" in failed
    assert "&lt;b&gt;broken&lt;/b&gt; &amp; gone" in failed
    assert "<b>broken" not in page
    assert "h/one+=" in done and "1, 4" in done and "127.0.2.1:1" in done and " UTC" in done
    assert "Repairs done</dt><dd>1<" in page and "Repairs failed</dt><dd>1<" in page
