"""The durable OTLP/HTTP export: telemetry queued in memory or on disk, posted by
background threads through the failover adapter, never lost while the queue has room.

* :mod:`.queue`: :class:`ExportQueue` (the interface) and :class:`MemoryQueue`;
* :mod:`._disk`: :class:`DiskQueue`, one SQLite file shared by a host's workers;
* :mod:`.sender`: :class:`OTLPExport`, the queue and its sender threads;
* :mod:`.exporters`: the OpenTelemetry SDK exporters (``[otel]`` extra), loaded on
  first use: :class:`DurableSpanExporter`, :class:`DurableLogExporter`,
  :class:`DurableMetricExporter`.

Guide: ``docs/guide/telemetry.rst`` (*Durable OTLP export*).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._imports import lazy
from ._disk import DiskQueue
from .queue import REASONS, SIGNALS, WHEN_FULL, Batch, ExportQueue, MemoryQueue
from .sender import OTLPExport

if TYPE_CHECKING:
    from .exporters import DurableLogExporter, DurableMetricExporter, DurableSpanExporter

__getattr__ = lazy(
    __name__,
    {
        "DurableSpanExporter": ".exporters",
        "DurableLogExporter": ".exporters",
        "DurableMetricExporter": ".exporters",
    },
)

__all__ = [
    "REASONS",
    "SIGNALS",
    "WHEN_FULL",
    "Batch",
    "DiskQueue",
    "DurableLogExporter",
    "DurableMetricExporter",
    "DurableSpanExporter",
    "ExportQueue",
    "MemoryQueue",
    "OTLPExport",
]
