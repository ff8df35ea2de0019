"""Each strategy: order, distribution, skipping unhealthy, all unhealthy -> None."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from resilience_mw import FailoverManager, FailoverStrategy, NodeHealth, ServiceNode
from resilience_mw.failover._strategies import smooth_weighted_sequence


def _down(m: FailoverManager, node_id: str) -> None:
    m.update_health(node_id, NodeHealth(node_id, False, 0.0))


def test_priority_picks_highest_and_skips_unhealthy(seed_nodes: list[ServiceNode]) -> None:
    m = FailoverManager(seed_nodes, FailoverStrategy.Priority, panic=False)
    assert m.get_available_node() is seed_nodes[0]
    _down(m, "primary")
    assert m.get_available_node() is seed_nodes[1]
    _down(m, "secondary")
    assert m.get_available_node() is seed_nodes[2]
    _down(m, "tertiary")
    assert m.get_available_node() is None


def test_priority_ties_share_the_traffic_and_keep_declaration_order_for_failover() -> None:
    nodes = [ServiceNode("x", "http://x", priority=5), ServiceNode("y", "http://y", priority=5)]
    m = FailoverManager(nodes)
    assert {m.get_available_node().id for _ in range(50)} == {"x", "y"}  # type: ignore[union-attr]  # one tier
    assert m.failover_order()[1:] in ((nodes[1],), (nodes[0],))


def test_round_robin_cycles_evenly_and_skips_unhealthy(seed_nodes: list[ServiceNode]) -> None:
    m = FailoverManager(seed_nodes, FailoverStrategy.RoundRobin, panic=False)
    picks = [m.get_available_node() for _ in range(300)]
    assert Counter(p.id for p in picks if p) == {"primary": 100, "secondary": 100, "tertiary": 100}
    # consecutive picks never repeat while all are healthy
    assert all(a is not b for a, b in itertools.pairwise(picks))
    _down(m, "secondary")
    picks = [m.get_available_node() for _ in range(100)]
    assert Counter(p.id for p in picks if p) == {"primary": 50, "tertiary": 50}
    _down(m, "primary")
    _down(m, "tertiary")
    assert m.get_available_node() is None


def test_random_covers_healthy_only(seed_nodes: list[ServiceNode]) -> None:
    m = FailoverManager(seed_nodes, FailoverStrategy.Random, rng=random.Random(7))
    _down(m, "primary")
    counts = Counter(n.id for n in (m.get_available_node() for _ in range(2000)) if n)
    assert set(counts) == {"secondary", "tertiary"}
    assert 800 < counts["secondary"] < 1200


def test_smooth_weighted_5_1_1_matches_nginx() -> None:
    a, b, c = (ServiceNode(i, f"http://{i}", weight=w) for i, w in (("a", 5), ("b", 1), ("c", 1)))
    assert [n.id for n in smooth_weighted_sequence([a, b, c])] == list("aabacaa")
    m = FailoverManager([a, b, c], FailoverStrategy.WeightedRoundRobin)
    assert "".join(m.get_available_node().id for _ in range(14)) == "aabacaa" * 2  # type: ignore[union-attr]


def test_weighted_distribution_follows_weights(seed_nodes: list[ServiceNode]) -> None:
    m = FailoverManager(seed_nodes, FailoverStrategy.WeightedRoundRobin)
    counts = Counter(m.get_available_node().id for _ in range(1000))  # type: ignore[union-attr]
    assert counts == {"primary": 500, "secondary": 300, "tertiary": 200}
    _down(m, "primary")
    counts = Counter(m.get_available_node().id for _ in range(500))  # type: ignore[union-attr]
    assert counts == {"secondary": 300, "tertiary": 200}


def test_weighted_large_totals_use_stepwise_algorithm() -> None:
    nodes = [ServiceNode("a", "http://a", weight=9_999), ServiceNode("b", "http://b", weight=7_001)]
    m = FailoverManager(nodes, FailoverStrategy.WeightedRoundRobin)
    counts = Counter(m.get_available_node().id for _ in range(17_000))  # type: ignore[union-attr]
    assert counts == {"a": 9_999, "b": 7_001}


@pytest.mark.parametrize("strategy", list(FailoverStrategy))
def test_failover_order_is_each_node_once_first_is_pick(
    strategy: FailoverStrategy, seed_nodes: list[ServiceNode]
) -> None:
    m = FailoverManager(seed_nodes, strategy, rng=random.Random(3))
    for _ in range(20):
        order = m.failover_order()
        assert sorted(n.id for n in order) == ["primary", "secondary", "tertiary"]


def test_priority_failover_order(seed_nodes: list[ServiceNode]) -> None:
    m = FailoverManager(list(reversed(seed_nodes)))
    assert [n.id for n in m.failover_order()] == ["primary", "secondary", "tertiary"]


def test_round_robin_failover_order_continues_cycle(seed_nodes: list[ServiceNode]) -> None:
    m = FailoverManager(seed_nodes, FailoverStrategy.RoundRobin)
    firsts = [m.failover_order() for _ in range(3)]
    assert {o[0].id for o in firsts} == {"primary", "secondary", "tertiary"}
    for o in firsts:  # the rest follows the cycle
        i = seed_nodes.index(o[0])
        assert list(o) == seed_nodes[i:] + seed_nodes[:i]
