"""FailoverManager and ServiceBackup: run an operation against nodes until one works.

Unlike the seed, one call tries each distinct node at most once, in the strategy's
order, so a failing primary that is still "healthy" (below the failure threshold)
is not tried again in the same call::

    manager = FailoverManager([ServiceNode("a", "http://10.0.0.1"), ServiceNode("b", "http://10.0.0.2")])
    body = manager.execute_with_failover(lambda node: fetch(node.endpoint + "/api"))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from . import signals
from ._redact import describe_error
from .exceptions import AllNodesFailedError, Attempt, NoAvailableNodeError
from .model import FailoverStrategy, ServiceNode
from .pool import NodePool

__all__ = ["FailoverManager", "ServiceBackup"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class FailoverManager(NodePool):
    """A :class:`~resilience_mw.pool.NodePool` that runs operations with failover.

    Takes the same arguments as :class:`~resilience_mw.pool.NodePool`.
    """

    def execute_with_failover(
        self,
        operation: Callable[[ServiceNode], T],
        *,
        should_fail_over: Callable[[Exception], bool] | None = None,
    ) -> T:
        """Call ``operation(node)`` on the chosen node; on an exception, on the next.

        Each node is tried at most once per call. Successes and failures feed the
        node's passive health, and each move to another node sends
        :data:`~resilience_mw.signals.failover`.

        :param should_fail_over: if given and it returns ``False`` for an exception,
            that exception propagates at once instead of trying the next node.
        :raises NoAvailableNodeError: no node is available (and panic mode is off).
        :raises AllNodesFailedError: every tried node failed; ``attempts`` has each.
        """
        order = self.failover_order()
        if not order:
            raise NoAvailableNodeError(
                f"no healthy node among {[n.id for n in self.nodes]} (panic mode is off)"
            )
        return self.run_in_order(order, operation, should_fail_over=should_fail_over)

    def run_in_order(
        self,
        order: Sequence[ServiceNode],
        operation: Callable[[ServiceNode], T],
        *,
        should_fail_over: Callable[[Exception], bool] | None = None,
    ) -> T:
        """Try ``operation`` on each node of ``order`` in turn (the failover loop)."""
        attempts: list[Attempt] = []
        for i, node in enumerate(order):
            start = time.perf_counter()
            try:
                result = operation(node)
            except Exception as exc:
                elapsed = time.perf_counter() - start
                self.mark_failure(node.id)
                attempts.append(Attempt(node.id, exc, elapsed))
                if should_fail_over is not None and not should_fail_over(exc):
                    raise
                nxt = order[i + 1] if i + 1 < len(order) else None
                log.warning(
                    "node %s failed (attempt %d of %d): %s%s",
                    node.id,
                    i + 1,
                    len(order),
                    describe_error(exc),
                    f"; trying {nxt.id}" if nxt else "",
                )
                signals.send(signals.failover, self, from_node=node, to_node=nxt, error=exc)
                continue
            self.mark_success(node.id, time.perf_counter() - start)
            return result
        raise AllNodesFailedError(attempts) from attempts[-1].error


class ServiceBackup:
    """Primary, secondary and optional tertiary service, tried in that order.

    Tiers currently marked unhealthy are skipped; when every tier is unhealthy all are
    tried anyway, in order, as a last resort. Health is tracked by :attr:`manager`
    (a Priority :class:`FailoverManager` over the tiers); extra keyword arguments go to it.
    """

    def __init__(
        self,
        primary: ServiceNode,
        secondary: ServiceNode,
        tertiary: ServiceNode | None = None,
        **manager_options: Any,
    ) -> None:
        tiers = [primary, secondary] + ([tertiary] if tertiary is not None else [])
        self.tiers: tuple[ServiceNode, ...] = tuple(tiers)
        self.manager = FailoverManager(self.tiers, FailoverStrategy.Priority, **manager_options)

    @property
    def primary(self) -> ServiceNode:
        return self.tiers[0]

    @property
    def secondary(self) -> ServiceNode:
        return self.tiers[1]

    @property
    def tertiary(self) -> ServiceNode | None:
        return self.tiers[2] if len(self.tiers) > 2 else None

    def execute(self, operation: Callable[[ServiceNode], T]) -> T:
        """Run ``operation`` on the first tier that succeeds.

        :raises AllNodesFailedError: every tried tier failed.
        """
        order = [n for n in self.tiers if self.manager.is_healthy(n.id)] or list(self.tiers)
        return self.manager.run_in_order(order, operation)

    def __repr__(self) -> str:
        return f"ServiceBackup(tiers={[n.id for n in self.tiers]})"
