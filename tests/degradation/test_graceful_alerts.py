"""GracefulDegradation rules and AlertRules."""

from __future__ import annotations

from typing import Any

import pytest

from resilience_mw import DegradationLevel, FailoverManager, Feature, ServiceNode, signals
from resilience_mw.config import DegradationConfig
from resilience_mw.degradation import AutoDegradationManager
from resilience_mw.degradation.fallback import GracefulDegradation
from resilience_mw.degradation.load import Sample
from resilience_mw.telemetry.alerts import AlertRules
from resilience_mw.testing import FakeClock

L = DegradationLevel


@pytest.fixture
def manager(clock: FakeClock) -> AutoDegradationManager:
    return AutoDegradationManager(
        DegradationConfig(cooldown_seconds=0), sampler=lambda: Sample(1, 1), clock=clock
    )


def boom() -> str:
    raise RuntimeError("primary failed")


def test_primary_failure_falls_back_at_normal_and_is_recorded(manager: AutoDegradationManager) -> None:
    g = GracefulDegradation(manager)
    assert g.execute(boom, lambda: "fallback") == "fallback"
    assert manager.window.counts() == (1, 1)


def test_strict_rule_error_propagates_below_level2(manager: AutoDegradationManager) -> None:
    g = GracefulDegradation(manager, fallback_on_error_at="Level2")
    manager.force_level(L.Level1)
    with pytest.raises(RuntimeError):
        g.execute(boom, lambda: "fallback")
    assert manager.window.counts() == (1, 1)


def test_level2_primary_failure_uses_fallback(manager: AutoDegradationManager) -> None:
    g = GracefulDegradation(manager)
    manager.force_level(L.Level2)
    assert g.execute(boom, lambda: "Fallback result") == "Fallback result"
    assert g.execute(lambda: "primary", lambda: "fallback") == "primary"
    assert manager.window.counts() == (2, 1)


def test_level3_skips_primary(manager: AutoDegradationManager) -> None:
    g = GracefulDegradation(manager)
    manager.force_level(L.Level3)
    called = []
    assert g.execute(lambda: called.append(1) or "p", lambda: "fb") == "fb"  # type: ignore[func-returns-value]
    assert not called


def test_levels_are_configurable(manager: AutoDegradationManager) -> None:
    g = GracefulDegradation(manager, skip_primary_at=L.Emergency, fallback_on_error_at=L.Level1)
    manager.force_level(L.Level3)
    assert g.execute(lambda: "primary", lambda: "fb") == "primary"
    manager.force_level(L.Level1)
    assert g.execute(boom, lambda: "fb") == "fb"


def test_execute_if_available(manager: AutoDegradationManager) -> None:
    g = GracefulDegradation(manager)
    assert g.execute_if_available(Feature.Analytics, lambda: 42) == 42
    manager.force_level(L.Level1)
    assert g.execute_if_available(Feature.Analytics, lambda: 42) is None
    assert g.execute_if_available(Feature.CoreFunction, lambda: 42) == 42


def test_failover_rate_alert_is_rate_limited(clock: FakeClock) -> None:
    alerts: list[dict[str, Any]] = []
    receiver = lambda sender, **kw: alerts.append(kw)  # noqa: E731
    signals.alert.connect(receiver)
    nodes = [ServiceNode("a", "http://a", priority=10), ServiceNode("b", "http://b", priority=5)]
    fm = FailoverManager(nodes, failure_threshold=1000)
    rules = AlertRules(
        failover_threshold=5, failover_window=60, min_interval=300, failover_sender=fm, clock=clock
    )

    def op(node: ServiceNode) -> str:
        if node.id == "a":
            raise OSError("down")
        return "ok"

    try:
        for _ in range(5):
            fm.execute_with_failover(op)
        assert alerts == []  # 5 is not more than 5
        fm.execute_with_failover(op)
        assert [a["kind"] for a in alerts] == ["failover-rate"]
        for _ in range(20):
            fm.execute_with_failover(op)
        assert len(alerts) == 1  # rate-limited
        clock.advance(301)
        fm.execute_with_failover(op)
        assert len(alerts) == 1  # window was emptied by the wait: only 1 failover in it now
        for _ in range(5):
            fm.execute_with_failover(op)
        assert len(alerts) == 2
    finally:
        rules.close()
        signals.alert.disconnect(receiver)


def test_degradation_alert_from_level2(manager: AutoDegradationManager, clock: FakeClock) -> None:
    alerts: list[dict[str, Any]] = []
    receiver = lambda sender, **kw: alerts.append(kw)  # noqa: E731
    signals.alert.connect(receiver)
    rules = AlertRules(level_sender=manager, clock=clock, min_interval=60)
    try:
        manager.force_level(L.Level1)
        assert alerts == []
        manager.force_level(L.Level2)
        manager.force_level(L.Level3)  # worse: alerted despite the rate limit
        manager.force_level(L.Level2)
        manager.force_level(L.Level3)  # flapping back to an alerted level: suppressed
        assert [a["message"] for a in alerts] == ["system degraded to Level2", "system degraded to Level3"]
        assert rules.fired[-1]["details"]["new"] == "Level3"
    finally:
        rules.close()
        signals.alert.disconnect(receiver)


def test_detailed_logs_filter_on_a_handler(manager: AutoDegradationManager) -> None:
    import io
    import logging

    from resilience_mw import DetailedLogsFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(DetailedLogsFilter(manager))
    log = logging.getLogger("app.child.module")  # a child logger: handler filters still apply
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        log.debug("detail 1")
        manager.force_level(L.Level2)
        log.debug("detail 2")
        log.warning("still shown")
        manager.clear_override()
        log.debug("detail 3")
    finally:
        log.removeHandler(handler)
    assert stream.getvalue().split() == ["detail", "1", "still", "shown", "detail", "3"]
