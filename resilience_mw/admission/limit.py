"""AdaptiveLimit: how many requests a process should serve at once, learnt from latency.

A gradient limit in the manner of Envoy's adaptive concurrency filter and Netflix's
Gradient2, with the fixes their users had to make:

* **A measured no-load latency.** Every ``probe_interval`` seconds the limit is pinned
  at ``min_limit`` until ``probe_samples`` requests have completed; the median of their
  latencies is ``min_rtt``, what a request costs without queueing. Comparing with a
  long-term average instead (plain Gradient2) lets a sustained overload become the
  baseline, after which the limit no longer falls.
* **A probe never refuses critical traffic on a service that keeps up** (its smoothed
  latency within ``min_rtt * (1 + buffer)``, or nothing known yet): only sheddable
  requests are pinned then, and since critical ones ran beside the probe, its median can
  only lower ``min_rtt``. A service that does not keep up is probed with everything
  pinned, which is what lets ``min_rtt`` rise when the service became slower for good.
* **Jitter on the probe** (Envoy #8337): each interval is stretched or shrunk by up to
  ``probe_jitter``, so the workers of a fleet do not all pin at the same moment.
* **No stale samples** (Envoy #11579): a request admitted before a probe began does not
  count toward it (each probe starts a new epoch).
* **A probe when stuck** (Envoy #10647): five updates in a row at the floor trigger a
  probe at once (the service may have become slower for good).
* **A floor above 1** (``min_limit``, 2): a single slot would serialise everything.
* **Warm-up**: the first ``warmup`` samples never lower the limit (cold caches are not
  overload); the first probe follows them.

Between probes, each completed request updates the limit: with ``short`` the smoothed
latency, ``gradient = min_rtt * (1 + buffer) / short`` (between 0.5 and 2), and the
limit moves a ``smoothing`` step toward ``limit * gradient + sqrt(limit * gradient)`` (a
small queue allowance; at the lowest gradient the limit settles at the floor). In-flight requests are partitioned: sheddable classes may hold at most
``sheddable_share`` of the limit and only while the total is under it; critical ones are
refused only when they alone fill it, so sheddable traffic cannot take the critical share
(at worst the process runs ``limit`` plus the sheddable share).

One short lock per acquire and per release; no I/O.
"""

from __future__ import annotations

import math
import random
import statistics
import threading
import time
from collections.abc import Callable

from .. import _fork

__all__ = ["AdaptiveLimit"]

#: updates in a row at the floor after which a probe starts at once
_STUCK_UPDATES = 5


