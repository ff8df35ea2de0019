"""The durable exporters against the OpenTelemetry SDK's exporter contract, where it
applies to an exporter that answers ``SUCCESS`` once a batch is queued (not once a
collector took it).

**Run from the SDK's own tests** (the sdist of the installed ``opentelemetry-sdk``,
fetched by :func:`tests.system.compat.harness.sources`), with our exporter in place of
theirs: ``tests/shared_internal/test_batch_processor.py::TestBatchProcessor``, the
contract between ``BatchSpanProcessor``/``BatchLogRecordProcessor`` and an exporter
(export once the batch size or the schedule delay is reached, everything flushed by
``shutdown()`` and nothing exported after it, ``force_flush()`` exports what is
pending, a fork exports only its own items, the processor is garbage collected, and
``shutdown()`` returns within its timeout). Each test's ``Mock()`` exporter is a
``Mock(wraps=...)`` of our ``DurableSpanExporter`` or ``DurableLogExporter`` posting to
a real receiver on 127.0.0.1, so its call assertions hold for ours, and afterwards
every item our exporter accepted must have reached the receiver. The SDK's test span has
no span context, which no span the SDK makes lacks and the OTLP encoder cannot take:
it is given one. Not run: ``test_shutdown_allows_1_export_to_finish`` (its exporter is
a hand-written one that sleeps in ``export()``: it tests the processor, with no exporter
to substitute).

**Restated here** (the OTLP/HTTP exporter's tests in
``opentelemetry-exporter-otlp-proto-http``'s ``tests/test_proto_span_exporter.py``
and ``test_proto_log_exporter.py``, which fake sockets with mocket and reach into the
SDK exporter's ``_client``; their exporter-agnostic statements, with real sockets):
``test_export_single_span`` (``SUCCESS``; the body posted is ``encode_spans(spans)``),
``test_export_after_shutdown`` (``FAILURE``, nothing posted), ``test_shutdown_idempotent``,
``test_force_flush`` (``True`` before and after an export), ``test_export_encoding_failure``
(``FAILURE``, logged at ERROR, nothing posted), ``test_export_retryable_status_codes``
and ``test_export_connection_error`` (taken after 429/502/503/504 or a reset), and
``test_shutdown_interrupts_retry_backoff`` (``shutdown()`` returns at once while the
collector answers 503).

**Do not apply**, by design: ``test_export_non_retryable_status_codes`` and
``test_export_max_retries`` expect ``FAILURE`` from ``export()``; ours answered
``SUCCESS`` when the batch was queued, and drops it later (counted ``rejected``), or
retries it until ``max_age`` instead of six times (tests/telemetry/test_export_sender.py
tests both); the configuration tests (``OTEL_EXPORTER_OTLP_*`` variables, endpoint,
headers, compression, certificates, transports, credential providers), since ours takes
a ``requests`` session and the ``RESILIENCE_OTLP_*`` settings; the SDK's own exporter
metrics (``otel.sdk.exporter.*``; ours are ``resilience_telemetry_*``);
``test_shutdown_closes_transport`` (the session is the caller's); the request-size
limit (``max_request_size``; ours is the queue's ``too_large`` at ``max_bytes``)."""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import requests

from resilience_mw import ServiceNode
from resilience_mw.adapter import FailoverAdapter
from resilience_mw.telemetry.export import MemoryQueue, OTLPExport
from tests.helpers import wait_for

pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("opentelemetry.exporter.otlp.proto.common")
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilience_mw.telemetry.export.exporters import DurableLogExporter, DurableSpanExporter
from tests.system.compat.harness import OTEL_SDK, sources
from tests.telemetry.receiver import Receiver

pytestmark = [pytest.mark.compat, pytest.mark.slow]


