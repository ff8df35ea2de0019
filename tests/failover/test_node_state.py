"""One node's state machine: every (state, event) pair, and the pool applying it on
every read path at the same clock tick."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from resilience_mw import (
    AutoDegradationManager,
    DownReason,
    FailoverManager,
    NodeHealth,
    Phase,
    RecoveryReason,
    ServiceBackup,
    ServiceNode,
    readiness_document,
    signals,
)
from resilience_mw.config import PoolConfig
from resilience_mw.failover.node_state import NodeState, Transition
from resilience_mw.testing import FakeClock, record_signals

RULES = PoolConfig(failure_threshold=2, base_ejection_time=10, max_ejection_time=40)
CHECKS = {"unhealthy_threshold": 2, "healthy_threshold": 2}
NODE = ServiceNode("a", "http://a")


def in_phase(phase: Phase) -> NodeState:
    """A node brought to ``phase`` by the events that lead there."""
    st = NodeState(NODE)
    if phase is Phase.SUSPECT:
        st.on_failure(0, RULES, True)
    elif phase is Phase.EJECTED:
        st.on_failure(0, RULES, True)
        st.on_failure(0, RULES, True)
    elif phase is Phase.PROBATION:
        st.on_failure(0, RULES, True)
        st.on_failure(0, RULES, True)
        st.expire(10, RULES)
    elif phase is Phase.HELD_OFF:
        st.on_hold(0, 5, True)
    elif phase is Phase.DOWN:
        st.on_check(0, False, **CHECKS)
        st.on_check(0, False, **CHECKS)
    assert st.phase is phase
    return st


Event = Callable[[NodeState], "Transition | None"]
EVENTS: dict[str, Event] = {
    "failure": lambda st: st.on_failure(20, RULES, True),
    "success": lambda st: st.on_success(20),
    "hold": lambda st: st.on_hold(20, 5, True),
    "check-pass": lambda st: st.on_check(20, True, **CHECKS),
    "check-fail": lambda st: st.on_check(20, False, **CHECKS),
    "manual-down": lambda st: st.on_manual(20, False),
    "manual-up": lambda st: st.on_manual(20, True),
    "expire": lambda st: st.expire(20, RULES),
    # the fleet's health checker (another worker's, through the state store)
    "verdict-down": lambda st: st.on_verdict(20, True, 1.0),
    "verdict-up": lambda st: st.on_verdict(20, False, 1.0),
}

#: (state, event) -> (state after, what was reported: "down:<reason>", "up:<reason>" or None)
TABLE: dict[tuple[Phase, str], tuple[Phase, str | None]] = {
    (Phase.HEALTHY, "failure"): (Phase.SUSPECT, None),
    (Phase.HEALTHY, "success"): (Phase.HEALTHY, None),
    (Phase.HEALTHY, "hold"): (Phase.HELD_OFF, "down:retry-after"),
    (Phase.HEALTHY, "check-pass"): (Phase.HEALTHY, None),
    (Phase.HEALTHY, "check-fail"): (Phase.SUSPECT, None),
    (Phase.HEALTHY, "manual-down"): (Phase.DOWN, "down:manual"),
    (Phase.HEALTHY, "manual-up"): (Phase.HEALTHY, None),
    (Phase.HEALTHY, "expire"): (Phase.HEALTHY, None),
    (Phase.HEALTHY, "verdict-down"): (Phase.DOWN, "down:shared"),
    (Phase.HEALTHY, "verdict-up"): (Phase.HEALTHY, None),
    (Phase.SUSPECT, "failure"): (Phase.EJECTED, "down:passive"),
    (Phase.SUSPECT, "success"): (Phase.HEALTHY, None),
    (Phase.SUSPECT, "hold"): (Phase.HELD_OFF, "down:retry-after"),
    (Phase.SUSPECT, "check-pass"): (Phase.SUSPECT, None),  # the traffic failure still counts
    (Phase.SUSPECT, "check-fail"): (Phase.SUSPECT, None),
    (Phase.SUSPECT, "manual-down"): (Phase.DOWN, "down:manual"),
    (Phase.SUSPECT, "manual-up"): (Phase.SUSPECT, None),
    (Phase.SUSPECT, "expire"): (Phase.SUSPECT, None),
    (Phase.SUSPECT, "verdict-down"): (Phase.DOWN, "down:shared"),
    (Phase.SUSPECT, "verdict-up"): (Phase.SUSPECT, None),
    (Phase.PROBATION, "failure"): (Phase.EJECTED, "down:passive"),
    (Phase.PROBATION, "success"): (Phase.HEALTHY, None),
    (Phase.PROBATION, "hold"): (Phase.HELD_OFF, "down:retry-after"),
    (Phase.PROBATION, "check-pass"): (Phase.PROBATION, None),
    (Phase.PROBATION, "check-fail"): (Phase.PROBATION, None),
    (Phase.PROBATION, "manual-down"): (Phase.DOWN, "down:manual"),
    (Phase.PROBATION, "manual-up"): (Phase.PROBATION, None),
    (Phase.PROBATION, "expire"): (Phase.PROBATION, None),
    (Phase.PROBATION, "verdict-down"): (Phase.DOWN, "down:shared"),
    (Phase.PROBATION, "verdict-up"): (Phase.PROBATION, None),
    (Phase.EJECTED, "failure"): (Phase.EJECTED, None),
    (Phase.EJECTED, "success"): (Phase.HEALTHY, "up:success"),
    (Phase.EJECTED, "hold"): (Phase.EJECTED, None),
    (Phase.EJECTED, "check-pass"): (Phase.HEALTHY, "up:health-check"),  # one pass un-ejects
    (Phase.EJECTED, "check-fail"): (Phase.DOWN, None),  # confirmed: out until checks pass
    (Phase.EJECTED, "manual-down"): (Phase.DOWN, None),  # no longer on a timer
    (Phase.EJECTED, "manual-up"): (Phase.HEALTHY, "up:manual"),
    (Phase.EJECTED, "expire"): (Phase.PROBATION, "up:ejection-expired"),
    (Phase.EJECTED, "verdict-down"): (Phase.DOWN, None),  # no longer on a timer: until the checker says up
    (Phase.EJECTED, "verdict-up"): (Phase.EJECTED, None),  # its own timer still runs
    (Phase.HELD_OFF, "failure"): (Phase.HELD_OFF, None),
    (Phase.HELD_OFF, "success"): (Phase.HEALTHY, "up:success"),
    (Phase.HELD_OFF, "hold"): (Phase.HELD_OFF, None),
    (Phase.HELD_OFF, "check-pass"): (Phase.HELD_OFF, None),  # it asked for time
    (Phase.HELD_OFF, "check-fail"): (Phase.HELD_OFF, None),
    (Phase.HELD_OFF, "manual-down"): (Phase.DOWN, None),
    (Phase.HELD_OFF, "manual-up"): (Phase.HEALTHY, "up:manual"),
    (Phase.HELD_OFF, "expire"): (Phase.PROBATION, "up:ejection-expired"),
    (Phase.HELD_OFF, "verdict-down"): (Phase.DOWN, None),
    (Phase.HELD_OFF, "verdict-up"): (Phase.HELD_OFF, None),
    (Phase.DOWN, "failure"): (Phase.DOWN, None),
    (Phase.DOWN, "success"): (Phase.HEALTHY, "up:success"),
    (Phase.DOWN, "hold"): (Phase.DOWN, None),
    (Phase.DOWN, "check-pass"): (Phase.DOWN, None),  # one of healthy_threshold=2
    (Phase.DOWN, "check-fail"): (Phase.DOWN, None),
    (Phase.DOWN, "manual-down"): (Phase.DOWN, None),
    (Phase.DOWN, "manual-up"): (Phase.HEALTHY, "up:manual"),
    (Phase.DOWN, "expire"): (Phase.DOWN, None),
    (Phase.DOWN, "verdict-down"): (Phase.DOWN, None),
    (Phase.DOWN, "verdict-up"): (Phase.HEALTHY, "up:health-check"),  # the checks that count pass
}


def test_the_table_covers_every_pair() -> None:
    assert set(TABLE) == {(p, e) for p in Phase for e in EVENTS}


@pytest.mark.parametrize(("phase", "event"), list(TABLE), ids=[f"{p.value}-{e}" for p, e in TABLE])
def test_transition(phase: Phase, event: str) -> None:
    st = in_phase(phase)
    reason_before = st.reason
    transition = EVENTS[event](st)
    expected_phase, expected_report = TABLE[(phase, event)]
    assert st.phase is expected_phase
    report = None if transition is None else f"{'up' if transition.healthy else 'down'}:{transition.reason}"
    assert report == expected_report
    assert st.offered == (expected_phase in (Phase.HEALTHY, Phase.SUSPECT, Phase.PROBATION))
    if not st.offered and transition is None:
        assert st.reason is reason_before  # the first cause is kept
    if st.offered:
        assert st.reason is None and st.until is None


def test_the_checkers_verdict_takes_the_last_node_down_whatever_the_ejection_cap() -> None:
    """Two nodes, at most one out on a timer: one ejected by this worker's traffic fills
    the cap; the fleet checker's verdict still takes the other down (and turns the
    ejection into down until it says up); its word that they are up brings both back.
    A node set down by hand stays down."""
    clock = FakeClock()
    pool = FailoverManager([ServiceNode("a", "http://a"), ServiceNode("b", "http://b")], failure_threshold=1,
                           clock=clock)
    pool.mark_failure("a")
    pool.apply_hint("b", True, 30)  # a timed hint: held back by the cap
    assert pool.is_healthy("b")
    pool.apply_verdict("b", True)
    pool.apply_verdict("a", True)
    rows = {r["id"]: r for r in pool.snapshot()}
    assert [rows[n]["state"] for n in "ab"] == ["down", "down"] and rows["b"]["down_reason"] == "shared"
    assert rows["a"]["down_reason"] == "passive" and rows["a"]["verdict"] and rows["b"]["verdict"]
    assert pool.healthy_nodes() == () and pool.get_available_node() is not None  # panic routing still tries
    clock.advance(600)  # a's ejection timer would have run out: the verdict holds it
    assert not pool.is_healthy("a")
    with record_signals(signals.node_recovered) as seen:
        pool.apply_verdict("a", False)
        pool.apply_verdict("b", False)
    assert pool.is_healthy("a") and pool.is_healthy("b")
    assert [e["reason"] for e in seen.named("node-recovered")] == ["health-check", "health-check"]
    pool.update_health("a", NodeHealth("a", False, 0.0, 0, 0.0))
    pool.apply_verdict("a", False)
    assert not pool.is_healthy("a")  # set down by hand: not the checker's to bring back


def test_a_checkers_verdict_does_not_override_this_workers_own_fresh_success() -> None:
    clock = FakeClock()
    pool = FailoverManager([ServiceNode("a", "http://a"), ServiceNode("b", "http://b")], clock=clock)
    pool.mark_success("a", 0.01)
    pool.apply_verdict("a", True, fresh=1.0)
    assert pool.is_healthy("a")
    clock.advance(2)
    pool.apply_verdict("a", True, fresh=1.0)
    assert not pool.is_healthy("a")


def test_a_confirmed_passive_ejection_keeps_its_first_cause_and_needs_the_threshold() -> None:
    st = in_phase(Phase.EJECTED)
    st.on_check(1, False, **CHECKS)
    assert st.phase is Phase.DOWN and st.reason is DownReason.PASSIVE and st.until is None
    assert st.on_check(2, True, **CHECKS) is None
    t = st.on_check(3, True, **CHECKS)
    assert t is not None and t.reason is RecoveryReason.HEALTH_CHECK and st.phase is Phase.HEALTHY


def test_a_manually_downed_node_needs_healthy_threshold_passes() -> None:
    st = in_phase(Phase.HEALTHY)
    st.on_manual(0, False)
    assert st.on_check(1, True, **CHECKS) is None and st.phase is Phase.DOWN
    assert st.on_check(2, True, **CHECKS) is not None and st.phase is Phase.HEALTHY


def test_ejections_grow_and_are_forgotten_after_a_long_healthy_spell() -> None:
    st = NodeState(NODE)
    durations = []
    now = 0.0
    for _ in range(3):
        st.on_failure(now, RULES, True)
        t = st.on_failure(now, RULES, True)
        assert t is not None
        durations.append(t.ejected_for)
        now += 100
        st.on_success(now)
        now += 1
    assert durations == [10, 20, 30]
    now += RULES.max_ejection_time
    st.on_failure(now, RULES, True)
    t = st.on_failure(now, RULES, True)
    assert t is not None and t.ejected_for == 10


def test_no_ejection_without_room() -> None:
    st = in_phase(Phase.SUSPECT)
    assert st.on_failure(1, RULES, False) is None and st.offered
    assert st.on_hold(1, 5, False) is None and st.offered


# ----------------------------------------------------------------- the pool


def ejected_pool(clock: FakeClock, **kw: Any) -> FailoverManager:
    pool = FailoverManager(
        [ServiceNode("p", "http://p", priority=10), ServiceNode("s", "http://s", priority=5)],
        "Priority",
        failure_threshold=1,
        base_ejection_time=30,
        slow_start_window=0,  # (slow start has tests of its own)
        clock=clock,
        **kw,
    )
    pool.mark_failure("p")
    assert not pool.is_healthy("p")
    clock.advance(30)  # the ejection ends now: no reader has run since
    return pool


READERS: dict[str, Callable[[FailoverManager], bool]] = {
    "is_healthy": lambda pool: pool.is_healthy("p"),
    "health": lambda pool: pool.health("p").is_healthy,
    "snapshot": lambda pool: next(n for n in pool.snapshot() if n["id"] == "p")["state"] == "probation",
    "healthy_nodes": lambda pool: [n.id for n in pool.healthy_nodes()] == ["p", "s"],
    "get_available_node": lambda pool: getattr(pool.get_available_node(), "id", None) == "p",
    "failover_order": lambda pool: [n.id for n in pool.failover_order()] == ["p", "s"],
    "call_order": lambda pool: getattr(pool.call_order(), "first", None) == pool.nodes[0],
    "readiness": lambda pool: readiness_document(AutoDegradationManager(), pool, None)[0]["status"] == "pass",
}


@pytest.mark.parametrize("reader", list(READERS))
def test_an_expired_ejection_is_healthy_on_probation_in_every_read_path(reader: str) -> None:
    clock = FakeClock()
    pool = ejected_pool(clock)
    with record_signals(signals.node_recovered, sender=pool) as seen:
        assert READERS[reader](pool)  # this reader alone, first after the expiry
    assert seen.named("node-recovered")[0]["reason"] == "ejection-expired"
    (row,) = [n for n in pool.snapshot() if n["id"] == "p"]
    assert row["healthy"] and row["state"] == "probation" and row["down_reason"] is None
    pool.mark_failure("p")  # on probation: one failure ejects it again, for longer
    assert not pool.is_healthy("p") and next(n for n in pool.snapshot() if n["id"] == "p")["ejected_for"] == 60


def test_service_backup_gets_its_primary_back_when_the_ejection_ends() -> None:
    clock = FakeClock()
    backup = ServiceBackup(ServiceNode("p", "http://p"), ServiceNode("s", "http://s"), failure_threshold=1,
                           base_ejection_time=30, clock=clock)
    backup.manager.mark_failure("p")
    assert backup.execute(lambda node: node.id) == "s"
    clock.advance(30)
    assert backup.execute(lambda node: node.id) == "p"


def test_the_badge_keeps_the_first_cause() -> None:
    clock = FakeClock()
    pool = ejected_pool(clock, max_ejection_percent=100)
    pool.mark_failure("p")  # ejected again (passive)
    pool.record_check("p", False, unhealthy_threshold=1)  # a check confirms it is down
    (row,) = [n for n in pool.snapshot() if n["id"] == "p"]
    assert row["state"] == "down" and row["down_reason"] == "passive"


def test_manual_update_is_what_update_health_documents() -> None:
    pool = FailoverManager([ServiceNode("a", "http://a"), ServiceNode("b", "http://b")])
    pool.update_health("a", NodeHealth("a", False, 0.0))
    pool.record_check("a", True, healthy_threshold=2)
    assert not pool.is_healthy("a")
    pool.record_check("a", True, healthy_threshold=2)
    assert pool.is_healthy("a")
