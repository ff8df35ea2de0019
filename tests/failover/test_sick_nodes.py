"""Sick, not dead, on real servers: outlier ejection by peers, outcomes judged at send
time, slow start, hedging, client-side throttling (issue: sick nodes)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests

from resilience_mw import (
    AutoDegradationManager,
    DegradationLevel,
    FailoverAdapter,
    Phase,
    ServiceNode,
    UpstreamThrottled,
    readiness_document,
    signals,
)
from resilience_mw.adapter import ResponseTooLarge
from resilience_mw.failover.budget import RetryBudget
from resilience_mw.wsgi import ResilienceMiddleware
from tests.nodes import NodeServer

BASE = "http://svc"


def session_for(nodes: list[NodeServer], **kw: Any) -> tuple[requests.Session, FailoverAdapter]:
    adapter = FailoverAdapter([ServiceNode(n.name, n.url) for n in nodes], pool_maxsize=16, **kw)
    session = requests.Session()
    session.mount(f"{BASE}/", adapter)
    return session, adapter


@contextlib.contextmanager
def traffic(call: Callable[[], object], threads: int) -> Iterator[list[int]]:
    """``call`` in a loop on ``threads`` threads until the block ends; yields the count."""
    stop = threading.Event()
    done = [0]

    def loop() -> None:
        while not stop.is_set():
            call()
            done[0] += 1

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    try:
        yield done
    finally:
        stop.set()
        for w in workers:
            w.join(10)


@contextlib.contextmanager
def events(signal: Any) -> Iterator[list[tuple[float, dict[str, Any]]]]:
    seen: list[tuple[float, dict[str, Any]]] = []

    def receiver(sender: Any, **kw: Any) -> None:
        seen.append((time.monotonic(), kw))

    signal.connect(receiver)
    try:
        yield seen
    finally:
        signal.disconnect(receiver)


def five(node_factory: Any, service_time: float = 0.005) -> list[NodeServer]:
    nodes = [node_factory(f"n{i}") for i in range(5)]
    for n in nodes:
        n.service_time = service_time
    return nodes


def test_a_node_failing_a_fifth_of_its_requests_is_ejected_and_stays_out(node_factory: Any) -> None:
    nodes = five(node_factory)
    bad = nodes[4]
    bad.fail_every = 5  # 20 %, never two in a row: the consecutive rule never fires
    bad.service_time = 0.05  # slow enough that requests are in flight to it when it goes
    interval = 1.0
    session, adapter = session_for(
        nodes, strategy="RoundRobin", outlier_interval=interval, outlier_min_requests=20, base_ejection_time=30
    )
    with events(signals.node_marked_unhealthy) as down, events(signals.node_recovered) as up:
        started = time.monotonic()
        with traffic(lambda: session.get(f"{BASE}/x", timeout=5), threads=8):
            assert _wait(lambda: down, timeout=2 * interval + 3)
            ejected_at = down[0][0]
            hits_then = bad.hits()
            time.sleep(1.0)  # the requests in flight to it come back, fine, meanwhile
        assert [(kw["node"].id, kw["reason"]) for _, kw in down] == [("n4", "success-rate")]
        assert ejected_at - started <= 2 * interval + 0.5  # within two intervals (a busy machine's slack)
        assert up == []  # not readmitted by the successes of requests sent before
        assert adapter.manager.phase("n4") is Phase.EJECTED
        assert bad.hits() - hits_then <= 8  # at most what was in flight when it went
    doc, status = readiness_document(AutoDegradationManager(), adapter.manager, None)
    assert status == 200 and "n4 (success-rate)" in doc["output"]  # /readyz says which and why
    (row,) = [c for c in doc["checks"]["upstream:responseTime"] if c["componentId"] == "n4"]
    assert (row["status"], row["output"]) == ("fail", "ejected (success-rate)")


def test_every_node_failing_two_percent_ejects_nobody(node_factory: Any) -> None:
    nodes = five(node_factory, service_time=0.0)
    for i, n in enumerate(nodes):
        n.fail_rate = 0.02
        n.rng.seed(i)
    session, _ = session_for(nodes, strategy="RoundRobin", outlier_interval=0.5)
    with (
        events(signals.node_marked_unhealthy) as down,
        traffic(lambda: session.get(f"{BASE}/x", timeout=5), threads=8) as done,
    ):
        assert _wait(lambda: done[0] >= 10_000, timeout=120)
    assert sum(n.hits() for n in nodes) >= 10_000
    assert down == [], [(kw["node"].id, kw["reason"]) for _, kw in down]


def test_a_returning_node_ramps_up_from_a_tenth(node_factory: Any) -> None:
    nodes = five(node_factory)
    first = nodes[0]
    first.mode = "error"
    window = 4.0
    session, adapter = session_for(
        nodes, strategy="RoundRobin", failure_threshold=1, base_ejection_time=1.0, slow_start_window=window
    )
    with events(signals.node_recovered) as up, traffic(lambda: session.get(f"{BASE}/x", timeout=5), threads=8):
        assert _wait(lambda: adapter.manager.phase("n0") is Phase.EJECTED, timeout=5)
        first.mode = "ok"
        assert _wait(lambda: up, timeout=5)
        returned = up[0][0]
        time.sleep(window / 10 + 0.3)
    early = [t for n in nodes for t in n.arrivals if returned <= t < returned + window / 10]
    mine = [t for t in first.arrivals if returned <= t < returned + window / 10]
    assert len(early) >= 30  # enough traffic in that tenth to judge a share
    assert len(mine) <= 0.10 * len(early), (len(mine), len(early))


def hedging_session(
    node_factory: Any, *, warm_service_time: float = 0.0, **kw: Any
) -> tuple[requests.Session, FailoverAdapter, NodeServer, NodeServer]:
    primary, backup = node_factory("p"), node_factory("b")
    primary.service_time = backup.service_time = warm_service_time
    adapter = FailoverAdapter(
        [ServiceNode("p", primary.url, priority=2), ServiceNode("b", backup.url, priority=1)],
        hedge_max_extra_load=0.2,
        slow_start_window=0,
        **kw,
    )
    session = requests.Session()
    session.mount(f"{BASE}/", adapter)
    for _ in range(80):  # latencies to take the hedge delay from
        session.get(f"{BASE}/warm", timeout=5)
    hedgers = adapter._hedgers  # the warm-up's own hedges, if any, are over
    if hedgers is not None:
        adapter._hedgers = None
        hedgers.shutdown(wait=True)
    primary.service_time = 0.5  # then the primary turns slow
    primary.requests.clear()
    backup.requests.clear()
    adapter.hedges_sent = 0  # (the warm-up's own slowest calls may have been hedged)
    assert adapter.hedging is not None  # and on a busy machine they may have spent the hedge budget:
    adapter.hedging.budget = RetryBudget(0.2, 1.0, 10.0)  # the test's hedges start from a fresh one
    return session, adapter, primary, backup


def test_a_slow_get_is_hedged_and_the_first_answer_wins(node_factory: Any) -> None:
    session, adapter, primary, backup = hedging_session(node_factory)
    with events(signals.hedge_sent) as hedges:
        started = time.monotonic()
        r = session.get(f"{BASE}/x", timeout=5)
        took = time.monotonic() - started
    assert r.status_code == 200 and r.json()["node"] == "b" and r.resilience_node == "b"  # type: ignore[attr-defined]
    assert took < 0.4  # not the primary's 0.5 s
    assert adapter.hedges_sent == 1 and [kw["to_node"].id for _, kw in hedges] == ["b"]
    assert primary.hits("/x") == 1 and backup.hits("/x") == 1


def test_callers_do_not_queue_into_a_stalled_node_one_after_another(node_factory: Any) -> None:
    """Once a call to the stalled primary lost its race, calls go to the other node first:
    the primary gets one request at a time to try it, not every caller's."""
    # answers of 20 ms (a delay of about that, not the sub-millisecond of an idle loopback)
    session, adapter, primary, _ = hedging_session(node_factory, warm_service_time=0.02)
    assert adapter.hedging is not None
    adapter.hedging.budget = RetryBudget(0.2, 3.0, 10.0)  # the first callers all go to the primary
    answers: list[tuple[int, str]] = []

    def caller() -> None:
        for _ in range(6):
            r = session.get(f"{BASE}/x", timeout=5)
            answers.append((r.status_code, r.json()["node"]))

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == 36 and {status for status, _ in answers} == {200}
    # each caller's first call (6), then a few, one at a time; without passing over it: all 36
    assert primary.hits("/x") <= 24, primary.hits("/x")
    assert sum(node == "b" for _, node in answers) >= 18


