"""AdaptiveLimit: how many requests a process should serve at once, learnt from latency.

Netflix concurrency-limits' Gradient2, with the fixes its users asked for: the limit
compares a short-term latency average with a long-term one (the long one follows only
slowly, and decays towards the short one once latency falls back), multiplies the limit by their ratio
(at most 1, at least 0.5 per update) and adds a small queue allowance (its square
root). A warm-up keeps the first ``warmup`` samples from lowering the limit (cold caches
are not overload), and the limit never goes below ``min_limit`` (above 1: a single slot
would serialise everything). In-flight requests are partitioned: sheddable classes may
hold at most ``sheddable_share`` of the limit and only while the total is under it;
critical ones are refused only when they alone fill it, so sheddable traffic cannot take
the critical share (at worst the process runs ``limit`` plus the sheddable share).

Not locked on the sample path beyond one short lock per acquire/release.
"""

from __future__ import annotations

import math
import threading

__all__ = ["AdaptiveLimit"]


class AdaptiveLimit:
    """See the module docstring; times are seconds."""

    def __init__(
        self,
        *,
        initial: int = 20,
        min_limit: int = 2,
        max_limit: int = 200,
        tolerance: float = 1.5,
        smoothing: float = 0.2,
        warmup: int = 50,
        sheddable_share: float = 0.5,
    ) -> None:
        self.limit = float(initial)
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.tolerance = tolerance
        self.smoothing = smoothing
        self.warmup = warmup
        self.sheddable_share = sheddable_share
        self.inflight = 0
        self.sheddable_inflight = 0
        self._short: float | None = None
        self._long: float | None = None
        self._samples = 0
        self._lock = threading.Lock()

    def acquire(self, sheddable: bool) -> bool:
        """Take a slot; ``False`` when the limit (or the sheddable share) is full."""
        with self._lock:
            limit = int(self.limit)
            if sheddable:
                if self.inflight >= limit or self.sheddable_inflight >= max(1, int(limit * self.sheddable_share)):
                    return False
                self.sheddable_inflight += 1
            elif self.inflight - self.sheddable_inflight >= limit:
                return False  # sheddable requests in flight do not count against critical ones
            self.inflight += 1
            return True

    def release(self, sheddable: bool, rtt: float | None) -> None:
        """Give the slot back; ``rtt``: how long the request took (``None``: it failed
        early and says nothing about latency)."""
        with self._lock:
            self.inflight -= 1
            if sheddable:
                self.sheddable_inflight -= 1
            if rtt is not None:
                self._sample(rtt)

    def _sample(self, rtt: float) -> None:
        self._samples += 1
        short = rtt if self._short is None else self._short + 0.5 * (rtt - self._short)
        long = rtt if self._long is None else self._long + (rtt - self._long) / 600
        if long > 2 * short:
            long *= 0.95  # latency fell back: let the long average follow, so the limit recovers
        self._short, self._long = short, long
        gradient = max(0.5, min(1.0, self.tolerance * long / short)) if short > 0 else 1.0
        if self._samples <= self.warmup:
            gradient = 1.0  # warming up: latency of cold caches is not overload
        target = self.limit * gradient + math.sqrt(self.limit)
        self.limit = min(self.max_limit, max(self.min_limit, (1 - self.smoothing) * self.limit + self.smoothing * target))

    def __repr__(self) -> str:
        return f"AdaptiveLimit(limit={self.limit:.1f}, inflight={self.inflight})"
