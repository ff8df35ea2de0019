"""execute_with_failover order and the at-most-once rule; ServiceBackup."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from resilience_mw import (
    AllNodesFailedError,
    FailoverManager,
    FailoverStrategy,
    NoAvailableNodeError,
    NodeHealth,
    ServiceBackup,
    ServiceNode,
    signals,
)


def failing_on(*ids: str) -> tuple[Any, Counter[str]]:
    calls: Counter[str] = Counter()

    def op(node: ServiceNode) -> str:
        calls[node.id] += 1
        if node.id in ids:
            raise ConnectionError(f"{node.id} down")
        return f"Success from {node.id}"

    return op, calls


def test_seed_scenario_fails_over_to_secondary(seed_nodes: list[ServiceNode]) -> None:
    m = FailoverManager(seed_nodes)
    op, calls = failing_on("primary")
    assert m.execute_with_failover(op) == "Success from secondary"
    assert calls == {"primary": 1, "secondary": 1}


def test_failing_primary_is_tried_once_per_call(seed_nodes: list[ServiceNode]) -> None:
    """The seed's bug: the primary stays 'healthy' below the threshold and is retried."""
    m = FailoverManager(seed_nodes, failure_threshold=5)
    op, calls = failing_on("primary", "secondary")
    assert m.execute_with_failover(op) == "Success from tertiary"
    assert calls == {"primary": 1, "secondary": 1, "tertiary": 1}


@pytest.mark.parametrize("strategy", list(FailoverStrategy))
def test_all_fail_each_once_with_attempts(strategy: FailoverStrategy, seed_nodes: list[ServiceNode]) -> None:
    m = FailoverManager(seed_nodes, strategy, failure_threshold=10)
    op, calls = failing_on("primary", "secondary", "tertiary")
    with pytest.raises(AllNodesFailedError) as info:
        m.execute_with_failover(op)
    assert calls == {"primary": 1, "secondary": 1, "tertiary": 1}
    assert sorted(a.node_id for a in info.value.attempts) == ["primary", "secondary", "tertiary"]
    assert all(isinstance(a.error, ConnectionError) and a.elapsed >= 0 for a in info.value.attempts)
    assert isinstance(info.value.__cause__, ConnectionError)


def test_no_available_node_without_panic_routing(seed_nodes: list[ServiceNode]) -> None:
    m = FailoverManager(seed_nodes, panic=False)
    for n in seed_nodes:
        m.update_health(n.id, NodeHealth(n.id, False, 0.0))
    op, calls = failing_on()
    with pytest.raises(NoAvailableNodeError):
        m.execute_with_failover(op)
    assert not calls


def test_panic_routing_by_default_tries_all(seed_nodes: list[ServiceNode]) -> None:
    m = FailoverManager(seed_nodes)
    for n in seed_nodes:
        m.update_health(n.id, NodeHealth(n.id, False, 0.0))
    op, _calls = failing_on("primary")
    assert m.execute_with_failover(op) == "Success from secondary"
    assert m.is_healthy("secondary")  # the success restored it


def test_failover_signal_names_from_and_to(seed_nodes: list[ServiceNode]) -> None:
    seen: list[tuple[str, str | None]] = []

    def on_failover(
        sender: object, from_node: ServiceNode, to_node: ServiceNode | None, error: Exception
    ) -> None:
        seen.append((from_node.id, to_node.id if to_node else None))

    signals.failover.connect(on_failover)
    try:
        m = FailoverManager(seed_nodes)
        op, _ = failing_on("primary", "secondary", "tertiary")
        with pytest.raises(AllNodesFailedError):
            m.execute_with_failover(op)
    finally:
        signals.failover.disconnect(on_failover)
    assert seen == [("primary", "secondary"), ("secondary", "tertiary"), ("tertiary", None)]


def test_should_fail_over_false_propagates(seed_nodes: list[ServiceNode]) -> None:
    m = FailoverManager(seed_nodes)
    op, calls = failing_on("primary")
    with pytest.raises(ConnectionError):
        m.execute_with_failover(op, should_fail_over=lambda exc: False)
    assert calls == {"primary": 1}


def test_outcomes_feed_health(seed_nodes: list[ServiceNode]) -> None:
    m = FailoverManager(seed_nodes, failure_threshold=2)
    op, _ = failing_on("primary")
    m.execute_with_failover(op)
    m.execute_with_failover(op)
    assert not m.is_healthy("primary")
    assert m.latency("secondary") is not None


def test_service_backup_tries_tiers_in_order(seed_nodes: list[ServiceNode]) -> None:
    backup = ServiceBackup(*seed_nodes)
    op, calls = failing_on("primary")
    assert backup.execute(op) == "Success from secondary"
    assert list(calls) == ["primary", "secondary"]
    op, calls = failing_on("primary", "secondary")
    assert backup.execute(op) == "Success from tertiary"


def test_service_backup_skips_unhealthy_tier_and_uses_tier_order_not_priority() -> None:
    low_first = [
        ServiceNode("p", "http://p", priority=1),
        ServiceNode("s", "http://s", priority=9),
    ]
    backup = ServiceBackup(*low_first, failure_threshold=1)
    op, calls = failing_on("p")
    backup.execute(op)
    assert list(calls) == ["p", "s"]
    calls.clear()
    backup.execute(op)  # p is now ejected: skipped
    assert list(calls) == ["s"]


def test_service_backup_all_fail(seed_nodes: list[ServiceNode]) -> None:
    backup = ServiceBackup(seed_nodes[0], seed_nodes[1])
    op, _calls = failing_on("primary", "secondary")
    with pytest.raises(AllNodesFailedError) as info:
        backup.execute(op)
    assert [a.node_id for a in info.value.attempts] == ["primary", "secondary"]
    assert backup.tertiary is None
