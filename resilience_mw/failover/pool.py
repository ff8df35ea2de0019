"""NodePool: the nodes, their health and the picker, owned under one lock.

Each node's health is a :class:`~resilience_mw.failover.node_state.NodeState` (the state
machine: healthy, suspect, probation, ejected, held-off, down). Events (passive marks
from real traffic, active health checks, manual updates) take the lock, step the
node's state and, when the set of offered nodes changes, rebuild an immutable view
holding the picker and the orderer of the configured strategy. Choosing a node reads
that view with no lock and no scan. Transitions are logged and reported through
:mod:`resilience_mw.signals` after the lock is released.

An ejection or hold-off that has run out is applied on every read (picking, ordering,
:meth:`NodePool.is_healthy`, :meth:`NodePool.health`, :meth:`NodePool.snapshot`), at
the first read at or after its expiry by the pool's clock: every reader agrees. At most
``max_ejection_percent`` of the nodes (and always at least one) can be out on a timer
at the same time.

Load and outcomes: each node has a :class:`~resilience_mw.failover.load.NodeLoad` (its
requests in flight, a peak-sensitive latency, its outcomes since the last comparison).
A call :meth:`NodePool.send` s a request and hands its :class:`Sent` back with the
outcome, so an outcome is judged against the node's state when the request left: the
success of a request sent before an ejection does not readmit the node. Every
``outlier_interval`` the first outcome recorded compares the nodes with their peers
(:mod:`~resilience_mw.failover.outliers`) and ejects the outliers; with a shared state
store the state sync compares the fleet's counts instead (``compare_on_traffic``). A node offered again after an outage ramps
up over ``slow_start_window`` whatever the strategy.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import _fork, signals
from ..config import PoolConfig, nodes_check
from ..exceptions import ConfigError, UnknownNodeError
from ..model import FailoverStrategy, NodeHealth, ServiceNode
from . import _inbound
from ._strategies import Orderer, Picker, build_orderer, build_picker
from .load import NodeLoad, Tally
from .node_state import NodeState, Phase, Transition
from .outliers import find_outliers

__all__ = ["CallOrder", "NodePool", "Sent"]

log = logging.getLogger(__name__)

_Event = Callable[[NodeState, float], Transition | None]


@dataclass(frozen=True, slots=True)
class _View:
    """What selection reads: rebuilt whole whenever the offered set changes."""

    healthy: tuple[ServiceNode, ...]
    candidates: tuple[ServiceNode, ...]
    pick: Picker | None
    order: Orderer | None
    #: the earliest timer to run out (``None``: no node is out on a timer)
    recheck_at: float | None
    panic: bool


class Sent:
    """One request on its way to a node: what its outcome is judged against."""

    __slots__ = ("epoch", "node", "open", "started")

    def __init__(self, node: ServiceNode, started: float, epoch: int) -> None:
        self.node = node
        #: when it left, by the pool's clock
        self.started = started
        #: the node's outage count when it left
        self.epoch = epoch
        #: not yet ended
        self.open = True


class CallOrder:
    """The nodes one call may try, each once: the picked node at once, the rest only when
    a failover needs them (most calls never do)."""

    __slots__ = ("_order", "_rest", "first")

    def __init__(self, first: ServiceNode, order: Orderer | None, rest: tuple[ServiceNode, ...] | None = None) -> None:
        #: the node to try first
        self.first = first
        self._order = order
        self._rest = rest

    def rest(self) -> tuple[ServiceNode, ...]:
        """The nodes to try after :attr:`first`, in the strategy's order."""
        if self._rest is None:
            assert self._order is not None
            self._rest = self._order(self.first)[1:]
        return self._rest


