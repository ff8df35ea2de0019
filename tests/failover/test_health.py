"""HealthChecker against real HTTP nodes on 127.0.0.1."""

from __future__ import annotations

import threading
import time
import tracemalloc
from typing import Any

import pytest

from resilience_mw import ConfigError, FailoverManager, ServiceNode, signals
from resilience_mw.failover.health import HealthChecker
from resilience_mw.testing import FakeClock
from tests.helpers import wait_for
from tests.nodes import free_port


def node_for(server: Any, name: str | None = None) -> ServiceNode:
    return ServiceNode(name or server.name, server.url)


@pytest.mark.parametrize(
    ("mode", "healthy"),
    [
        ("ok", True),
        ("error", False),
        ("unavailable", False),
        ("redirect", False),
        ("garbage", False),
        ("reset", False),
    ],
)
def test_check_node_status_rules(node_factory: Any, mode: str, healthy: bool) -> None:
    server = node_factory("n", mode)
    h = HealthChecker(timeout=1.0).check_node(node_for(server))
    assert h.passed is healthy and h.node_id == "n"
    if healthy:
        assert 0 < h.latency < 1.0 and h.detail == ""


def test_redirect_is_not_followed(node_factory: Any) -> None:
    server = node_factory("n", "redirect")
    HealthChecker(timeout=1.0).check_node(node_for(server))
    assert server.requests[("GET", "/elsewhere")] == 0


