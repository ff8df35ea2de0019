"""Budgets: how many extra attempts a process may make (:class:`RetryBudget`), and how
many first attempts it should still send to a failing upstream (:class:`AdaptiveThrottle`).

RetryBudget: how many extra attempts (failovers, retries, hedges) a process may make.

Envoy's retry budget, over time instead of concurrency: within the last ``window``
seconds, extra attempts may be at most ``ratio`` of the requests, and always at least
``min_per_second`` per second (so a quiet process can still fail over). During a full
outage of a node this caps the extra load failovers add instead of doubling it.

Counting is per second, in a ring of buckets; a count lost to a race between threads
only loosens the budget by one, so the request path takes no lock.

Per fleet (``retry_budget_scope="fleet"``), the state sync publishes this process's
totals and hands back every worker's (:meth:`RetryBudget.share`): the ratio and the
minimum then hold for the fleet as a whole, so N workers failing over at once cannot add
N times the budget. Between syncs, this process's own attempts since are added on top.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from ..model import Criticality

__all__ = ["AdaptiveThrottle", "RetryBudget"]


class RetryBudget:
    """See the module docstring. ``clock``: monotonic seconds; tests pass a fake."""

    __slots__ = ("_buckets", "_clock", "_shared", "min_per_second", "ratio", "window")

    def __init__(
        self, ratio: float, min_per_second: float, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._clock = clock
        # [second, requests, extra attempts] per second of the window
        self._buckets: list[list[int]] = [[-1, 0, 0] for _ in range(max(1, int(window)))]
        # the fleet's (requests, extra), this process's as published, and until when valid
        self._shared: tuple[int, int, int, int, float] | None = None

    def _bucket(self) -> list[int]:
        second = int(self._clock())
        bucket = self._buckets[second % len(self._buckets)]
        if bucket[0] != second:
            bucket[:] = [second, 0, 0]
        return bucket

    def request(self) -> None:
        """Count one request (its first attempt)."""
        self._bucket()[1] += 1

    def totals(self) -> tuple[int, int]:
        """This process's ``(requests, extra attempts)`` over the window."""
        oldest = int(self._clock()) - len(self._buckets) + 1
        requests = extra = 0
        for second, r, e in self._buckets:
            if second >= oldest:
                requests += r
                extra += e
        return requests, extra

    def share(self, requests: int, extra: int, valid_for: float, mine: tuple[int, int]) -> None:
        """The fleet's totals over the window, ``mine`` (this process's, as published)
        among them; they stand for ``valid_for`` seconds (the state sync calls this)."""
        self._shared = (requests, extra, mine[0], mine[1], self._clock() + valid_for)

    def allowed(self) -> tuple[int, int, float]:
        """``(requests, extra attempts, extra attempts allowed)`` over the window (the
        fleet's while shared totals are fresh)."""
        requests, extra = self.totals()
        shared = self._shared
        if shared is not None and self._clock() < shared[4]:
            fleet_requests, fleet_extra, my_requests, my_extra, _ = shared
            requests = max(requests, fleet_requests - my_requests + requests)
            extra = max(extra, fleet_extra - my_extra + extra)
        return requests, extra, max(self.ratio * requests, self.min_per_second * len(self._buckets))

    def try_spend(self) -> bool:
        """Take one extra attempt from the budget; ``False`` when it is spent."""
        _, extra, allowed = self.allowed()
        if extra >= allowed:
            return False
        self._bucket()[2] += 1
        return True

    def __repr__(self) -> str:
        requests, extra, allowed = self.allowed()
        return f"RetryBudget(ratio={self.ratio:g}, {extra}/{allowed:.0f} extra attempts for {requests} requests)"



#: how much more readily each class is throttled than ``critical`` (``critical_plus``
#: never is): the less a call matters, the sooner it gives way
_THROTTLE_WEIGHT = {
    Criticality.CRITICAL: 1.0,
    Criticality.SHEDDABLE_PLUS: 1.5,
    Criticality.SHEDDABLE: 2.0,
}


