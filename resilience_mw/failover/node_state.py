"""One node's health state machine: states, events and the rules between them.

Pure: no lock, no clock, no signal. Every event takes ``now`` (seconds of the pool's
clock) and returns the :class:`Transition` it caused (``None`` when the node stays
offered or stays out). :class:`~resilience_mw.failover.pool.NodePool` owns one
:class:`NodeState` per node, applies events under its lock and reports transitions
after releasing it.

Offered to traffic:

* ``healthy``: left on failures (to suspect, ejected or down).
* ``suspect``: failing, below the threshold; a success or a passing check makes it
  healthy, more failures eject it.
* ``probation``: offered again after its timer ran out; a success makes it healthy, one
  failure ejects it again, for longer.

Out:

* ``ejected`` (passive, outlier detection, or a quorum of other workers' reports): its timer (to probation), one passing check (not for outlier detection: the node answers its checks, not its traffic) or a success (to
  healthy), a failed check or a manual down (to down: out until checks pass).
* ``held-off`` (``Retry-After``): its timer (to probation), a success (to healthy), a
  manual down (to down). Checks do not end it: the node asked for time.
* ``down`` (failed checks, a manual update, a confirmed ejection, or the verdict of the
  fleet's health checker, another worker's): ``healthy_threshold`` passing checks, a
  success, a manual update or (for the checker's verdict) the checker's word that it is
  up again (to healthy).

The checker's verdict, like this worker's own failed checks, is not capped by
``max_ejection_percent``: the last node of a pool is down when the checks say so (panic
routing may still send to it, but its state says down).

Passive ejection follows Envoy's outlier detection: ``failure_threshold`` consecutive
failures of real traffic eject a node for ``base_ejection_time x ejections`` (capped at
``max_ejection_time``; the count is forgotten after ``max_ejection_time`` healthy). The
:class:`DownReason` of an outage is its first cause and is kept until the node is
offered again: a failed health check confirming a passive ejection keeps it out until
checks pass, but the node is still shown as down for ``passive``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..config import PoolConfig
from ..model import ServiceNode

__all__ = ["DownReason", "NodeState", "Phase", "RecoveryReason", "Transition"]


class _Text(str, enum.Enum):
    """A member that is its value as text (receivers may compare it with a ``str``)."""

    def __str__(self) -> str:
        return str(self.value)


class DownReason(_Text):
    """Why a node was taken out: the first cause of the outage."""

    #: failures of real traffic (passive outlier detection)
    PASSIVE = "passive"
    #: failed active health checks
    ACTIVE = "active"
    #: the node asked for time (``Retry-After`` on a 503 or 429)
    RETRY_AFTER = "retry-after"
    #: :meth:`~resilience_mw.failover.pool.NodePool.update_health` (an operator or a test)
    MANUAL = "manual"
    #: other workers found it down (a quorum of them, through the state store)
    SHARED = "shared"
    #: its success rate fell well below its peers' (outlier detection)
    SUCCESS_RATE = "success-rate"
    #: it failed at least ``failure_percentage`` % of its requests (outlier detection)
    FAILURE_PERCENTAGE = "failure-percentage"
    #: its latency stayed a multiple of its peers' median (outlier detection)
    LATENCY = "latency"


class RecoveryReason(_Text):
    """Why a node is offered again."""

    #: a call to it succeeded
    SUCCESS = "success"
    #: active health checks passed
    HEALTH_CHECK = "health-check"
    #: its ejection or hold-off ran out: offered again on probation
    EJECTION_EXPIRED = "ejection-expired"
    #: :meth:`~resilience_mw.failover.pool.NodePool.update_health`
    MANUAL = "manual"
    #: the other workers' reports that took it out were withdrawn
    SHARED = "shared"


class Phase(_Text):
    """Where a node stands (see :mod:`resilience_mw.failover.node_state`)."""

    HEALTHY = "healthy"
    SUSPECT = "suspect"
    PROBATION = "probation"
    EJECTED = "ejected"
    HELD_OFF = "held-off"
    DOWN = "down"


_OFFERED = frozenset({Phase.HEALTHY, Phase.SUSPECT, Phase.PROBATION})
#: ejections by comparison with peers: a passing health check does not end them (the
#: node answers /health; what was wrong is how it answers real traffic)
_BY_PEERS = frozenset({DownReason.SUCCESS_RATE, DownReason.FAILURE_PERCENTAGE, DownReason.LATENCY})
#: out on a timer of their own, and counted against ``max_ejection_percent``
_TIMED = frozenset({Phase.EJECTED, Phase.HELD_OFF})


@dataclass(frozen=True, slots=True)
class Transition:
    """A node went out (``healthy=False``) or came back (``healthy=True``)."""

    node: ServiceNode
    healthy: bool
    reason: DownReason | RecoveryReason
    consecutive_failures: int = 0
    #: seconds out before it is offered again on probation; ``None``: until checks pass
    ejected_for: float | None = None


@dataclass(slots=True)
class NodeState:
    """Mutable record of one node; its owner serialises the calls."""

    node: ServiceNode
    phase: Phase = Phase.HEALTHY
    #: first cause of the current outage (``None`` while offered)
    reason: DownReason | None = None
    #: when a timed phase (ejected, held-off) ends
    until: float | None = None
    consecutive_failures: int = 0
    check_failures: int = 0
    check_passes: int = 0
    ejections: int = 0
    last_check: float | None = None
    last_failure: float | None = None
    last_success: float | None = None
    healthy_since: float | None = None
    #: held down by the verdict of the fleet's health checker (another worker's): its
    #: word brings it back, as this worker's own passing checks would
    verdict: bool = False
    #: counts the node's outages: a request remembers it when it leaves, and its outcome
    #: changes nothing about an outage that began after it left
    epoch: int = 0
    #: when the node was last offered again after an outage (its slow start began)
    returned_at: float | None = None

    @property
    def offered(self) -> bool:
        """Whether selection may pick the node."""
        return self.phase in _OFFERED

    @property
    def timed_out(self) -> bool:
        """Out on a timer (ejected or held off): what ``max_ejection_percent`` caps."""
        return self.phase in _TIMED

    # ------------------------------------------------------------------ events

    def on_failure(self, now: float, rules: PoolConfig, may_eject: bool) -> Transition | None:
        """A call to the node failed. ``may_eject``: the ejection cap leaves room."""
        self.consecutive_failures += 1
        self.last_check = self.last_failure = now
        if not self.offered:
            return None
        if self.consecutive_failures >= rules.failure_threshold and may_eject:
            return self._take_out(Phase.EJECTED, DownReason.PASSIVE, now, self._next_ejection(now, rules))
        if self.phase is Phase.HEALTHY:
            self.phase = Phase.SUSPECT
        return None

    def on_success(self, now: float) -> Transition | None:
        """A call to the node succeeded: whatever kept it out, it answers."""
        self.consecutive_failures = 0
        self.last_check = self.last_success = now
        if self.offered:
            self.phase = Phase.SUSPECT if self.check_failures else Phase.HEALTHY
            return None
        return self._bring_back(RecoveryReason.SUCCESS, now)

    def on_hold(self, now: float, seconds: float, may_eject: bool) -> Transition | None:
        """The node asked to be left alone for ``seconds`` (``Retry-After``)."""
        self.last_failure = now
        if self.offered and seconds > 0 and may_eject:
            return self._take_out(Phase.HELD_OFF, DownReason.RETRY_AFTER, now, seconds)
        return None

    def on_check(
        self, now: float, passed: bool, *, unhealthy_threshold: int, healthy_threshold: int
    ) -> Transition | None:
        """An active health check ended, with Envoy-style hysteresis."""
        self.last_check = now
        if passed:
            self.check_passes += 1
            self.check_failures = 0
            if self.offered:
                if self.phase is Phase.SUSPECT and not self.consecutive_failures:
                    self.phase = Phase.HEALTHY
                return None
            if (self.phase is Phase.EJECTED and self.reason not in _BY_PEERS) or (
                self.phase is Phase.DOWN and self.check_passes >= healthy_threshold
            ):
                # (a held-off node asked for time: only its timer or a real success ends that)
                return self._bring_back(RecoveryReason.HEALTH_CHECK, now)
            return None
        self.last_failure = now
        self.check_failures += 1
        self.check_passes = 0
        if self.offered:
            if self.check_failures >= unhealthy_threshold:
                return self._take_out(Phase.DOWN, DownReason.ACTIVE, now, None)
            if self.phase is Phase.HEALTHY:
                self.phase = Phase.SUSPECT
        elif self.phase is Phase.EJECTED:
            # The checker confirms the node is down: keep it out until checks pass rather
            # than let the timer offer it to live traffic. Its reason stays the first cause.
            self.phase = Phase.DOWN
            self.until = None
        return None

    def on_manual(self, now: float, healthy: bool) -> Transition | None:
        """Set up or down by hand; a node set down stays out until a success,
        ``healthy_threshold`` passing checks or another update."""
        if healthy and not self.offered:
            return self._bring_back(RecoveryReason.MANUAL, now)
        if not healthy and self.offered:
            return self._take_out(Phase.DOWN, DownReason.MANUAL, now, None)
        if not healthy and self.timed_out:
            # out already, on a timer: now it stays out (the first cause is kept)
            self.phase = Phase.DOWN
            self.until = None
        return None

    def on_hint(self, now: float, down: bool, seconds: float, may_eject: bool, fresh: float) -> Transition | None:
        """Other workers agree the node is down (``down``) for ``seconds``, or no longer
        do. A hint never overrides this worker's own success of the last ``fresh``
        seconds, and releases only what a hint took out."""
        if down:
            own_success = self.last_success is not None and now - self.last_success < fresh
            if self.offered and may_eject and seconds > 0 and not own_success:
                return self._take_out(Phase.EJECTED, DownReason.SHARED, now, seconds)
            if self.phase is Phase.EJECTED and self.reason is DownReason.SHARED and self.until is not None:
                self.until = max(self.until, now + seconds)  # still reported: keep it out
            return None
        if self.phase is Phase.EJECTED and self.reason is DownReason.SHARED:
            return self._bring_back(RecoveryReason.SHARED, now)
        return None

    def on_verdict(self, now: float, down: bool, fresh: float) -> Transition | None:
        """The fleet's health checker (the worker holding the lease) found the node down
        (``down``), or up again. Down: out until it says up, whatever the ejection cap
        (its checks, like this worker's own, are evidence about the node, not a guess
        from traffic), unless this worker's own traffic to it succeeded in the last
        ``fresh`` seconds. Up: back if it is down until checks pass (the checker's checks
        are the ones that count while this worker runs none), not if set down by hand
        or out on a timer of its own."""
        if down:
            if self.last_success is not None and now - self.last_success < fresh:
                return None
            if self.offered:
                transition = self._take_out(Phase.DOWN, DownReason.SHARED, now, None)
                self.verdict = True
                return transition
            if self.reason is not DownReason.MANUAL:
                # out on a timer (ejected, held off) or down already: now until the checker
                # says up (the first cause is kept)
                self.phase = Phase.DOWN
                self.until = None
                self.verdict = True
            return None
        if self.phase is Phase.DOWN and self.reason is not DownReason.MANUAL:
            # down until checks pass, and the checks that count say it passes
            return self._bring_back(RecoveryReason.HEALTH_CHECK, now)
        return None

    def expire(self, now: float, rules: PoolConfig) -> Transition | None:
        """Offer the node again on probation if its timer ran out by ``now``."""
        if self.until is None or now < self.until:
            return None
        transition = self._bring_back(RecoveryReason.EJECTION_EXPIRED, now)
        self.phase = Phase.PROBATION
        # one more failure ejects it again, for longer
        self.consecutive_failures = rules.failure_threshold - 1
        return transition

    # --------------------------------------------------------------- internals

    def eject(self, now: float, rules: PoolConfig, reason: DownReason) -> Transition | None:
        """Outlier detection found the node worse than its peers (``reason``): out for
        ``base_ejection_time x ejections``, as a passive ejection."""
        if not self.offered:
            return None
        return self._take_out(Phase.EJECTED, reason, now, self._next_ejection(now, rules))

    def _next_ejection(self, now: float, rules: PoolConfig) -> float:
        if self.healthy_since is not None and now - self.healthy_since >= rules.max_ejection_time:
            self.ejections = 0  # healthy long enough: forget earlier ejections
        self.ejections += 1
        return min(rules.base_ejection_time * self.ejections, rules.max_ejection_time)

    def _take_out(self, phase: Phase, reason: DownReason, now: float, duration: float | None) -> Transition:
        self.epoch += 1
        self.returned_at = None
        self.phase = phase
        self.verdict = False
        self.reason = reason
        self.healthy_since = None
        self.check_passes = 0
        self.until = None if duration is None else now + duration
        return Transition(
            self.node,
            False,
            reason,
            consecutive_failures=max(self.consecutive_failures, self.check_failures),
            ejected_for=duration,
        )

    def _bring_back(self, reason: RecoveryReason, now: float) -> Transition:
        self.returned_at = now
        self.phase = Phase.HEALTHY
        self.verdict = False
        self.reason = None
        self.until = None
        self.check_failures = 0
        self.consecutive_failures = 0
        self.healthy_since = now
        return Transition(self.node, True, reason)
