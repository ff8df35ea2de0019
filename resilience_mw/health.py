"""HealthChecker: active HTTP health checks that take nodes out and bring them back.

Every ``check_interval`` seconds (plus jitter) a daemon thread GETs
``<endpoint><path>`` on every node concurrently (a bounded set of threads). A 2xx
answer within ``timeout`` passes; anything else fails: other statuses, redirects
(never followed), connection errors, and checks still running at the deadline. At
most ``max_body_bytes`` of the body are read. Results feed
:meth:`~resilience_mw.FailoverManager.record_check`, which applies the hysteresis
(``unhealthy_threshold`` failures down, ``healthy_threshold`` passes up) and sends
``node_marked_unhealthy`` / ``node_recovered`` once per transition::

    checker = HealthChecker(check_interval=5, timeout=2)
    checker.start(manager.nodes, manager)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import requests
import urllib3

from . import _fork
from .config import HealthCheckConfig
from .exceptions import ConfigError
from .failover import FailoverManager
from .model import NodeHealth, ServiceNode
from .worker import BackgroundWorker

__all__ = ["HealthChecker"]

log = logging.getLogger(__name__)


class HealthChecker:
    """Active health checks for a set of nodes.

    :param check_interval: seconds between rounds.
    :param timeout: seconds one check may take, connect and read together.
    :param path: request path appended to each node's endpoint.
    :param config: a :class:`~resilience_mw.config.HealthCheckConfig`; or pass its
        fields (``unhealthy_threshold``, ``healthy_threshold``, ``jitter``,
        ``max_workers``, ``max_body_bytes``) as keyword arguments.
    """

    def __init__(
        self,
        check_interval: float | None = None,
        timeout: float | None = None,
        path: str | None = None,
        *,
        config: HealthCheckConfig | None = None,
        **options: Any,
    ) -> None:
        for key, value in (("check_interval", check_interval), ("timeout", timeout), ("path", path)):
            if value is not None:
                options[key] = value
        #: the settings in force (replace it with ``dataclasses.replace`` to change them)
        self.config = HealthCheckConfig.from_options(config, options)
        self._session_pid = -1
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()
        self._worker: BackgroundWorker | None = None
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._session_lock = threading.Lock()  # the Session itself is replaced by pid

    # ---------------------------------------------------------------- checks

    def _http(self) -> requests.Session:
        # One Session per process: a forked child must not share the parent's sockets.
        pid = os.getpid()
        if self._session is None or self._session_pid != pid:
            with self._session_lock:
                if self._session is None or self._session_pid != pid:
                    s = requests.Session()
                    s.trust_env = False  # no proxies from the environment for node probes
                    adapter = requests.adapters.HTTPAdapter(pool_maxsize=self.config.max_workers)
                    s.mount("http://", adapter)
                    s.mount("https://", adapter)
                    self._session, self._session_pid = s, pid
        return self._session

    def check_node(self, node: ServiceNode) -> NodeHealth:
        """Check one node now and return what was seen (no state is changed)."""
        start = time.monotonic()
        deadline = start + self.config.timeout
        passed = False
        try:
            with self._http().get(
                node.endpoint + self.config.path,
                timeout=(self.config.timeout, self.config.timeout),
                allow_redirects=False,
                stream=True,
                headers={"User-Agent": "resilience_mw-health"},
            ) as resp:
                passed = 200 <= resp.status_code < 300
                read = 0
                # read1 returns whatever has arrived, so a trickled body meets the deadline
                while (chunk := resp.raw.read1(8192)) and read < self.config.max_body_bytes:
                    read += len(chunk)
                    if time.monotonic() > deadline:
                        passed = False  # the answer did not arrive within the timeout
                        break
                if not passed:
                    log.debug("health check of %s: status %d", node.id, resp.status_code)
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            log.debug("health check of %s failed: %s", node.id, type(exc).__name__)
        except Exception:
            log.exception("health check of %s raised unexpectedly", node.id)
        now = time.monotonic()
        if now > deadline + 0.05:
            passed = False  # too slow is unhealthy, even if the answer was 2xx
        return NodeHealth(
            node_id=node.id,
            is_healthy=passed,
            last_check=now,
            consecutive_failures=0 if passed else 1,
            latency=now - start,
        )

    def check_all_nodes_parallel(self, nodes: Sequence[ServiceNode]) -> list[NodeHealth]:
        """Check ``nodes`` concurrently; results in the same order.

        A check still running ``timeout`` seconds after the round started is reported
        failed (its thread finishes on its own, bounded by the socket timeouts).
        """
        nodes = list(nodes)
        results: list[NodeHealth | None] = [None] * len(nodes)
        lock = threading.Lock()
        next_index = iter(range(len(nodes)))

        def work() -> None:
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    return
                results[i] = self.check_node(nodes[i])

        threads = [
            threading.Thread(target=work, name="resilience_mw-health-check", daemon=True)
            for _ in range(min(self.config.max_workers, len(nodes)))
        ]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, start + self.config.timeout + 0.1 - time.monotonic()))
        now = time.monotonic()
        return [
            r if r is not None else NodeHealth(n.id, False, now, 1, now - start)
            for n, r in zip(nodes, results, strict=True)
        ]

    def run_once(self, nodes: Sequence[ServiceNode], manager: FailoverManager) -> list[NodeHealth]:
        """One round: check ``nodes`` and feed the results to ``manager``."""
        results = self.check_all_nodes_parallel(nodes)
        for h in results:
            manager.record_check(
                h.node_id,
                h.is_healthy,
                h.latency if h.is_healthy else None,
                unhealthy_threshold=self.config.unhealthy_threshold,
                healthy_threshold=self.config.healthy_threshold,
            )
        return results

    # ------------------------------------------------------------- lifecycle

    def start(self, nodes: Sequence[ServiceNode], failover_manager: FailoverManager) -> None:
        """Check ``nodes`` every interval in a daemon thread, feeding ``failover_manager``."""
        if not isinstance(failover_manager, FailoverManager):
            raise ConfigError("failover_manager", failover_manager, "must be a FailoverManager")
        nodes = tuple(nodes)
        unknown = [n for n in nodes if not isinstance(n, ServiceNode) or n not in failover_manager.nodes]
        if unknown or not nodes:
            raise ConfigError("nodes", unknown or nodes, "must be nodes of failover_manager")
        if self._worker is not None and self._worker.alive:
            return
        self._worker = BackgroundWorker(
            "resilience_mw-health",
            lambda: self.run_once(nodes, failover_manager),
            self.config.check_interval,
            jitter=self.config.jitter,
        )
        self._worker.start()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop checking; ``True`` once the thread is gone."""
        worker = self._worker
        return True if worker is None else worker.stop(timeout)

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.alive

    def close(self) -> None:
        """Stop and release the HTTP connections."""
        self.stop()
        if self._session is not None:
            self._session.close()

    def __repr__(self) -> str:
        return (
            f"HealthChecker(path={self.config.path!r}, interval={self.config.check_interval}, timeout={self.config.timeout}, "
            f"thresholds={self.config.unhealthy_threshold}/{self.config.healthy_threshold}, running={self.running})"
        )
