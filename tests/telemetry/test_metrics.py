"""Metrics in one process: Prometheus text as a scrape sees it, OpenTelemetry
instruments read by an InMemoryMetricReader, span events in an InMemorySpanExporter."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from resilience_mw import AutoDegradationManager, ConfigError, FailoverManager, ServiceNode
from resilience_mw.flask_ext import Resilience
from resilience_mw.telemetry.metrics import METRICS, Metrics, otel_name

NODES = [ServiceNode("a", "http://a", priority=2), ServiceNode("b", "http://b", priority=1)]


def flaky(node: ServiceNode) -> str:
    if node.id == "a":
        raise ConnectionError("a is down")
    return node.id


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_flask_metrics_endpoint_counts_what_happened() -> None:
    app = Flask("metrics")
    Resilience(app, start="off", metrics_path="/metrics", nodes=[n for n in NODES], health_check=False,
               failover_options={"failure_threshold": 1}, admin_token="t0ken")
    client = app.test_client()
    key_fo = ("resilience_failovers_total", (("from_node", "a"), ("to_node", "b")))
    before = samples(client.get("/metrics").get_data(as_text=True))
    Resilience.state(app).failover.execute_with_failover(flaky)  # type: ignore[union-attr]
    client.put("/resilience/level", json={"level": "Level2"}, headers={"Authorization": "Bearer t0ken"})
    resp = client.get("/metrics")
    after = samples(resp.get_data(as_text=True))
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    assert after[key_fo] - before.get(key_fo, 0) == 1
    assert after[("resilience_degradation_level", ())] == 2
    assert after[("resilience_node_state", (("node", "a"), ("state", "ejected")))] == 1
    assert after[("resilience_node_state", (("node", "a"), ("state", "healthy")))] == 0


def test_ignored_queue_stamps_are_counted() -> None:
    import time

    app = Flask("stamps")
    Resilience(app, start="off", metrics_path="/metrics", max_queue_time=1.0)
    app.add_url_rule("/x", "x", lambda: "ok")
    client = app.test_client()
    key = ("resilience_queue_stamps_ignored_total", ())
    before = samples(client.get("/metrics").get_data(as_text=True)).get(key, 0)
    for stamp in (f"t={time.time() + 600:.3f}", "t=1600000000", "soon", f"t={time.time():.3f}"):
        assert client.get("/x", headers={"X-Request-Start": stamp}).status_code == 200
    after = samples(client.get("/metrics").get_data(as_text=True))[key]
    assert after - before == 3  # a clock ahead, hours ago, malformed; not the good one


def test_metrics_are_off_unless_asked_for() -> None:
    app = Flask("quiet")
    Resilience(app, start="off")
    assert Resilience.state(app).metrics is None and app.test_client().get("/metrics").status_code == 404
    with pytest.raises(ConfigError) as info:
        Resilience(Flask("bad"), metrics="prometheus")
    assert info.value.field == "metrics"


def test_otel_instruments_and_span_events() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    pool = FailoverManager(NODES, failure_threshold=1)
    degradation = AutoDegradationManager()
    metrics = Metrics(otel=provider).watch(pool=pool, degradation=degradation)
    with tracer_provider.get_tracer("test").start_as_current_span("request"):
        assert pool.execute_with_failover(flaky) == "b"
    degradation.force_level("Level3")
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "resilience_mw"
            for metric in sm.metrics:
                points[metric.name] = list(metric.data.data_points)
    (failover,) = points["resilience_mw.failovers"]
    assert failover.value == 1 and dict(failover.attributes) == {"from_node": "a", "to_node": "b"}
    assert points["resilience_mw.degradation.level"][-1].value == 3
    (span,) = spans.get_finished_spans()
    events = {e.name: dict(e.attributes or {}) for e in span.events}
    assert events["resilience_mw.failover"]["to_node"] == "b"
    assert events["resilience_mw.attempt"]["http.request.resend_count"] == 1  # b, the second node tried
    metrics.close()


def test_one_name_table_for_both_exporters() -> None:
    assert otel_name("resilience_failovers_total") == ("resilience_mw.failovers", "1")
    assert otel_name("resilience_adapter_attempt_duration_seconds") == ("resilience_mw.adapter.attempt.duration", "s")
    assert all(name.startswith("resilience_") for name in METRICS)
