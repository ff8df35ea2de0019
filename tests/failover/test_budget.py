"""RetryBudget on a fake clock: a share of the requests, a floor per second, a window
that forgets."""

from __future__ import annotations

from resilience_mw.failover.budget import RetryBudget
from resilience_mw.testing import FakeClock


def spend_all(budget: RetryBudget) -> int:
    spent = 0
    while budget.try_spend():
        spent += 1
    return spent


def test_a_share_of_the_requests_with_a_floor() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.2, 3.0, 10.0, clock=clock)
    for _ in range(10):
        budget.request()
    assert spend_all(budget) == 30  # the floor: 3 per second of the window, not 20 % of 10
    for _ in range(1000):
        budget.request()
    assert spend_all(budget) == 0.2 * 1010 - 30


def test_the_window_forgets() -> None:
    clock = FakeClock()
    budget = RetryBudget(0.2, 0.0, 10.0, clock=clock)
    for _ in range(100):
        budget.request()
    assert spend_all(budget) == 20
    clock.advance(10)  # those requests and attempts are out of the window
    for _ in range(50):
        budget.request()
    assert spend_all(budget) == 10
