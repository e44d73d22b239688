"""The paced socket: a request body slower than its minimum rate fails its read."""
from __future__ import annotations

import socket

import pytest

from lib.pacing import PacedSocket


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def test_a_body_that_stops_is_cut_at_its_deadline(pair):
    ours, theirs = pair
    paced = PacedSocket(ours, timeout=0.2, min_rate=1000)
    paced.start_request()
    theirs.sendall(b"x" * 100)               # 0.1 s more of credit
    assert paced.recv(1000) == b"x" * 100
    with pytest.raises(socket.timeout):
        paced.recv(1000)
    with pytest.raises(socket.timeout, match="slower than 1000 B/s"):
        paced.recv(1000)                     # the deadline has passed: no wait at all


def test_unpaced_reads_block_as_usual(pair):
    ours, theirs = pair
    paced = PacedSocket(ours, timeout=0.01, min_rate=0)
    paced.start_request()
    theirs.sendall(b"late")
    assert paced.recv(10) == b"late"
    paced.idle()
    paced.setblocking(False)
    with pytest.raises(BlockingIOError):
        paced.recv(10)
    assert paced.fileno() == ours.fileno()
