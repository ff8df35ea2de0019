"""Telemetry that degrades by level: an OpenTelemetry sampler whose ratio follows the
degradation level (the ``[otel]`` extra).

The ported design's home is an OTLP pipeline under pressure: when the service degrades, its
telemetry should shrink with it. :class:`LevelSampler` keeps a share of traces that
depends on the level in force (by default everything at Normal, half at Level1, a tenth
at Level2, one in a hundred at Level3 and none at Emergency), decided by the trace id,
so a trace is kept or dropped whole, in every process, and the same trace gets the
same decision at the same level. Spans that declare a feature
(``resilience_mw.feature`` attribute, e.g. ``"Analytics"``) are dropped while that
feature is off. Compose it under ``ParentBased`` so child spans follow their root::

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased

    provider = TracerProvider(sampler=ParentBased(LevelSampler(manager)))

Its log-side companion is :class:`~resilience_mw.telemetry.logs.DetailedLogsFilter`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, get_current_span
from opentelemetry.util.types import Attributes

from .. import _validate as v
from ..degradation.manager import AutoDegradationManager
from ..exceptions import ConfigError
from ..model import DegradationLevel, Feature, parse_level

__all__ = ["DEFAULT_RATIOS", "FEATURE_ATTRIBUTE", "LevelSampler"]

#: share of traces kept at each level, unless configured
DEFAULT_RATIOS: Mapping[DegradationLevel, float] = {
    DegradationLevel.Normal: 1.0,
    DegradationLevel.Level1: 0.5,
    DegradationLevel.Level2: 0.1,
    DegradationLevel.Level3: 0.01,
    DegradationLevel.Emergency: 0.0,
}
#: span attribute naming the feature a span belongs to
FEATURE_ATTRIBUTE = "resilience_mw.feature"

_TRACE_ID_LIMIT = (1 << 64) - 1
#: the features by name (a span attribute is a string)
_FEATURES: Mapping[str, Feature] = {f.name: f for f in Feature}


class LevelSampler(Sampler):
    """Keeps ``ratios[level]`` of traces, by trace id; see the module docstring.

    :param manager: the degradation manager whose level decides.
    :param ratios: share kept per level (levels by member, name or value); levels not
        given keep their :data:`DEFAULT_RATIOS` value.
    """

    def __init__(
        self, manager: AutoDegradationManager, ratios: Mapping[Any, float] | None = None
    ) -> None:
        if not isinstance(manager, AutoDegradationManager):
            raise ConfigError("manager", manager, "must be an AutoDegradationManager")
        merged = dict(DEFAULT_RATIOS)
        for key, ratio in (ratios or {}).items():
            level = parse_level(key, "ratios")
            merged[level] = v.number(ge=0, le=1)(f"ratios[{level.name}]", ratio)
        self.manager = manager
        self.ratios = merged
        # one bound per level, so a decision is one compare
        self._bounds = [round(merged[level] * (_TRACE_ID_LIMIT + 1)) for level in DegradationLevel]

    def should_sample(  # noqa: PLR0917 - OpenTelemetry's Sampler signature
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        manager = self.manager
        level = manager.level
        if attributes:
            feature = attributes.get(FEATURE_ATTRIBUTE)
            if isinstance(feature, str) and not _feature_on(manager, feature, level):
                return SamplingResult(Decision.DROP, None, _state(parent_context, trace_state))
        keep = trace_id & _TRACE_ID_LIMIT < self._bounds[level]
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE if keep else Decision.DROP,
            attributes if keep else None,
            _state(parent_context, trace_state),
        )

    def get_description(self) -> str:
        shares = ",".join(f"{level.name}={self.ratios[level]:g}" for level in DegradationLevel)
        return f"LevelSampler{{{shares}}}"


def _feature_on(manager: AutoDegradationManager, name: str, level: DegradationLevel) -> bool:
    try:
        return manager.features.is_available(_FEATURES.get(name, name), level)
    except ConfigError:
        return True  # a feature the table does not know: not ours to drop


def _state(parent_context: Context | None, trace_state: Any) -> Any:
    return trace_state if trace_state is not None else get_current_span(parent_context).get_span_context().trace_state

