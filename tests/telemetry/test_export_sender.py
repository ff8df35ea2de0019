"""The durable OTLP export against real OTLP/HTTP receivers on 127.0.0.1, through a
requests session with the FailoverAdapter over them."""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from resilience_mw import AutoDegradationManager, ServiceNode
from resilience_mw.adapter import FailoverAdapter
from resilience_mw.telemetry.export import MemoryQueue, OTLPExport
from resilience_mw.telemetry.export.sender import partial_rejection
from tests.helpers import wait_for

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
trace_export = pytest.importorskip("opentelemetry.sdk.trace.export")
from resilience_mw.telemetry.export.exporters import DurableLogExporter, DurableSpanExporter  # noqa: E402
from tests.telemetry.receiver import Receiver  # noqa: E402


def session_over(*urls: str, **adapter: object) -> requests.Session:
    session = requests.Session()
    nodes = [ServiceNode(f"c{i}", url, priority=100 - i) for i, url in enumerate(urls)]
    session.mount("http://collector/", FailoverAdapter(nodes, retry_non_idempotent=True, **adapter))  # type: ignore[arg-type]
    return session


def fast(session: requests.Session, **options: object) -> OTLPExport:
    """An export that backs off for milliseconds (the tests' collectors come back fast),
    one batch per post (the tests count posts; merged posts have tests of their own)."""
    defaults: dict[str, object] = {"backoff": 0.02, "max_backoff": 0.1, "timeout": (0.5, 2.0), "merge": 1}
    return OTLPExport(session, "http://collector", **{**defaults, **options})  # type: ignore[arg-type]


