"""When to send a hedged (backup) request, and whether one may be sent at all.

Finagle's backup requests, with its single knob ``max_extra_load`` (say 0.05): hedges
are at most that share of the calls, and a call is hedged once it has waited longer
than most answers take. Two choices differ from Finagle's, both for the same case, a
node that stalls (a GC pause, a full disk) and catches many calls at once:

* **The delay is the** ``1 - max_extra_load / 2`` **quantile** (the 97.5th percentile
  for 5 %), not the ``1 - max_extra_load`` one. At the full share the ordinary tail
  spends the whole budget in steady state, and a stall, which sends a burst of calls
  past the delay together, finds it empty. At half, the other half is there for bursts.
* **Only answers count:** the latency of each attempt that brought a good answer, the
  hedge's included. A primary cut because its hedge answered first is not counted: it
  is known only to be longer than the delay, and counting it as the time it was cut
  pushes the quantile up by a hedge's latency at each refresh while a stall lasts.

Latencies are kept :data:`WINDOW` seconds (Finagle's 30 s) in a histogram of logarithmic
bins (5 % wide) per :data:`SLOT` seconds, so that one second of stalled calls is a few
percent of the window, not most of it; recording a latency is one increment. The delay
is refreshed every :data:`REFRESH` seconds.

Hedging adds load, so :class:`HedgePolicy` also says when not to:

* while fewer than :data:`MIN_SAMPLES` latencies are known;
* while the upstream looks saturated: the median of the newest :data:`RECENT_SLOTS`
  slots (3 to 6 s; more if they hold fewer than :data:`MIN_SAMPLES` latencies) is at
  least :data:`SATURATION_FACTOR` times the lowest such median seen. Seconds, not a
  count of calls: a dip of a fraction of a second (calls stuck on a stalled node leave
  the others idle) would otherwise set a baseline that ordinary load then looks
  saturated against (queueing, not a sick node,
  slows every call; hedging near saturation made p99 6x worse in the issue's runs);
* while requests wait past the delay, on average, on more than half of the nodes at
  once (:meth:`HedgePolicy.widespread`): a hedge helps a call stuck on a node slower than
  its peers, and when most nodes are slow together (a node fell out and the others
  queue its share) the median has not moved yet, but hedges would be a storm of extra
  load on the nodes that are left;
* when its own budget (``max_extra_load`` of the calls over the last 10 s) is spent.

The adapter also needs the method to be idempotent (or an ``Idempotency-Key``), the
service below Level1, and the retry budget to have room: each hedge is an extra attempt.

:class:`Race` runs one hedged call: the primary in the caller's thread, the hedge in a
hedge thread started by the deadline watchdog at the delay (no thread per call), the
loser closed.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ._transport import AttemptContext
from .budget import RetryBudget

__all__ = [
    "BASELINE_DECAY",
    "MIN_SAMPLES",
    "RECENT_SLOTS",
    "REFRESH",
    "SATURATION_FACTOR",
    "SLOT",
    "WINDOW",
    "Answer",
    "HedgePolicy",
    "LostRace",
    "Race",
]

#: seconds of latencies the delay is taken from (Finagle's window)
WINDOW = 30.0
#: seconds per slot of the window (a slot is a histogram; the oldest is dropped whole)
SLOT = 3.0
#: the newest slots the saturation median is taken from
RECENT_SLOTS = 2
#: seconds between refreshes of the delay and the median
REFRESH = 1.0
#: latencies needed in the window before the first hedge
MIN_SAMPLES = 50
#: the recent median over the lowest median seen that means "saturated"
SATURATION_FACTOR = 2.0
#: seconds over which the lowest median seen follows a median that stays higher, so
#: that a lasting change of the upstream's normal speed is learnt in minutes
BASELINE_DECAY = 300.0

# histogram bins: bin i holds latencies up to _LOWEST * _GROWTH ** i seconds (0.1 ms to
# past 60 s in 5 % steps; longer ones fall in the last bin)
_LOWEST = 1e-4
_GROWTH = 1.05
_BINS = 1 + math.ceil(math.log(60.0 / _LOWEST) / math.log(_GROWTH))
_LOG_GROWTH = math.log(_GROWTH)


def _bin(latency: float) -> int:
    if latency <= _LOWEST:
        return 0
    return min(_BINS - 1, math.ceil(math.log(latency / _LOWEST) / _LOG_GROWTH))


def _upper(index: int) -> float:
    """The upper edge of bin ``index``, in seconds."""
    return _LOWEST * _GROWTH**index


def _quantile(counts: list[int], total: int, q: float) -> float:
    """The upper edge of the bin holding the ``q`` quantile of ``counts`` (``total`` > 0)."""
    rank = min(total, max(1, math.ceil(q * total)))
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return _upper(index)
    return _upper(_BINS - 1)


def _merged(slots: list[_Slot]) -> tuple[list[int], int]:
    """The histogram of ``slots`` together, and how many latencies it holds."""
    bins = [sum(column) for column in zip(*(s.bins for s in slots), strict=True)]
    return bins, sum(bins)


class _Slot:
    """The latencies of one :data:`SLOT` of the window, as a histogram."""

    __slots__ = ("bins", "number")

    def __init__(self, number: int) -> None:
        self.number = number
        self.bins = [0] * _BINS


class HedgePolicy:
    """See the module docstring. ``clock``: monotonic seconds; tests pass a fake."""

    def __init__(self, max_extra_load: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_extra_load = max_extra_load
        #: the latency quantile a call is hedged after
        self.quantile = 1.0 - max_extra_load / 2
        #: hedges allowed as a share of calls (``max_extra_load``) over 10 s
        self.budget = RetryBudget(max_extra_load, 0.0, 10.0, clock=clock)
        self._clock = clock
        self._slots = [_Slot(-1) for _ in range(round(WINDOW / SLOT))]
        self._observed = 0
        self._refreshed_at = self._baseline_at = clock()
        self._lock = threading.Lock()
        #: seconds after which a call still unanswered is hedged (``None``: not yet known)
        self.delay: float | None = None
        #: the median of the recent latencies, and the lowest median seen
        self.median: float | None = None
        self.baseline: float | None = None

    def after_fork_in_child(self) -> None:
        """Start with a lock of its own in a forked child (its owner calls it)."""
        self._lock = threading.Lock()

    def observe(self, latency: float) -> None:
        """An attempt brought a good answer in ``latency`` seconds."""
        now = self._clock()
        number = int(now // SLOT)
        index = number % len(self._slots)
        slot = self._slots[index]
        if slot.number != number:
            slot = self._slots[index] = _Slot(number)
        # no lock: a count lost to a race between threads moves no quantile
        slot.bins[_bin(latency)] += 1
        self._observed += 1
        if now - self._refreshed_at >= REFRESH or (self.delay is None and self._observed >= MIN_SAMPLES):
            self._refresh(now)

    def _refresh(self, now: float) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another thread is at it
        try:
            self._refreshed_at = now
            current = int(now // SLOT)
            live = sorted(
                (s for s in self._slots if current - len(self._slots) < s.number <= current),
                key=lambda s: -s.number,
            )  # newest first
            bins, total = _merged(live)
            if total < MIN_SAMPLES:
                self.delay = None
                return
            self.delay = _quantile(bins, total, self.quantile)
            # the median of the newest slots (and older ones until MIN_SAMPLES)
            recent = _merged(live[:RECENT_SLOTS])
            for newest in range(RECENT_SLOTS + 1, len(live) + 1):
                if recent[1] >= MIN_SAMPLES:
                    break
                recent = _merged(live[:newest])
            median = _quantile(*recent, 0.5)
            self.median = median
            base = self.baseline
            if base is None or median < base:
                self.baseline = median
            else:
                drift = 1.0 - math.exp(-max(0.0, now - self._baseline_at) / BASELINE_DECAY)
                self.baseline = base + (median - base) * drift
            self._baseline_at = now
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

    @staticmethod
    def widespread(late_nodes: int, nodes: int) -> bool:
        """Whether requests wait past the delay on more than half of the ``nodes``
        offered (on ``late_nodes`` of them, on average over each node's requests in
        flight) at once: the upstream as a whole is slow, and a hedge would only add load
        (see the module docstring)."""
        return late_nodes > nodes // 2

    def try_hedge(self) -> bool:
        """Take one hedge from the budget; ``False`` when it is spent."""
        return self.budget.try_spend()

    def __repr__(self) -> str:
        delay = "unknown" if self.delay is None else f"{self.delay * 1000:.1f} ms"
        return (
            f"HedgePolicy(max_extra_load={self.max_extra_load:g}, delay={delay}, saturated={self.saturated})"
        )


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
