"""A node's load as this process sees it: requests in flight, a peak-sensitive latency
average, and its outcomes since the last comparison with its peers.

:class:`NodeLoad` is what the load-aware strategies score and what outlier detection
reads. Its cost is Finagle's and Linkerd's *peak EWMA* times the requests in flight:

* a latency above the average replaces it at once (a spike is believed at once), one
  below it is folded in with a weight that grows with the time since the last sample,
  so the average comes down over ``decay`` seconds, not over a count of requests;
* read without a new sample, the average decays towards zero with the same time
  constant: a node that stalled once, or was never measured, is tried again rather
  than shunned for ever;
* requests still in flight count by their age: a node that has stopped answering looks
  as slow as its oldest waiting request, before any of them returns;
* a failure, a 429 or a 503 makes the node cost at least ``penalty`` seconds, fading
  over :data:`PENALTY_DECAY` seconds (Linkerd's failure penalty), so a node that fails
  fast does not attract traffic for being fast, and one blip does not keep a node out
  for long (a fast failure is not folded into the average: it would make the node look
  fast);
* a node with requests in flight and no sample yet costs more than any measured node
  (Finagle's rule), so a new node is explored one request at a time.

Each :class:`NodeLoad` owns a small lock held only to update its numbers, never across
I/O; the cost is read without it (a torn read nudges one choice, nothing more).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

__all__ = ["PASS_OVER_MAX", "PENALTY_DECAY", "UNMEASURED_PENALTY", "NodeLoad", "Tally"]

#: seconds over which a failure's penalty fades (1 s of penalty is worth 25 ms after
#: about 7 s: the node is tried again then, and penalised again if it still fails)
PENALTY_DECAY = 2.0

#: the longest a stalling node is passed over before one call tries it again (seconds)
PASS_OVER_MAX = 1.0

#: the cost of a node with requests in flight and no latency sample yet (plus one per
#: request in flight): above any measured node, so a new node is explored, not flooded
UNMEASURED_PENALTY = 1e6


@dataclass(frozen=True, slots=True)
class Tally:
    """A node's outcomes over one outlier-detection interval (one process's, or summed
    over the fleet)."""

    requests: int = 0
    failures: int = 0
    #: sum of the successful requests' latencies, seconds
    latency_sum: float = 0.0
    #: the fastest success, seconds (``None``: no success): the node's own speed, which
    #: queueing in front of a busy node does not raise
    fastest: float | None = None

    @property
    def successes(self) -> int:
        return self.requests - self.failures

    @property
    def mean_latency(self) -> float | None:
        """Mean latency of the successes, ``None`` without any."""
        ok = self.requests - self.failures
        return self.latency_sum / ok if ok > 0 else None

    def __add__(self, other: Tally) -> Tally:
        fastest = self.fastest if other.fastest is None else other.fastest if self.fastest is None else min(
            self.fastest, other.fastest
        )
        return Tally(
            self.requests + other.requests, self.failures + other.failures, self.latency_sum + other.latency_sum,
            fastest,
        )


class NodeLoad:
    """One node's load and outcomes in this process; see the module docstring.

    :param decay: seconds of the latency average's time constant.
    :param penalty: seconds a failure counts as (0: a failure counts as its duration).
    """

    __slots__ = (
        "_decay",
        "_failures",
        "_fastest",
        "_latency_sum",
        "_lock",
        "_passed_over_until",
        "_penalised_at",
        "_pending",
        "_races_lost",
        "_requests",
        "_stamp",
        "latency",
        "penalty",
    )

    def __init__(self, decay: float = 10.0, penalty: float = 1.0) -> None:
        self._decay = decay
        self.penalty = penalty
        self._lock = threading.Lock()
        # (requests in flight in this process, the sum of their start times): one tuple,
        # replaced whole under the lock, so a reader without it never sees half an update
        self._pending: tuple[int, float] = (0, 0.0)
        self._passed_over_until = 0.0
        self._races_lost = 0  # in a row, since its last answer
        #: the peak-sensitive average, seconds, as of :attr:`_stamp` (0: never measured)
        self.latency = 0.0
        self._stamp = 0.0
        self._requests = 0
        self._failures = 0
        self._latency_sum = 0.0
        self._fastest: float | None = None
        self._penalised_at: float | None = None

    def after_fork_in_child(self) -> None:
        """Start afresh in a forked child (its owner calls it): the parent's requests
        in flight are not the child's, and the lock may have been held at the fork."""
        self._lock = threading.Lock()
        self._pending = (0, 0.0)
        self._passed_over_until = 0.0
        self._races_lost = 0

    def begin(self, now: float) -> None:
        """A request to the node leaves at ``now``."""
        with self._lock:
            n, total = self._pending
            self._pending = (n + 1, total + now)

    def end(self, started: float) -> None:
        """The request that left at ``started`` is over (answered, failed or abandoned)."""
        with self._lock:
            n, total = self._pending
            if n > 0:
                self._pending = (n - 1, total - started if n > 1 else 0.0)

    def observe(self, now: float, latency: float) -> None:
        """A latency seen without an outcome (a request given up on after ``latency``
        seconds): folded into the average, not counted."""
        with self._lock:
            self._fold(now, latency)

    def _fold(self, now: float, sample: float) -> None:
        old = self.latency
        if sample >= old or old == 0.0:
            self.latency = sample  # a peak is believed at once
        else:
            w = math.exp(-max(0.0, now - self._stamp) / self._decay)
            self.latency = old * w + sample * (1.0 - w)
        self._stamp = now

    def record(self, now: float, latency: float | None, ok: bool) -> None:
        """An outcome: a success that took ``latency`` seconds, or a failure (the node
        then costs at least :attr:`penalty` seconds for a while; how long the failure
        took counts only if it raises the average)."""
        sample = latency if latency is not None else 0.0
        with self._lock:
            self._requests += 1
            if ok:
                self._races_lost = 0
                self._latency_sum += sample
                if self._fastest is None or sample < self._fastest:
                    self._fastest = sample
                self._fold(now, sample)
                return
            self._failures += 1
            if self.penalty > 0.0:
                self._penalised_at = now
            if sample > self.latency:
                self._fold(now, sample)

    @property
    def inflight(self) -> int:
        """Requests sent to the node and not yet answered, in this process."""
        return self._pending[0]

    def waited(self, now: float) -> float:
        """How long the requests in flight have waited at ``now``, on average (0: none)."""
        n, total = self._pending
        return now - total / n if n else 0.0

    def lost_race(self, now: float, waited: float) -> None:
        """A request to the node was cut at ``now`` after ``waited`` seconds because its
        hedge to another node answered first: the node counts as stalling (see
        :meth:`stalling`). (The wait reaches the latency average apart, through
        :meth:`observe`: the failover loop hears of the cut first.)"""
        with self._lock:
            self._races_lost += 1
            hold = min(PASS_OVER_MAX, waited * 2 ** min(self._races_lost - 1, 30))
            self._passed_over_until = max(self._passed_over_until, now + hold)

    def stalling(self, now: float, delay: float) -> bool:
        """Whether the node looks stalled at ``now`` to a caller that hedges after
        ``delay`` seconds: its requests in flight have waited longer on average; or a
        request to it lost its race (:meth:`lost_race`) and it has answered nothing since,
        and either a request to it is in flight (the one call trying it again) or the
        pass-over is not over: as long as that request had waited, doubled with each
        race lost in a row, at most :data:`PASS_OVER_MAX`. During a long stall a few
        calls try the node again, one at a time, not every caller's."""
        return self.suspected(now) or self.waited(now) > delay

    def suspected(self, now: float) -> bool:
        """The part of :meth:`stalling` that rests on a race lost, not on waits alone."""
        return self._races_lost > 0 and (now < self._passed_over_until or self.inflight > 0)

    def cost(self, now: float) -> float:
        """The load-aware cost at ``now``: the decayed peak average, or the mean age of
        the requests in flight if that is longer, times (requests in flight + 1)."""
        n = self.inflight
        latency = self.latency
        penalised_at = self._penalised_at
        if latency > 0.0:
            latency *= math.exp(-max(0.0, now - self._stamp) / self._decay)
        elif n and penalised_at is None:
            return UNMEASURED_PENALTY + n
        if n:
            latency = max(latency, self.waited(now))
        if penalised_at is not None:
            latency = max(latency, self.penalty * math.exp(-max(0.0, now - penalised_at) / PENALTY_DECAY))
        return latency * (n + 1)

    def take_tally(self) -> Tally:
        """The outcomes since the last call; the count starts again."""
        with self._lock:
            tally = Tally(self._requests, self._failures, self._latency_sum, self._fastest)
            self._requests = self._failures = 0
            self._latency_sum = 0.0
            self._fastest = None
        return tally

    def __repr__(self) -> str:
        return f"NodeLoad(inflight={self.inflight}, latency={self.latency:.4f})"
