"""StateSync: this worker's side of the shared state, exchanged in the background.

Every ``sync_interval`` seconds a daemon thread (never a request) talks to the store
(:mod:`resilience_mw.fleet.store`):

1. **Overrides.** The latest operator override is applied once per change: a level
   forced in any worker (admin endpoint or CLI) is forced in every worker within one
   sync, and cleared likewise; one that lapses (its TTL) is cleared.
2. **Node health.** Nodes this worker took out on its own evidence (failures of its
   traffic, its failed checks, a ``Retry-After``) are reported with an expiry. A node
   that ``eject_quorum`` distinct workers report down is taken out here too, as a hint
   (reason ``shared``), unless this worker's own traffic to it succeeded in the last
   interval; it comes back when the reports are withdrawn or lapse.
3. **Error rate** (``error_rate_scope="fleet"``): each worker publishes its error
   window; the level is judged on the sum, so every worker sees the same rate.
4. **Retry budget** (``retry_budget_scope="fleet"``): each worker publishes its
   adapter's requests and extra attempts; the budget holds for their sum.
5. **Alerts**: raised by the first worker to claim them (:meth:`StateSync.once`).
6. **Health checks under a lease.** One worker per store (host or fleet) holds the
   ``health`` lease and runs the checks; its results reach the others as reports they
   apply at once. If it dies, another takes the lease within two intervals.

When the store fails (down, slow, refused, full), the worker goes on with local state
(and runs its own health checks), logs once per outage, retries with capped back-off,
and resynchronises when the store answers again. :meth:`StateSync.status` reports it
(the readiness page shows it as ``warn``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import _fork, signals
from .._redact import describe_error
from .._worker import BackgroundWorker
from ..config import StateConfig
from ..degradation.manager import AutoDegradationManager
from ..failover.budget import RetryBudget
from ..failover.health import HealthChecker
from ..failover.pool import NodePool
from ..model import parse_level
from .store import NodeReport, Override, StateStore, StoreError, reporter_id

__all__ = ["StateSync"]

log = logging.getLogger(__name__)

#: reasons a worker reports: its own evidence (a hint from others is not passed on)
_OWN_EVIDENCE = frozenset({"passive", "active", "retry-after"})
#: longest wait between tries while the store is failing (so a store that is back is
#: caught up with within about two seconds)
MAX_BACKOFF = 2.0


class StateSync:
    """Exchanges one worker's state with ``store``; see the module docstring.

    :param store: the shared store.
    :param degradation: the worker's degradation manager (overrides are applied to it).
    :param pool: the worker's node pool, if it has nodes.
    :param checker: the health checker to run while this worker holds the lease.
    :param config: :class:`~resilience_mw.config.StateConfig`.
    :param clock: monotonic clock for back-off and ages; tests pass a fake.
    :param name: this worker's name in the store (default ``host:pid``).
    """

    def __init__(
        self,
        store: StateStore,
        degradation: AutoDegradationManager,
        pool: NodePool | None = None,
        checker: HealthChecker | None = None,
        *,
        config: StateConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
        budget: RetryBudget | None = None,
    ) -> None:
        self.store = store
        #: the adapter's retry budget, shared with the fleet when ``retry_budget_scope``
        #: says so
        self.budget = budget
        self._name = name
        self.config = config or StateConfig()
        self.degradation = degradation
        self.pool = pool
        self.checker = checker
        self._clock = clock
        self._lock = threading.Lock()
        _fork.register(self)
        self._applied_version: int | None = None
        self._applied_level: str | None = None
        self._published: set[str] = set()
        self._failures = 0
        self._retry_at: float | None = None
        self._outage_since: float | None = None
        self._last_error = ""
        self._last_sync: float | None = None
        self._alerts: list[tuple[str, float, Callable[[], None]]] = []
        #: whether this worker holds the health-check lease
        self.leader = False
        self._worker = BackgroundWorker("resilience_mw-state", self._tick, self.config.sync_interval)

    @property
    def me(self) -> str:
        """This worker's name in the store (default ``host:pid``: a forked child has its own)."""
        return self._name or reporter_id()

    @property
    def scope(self) -> str:
        """What a change through the store reaches: ``host`` or ``fleet``."""
        return self.store.scope

    @property
    def quorum(self) -> int:
        """Distinct reporters that take a node out here."""
        q = self.config.eject_quorum
        return q if q is not None else (1 if self.store.scope == "host" else 2)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start syncing in a daemon thread (the first exchange at once); idempotent."""
        self._worker.start()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop syncing (and the health checker if this worker ran it); give the lease up."""
        stopped = self._worker.stop(timeout)
        if self.leader and self.checker is not None:
            self.checker.stop(timeout)
            with contextlib.suppress(StoreError):
                self.store.release("health", self.me)
            self.leader = False
        return stopped

    @property
    def running(self) -> bool:
        return self._worker.running

    # ----------------------------------------------------------- operators

    def force(self, level: Any, ttl: float | None = None) -> Override:
        """Force ``level`` in every worker of the scope (this one at once); ``ttl``
        seconds, or until :meth:`clear`. Raises :class:`StoreError` if the store does not
        answer (then nothing changed)."""
        name = parse_level(level).name
        override = self.store.set_override(name, ttl, self.me)
        self._apply_override(override)
        return override

    def clear(self) -> Override:
        """Clear the override in every worker of the scope (this one at once)."""
        override = self.store.set_override(None, None, self.me)
        self._apply_override(override)
        return override

    def once(self, key: str, seconds: float, fire: Callable[[], None]) -> None:
        """Call ``fire`` at the next sync unless another worker of the scope claimed
        ``key`` in the last ``seconds`` (what :class:`~resilience_mw.AlertRules` uses to
        alert once per fleet). Never waits on the store: the claim is made by the sync
        thread; while the store does not answer, ``fire`` is called anyway."""
        with self._lock:
            if len(self._alerts) < 100:  # bounded, should the sync not run
                self._alerts.append((key, seconds, fire))

    def status(self) -> dict[str, Any]:
        """Plain data for status pages: scope, health of the store, lease, override."""
        now = self._clock()
        with self._lock:
            return {
                "scope": self.scope,
                "store": repr(self.store),
                "status": "warn" if self._outage_since is not None else "pass",
                "outage_seconds": None if self._outage_since is None else round(now - self._outage_since, 3),
                "last_error": self._last_error or None,
                "last_sync_age": None if self._last_sync is None else round(now - self._last_sync, 3),
                "sync_interval": self.config.sync_interval,
                "health_check_leader": self.leader,
                "override": self._applied_level,
                "pid": os.getpid(),
            }

    # -------------------------------------------------------------- syncing

    def _tick(self) -> None:
        now = self._clock()
        if self._retry_at is not None and now < self._retry_at:
            return
        try:
            self.exchange()
        except StoreError as exc:
            error = describe_error(exc.__cause__ or exc)
            self._failed(error)
            last = self._last_sync
            signals.send(signals.state_synced, self, ok=False, lag=None if last is None else now - last, error=error)
            return
        self._answered()
        signals.send(signals.state_synced, self, ok=True, lag=0.0, error="")

    def exchange(self) -> None:
        """One exchange with the store (what the thread runs every interval).

        :raises StoreError: the store did not answer.
        """
        self._apply_override(self.store.override())
        if self.pool is not None:
            self._sync_nodes(self.pool)
        ttl = 3 * self.config.sync_interval  # a worker that stops publishing drops out
        if self.config.error_rate_scope == "fleet":
            requests, failures = self.degradation.window.counts()
            self.store.put_counts(self.me, requests, failures, ttl)
            self.degradation.share_counts(*self.store.counts(), valid_for=ttl)
        if self.config.retry_budget_scope == "fleet" and self.budget is not None:
            mine = self.budget.totals()
            self.store.put_counts(self.me, *mine, ttl, tally="retries")
            self.budget.share(*self.store.counts(tally="retries"), valid_for=ttl, mine=mine)
        self._raise_alerts()

    def _raise_alerts(self, claim: bool = True) -> None:
        with self._lock:
            pending, self._alerts = self._alerts, []
        for i, (key, seconds, fire) in enumerate(pending):
            try:
                won = not claim or self.store.claim(f"alert:{key}", seconds)
            except StoreError:
                with self._lock:
                    self._alerts[:0] = pending[i:]  # raised locally once the outage is noticed
                raise
            if won:
                fire()

    def _apply_override(self, override: Override | None) -> None:
        with self._lock:
            if override is None or override.level is None:
                if self._applied_level is None:
                    self._applied_version = None if override is None else override.version
                    return
                level, self._applied_level = None, None
            elif override.version == self._applied_version:
                return
            else:
                level = self._applied_level = override.level
            self._applied_version = None if override is None else override.version
        # outside the lock: forcing sends level_changed to user receivers
        if level is None:
            self.degradation.clear_override()
        else:
            self.degradation.force_level(level)

    def _sync_nodes(self, pool: NodePool) -> None:
        store, me, interval = self.store, self.me, self.config.sync_interval
        mine: dict[str, tuple[str, float]] = {}
        shared: set[str] = set()
        for row in pool.snapshot():
            if row["healthy"]:
                continue
            if row["down_reason"] == "shared":
                shared.add(row["id"])
            elif row["down_reason"] in _OWN_EVIDENCE:
                # timed out: as long as the timer; down until checks pass: refreshed each sync
                ttl = row["ejected_for"] if row["ejected_for"] else 3 * interval
                mine[row["id"]] = (row["down_reason"], max(ttl, interval))
        for node_id, (reason, ttl) in mine.items():
            store.report(node_id, me, reason, ttl)
        for node_id in self._published - mine.keys():
            store.report(node_id, me, None, 0)
        self._published = set(mine)
        holder = self._sync_lease(pool)
        now = store.now()
        by_node: dict[str, list[NodeReport]] = {}
        for report in store.reports():
            if report.reporter != me:
                by_node.setdefault(report.node_id, []).append(report)
        for node_id, reports in by_node.items():
            voters = len({r.reporter for r in reports}) + (node_id in mine)
            from_checker = any(r.reporter == holder and r.reason == "active" for r in reports)
            if voters >= self.quorum or from_checker:
                seconds = max(r.expires_at for r in reports) - now
                pool.apply_hint(node_id, True, seconds, fresh=interval)
        for node_id in shared - by_node.keys():
            pool.apply_hint(node_id, False)

    def _sync_lease(self, pool: NodePool) -> str | None:
        checker = self.checker
        if checker is None:
            return None
        ttl = 2 * max(self.config.sync_interval, checker.config.check_interval)
        holder = self.store.lease("health", self.me, ttl)
        self.leader = holder == self.me
        if self.leader and not checker.running:
            log.info("this worker (%s) runs the health checks for the %s", self.me, self.scope)
            checker.start(pool)
        elif not self.leader and checker.running:
            checker.stop(0)
        return holder

    def _failed(self, error: str) -> None:
        now = self._clock()
        self._failures += 1
        backoff = min(MAX_BACKOFF, self.config.sync_interval * 2 ** min(self._failures - 1, 6))
        first = False
        with self._lock:
            self._retry_at = now + backoff
            self._last_error = error
            if self._outage_since is None:
                self._outage_since, first = now, True
        if first:
            log.warning(
                "state store %r did not answer (%s): going on with local state, retrying with back-off",
                self.store,
                error,
            )
            if self.checker is not None and self.pool is not None and not self.checker.running:
                self.checker.start(self.pool)  # no lease to follow: check on our own
        self._raise_alerts(claim=False)  # no one to agree with: alert from here

    def _answered(self) -> None:
        now = self._clock()
        with self._lock:
            since, self._outage_since = self._outage_since, None
            self._failures, self._retry_at, self._last_error = 0, None, ""
            self._last_sync = now
        if since is not None:
            log.info("state store %r answers again after %.1f s; resynchronised", self.store, now - since)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"StateSync({self.store!r}, scope={self.scope}, running={self.running}, leader={self.leader})"
