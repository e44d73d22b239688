"""The origin guards with an injected clock: negative cache expiry and bound, the breaker's
open / half-open / closed cycle, single flight's leader and followers."""
from __future__ import annotations

import pytest

from lib.errors import OriginCircuitOpen
from lib.objects import guards
from lib.objects.guards import Breaker, Flights, NegativeCache


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_negative_cache_expires_and_is_bounded(monkeypatch):
    clock = Clock()
    cache = NegativeCache(10, clock)
    cache.add("b", "k")
    assert cache.hit("b", "k") and not cache.hit("b", "other") and not cache.hit("c", "k")
    clock.now = 10.5
    assert not cache.hit("b", "k")
    monkeypatch.setattr(guards, "NEGATIVE_ENTRIES", 3)
    for key in "wxyz":
        cache.add("b", key)
    assert not cache.hit("b", "w") and all(cache.hit("b", k) for k in "xyz")
    cache.forget("b", "x")
    assert not cache.hit("b", "x")


def test_breaker_opens_then_lets_one_trial_through():
    clock = Clock()
    breaker = Breaker(2, 30, clock)
    breaker.failed("o")
    breaker.check("o")                          # one failure: still closed
    breaker.failed("o")
    with pytest.raises(OriginCircuitOpen, match="o failed 2 times"):
        breaker.check("o")
    breaker.check("other")                      # per origin
    clock.now = 31
    breaker.check("o")                          # the trial
    with pytest.raises(OriginCircuitOpen):
        breaker.check("o")                      # no second trial while the first runs
    breaker.failed("o")
    with pytest.raises(OriginCircuitOpen):
        breaker.check("o")                      # the trial failed: open again
    clock.now = 62
    breaker.check("o")
    breaker.succeeded("o")
    breaker.check("o")
    breaker.check("o")                          # closed


def test_single_flight_leader_and_followers():
    flights = Flights()
    flight, leader = flights.join("b", "k")
    again, second = flights.join("b", "k")
    assert leader and not second and again is flight and len(flights) == 1
    assert flights.join("b", "other")[1]
    error = RuntimeError("x")
    flights.land("b", "k", flight, error)
    assert flight.done.is_set() and flight.error is error
    assert flights.join("b", "k")[1]            # a new flight after landing
