"""StateSync: this worker's side of the shared state, exchanged in the background.

Every ``sync_interval`` seconds a daemon thread (never a request) talks to the store
(:mod:`resilience_mw.fleet.store`), in steps:

0. **Identity.** The worker announces its service (name and node set, a
   :class:`~resilience_mw.fleet.store.ServiceIdentity`) and reads the others announced
   in the namespace. Another service there, or this service with another node set, is a
   *collision*: logged as a warning, shown by :meth:`StateSync.status` (``warn``, and
   ``/readyz`` says why), and nothing is merged while it lasts: no override, report,
   count or lease is read or written, and the worker runs its own health checks, as in
   an outage. (A rolling deploy that changes the nodes is one for as long as old and
   new workers overlap, plus three intervals.)
1. **Overrides.** The latest operator override is applied once per change: a level
   forced in any worker (admin endpoint or CLI) is forced in every worker within one
   sync, and cleared likewise; one that lapses (its TTL) is cleared. A forced level's TTL
   also holds in each worker's manager, so it ends even if the store goes away.
2. **Health-check lease.** One worker per store (host or fleet) holds the ``health``
   lease and runs the checks. If it dies, another takes the lease within two intervals.
3. **Node health.** Nodes this worker took out on its own evidence (failures of its
   traffic, its failed checks, a ``Retry-After``) are reported with an expiry. The
   lease holder's verdicts (its checks found a node down, and later up) apply in every
   worker at its next sync, even to the last node of the pool (the ejection cap does
   not hold them back: they are checks, not guesses from traffic). A node that
   ``eject_quorum`` distinct workers report down is taken out here too, as a timed hint
   (reason ``shared``), unless this worker's own traffic to it succeeded in the last
   interval; it comes back when the reports are withdrawn or lapse. Reports for node ids
   this worker does not have (a deploy that dropped a node) are ignored and counted.
4. **Error rate** (``error_rate_scope="fleet"``): each worker publishes its error
   window; the level is judged on the sum, so every worker sees the same rate.
5. **Retry budget** (``retry_budget_scope="fleet"``): each worker publishes its
   adapter's requests and extra attempts; the budget holds for their sum.
6. **Outcomes** (``outlier_scope="fleet"``, the default): each exchange takes the
   pool's outcomes per node (:meth:`~resilience_mw.failover.pool.NodePool.take_tallies`)
   into a window covering the pool's last ``outlier_interval`` (at least one sync), and
   publishes the window's sums (they lapse after three sync intervals). Every
   ``outlier_interval`` (at its multiples by the sync's clock, so the workers of a host
   compare together) the worker reads the sums over every worker and compares the
   nodes by them (:meth:`~resilience_mw.failover.pool.NodePool.eject_outliers`): a
   worker that sends a node little traffic still ejects it when the fleet's traffic
   shows it failing or slow. Meanwhile the pool does not compare its own counts
   (``compare_on_traffic`` off). When the store does not answer, the worker is isolated
   (a collision), or the sync stops, the pool compares its own counts again, and the
   window is compared at once with this worker's counts alone: no outcome taken from
   the pool goes unjudged. If the fleet's counts do not decode, the worker's own are
   compared instead, on the same schedule.
7. **Alerts**: raised by the first worker to claim them (:meth:`StateSync.once`).

Each step stands alone: a value that does not decode (a
:class:`~resilience_mw.fleet.store.StoreDataError`, naming its key) fails that step
only; it is counted, logged once, and shown by :meth:`StateSync.status` (``warn``); the
other steps go on. If the lease cannot be read, the worker runs its own health checks.

When the store does not answer (down, slow, refused, full), the worker goes on with
local state (and runs its own health checks), logs once per outage, retries with capped
back-off, and resynchronises when the store answers again.

**A level forced while the store does not answer** (:meth:`StateSync.force_locally`,
what the admin endpoint falls back to) holds in this worker with its TTL, and is
remembered. At the first exchange that reads the store again, the store's state wins
if it changed meanwhile (a clear or a force by anyone, the CLI included): the local
override is replaced by it. If nobody changed it, the pending change is written to the
store then (a force with what is left of its TTL, or a clear), so that it reaches every
worker and can be cleared from anywhere; a force whose TTL ran out meanwhile is
dropped. Either way no worker keeps an override the store does not know of.

**A SQLite file deleted or replaced** under the workers is noticed before each exchange
(:meth:`~resilience_mw.fleet.store.StateStore.check`) and reopened, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .. import _fork, signals
from .._redact import describe_error
from .._worker import BackgroundWorker
from ..config import StateConfig
from ..degradation.manager import AutoDegradationManager
from ..failover.budget import RetryBudget
from ..failover.health import HealthChecker
from ..failover.pool import NodePool
from ..model import parse_level
from ._outcomes import OutcomeWindow, from_store, to_store
from .store import NodeReport, Override, ServiceIdentity, StateStore, StoreDataError, StoreError, reporter_id

__all__ = ["StateSync"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: reasons a worker reports: its own evidence (a hint from others is not passed on)
_OWN_EVIDENCE = frozenset({"passive", "active", "retry-after"})
#: longest wait between tries while the store is failing (so a store that is back is
#: caught up with within about two seconds)
MAX_BACKOFF = 2.0
#: a manager's TTL is at most a week: a longer override is held until the store clears it
_MAX_LOCAL_TTL = 7 * 86_400.0


@dataclass(frozen=True, slots=True)
class _Pending:
    """A change of level made in this worker alone because the store did not take it."""

    #: the level forced (``None``: a clear)
    level: str | None
    #: when (by the sync's clock) its TTL ends (``None``: until cleared)
    until: float | None
    #: when it was made (by the sync's clock)
    at: float
    #: the store's override this worker had seen then (its version and time; ``None``: none)
    seen: tuple[int, float] | None


def _key(override: Override | None) -> tuple[int, float] | None:
    """What tells one override from another: its version and when it was set."""
    return None if override is None else (override.version, override.set_at)


class StateSync:
    """Exchanges one worker's state with ``store``; see the module docstring.

    :param store: the shared store.
    :param degradation: the worker's degradation manager (overrides are applied to it).
    :param pool: the worker's node pool, if it has nodes.
    :param checker: the health checker to run while this worker holds the lease.
    :param config: :class:`~resilience_mw.config.StateConfig`.
    :param clock: monotonic clock for back-off and ages; tests pass a fake.
    :param name: this worker's name in the store (default ``host:pid``).
    :param budget: the adapter's retry budget (shared with ``retry_budget_scope="fleet"``).
    :param service: this service's name in the store (its identity); default
        ``config.service``, else the store's namespace, else ``"resilience"``.
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
        service: str | None = None,
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
        #: what this worker announces: its service and node set
        self.identity = ServiceIdentity.of(
            service or self.config.service or getattr(store, "namespace", None) or "resilience",
            () if pool is None else pool.nodes,
        )
        self._clock = clock
        self._lock = threading.Lock()
        _fork.register(self)
        # the store's override last applied, as (version, set_at): a version alone is not
        # enough, since a new SQLite file or a flushed Redis counts from 1 again
        self._applied_version: tuple[int, float] | None = None
        self._applied_level: str | None = None
        self._pending: _Pending | None = None
        self._published: set[str] = set()
        self._failures = 0
        self._retry_at: float | None = None
        self._outage_since: float | None = None
        self._last_error = ""
        self._last_sync: float | None = None
        self._alerts: list[tuple[str, float, Callable[[], None]]] = []
        #: the failing steps of the last exchange: step -> what went wrong
        self._step_errors: dict[str, str] = {}
        #: the failing steps of the exchange under way (the sync thread's)
        self._errors_now: dict[str, str] = {}
        #: the other services (or node sets) announced in the namespace, in words
        self._collision: str | None = None
        #: node ids reported by others that this worker does not have -> reports seen
        self._unknown: dict[str, int] = {}
        #: StoreErrors met (every failed try, data errors included) and, of them, values
        #: that did not decode
        self.store_errors = 0
        self.data_errors = 0
        #: times the store was found replaced (a SQLite file deleted) and reopened
        self.reopened = 0
        #: whether this worker holds the health-check lease
        self.leader = False
        #: this worker's outcomes over the last outlier interval (outlier_scope "fleet")
        self._window = OutcomeWindow()
        #: when (by the sync's clock) the fleet's outcomes are next compared (``None``:
        #: set at the next exchange, to the next multiple of the interval)
        self._compare_at: float | None = None
        #: whether this sync compares the outliers (the pool's own comparison is off)
        self._outliers_here = False
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

    @property
    def collision(self) -> str | None:
        """Why this worker does not merge state with the namespace (another service, or
        another node set, announced there), in words; ``None``: no collision."""
        return self._collision

    @property
    def unknown_nodes(self) -> dict[str, int]:
        """Node ids others reported that this worker does not have, and how many such
        reports it ignored."""
        with self._lock:
            return dict(self._unknown)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start syncing in a daemon thread (the first exchange at once); idempotent."""
        self._worker.start()

    def exchange_once(self) -> None:
        """One exchange now, in the calling thread, handled as the sync thread handles its
        own (a store that does not answer is recorded, not raised): what a fresh worker
        does before it serves its first request. Call it before :meth:`start`."""
        if not self.running:
            self._tick()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop syncing (and the health checker if this worker ran it); give the lease up."""
        stopped = self._worker.stop(timeout)
        self._compare_locally()
        if self.checker is not None and self.checker.running:
            self.checker.stop(timeout)
        if self.leader:
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
        answer, or while another service shares the namespace (then nothing changed:
        :meth:`force_locally` is the fallback)."""
        name = parse_level(level).name
        self._refuse_if_colliding()
        self._check_store()  # a file deleted since the last sync: write to the new one
        override = self.store.set_override(name, ttl, self.me)
        self._forget_pending()
        self._apply_override(override, now=override.set_at, again=True)
        return override

    def clear(self) -> Override:
        """Clear the override in every worker of the scope (this one at once); raises
        :class:`StoreError` like :meth:`force`."""
        self._refuse_if_colliding()
        self._check_store()
        override = self.store.set_override(None, None, self.me)
        self._forget_pending()
        self._apply_override(override, now=override.set_at, again=True)
        return override

    def force_locally(self, level: Any, ttl: float | None = None) -> None:
        """Force ``level`` (``None``: clear the override) in this worker only, because
        the store did not take it (:meth:`force` raised): for ``ttl`` seconds, or until
        cleared. Remembered and reconciled at the next exchange that reads the store (see
        the module docstring): the store's state wins if anyone changed it meanwhile,
        else this change is written to it."""
        name = None if level is None else parse_level(level).name
        if name is None:
            self.degradation.clear_override()
        else:
            self.degradation.force_level(name, ttl)
        now = self._clock()
        with self._lock:
            self._pending = _Pending(name, None if ttl is None or name is None else now + ttl, now,
                                     self._applied_version)
            # from now on the manager's override is this worker's own, not the store's
            self._applied_level = name
        log.warning(
            "degradation level %s in this worker only (the store did not take it): reconciled with the store "
            "when it answers",
            "cleared" if name is None else f"forced to {name}" + (f" for {ttl:g} s" if ttl else ""),
        )

    def once(self, key: str, seconds: float, fire: Callable[[], None]) -> None:
        """Call ``fire`` at the next sync unless another worker of the scope claimed
        ``key`` in the last ``seconds`` (what :class:`~resilience_mw.AlertRules` uses to
        alert once per fleet). Never waits on the store: the claim is made by the sync
        thread; while the store does not answer, ``fire`` is called anyway."""
        with self._lock:
            if len(self._alerts) < 100:  # bounded, should the sync not run
                self._alerts.append((key, seconds, fire))

    def status(self) -> dict[str, Any]:
        """Plain data for status pages: scope, health of the store, lease, override.

        ``status`` is ``warn`` while the store does not answer, while a step of the last
        exchange failed (``step_errors``: step -> error, a bad value names its key), or
        while another service shares the namespace (``collision``); ``reason`` says why
        in words (``None`` with ``pass``). ``local_override`` is a change of level this
        worker made alone while the store did not take it (``None``: none pending);
        ``forced`` and ``forced_remaining`` are the level forced in this worker now,
        whoever forced it. ``unknown_nodes`` counts ignored reports per unknown node id.
        ``outliers`` is whose outcomes the pool's outlier detection compares now:
        ``fleet`` (every worker's, through the store) or ``process`` (its own).
        """
        now = self._clock()
        forced = self.degradation.forced
        with self._lock:
            pending = self._pending
            reasons = []
            if self._outage_since is not None:
                reasons.append(f"state store not answering ({self._last_error}): local state only")
            if self._collision is not None:
                reasons.append(self._collision)
            if self._step_errors:
                reasons.append(
                    "state store values that do not decode: "
                    + "; ".join(f"{step}: {error}" for step, error in self._step_errors.items())
                )
            return {
                "scope": self.scope,
                "store": repr(self.store),
                "service": self.identity.service,
                "status": "warn" if reasons else "pass",
                "reason": "; ".join(reasons) or None,
                "outage_seconds": None if self._outage_since is None else round(now - self._outage_since, 3),
                "last_error": self._last_error or None,
                "last_sync_age": None if self._last_sync is None else round(now - self._last_sync, 3),
                "sync_interval": self.config.sync_interval,
                "health_check_leader": self.leader,
                "own_health_checks": not self.leader and self.checker is not None and self.checker.running,
                "override": self._applied_level,
                "forced": None if forced is None else forced.name,
                "forced_remaining": self.degradation.forced_remaining(),
                "local_override": None if pending is None else {
                    "level": pending.level,
                    "remaining": None if pending.until is None else round(max(0.0, pending.until - now), 3),
                    "age": round(now - pending.at, 3),
                },
                "step_errors": dict(self._step_errors),
                "collision": self._collision,
                "store_errors": self.store_errors,
                "data_errors": self.data_errors,
                "unknown_nodes": dict(self._unknown),
                "outliers": "fleet" if self._outliers_here else "process",
                "reopened": self.reopened,
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
        with self._lock:
            failing = "; ".join(f"{step}: {error}" for step, error in self._step_errors.items())
        signals.send(signals.state_synced, self, ok=not failing, lag=0.0, error=failing)

    def exchange(self) -> None:
        """One exchange with the store (what the thread runs every interval), step by
        step; a step whose value does not decode fails alone (see :meth:`status`).

        :raises StoreError: the store did not answer (the rest of the exchange is skipped).
        """
        self._errors_now = {}
        try:
            self._check_store()
            self._step("identity", self._sync_identity)
            isolated = self._collision is not None
            if not isolated:
                self._step("override", self._sync_override)
                holder = self._step("lease", self._sync_lease) if self.checker and self.pool else None
                if self.pool is not None:
                    pool = self.pool
                    self._step("nodes", lambda: self._sync_nodes(pool, holder))
                ttl = 3 * self.config.sync_interval  # a worker that stops publishing drops out
                if self.config.error_rate_scope == "fleet":
                    self._step("errors", lambda: self._share_errors(ttl))
                if self.config.retry_budget_scope == "fleet" and self.budget is not None:
                    budget = self.budget
                    self._step("retries", lambda: self._share_retries(budget, ttl))
                if self.config.outlier_scope == "fleet" and self.pool is not None:
                    pool = self.pool
                    self._step("outcomes", lambda: self._share_outcomes(pool, ttl))
            if isolated:
                self._compare_locally()  # the namespace is not this service's alone
            if isolated or "lease" in self._errors_now:
                self._own_checks()  # no lease to follow: check on our own
            self._step("alerts", lambda: self._raise_alerts(claim=not isolated))
        except StoreError:
            # (the steps' last word stands: the outage is what status says now)
            self.store_errors += 1
            raise
        self._record_steps(self._errors_now)

    def _check_store(self) -> None:
        if self.store.check():
            self.reopened += 1

    def _step(self, name: str, run: Callable[[], T]) -> T | None:
        """Run one step; a value that does not decode (or a bug) fails this step alone.
        The store not answering ends the exchange (every step would wait on it)."""
        try:
            return run()
        except StoreDataError as exc:
            self._data_error(name, exc)
        except StoreError:
            raise
        except Exception as exc:  # a record that broke a step in a way not foreseen
            first = name not in self._step_errors
            self._errors_now[name] = describe_error(exc)
            if first:
                log.exception("state sync step %r failed; the other steps go on", name)
        return None

    def _read(self, name: str, read: Callable[[], T]) -> T:
        """``read()``, or what of it decoded when some entries did not (counted as a data
        error of step ``name``, which goes on with the rest)."""
        try:
            return read()
        except StoreDataError as exc:
            if exc.partial is None:
                raise
            self._data_error(name, exc)
            partial: T = exc.partial
            return partial

    def _data_error(self, step: str, exc: StoreDataError) -> None:
        self.store_errors += 1
        self.data_errors += 1
        self._errors_now[step] = str(exc)

    def _record_steps(self, errors: dict[str, str]) -> None:
        with self._lock:
            before, self._step_errors = self._step_errors, dict(errors)
        for step, error in errors.items():
            if before.get(step) != error:
                log.warning("state sync step %r failed: %s; the other steps go on", step, error)
        for step in before.keys() - errors.keys():
            log.info("state sync step %r works again", step)

    # ---------------------------------------------------------------- steps

    def _sync_identity(self) -> None:
        ttl = 3 * self.config.sync_interval
        announced = self._read("identity", lambda: self.store.announce(self.identity, ttl))
        mine = self.identity
        others = sorted({i for i in announced if (i.service, i.fingerprint) != (mine.service, mine.fingerprint)},
                        key=lambda i: (i.service, i.fingerprint))
        collision = None
        if others:
            where = getattr(self.store, "namespace", None)
            place = f"namespace {where!r}" if where else repr(self.store)
            words = [
                f"service {o.describe()}" if o.service != mine.service else f"{o.describe()}, another node set"
                for o in others
            ]
            collision = (
                f"{place} is also used by {' and '.join(words)}; this worker is {mine.describe()}: not merging "
                "their state (give each service its own state_namespace or file)"
            )
        with self._lock:
            before, self._collision = self._collision, collision
        if collision is not None and collision != before:
            log.warning("state store collision: %s", collision)
        elif collision is None and before is not None:
            log.info("state store %r: no other service or node set announced any more; sharing state again", self.store)

    def _refuse_if_colliding(self) -> None:
        if self._collision is not None:
            raise StoreError(self._collision)

    def _sync_override(self) -> None:
        override = self.store.override()
        with self._lock:
            pending = self._pending
        if pending is None:
            self._apply_override(override)
            return
        current = _key(override)
        remaining = None if pending.until is None else pending.until - self._clock()
        if current != pending.seen:
            log.warning("the store's override changed while this worker had its own: the store's applies")
        elif remaining is not None and remaining <= 0:
            pass  # it ran out here already (the manager's TTL): nothing to write
        elif pending.level is None and (override is None or override.level is None):
            pass  # cleared here, and nothing to clear in the store
        else:
            override = self.store.set_override(pending.level, remaining, self.me)  # not answering: kept for later
            log.warning(
                "the level %s in this worker alone while the store did not answer now applies to every worker",
                "cleared" if pending.level is None else f"forced to {pending.level}",
            )
        self._forget_pending()
        self._apply_override(override, again=True)

    def _forget_pending(self) -> None:
        with self._lock:
            self._pending = None

    def _apply_override(self, override: Override | None, *, now: float | None = None, again: bool = False) -> None:
        """Apply the store's override once per change (``again``: whatever this worker
        had, as after a local override)."""
        with self._lock:
            if override is None or override.level is None:
                if self._applied_level is None and not again:
                    self._applied_version = _key(override)
                    return
                level, self._applied_level = None, None
            elif _key(override) == self._applied_version and not again:
                return
            else:
                level = self._applied_level = override.level
            self._applied_version = _key(override)
        # outside the lock: forcing sends level_changed to user receivers
        if level is None or override is None:
            self.degradation.clear_override()
            return
        ttl = None
        if override.expires_at is not None:
            # the TTL holds in the manager too: the level ends even if the store goes away
            left = override.expires_at - (self.store.now() if now is None else now)
            if left <= 0:
                self.degradation.clear_override()
                return
            ttl = left if left <= _MAX_LOCAL_TTL else None
        self.degradation.force_level(level, ttl)

    def _sync_lease(self) -> str | None:
        checker = self.checker
        assert checker is not None and self.pool is not None
        ttl = 2 * max(self.config.sync_interval, checker.config.check_interval)
        try:
            holder = self.store.lease("health", self.me, ttl)
        except StoreDataError:
            self.leader = False
            raise
        self.leader = holder == self.me
        if self.leader and not checker.running:
            log.info("this worker (%s) runs the health checks for the %s", self.me, self.scope)
            checker.start(self.pool)
        elif not self.leader and checker.running:
            checker.stop(0)
        return holder

    def _own_checks(self) -> None:
        self.leader = False
        if self.checker is not None and self.pool is not None and not self.checker.running:
            log.info("this worker (%s) runs its own health checks: it cannot follow the %s's lease", self.me, self.scope)
            self.checker.start(self.pool)

    def _sync_nodes(self, pool: NodePool, holder: str | None) -> None:
        store, me, interval = self.store, self.me, self.config.sync_interval
        leader = holder is not None and holder == me
        # following a checker (another worker's): a node down until checks pass is down
        # for as long as that checker says so, whoever took it out here
        following = holder is not None and not leader
        mine: dict[str, tuple[str, float]] = {}
        checked: set[str] = set()  # down here, held by the checker's verdict
        hinted: set[str] = set()  # out on a timer, on others' reports
        for row in pool.snapshot():
            if row["healthy"]:
                continue
            reason, down = row["down_reason"], row["state"] == "down"
            if following and down and reason != "manual":
                checked.add(row["id"])
            elif reason in _OWN_EVIDENCE or (leader and down and reason == "shared"):
                # down until checks pass: the checks' verdict ("active"), refreshed each
                # sync; out on a timer: the first cause, as long as the timer
                ttl = row["ejected_for"] if row["ejected_for"] else 3 * interval
                mine[row["id"]] = ("active" if down else reason, max(ttl, interval))
            elif reason == "shared":
                hinted.add(row["id"])
        for node_id, (why, ttl) in mine.items():
            store.report(node_id, me, why, ttl)
        for node_id in self._published - mine.keys():
            store.report(node_id, me, None, 0)
        self._published = set(mine)
        now = store.now()
        known = {n.id for n in pool.nodes}
        by_node: dict[str, list[NodeReport]] = {}
        for report in self._read("nodes", store.reports):
            if report.reporter == me:
                continue
            if report.node_id not in known:
                self._unknown_report(report)
                continue
            by_node.setdefault(report.node_id, []).append(report)
        checked_down = {
            node_id
            for node_id, reports in by_node.items()
            if following and any(r.reporter == holder and r.reason == "active" for r in reports)
        }
        # first what is no longer reported: the checker's word that a node is up again,
        # the withdrawal of the reports behind a hint
        for node_id in checked - checked_down:
            pool.apply_verdict(node_id, False)
        for node_id in hinted - by_node.keys():
            pool.apply_hint(node_id, False)
        for node_id, reports in by_node.items():
            if node_id in checked_down:
                pool.apply_verdict(node_id, True, fresh=interval)
                continue
            voters = len({r.reporter for r in reports}) + (node_id in mine)
            if voters >= self.quorum:
                seconds = max(r.expires_at for r in reports) - now
                pool.apply_hint(node_id, True, seconds, fresh=interval)

    def _unknown_report(self, report: NodeReport) -> None:
        with self._lock:
            first = report.node_id not in self._unknown
            self._unknown[report.node_id] = self._unknown.get(report.node_id, 0) + 1
        if first:
            log.warning(
                "ignoring reports of node %r (from %s): this worker has no such node (nodes %s); a deploy that "
                "changed the nodes, or another service on this store?",
                report.node_id,
                report.reporter,
                ", ".join(self.identity.nodes),
            )

    def _share_errors(self, ttl: float) -> None:
        requests, failures = self.degradation.window.counts()
        self.store.put_counts(self.me, requests, failures, ttl)
        self.degradation.share_counts(*self._read("errors", self.store.counts), valid_for=ttl)

    def _share_retries(self, budget: RetryBudget, ttl: float) -> None:
        mine = budget.totals()
        self.store.put_counts(self.me, *mine, ttl, tally="retries")
        budget.share(*self._read("retries", lambda: self.store.counts(tally="retries")), valid_for=ttl, mine=mine)

    def _share_outcomes(self, pool: NodePool, ttl: float) -> None:
        interval = pool.config.outlier_interval
        pool.compare_on_traffic = False  # before taking: whatever the pool takes now, it compares
        self._outliers_here = True
        now, taken = self._clock(), pool.take_tallies()
        with self._lock:
            self._window.add(now, taken, interval)
            mine = self._window.sums()
        due = self._compare_at is not None and now >= self._compare_at
        if self._compare_at is None or due:
            # at multiples of the interval: every worker whose clock is this one (the
            # default, time.monotonic, is the host's) compares within one sync of the
            # others, on the same window, before the fleet's traffic to an ejected node
            # has gone from it
            self._compare_at = (math.floor(now / interval) + 1) * interval
        try:
            self.store.put_outcomes(self.me, to_store(mine), ttl)
            fleet = from_store(self._read("outcomes", self.store.outcomes)) if due else {}
        except StoreDataError:
            if due:
                pool.eject_outliers(mine)  # the fleet's counts are unreadable: this worker's own
            raise
        except StoreError:
            raise  # the exchange fails: _failed hands the comparison back to the pool
        except Exception:
            self._compare_locally()  # a bug here must not stop outlier detection
            raise
        if due:
            ejected = pool.eject_outliers(fleet)
            if ejected:
                log.debug("ejected %s by the fleet's outcomes", ", ".join(ejected))

    def _compare_locally(self) -> None:
        """Hand outlier detection back to the pool (it compares its own counts on traffic
        again) and compare the window now, this worker's outcomes alone: the tallies
        taken from the pool are not lost, and the judgment is the one the pool would have
        made over its last interval had it been counting alone."""
        pool = self.pool
        if pool is None or not self._outliers_here:
            return
        with self._lock:
            window, self._window = self._window, OutcomeWindow()
            self._compare_at, self._outliers_here = None, False
        pool.compare_on_traffic = True
        if window:
            pool.eject_outliers(window.sums())

    def _raise_alerts(self, claim: bool = True) -> None:
        with self._lock:
            pending, self._alerts = self._alerts, []
        for i, (key, seconds, fire) in enumerate(pending):
            try:
                won = not claim or self.store.claim(f"alert:{key}", seconds)
            except StoreDataError as exc:
                self._data_error("alerts", exc)
                won = True  # a claim that cannot be read must not silence the alert
            except StoreError:
                with self._lock:
                    self._alerts[:0] = pending[i:]  # raised locally once the outage is noticed
                raise
            if won:
                fire()

    # --------------------------------------------------------------- outages

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
        self._compare_locally()
        if first:
            log.warning(
                "state store %r did not answer (%s): going on with local state, retrying with back-off",
                self.store,
                error,
            )
            self._own_checks()
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
        # the parent's outcomes are not this process's; its pool compares on its own
        # until this sync's first exchange takes over
        self._window, self._compare_at = OutcomeWindow(), None
        if self._outliers_here and self.pool is not None:
            self.pool.compare_on_traffic = True
        self._outliers_here = False

    def __repr__(self) -> str:
        return f"StateSync({self.store!r}, scope={self.scope}, running={self.running}, leader={self.leader})"
