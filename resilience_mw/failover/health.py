"""HealthChecker: active health checks that take nodes out and bring them back.

Each node is checked on its own schedule: every ``check_interval`` seconds while it is
offered, every ``unhealthy_interval`` while it is out, each wait stretched by up to
``jitter`` at random so checks spread out. Due checks run at most ``max_workers`` at a
time, and each gets its full ``timeout`` from its own start: a node waiting for a free
worker is never failed for the wait, and a round reports only nodes it checked.

The default probe, :class:`HttpProbe`, GETs ``<endpoint><path>``: a 2xx answer whose
body (at most ``max_body_bytes`` read) arrives within the timeout passes; anything else
fails (other statuses, redirects, which are never followed, connection errors). A
watchdog shuts the socket of a check at its timeout, so a node that trickles its answer
holds a thread no longer than that. It keeps no cookies and uses no proxy from the
environment. Results feed the pool's state machine
(:meth:`~resilience_mw.failover.pool.NodePool.record_check`: ``unhealthy_threshold`` failures
take a node out, ``healthy_threshold`` passes bring it back)::

    checker = HealthChecker(check_interval=5, timeout=2)
    checker.start(manager)   # the pool (a FailoverManager) whose nodes to check

The names of the design this library ports work as it calls them (see
:doc:`/guide/origin`): ``checker.start(nodes, manager)`` checks those nodes of
``manager``, ``checker.check_all_nodes_parallel(nodes)`` checks each once and returns
the results, and a result's ``is_healthy`` is its ``passed``.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.util import make_headers, parse_url

from .. import _fork, signals
from .._redact import describe_error
from .._worker import BackgroundWorker
from ..config import HealthCheckConfig
from ..exceptions import ConfigError
from ..model import CheckResult, ServiceNode
from . import _transport as _http
from .pool import NodePool

__all__ = ["HealthChecker", "HttpProbe", "Probe"]

log = logging.getLogger(__name__)

#: ``probe(node, timeout)``: returning ``False`` or raising fails the check, returning
#: anything else passes it. It must return within ``timeout`` seconds (a round waits
#: for its checks).
Probe = Callable[[ServiceNode, float], object]


class _Unset(enum.Enum):
    """The default of an argument left out: ``None`` is a value, and not a valid one."""

    UNSET = "unset"

    def __repr__(self) -> str:
        return "<from the config>"


_UNSET = _Unset.UNSET


class CheckFailed(Exception):
    """The node answered, but not as a healthy node does (its status, for one)."""


class HttpProbe:
    """GET ``<endpoint><path>`` with a per-check deadline; see the module docstring.

    One urllib3 pool per node keeps a connection alive between checks (``pools`` of them
    at most). Credentials in a node's endpoint are sent as Basic auth.
    """

    def __init__(self, path: str = "/health", max_body_bytes: int = 64 * 1024, *, pools: int = 1024) -> None:
        self.path = path
        self.max_body_bytes = max_body_bytes
        self._pools = pools
        self._lock = threading.Lock()
        self._http: urllib3.PoolManager | None = None
        self._pid = -1
        self._targets: dict[str, tuple[str, dict[str, str]]] = {}
        _fork.register(self)

    def _manager(self) -> urllib3.PoolManager:
        # One per process: a forked child must not share the parent's sockets.
        http, pid = self._http, os.getpid()
        if http is None or self._pid != pid:
            with self._lock:
                if self._http is None or self._pid != pid:
                    self._http = urllib3.PoolManager(
                        num_pools=self._pools, maxsize=1, block=False, retries=False, ca_certs=DEFAULT_CA_BUNDLE_PATH
                    )
                    self._http.pool_classes_by_scheme = _http.POOL_CLASSES  # the watchdog can cut them
                    self._pid = pid
                http = self._http
        return http

    def _target(self, node: ServiceNode) -> tuple[str, dict[str, str]]:
        target = self._targets.get(node.endpoint)
        if target is None:
            url = parse_url(node.endpoint + self.path)
            headers = {"User-Agent": "resilience_mw-health", "Accept": "*/*"}
            if url.auth:
                headers.update(make_headers(basic_auth=url.auth))
                url = url._replace(auth=None)
            target = self._targets[node.endpoint] = (url.url, headers)
        return target

    def __call__(self, node: ServiceNode, timeout: float) -> bool:
        url, headers = self._target(node)
        with _http.attempt(time.monotonic() + timeout):
            resp = self._manager().request(
                "GET",
                url,
                headers=headers,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
                redirect=False,
                retries=False,
                preload_content=False,
            )
            complete = False
            try:
                read = 0
                while read <= self.max_body_bytes:
                    chunk = resp.read1(16 * 1024)
                    if not chunk:
                        complete = True
                        break
                    read += len(chunk)
            finally:
                if complete:
                    resp.release_conn()  # keep the connection for the next check
                else:
                    resp.close()
        if not 200 <= resp.status < 300:
            raise CheckFailed(f"status {resp.status}")
        return True

    def close(self) -> None:
        """Close every kept connection."""
        http = self._http
        if http is not None:
            http.clear()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # the manager itself is replaced by pid

    def __repr__(self) -> str:
        return f"HttpProbe(path={self.path!r}, max_body_bytes={self.max_body_bytes})"


class HealthChecker:
    """Active health checks of one pool's nodes.

    :param check_interval: seconds between checks of a node that is offered.
    :param timeout: seconds one check may take from its own start.
    :param path: request path appended to each node's endpoint (by :class:`HttpProbe`).
        Left out, each of these three is its :class:`~resilience_mw.config.HealthCheckConfig`
        default; given, it is checked like any option (``None`` is a
        :class:`~resilience_mw.ConfigError`, not the default).
    :param config: a :class:`~resilience_mw.config.HealthCheckConfig`; or pass its
        fields (``unhealthy_interval``, ``unhealthy_threshold``, ``healthy_threshold``,
        ``jitter``, ``max_workers``, ``max_body_bytes``) as keyword arguments.
    :param probe: how one node is checked (see :data:`Probe`); default an
        :class:`HttpProbe` for ``path``.
    :param clock: monotonic clock in seconds, for schedules and latencies; tests pass a fake.
    :param rng: random source for the jitter.
    """

    def __init__(
        self,
        check_interval: float | _Unset = _UNSET,
        timeout: float | _Unset = _UNSET,
        path: str | _Unset = _UNSET,
        *,
        config: HealthCheckConfig | None = None,
        probe: Probe | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        **options: Any,
    ) -> None:
        for key, value in (("check_interval", check_interval), ("timeout", timeout), ("path", path)):
            if value is not _UNSET:
                options[key] = value
        #: the settings in force
        self.config = cfg = HealthCheckConfig.from_options(config, options)
        if probe is not None and not callable(probe):
            raise ConfigError("probe", probe, "must be a callable probe(node, timeout)")
        if not callable(clock):
            raise ConfigError("clock", clock, "must be a callable returning seconds")
        self.probe: Probe = probe if probe is not None else HttpProbe(cfg.path, cfg.max_body_bytes)
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._pool: NodePool | None = None
        #: the started pool's nodes to check (``None``: all of them)
        self._nodes: tuple[ServiceNode, ...] | None = None
        #: node id -> when its next check is due (by ``clock``)
        self._due: dict[str, float] = {}
        #: calls of stop(): a round ends early when it changes, one after a stop runs whole
        self._stops = 0
        #: rounds of due checks run by the background thread
        self.rounds = 0
        self._worker = BackgroundWorker("resilience_mw-health", self._tick, cfg.check_interval)
        _fork.register(self)

    # ---------------------------------------------------------------- checks

    def check_node(self, node: ServiceNode) -> CheckResult:
        """Check one node now and return what was seen (no state is changed)."""
        timeout = self.config.timeout
        start = self._clock()
        detail = ""
        try:
            passed = self.probe(node, timeout) is not False
        except Exception as exc:
            passed, detail = False, describe_error(exc)
        latency = self._clock() - start
        if passed and latency > timeout:
            passed, detail = False, f"took {latency:.3g}s, more than timeout={timeout:g}s"
        elif not passed and not detail:
            detail = "the probe returned False"
        if not passed:
            log.debug("health check of %s failed: %s", node.id, detail)
        signals.send(signals.health_checked, self, node=node, passed=passed, duration=latency, detail=detail)
        return CheckResult(node.id, passed, latency, detail)

    def check_nodes(
        self, nodes: Iterable[ServiceNode], on_result: Callable[[CheckResult], object] | None = None
    ) -> list[CheckResult]:
        """Check ``nodes``, at most ``max_workers`` at a time (the calling thread is one),
        each with its full timeout; ``on_result`` is called as each check ends. Returns
        the results in the order of ``nodes``, only for nodes actually checked (a stop
        in the middle leaves the rest unchecked and unreported)."""
        todo = list(enumerate(nodes))
        results: list[CheckResult | None] = [None] * len(todo)
        claim = threading.Lock()
        next_item = iter(todo)
        stops = self._stops

        def work() -> None:
            while self._stops == stops:
                with claim:
                    item = next(next_item, None)
                if item is None:
                    return
                i, node = item
                results[i] = result = self.check_node(node)
                if on_result is not None:
                    on_result(result)

        helpers = [
            threading.Thread(target=work, name="resilience_mw-health-check", daemon=True)
            for _ in range(min(self.config.max_workers, len(todo)) - 1)
        ]
        for t in helpers:
            t.start()
        try:
            work()
        finally:
            for t in helpers:
                t.join()  # each check ends by its timeout: the watchdog sees to it
        return [r for r in results if r is not None]

    def check_all_nodes_parallel(self, nodes: Iterable[ServiceNode]) -> list[CheckResult]:
        """Check each of ``nodes`` once, now, in parallel, and return the results in the
        order of ``nodes`` (the ported design's name). As with :meth:`check_nodes`, at
        most ``max_workers`` run at a time (the design starts a task per node), and nothing is
        recorded (:meth:`run_once` records)."""
        return self.check_nodes(nodes)

    def run_once(self, pool: NodePool | None = None) -> list[CheckResult]:
        """Check every node of ``pool`` now and record the results; by default the
        started pool's nodes that :meth:`start` was given."""
        pool, nodes = self._pool_and_nodes(pool)
        return self.check_nodes(nodes, lambda result: self._record(pool, result))

    def _record(self, pool: NodePool, result: CheckResult) -> None:
        cfg = self.config
        pool.record_check(
            result.node_id,
            result.passed,
            result.latency if result.passed else None,
            unhealthy_threshold=cfg.unhealthy_threshold,
            healthy_threshold=cfg.healthy_threshold,
        )
        interval = cfg.check_interval
        if cfg.unhealthy_interval is not None and not pool.is_healthy(result.node_id):
            interval = cfg.unhealthy_interval
        with self._lock:
            self._due[result.node_id] = self._clock() + interval * (1 + self._rng.random() * cfg.jitter)

    def run_due(self, pool: NodePool | None = None) -> list[CheckResult]:
        """Check and record the nodes of ``pool`` (by default the started pool's nodes
        that :meth:`start` was given) whose check is due (what the background thread does
        each time it wakes); the results."""
        pool, nodes = self._pool_and_nodes(pool)
        now = self._clock()
        with self._lock:
            due = [n for n in nodes if self._due.get(n.id, now) <= now]
        return self.check_nodes(due, lambda result: self._record(pool, result)) if due else []

    def next_due(self) -> float | None:
        """When the next check is due (by the checker's clock); ``None`` before any."""
        with self._lock:
            return min(self._due.values(), default=None)

    def _tick(self) -> None:
        if self.run_due():
            self.rounds += 1
        nxt = self.next_due()
        # wake when the next node is due (never busy-loop, never sleep past a check)
        self._worker.interval = self.config.check_interval if nxt is None else max(0.005, nxt - self._clock())

    def _pool_and_nodes(self, pool: NodePool | None) -> tuple[NodePool, tuple[ServiceNode, ...]]:
        """``pool`` and all its nodes; by default the started pool and the nodes started."""
        if pool is None:
            with self._lock:
                pool, nodes = self._pool, self._nodes
            if pool is None:
                raise RuntimeError("no pool: pass one, or start(pool) first")
            return pool, pool.nodes if nodes is None else nodes
        pool = _pool_of("pool", pool)
        return pool, pool.nodes

    # ------------------------------------------------------------- lifecycle

    def start(self, pool: NodePool | Iterable[ServiceNode], manager: NodePool | None = None) -> None:
        """Check nodes in a daemon thread until :meth:`stop`, recording each result in
        their pool: ``start(pool)`` checks every node of ``pool`` (e.g. a
        :class:`~resilience_mw.FailoverManager`); ``start(nodes, manager)``, the ported
        design's form, checks the given nodes, which must be ``manager``'s own. Idempotent; safe
        from many threads at once; after any stop it runs again. Called again for the
        same pool, it checks the nodes named last.

        :raises ConfigError: no pool (a node list without its ``manager``), a node that is
            not ``manager``'s, or another pool already being checked.
        """
        if manager is None:
            pool, nodes = _pool_of("pool", pool), None
        else:
            manager = _pool_of("manager", manager)
            nodes = _nodes_of(manager, pool)
            pool = manager
        with self._lock:
            if self._pool is not None and self._pool is not pool:
                if self._worker.running:
                    raise ConfigError("pool", pool, "this checker is already checking another pool")
                self._due.clear()
            self._pool, self._nodes = pool, nodes
            checked = {n.id for n in (pool.nodes if nodes is None else nodes)}
            # a node no longer checked must not stay due, or the thread would wake for it
            self._due = {node_id: due for node_id, due in self._due.items() if node_id in checked}
        self._worker.start()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop checking (checks in progress end by their timeout, a round in progress
        ends); ``True`` once the thread is gone."""
        with self._lock:
            self._stops += 1
        return self._worker.stop(timeout)

    @property
    def running(self) -> bool:
        """Whether checks are running in the background."""
        return self._worker.running

    def close(self) -> None:
        """Stop and release the probe's connections."""
        self.stop()
        close = getattr(self.probe, "close", None)
        if callable(close):
            with contextlib.suppress(Exception):
                close()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        cfg = self.config
        return (
            f"HealthChecker(path={cfg.path!r}, interval={cfg.check_interval}, timeout={cfg.timeout}, "
            f"thresholds={cfg.unhealthy_threshold}/{cfg.healthy_threshold}, running={self.running})"
        )


def _pool_of(field: str, pool: object) -> NodePool:
    """``pool``, if it is a pool; else the ConfigError ``field`` names."""
    if not isinstance(pool, NodePool):
        hint = "or give the nodes and their manager: start(nodes, manager)" if field == "pool" else None
        raise ConfigError(field, pool, "must be the NodePool (e.g. a FailoverManager) whose nodes to check", hint=hint)
    return pool


def _nodes_of(manager: NodePool, nodes: object) -> tuple[ServiceNode, ...]:
    """``nodes`` (each once, in order), if each is one of ``manager``'s own nodes."""
    if isinstance(nodes, (str, bytes, NodePool)) or not isinstance(nodes, Iterable):
        raise ConfigError("nodes", nodes, "must be a list of the manager's ServiceNodes")
    given = list(nodes)
    own = {n.id: n for n in manager.nodes}
    strangers = [n for n in given if not isinstance(n, ServiceNode) or own.get(n.id) != n]
    if strangers:
        raise ConfigError(
            "nodes", strangers, "must be nodes of the manager (the same id, endpoint, priority and weight)",
            hint=f"the manager's: {sorted(own)}",
        )
    if not given:
        raise ConfigError("nodes", given, "must name at least one node of the manager")
    return tuple({n.id: own[n.id] for n in given}.values())