def test_no_hedge_storm_while_every_node_is_slow(node_factory: Any) -> None:
    """Calls late on most nodes at once: the upstream as a whole is slow (a node fell out,
    the others queue), and hedges would only add to its load."""
    servers = [node_factory(f"n{i}") for i in range(3)]
    adapter = FailoverAdapter(
        [ServiceNode(s.name, s.url) for s in servers], "RoundRobin", hedge_max_extra_load=0.2, slow_start_window=0
    )
    session = requests.Session()
    session.mount(f"{BASE}/", adapter)
    for _ in range(80):
        session.get(f"{BASE}/warm", timeout=5)
    for s in servers:
        s.service_time = 0.3  # every node slows down at once
    assert adapter.hedging is not None
    adapter.hedging.budget = RetryBudget(0.2, 3.0, 10.0)
    adapter.hedges_sent = 0
    threads = [threading.Thread(target=lambda: session.get(f"{BASE}/x", timeout=5)) for _ in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sum(s.hits("/x") for s in servers) <= 9 + 3, [s.hits("/x") for s in servers]
    assert adapter.hedges_sent <= 3  # (the first calls may be hedged before the others are late)


def test_a_post_without_an_idempotency_key_is_never_hedged(node_factory: Any) -> None:
    session, adapter, primary, backup = hedging_session(node_factory)
    for i in range(5):
        r = session.post(f"{BASE}/pay", data=f"order {i}", timeout=5)
        assert r.json()["node"] == "p"
    assert adapter.hedges_sent == 0
    assert (primary.hits("/pay"), backup.hits("/pay")) == (5, 0)  # each reached one node, once
    r = session.post(f"{BASE}/pay", data="order 5", headers={"Idempotency-Key": "k5"}, timeout=5)
    assert r.json()["node"] == "b" and adapter.hedges_sent == 1  # safe to send twice: hedged


def test_no_hedge_from_level1(node_factory: Any) -> None:
    degradation = AutoDegradationManager()
    session, adapter, _, backup = hedging_session(node_factory, degradation=degradation)
    degradation.force_level(DegradationLevel.Level1)
    r = session.get(f"{BASE}/x", timeout=5)
    assert r.json()["node"] == "p" and adapter.hedges_sent == 0 and backup.hits("/x") == 0
    degradation.clear_override()
    assert session.get(f"{BASE}/x", timeout=5).json()["node"] == "b" and adapter.hedges_sent == 1


def test_throttling_brings_the_load_down_to_what_the_upstream_accepts(node_factory: Any) -> None:
    upstream = node_factory("up")
    window = 5.0
    session, _ = session_for([upstream], throttle=True, throttle_window=window)
    refused: dict[str, int] = {"/core": 0, "/other": 0}

    def app(environ: Any, start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        try:
            status = session.get(f"{BASE}{path}", timeout=5).status_code
        except UpstreamThrottled:
            refused[path] += 1
            status = 503
        start_response(f"{status} X", [("Content-Type", "text/plain")])
        return [b""]

    front = ResilienceMiddleware(app, AutoDegradationManager(), core_paths=("/core",))  # core: critical_plus
    rate, capacity = 100.0, 25.0  # offered per second; the upstream's capacity after the drop
    sent = {"/core": 0, "/other": 0}

    def paced(thread: int, threads: int, until: float) -> None:
        k = thread
        start = time.monotonic()
        while time.monotonic() < until:
            path = "/core" if k % 20 == 0 else "/other"  # 5 % critical_plus
            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.input": None}
            front(environ, lambda *a: None)
            sent[path] += 1
            k += threads
            time.sleep(max(0.0, start + (k // threads) * threads / rate - time.monotonic()))

    def run(seconds: float) -> None:
        until = time.monotonic() + seconds
        workers = [threading.Thread(target=paced, args=(i, 4, until)) for i in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(seconds + 10)

    run(2.0)  # healthy: nothing refused
    assert refused == {"/core": 0, "/other": 0}
    upstream.capacity = capacity  # a quarter of what is offered
    dropped = time.monotonic()
    run(window + 3.0)
    arrivals = [t for t in upstream.arrivals if dropped + window <= t]
    measured = time.monotonic() - (dropped + window)
    offered = len(arrivals) / measured
    assert offered <= 1.3 * capacity, offered
    assert refused["/core"] == 0 and sent["/core"] > 0  # every critical_plus call was attempted
    assert refused["/other"] > 0


def _wait(cond: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return bool(cond())



def test_a_hedge_cuts_a_primary_stuck_connecting_before_it_sends_a_byte(node_factory: Any) -> None:
    """The primary's node stops accepting (its accept queue full: a SYN goes unanswered);
    the hedge answers; the primary's connection, once made, is shut before the request
    is written, and its node is not blamed."""
    import socket

    session, adapter, primary, _ = hedging_session(node_factory)
    port = primary.port
    primary.stop()
    hole = socket.socket()
    hole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    hole.bind(("127.0.0.1", port))
    hole.listen(0)
    fillers = []
    for _ in range(3):  # fill the accept queue: later connects wait for a SYN retry
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", port))
        fillers.append(f)
    adapter.poolmanager.clear()  # no kept-alive connection to the old server
    try:
        time.sleep(0.2)
        r = session.get(f"{BASE}/x", timeout=(1.5, 5))
        assert r.json()["node"] == "b" and adapter.hedges_sent == 1
        assert adapter.manager.health("p").consecutive_failures == 0  # nobody blamed
        hole.settimeout(0.5)
        received = b""
        with contextlib.suppress(OSError):
            while True:  # whatever connected: not one byte of a request
                conn, _ = hole.accept()
                conn.settimeout(0.5)
                with contextlib.suppress(OSError):
                    received += conn.recv(1024)
                conn.close()
        assert b"GET" not in received
    finally:
        hole.close()
        for f in fillers:
            f.close()
    assert all(load.inflight == 0 for load in adapter.manager.loads.values())


def test_a_primary_that_fails_while_its_hedge_runs_gets_the_hedges_answer(node_factory: Any) -> None:
    session, adapter, primary, backup = hedging_session(node_factory)
    primary.service_time = 0.3
    primary.fail_every = 1  # after 0.3 s, a 500
    backup.service_time = 0.5  # the hedge, sent at the delay, answers after the primary failed
    r = session.get(f"{BASE}/x", timeout=5)
    assert r.status_code == 200 and r.json()["node"] == "b" and adapter.hedges_sent == 1
    primary.fail_every = 0
    primary.service_time = 0.5
    backup.service_time = 0.8
    r = session.get(f"{BASE}/x", timeout=5)  # the primary wins this time: the hedge is cut
    assert r.json()["node"] == "p" and adapter.hedges_sent == 2
    assert _wait(lambda: all(load.inflight == 0 for load in adapter.manager.loads.values()), 5)


def test_the_throttle_does_not_count_the_callers_own_errors(node_factory: Any) -> None:
    upstream = node_factory("up")
    session, adapter = session_for([upstream], throttle=True, max_body_bytes=4)
    for _ in range(50):
        with contextlib.suppress(ResponseTooLarge):  # a body over max_body_bytes: the caller's limit
            session.get(f"{BASE}/x", timeout=5)
    assert adapter.throttle is not None
    assert adapter.throttle.totals() == (0, 0) and adapter.throttle.probability() == 0.0