def _sdk_tests(relative: str, name: str) -> Any:
    """A module of the SDK's own tests, loaded from its sdist under ``name`` (the sdist's
    ``tests`` package would clash with ours)."""
    path = sources(OTEL_SDK) / "tests" / relative
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    start_method = multiprocessing.get_start_method(allow_none=True)
    # (it sets the start method to fork on import: only where its fork test runs, below)
    with mock.patch.object(multiprocessing, "set_start_method"):
        spec.loader.exec_module(module)
    module.START_METHOD = start_method
    return module


batch_tests = _sdk_tests("shared_internal/test_batch_processor.py", "otel_sdk_tests_batch_processor")
# (a span as the SDK makes them: with a context, which the OTLP encoder needs)
batch_tests.BASIC_SPAN._context = trace_api.SpanContext(0x1F, 0x2E, is_remote=False)


def export_to(url: str, **options: Any) -> OTLPExport:
    session = requests.Session()
    session.mount("http://collector/", FailoverAdapter([ServiceNode("c", url)], retry_non_idempotent=True))
    defaults: dict[str, Any] = {"backoff": 0.02, "max_backoff": 0.1, "timeout": (0.5, 2.0), "queue": MemoryQueue()}
    return OTLPExport(session, "http://collector", **{**defaults, **options})