def test_closed_port_is_unhealthy_fast() -> None:
    node = ServiceNode("dead", f"http://127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    assert not HealthChecker(timeout=1.0).check_node(node).passed
    assert time.monotonic() - t0 < 0.5


def test_hung_node_costs_at_most_timeout(node_factory: Any) -> None:
    server = node_factory("hung", "hang")
    t0 = time.monotonic()
    h = HealthChecker(timeout=0.3).check_node(node_for(server))
    assert not h.passed
    assert time.monotonic() - t0 < 0.3 + 0.2


def test_endless_body_is_bounded_in_time_and_memory(node_factory: Any) -> None:
    server = node_factory("endless", "endless")
    tracemalloc.start()
    t0 = time.monotonic()
    h = HealthChecker(timeout=1.0, max_body_bytes=256 * 1024).check_node(node_for(server))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert h.passed  # 200 within the timeout; only 256 KiB were read
    assert time.monotonic() - t0 < 1.0
    assert peak < 4 * 1024 * 1024


def test_slow_answer_past_timeout_is_unhealthy(node_factory: Any) -> None:
    server = node_factory("slow", "slow")
    server.delay = 0.6
    assert not HealthChecker(timeout=0.3).check_node(node_for(server)).passed


def test_parallel_checks_are_concurrent(node_factory: Any) -> None:
    servers = [node_factory(f"h{i}", "hang") for i in range(4)] + [node_factory("ok", "ok")]
    checker = HealthChecker(timeout=0.4, max_workers=8)
    t0 = time.monotonic()
    results = checker.check_nodes([node_for(s) for s in servers])
    elapsed = time.monotonic() - t0
    assert [r.passed for r in results] == [False] * 4 + [True]
    assert elapsed < 0.4 + 0.3  # not 4 x 0.4


def test_background_checking_hysteresis_and_signals(node_factory: Any) -> None:
    a, b = node_factory("a"), node_factory("b")
    manager = FailoverManager(
        [ServiceNode("a", a.url, priority=10), ServiceNode("b", b.url, priority=5)], slow_start_window=0
    )
    events: list[tuple[str, str, str]] = []
    lock = threading.Lock()

    def rec(kind: str) -> Any:
        def receiver(sender: object, node: ServiceNode, reason: str, **kw: Any) -> None:
            with lock:
                events.append((kind, node.id, reason))

        return receiver

    down, up = rec("down"), rec("up")
    signals.node_marked_unhealthy.connect(down, sender=manager)
    signals.node_recovered.connect(up, sender=manager)
    checker = HealthChecker(
        check_interval=0.05, timeout=0.5, unhealthy_threshold=2, healthy_threshold=2, jitter=0
    )
    checker.start(manager)
    try:
        assert manager.get_available_node().id == "a"  # type: ignore[union-attr]
        a.stop()  # port closed
        assert wait_for(lambda: not manager.is_healthy("a"), 3)
        assert manager.get_available_node().id == "b"  # type: ignore[union-attr]
        time.sleep(0.3)  # several more failed rounds: still one signal
        a.start()  # same port again
        assert wait_for(lambda: manager.is_healthy("a"), 3)
        assert manager.get_available_node().id == "a"  # type: ignore[union-attr]
    finally:
        assert checker.stop(2)
        signals.node_marked_unhealthy.disconnect(down)
        signals.node_recovered.disconnect(up)
    assert events == [("down", "a", "active"), ("up", "a", "health-check")]
    assert not any(t.name.startswith("resilience_mw-health") and t.is_alive() for t in threading.enumerate())


def test_health_check_brings_back_passively_ejected_node(node_factory: Any) -> None:
    a = node_factory("a")
    manager = FailoverManager([ServiceNode("a", a.url)], base_ejection_time=300, failure_threshold=3)
    for _ in range(3):
        manager.mark_failure("a")
    assert not manager.is_healthy("a")
    HealthChecker(timeout=1).run_once(manager)
    assert manager.is_healthy("a")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"check_interval": 0}, "check_interval"),
        ({"timeout": -1}, "timeout"),
        ({"unhealthy_threshold": 0}, "unhealthy_threshold"),
        ({"path": "health"}, "path"),
        ({"jitter": 2}, "jitter"),
    ],
)
def test_config_errors(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        HealthChecker(**kwargs)
    assert info.value.field == field


@pytest.mark.parametrize("field", ["path", "timeout", "check_interval"])
def test_none_is_a_config_error_not_the_default(field: str) -> None:
    """``HealthChecker(path=None)`` once checked ``/health`` without a word; ``None`` is
    no path (nor interval, nor timeout), as in HealthCheckConfig."""
    with pytest.raises(ConfigError) as info:
        HealthChecker(**{field: None})
    assert (info.value.field, info.value.value) == (field, None) and f"{field}=None" in str(info.value)
    with pytest.raises(ConfigError) as info:
        HealthChecker(5, 2, None)  # type: ignore[arg-type]  # positionally too
    assert (info.value.field, info.value.value) == ("path", None)
    assert HealthChecker().config.path == "/health"  # left out: the default


def test_trickled_body_is_bounded_by_timeout(node_factory: Any) -> None:
    server = node_factory("trickle", "trickle")
    t0 = time.monotonic()
    h = HealthChecker(timeout=0.4).check_node(node_for(server))
    assert not h.passed  # 200, but it did not finish within the timeout
    assert time.monotonic() - t0 < 0.4 + 0.2


def test_schedules_by_state_with_an_injected_probe_and_clock() -> None:
    # socket-free and sleep-free: the probe is a function, the clock a FakeClock
    clock = FakeClock()
    up = {"a": True, "b": False}
    calls: list[str] = []

    def probe(node: ServiceNode, timeout: float) -> bool:
        calls.append(node.id)
        clock.advance(0.01)
        return up[node.id]

    pool = FailoverManager([ServiceNode("a", "http://a"), ServiceNode("b", "http://b")], clock=clock)
    checker = HealthChecker(
        check_interval=10, unhealthy_interval=2, jitter=0, unhealthy_threshold=1, healthy_threshold=1,
        probe=probe, clock=clock, max_workers=1,
    )
    assert [r.node_id for r in checker.run_due(pool)] == ["a", "b"]  # never checked: both due
    assert pool.is_healthy("a") and not pool.is_healthy("b")
    clock.advance(2)
    assert [r.node_id for r in checker.run_due(pool)] == ["b"]  # out: every 2 s
    up["b"] = True
    clock.advance(2)
    assert [r.node_id for r in checker.run_due(pool)] == ["b"] and pool.is_healthy("b")
    clock.advance(2)
    assert checker.run_due(pool) == []  # b is back: every 10 s now
    clock.advance(4)
    assert [r.node_id for r in checker.run_due(pool)] == ["a"]


def test_a_probe_slower_than_the_timeout_fails_and_its_error_is_the_detail() -> None:
    clock = FakeClock()
    node = ServiceNode("a", "http://user:pw@a")

    def slow(node: ServiceNode, timeout: float) -> bool:
        clock.advance(timeout + 0.1)
        return True

    def broken(node: ServiceNode, timeout: float) -> bool:
        raise OSError(f"cannot reach {node.endpoint}")

    result = HealthChecker(timeout=1, probe=slow, clock=clock).check_node(node)
    assert not result.passed and "timeout=1s" in result.detail
    result = HealthChecker(timeout=1, probe=broken, clock=clock).check_node(node)
    assert not result.passed and result.detail.startswith("OSError") and "pw" not in result.detail


def test_start_takes_the_pool() -> None:
    with pytest.raises(ConfigError) as info:
        HealthChecker().start([ServiceNode("a", "http://a")])  # type: ignore[arg-type]
    assert info.value.field == "pool"


def test_basic_auth_from_the_endpoint_and_the_status_in_the_detail(node_factory: Any) -> None:
    server = node_factory("n", "unavailable")
    node = ServiceNode("n", server.url.replace("http://", "http://user:secret@"))
    result = HealthChecker(timeout=1.0).check_node(node)
    assert not result.passed and result.detail == "CheckFailed: status 503"


# ------------------------------------------------------------ the seed's names


def test_check_all_nodes_parallel_checks_each_node_once_at_the_same_time(node_factory: Any) -> None:
    """The seed's ``check_all_nodes_parallel(nodes)``: one check of each node, run side
    by side, the results in the order given (``is_healthy`` as the seed reads them),
    and nothing recorded anywhere."""
    from resilience_mw import CheckResult
    from resilience_mw.failover.health import HttpProbe

    servers = [node_factory("up"), node_factory("failing", "error"), node_factory("up2")]
    nodes = [*(node_for(s) for s in servers), ServiceNode("gone", f"http://127.0.0.1:{free_port()}")]
    manager = FailoverManager(nodes)
    # every check waits at a barrier for the others: checks run one after another never get past it
    barrier, http = threading.Barrier(len(nodes)), HttpProbe()

    def side_by_side(node: ServiceNode, timeout: float) -> bool:
        barrier.wait(timeout)
        return http(node, timeout)

    checker = HealthChecker(timeout=2, probe=side_by_side, max_workers=len(nodes))
    checker.stop()  # a checker stopped before (never started here) still checks on request
    results = checker.check_all_nodes_parallel(nodes)
    assert [(r.node_id, r.is_healthy) for r in results] == [("up", True), ("failing", False), ("up2", True), ("gone", False)]
    assert all(r.is_healthy is r.passed for r in results) and not barrier.broken
    assert results[1].detail == "CheckFailed: status 500"
    assert [s.hits("/health", exclude_health=False) for s in servers] == [1, 1, 1]
    assert all(manager.is_healthy(n.id) for n in nodes)  # a look, not a verdict
    first = results[0]
    same = CheckResult(first.node_id, first.passed, first.latency, first.detail)
    assert first == same and same == first and hash(first) == hash(same)


def test_start_with_the_seeds_nodes_and_manager_checks_those_nodes(node_factory: Any) -> None:
    """The seed's ``start(nodes, manager)``: the given nodes are checked and their
    results recorded in the manager; a node of the manager not given is left alone."""
    a, b, c = node_factory("a"), node_factory("b", "error"), node_factory("c", "error")
    nodes = [node_for(a), node_for(b), node_for(c)]
    manager = FailoverManager(nodes)
    checker = HealthChecker(check_interval=0.05, timeout=0.5, unhealthy_threshold=1, jitter=0)
    checker.start(nodes[:2], manager)
    try:
        assert wait_for(lambda: not manager.is_healthy("b") and a.hits("/health", exclude_health=False) >= 2, 3)
    finally:
        assert checker.stop(2)
    assert manager.is_healthy("a") and manager.is_healthy("c")  # c answers 500, but was not to be checked
    assert c.hits("/health", exclude_health=False) == 0
    assert [r.node_id for r in checker.run_once()] == ["a", "b"]  # the started nodes, by default
    checker.start(manager)  # the pool form still checks every node
    try:
        assert wait_for(lambda: not manager.is_healthy("c"), 3)
    finally:
        assert checker.stop(2)


def test_start_with_nodes_wants_the_managers_own_nodes(node_factory: Any) -> None:
    a = node_factory("a")
    manager = FailoverManager([node_for(a)])
    checker = HealthChecker()
    cases = [
        (([node_for(a)], "not a manager"), "manager"),
        (([ServiceNode("a", "http://elsewhere:8080")], manager), "nodes"),  # same id, another node
        (([ServiceNode("x", a.url)], manager), "nodes"),
        (([], manager), "nodes"),
        (([node_for(a)],), "pool"),  # nodes alone: which manager records the results?
    ]
    for args, field in cases:
        with pytest.raises(ConfigError) as info:
            checker.start(*args)  # type: ignore[arg-type]
        assert info.value.field == field
    assert not checker.running
