"""Metrics: what the library decides, as Prometheus and OpenTelemetry metrics.

One table of names (:data:`METRICS`), exported two ways, each an optional extra:
Prometheus (``pip install 'resilience_mw[prometheus]'``) and OpenTelemetry (``[otel]``,
instruments on a meter named ``resilience_mw``). Nothing is counted, and nothing is
imported, unless a :class:`Metrics` is made. Values come from the library's signals,
counted as they happen (never read back at scrape time), so they stay right in
``prometheus_client``'s multiprocess mode under gunicorn: counters summed over every
worker that ever ran (monotonic across ``max_requests`` churn), gauges per their
``multiprocess_mode`` over live workers: the worst level, the least features, and for
``resilience_node_state`` the state the most recent change in any worker gave (one series
per node and state, no ``pid`` label; ``prometheus_client`` 0.19 or later). With OpenTelemetry, failovers, fallbacks and
shed requests are also added as events on the current span when it is recording, and
attempts carry ``http.request.resend_count``.

::

    metrics = Metrics(prometheus=True)
    metrics.watch(degradation=manager, pool=pool)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

try:  # the [prometheus] extra
    import prometheus_client as prom
    from prometheus_client import multiprocess
except ImportError:  # pragma: no cover - without the extra
    prom = multiprocess = None  # type: ignore[assignment]
try:  # the [otel] extra
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace as otel_trace
except ImportError:  # pragma: no cover - without the extra
    otel_metrics = otel_trace = None  # type: ignore[assignment]

from .. import signals
from ..degradation.manager import AutoDegradationManager
from ..exceptions import ConfigError
from ..failover.node_state import Phase
from ..failover.pool import NodePool
from ..model import DegradationLevel, Feature, ServiceNode

__all__ = ["METRICS", "Metrics", "mark_process_dead", "otel_name", "prometheus_exposition", "register"]

log = logging.getLogger(__name__)

#: name -> (kind, help, labels, multiprocess mode of a gauge)
METRICS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "resilience_degradation_level": ("gauge", "degradation level in force: 0 Normal .. 4 Emergency", (), "livemax"),
    "resilience_degradation_transitions_total": (
        "counter", "changes of the degradation level", ("from", "to", "cause"), ""),
    "resilience_feature_enabled": ("gauge", "1 while the feature is on at the current level", ("feature",), "livemin"),
    # the latest verdict of any live worker: each change writes every state of the node at
    # once, so the freshest writer's view is whole (the worst per series would mix views:
    # healthy=1 from a worker that has not heard yet next to down=1 from one that has)
    "resilience_node_state": ("gauge", "1 for the state the node is in, 0 for the others", ("node", "state"),
                              "livemostrecent"),
    "resilience_node_ejections_total": ("counter", "nodes taken out, by why", ("node", "reason"), ""),
    "resilience_health_checks_total": ("counter", "active health checks, by result", ("node", "result"), ""),
    "resilience_health_check_duration_seconds": ("histogram", "how long active health checks took", ("node",), ""),
    "resilience_failovers_total": ("counter", "calls moved from one node to the next", ("from_node", "to_node"), ""),
    "resilience_adapter_attempts_total": ("counter", "tries of a call on a node, by outcome", ("node", "outcome"), ""),
    "resilience_adapter_attempt_duration_seconds": ("histogram", "how long tries on a node took", ("node",), ""),
    "resilience_retry_budget_exhausted_total": (
        "counter", "failovers not made because the retry budget was spent", ("node",), ""),
    "resilience_hedges_total": (
        "counter", "hedged requests sent: a call slower than the hedge delay sent to a second node too", ("to_node",), ""),
    "resilience_calls_throttled_total": (
        "counter", "calls the adapter refused itself, sending nothing, because the upstream accepts too few",
        ("criticality",), ""),
    "resilience_requests_shed_total": (
        "counter", "requests answered 503 instead of served (enforced=false: shadow mode, served all the same)",
        ("reason", "enforced"), ""),
    "resilience_requests_rerouted_total": ("counter", "requests served from a lighter path", (), ""),
    "resilience_queue_stamps_ignored_total": (
        "counter", "request-start stamps ignored: malformed, or implausible (clocks of proxy and worker apart)", (), ""),
    "resilience_fallbacks_total": ("counter", "fallbacks served, by why", ("outcome",), ""),
    "resilience_state_store_errors_total": ("counter", "exchanges with the shared store that failed", (), ""),
    "resilience_state_sync_lag_seconds": ("gauge", "seconds since the last exchange with the store that worked", (),
                                          "livemostrecent"),
    # the durable OTLP export (telemetry.export): the fullest worker's queue (a disk queue
    # is one file, which every worker reports whole)
    "resilience_telemetry_queue_bytes": ("gauge", "bytes of OTLP batches waiting to be sent", (), "livemax"),
    "resilience_telemetry_queue_batches": ("gauge", "OTLP batches waiting to be sent", (), "livemax"),
    "resilience_telemetry_queue_fill_ratio": ("gauge", "OTLP queue bytes over its limit, 0 to 1", (), "livemax"),
    "resilience_telemetry_dropped_total": (
        "counter", "spans, log records and metric points dropped, by why", ("signal", "reason"), ""),
    "resilience_telemetry_sent_total": (
        "counter", "spans, log records and metric points the collectors took", ("signal",), ""),
    "resilience_telemetry_send_seconds": ("histogram", "how long posts of OTLP batches took, by outcome", ("outcome",), ""),
}


def otel_name(name: str) -> tuple[str, str]:
    """The OpenTelemetry instrument name and unit of a :data:`METRICS` name
    (``resilience_failovers_total`` -> ``resilience_mw.failovers``)."""
    base = name.removeprefix("resilience_").removesuffix("_total")
    unit = "s" if base.endswith("_seconds") else "1"
    return "resilience_mw." + base.removesuffix("_seconds").replace("_", "."), unit


class _Prometheus:
    """The process's prometheus_client objects (one set per process: metrics are
    per process in Prometheus, whatever the number of apps)."""

    _made: dict[str, Any] | None = None

    @classmethod
    def metrics(cls) -> dict[str, Any]:
        if cls._made is None:
            if prom is None:
                raise ConfigError("metrics", "prometheus", "needs prometheus_client",
                                  hint="pip install 'resilience_mw[prometheus]'")
            made: dict[str, Any] = {}
            for name, (kind, doc, labels, mode) in METRICS.items():
                if kind == "counter":
                    made[name] = prom.Counter(name, doc, labels, registry=None)
                elif kind == "histogram":
                    made[name] = prom.Histogram(name, doc, labels, registry=None)
                else:
                    made[name] = prom.Gauge(name, doc, labels, registry=None, multiprocess_mode=mode)  # type: ignore[arg-type]
            cls._made = made
        return cls._made


class _Collector:
    """Hands the process's metrics to a registry (single-process mode; in multiprocess
    mode values live in files and ``MultiProcessCollector`` reads them)."""

    def collect(self) -> Iterable[Any]:
        for metric in _Prometheus.metrics().values():
            yield from metric.collect()


_registered: set[int] = set()


def register(registry: Any = None) -> None:
    """Make the library's metrics part of ``registry`` (default: prometheus_client's
    global ``REGISTRY``); once per registry."""
    metrics = _Prometheus.metrics()
    target = registry if registry is not None else prom.REGISTRY
    if id(target) not in _registered and metrics:
        target.register(_Collector())
        _registered.add(id(target))


def prometheus_exposition() -> tuple[bytes, str]:
    """The text a ``/metrics`` endpoint answers, and its content type. With
    ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn), every worker's values read from their
    files into a registry made for this scrape; otherwise the global registry."""
    _Prometheus.metrics()  # says so if the extra is missing
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        register()
        registry = prom.REGISTRY
    return prom.generate_latest(registry), prom.CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """For gunicorn's ``child_exit`` hook: drop a dead worker's live gauges (its counters
    stay, so totals never go back)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and multiprocess is not None:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class _Otel:
    def __init__(self, provider: Any) -> None:
        if otel_metrics is None:
            raise ConfigError("metrics", "otel", "needs the OpenTelemetry API", hint="pip install 'resilience_mw[otel]'")
        meter = (provider or otel_metrics.get_meter_provider()).get_meter("resilience_mw")
        self.trace = otel_trace
        self.instruments: dict[str, Any] = {}
        for name, (kind, doc, _, _) in METRICS.items():
            oname, unit = otel_name(name)
            make = {"counter": meter.create_counter, "histogram": meter.create_histogram}.get(kind, meter.create_gauge)
            self.instruments[name] = make(oname, unit=unit, description=doc)

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        span = self.trace.get_current_span()
        if span.is_recording():
            span.add_event(f"resilience_mw.{name}", attributes)


