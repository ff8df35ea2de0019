"""The hedge delay and when hedging stands down, on a fake clock (issue: sick nodes; the
real-server behaviour is in tests/failover/test_sick_nodes.py)."""

from __future__ import annotations

import pytest

from resilience_mw.failover.hedge import MIN_SAMPLES, WINDOW, HedgePolicy
from resilience_mw.testing import FakeClock


def feed(policy: HedgePolicy, clock: FakeClock, latency: float, count: int, *, every: float = 0.001) -> None:
    for _ in range(count):
        policy.observe(latency)
        clock.advance(every)


def test_no_delay_before_enough_answers() -> None:
    clock = FakeClock()
    policy = HedgePolicy(0.05, clock=clock)
    feed(policy, clock, 0.010, MIN_SAMPLES - 1)
    assert policy.delay is None and policy.call() is None
    feed(policy, clock, 0.010, 1)
    assert policy.delay == pytest.approx(0.010, rel=0.05)


def test_the_delay_is_the_quantile_of_the_window_a_short_stall_does_not_move_it() -> None:
    clock = FakeClock()
    policy = HedgePolicy(0.05, clock=clock)  # hedges after the 97.5th percentile
    feed(policy, clock, 0.010, 2000, every=0.005)  # 10 s of 10 ms answers
    feed(policy, clock, 0.900, 40, every=0.025)  # a one-second stall: 2 % of the window
    clock.advance(1.0)
    feed(policy, clock, 0.010, 1)
    assert policy.delay == pytest.approx(0.010, rel=0.05)  # its calls are the ones to hedge
    feed(policy, clock, 0.900, 60, every=0.01)  # slow answers past the quantile's share
    clock.advance(1.0)
    feed(policy, clock, 0.010, 1)
    assert policy.delay == pytest.approx(0.900, rel=0.05)
    clock.advance(WINDOW)  # the window forgets them
    feed(policy, clock, 0.004, MIN_SAMPLES, every=0.02)
    assert policy.delay == pytest.approx(0.004, rel=0.05)


def test_saturation_is_a_median_held_for_seconds_not_a_dip() -> None:
    clock = FakeClock()
    policy = HedgePolicy(0.05, clock=clock)
    feed(policy, clock, 0.016, 3000, every=0.002)  # 6 s at 16 ms: the baseline
    feed(policy, clock, 0.006, 100, every=0.002)  # 0.2 s of fast answers (others were stuck)
    feed(policy, clock, 0.016, 1000, every=0.002)
    assert policy.baseline == pytest.approx(0.016, rel=0.1)  # the dip did not set it
    assert not policy.saturated and policy.call() is not None
    feed(policy, clock, 0.040, 4000, every=0.002)  # every answer 2.5x slower, for 8 s
    assert policy.saturated and policy.call() is None


@pytest.mark.parametrize(("late", "nodes", "widespread"), [(1, 2, False), (1, 5, False), (2, 5, False), (3, 5, True)])
def test_hedging_stands_down_when_most_nodes_are_late_at_once(late: int, nodes: int, widespread: bool) -> None:
    assert HedgePolicy.widespread(late, nodes) is widespread
