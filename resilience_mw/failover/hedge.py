"""When to send a hedged (backup) request, and whether one may be sent at all.

Finagle's backup requests with its single knob: ``max_extra_load`` (say 0.05) both
caps the hedges at that share of the calls and sets the delay after which one is sent:
the ``1 - max_extra_load`` quantile of recent latencies (the 95th percentile for 5 %),
so only the slowest calls are hedged. Hedging adds load, so :class:`HedgePolicy` also
says when not to:

* while too few latencies are known (fewer than :data:`MIN_SAMPLES`);
* while the upstream looks saturated: the median of the recent latencies is at least
  :data:`SATURATION_FACTOR` times the lowest median seen (queueing, not a sick node,
  slows every call; hedging near saturation made p99 6x worse in the issue's runs);
* when its own budget (``max_extra_load`` of the calls over the last 10 s) is spent.

The adapter also needs the method to be idempotent (or an ``Idempotency-Key``), the
service below Level1, and the retry budget to have room: each hedge is an extra
attempt. Latencies are kept in a ring of :data:`SAMPLES`; the quantile and the median
are recomputed every :data:`RECOMPUTE_EVERY` samples, so a call costs a list write.

:class:`Race` runs one hedged call: the primary in the caller's thread, the hedge in a
hedge thread started by the deadline watchdog at the delay (no thread per call), the
loser closed.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ._transport import AttemptContext
from .budget import RetryBudget

__all__ = [
    "BASELINE_DECAY",
    "MIN_SAMPLES",
    "RECOMPUTE_EVERY",
    "SAMPLES",
    "SATURATION_FACTOR",
    "Answer",
    "HedgePolicy",
    "LostRace",
    "Race",
]

#: latencies kept
SAMPLES = 512
#: latencies needed before the first hedge
MIN_SAMPLES = 50
#: the quantile and median are recomputed after this many new latencies
RECOMPUTE_EVERY = 32
#: the recent median over the lowest median seen that means "saturated"
SATURATION_FACTOR = 2.0
#: seconds over which the lowest median seen follows a median that stays higher, so
#: that a lasting change of the upstream's normal speed is learnt in minutes
BASELINE_DECAY = 300.0


class HedgePolicy:
    """See the module docstring. ``clock``: monotonic seconds; tests pass a fake."""

    def __init__(self, max_extra_load: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_extra_load = max_extra_load
        #: hedges allowed as a share of calls (``max_extra_load``) over 10 s
        self.budget = RetryBudget(max_extra_load, 0.0, 10.0, clock=clock)
        self._clock = clock
        self._recomputed_at = clock()
        self._ring: list[float] = []
        self._next = 0
        self._fresh = 0
        self._lock = threading.Lock()
        #: seconds after which a call still unanswered is hedged (``None``: not yet known)
        self.delay: float | None = None
        #: the median of the recent latencies, and the lowest median seen
        self.median: float | None = None
        self.baseline: float | None = None

    def observe(self, latency: float) -> None:
        """A call was answered in ``latency`` seconds."""
        ring = self._ring
        if len(ring) < SAMPLES:
            ring.append(latency)
        else:
            ring[self._next] = latency
            self._next = (self._next + 1) % SAMPLES
        self._fresh += 1
        if self._fresh >= RECOMPUTE_EVERY and len(ring) >= MIN_SAMPLES:
            self._recompute()

    def _recompute(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another thread is at it
        try:
            self._fresh = 0
            ordered = sorted(self._ring)
            n = len(ordered)
            self.delay = ordered[min(n - 1, int(n * (1.0 - self.max_extra_load)))]
            median = statistics.median(ordered)
            self.median = median
            now = self._clock()
            drift = 1.0 - math.exp(-max(0.0, now - self._recomputed_at) / BASELINE_DECAY)
            self._recomputed_at = now
            base = self.baseline
            self.baseline = median if base is None or median < base else base + (median - base) * drift
        finally:
            self._lock.release()

    @property
    def saturated(self) -> bool:
        """Whether the recent median is :data:`SATURATION_FACTOR` times the lowest seen."""
        median, base = self.median, self.baseline
        return median is not None and base is not None and base > 0 and median >= SATURATION_FACTOR * base

    def call(self) -> float | None:
        """Count a call that could be hedged; the delay to hedge it after, or ``None``
        when it may not be hedged (too little known, or the upstream saturated)."""
        self.budget.request()
        delay = self.delay
        if delay is None or self.saturated:
            return None
        return delay

    def try_hedge(self) -> bool:
        """Take one hedge from the budget; ``False`` when it is spent."""
        return self.budget.try_spend()

    def __repr__(self) -> str:
        delay = "unknown" if self.delay is None else f"{self.delay * 1000:.1f} ms"
        return f"HedgePolicy(max_extra_load={self.max_extra_load:g}, delay={delay}, saturated={self.saturated})"


class Answer(Protocol):
    """What a race hands around: a response with a status, that can be closed."""

    @property
    def status_code(self) -> int: ...

    def close(self) -> None: ...


class LostRace(Exception):
    """Raised in the primary's thread when its hedge answered first and its attempt was
    cut (never the node's fault, never moved to another node)."""


class Race:
    """One hedged call. The primary runs in the caller's thread; once ``delay`` has
    passed without an answer, the hedge runs on another node in a hedge thread. The
    first good answer (no error, no 5xx, no 429) wins and the other side is cut (its
    attempt's socket shut: :meth:`~resilience_mw.failover._transport.AttemptContext.cut`)
    and, if it answers all the same, closed. A primary that fails while its hedge runs
    waits for the hedge, at most ``wait`` seconds.
    """

    __slots__ = ("_attempts", "_backup", "_done", "_lock", "_primary", "_winner", "delay", "lost", "won")

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._primary = "running"  # running | waiting (for the hedge) | done
        self._backup: str | None = None  # None (not sent) | running | good | bad
        self._winner: Answer | None = None
        #: the hedge answered first: the primary stops
        self.lost = False
        #: the primary answered first: the hedge stops
        self.won = False
        # the live attempt of each side (False: the primary, True: the hedge)
        self._attempts: dict[bool, AttemptContext] = {}

    def stopped(self, hedge: bool) -> bool:
        """Whether that side lost and must stop (it is nobody's fault)."""
        return self.won if hedge else self.lost

    def watch(self, ctx: AttemptContext, hedge: bool) -> None:
        """``ctx`` is that side's attempt now: cut it if the other side wins meanwhile."""
        ctx.racing = True
        with self._lock:
            self._attempts[hedge] = ctx
            stop = self.won if hedge else self.lost
        if stop:
            ctx.cut()

    def unwatch(self, ctx: AttemptContext, hedge: bool) -> None:
        """``ctx`` is over (answered or failed): it is no longer cut, whoever wins (its
        connection may be back in the pool, another call's)."""
        with self._lock:
            if self._attempts.get(hedge) is ctx:
                del self._attempts[hedge]

    def claim_backup(self) -> bool:
        """Whether a hedge may start now: the primary is still running and no hedge has
        started."""
        with self._lock:
            if self._primary != "running" or self._backup is not None:
                return False
            self._backup = "running"
            return True

    def backup_finished(self, answer: Answer | None, good: bool) -> None:
        """The hedge is over with ``answer`` (``None``: it failed or was not sent),
        ``good`` or not."""
        close: Answer | None = None
        cut: AttemptContext | None = None
        with self._lock:
            if self._primary == "done" or not good:
                self._backup, close = "bad", answer
            else:
                self._backup, self._winner = "good", answer
                if self._primary == "running":
                    self.lost = True
                    cut = self._attempts.get(False)
        self._done.set()
        if close is not None:
            close.close()
        if cut is not None:
            cut.cut()

    def primary_finished(self, answer: Answer | None, good: bool, wait: float | None) -> Answer | None:
        """The primary is over with ``answer`` (``None``: it failed or lost), ``good`` or
        not; the hedge's answer if that is the one to return (the primary's is closed
        then), else ``None``. A bad primary waits up to ``wait`` seconds (``None``: as long
        as the hedge takes) for a hedge still running; a good one cuts it."""
        cut: AttemptContext | None = None
        with self._lock:
            waiting = self._backup == "running" and not good
            self._primary = "waiting" if waiting else "done"
            if good and self._backup == "running":
                self.won = True
                cut = self._attempts.get(True)
        if cut is not None:
            cut.cut()
        if waiting:
            self._done.wait(wait)
        with self._lock:
            self._primary = "done"
            winner = self._winner
        if winner is not None and answer is not None:
            answer.close()
        return winner

    def abandon(self) -> None:
        """The primary left with an exception that is not an outcome (an interrupt): stop
        the hedge and close its answer if it has one."""
        with self._lock:
            self._primary = "done"
            self.won = True
            cut = self._attempts.get(True)
            winner, self._winner = self._winner, None
        if cut is not None:
            cut.cut()
        if winner is not None:
            winner.close()
