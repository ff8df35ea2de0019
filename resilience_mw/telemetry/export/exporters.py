"""OpenTelemetry SDK exporters that queue instead of posting (the ``[otel]`` extra).

Each encodes its batch with the official OTLP encoder
(``opentelemetry-exporter-otlp-proto-common``), puts the bytes in an
:class:`~resilience_mw.telemetry.export.sender.OTLPExport` and returns at once; the
export's threads post them. Use them where the SDK's OTLP/HTTP exporters would go::

    export = OTLPExport(session, "http://collector")
    provider.add_span_processor(BatchSpanProcessor(DurableSpanExporter(export)))
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(DurableLogExporter(export)))
    reader = PeriodicExportingMetricReader(DurableMetricExporter(export))

``export()`` answers ``SUCCESS`` once the batch is queued (``FAILURE`` if the queue
dropped it: it is counted there), so the SDK's processor never waits on a collector.
The three exporters may share one export; the export stops when the last of them is
shut down. With a degradation manager on the export, what the feature table turns off
is dropped here (counted ``shed``): log records below INFO while ``DetailedLogs`` is off
(from Level2), spans whose ``resilience_mw.feature`` attribute names a feature that is off.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

try:  # opentelemetry-sdk 1.35 and later
    from opentelemetry.sdk._logs.export import LogRecordExporter as _LogExporter
    from opentelemetry.sdk._logs.export import LogRecordExportResult as _LogResult
except ImportError:  # pragma: no cover - older SDKs
    from opentelemetry.sdk._logs.export import LogExporter as _LogExporter  # type: ignore[no-redef,assignment,unused-ignore]
    from opentelemetry.sdk._logs.export import LogExportResult as _LogResult  # type: ignore[no-redef,assignment,unused-ignore]

from ...model import Feature
from ..otel import FEATURE_ATTRIBUTE
from .sender import OTLPExport

__all__ = ["DurableLogExporter", "DurableMetricExporter", "DurableSpanExporter"]

log = logging.getLogger(__name__)

#: OpenTelemetry's severity number of INFO: below it a record is a detailed log
_INFO = 9


def _queue(export: OTLPExport, signal: str, encode: Any, items: int) -> bool:
    """Encode and queue one batch; ``False`` if it was dropped."""
    if not items:
        return True
    try:
        body = encode().SerializeToString()
    except Exception:  # a record the encoder cannot take must not break the app
        log.exception("OTLP encoder failed on a batch of %d %s items: dropped", items, signal)
        export.queue.count(signal, "unencodable", items)
        return False
    return export.put(signal, body, items)


class _Attached:
    """What the three exporters share: they hold the export open from construction to
    their (idempotent) shutdown, and flush through it."""

    def _attach(self, export: OTLPExport) -> None:
        if not isinstance(export, OTLPExport):
            raise TypeError(f"export must be an OTLPExport, not {type(export).__name__}")
        self.export_to = export
        export.attach()
        self._shut = False

    def _detach(self, timeout: float = 5.0) -> None:
        if not self._shut:
            self._shut = True
            self.export_to.detach(timeout)

    def force_flush(self, timeout_millis: float = 30000) -> bool:
        return self.export_to.force_flush(timeout_millis / 1000)


class DurableSpanExporter(_Attached, SpanExporter):
    """A ``SpanExporter`` that queues OTLP batches in ``export``; see the module docstring."""

    def __init__(self, export: OTLPExport) -> None:
        self._attach(export)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut:
            return SpanExportResult.FAILURE
        kept = [s for s in spans if self._wanted(s)]
        self.export_to.shed("traces", len(spans) - len(kept))
        ok = _queue(self.export_to, "traces", lambda: encode_spans(kept), len(kept))
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def _wanted(self, span: ReadableSpan) -> bool:
        feature = (span.attributes or {}).get(FEATURE_ATTRIBUTE)
        if not isinstance(feature, str):
            return True
        return self.export_to.feature_on(Feature.__members__.get(feature, feature))

    def shutdown(self) -> None:
        self._detach()


class DurableLogExporter(_Attached, _LogExporter):
    """A log record exporter that queues OTLP batches in ``export``; see the module docstring."""

    def __init__(self, export: OTLPExport) -> None:
        self._attach(export)

    def export(self, batch: Sequence[Any]) -> Any:
        if self._shut:
            return _LogResult.FAILURE
        kept = batch
        if not self.export_to.feature_on(Feature.DetailedLogs):
            kept = [r for r in batch if _severity(r) >= _INFO]
            self.export_to.shed("logs", len(batch) - len(kept))
        ok = _queue(self.export_to, "logs", lambda: encode_logs(kept), len(kept))
        return _LogResult.SUCCESS if ok else _LogResult.FAILURE

    def shutdown(self) -> None:
        self._detach()


def _severity(record: Any) -> int:
    number = getattr(getattr(record, "log_record", record), "severity_number", None)
    return int(getattr(number, "value", _INFO)) if number is not None else _INFO


class DurableMetricExporter(_Attached, MetricExporter):
    """A ``MetricExporter`` that queues OTLP batches in ``export``; see the module docstring.
    ``preferred_temporality`` and ``preferred_aggregation`` are the SDK's."""

    def __init__(self, export: OTLPExport, preferred_temporality: dict[type, Any] | None = None,
                 preferred_aggregation: dict[type, Any] | None = None) -> None:
        if not isinstance(export, OTLPExport):  # (before the SDK's own set-up)
            raise TypeError(f"export must be an OTLPExport, not {type(export).__name__}")
        MetricExporter.__init__(
            self, preferred_temporality=preferred_temporality, preferred_aggregation=preferred_aggregation
        )
        self._attach(export)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        if self._shut:
            return MetricExportResult.FAILURE
        points = sum(
            len(getattr(metric.data, "data_points", ()))
            for rm in metrics_data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        )
        ok = _queue(self.export_to, "metrics", lambda: encode_metrics(metrics_data), points)
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._detach(timeout_millis / 1000)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return super().force_flush(timeout_millis)
