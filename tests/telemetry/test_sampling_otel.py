"""LevelSampler: the share of traces kept follows the level, decided by trace id."""

from __future__ import annotations

import random

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased

from resilience_mw import AutoDegradationManager, ConfigError
from resilience_mw.telemetry.otel import FEATURE_ATTRIBUTE, LevelSampler

_RNG = random.Random(7)
IDS = [_RNG.getrandbits(128) for _ in range(20_000)]


def kept(sampler: LevelSampler, attributes: dict[str, str] | None = None) -> set[int]:
    return {t for t in IDS if sampler.should_sample(None, t, "span", attributes=attributes).decision is Decision.RECORD_AND_SAMPLE}


def test_everything_at_normal_and_the_configured_share_at_each_level() -> None:
    manager = AutoDegradationManager()
    sampler = LevelSampler(manager, {"Level1": 0.5, "Level2": 0.2, "Level3": 0.0})
    assert kept(sampler) == set(IDS)
    shares = {}
    decisions = {}
    for level in ("Level1", "Level2", "Level3"):
        manager.force_level(level)
        decisions[level] = kept(sampler)
        shares[level] = len(decisions[level]) / len(IDS)
    assert shares["Level1"] == pytest.approx(0.5, abs=0.02)
    assert shares["Level2"] == pytest.approx(0.2, abs=0.02)
    assert shares["Level3"] == 0
    assert decisions["Level2"] <= decisions["Level1"]  # a trace kept at 20 % is kept at 50 %
    manager.force_level("Level1")
    assert kept(sampler) == decisions["Level1"]  # same trace, same decision


def test_spans_of_a_switched_off_feature_are_dropped() -> None:
    manager = AutoDegradationManager()
    sampler = LevelSampler(manager)
    assert kept(sampler, {FEATURE_ATTRIBUTE: "Analytics"}) == set(IDS)
    manager.force_level("Level1")  # Analytics is off from Level1
    assert kept(sampler, {FEATURE_ATTRIBUTE: "Analytics"}) == set()
    assert len(kept(sampler, {FEATURE_ATTRIBUTE: "CoreFunction"})) > 0


def test_whole_traces_under_parent_based() -> None:
    manager = AutoDegradationManager()
    manager.force_level("Level2")
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(LevelSampler(manager)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for _ in range(300):
        with tracer.start_as_current_span("root"), tracer.start_as_current_span("child"):
            pass
    finished = exporter.get_finished_spans()
    roots = [s for s in finished if s.name == "root"]
    children = [s for s in finished if s.name == "child"]
    assert 0 < len(roots) < 300 and len(children) == len(roots)  # kept or dropped whole
    assert {s.context.trace_id for s in roots} == {s.context.trace_id for s in children}


def test_bad_ratios_are_config_errors() -> None:
    with pytest.raises(ConfigError) as info:
        LevelSampler(AutoDegradationManager(), {"Level2": 1.5})
    assert info.value.field == "ratios[Level2]"
    with pytest.raises(ConfigError):
        LevelSampler(AutoDegradationManager(), {"Level9": 0.5})
