"""AdaptiveLimit: the limit falls under injected latency and recovers; the no-load
latency is probed at jittered intervals with the limit pinned, without stale samples;
warm-up; sheddable traffic cannot take the critical share."""

from __future__ import annotations

from resilience_mw.admission.limit import AdaptiveLimit
from resilience_mw.testing import FakeClock


def feed(limit: AdaptiveLimit, rtt: float, n: int) -> float:
    for _ in range(n):
        epoch = limit.acquire(False)
        assert epoch is not None
        limit.release(False, rtt, epoch)
    return limit.limit


def warmed(**options: float) -> tuple[AdaptiveLimit, FakeClock]:
    """A limit past its warm-up and first probe, at 10 ms a request."""
    clock = FakeClock()
    limit = AdaptiveLimit(initial=20, warmup=10, probe_samples=5, clock=clock, **options)  # type: ignore[arg-type]
    feed(limit, 0.010, 10)
    assert limit.min_rtt is None
    feed(limit, 0.010, 5)  # the probe the warm-up ends with
    assert limit.min_rtt == 0.010 and not limit.probing
    return limit, clock


def test_the_limit_falls_under_latency_and_recovers() -> None:
    limit, _ = warmed()
    healthy = feed(limit, 0.010, 200)
    assert healthy > 100  # fast answers: room to grow
    slowed = feed(limit, 0.100, 60)  # the backend slows down tenfold
    assert slowed < healthy / 4
    assert slowed >= limit.min_limit >= 2  # never below the floor
    recovered = feed(limit, 0.010, 300)
    assert recovered > healthy / 2


def test_the_no_load_latency_is_probed_at_jittered_intervals_with_the_limit_pinned() -> None:
    starts = []
    for draw in (0.0, 1.0):  # the extremes of the jitter
        clock = FakeClock()
        limit = AdaptiveLimit(initial=20, warmup=10, probe_samples=5, probe_interval=60, probe_jitter=0.15,
                              clock=clock, rng=lambda d=draw: d)
        feed(limit, 0.010, 15)  # warm-up, then the first probe
        for second in range(1, 80):
            clock.advance(1)
            epoch = limit.acquire(False)  # (a probe starts when a request comes)
            assert epoch is not None
            if limit.probing:
                starts.append(second)
                break
            limit.release(False, None, epoch)
    assert starts == [51, 69]  # 60 s -15 % and +15 %: workers spread their probes
    assert limit.probing and not limit.probe_pins_all
    # the service keeps up (its latency is its no-load latency): the probe refuses no
    # critical request; sheddable ones are pinned at min_limit (2), one slot being held
    held = [limit.acquire(False) for _ in range(5)]
    assert held.count(None) == 0
    assert limit.acquire(True) is None


def test_a_probe_of_a_service_that_does_not_keep_up_pins_everything() -> None:
    limit, clock = warmed(probe_interval=60, probe_jitter=0)
    feed(limit, 0.030, 30)  # three times its no-load latency: queueing inside
    clock.advance(61)
    first = limit.acquire(False)
    assert limit.probing and limit.probe_pins_all and first is not None
    held = [limit.acquire(False) for _ in range(5)]
    assert held.count(None) == 4  # critical too: pinned at min_limit (2) while probing
    for epoch in [first, held[0]]:
        assert epoch is not None
        limit.release(False, 0.012, epoch)
    feed(limit, 0.012, 3)
    assert not limit.probing and limit.min_rtt == 0.012  # a true no-load measure may rise


def test_a_probe_beside_critical_traffic_only_ever_lowers_the_no_load_latency() -> None:
    limit, clock = warmed(probe_interval=60, probe_jitter=0)
    clock.advance(61)
    slots = [limit.acquire(False) for _ in range(6)]  # critical traffic beyond the floor
    assert limit.probing and None not in slots
    for epoch in slots:
        assert epoch is not None
        limit.release(False, 0.011, epoch)  # (a little slower, beside the others)
    assert not limit.probing and limit.min_rtt == 0.010  # not raised by a mixed probe


def test_a_request_admitted_before_a_probe_does_not_count_toward_it() -> None:
    limit, clock = warmed(probe_interval=60, probe_jitter=0)
    slow = limit.acquire(False)  # admitted before the probe, at a queue's latency
    assert slow is not None
    clock.advance(61)
    probe = [limit.acquire(False)]  # starts the probe
    assert limit.probing and probe[0] == slow + 1
    limit.release(False, 5.0, slow)  # a stale sample: dropped
    for _ in range(4):
        assert probe[-1] is not None
        limit.release(False, 0.012, probe[-1])
        probe.append(limit.acquire(False))
    assert limit.probing  # four of five samples: the stale one did not count
    assert probe[-1] is not None
    limit.release(False, 0.012, probe[-1])
    assert not limit.probing and limit.min_rtt == 0.012


def test_stuck_at_the_floor_the_limit_probes_again_and_follows_a_slower_service() -> None:
    limit, _ = warmed(probe_interval=3600)
    feed(limit, 0.200, 100)  # twenty times slower, for good
    assert limit.min_rtt == 0.200  # five updates at the floor started a probe at once
    assert feed(limit, 0.200, 200) > 20  # the new normal: the limit grows again


def test_warm_up_does_not_lower_the_limit() -> None:
    limit = AdaptiveLimit(initial=20, warmup=50)
    feed(limit, 0.010, 5)
    assert feed(limit, 0.500, 40) >= 20  # cold caches: slow, but not overload


def test_sheddable_traffic_cannot_take_the_critical_share() -> None:
    limit = AdaptiveLimit(initial=10, sheddable_share=0.5)
    taken = sum(limit.acquire(True) is not None for _ in range(10))
    assert taken == 5  # half the limit for sheddable classes
    # critical ones still get the whole limit: the sheddable ones in flight do not count
    assert sum(limit.acquire(False) is not None for _ in range(20)) == 10
    assert limit.acquire(False) is None
    assert limit.acquire(True) is None  # and the total is over the limit: no sheddable slot
    limit.release(True, None, 0)
    assert limit.acquire(True) is None
