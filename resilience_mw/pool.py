"""NodePool: the nodes, their health and the picker, owned under one RLock.

Health changes (passive marks from real traffic, active health checks, manual
updates) take the lock, update the node's record, and when the healthy set changes
rebuild an immutable view holding the picker of the configured strategy. Choosing a
node reads that view with no lock and no scan. Transitions are reported through
:mod:`resilience_mw.signals` after the lock is released.

Passive ejection follows Envoy's outlier detection: ``failure_threshold``
consecutive failures eject a node for ``base_ejection_time x ejections`` (capped at
``max_ejection_time``); when that expires the node is offered again on probation
(one more failure ejects it again, for longer); a success or a passing health check
restores it at once. At most ``max_ejection_percent`` of the nodes (and always at
least one) can be ejected passively at the same time.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from blinker import Signal

from . import _fork, signals
from .config import PoolConfig, nodes_check
from .exceptions import ConfigError, UnknownNodeError
from .model import FailoverStrategy, NodeHealth, ServiceNode
from .strategies import Picker, build_picker, failover_order, priority_order

__all__ = ["NodePool"]

log = logging.getLogger(__name__)

_Transition = tuple[Signal, dict[str, Any]]

#: why a node is down
PASSIVE, ACTIVE, MANUAL = "passive", "active", "manual"
#: the node asked for time (Retry-After): only its timer or a real success ends it
HOLD = "retry-after"


@dataclass(slots=True)
class _NodeState:
    """Mutable record of one node; only touched with the pool's lock held."""

    node: ServiceNode
    healthy: bool = True
    consecutive_failures: int = 0
    check_failures: int = 0
    check_passes: int = 0
    last_check: float | None = None
    last_failure: float | None = None
    down_reason: str | None = None
    ejections: int = 0
    ejected_until: float | None = None
    healthy_since: float | None = None


@dataclass(frozen=True, slots=True)
class _View:
    """What selection reads: rebuilt whole whenever the healthy set changes."""

    healthy: tuple[ServiceNode, ...]
    candidates: tuple[ServiceNode, ...]
    pick: Picker | None
    recheck_at: float | None
    panic: bool
    #: candidates by priority (what Priority tries, in order), sorted once per rebuild
    by_priority: tuple[ServiceNode, ...]