class Metrics:
    """Counts what one app's components decide; see the module docstring.

    :param prometheus: ``True`` to export through prometheus_client (values in the
        process's metric objects; :func:`register` puts them in a registry), or ``False``.
    :param otel: ``True`` for the global OpenTelemetry meter provider, a
        ``MeterProvider`` to use that one, or ``False``.
    """

    def __init__(self, *, prometheus: bool = False, otel: Any = False) -> None:
        self._prom = _Prometheus.metrics() if prometheus else None
        self._otel = _Otel(None if otel is True else otel) if otel is not False and otel is not None else None
        self._receivers: list[tuple[Any, Any]] = []
        self._children: dict[tuple[str, ...], Any] = {}

    # ---------------------------------------------------------------- sinks

    def _child(self, name: str, labels: dict[str, str]) -> Any:
        # prometheus_client's labels() builds and locks on every call: keep each child
        key = (name, *labels.values())
        child = self._children.get(key)
        if child is None:
            metric = self._prom[name]  # type: ignore[index]
            child = self._children[key] = metric.labels(**labels) if labels else metric
        return child

    def _add(self, name: str, labels: dict[str, str], value: float = 1.0) -> None:
        if self._prom is not None:
            self._child(name, labels).inc(value)
        if self._otel is not None:
            self._otel.instruments[name].add(value, labels)

    def _set(self, name: str, labels: dict[str, str], value: float) -> None:
        if self._prom is not None:
            self._child(name, labels).set(value)
        if self._otel is not None:
            self._otel.instruments[name].set(value, labels)

    def _observe(self, name: str, labels: dict[str, str], value: float) -> None:
        if self._prom is not None:
            self._child(name, labels).observe(value)
        if self._otel is not None:
            self._otel.instruments[name].record(value, labels)

    def _event(self, name: str, attributes: dict[str, Any]) -> None:
        if self._otel is not None:
            self._otel.event(name, attributes)

    # -------------------------------------------------------------- wiring

    def watch(
        self,
        *,
        degradation: AutoDegradationManager | None = None,
        pool: NodePool | None = None,
        middleware: Any = None,
        checker: Any = None,
        sync: Any = None,
        export: Any = None,
    ) -> Metrics:
        """Count the signals of these components (each only its own) and set the gauges
        to their current state."""
        if degradation is not None:
            self._connect(signals.level_changed, degradation, self._on_level)
            self._connect(signals.fallback_served, degradation, self._on_fallback)
            self._levels(degradation, degradation.current_level())
        if pool is not None:
            self._connect(signals.node_marked_unhealthy, pool, self._on_node_down)
            self._connect(signals.node_recovered, pool, self._on_node_up)
            self._connect(signals.failover, pool, self._on_failover)
            self._connect(signals.attempt_ended, pool, self._on_attempt)
            self._connect(signals.retry_budget_exhausted, pool, self._on_budget_spent)
            self._connect(signals.hedge_sent, pool, self._on_hedge)
            self._connect(signals.call_throttled, pool, self._on_throttled)
            for node in pool.nodes:
                self._node_state(node, pool.phase(node.id))
        if middleware is not None:
            self._connect(signals.request_shed, middleware, self._on_shed)
            self._connect(signals.request_rerouted, middleware, self._on_reroute)
            self._connect(signals.queue_stamp_ignored, middleware, self._on_stamp_ignored)
        if checker is not None:
            self._connect(signals.health_checked, checker, self._on_check)
        if sync is not None:
            self._connect(signals.state_synced, sync, self._on_sync)
        if export is not None:
            self._connect(signals.telemetry_sent, export, self._on_telemetry_sent)
            self._connect(signals.telemetry_dropped, export, self._on_telemetry_dropped)
            self._connect(signals.telemetry_queue_sampled, export, self._on_telemetry_queue)
        return self

    def _connect(self, signal: Any, sender: Any, receiver: Any) -> None:
        signal.connect(receiver, sender=sender)  # weak: the app's state holds this object
        self._receivers.append((signal, receiver))

    def close(self) -> None:
        """Stop counting."""
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)
        self._receivers.clear()

    # ----------------------------------------------------------- receivers

    def _levels(self, degradation: AutoDegradationManager, level: DegradationLevel) -> None:
        self._set("resilience_degradation_level", {}, int(level))
        for feature in Feature:
            self._set("resilience_feature_enabled", {"feature": feature.name},
                      1.0 if degradation.features.is_available(feature, level) else 0.0)

    def _on_level(self, sender: AutoDegradationManager, *, old: DegradationLevel, new: DegradationLevel,
                  cause: dict[str, Any], forced: bool, **_: Any) -> None:
        if forced or cause.get("forced"):
            why = "forced"
        else:
            resources = DegradationLevel[cause.get("resources") or "Normal"]
            errors = DegradationLevel[cause.get("errors") or "Normal"]
            why = "resources" if resources >= errors else "errors"
        self._add("resilience_degradation_transitions_total", {"from": old.name, "to": new.name, "cause": why})
        self._levels(sender, new)

    def _node_state(self, node: ServiceNode, phase: Phase) -> None:
        for state in Phase:
            self._set("resilience_node_state", {"node": node.id, "state": state.value}, 1.0 if state is phase else 0.0)

    def _on_node_down(self, sender: NodePool, *, node: ServiceNode, reason: Any, **_: Any) -> None:
        self._add("resilience_node_ejections_total", {"node": node.id, "reason": str(reason)})
        self._node_state(node, sender.phase(node.id))

    def _on_node_up(self, sender: NodePool, *, node: ServiceNode, **_: Any) -> None:
        self._node_state(node, sender.phase(node.id))

    def _on_failover(self, sender: Any, *, from_node: ServiceNode, to_node: ServiceNode | None, error: Any,
                     **_: Any) -> None:
        to = to_node.id if to_node is not None else "none"
        self._add("resilience_failovers_total", {"from_node": from_node.id, "to_node": to})
        self._event("failover", {"from_node": from_node.id, "to_node": to, "error": type(error).__name__})

    def _on_attempt(self, sender: Any, *, node: ServiceNode, outcome: str, duration: float, resend_count: int,
                    **_: Any) -> None:
        self._add("resilience_adapter_attempts_total", {"node": node.id, "outcome": outcome})
        self._observe("resilience_adapter_attempt_duration_seconds", {"node": node.id}, duration)
        if resend_count or outcome != "success":
            self._event("attempt", {"node": node.id, "outcome": outcome, "http.request.resend_count": resend_count})

    def _on_budget_spent(self, sender: Any, *, node: ServiceNode, **_: Any) -> None:
        self._add("resilience_retry_budget_exhausted_total", {"node": node.id})

    def _on_hedge(self, sender: Any, *, to_node: ServiceNode, **_: Any) -> None:
        self._add("resilience_hedges_total", {"to_node": to_node.id})

    def _on_throttled(self, sender: Any, *, criticality: Any, **_: Any) -> None:
        self._add("resilience_calls_throttled_total", {"criticality": str(criticality or "critical")})

    def _on_shed(self, sender: Any, *, reason: str, level: DegradationLevel, enforced: bool = True, **_: Any) -> None:
        self._add("resilience_requests_shed_total", {"reason": reason, "enforced": "true" if enforced else "false"})
        self._event("shed", {"reason": reason, "level": level.name, "enforced": enforced})

    def _on_stamp_ignored(self, sender: Any, **_: Any) -> None:
        self._add("resilience_queue_stamps_ignored_total", {})

    def _on_reroute(self, sender: Any, *, path: str, to: str, **_: Any) -> None:
        self._add("resilience_requests_rerouted_total", {})
        self._event("reroute", {"path": path, "to": to})

    def _on_fallback(self, sender: Any, *, reason: str, name: str, **_: Any) -> None:
        self._add("resilience_fallbacks_total", {"outcome": reason})
        self._event("fallback", {"reason": reason, "primary": name})

    def _on_check(self, sender: Any, *, node: ServiceNode, passed: bool, duration: float, **_: Any) -> None:
        self._add("resilience_health_checks_total", {"node": node.id, "result": "success" if passed else "failure"})
        self._observe("resilience_health_check_duration_seconds", {"node": node.id}, duration)

    def _on_sync(self, sender: Any, *, ok: bool, lag: float | None, **_: Any) -> None:
        if not ok:
            self._add("resilience_state_store_errors_total", {})
        if lag is not None:
            self._set("resilience_state_sync_lag_seconds", {}, lag)

    def _on_telemetry_sent(self, sender: Any, *, kind: str, items: int, outcome: str, duration: float,
                           **_: Any) -> None:
        if outcome == "sent":
            self._add("resilience_telemetry_sent_total", {"signal": kind}, items)
        self._observe("resilience_telemetry_send_seconds", {"outcome": outcome}, duration)

    def _on_telemetry_dropped(self, sender: Any, *, kind: str, reason: str, items: int, **_: Any) -> None:
        self._add("resilience_telemetry_dropped_total", {"signal": kind, "reason": reason}, items)

    def _on_telemetry_queue(self, sender: Any, *, bytes: int, batches: int, fill_ratio: float, **_: Any) -> None:
        self._set("resilience_telemetry_queue_bytes", {}, bytes)
        self._set("resilience_telemetry_queue_batches", {}, batches)
        self._set("resilience_telemetry_queue_fill_ratio", {}, fill_ratio)
