"""AlertRules: the alerting advice of the design this library ports, wired to the signals.

* ``failover-rate``: more than ``failover_threshold`` failovers within
  ``failover_window`` seconds.
* ``degradation``: the level reached ``level_threshold`` (default Level2) or higher.

Each alert sends :data:`~resilience_mw.signals.alert` and logs a warning. Alerts of
one kind are rate-limited to one per ``min_interval`` seconds (a level worse than the
last one alerted is always reported), so a flapping system does not spam. With a shared
store, ``once`` (:meth:`~resilience_mw.fleet.sync.StateSync.once`) makes that once per store
scope: the first worker to claim an alert raises it, the others do not.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import _fork, signals
from ..config import AlertConfig
from ..model import DegradationLevel

__all__ = ["AlertRules"]

log = logging.getLogger(__name__)


class AlertRules:
    """Subscribes to ``failover`` and ``level_changed`` and raises alerts.

    :param config: an :class:`~resilience_mw.config.AlertConfig`; or pass its fields
        (``failover_threshold``, ``failover_window``, ``level_threshold``,
        ``min_interval``, ``failovers``) as keyword arguments.
    :param failover_sender: only count failovers sent by this object (default: any).
    :param level_sender: only watch levels sent by this object (default: any).
    :param clock: monotonic clock; tests pass a fake.
    :param once: ``once(key, seconds, fire)``: call ``fire`` unless another worker
        raised the alert ``key`` in the last ``seconds`` (default: call it at once).

    Subscriptions are weak: keep a reference to the rules for as long as they should
    fire (``alerts = AlertRules()``; the Flask extension keeps its own in
    ``app.extensions``). Rules nobody references stop firing once collected;
    :meth:`close` unsubscribes at once.
    """

    def __init__(
        self,
        *,
        config: AlertConfig | None = None,
        failover_sender: Any = None,
        level_sender: Any = None,
        clock: Callable[[], float] = time.monotonic,
        once: Callable[[str, float, Callable[[], None]], None] | None = None,
        **options: Any,
    ) -> None:
        #: the settings in force
        self.config = AlertConfig.from_options(config, options)
        self._clock = clock
        self._once = once
        self._lock = threading.Lock()
        # Bounded: only the newest threshold+1 timestamps matter.
        self._failovers: collections.deque[float] = collections.deque(maxlen=self.config.failover_threshold + 1)
        self._last_sent: dict[str, float] = {}
        self._alerted_level = DegradationLevel.Normal
        self.fired: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        _fork.register(self)
        if self.config.failovers:
            signals.failover.connect(self._on_failover, **_only(failover_sender))
        signals.level_changed.connect(self._on_level, **_only(level_sender))

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stop listening."""
        signals.failover.disconnect(self._on_failover)
        signals.level_changed.disconnect(self._on_level)

    def _on_failover(self, sender: Any, **kw: Any) -> None:
        now = self._clock()
        with self._lock:
            self._failovers.append(now)
            while self._failovers and now - self._failovers[0] > self.config.failover_window:
                self._failovers.popleft()
            count = len(self._failovers)
            due = count > self.config.failover_threshold and self._due("failover-rate", now)
        if due:
            self._raise(
                "failover-rate",
                f"high failover rate: more than {self.config.failover_threshold} failovers in {self.config.failover_window:g}s",
                {
                    "count": count,
                    "window": self.config.failover_window,
                    "last_from": getattr(kw.get("from_node"), "id", None),
                },
            )

    def _on_level(self, sender: Any, *, new: DegradationLevel, old: DegradationLevel, **kw: Any) -> None:
        now = self._clock()
        with self._lock:
            if new < self.config.level_threshold:
                return
            last = self._last_sent.get("degradation")
            recent = last is not None and now - last < self.config.min_interval
            if recent and new <= self._alerted_level:
                return  # already alerted at this level or worse within min_interval
            self._last_sent["degradation"] = now
            self._alerted_level = new
        self._raise(
            f"degradation:{new.name}",
            f"system degraded to {new.name}",
            {"old": old.name, "new": new.name, **{k: kw.get(k) for k in ("cpu", "memory", "error_rate")}},
        )

    def _due(self, kind: str, now: float) -> bool:
        last = self._last_sent.get(kind)
        if last is None or now - last >= self.config.min_interval:
            self._last_sent[kind] = now
            return True
        return False

    def _raise(self, key: str, message: str, details: dict[str, Any]) -> None:
        kind = key.split(":", 1)[0]
        if self._once is None:
            self._fire(kind, message, details)
        else:
            self._once(key, self.config.min_interval, lambda: self._fire(kind, message, details))

    def _fire(self, kind: str, message: str, details: dict[str, Any]) -> None:
        log.warning("ALERT %s: %s", kind, message)
        self.fired.append({"kind": kind, "message": message, "details": details})
        signals.send(signals.alert, self, kind=kind, message=message, details=details)


def _only(sender: Any) -> dict[str, Any]:
    return {} if sender is None else {"sender": sender}
