"""Passive failure marking, ejection back-off, the ejection cap, panic mode and recovery."""

from __future__ import annotations

import json
from typing import Any

import pytest

from resilience_mw import FailoverManager, FailoverStrategy, NodeHealth, ServiceNode, signals
from resilience_mw.testing import FakeClock


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, name: str) -> Any:
        def receiver(sender: object, **kw: Any) -> None:
            node = kw.get("node") or kw.get("from_node")
            self.events.append((name, node.id if node else "", kw))

        return receiver


@pytest.fixture
def recorder() -> Any:
    rec = Recorder()
    down = rec("down")
    up = rec("up")
    signals.node_marked_unhealthy.connect(down)
    signals.node_recovered.connect(up)
    yield rec
    signals.node_marked_unhealthy.disconnect(down)
    signals.node_recovered.disconnect(up)


def make(nodes: list[ServiceNode], clock: FakeClock, **kw: Any) -> FailoverManager:
    # a returning node gets its whole share at once here: slow start has tests of its own;
    # three failures eject (the ported design's threshold; the default is Envoy's 5)
    kw.setdefault("slow_start_window", 0)
    kw.setdefault("failure_threshold", 3)
    return FailoverManager(nodes, FailoverStrategy.Priority, clock=clock, **kw)


def test_threshold_then_secondary(seed_nodes: list[ServiceNode], clock: FakeClock, recorder: Any) -> None:
    m = make(seed_nodes, clock)
    m.mark_failure("primary")
    m.mark_failure("primary")
    assert m.get_available_node().id == "primary"  # type: ignore[union-attr]
    m.mark_failure("primary")
    assert m.get_available_node().id == "secondary"  # type: ignore[union-attr]
    assert [(e[0], e[1]) for e in recorder.events] == [("down", "primary")]
    assert recorder.events[0][2]["reason"] == "passive" and recorder.events[0][2]["ejected_for"] == 30
    m.mark_failure("primary")  # further failures: no second signal
    assert len(recorder.events) == 1


def test_success_resets_consecutive_count(seed_nodes: list[ServiceNode], clock: FakeClock) -> None:
    m = make(seed_nodes, clock)
    m.mark_failure("primary")
    m.mark_failure("primary")
    m.mark_success("primary", 0.01)
    m.mark_failure("primary")
    m.mark_failure("primary")
    assert m.is_healthy("primary")


def test_success_restores_an_ejected_node(
    seed_nodes: list[ServiceNode], clock: FakeClock, recorder: Any
) -> None:
    m = make(seed_nodes, clock)
    for _ in range(3):
        m.mark_failure("primary")
    m.mark_success("primary", 0.02)
    assert m.get_available_node().id == "primary"  # type: ignore[union-attr]
    assert [(e[0], e[2].get("reason")) for e in recorder.events] == [("down", "passive"), ("up", "success")]


def test_ejection_expires_grows_and_is_capped(
    seed_nodes: list[ServiceNode], clock: FakeClock, recorder: Any
) -> None:
    m = make(seed_nodes, clock, base_ejection_time=30, max_ejection_time=70)
    for _ in range(3):
        m.mark_failure("primary")
    clock.advance(29.9)
    assert m.get_available_node().id == "secondary"  # type: ignore[union-attr]
    clock.advance(0.2)
    assert m.get_available_node().id == "primary"  # type: ignore[union-attr]  # offered again
    # probation: a single failure ejects again, now for 2 x 30 s
    m.mark_failure("primary")
    assert not m.is_healthy("primary")
    assert recorder.events[-1][2]["ejected_for"] == 60
    clock.advance(60.1)
    assert m.get_available_node().id == "primary"  # type: ignore[union-attr]
    m.mark_failure("primary")
    assert recorder.events[-1][2]["ejected_for"] == 70  # capped (3 x 30 > 70)
    reasons = [e[2]["reason"] for e in recorder.events if e[0] == "up"]
    assert reasons == ["ejection-expired", "ejection-expired"]


def test_ejection_count_forgotten_after_long_health(
    seed_nodes: list[ServiceNode], clock: FakeClock, recorder: Any
) -> None:
    m = make(seed_nodes, clock, base_ejection_time=30, max_ejection_time=300)
    for _ in range(3):
        m.mark_failure("primary")
    m.mark_success("primary", 0.01)
    clock.advance(301)
    for _ in range(3):
        m.mark_failure("primary")
    assert recorder.events[-1][2]["ejected_for"] == 30


def test_max_ejection_percent_keeps_nodes_offered(clock: FakeClock) -> None:
    nodes = [ServiceNode(f"n{i}", f"http://n{i}") for i in range(4)]
    m = FailoverManager(nodes, FailoverStrategy.RoundRobin, clock=clock, max_ejection_percent=50)
    for node in nodes:
        for _ in range(5):
            m.mark_failure(node.id)
    assert len(m.healthy_nodes()) == 2  # at most 50 % of 4 ejected passively


def test_at_least_one_node_is_always_ejectable(clock: FakeClock) -> None:
    nodes = [ServiceNode("a", "http://a"), ServiceNode("b", "http://b")]
    m = FailoverManager(nodes, clock=clock, max_ejection_percent=10, failure_threshold=3)
    for _ in range(3):
        m.mark_failure("a")
    assert not m.is_healthy("a")
    for _ in range(3):
        m.mark_failure("b")
    assert m.is_healthy("b")


