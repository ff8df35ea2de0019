"""Telemetry: what the library reports about itself.

* :mod:`.metrics`: :class:`Metrics` (Prometheus, OpenTelemetry) from the library's signals;
* :mod:`.otel`: :class:`LevelSampler`, traces thinned as the level rises;
* :mod:`.logs`: :class:`DetailedLogsFilter`;
* :mod:`.alerts`: :class:`AlertRules`;
* :mod:`.readiness`: the ``/readyz`` document.

The exporters' modules (which load ``prometheus_client`` or OpenTelemetry) are imported
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._imports import lazy
from .alerts import AlertRules
from .logs import DetailedLogsFilter
from .readiness import readiness_document

if TYPE_CHECKING:
    from .metrics import Metrics, mark_process_dead
    from .otel import LevelSampler

__getattr__ = lazy(
    __name__, {"Metrics": ".metrics", "mark_process_dead": ".metrics", "LevelSampler": ".otel"}
)

__all__ = ["AlertRules", "DetailedLogsFilter", "LevelSampler", "Metrics", "mark_process_dead", "readiness_document"]