class NodePool:
    """Nodes with health state and strategy-based selection.

    :param nodes: the :class:`ServiceNode` list (non-empty, unique ids; mappings of
        their fields are accepted too).
    :param strategy: a :class:`FailoverStrategy` (or its member name).
    :param failure_threshold: consecutive failures of real traffic that eject a node.
    :param config: a :class:`~resilience_mw.config.PoolConfig`; or pass its fields
        (``base_ejection_time``, ``max_ejection_time``, ``max_ejection_percent``,
        ``panic``, ``latency_alpha``, ``power_of_two``) as keyword arguments.
    :param clock: monotonic clock in seconds; tests pass a fake.
    :param rng: random source for Random, FastestResponse with power_of_two, and orders.
    """

    def __init__(
        self,
        nodes: Iterable[ServiceNode],
        strategy: FailoverStrategy | str | None = None,
        failure_threshold: int | None = None,
        *,
        config: PoolConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        **options: Any,
    ) -> None:
        if strategy is not None:
            options["strategy"] = strategy
        if failure_threshold is not None:
            options["failure_threshold"] = failure_threshold
        #: the settings in force
        self.config = cfg = PoolConfig.from_options(config, options)
        node_list: tuple[ServiceNode, ...] = nodes_check()("nodes", nodes)
        if not callable(clock):
            raise ConfigError("clock", clock, "must be a callable returning seconds")
        if rng is not None and not isinstance(rng, random.Random):
            raise ConfigError("rng", rng, "must be a random.Random")
        #: the strategy in force (``config.strategy``; read on every failover order)
        self.strategy: FailoverStrategy = cfg.strategy
        self._clock = clock
        self._rng = rng or random.Random()
        self._nodes = node_list
        self._max_ejectable = max(1, int(len(node_list) * self.config.max_ejection_percent / 100))
        self._lock = threading.RLock()
        self._states = {n.id: NodeState(n) for n in node_list}
        #: nodes out on a timer (ejected or held off): what the ejection cap counts
        self._timed = 0
        # Decaying-average latency per node id (what is reported). Written under the
        # lock, read without it (a dict lookup is atomic).
        self._latency: dict[str, float] = {}
        #: each node's load in this process (what the load-aware strategies score)
        self.loads: dict[str, NodeLoad] = {
            n.id: NodeLoad(cfg.latency_decay, cfg.failure_penalty) for n in node_list
        }
        self._next_comparison = self._clock() + cfg.outlier_interval
        self._comparing = threading.Lock()
        self._rebuilds = 0
        self._view = self._build_view()
        _fork.register(self)
        _inbound.wanted = True  # failover lines may be written now: name the requests they serve

    # ----------------------------------------------------------------- reading

    @property
    def clock(self) -> Callable[[], float]:
        """The monotonic clock the pool's timers run on (what its users time by too)."""
        return self._clock

    @property
    def nodes(self) -> tuple[ServiceNode, ...]:
        """All nodes, in the order given."""
        return self._nodes

    def get_available_node(self) -> ServiceNode | None:
        """The node the strategy picks among healthy ones; ``None`` if there is none.

        With ``panic=True`` and no healthy node, picks among all nodes instead.
        """
        pick = self._current_view().pick
        return pick() if pick is not None else None

    def failover_order(self) -> tuple[ServiceNode, ...]:
        """Nodes one call should try, each once: the picked node first, then the rest
        of the candidates in the strategy's order.

        When no node is healthy (panic routing, always for a one-node pool): every node,
        best candidate first (the shortest remaining ejection or hold-off, then the least
        recently failed). Empty only with ``panic=False`` and several nodes all down.
        """
        view = self._current_view()
        if view.pick is None or view.order is None:
            return ()
        if view.panic:
            return self._best_first()
        return view.order(view.pick())

    def call_order(self, *, pass_over: float | None = None) -> CallOrder | None:
        """:meth:`failover_order` for one call, the rest computed only if asked for;
        ``None`` when nothing is available. What the failover loop uses.

        ``pass_over`` (seconds; the adapter's hedge delay): when the picked node looks
        stalled to a call hedged after that long (:meth:`NodeLoad.stalling`), the
        strategy picks again, so that a call that would be hedged away from it is not
        sent there first; failing that, the first node of the order that does not look
        stalled goes first and the picked one last. When every node's requests wait that
        long (a busy pool), one that lost a race (:meth:`NodeLoad.suspected`) still goes
        behind one that did not."""
        view = self._current_view()
        if view.pick is None:
            return None
        if view.panic:
            best = self._best_first()
            return CallOrder(best[0], None, best[1:])
        order = CallOrder(view.pick(), view.order)
        if pass_over is None:
            return order
        now = self._clock()
        loads, first = self.loads, order.first
        if not loads[first.id].stalling(now, pass_over):
            return order
        # the strategy picks again (a load-aware one draws two more: the next best of
        # the whole order would be every caller's, a herd)
        for _ in range(len(view.healthy) - 1):
            again = view.pick()
            if again is not first and not loads[again.id].stalling(now, pass_over):
                return CallOrder(again, view.order)
        rest = order.rest()
        better = next((n for n in rest if not loads[n.id].stalling(now, pass_over)), None)
        if better is None and loads[first.id].suspected(now):
            better = next((n for n in rest if not loads[n.id].suspected(now)), None)
        if better is None:
            return order  # nothing better to go to
        return CallOrder(better, None, (*(n for n in rest if n is not better), first))

    def healthy_nodes(self) -> tuple[ServiceNode, ...]:
        """The nodes currently offered by health (not counting panic mode)."""
        return self._current_view().healthy

    def is_healthy(self, node_id: str) -> bool:
        """Whether ``node_id`` is currently offered (on probation counts)."""
        state = self._state(node_id)
        self._current_view()
        return state.offered

    def phase(self, node_id: str) -> Phase:
        """Where ``node_id`` stands (:class:`~resilience_mw.Phase`)."""
        state = self._state(node_id)
        self._current_view()
        return state.phase

    def latency(self, node_id: str) -> float | None:
        """Decaying-average latency of ``node_id`` in seconds, ``None`` if never measured."""
        self._state(node_id)
        return self._latency.get(node_id)

    def health(self, node_id: str) -> NodeHealth:
        """A :class:`NodeHealth` snapshot of one node."""
        self._current_view()
        with self._lock:
            st = self._state(node_id)
            return NodeHealth(
                node_id=node_id,
                is_healthy=st.offered,
                last_check=st.last_check if st.last_check is not None else 0.0,
                consecutive_failures=st.consecutive_failures,
                latency=self._latency.get(node_id, 0.0),
            )

    def snapshot(self) -> list[dict[str, Any]]:
        """Every node's state as plain data (JSON-ready; endpoints redacted).

        ``state`` is the node's :class:`~resilience_mw.failover.node_state.Phase` (``healthy``,
        ``suspect``, ``probation``, ``ejected``, ``held-off``, ``down``);
        ``down_reason`` the first cause of its outage while it is out; ``verdict``
        whether the fleet's health checker (another worker's) holds it down.
        """
        self._current_view()
        now = self._clock()
        with self._lock:
            return [
                {
                    "id": st.node.id,
                    "endpoint": st.node.safe_endpoint,
                    "priority": st.node.priority,
                    "weight": st.node.weight,
                    "healthy": st.offered,
                    "state": st.phase.value,
                    "down_reason": None if st.reason is None else st.reason.value,
                    "consecutive_failures": st.consecutive_failures,
                    "latency": self._latency.get(st.node.id),
                    "last_check_age": (None if st.last_check is None else max(0.0, now - st.last_check)),
                    "ejections": st.ejections,
                    "ejected_for": (None if st.until is None else max(0.0, st.until - now)),
                    "verdict": st.verdict,
                }
                for st in self._states.values()
            ]

    # ---------------------------------------------------------------- writing

    def send(self, node: ServiceNode) -> Sent:
        """A request leaves for ``node`` now: it counts as in flight until :meth:`done`,
        and its outcome (``sent=`` of the marks) is judged against the node's state now."""
        now = self._clock()
        self.loads[node.id].begin(now)
        return Sent(node, now, self._state(node.id).epoch)

    def done(self, sent: Sent) -> None:
        """The request of ``sent`` is over (answered, failed or abandoned); once only."""
        if sent.open:
            sent.open = False
            self.loads[sent.node.id].end(sent.started)

    def waiting_past(self, seconds: float) -> tuple[int, int]:
        """``(late, offered)``: of the nodes offered now, how many have requests in
        flight that have waited longer than ``seconds`` on average (what hedging asks
        before adding load: :meth:`~resilience_mw.failover.hedge.HedgePolicy.widespread`)."""
        now = self._clock()
        offered = self._current_view().healthy
        return sum(self.loads[n.id].waited(now) > seconds for n in offered), len(offered)

    def lost_race(self, node_id: str, waited: float) -> None:
        """A request to ``node_id`` was cut after ``waited`` seconds because its hedge
        answered first (:meth:`NodeLoad.lost_race`): not a failure, a sign of a stall."""
        self.loads[node_id].lost_race(self._clock(), waited)

    def mark_failure(self, node_id: str, *, sent: Sent | None = None) -> None:
        """Record a failed call to ``node_id`` (passive health). With ``sent``, a call
        that left before the node's latest outage changes nothing about it."""
        self._state(node_id)  # an unknown id is an UnknownNodeError, not a KeyError
        now = self._clock()
        self.loads[node_id].record(now, None if sent is None else now - sent.started, False)
        if not self._current(node_id, sent):
            self._compare_if_due(now)
            return
        rules = self.config
        capped = False

        def fail(st: NodeState, now: float) -> Transition | None:
            nonlocal capped
            room = self._timed < self._max_ejectable
            capped = not room and st.offered and st.consecutive_failures + 1 >= rules.failure_threshold
            return st.on_failure(now, rules, room)

        self._apply(node_id, fail)
        if capped:
            log.debug("node %s failing but not ejected: %d of %d nodes already out", node_id, self._timed, len(self._nodes))
        self._compare_if_due(now)

    def mark_success(self, node_id: str, latency: float, *, sent: Sent | None = None) -> None:
        """Record a successful call to ``node_id`` that took ``latency`` seconds. With
        ``sent``, a call that left before the node's latest outage does not end it."""
        st = self._state(node_id)
        now = self._clock()
        self.loads[node_id].record(now, latency, True)
        self._add_latency(node_id, latency)
        if st.phase is Phase.HEALTHY:
            # Nothing changes state: no lock. A sample lost to a concurrent update only
            # nudges a decaying average.
            st.last_check = st.last_success = now
        elif self._current(node_id, sent):
            self._apply(node_id, lambda st, now: st.on_success(now))
        self._compare_if_due(now)

    def note_latency(self, node_id: str, seconds: float) -> None:
        """``node_id`` took at least ``seconds`` on a request that was given up on (a
        hedged call answered elsewhere first): its load-aware cost hears of it; its health
        and its outcome counts do not."""
        self._state(node_id)
        self.loads[node_id].observe(self._clock(), seconds)

    def hold_off(self, node_id: str, seconds: float, *, sent: Sent | None = None) -> None:
        """Take ``node_id`` out for ``seconds`` because it asked to be left alone
        (``Retry-After`` on a 503 or 429), within the ejection cap and capped at
        ``max_ejection_time``. It comes back like an expired ejection."""
        self._state(node_id)
        now = self._clock()
        self.loads[node_id].record(now, None if sent is None else now - sent.started, False)
        if self._current(node_id, sent):
            seconds = min(max(0.0, seconds), self.config.max_ejection_time)
            self._apply(node_id, lambda st, now: st.on_hold(now, seconds, self._timed < self._max_ejectable))
        self._compare_if_due(now)

    # ------------------------------------------------------ outlier detection

    #: whether outcomes trigger the comparison with peers every ``outlier_interval``
    #: (the state sync turns it off and compares the fleet's counts itself)
    compare_on_traffic = True

    def take_tallies(self) -> dict[str, Tally]:
        """Each node's outcomes in this process since the last call (the count restarts)."""
        return {nid: load.take_tally() for nid, load in self.loads.items()}

    def eject_outliers(self, tallies: Mapping[str, Tally]) -> list[str]:
        """Compare the nodes by ``tallies`` (:func:`~resilience_mw.failover.outliers.find_outliers`)
        and eject the outliers, worst first, within ``max_ejection_percent``; the ids ejected."""
        found = find_outliers(tallies, self.config)
        if not found:
            return []
        ejected: list[str] = []
        capped: list[str] = []
        with self._lock:
            now = self._clock()
            transitions = self._readmit(now) if self._due(now) else []
            changed = False
            for node_id, reason, _severity in found:
                st = self._states.get(node_id)
                if st is None or not st.offered:
                    continue
                if self._timed >= self._max_ejectable:
                    capped.append(f"{node_id} ({reason})")
                    continue
                transition = st.eject(now, self.config, reason)
                if transition is not None:
                    self._timed += 1
                    changed = True
                    ejected.append(node_id)
                    transitions.append(transition)
            if changed:
                self._rebuild()
            out = self._timed
        if capped:
            log.info("outliers not ejected: %s: %d of %d nodes already out (max_ejection_percent)",
                     ", ".join(capped), out, len(self._nodes))
        self._report(transitions)
        return ejected

    def _compare_if_due(self, now: float) -> None:
        if now < self._next_comparison or not self.compare_on_traffic:
            return
        if not self._comparing.acquire(blocking=False):
            return  # another thread is taking this interval's counts
        try:
            if now < self._next_comparison:
                return
            self._next_comparison = now + self.config.outlier_interval
            tallies = self.take_tallies()
        finally:
            self._comparing.release()
        self.eject_outliers(tallies)  # (no lock held: it reports transitions)

    def _current(self, node_id: str, sent: Sent | None) -> bool:
        """Whether an outcome of ``sent`` speaks for the node's current state (no outage
        began after the request left)."""
        return sent is None or sent.epoch == self._state(node_id).epoch

    def record_check(
        self,
        node_id: str,
        passed: bool,
        latency: float | None = None,
        *,
        unhealthy_threshold: int = 3,
        healthy_threshold: int = 2,
    ) -> None:
        """Record one active health check, with Envoy-style hysteresis.

        ``unhealthy_threshold`` consecutive failed checks take an offered node out;
        ``healthy_threshold`` consecutive passes bring back a node that is down (for
        failed checks, a manual update, or a passive ejection that checks confirmed). A
        node ejected by passive failures and not yet confirmed down is restored by a
        single pass; a node that asked for time (``Retry-After``) is not restored by
        checks at all.
        """
        if passed and latency is not None:
            self._add_latency(node_id, latency)
        self._apply(
            node_id,
            lambda st, now: st.on_check(
                now, passed, unhealthy_threshold=unhealthy_threshold, healthy_threshold=healthy_threshold
            ),
        )

    def apply_hint(self, node_id: str, down: bool, seconds: float = 0.0, *, fresh: float = 1.0) -> None:
        """Other workers report ``node_id`` down for ``seconds`` (``down=True``), or
        withdrew their reports. Within the ejection cap; never against a success of
        this worker in the last ``fresh`` seconds. (What the state sync calls.)"""
        seconds = min(max(0.0, seconds), self.config.max_ejection_time)
        self._apply(node_id, lambda st, now: st.on_hint(now, down, seconds, self._timed < self._max_ejectable, fresh))

    def apply_verdict(self, node_id: str, down: bool, *, fresh: float = 1.0) -> None:
        """The fleet's health checker (another worker, holding the lease) found
        ``node_id`` down (``down=True``: out until it says up, not capped by
        ``max_ejection_percent``, so even the last node), or up again. Never against a
        success of this worker in the last ``fresh`` seconds. (What the state sync calls.)"""
        self._apply(node_id, lambda st, now: st.on_verdict(now, down, fresh))

    def update_health(self, node_id: str, health: NodeHealth) -> None:
        """Replace ``node_id``'s health with ``health`` (the ported design's manual update).

        A node set unhealthy this way stays out until a success, ``healthy_threshold``
        passing checks or another update brings it back.
        """

        def update(st: NodeState, now: float) -> Transition | None:
            st.last_check = health.last_check
            st.consecutive_failures = health.consecutive_failures
            if health.latency > 0:
                self._latency[node_id] = health.latency
            return st.on_manual(now, health.is_healthy)

        self._apply(node_id, update)

    # -------------------------------------------------------------- internals

    def _state(self, node_id: str) -> NodeState:
        try:
            return self._states[node_id]
        except KeyError:
            raise UnknownNodeError(node_id, tuple(self._states)) from None

    def _apply(self, node_id: str, event: _Event) -> None:
        """Step one node's state under the lock; report what changed after releasing it."""
        st = self._state(node_id)
        with self._lock:
            now = self._clock()
            transitions = self._readmit(now) if self._due(now) else []
            offered, until, timed = st.offered, st.until, st.timed_out
            transition = event(st, now)
            self._timed += st.timed_out - timed
            if st.offered != offered or st.until != until:
                self._rebuild()
        if transition is not None:
            transitions.append(transition)
        self._report(transitions)

    def _add_latency(self, node_id: str, sample: float) -> None:
        old = self._latency.get(node_id)
        self._latency[node_id] = sample if old is None else old + self.config.latency_alpha * (sample - old)

    def _best_first(self) -> tuple[ServiceNode, ...]:
        inf = float("inf")
        with self._lock:
            keys = {
                st.node.id: (
                    inf if st.until is None else st.until,
                    -inf if st.last_failure is None else st.last_failure,
                )
                for st in self._states.values()
            }
        return tuple(sorted(self._nodes, key=lambda n: keys[n.id]))

    def _due(self, now: float) -> bool:
        recheck_at = self._view.recheck_at
        return recheck_at is not None and now >= recheck_at

    def _current_view(self) -> _View:
        """The view, after offering again every node whose timer has run out."""
        view = self._view
        if view.recheck_at is not None and self._clock() >= view.recheck_at:
            with self._lock:
                transitions = self._readmit(self._clock())
                view = self._view
            self._report(transitions)
        return view

    def _readmit(self, now: float) -> list[Transition]:
        """Offer again, on probation, the nodes whose timer ran out, and end the slow
        starts that are over (lock held; called when the view's recheck time came)."""
        transitions = []
        for st in self._states.values():
            timed = st.timed_out
            transition = st.expire(now, self.config)
            if transition is not None:
                self._timed -= timed
                transitions.append(transition)
        self._rebuild()
        return transitions

    def _build_view(self) -> _View:
        now = self._clock()
        healthy = tuple(n for n in self._nodes if self._states[n.id].offered)
        # Panic routing: with nothing healthy, every node is tried rather than none; a
        # one-node pool always does, so its only node is never shut out.
        panic = not healthy and (self.config.panic or len(self._nodes) == 1)
        candidates = self._nodes if panic else healthy
        rechecks = [s.until for s in self._states.values() if s.until is not None]
        self._rebuilds += 1
        pick = build_picker(
            self.strategy,
            candidates,
            loads=self.loads,
            clock=self._clock,
            rng=self._rng,
            power_of_two=self.config.power_of_two,
            offset=self._rebuilds,
        )
        order = (
            build_orderer(self.strategy, candidates, loads=self.loads, clock=self._clock, rng=self._rng)
            if candidates
            else None
        )
        window = self.config.slow_start_window
        if window > 0 and not panic and len(candidates) > 1 and pick is not None and order is not None:
            ramps = {
                n.id: returned
                for n in candidates
                if (returned := self._states[n.id].returned_at) is not None and now - returned < window
            }
            if ramps:
                rechecks.extend(returned + window for returned in ramps.values())
                pick = _slow_start(pick, order, ramps, window=window, floor=self.config.slow_start_min_weight,
                                   clock=self._clock, draw=self._rng.random)
        return _View(
            healthy=healthy,
            candidates=candidates,
            pick=pick,
            order=order,
            recheck_at=min(rechecks) if rechecks else None,
            panic=panic,
        )

    def _rebuild(self) -> None:
        self._view = self._build_view()

    def _report(self, transitions: Sequence[Transition]) -> None:
        for t in transitions:
            if t.healthy:
                log.info("node %s recovered (%s)", t.node.id, t.reason)
                signals.send(signals.node_recovered, self, node=t.node, reason=t.reason)
                continue
            log.warning(
                "node %s marked unhealthy (%s, %d consecutive failures)%s",
                t.node.id,
                t.reason,
                t.consecutive_failures,
                "" if t.ejected_for is None else f"; offered again in {t.ejected_for:.0f}s",
            )
            signals.send(
                signals.node_marked_unhealthy,
                self,
                node=t.node,
                reason=t.reason,
                consecutive_failures=t.consecutive_failures,
                ejected_for=t.ejected_for,
            )

    def _after_fork_in_child(self) -> None:
        # Another thread may have held the lock when the process forked.
        self._lock = threading.RLock()
        self._comparing = threading.Lock()
        for load in self.loads.values():
            load.after_fork_in_child()
        self._rebuild()  # fresh picker (some pickers own a lock too)

    def __repr__(self) -> str:
        view = self._view
        return (
            f"{type(self).__name__}(strategy={self.strategy.name}, nodes={len(self._nodes)}, "
            f"healthy={[n.id for n in view.healthy]}{', panic' if view.panic else ''})"
        )


def _slow_start(
    pick: Picker,
    order: Orderer,
    ramps: Mapping[str, float],
    *,
    window: float,
    floor: float,
    clock: Callable[[], float],
    draw: Callable[[], float],
) -> Picker:
    """``pick``, with each node of ``ramps`` (id -> when it came back) kept to a share of
    its picks growing from ``floor`` to all of them over ``window`` seconds (Envoy's slow
    start, aggression 1): a pick it loses goes to the next node in the strategy's order."""

    def pick_ramped() -> ServiceNode:
        node = pick()
        since = ramps.get(node.id)
        if since is not None and draw() >= max(floor, (clock() - since) / window):
            return order(node)[1]
        return node

    return pick_ramped
