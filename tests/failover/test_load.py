"""Load-aware selection, outcomes judged at send time, outlier detection and slow start,
on a fake clock (the real-server behaviour is in tests/failover/test_sick_nodes.py)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from resilience_mw import FailoverManager, FailoverStrategy, Phase, ServiceNode
from resilience_mw.failover.load import NodeLoad, Tally
from resilience_mw.failover.outliers import find_outliers
from resilience_mw.testing import FakeClock

LOAD_AWARE = [FailoverStrategy.LeastLoaded, FailoverStrategy.FastestResponse]


def nodes(n: int = 5) -> list[ServiceNode]:
    return [ServiceNode(f"n{i}", f"http://n{i}") for i in range(n)]


def pool(strategy: FailoverStrategy, clock: FakeClock, n: int = 5, **kw: Any) -> FailoverManager:
    return FailoverManager(nodes(n), strategy, clock=clock, rng=random.Random(7), **kw)


def simulate(m: FailoverManager, clock: FakeClock, service: dict[str, float], *, clients: int, requests: int) -> Counter[str]:
    """A closed loop of ``clients`` callers on a fake clock: each sends, waits for its
    node's answer (``service`` seconds per request, served one at a time per node, the
    rest queue), and sends again. Returns the requests each node got."""
    busy_until = dict.fromkeys(service, 0.0)
    in_flight: list[tuple[float, str, Any]] = []
    counts: Counter[str] = Counter()
    for _ in range(clients):
        node = m.get_available_node()
        assert node is not None
        sent = m.send(node)
        done = max(clock(), busy_until[node.id]) + service[node.id]
        busy_until[node.id] = done
        in_flight.append((done, node.id, sent))
    for _ in range(requests):
        in_flight.sort(key=lambda item: item[0])
        done, node_id, sent = in_flight.pop(0)
        clock.advance(max(0.0, done - clock()))
        m.done(sent)
        m.mark_success(node_id, clock() - sent.started, sent=sent)
        counts[node_id] += 1
        node = m.get_available_node()
        assert node is not None
        sent = m.send(node)
        finish = max(clock(), busy_until[node.id]) + service[node.id]
        busy_until[node.id] = finish
        in_flight.append((finish, node.id, sent))
    return counts


# ------------------------------------------------------------------ NodeLoad


def test_a_spike_is_believed_at_once_and_forgotten_over_seconds() -> None:
    load = NodeLoad(decay=10.0)
    load.record(0.0, 0.010, True)
    load.record(0.1, 0.500, True)
    assert load.latency == 0.500  # the peak, at once
    load.record(0.2, 0.010, True)
    assert load.latency > 0.49  # 0.1 s later: hardly folded in
    load.record(20.0, 0.010, True)
    assert load.latency < 0.08  # 20 s later the new sample dominates
    assert load.cost(20.0) == pytest.approx(load.latency)
    assert load.cost(50.0) < load.cost(20.0) / 10  # unmeasured for 30 s: decays towards 0


def test_requests_in_flight_raise_the_cost_by_their_age() -> None:
    load = NodeLoad(decay=10.0)
    load.record(0.0, 0.010, True)
    assert load.cost(0.0) == pytest.approx(0.010)
    load.begin(0.0)
    load.begin(0.0)
    assert load.cost(0.0) == pytest.approx(0.030)  # x (2 + 1)
    assert load.cost(1.0) == pytest.approx(3.0, rel=0.01)  # waiting 1 s: as slow as its waits
    load.end(0.0)
    load.end(0.0)
    load.end(0.0)  # one too many is ignored
    assert load.inflight == 0


def test_a_node_whose_request_lost_a_race_is_passed_over_until_it_answers() -> None:
    delay = 0.020  # the caller hedges after 20 ms
    load = NodeLoad()
    load.record(0.0, 0.005, True)
    assert not load.stalling(0.0, delay)
    load.begin(0.0)
    assert not load.stalling(0.010, delay)  # waiting, not yet past the delay
    assert load.stalling(0.030, delay)  # its request waits past the delay: a stall
    load.end(0.0)  # cut at 30 ms: the hedge answered first
    load.lost_race(0.030, 0.030)
    assert load.latency == pytest.approx(0.005)  # not a latency: a busy node loses races too
    assert load.stalling(0.050, delay)  # for as long again as it had waited
    assert not load.stalling(0.061, delay)  # then one call may try it...
    load.begin(0.061)
    assert load.stalling(0.062, delay)  # ...and while that one waits, nobody else
    load.end(0.061)
    load.lost_race(0.091, 0.030)  # it lost its race too: passed over twice as long
    assert load.stalling(0.150, delay) and not load.stalling(0.152, delay)
    for _ in range(10):
        load.lost_race(1.0, 0.030)
    assert load.stalling(1.99, delay) and not load.stalling(2.01, delay)  # at most PASS_OVER_MAX
    load.record(2.02, 0.009, True)  # it answered: the stall is over
    load.begin(2.02)
    assert not load.stalling(2.02, delay)


def test_an_unmeasured_node_is_explored_one_request_at_a_time() -> None:
    load = NodeLoad()
    assert load.cost(0.0) == 0.0  # never measured, idle: the cheapest
    load.begin(0.0)
    assert load.cost(0.0) > 1e5  # one on its way: wait for its answer before another


def test_a_failure_costs_the_penalty_for_a_few_seconds() -> None:
    load = NodeLoad(penalty=1.0)
    load.record(0.0, 0.001, True)
    load.record(0.0, 0.0005, False)  # a fast failure
    assert load.latency == 0.001  # does not make it look faster
    assert load.cost(0.0) == pytest.approx(1.0)  # but it costs the penalty
    assert 0.02 < load.cost(6.0) < 0.1  # fading: tried again within seconds, not a minute
    assert load.cost(12.0) < 0.01
    assert load.take_tally() == Tally(requests=2, failures=1, latency_sum=0.001, fastest=0.001)
    assert load.take_tally() == Tally()


# ------------------------------------------------------------- strategies


@pytest.mark.parametrize("strategy", LOAD_AWARE)
def test_a_node_never_measured_is_tried_not_shunned(strategy: FailoverStrategy, clock: FakeClock) -> None:
    m = pool(strategy, clock, n=3)
    for node_id in ("n0", "n1"):
        for _ in range(5):
            m.mark_success(node_id, 0.010)
    picks = Counter(m.get_available_node().id for _ in range(60))  # type: ignore[union-attr]
    assert picks["n2"] > 0


@pytest.mark.parametrize("strategy", LOAD_AWARE)
def test_a_node_that_stalled_once_is_tried_again(strategy: FailoverStrategy, clock: FakeClock) -> None:
    m = pool(strategy, clock, n=3)
    for node_id in ("n0", "n1", "n2"):
        m.mark_success(node_id, 0.010)
    m.mark_success("n2", 1.0)  # one stall
    assert Counter(m.get_available_node().id for _ in range(50))["n2"] == 0  # type: ignore[union-attr]
    for _ in range(60):  # the others keep answering in 10 ms for a minute
        clock.advance(1.0)
        m.mark_success("n0", 0.010)
        m.mark_success("n1", 0.010)
    assert Counter(m.get_available_node().id for _ in range(50))["n2"] > 0  # type: ignore[union-attr]


@pytest.mark.parametrize("strategy", LOAD_AWARE)
def test_a_node_failing_fast_does_not_attract_traffic(strategy: FailoverStrategy, clock: FakeClock) -> None:
    m = pool(strategy, clock, n=3)
    for _ in range(5):
        for node_id in ("n0", "n1"):
            m.mark_success(node_id, 0.020)
        m.mark_failure("n2")  # fails in a millisecond: fast, but failing
    assert Counter(m.get_available_node().id for _ in range(50))["n2"] == 0  # type: ignore[union-attr]


def test_fastest_response_does_not_herd_on_a_healthy_cluster(clock: FakeClock) -> None:
    m = pool(FailoverStrategy.FastestResponse, clock)
    counts = simulate(m, clock, dict.fromkeys((n.id for n in m.nodes), 0.005), clients=16, requests=5000)
    assert max(counts.values()) <= 0.30 * sum(counts.values()), counts


@pytest.mark.parametrize("strategy", LOAD_AWARE)
def test_a_node_ten_times_slower_gets_little_traffic(strategy: FailoverStrategy, clock: FakeClock) -> None:
    m = pool(strategy, clock)
    service = dict.fromkeys((n.id for n in m.nodes), 0.005) | {"n4": 0.050}
    counts = simulate(m, clock, service, clients=16, requests=5000)
    # its fair share by capacity is 1/41 of the traffic; round-robin would send it 1/5
    assert counts["n4"] <= 0.05 * sum(counts.values()), counts


def test_priority_ties_form_a_tier_balanced_by_load(clock: FakeClock) -> None:
    tier = [ServiceNode(f"t{i}", f"http://t{i}", priority=10) for i in range(3)]
    backup = ServiceNode("backup", "http://backup", priority=1)
    m = FailoverManager([*tier, backup], FailoverStrategy.Priority, clock=clock, rng=random.Random(3))
    counts = simulate(m, clock, {"t0": 0.005, "t1": 0.005, "t2": 0.005, "backup": 0.005}, clients=6, requests=3000)
    assert "backup" not in counts
    assert min(counts.values()) >= 0.25 * 3000, counts


# ----------------------------------------------------- outcomes at send time


def test_a_success_sent_before_an_ejection_does_not_readmit(clock: FakeClock) -> None:
    m = pool(FailoverStrategy.RoundRobin, clock, failure_threshold=2)
    early = m.send(m.nodes[0])  # in flight while the node is ejected
    m.mark_failure("n0")
    m.mark_failure("n0")
    assert m.phase("n0") is Phase.EJECTED
    m.done(early)
    m.mark_success("n0", 0.01, sent=early)
    assert m.phase("n0") is Phase.EJECTED
    late = m.send(m.nodes[0])  # sent while ejected (panic routing, a probe): its answer counts
    m.done(late)
    m.mark_success("n0", 0.01, sent=late)
    assert m.phase("n0") is Phase.HEALTHY


# ---------------------------------------------------------- outlier detection


def test_a_node_failing_a_fifth_of_its_requests_is_an_outlier(clock: FakeClock) -> None:
    m = pool(FailoverStrategy.RoundRobin, clock)
    tallies = {f"n{i}": Tally(200, 0, 1.0) for i in range(4)} | {"n4": Tally(200, 40, 0.8)}
    assert [(nid, str(reason)) for nid, reason, _ in find_outliers(tallies, m.config)] == [("n4", "success-rate")]


def test_noise_alone_ejects_nobody() -> None:
    rng = random.Random(11)
    config = FailoverManager(nodes(), "RoundRobin").config
    ejected = 0
    for _ in range(500):  # 500 intervals of 5 nodes failing 2 % at random
        tallies = {}
        for i in range(5):
            requests = rng.randrange(100, 2000)
            failures = sum(rng.random() < 0.02 for _ in range(requests))
            tallies[f"n{i}"] = Tally(requests, failures, 0.005 * (requests - failures))
        ejected += len(find_outliers(tallies, config))
    assert ejected == 0


def test_failure_percentage_and_latency_rules() -> None:
    config = FailoverManager(nodes(), "RoundRobin").config
    # queueing at busy nodes raises their mean: only the fastest answers tell a slow node
    tallies = {f"n{i}": Tally(200, 2, 198 * 0.030, fastest=0.005) for i in range(3)}
    tallies["slow"] = Tally(200, 0, 200 * 0.050, fastest=0.045)
    tallies["broken"] = Tally(200, 175, 25 * 0.005, fastest=0.004)
    found = {nid: str(reason) for nid, reason, _ in find_outliers(tallies, config)}
    assert found == {"broken": "failure-percentage", "slow": "latency"}
    few = {nid: t for nid, t in tallies.items() if nid != "n0"}  # four hosts: below outlier_min_hosts
    assert find_outliers(few, config) == []
    quiet = tallies | {"slow": Tally(10, 0, 0.5, fastest=0.045)}  # too few answers to judge
    assert "slow" not in {nid for nid, _, _ in find_outliers(quiet, config)}


def test_outliers_are_ejected_every_interval_within_the_cap(clock: FakeClock) -> None:
    m = pool(FailoverStrategy.RoundRobin, clock, n=6, outlier_interval=10, max_ejection_percent=20,
             failure_threshold=1000)
    for _ in range(2):  # two broken nodes over the first interval
        for i in range(6):
            for k in range(50):
                if i >= 4 and k % 10:
                    m.mark_failure(f"n{i}")
                else:
                    m.mark_success(f"n{i}", 0.005)
        clock.advance(5)
    assert all(row["healthy"] for row in m.snapshot())  # compared only once the interval is over
    m.mark_success("n0", 0.005)  # the first outcome after it compares: the cap lets one out
    out = [row for row in m.snapshot() if not row["healthy"]]
    assert [(row["down_reason"], row["state"]) for row in out] == [("failure-percentage", "ejected")]


# ------------------------------------------------------------------ slow start


@pytest.mark.parametrize("strategy", [s for s in FailoverStrategy if s is not FailoverStrategy.Priority])
def test_a_returning_node_ramps_up(strategy: FailoverStrategy, clock: FakeClock) -> None:
    m = pool(strategy, clock, failure_threshold=1, base_ejection_time=10, slow_start_window=30)
    for node in m.nodes:
        m.mark_success(node.id, 0.005)
    m.mark_failure("n0")
    clock.advance(10)  # its ejection ends: offered again, on probation
    early = Counter(m.get_available_node().id for _ in range(2000))  # type: ignore[union-attr]
    assert early["n0"] <= 0.10 * 2000 * 0.2 + 40, early  # ~10 % of its share in the first tenth
    clock.advance(30)
    late = Counter(m.get_available_node().id for _ in range(2000))  # type: ignore[union-attr]
    if strategy in (FailoverStrategy.RoundRobin, FailoverStrategy.WeightedRoundRobin):
        assert late["n0"] == 400  # its full share again
    elif strategy is FailoverStrategy.Random:
        assert late["n0"] > 300


def test_a_returning_primary_ramps_up_too(clock: FakeClock) -> None:
    m = FailoverManager(
        [ServiceNode("p", "http://p", priority=10), ServiceNode("s", "http://s", priority=5)],
        "Priority", failure_threshold=1, base_ejection_time=10, clock=clock, rng=random.Random(1),
    )
    m.mark_failure("p")
    clock.advance(10)
    assert Counter(m.get_available_node().id for _ in range(1000))["p"] <= 140  # type: ignore[union-attr]
    clock.advance(15)
    assert 450 <= Counter(m.get_available_node().id for _ in range(1000))["p"] <= 750  # type: ignore[union-attr]
    clock.advance(15)
    assert Counter(m.get_available_node().id for _ in range(1000))["p"] == 1000  # type: ignore[union-attr]


def test_a_passing_health_check_does_not_end_an_outlier_ejection(clock: FakeClock) -> None:
    m = pool(FailoverStrategy.RoundRobin, clock, base_ejection_time=30, slow_start_window=0)
    tallies = {f"n{i}": Tally(200, 0, 1.0, 0.004) for i in range(4)} | {"n4": Tally(200, 40, 0.8, 0.004)}
    assert m.eject_outliers(tallies) == ["n4"]
    m.record_check("n4", True, 0.001, healthy_threshold=1)  # /health answers: its traffic did not
    assert m.phase("n4") is Phase.EJECTED
    clock.advance(30)  # its timer does: on probation
    assert m.phase("n4") is Phase.PROBATION
    for _ in range(5):
        m.mark_failure("n1")
    assert m.phase("n1") is Phase.EJECTED
    m.record_check("n1", True, 0.001)  # a passive ejection still ends on a passing check
    assert m.phase("n1") is Phase.HEALTHY