def test_no_healthy_node_fails_fast_or_panics(seed_nodes: list[ServiceNode], clock: FakeClock) -> None:
    for panic in (False, True):
        m = make(seed_nodes, clock, panic=panic)
        for n in seed_nodes:
            m.update_health(n.id, NodeHealth(n.id, False, clock()))
        if panic:
            assert m.get_available_node().id == "primary"  # type: ignore[union-attr]
            assert [n.id for n in m.failover_order()] == ["primary", "secondary", "tertiary"]
        else:
            assert m.get_available_node() is None and m.failover_order() == ()


def test_health_check_hysteresis(seed_nodes: list[ServiceNode], clock: FakeClock, recorder: Any) -> None:
    m = make(seed_nodes, clock)
    th = {"unhealthy_threshold": 2, "healthy_threshold": 3}
    m.record_check("primary", False, **th)
    assert m.is_healthy("primary")
    m.record_check("primary", False, **th)
    assert not m.is_healthy("primary")
    for expected in (False, False, True):
        m.record_check("primary", True, 0.01, **th)
        assert m.is_healthy("primary") is expected
    assert [(e[0], e[2]["reason"]) for e in recorder.events] == [("down", "active"), ("up", "health-check")]


def test_one_passing_check_uneject_passive(seed_nodes: list[ServiceNode], clock: FakeClock) -> None:
    m = make(seed_nodes, clock)
    for _ in range(3):
        m.mark_failure("primary")
    m.record_check("primary", True, 0.01, unhealthy_threshold=3, healthy_threshold=3)
    assert m.is_healthy("primary")


def test_failed_check_keeps_ejected_node_out_past_its_timer(
    seed_nodes: list[ServiceNode], clock: FakeClock
) -> None:
    m = make(seed_nodes, clock)
    for _ in range(3):
        m.mark_failure("primary")
    m.record_check("primary", False)
    clock.advance(1000)
    assert m.get_available_node().id == "secondary"  # type: ignore[union-attr]


def test_snapshot_is_plain_redacted_data(clock: FakeClock) -> None:
    m = FailoverManager([ServiceNode("a", "http://u:pw@host:1")], clock=clock)
    m.mark_success("a", 0.25)
    snap = m.snapshot()
    text = json.dumps(snap)
    assert "pw" not in text
    assert snap[0]["id"] == "a" and snap[0]["healthy"] is True and snap[0]["latency"] == 0.25
    assert "pw" not in repr(m)


def test_health_returns_node_health(seed_nodes: list[ServiceNode], clock: FakeClock) -> None:
    m = make(seed_nodes, clock)
    m.mark_failure("secondary")
    h = m.health("secondary")
    assert h == NodeHealth("secondary", True, clock(), 1, 0.0)


def test_raising_receiver_does_not_break_marking(seed_nodes: list[ServiceNode], clock: FakeClock) -> None:
    def bad(sender: object, **kw: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.node_marked_unhealthy.connect(bad)
    try:
        m = make(seed_nodes, clock)
        for _ in range(3):
            m.mark_failure("primary")
        assert not m.is_healthy("primary")
    finally:
        signals.node_marked_unhealthy.disconnect(bad)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_pool_usable_in_child_forked_while_lock_held(seed_nodes: list[ServiceNode]) -> None:
    """Another thread holds the pool's lock at fork time: the child must not deadlock."""
    import threading

    from tests.conftest import run_in_forked_child

    m = FailoverManager(seed_nodes, failure_threshold=3)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with m._lock:
            holding.set()
            release.wait(5)

    def in_child() -> bool:
        for _ in range(3):
            m.mark_failure("primary")  # would block forever on the inherited lock
        node = m.get_available_node()
        return node is not None and node.id == "secondary"

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(5)
    try:
        assert run_in_forked_child(in_child, timeout=5), "child deadlocked or failed"
    finally:
        release.set()
        t.join()


def test_retry_after_hold_is_not_cut_short_by_health_checks(
    seed_nodes: list[ServiceNode], clock: FakeClock
) -> None:
    m = make(seed_nodes, clock)
    m.hold_off("primary", 20)
    m.record_check("primary", True, 0.01, healthy_threshold=1)  # /health may pass while the API is busy
    assert not m.is_healthy("primary")
    clock.advance(20.1)
    assert m.get_available_node().id == "primary"  # type: ignore[union-attr]


def test_hold_off_is_capped(seed_nodes: list[ServiceNode], clock: FakeClock, recorder: Any) -> None:
    m = make(seed_nodes, clock, max_ejection_time=60)
    m.hold_off("primary", 86_400)
    assert recorder.events[-1][2]["ejected_for"] == 60 and recorder.events[-1][2]["reason"] == "retry-after"


def test_panic_order_is_best_candidate_first(seed_nodes: list[ServiceNode], clock: FakeClock) -> None:
    m = make(seed_nodes, clock, max_ejection_percent=100, failure_threshold=1)
    m.mark_failure("tertiary")  # ejected until +30
    clock.advance(5)
    m.mark_failure("primary")  # ejected until +35
    m.hold_off("secondary", 10)  # held off until +15: the shortest wait
    assert m.healthy_nodes() == ()
    assert [n.id for n in m.failover_order()] == ["secondary", "tertiary", "primary"]
    assert m.get_available_node() is not None


def test_one_node_pool_never_shuts_its_node_out(clock: FakeClock) -> None:
    only = ServiceNode("only", "http://only")
    for panic in (True, False):
        m = make([only], clock, panic=panic)
        for _ in range(5):
            m.mark_failure("only")
        m.hold_off("only", 60)
        assert not m.is_healthy("only")
        assert m.failover_order() == (only,) and m.get_available_node() is only
