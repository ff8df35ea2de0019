"""The FailoverAdapter as the session of the real OTLP/HTTP span exporter."""

from __future__ import annotations

import pytest
import requests

from resilience_mw import ServiceNode
from resilience_mw.adapter import FailoverAdapter
from tests.nodes import NodeServer

otlp = pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
trace_pb2 = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")


def span_names(receiver: NodeServer) -> list[str]:
    names = []
    for body in receiver.bodies:
        req = trace_pb2.ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                names.extend(span.name for span in ss.spans)
    return names


def test_killing_one_receiver_loses_no_span(node_factory: object) -> None:
    a = NodeServer("receiver-a").start()
    b = NodeServer("receiver-b").start()
    try:
        session = requests.Session()
        session.mount(
            "http://collector/",
            FailoverAdapter(
                [ServiceNode("a", a.url, priority=10), ServiceNode("b", b.url, priority=5)],
                retry_non_idempotent=True,  # OTLP tolerates a duplicate; losing spans is worse
            ),
        )
        exporter = otlp.OTLPSpanExporter(endpoint="http://collector/v1/traces", session=session, timeout=2)
        provider = sdk_trace.TracerProvider()
        provider.add_span_processor(export.SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("resilience_mw.test")
        for i in range(60):
            with tracer.start_as_current_span(f"span-{i}"):
                pass
            if i == 20:
                a.stop()  # the primary receiver dies mid-stream
        provider.shutdown()
        got_a, got_b = span_names(a), span_names(b)
        assert len(got_a) == 21 and got_b  # both served
        assert sorted(got_a + got_b) == sorted(f"span-{i}" for i in range(60))  # none lost, none twice
    finally:
        a.stop()
        b.stop()


def test_a_shed_request_gets_a_span_with_the_wsgi_middleware_outside() -> None:
    """The guide's ordering (docs/guide/telemetry.rst): the extension first, OpenTelemetry's WSGI middleware around
    it; a request the library sheds is still traced, with its 503."""
    wsgi = pytest.importorskip("opentelemetry.instrumentation.wsgi")
    from flask import Flask

    from resilience_mw.flask_ext import Resilience
    from resilience_mw.testing import force_level
    from tests.helpers import serving

    memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    spans = memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(spans))
    app = Flask("traced")
    Resilience(app, start="off")
    app.wsgi_app = wsgi.OpenTelemetryMiddleware(app.wsgi_app, tracer_provider=provider)  # type: ignore[method-assign]
    app.add_url_rule("/page", "page", lambda: "ok")
    with serving(app) as url:
        assert requests.get(f"{url}/page", timeout=5).status_code == 200
        force_level(app, "Emergency")
        assert requests.get(f"{url}/page", timeout=5).status_code == 503
    statuses = [s.attributes.get("http.status_code", s.attributes.get("http.response.status_code")) for s in spans.get_finished_spans()]
    assert statuses == [200, 503], statuses
