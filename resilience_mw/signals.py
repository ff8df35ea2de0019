"""blinker signals that report what resilience_mw does.

All signals live on one private :class:`blinker.Namespace`. The sender is the object
that changed state (a :class:`~resilience_mw.FailoverManager`, an
:class:`~resilience_mw.AutoDegradationManager`, an :class:`~resilience_mw.AlertRules`,
a :class:`~resilience_mw.adapter.FailoverAdapter`); everything else is a keyword
argument. Signals are sent after the sender has released its lock, from whatever
thread made the change (a request thread or a background worker). A receiver that
raises is logged and does not break the sender.

blinker holds receivers weakly by default: a lambda or closure connected with
``signal.connect(fn)`` vanishes once garbage-collected. Use ``connect(fn, weak=False)``
or keep a reference.

Signals report; they never control. Example::

    from resilience_mw import signals

    def on_failover(sender, from_node, to_node, error, **extra):
        log.warning("failover %s -> %s: %s", from_node.id, to_node and to_node.id, error)

    signals.failover.connect(on_failover)
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from blinker import Namespace, Signal

__all__ = [
    "ARGUMENTS",
    "alert",
    "attempt_ended",
    "call_throttled",
    "failover",
    "fallback_served",
    "health_checked",
    "hedge_sent",
    "level_changed",
    "node_marked_unhealthy",
    "node_recovered",
    "queue_stamp_ignored",
    "request_rerouted",
    "request_shed",
    "retry_budget_exhausted",
    "send",
    "state_synced",
    "telemetry_dropped",
    "telemetry_queue_sampled",
    "telemetry_sent",
]

log = logging.getLogger(__name__)

_signals = Namespace()

#: A node stopped being offered. Sent once per transition, with ``node``
#: (:class:`~resilience_mw.ServiceNode`), ``reason`` (``"passive"`` for failures of
#: real traffic, ``"active"`` for failed health checks, ``"retry-after"`` when the node
#: asked for time with ``Retry-After``, ``"manual"`` for
#: :meth:`~resilience_mw.FailoverManager.update_health`, ``"shared"`` when other
#: workers found it down, ``"success-rate"``, ``"failure-percentage"`` or ``"latency"``
#: when outlier detection found it worse than its peers), ``consecutive_failures``
#: (int) and ``ejected_for`` (seconds until it is offered again, or ``None`` when only
#: a success or a passing check brings it back).
node_marked_unhealthy: Signal = _signals.signal("node-marked-unhealthy")

#: A node is offered again. Sent once per transition, with ``node`` and ``reason``
#: (``"success"``, ``"health-check"``, ``"ejection-expired"`` or ``"manual"``).
node_recovered: Signal = _signals.signal("node-recovered")

#: One attempt failed and the call moves on. Sent with ``from_node`` (the node that
#: failed), ``to_node`` (the next node, or ``None`` when none is left) and ``error``
#: (the exception, or an error describing a retryable status).
failover: Signal = _signals.signal("failover")

#: The degradation level changed. Sent with ``old`` and ``new``
#: (:class:`~resilience_mw.DegradationLevel`), ``cpu`` and ``memory`` (percent),
#: ``error_rate`` (0..1), ``requests`` (requests in the error window), ``forced``
#: (bool: set by :meth:`~resilience_mw.AutoDegradationManager.force_level`), ``cause``
#: (dict: the level each cause calls for, and in ``"sheds"`` why the load level sheds or
#: not, in words) and ``load_level`` (the level shedding and readiness follow).
level_changed: Signal = _signals.signal("level-changed")

#: One try of a call on one node ended (the requests adapter,
#: :meth:`~resilience_mw.FailoverManager.execute_with_failover`,
#: :class:`~resilience_mw.ServiceBackup`). Sent by the pool with ``node``, ``outcome`` (``"success"`` or
#: ``"failure"``), ``duration`` (seconds) and ``resend_count`` (0 for the first node
#: tried, 1 for the next...).
attempt_ended: Signal = _signals.signal("attempt-ended")

#: A call could have moved to another node but the retry budget was spent. Sent by the
#: pool with ``node`` (the node that failed), ``requests`` and ``extra_attempts`` (in the
#: budget's window) and ``allowed``.
retry_budget_exhausted: Signal = _signals.signal("retry-budget-exhausted")

#: The requests adapter sent a hedged request: the call to ``node`` had not answered
#: after ``delay`` seconds, so the same request went to ``to_node`` too (the first
#: answer wins). Sent by the adapter's pool.
hedge_sent: Signal = _signals.signal("hedge-sent")

#: The requests adapter refused a call itself, sending nothing, because its upstream
#: is failing (client-side throttling). Sent by the adapter's pool with
#: ``criticality`` (the call's class) and ``probability`` (the chance it was refused with).
call_throttled: Signal = _signals.signal("call-throttled")

#: An active health check ended. Sent by the :class:`~resilience_mw.HealthChecker`
#: with ``node``, ``passed`` (bool), ``duration`` (seconds) and ``detail`` (why it
#: failed, ``""`` if it passed).
health_checked: Signal = _signals.signal("health-checked")

#: The middleware answered ``503`` instead of the app (or, with ``enforced=False``, in
#: shadow mode, would have). Sent with ``path``, ``level``, ``reason`` (``"level"``,
#: ``"queue"``, ``"deadline"``, ``"criticality"``, ``"concurrency"``) and ``enforced``.
request_shed: Signal = _signals.signal("request-shed")

#: The middleware ignored a request-start stamp it could not believe (from the future
#: beyond a second of clock skew, from hours ago, or malformed): the request is served as
#: if it had not queued. Sent with ``stamp`` (the header's text, at most 64 characters).
queue_stamp_ignored: Signal = _signals.signal("queue-stamp-ignored")

#: The middleware served a lighter path. Sent with ``path``, ``to`` and ``level``.
request_rerouted: Signal = _signals.signal("request-rerouted")

#: A fallback was served. Sent with ``reason`` (``"level"``: the primary was not tried
#: at this level; ``"error"``: the primary failed; ``"programming_error"``: it failed with
#: what looks like a bug, a ``NameError``, ``TypeError``, ... logged at ERROR) and
#: ``name`` (the primary's name).
fallback_served: Signal = _signals.signal("fallback-served")

#: The state sync talked to the store (or tried). Sent by the
#: :class:`~resilience_mw.fleet.sync.StateSync` with ``ok`` (bool), ``lag`` (seconds since
#: the last exchange that worked, ``None`` before the first) and ``error`` (``""`` if ok).
state_synced: Signal = _signals.signal("state-synced")

#: An alert rule fired. Sent with ``kind`` (``"failover-rate"`` or ``"degradation"``),
#: ``message`` (str) and ``details`` (dict of plain data).
alert: Signal = _signals.signal("alert")

#: The durable OTLP export posted a batch. Sent by the
#: :class:`~resilience_mw.telemetry.export.OTLPExport` with ``kind`` (the OTLP signal: ``"traces"``,
#: ``"metrics"``, ``"logs"``), ``items`` (those the collector took), ``outcome``
#: (``"sent"``, ``"retry"``, ``"rejected"``) and ``duration`` (seconds).
telemetry_sent: Signal = _signals.signal("telemetry-sent")

#: The durable OTLP export dropped telemetry. Sent with ``kind``, ``reason`` (one of
#: :data:`~resilience_mw.telemetry.export.queue.REASONS`: ``"queue_full"``,
#: ``"evicted"``, ``"expired"``, ``"rejected"``, ``"shed"``...) and ``items``.
telemetry_dropped: Signal = _signals.signal("telemetry-dropped")

#: The durable OTLP export's queue, about once a second while it sends. Sent with
#: ``bytes``, ``batches`` and ``fill_ratio`` (bytes over the queue's limit).
telemetry_queue_sampled: Signal = _signals.signal("telemetry-queue-sampled")


#: what each signal is sent with (its keyword arguments), as documented above
ARGUMENTS: dict[str, frozenset[str]] = {
    "node-marked-unhealthy": frozenset({"node", "reason", "consecutive_failures", "ejected_for"}),
    "node-recovered": frozenset({"node", "reason"}),
    "failover": frozenset({"from_node", "to_node", "error"}),
    "level-changed": frozenset(
        {"old", "new", "cpu", "memory", "error_rate", "requests", "forced", "cause", "load_level"}
    ),
    "attempt-ended": frozenset({"node", "outcome", "duration", "resend_count"}),
    "retry-budget-exhausted": frozenset({"node", "requests", "extra_attempts", "allowed"}),
    "hedge-sent": frozenset({"node", "to_node", "delay"}),
    "call-throttled": frozenset({"criticality", "probability"}),
    "health-checked": frozenset({"node", "passed", "duration", "detail"}),
    "request-shed": frozenset({"path", "level", "reason", "enforced"}),
    "queue-stamp-ignored": frozenset({"stamp"}),
    "request-rerouted": frozenset({"path", "to", "level"}),
    "fallback-served": frozenset({"reason", "name"}),
    "state-synced": frozenset({"ok", "lag", "error"}),
    "alert": frozenset({"kind", "message", "details"}),
    "telemetry-sent": frozenset({"kind", "items", "outcome", "duration"}),
    "telemetry-dropped": frozenset({"kind", "reason", "items"}),
    "telemetry-queue-sampled": frozenset({"bytes", "batches", "fill_ratio"}),
}


def send(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send ``signal``, logging (not raising) any receiver's exception (in a background
    thread ``SystemExit`` and ``KeyboardInterrupt`` too: they would only end the thread).

    Never call this with a lock held: receivers are user code.
    """
    if not signal.receivers:
        return
    for receiver in list(signal.receivers_for(sender)):
        try:
            receiver(sender, **kwargs)
        except Exception:
            log.exception(
                "receiver %r of signal %r raised; ignored", receiver, getattr(signal, "name", signal)
            )
        except (SystemExit, KeyboardInterrupt):
            if threading.current_thread() is threading.main_thread():
                raise  # the user's own exit or Ctrl-C
            # in a background thread no one can catch it: it would only end the thread
            log.exception(
                "receiver %r of signal %r raised; ignored in thread %s",
                receiver,
                getattr(signal, "name", signal),
                threading.current_thread().name,
            )