def emit(exporter: DurableSpanExporter, names: list[str]) -> None:
    """One batch per name through a real TracerProvider."""
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(trace_export.SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for name in names:
        with tracer.start_as_current_span(name):
            pass


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    a, b = Receiver().start(), Receiver().start()
    yield a, b
    a.stop()
    b.stop()


def test_failover_from_a_dead_collector_to_a_live_one_loses_nothing(receivers: tuple[Receiver, Receiver]) -> None:
    a, b = receivers
    a.stop()  # the primary is down from the start
    export = fast(session_over(a.url, b.url))
    exporter = DurableSpanExporter(export)
    names = [f"span-{i}" for i in range(40)]
    emit(exporter, names)
    assert export.force_flush(10)
    assert sorted(b.span_names()) == sorted(names)  # each once
    exporter.shutdown()


def test_both_collectors_down_then_back_loses_nothing(receivers: tuple[Receiver, Receiver]) -> None:
    a, b = receivers
    a.stop()
    b.stop()
    export = fast(session_over(a.url, b.url))
    exporter = DurableSpanExporter(export)
    names = [f"span-{i}" for i in range(30)]
    emit(exporter, names)
    assert wait_for(lambda: export.backing_off, 5)
    assert export.queue.size()[1] == 30  # all kept
    a.start()  # back on the same port
    assert export.force_flush(10)
    assert sorted(a.span_names()) == sorted(names)
    assert export.queue.dropped == {}
    exporter.shutdown()


def test_a_backlog_is_posted_in_merged_requests_that_lose_nothing(receivers: tuple[Receiver, Receiver]) -> None:
    """Encoded requests concatenated are one request holding all their spans."""
    a, b = receivers
    a.stop()
    b.stop()
    export = fast(session_over(a.url, b.url), merge=16, consumers=1)
    exporter = DurableSpanExporter(export)
    names = [f"span-{i}" for i in range(100)]
    emit(exporter, names)
    assert wait_for(lambda: export.backing_off, 5)
    a.start()
    assert export.force_flush(10)
    assert sorted(a.span_names()) == sorted(names)  # each once
    assert len(a.posts) < 50  # (up to 16 batches a post)
    exporter.shutdown()


def test_a_merged_post_refused_for_good_is_tried_batch_by_batch(receivers: tuple[Receiver, Receiver]) -> None:
    a, b = receivers
    a.stop()
    b.stop()
    export = fast(session_over(a.url), merge=16, consumers=1)
    exporter = DurableSpanExporter(export)
    emit(exporter, ["x", "y", "z"])
    assert wait_for(lambda: export.backing_off, 5)
    a.mode, a.status, a.times = "status", 400, 1  # the merged post is refused, then each is taken
    # (one merged post, however slow the machine: the three were queued before the sender
    # backed off, and each take after a back-off has them all)
    a.start()
    assert export.force_flush(10)
    assert [len(set(a.span_names())), len(a.posts)] == [3, 4]
    assert export.queue.dropped == {}
    exporter.shutdown()


def test_a_collector_answering_503_with_retry_after_is_waited_for(receivers: tuple[Receiver, Receiver]) -> None:
    a, _ = receivers
    a.mode, a.status, a.retry_after, a.times = "status", 503, "1", 1
    export = fast(session_over(a.url))  # back-off alone would retry within 0.1 s
    exporter = DurableSpanExporter(export)
    emit(exporter, ["only"])
    assert export.force_flush(5)
    (_, _, first), (_, _, second) = a.posts
    assert second - first >= 0.9, second - first
    assert a.span_names() == ["only", "only"]  # refused once, then taken
    exporter.shutdown()


def test_a_non_retryable_4xx_drops_the_batch_and_counts_it(receivers: tuple[Receiver, Receiver]) -> None:
    a, _ = receivers
    a.mode, a.status = "status", 400
    export = fast(session_over(a.url))
    exporter = DurableSpanExporter(export)
    emit(exporter, ["x", "y", "z"])
    assert export.force_flush(5)
    assert len(a.posts) == 3  # each posted once, never again
    assert export.queue.dropped == {("traces", "rejected"): 3}
    exporter.shutdown()


def test_a_partial_success_counts_the_rejected_spans_and_is_not_retried(receivers: tuple[Receiver, Receiver]) -> None:
    a, _ = receivers
    a.mode, a.rejected = "partial", 1
    export = fast(session_over(a.url))
    exporter = DurableSpanExporter(export)
    emit(exporter, ["x", "y"])
    assert export.force_flush(5)
    assert len(a.posts) == 2
    assert export.queue.dropped == {("traces", "partial"): 2}
    exporter.shutdown()


def test_partial_rejection_reads_the_response() -> None:
    pb = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")
    resp = pb.ExportTraceServiceResponse()
    resp.partial_success.rejected_spans = 300
    resp.partial_success.error_message = "too old"
    assert partial_rejection(resp.SerializeToString()) == (300, "too old")
    assert partial_rejection(b"") == (0, "")
    assert partial_rejection(b"\xff\xff") == (0, "")


def test_shutdown_with_collectors_down_returns_within_its_timeout() -> None:
    """A collector that accepts connections and never answers (a hung backend)."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(100)
    try:
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        export = OTLPExport(session_over(url), "http://collector", timeout=(1.0, 30.0))
        exporter = DurableSpanExporter(export)
        emit(exporter, [f"s{i}" for i in range(5)])
        time.sleep(0.2)  # a post is in flight
        started = time.monotonic()
        export.shutdown(timeout=1.0)
        assert time.monotonic() - started < 1.5
        assert export.queue.dropped[("traces", "unsent_at_exit")] >= 3  # counted, not silently lost
        assert not exporter.force_flush(100)  # and after shutdown nothing waits
    finally:
        hung.close()


def test_force_flush_with_collectors_down_returns_false_within_its_timeout(receivers: tuple[Receiver, Receiver]) -> None:
    a, _ = receivers
    a.stop()
    export = fast(session_over(a.url))
    exporter = DurableSpanExporter(export)
    emit(exporter, ["x"])
    started = time.monotonic()
    assert not exporter.force_flush(300)
    assert time.monotonic() - started < 1.0
    exporter.shutdown()


def test_the_span_exporter_keeps_the_sdk_contract(receivers: tuple[Receiver, Receiver]) -> None:
    """export() answers at once with SUCCESS once queued, FAILURE when the queue dropped
    it or after shutdown; shutdown is idempotent; it works under a BatchSpanProcessor."""
    a, _ = receivers
    export = fast(session_over(a.url))
    exporter = DurableSpanExporter(export)
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(trace_export.BatchSpanProcessor(exporter, schedule_delay_millis=10))
    tracer = provider.get_tracer("test")
    for i in range(20):
        with tracer.start_as_current_span(f"b{i}"):
            pass
    assert provider.force_flush(5000)
    assert wait_for(lambda: len(a.span_names()) == 20, 5)
    provider.shutdown()
    provider.shutdown()
    big = sdk_trace.TracerProvider().get_tracer("t").start_span("x" * 2000)
    big.end()
    assert exporter.export([big]) == trace_export.SpanExportResult.FAILURE  # after shutdown
    small = DurableSpanExporter(fast(session_over(a.url), queue=MemoryQueue(max_bytes=1024)))
    assert small.export([big]) == trace_export.SpanExportResult.FAILURE  # dropped: too large
    assert small.export_to.queue.dropped == {("traces", "too_large"): 1}
    small.shutdown()


@pytest.mark.filterwarnings("ignore:.*LoggingHandler.*:DeprecationWarning")
def test_telemetry_a_turned_off_feature_owns_is_shed(receivers: tuple[Receiver, Receiver]) -> None:
    a, _ = receivers
    degradation = AutoDegradationManager()
    degradation.force_level("Level2")
    export = fast(session_over(a.url), degradation=degradation)
    spans = DurableSpanExporter(export)
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(trace_export.SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("kept"):
        pass
    with tracer.start_as_current_span("analytics", attributes={"resilience_mw.feature": "Analytics"}):
        pass
    logs_mod = pytest.importorskip("opentelemetry.sdk._logs")
    logs_export = pytest.importorskip("opentelemetry.sdk._logs.export")
    logger_provider = logs_mod.LoggerProvider()
    logger_provider.add_log_record_processor(logs_export.SimpleLogRecordProcessor(DurableLogExporter(export)))
    handler = logs_mod.LoggingHandler(level=logging.DEBUG, logger_provider=logger_provider)
    logger = logging.getLogger("tests.export.shed")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.debug("detail")
        logger.warning("trouble")
    finally:
        logger.removeHandler(handler)
    assert export.force_flush(5)
    assert a.span_names() == ["kept"]
    assert a.log_bodies() == ["trouble"]
    assert export.queue.dropped == {("traces", "shed"): 1, ("logs", "shed"): 1}
    export.shutdown()


def test_log_batches_get_at_most_log_share_of_the_queue_while_degraded() -> None:
    degradation = AutoDegradationManager()
    export = OTLPExport(session_over("http://127.0.0.1:9"), "http://collector", queue=MemoryQueue(max_bytes=4096),
                        degradation=degradation, log_share=0.5)
    export.start = lambda: None  # type: ignore[method-assign]  # (nothing posted: the queue alone)
    export._threads = []
    for _ in range(3):
        assert export.put("logs", b"l" * 1000, 1)
    degradation.force_level("Level1")
    assert not export.put("logs", b"l" * 1000, 1)  # 3000/4096 > 0.5: room kept for the rest
    assert export.put("traces", b"t" * 1000, 1)
    assert export.queue.dropped == Counter({("logs", "shed"): 1})


def test_metrics_count_what_the_export_does(receivers: tuple[Receiver, Receiver]) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest

    from resilience_mw.telemetry.metrics import Metrics, register

    a, _ = receivers
    a.mode, a.status, a.times = "status", 400, 1
    export = fast(session_over(a.url))
    metrics = Metrics(prometheus=True).watch(export=export)
    exporter = DurableSpanExporter(export)
    emit(exporter, ["refused", "taken"])
    assert export.force_flush(5)
    export.shutdown()
    registry = CollectorRegistry()
    register(registry)
    text = generate_latest(registry).decode()
    assert 'resilience_telemetry_dropped_total{reason="rejected",signal="traces"}' in text
    assert 'resilience_telemetry_sent_total{signal="traces"}' in text
    assert "resilience_telemetry_send_seconds_count" in text
    assert "resilience_telemetry_queue_bytes 0.0" in text
    metrics.close()