class _Counting:
    """Counts the items our exporter accepted (``SUCCESS``)."""

    accepted = 0

    def export(self, batch: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        result = super().export(batch, *args, **kwargs)  # type: ignore[misc]
        if result.name == "SUCCESS":
            type(self).accepted += len(batch)
        return result


class CountingSpans(_Counting, DurableSpanExporter):
    pass


class CountingLogs(_Counting, DurableLogExporter):
    pass


class TestBatchProcessor(batch_tests.TestBatchProcessor):  # type: ignore[misc,name-defined]
    """The SDK's ``TestBatchProcessor`` (parametrised over spans and logs) with our exporter."""

    test_shutdown_allows_1_export_to_finish = None  # (its own sleeping exporter: nothing to substitute)


@pytest.fixture(autouse=True)
def our_exporter_in_place_of_theirs(request: pytest.FixtureRequest) -> Iterator[None]:
    """For the SDK's tests: ``Mock()`` is our exporter (posting to a real receiver), and
    the start method is fork in its fork test; afterwards, what ours accepted was sent."""
    if request.cls is not TestBatchProcessor:
        yield
        return
    logs = request.node.callspec.params["batch_processor_class"] is BatchLogRecordProcessor
    kind = CountingLogs if logs else CountingSpans
    kind.accepted = 0
    made: list[tuple[OTLPExport, Any]] = []

    def ours(*args: Any, **kwargs: Any) -> mock.Mock:
        assert not args and not kwargs
        export = export_to(receiver.url)
        exporter = kind(export)
        made.append((export, exporter))
        return mock.Mock(wraps=exporter)

    with Receiver() as receiver, mock.patch.object(batch_tests, "Mock", ours):
        if "fork" in request.node.name:
            multiprocessing.set_start_method("fork", force=True)
        try:
            yield
        finally:
            multiprocessing.set_start_method(batch_tests.START_METHOD, force=True)
        assert made, "the test made no exporter"
        # (the processor's shutdown shut ours down: a memory queue is drained first)
        for export, _ in made:
            export.force_flush(5)
            export.shutdown(5)
        received = len(receiver.log_bodies()) if logs else len(receiver.span_names())
        if "fork" in request.node.name:  # (a forked child's items may have been sent too, from its own queue)
            assert received >= kind.accepted, (received, kind.accepted)
        else:
            assert received == kind.accepted, (received, kind.accepted)
        assert all(export.queue.dropped == {} for export, _ in made), [e.queue.dropped for e, _ in made]


# ------------------------------------------------------------------ restated


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def finished_spans(*names: str) -> list[Any]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for name in names:
        with provider.get_tracer(__name__).start_as_current_span(name):
            pass
    return list(memory.get_finished_spans())


def test_export_single_span(receiver: Receiver) -> None:
    exporter = DurableSpanExporter(export_to(receiver.url))
    spans = finished_spans("my-span")
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert exporter.force_flush(5000)
    (path, body, _), = receiver.posts
    assert path == "/v1/traces"
    assert ExportTraceServiceRequest.FromString(body) == encode_spans(spans)
    exporter.shutdown()


def test_export_after_shutdown(receiver: Receiver) -> None:
    exporter = DurableSpanExporter(export_to(receiver.url))
    exporter.shutdown()
    assert exporter.export(finished_spans("late")) == SpanExportResult.FAILURE
    time.sleep(0.2)  # (nothing is on its way either)
    assert receiver.posts == []


def test_shutdown_idempotent(receiver: Receiver) -> None:
    exporter = DurableSpanExporter(export_to(receiver.url))
    exporter.shutdown()
    exporter.shutdown()  # no error, no wait


def test_force_flush(receiver: Receiver) -> None:
    exporter = DurableSpanExporter(export_to(receiver.url))
    assert exporter.force_flush()
    exporter.export(finished_spans("flushed"))
    assert exporter.force_flush()
    assert receiver.span_names() == ["flushed"]
    exporter.shutdown()


def test_export_encoding_failure(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    export = export_to(receiver.url)
    exporter = DurableSpanExporter(export)
    with mock.patch("resilience_mw.telemetry.export.exporters.encode_spans", side_effect=ValueError("boom")), \
            caplog.at_level(logging.ERROR, logger="resilience_mw.telemetry.export.exporters"):
        assert exporter.export(finished_spans("bad")) == SpanExportResult.FAILURE
    assert "OTLP encoder failed" in caplog.text
    assert export.queue.dropped == {("traces", "unencodable"): 1}
    assert exporter.force_flush(1000) and receiver.posts == []
    exporter.shutdown()


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_export_retryable_status_codes(receiver: Receiver, status: int) -> None:
    receiver.mode, receiver.status, receiver.times = "status", status, 1
    exporter = DurableSpanExporter(export_to(receiver.url))
    assert exporter.export(finished_spans("again")) == SpanExportResult.SUCCESS
    assert exporter.force_flush(5000)
    assert len(receiver.posts) == 2 and receiver.span_names() == ["again", "again"]  # refused, then taken
    exporter.shutdown()


def test_export_connection_error(receiver: Receiver) -> None:
    """The collector resets the connection to the first post: the batch is taken on the next."""
    reset = threading.Event()
    answer = receiver.answer

    def reset_once(path: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
        if not reset.is_set():
            reset.set()
            raise ConnectionResetError("simulated reset")  # (the handler dies: the connection drops)
        return answer(path, body, headers)

    receiver.answer = reset_once  # type: ignore[method-assign]
    exporter = DurableSpanExporter(export_to(receiver.url))
    assert exporter.export(finished_spans("after-reset")) == SpanExportResult.SUCCESS
    assert exporter.force_flush(5000)
    assert reset.is_set() and receiver.span_names() == ["after-reset"]
    exporter.shutdown()


def test_shutdown_interrupts_retry_backoff(receiver: Receiver) -> None:
    receiver.mode, receiver.status = "status", 503
    export = export_to(receiver.url, backoff=5.0, max_backoff=5.0)
    exporter = DurableSpanExporter(export)
    before = time.monotonic()
    assert exporter.export(finished_spans("refused")) == SpanExportResult.SUCCESS  # (queued)
    assert wait_for(lambda: export.backing_off, 5)
    exporter.shutdown()
    assert time.monotonic() - before < 2.0
    assert export.queue.dropped == {("traces", "unsent_at_exit"): 1}  # counted, not silently lost


def test_the_sdk_tests_were_found() -> None:
    """The SDK's tests ran from its sdist here, for both kinds of processor."""
    names = [n for n in dir(TestBatchProcessor) if n.startswith("test_")]
    assert len(names) >= 7, names
    assert Path(batch_tests.__file__).is_relative_to(sources(OTEL_SDK))
