"""Data server registry expiry (injected clock) and the RabbitMQ message formats."""
import json

import pytest

from lib.registry import DataServerRegistry
from lib.messages import Heartbeat, LocateReply, LocateRequest, MalformedMessage


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_registry_expires_silent_servers():
    clock = Clock()
    registry = DataServerRegistry(ttl=10, clock=clock)
    registry.seen("127.0.1.1:1")
    clock.now += 6
    registry.seen("127.0.1.2:1")
    assert registry.live() == ["127.0.1.1:1", "127.0.1.2:1"]
    clock.now += 5
    assert registry.live() == ["127.0.1.2:1"]


def test_registry_forgets_failed_servers_until_their_next_heartbeat():
    registry = DataServerRegistry(ttl=10, clock=Clock())
    for i in range(1, 7):
        registry.seen(f"127.0.1.{i}:1")
    registry.forget("127.0.1.3:1", "test")
    assert "127.0.1.3:1" not in registry.choose(6)
    registry.seen("127.0.1.3:1")
    assert "127.0.1.3:1" in registry.live()


def test_choose_is_distinct_and_excludes():
    registry = DataServerRegistry(ttl=10, clock=Clock())
    for i in range(1, 7):
        registry.seen(f"127.0.1.{i}:1")
    for _ in range(20):
        chosen = registry.choose(4, exclude=["127.0.1.1:1"])
        assert len(chosen) == len(set(chosen)) == 4
        assert "127.0.1.1:1" not in chosen
    assert len(registry.choose(10)) == 6


def test_heartbeat_is_the_books_json_string():
    assert Heartbeat("127.0.1.3:12345").to_json() == b'"127.0.1.3:12345"'
    assert Heartbeat.from_json(b'"127.0.1.3:12345"') == Heartbeat("127.0.1.3:12345")
    leaving = Heartbeat("127.0.1.3:12345", leaving=True)
    assert Heartbeat.from_json(leaving.to_json()) == leaving
    assert Heartbeat.from_json(b'"data-3.example:80"').addr == "data-3.example:80"
    assert Heartbeat.from_json(b'"[::1]:8080"').addr == "[::1]:8080"


@pytest.mark.parametrize("addr", ["%2F%2F", "127.0.1.3", "127.0.1.3:", "127.0.1.3:0",
                                  "127.0.1.3:70000", "a b:1", "a/b:1", ":80", "host:port"])
def test_addresses_that_are_not_host_port_are_refused(addr):
    with pytest.raises(MalformedMessage):
        Heartbeat.from_json(json.dumps(addr).encode())
    with pytest.raises(MalformedMessage):
        Heartbeat.from_json(json.dumps({"Addr": addr, "Leaving": True}).encode())
    with pytest.raises(MalformedMessage):
        LocateReply.from_json(json.dumps({"Addr": addr, "Ids": [1]}).encode())


def test_locate_messages_round_trip_and_accept_the_books_reply():
    request = LocateRequest("abc%2Fdef=")
    assert request.to_json() == b'"abc%2Fdef="'
    assert LocateRequest.from_json(request.to_json()) == request
    assert LocateRequest.from_json(LocateRequest(ping=True).to_json()).ping
    reply = LocateReply("127.0.1.1:1", (0, 4))
    assert LocateReply.from_json(reply.to_json()) == reply
    assert LocateReply.from_json(b'{"Addr":"a:1","Id":3}') == LocateReply("a:1", (3,))


@pytest.mark.parametrize("body", [b"", b"not json", b"42", b"null", b'""', b"{}",
                                  b'{"Addr": 5}', b'{"Addr":"a:1","Ids":[-1]}',
                                  b'{"Addr":"a:1","Ids":"x"}', b"\xff\xfe"])
def test_malformed_messages_raise_one_error(body):
    for parser in (Heartbeat.from_json, LocateRequest.from_json, LocateReply.from_json):
        try:
            parser(body)
        except MalformedMessage:
            pass