class AdaptiveLimit:
    """See the module docstring; times are seconds. ``clock`` (monotonic) and ``rng``
    (``random.random``-like) are for tests."""

    def __init__(
        self,
        *,
        initial: int = 20,
        min_limit: int = 2,
        max_limit: int = 200,
        buffer: float = 0.25,
        smoothing: float = 0.2,
        warmup: int = 50,
        sheddable_share: float = 0.5,
        probe_interval: float = 60.0,
        probe_jitter: float = 0.15,
        probe_samples: int = 25,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.limit = float(initial)
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.buffer = buffer
        self.smoothing = smoothing
        self.warmup = warmup
        self.sheddable_share = sheddable_share
        self.probe_interval = probe_interval
        self.probe_jitter = probe_jitter
        self.probe_samples = probe_samples
        self._clock = clock
        self._rng = rng
        self.inflight = 0
        self.sheddable_inflight = 0
        #: latency without queueing, from the last probe (``None`` before the first)
        self.min_rtt: float | None = None
        #: a probe is under way: the limit is pinned at ``min_limit``
        self.probing = False
        #: the probe under way pins critical requests too (the service did not keep up)
        self.probe_pins_all = False
        # a critical request beyond the floor ran during this probe: its median is not a
        # no-load latency, only an upper bound of one
        self._probe_mixed = False
        #: bumped when a probe starts; a release from an older epoch is not a sample
        self.epoch = 0
        self._probe_rtts: list[float] = []
        self._next_probe = math.inf
        self._short: float | None = None
        self._samples = 0
        self._at_floor = 0
        self._lock = threading.Lock()
        _fork.register(self)

    def acquire(self, sheddable: bool) -> int | None:
        """Take a slot: the epoch to give back to :meth:`release`, or ``None`` when the
        limit (or the sheddable share) is full."""
        with self._lock:
            if not self.probing and self._clock() >= self._next_probe:
                self._start_probe()
            limit = self.min_limit if self.probing else int(self.limit)
            if sheddable:
                if self.inflight >= limit or self.sheddable_inflight >= max(1, int(limit * self.sheddable_share)):
                    return None
                self.sheddable_inflight += 1
            else:
                critical = self.inflight - self.sheddable_inflight  # sheddable ones do not count against it
                if critical >= limit:
                    if not self.probing or self.probe_pins_all or critical >= int(self.limit):
                        return None
                    self._probe_mixed = True  # a service that keeps up: critical traffic goes on
            self.inflight += 1
            return self.epoch

    def release(self, sheddable: bool, rtt: float | None, epoch: int) -> None:
        """Give the slot back; ``rtt``: how long the request took (``None``: it failed
        early and says nothing about latency); ``epoch``: what :meth:`acquire` gave."""
        with self._lock:
            # (never below 0: a slot taken before a fork is released in a child that reset)
            self.inflight = max(0, self.inflight - 1)
            if sheddable:
                self.sheddable_inflight = max(0, self.sheddable_inflight - 1)
            if rtt is not None and epoch == self.epoch:
                self._sample(rtt)

    def _after_fork_in_child(self) -> None:
        # Only the forking thread lives on: the parent's requests in flight never release
        # here, and the lock may have been held by one of them.
        self._lock = threading.Lock()
        self.inflight = self.sheddable_inflight = 0

    def _start_probe(self) -> None:
        self.probing = True
        self.epoch += 1
        self._probe_rtts = []
        self._probe_mixed = False
        short, base = self._short, self.min_rtt
        self.probe_pins_all = short is not None and base is not None and short > base * (1 + self.buffer)

    def _sample(self, rtt: float) -> None:
        self._samples += 1
        if self.probing:
            self._probe_rtts.append(rtt)
            if len(self._probe_rtts) >= self.probe_samples:
                median = statistics.median(self._probe_rtts)
                mixed = self._probe_mixed and self.min_rtt is not None
                self.min_rtt = min(self.min_rtt, median) if mixed and self.min_rtt is not None else median
                self.probing = False
                self._short = None
                self._at_floor = 0
                jitter = 1 + self.probe_jitter * (2 * self._rng() - 1)
                self._next_probe = self._clock() + self.probe_interval * jitter
            return
        self._short = rtt if self._short is None else self._short + 0.5 * (rtt - self._short)
        if self._samples <= self.warmup:
            if self._samples == self.warmup:
                self._next_probe = self._clock()  # warmed up: measure the no-load latency
            return
        if self.min_rtt is None:
            return
        gradient = max(0.5, min(2.0, self.min_rtt * (1 + self.buffer) / self._short)) if self._short > 0 else 1.0
        target = self.limit * gradient + math.sqrt(self.limit * gradient)
        self.limit = min(self.max_limit, max(self.min_limit, (1 - self.smoothing) * self.limit + self.smoothing * target))
        self._at_floor = self._at_floor + 1 if int(self.limit) <= self.min_limit else 0
        if self._at_floor >= _STUCK_UPDATES:
            self._next_probe = self._clock()  # pinned at the floor: is the service slower for good?

    def __repr__(self) -> str:
        rtt = "unknown" if self.min_rtt is None else f"{self.min_rtt * 1000:.1f} ms"
        return f"AdaptiveLimit(limit={self.limit:.1f}, inflight={self.inflight}, min_rtt={rtt})"
