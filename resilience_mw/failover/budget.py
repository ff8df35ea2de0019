"""RetryBudget: how many extra attempts (failovers, retries) a process may make.

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

import time
from collections.abc import Callable

__all__ = ["RetryBudget"]


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