class CallOrder:
    """The nodes one call may try, each once: the picked node at once, the rest only when
    a failover needs them (computing them costs a scan or a sort; most calls never do)."""

    __slots__ = ("_pool", "_rest", "_view", "first")

    def __init__(self, pool: NodePool, view: _View, first: ServiceNode, rest: tuple[ServiceNode, ...] | None) -> None:
        self._pool = pool
        self._view = view
        #: the node to try first
        self.first = first
        self._rest = rest

    def rest(self) -> tuple[ServiceNode, ...]:
        """The nodes to try after :attr:`first`, in the strategy's order."""
        if self._rest is None:
            view, first = self._view, self.first
            pool = self._pool
            self._rest = failover_order(
                pool.strategy,
                first,
                view.candidates,
                latency=pool._latency,
                rng=pool._rng,
                by_priority=view.by_priority or None,
            )[1:]
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
        self._states = {n.id: _NodeState(n) for n in node_list}
        # Decaying-average latency per node id. Written under the lock, read without it
        # (a dict lookup is atomic), so FastestResponse needs no rebuild per sample.
        self._latency: dict[str, float] = {}
        self._rebuilds = 0
        self._view = self._build_view()
        _fork.register(self)

    # ----------------------------------------------------------------- reading

    @property
    def nodes(self) -> tuple[ServiceNode, ...]:
        """All nodes, in the order given."""
        return self._nodes

    def get_available_node(self) -> ServiceNode | None:
        """The node the strategy picks among healthy ones; ``None`` if there is none.

        With ``panic=True`` and no healthy node, picks among all nodes instead.
        """
        # _current_view(), inline: this is the per-request pick, and a call costs a third of it
        view = self._view
        if view.recheck_at is not None and self._clock() >= view.recheck_at:
            view = self._readmit_expired()
        pick = view.pick
        return pick() if pick is not None else None

    def failover_order(self) -> tuple[ServiceNode, ...]:
        """Nodes one call should try, each once: the picked node first, then the rest
        of the candidates in the strategy's order.

        When no node is healthy (panic routing, always for a one-node pool): every node,
        best candidate first (the shortest remaining ejection or hold-off, then the least
        recently failed). Empty only with ``panic=False`` and several nodes all down.
        """
        order = self.call_order()
        return () if order is None else (order.first, *order.rest())

    def call_order(self) -> CallOrder | None:
        """:meth:`failover_order` for one call, the rest computed only if asked for;
        ``None`` when nothing is available. What the failover loop uses."""
        view = self._current_view()
        if view.pick is None:
            return None
        if view.panic:
            best = self._best_first()
            return CallOrder(self, view, best[0], best[1:])
        return CallOrder(self, view, view.pick(), None)

    def healthy_nodes(self) -> tuple[ServiceNode, ...]:
        """The nodes currently offered by health (not counting panic mode)."""
        return self._view.healthy

    def is_healthy(self, node_id: str) -> bool:
        """Whether ``node_id`` is currently offered."""
        return self._state(node_id).healthy

    def latency(self, node_id: str) -> float | None:
        """Decaying-average latency of ``node_id`` in seconds, ``None`` if never measured."""
        self._state(node_id)
        return self._latency.get(node_id)

    def health(self, node_id: str) -> NodeHealth:
        """A :class:`NodeHealth` snapshot of one node."""
        with self._lock:
            st = self._state(node_id)
            return NodeHealth(
                node_id=node_id,
                is_healthy=st.healthy,
                last_check=st.last_check if st.last_check is not None else 0.0,
                consecutive_failures=st.consecutive_failures,
                latency=self._latency.get(node_id, 0.0),
            )

    def snapshot(self) -> list[dict[str, Any]]:
        """Every node's state as plain data (JSON-ready; endpoints redacted)."""
        now = self._clock()
        with self._lock:
            return [
                {
                    "id": st.node.id,
                    "endpoint": st.node.safe_endpoint,
                    "priority": st.node.priority,
                    "weight": st.node.weight,
                    "healthy": st.healthy,
                    "down_reason": st.down_reason,
                    "consecutive_failures": st.consecutive_failures,
                    "latency": self._latency.get(st.node.id),
                    "last_check_age": (None if st.last_check is None else max(0.0, now - st.last_check)),
                    "ejections": st.ejections,
                    "ejected_for": (None if st.ejected_until is None else max(0.0, st.ejected_until - now)),
                }
                for st in self._states.values()
            ]

    # ---------------------------------------------------------------- writing

    def mark_failure(self, node_id: str) -> None:
        """Record a failed call to ``node_id`` (passive health)."""
        transitions: list[_Transition] = []
        with self._lock:
            st = self._state(node_id)
            now = self._clock()
            st.consecutive_failures += 1
            st.last_check = st.last_failure = now
            if st.healthy and st.consecutive_failures >= self.config.failure_threshold:
                if self._passively_ejected() < self._max_ejectable:
                    transitions.append(self._eject(st, now))
                else:
                    log.debug(
                        "node %s failing but not ejected: %d of %d nodes already ejected",
                        node_id,
                        self._passively_ejected(),
                        len(self._nodes),
                    )
        self._emit(transitions)

    def mark_success(self, node_id: str, latency: float) -> None:
        """Record a successful call to ``node_id`` that took ``latency`` seconds."""
        st = self._state(node_id)
        if st.healthy and not st.consecutive_failures:
            # Nothing changes state: no lock. A sample lost to a concurrent update only
            # nudges a decaying average.
            st.last_check = self._clock()
            self._add_latency(node_id, latency)
            return
        transitions: list[_Transition] = []
        with self._lock:
            st.consecutive_failures = 0
            st.last_check = self._clock()
            self._add_latency(node_id, latency)
            if not st.healthy:
                transitions.append(self._restore(st, "success"))
        self._emit(transitions)

    def hold_off(self, node_id: str, seconds: float) -> None:
        """Take ``node_id`` out for ``seconds`` because it asked to be left alone
        (``Retry-After`` on a 503 or 429), within the ejection cap and capped at
        ``max_ejection_time``. It comes back like an expired ejection."""
        transitions: list[_Transition] = []
        with self._lock:
            st = self._state(node_id)
            seconds = min(max(0.0, seconds), self.config.max_ejection_time)
            st.last_failure = self._clock()
            if st.healthy and seconds > 0 and self._passively_ejected() < self._max_ejectable:
                transitions.append(self._take_down(st, self._clock(), HOLD, seconds))
        self._emit(transitions)

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

        ``unhealthy_threshold`` consecutive failed checks mark a healthy node down;
        ``healthy_threshold`` consecutive passes bring a node that checks took down
        back. A node ejected by passive failures is restored by a single pass.
        """
        transitions: list[_Transition] = []
        with self._lock:
            st = self._state(node_id)
            now = self._clock()
            st.last_check = now
            if passed:
                st.check_passes += 1
                st.check_failures = 0
                if latency is not None:
                    self._add_latency(node_id, latency)
                if (
                    not st.healthy
                    and st.down_reason != HOLD  # the node asked for time: checks do not end that
                    and (st.down_reason == PASSIVE or st.check_passes >= healthy_threshold)
                ):
                    transitions.append(self._restore(st, "health-check"))
            else:
                st.last_failure = now
                st.check_failures += 1
                st.check_passes = 0
                if st.healthy and st.check_failures >= unhealthy_threshold:
                    transitions.append(self._take_down(st, now, ACTIVE, None))
                elif not st.healthy and st.down_reason == PASSIVE:
                    # The checker confirms the node is down: keep it out until checks pass,
                    # rather than letting the ejection timer offer it to live traffic.
                    st.down_reason = ACTIVE
                    st.ejected_until = None
                    self._rebuild()
        self._emit(transitions)

    def update_health(self, node_id: str, health: NodeHealth) -> None:
        """Replace ``node_id``'s health with ``health`` (the seed's manual update).

        A node set unhealthy this way stays out until a success, a passing check or
        another update brings it back.
        """
        transitions: list[_Transition] = []
        with self._lock:
            st = self._state(node_id)
            st.last_check = health.last_check
            st.consecutive_failures = health.consecutive_failures
            if health.latency > 0:
                self._latency[node_id] = health.latency
            if health.is_healthy and not st.healthy:
                transitions.append(self._restore(st, MANUAL))
            elif not health.is_healthy and st.healthy:
                transitions.append(self._take_down(st, self._clock(), MANUAL, None))
        self._emit(transitions)

    # -------------------------------------------------------------- internals

    def _state(self, node_id: str) -> _NodeState:
        try:
            return self._states[node_id]
        except KeyError:
            raise UnknownNodeError(node_id, tuple(self._states)) from None

    def _add_latency(self, node_id: str, sample: float) -> None:
        old = self._latency.get(node_id)
        self._latency[node_id] = sample if old is None else old + self.config.latency_alpha * (sample - old)

    def _best_first(self) -> tuple[ServiceNode, ...]:
        inf = float("inf")
        with self._lock:
            keys = {
                st.node.id: (
                    inf if st.ejected_until is None else st.ejected_until,
                    -inf if st.last_failure is None else st.last_failure,
                )
                for st in self._states.values()
            }
        return tuple(sorted(self._nodes, key=lambda n: keys[n.id]))

    def _passively_ejected(self) -> int:
        return sum(1 for s in self._states.values() if not s.healthy and s.down_reason in (PASSIVE, HOLD))

    def _eject(self, st: _NodeState, now: float) -> _Transition:
        if st.healthy_since is not None and now - st.healthy_since >= self.config.max_ejection_time:
            st.ejections = 0  # healthy long enough: forget earlier ejections
        st.ejections += 1
        duration = min(self.config.base_ejection_time * st.ejections, self.config.max_ejection_time)
        return self._take_down(st, now, PASSIVE, duration)

    def _take_down(self, st: _NodeState, now: float, reason: str, duration: float | None) -> _Transition:
        st.healthy = False
        st.down_reason = reason
        st.healthy_since = None
        st.check_passes = 0
        st.ejected_until = None if duration is None else now + duration
        self._rebuild()
        log.warning(
            "node %s marked unhealthy (%s, %d consecutive failures)%s",
            st.node.id,
            reason,
            max(st.consecutive_failures, st.check_failures),
            "" if duration is None else f"; offered again in {duration:.0f}s",
        )
        return signals.node_marked_unhealthy, {
            "node": st.node,
            "reason": reason,
            "consecutive_failures": max(st.consecutive_failures, st.check_failures),
            "ejected_for": duration,
        }

    def _restore(self, st: _NodeState, reason: str, *, probation: bool = False) -> _Transition:
        st.healthy = True
        st.down_reason = None
        st.ejected_until = None
        st.check_failures = 0
        st.healthy_since = self._clock()
        # On probation one more failure ejects the node again (for longer).
        st.consecutive_failures = self.config.failure_threshold - 1 if probation else 0
        self._rebuild()
        log.info("node %s recovered (%s)", st.node.id, reason)
        return signals.node_recovered, {"node": st.node, "reason": reason}

    def _current_view(self) -> _View:
        """The view to select from, after offering again nodes whose ejection expired."""
        view = self._view
        if view.recheck_at is not None and self._clock() >= view.recheck_at:
            view = self._readmit_expired()
        return view

    def _readmit_expired(self) -> _View:
        transitions: list[_Transition] = []
        with self._lock:
            now = self._clock()
            for st in self._states.values():
                if st.ejected_until is not None and now >= st.ejected_until:
                    transitions.append(self._restore(st, "ejection-expired", probation=True))
            view = self._view
        self._emit(transitions)
        return view

    def _build_view(self) -> _View:
        healthy = tuple(n for n in self._nodes if self._states[n.id].healthy)
        # Panic routing: with nothing healthy, every node is tried rather than none; a
        # one-node pool always does, so its only node is never shut out.
        panic = not healthy and (self.config.panic or len(self._nodes) == 1)
        candidates = self._nodes if panic else healthy
        expiries = [s.ejected_until for s in self._states.values() if s.ejected_until is not None]
        self._rebuilds += 1
        return _View(
            healthy=healthy,
            candidates=candidates,
            pick=build_picker(
                self.strategy,
                candidates,
                latency=self._latency,
                rng=self._rng,
                power_of_two=self.config.power_of_two,
                offset=self._rebuilds,
            ),
            recheck_at=min(expiries) if expiries else None,
            panic=panic,
            by_priority=priority_order(candidates) if self.strategy is FailoverStrategy.Priority else (),
        )

    def _rebuild(self) -> None:
        self._view = self._build_view()

    def _emit(self, transitions: Sequence[_Transition]) -> None:
        for signal, kwargs in transitions:
            signals.send(signal, self, **kwargs)

    def _after_fork_in_child(self) -> None:
        # Another thread may have held the lock when the process forked.
        self._lock = threading.RLock()
        self._rebuild()  # fresh picker (some pickers own a lock too)

    def __repr__(self) -> str:
        view = self._view
        return (
            f"{type(self).__name__}(strategy={self.strategy.name}, nodes={len(self._nodes)}, "
            f"healthy={[n.id for n in view.healthy]}{', panic' if view.panic else ''})"
        )
