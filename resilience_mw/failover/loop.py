"""The failover loop, and FailoverManager / ServiceBackup built on it.

:class:`FailoverLoop` is the one place that walks a call across nodes: each node at
most once, in the order given, recording every attempt, feeding passive health,
logging one line (the inbound request being served and the upstream call apart:
``GET /checkout (upstream GET /pay): failover from a to b: ConnectTimeout (0.10 s)``)
and sending :data:`~resilience_mw.signals.failover` per move, and
marking the error that ends the call with every attempt (:func:`with_attempts`). What
counts as a failure, and whether to move on, is the caller's to say:
:meth:`FailoverManager.execute_with_failover`, :meth:`ServiceBackup.execute` and the
requests adapter each judge their own outcomes and share this loop::

    manager = FailoverManager([ServiceNode("a", "http://10.0.0.1"), ServiceNode("b", "http://10.0.0.2")])
    body = manager.execute_with_failover(lambda node: fetch(node.endpoint + "/api"))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from .. import signals
from .._redact import describe_error
from ..exceptions import PROGRAMMING_ERRORS, AllNodesFailedError, Attempt, NoAvailableNodeError, with_attempts
from ..model import FailoverStrategy, ServiceNode
from . import _inbound
from .budget import RetryBudget
from .pool import CallOrder, NodePool

__all__ = ["PROGRAMMING_ERRORS", "FailoverLoop", "FailoverManager", "ServiceBackup", "Try"]

log = logging.getLogger(__name__)

T = TypeVar("T")



class Try:
    """One step of a :class:`FailoverLoop`: the node, its position, and (computed only
    when asked, on a failure) the node that comes next."""

    __slots__ = ("_loop", "node", "position", "sent")

    def __init__(self, loop: FailoverLoop, node: ServiceNode, position: int) -> None:
        self._loop = loop
        self.node = node
        #: 0 for the first node tried
        self.position = position
        #: the request on its way (in flight until its outcome is recorded)
        self.sent = loop.pool.send(node)

    @property
    def next(self) -> ServiceNode | None:
        """The node tried next if this one fails, ``None`` on the last."""
        rest = self._loop.rest()
        return rest[self.position] if self.position < len(rest) else None


class FailoverLoop:
    """Walks one call across ``order``; see the module docstring.

    ::

        loop = FailoverLoop(pool, pool.failover_order(), label="upstream GET /x")
        for step in loop:
            try:
                result = call(step.node)
            except OSError as exc:
                if loop.failed(step, exc):
                    continue
                raise
            loop.succeeded(step)
            return result
    """

    __slots__ = ("_label", "_order", "_started", "attempts", "budget", "pool")

    def __init__(
        self,
        pool: NodePool,
        order: CallOrder | Sequence[ServiceNode],
        *,
        label: str | Callable[[], str] = "call",
        budget: RetryBudget | None = None,
    ) -> None:
        self.pool = pool
        #: extra attempts are taken from it (counted as one request here)
        self.budget = budget
        if budget is not None:
            budget.request()
        self._order = order if isinstance(order, CallOrder) else tuple(order)
        self._label = label
        #: every failed try so far
        self.attempts: list[Attempt] = []
        self._started = 0.0

    @property
    def call(self) -> str:
        """What the call is (``upstream GET /pay``, an operation's name), computed only
        when a log line is written."""
        return self._label if isinstance(self._label, str) else self._label()

    @property
    def label(self) -> str:
        """What a log line names: the inbound request being served and the call apart
        (``GET /checkout (upstream GET /pay)``), or the call alone outside a request."""
        inbound, call = _inbound.name(), self.call
        return call if inbound is None else f"{inbound} ({call})"

    def rest(self) -> tuple[ServiceNode, ...]:
        """The nodes after the first."""
        order = self._order
        return order.rest() if isinstance(order, CallOrder) else order[1:]

    def __iter__(self) -> Iterator[Try]:
        order = self._order
        first = order.first if isinstance(order, CallOrder) else order[0]
        step = None
        try:
            self._started = time.perf_counter()
            step = Try(self, first, 0)
            yield step
            for i, node in enumerate(self.rest(), 1):
                self.pool.done(step.sent)
                self._started = time.perf_counter()
                step = Try(self, node, i)
                yield step
        finally:
            if step is not None:
                self.pool.done(step.sent)  # a try left without an outcome is no longer in flight

    def elapsed(self) -> float:
        """Seconds since the current try started."""
        return time.perf_counter() - self._started

    def succeeded(self, step: Try) -> None:
        """The try worked: the node's passive health hears of it, with its latency."""
        elapsed = self.elapsed()
        self.pool.done(step.sent)
        self.pool.mark_success(step.node.id, elapsed, sent=step.sent)
        if signals.attempt_ended.receivers:
            signals.send(
                signals.attempt_ended, self.pool, node=step.node, outcome="success", duration=elapsed,
                resend_count=step.position,
            )

    def charge(self, step: Try, *, hold_off: float | None = None) -> None:
        """Count a failure against the node without ending the try (a bad status that is
        returned to the caller all the same); ``hold_off`` seconds keep it out instead,
        as its ``Retry-After`` asked."""
        self.pool.done(step.sent)
        if hold_off:
            self.pool.hold_off(step.node.id, hold_off, sent=step.sent)
        else:
            self.pool.mark_failure(step.node.id, sent=step.sent)

    def failed(
        self, step: Try, error: BaseException, *, charge: bool = True, go_on: bool = True, hold_off: float | None = None
    ) -> bool:
        """Record a failed try; ``True`` when the call should move to the next node.

        :param charge: count it against the node (``False`` for the caller's own
            mistakes, which no other node would fix either).
        :param go_on: whether moving on is allowed at all (``False``: the request may
            have reached the node and is not safe to send twice).
        :param hold_off: seconds the node asked to be left alone (``Retry-After``).

        When the call ends here, ``error`` is marked with every attempt (see
        :func:`~resilience_mw.exceptions.with_attempts`); the caller re-raises it.
        """
        elapsed = self.elapsed()
        self.pool.done(step.sent)
        self.attempts.append(Attempt(step.node.id, error, elapsed))
        if charge:
            self.charge(step, hold_off=hold_off)
        signals.send(
            signals.attempt_ended, self.pool, node=step.node, outcome="failure", duration=elapsed,
            resend_count=step.position,
        )
        nxt = step.next if go_on else None
        spent = nxt is not None and self.budget is not None and not self.budget.try_spend()
        if spent:
            nxt = None
            assert self.budget is not None
            requests, extra, allowed = self.budget.allowed()
            _note(error, f"retry budget spent: {extra} extra attempts for {requests} requests in the last "
                         f"{self.budget.window:g} s (allowed {allowed:.0f})")
            signals.send(signals.retry_budget_exhausted, self.pool, node=step.node, requests=requests,
                         extra_attempts=extra, allowed=allowed)
        if nxt is not None:
            log.warning(
                "%s: failover from %s to %s: %s (%.2f s)",
                self.label,
                step.node.id,
                nxt.id,
                type(error).__name__,
                elapsed,
                extra=self._detail(step, nxt, error, elapsed),
            )
            signals.send(signals.failover, self.pool, from_node=step.node, to_node=nxt, error=error)
            return True
        if charge:
            log.warning(
                "%s: node %s failed, %s: %s (%.2f s)",
                self.label,
                step.node.id,
                "no node left" if step.next is None else "retry budget spent" if spent else "not safe to send elsewhere",
                type(error).__name__,
                elapsed,
                extra=self._detail(step, None, error, elapsed),
            )
            signals.send(signals.failover, self.pool, from_node=step.node, to_node=None, error=error)
        with_attempts(error, self.attempts)
        return False

    def _detail(self, step: Try, nxt: ServiceNode | None, error: BaseException, elapsed: float) -> dict[str, Any]:
        # the one log line names the error's type; what it said goes with the record, and
        # so do the inbound request (None outside one) and the call, each on its own
        return {
            "inbound": _inbound.name(),
            "call": self.call,
            "from_node": step.node.id,
            "to_node": None if nxt is None else nxt.id,
            "elapsed": elapsed,
            "error": describe_error(error),
            "attempt": step.position,
        }


def _note(error: BaseException, text: str) -> None:
    add_note = getattr(error, "add_note", None)  # PEP 678 (Python 3.11+)
    if add_note is not None:
        add_note(text)


class FailoverManager(NodePool):
    """A :class:`~resilience_mw.failover.pool.NodePool` that runs operations with failover.

    Takes the same arguments as :class:`~resilience_mw.failover.pool.NodePool`.
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

        :param should_fail_over: decides, per exception, whether it is the node's fault:
            ``False`` propagates it at once and charges the node nothing. By default,
            programming errors (:data:`PROGRAMMING_ERRORS`) are not a node's fault.
        :raises NoAvailableNodeError: no node is available (only with ``panic=False``).
        :raises AllNodesFailedError: every tried node failed; ``attempts`` has each.
        """
        order = self.call_order()
        if order is None:
            raise with_attempts(
                NoAvailableNodeError(f"no healthy node among {[n.id for n in self.nodes]} (panic routing is off)"),
                (),
            )
        return self.run_in_order(order, operation, should_fail_over=should_fail_over)

    def run_in_order(
        self,
        order: CallOrder | Sequence[ServiceNode],
        operation: Callable[[ServiceNode], T],
        *,
        should_fail_over: Callable[[Exception], bool] | None = None,
    ) -> T:
        """Try ``operation`` on each node of ``order`` in turn (see :class:`FailoverLoop`)."""
        loop = FailoverLoop(self, order, label=lambda: getattr(operation, "__name__", "operation"))
        for step in loop:
            try:
                result = operation(step.node)
            except Exception as exc:
                node_fault = should_fail_over(exc) if should_fail_over is not None else _node_fault(exc)
                if not node_fault:
                    loop.failed(step, exc, charge=False, go_on=False)
                    raise
                if loop.failed(step, exc):
                    continue
                raise AllNodesFailedError(loop.attempts) from exc
            loop.succeeded(step)
            return result
        raise AssertionError("unreachable: the loop ends by returning or raising")  # pragma: no cover


def _node_fault(exc: Exception) -> bool:
    return not isinstance(exc, PROGRAMMING_ERRORS)


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
