"""RSPutStream against real in-process data servers: whose failure counts against whom.

A body source that fails (the client's reader raising, or a body ending before its declared
size, as when a client hangs up mid-PUT) must abort the upload without dropping a single data
server from the registry, and leave no temp object behind; a data server that refuses
connections is dropped and replaced.
"""
from __future__ import annotations

import threading
import time

import pytest
from werkzeug.serving import make_server

from data_server import create_app
from lib.errors import ClientBodyError, SizeMismatch
from lib.objectstream import DataServerClient
from lib.registry import DataServerRegistry
from tests.cluster_mac import MAC, data_config
from lib.rs.params import ALL_SHARDS, BLOCK_SIZE
from lib.rs.put import RSPutStream
from tests.conftest import Body

SERVERS = ALL_SHARDS + 1


@pytest.fixture
def data_servers(tmp_path):
    """SERVERS data servers on 127.0.1.x, each with its storage root; yields (address, root)."""
    running = []
    for i in range(1, SERVERS + 1):
        root = tmp_path / f"d{i}"
        app = create_app(data_config(listen_address=f"127.0.1.{i}:1", storage_root=root),
                         bus=None)
        server = make_server(f"127.0.1.{i}", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running.append((server, f"127.0.1.{i}:{server.server_port}", root))
    yield [(address, root) for _, address, root in running]
    for server, _, _ in running:
        server.shutdown()
        server.server_close()


def _registry(addresses) -> DataServerRegistry:
    registry = DataServerRegistry(ttl=600)
    for address in addresses:
        registry.seen(address)
    return registry


def _files(roots, sub: str) -> list:
    return [p for root in roots for p in (root / sub).iterdir()]


def _eventually_empty(roots, sub: str) -> None:
    """A data server removes a temp object when its body breaks off, on its own thread."""
    deadline = time.monotonic() + 10
    while _files(roots, sub) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _files(roots, sub) == []


BODY = Body(20 * BLOCK_SIZE, seed=3)


def _broken_reader(raises: bool):
    """The first 3 blocks of BODY, then ClientBodyError, or else a silent end: the body is
    just short, as gunicorn hands over a Content-Length body whose client hung up."""
    for n, block in enumerate(BODY):
        if n == 3:
            if raises:
                raise ClientBodyError("client hung up")
            return
        yield block


@pytest.mark.parametrize("raises, error", [(True, ClientBodyError), (False, SizeMismatch)])
def test_a_failing_body_source_drops_no_data_server(data_servers, raises, error):
    addresses = [a for a, _ in data_servers]
    roots = [r for _, r in data_servers]
    registry = _registry(addresses)
    client = DataServerClient(10, MAC)
    targets = dict(enumerate(addresses[:ALL_SHARDS]))
    with pytest.raises(error), RSPutStream(client, targets, BODY.hash, BODY.size,
                                           ALL_SHARDS - 1, registry) as put:
        for block in _broken_reader(raises):
            put.write(block)
        put.finish(10)
        put.commit()
    assert registry.live() == sorted(addresses)
    _eventually_empty(roots, "temp")
    assert _files(roots, "objects") == []


def test_a_refused_connection_drops_that_server_and_the_put_goes_on(data_servers):
    addresses = [a for a, _ in data_servers]
    registry = _registry(addresses)
    client = DataServerClient(10, MAC)
    closed = "127.0.1.9:1"                        # nothing listens there
    registry.seen(closed)
    targets = dict(enumerate([closed] + addresses[1:ALL_SHARDS]))
    with RSPutStream(client, targets, BODY.hash, BODY.size, ALL_SHARDS, registry) as put:
        for block in BODY:
            put.write(block)
        put.finish(10)
        committed = put.commit()
    assert sorted(committed) == list(range(ALL_SHARDS)) and closed not in committed.values()
    assert closed not in registry.live() and len(registry.live()) == SERVERS
