"""AdaptiveLimit: the limit falls under injected latency and recovers; sheddable
traffic cannot take the critical share."""

from __future__ import annotations

from resilience_mw._limit import AdaptiveLimit


def feed(limit: AdaptiveLimit, rtt: float, n: int) -> float:
    for _ in range(n):
        assert limit.acquire(False)
        limit.release(False, rtt)
    return limit.limit


def test_the_limit_falls_under_latency_and_recovers() -> None:
    limit = AdaptiveLimit(initial=20, warmup=10, max_limit=200)
    healthy = feed(limit, 0.010, 200)
    assert healthy > 100  # fast answers: room to grow
    slowed = feed(limit, 0.100, 60)  # the backend slows down tenfold
    assert slowed < healthy / 4
    assert slowed >= limit.min_limit >= 2  # never below the floor
    recovered = feed(limit, 0.010, 300)
    assert recovered > healthy / 2


def test_warm_up_does_not_lower_the_limit() -> None:
    limit = AdaptiveLimit(initial=20, warmup=50)
    feed(limit, 0.010, 5)
    assert feed(limit, 0.500, 40) >= 20  # cold caches: slow, but not overload


def test_sheddable_traffic_cannot_take_the_critical_share() -> None:
    limit = AdaptiveLimit(initial=10, sheddable_share=0.5)
    taken = sum(limit.acquire(True) for _ in range(10))
    assert taken == 5  # half the limit for sheddable classes
    # critical ones still get the whole limit: the sheddable ones in flight do not count
    assert sum(limit.acquire(False) for _ in range(20)) == 10
    assert not limit.acquire(False)
    assert not limit.acquire(True)  # and the total is over the limit: no sheddable slot
    limit.release(True, None)
    assert not limit.acquire(True)