class AdaptiveThrottle:
    """Client-side throttling of first attempts to an upstream that is failing (the SRE
    book's adaptive throttling, with Envoy's admission-control defaults).

    Over the last ``window`` seconds it counts the calls asked for (throttled ones
    included, each once its outcome is known) and those the upstream accepted (answered,
    not with a 5xx or 429). A call
    is refused here with probability ``(requests - accepts / success_ratio) /
    (requests - exempt + 1)``, at most ``max_rejection``: while the upstream accepts at
    least ``success_ratio`` of the calls nothing is refused; when its capacity drops to
    a quarter, the load sent to it falls to about its capacity over ``success_ratio``
    instead of four times it. ``critical_plus`` calls are never refused (``exempt``:
    they are sent whatever the throttle says, so the others give way for them and the
    total sent still follows what the upstream accepts). ``sheddable_plus`` calls are
    refused 1.5 times as readily as ``critical`` ones, ``sheddable`` twice.

    Counting is per second in a ring of buckets, without a lock (a count lost to a
    race only nudges the ratio).
    """

    __slots__ = ("_buckets", "_clock", "_random", "max_rejection", "success_ratio", "window")

    def __init__(
        self,
        window: float = 30.0,
        success_ratio: float = 0.95,
        max_rejection: float = 0.8,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.window = window
        self.success_ratio = success_ratio
        self.max_rejection = max_rejection
        self._clock = clock
        self._random = (rng or random.Random()).random
        # [second, requests, accepts, exempt requests] per second of the window
        self._buckets: list[list[int]] = [[-1, 0, 0, 0] for _ in range(max(1, int(window)))]

    def _bucket(self) -> list[int]:
        second = int(self._clock())
        bucket = self._buckets[second % len(self._buckets)]
        if bucket[0] != second:
            bucket[:] = [second, 0, 0, 0]
        return bucket

    def totals(self) -> tuple[int, int]:
        """``(requests, accepts)`` over the window."""
        requests, accepts, _ = self._totals()
        return requests, accepts

    def _totals(self) -> tuple[int, int, int]:
        oldest = int(self._clock()) - len(self._buckets) + 1
        requests = accepts = exempt = 0
        for second, r, a, x in self._buckets:
            if second >= oldest:
                requests += r
                accepts += a
                exempt += x
        return requests, accepts, exempt

    def probability(self, criticality: Criticality | None = None) -> float:
        """The chance a call of ``criticality`` (default ``critical``) is refused now."""
        if criticality is Criticality.CRITICAL_PLUS:
            return 0.0
        requests, accepts, exempt = self._totals()
        base = (requests - accepts / self.success_ratio) / (requests - exempt + 1)
        if base <= 0.0:
            return 0.0
        return min(self.max_rejection, base * _THROTTLE_WEIGHT.get(criticality or Criticality.CRITICAL, 1.0))

    def admit(self, criticality: Criticality | None = None) -> float | None:
        """``None`` if a call of ``criticality`` may be sent (then report its outcome with
        :meth:`finished`), else the probability it was refused with (it is counted as
        asked for, never as accepted)."""
        chance = self.probability(criticality)
        if chance > 0.0 and self._random() < chance:
            self._bucket()[1] += 1
            return chance
        return None

    def finished(self, accepted: bool, criticality: Criticality | None = None) -> None:
        """A call :meth:`admit` let through is over: the upstream ``accepted`` it or not.
        (Counted when over, not when sent: a call on its way is neither.)"""
        bucket = self._bucket()
        bucket[1] += 1
        if accepted:
            bucket[2] += 1
        if criticality is Criticality.CRITICAL_PLUS:
            bucket[3] += 1

    def __repr__(self) -> str:
        requests, accepts = self.totals()
        return f"AdaptiveThrottle({accepts}/{requests} accepted in {self.window:g} s, p={self.probability():.2f})"
