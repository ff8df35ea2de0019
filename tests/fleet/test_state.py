"""Shared state through real stores (a SQLite file, a real redis-server), several workers
simulated in one process by several syncs with names of their own."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

from resilience_mw import (
    AutoDegradationManager,
    ConfigError,
    DegradationLevel,
    FailoverManager,
    ServiceNode,
    readiness_document,
)
from resilience_mw.config import StateConfig
from resilience_mw.failover.health import HealthChecker
from resilience_mw.fleet.store import StateStore, StoreError
from resilience_mw.fleet.stores import open_store
from resilience_mw.fleet.sync import StateSync
from resilience_mw.testing import FakeClock
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


def worker(url: str, name: str, *, nodes: list[ServiceNode] | None = None, **config: Any) -> StateSync:
    """One simulated worker: its own manager, pool and store connection."""
    store = open_store(url)
    pool = FailoverManager(nodes, failure_threshold=1, max_ejection_percent=100) if nodes else None
    return StateSync(store, AutoDegradationManager(), pool, config=StateConfig(url=url, **config), name=name)


def test_a_forced_level_reaches_every_worker_and_a_clear_clears_all(store_url: str) -> None:
    a, b, c = (worker(store_url, n) for n in "abc")
    for w in (a, b, c):
        w.exchange()
    a.force("Level3")
    assert a.degradation.current_level() is DegradationLevel.Level3  # the one that was asked: at once
    for w in (b, c):
        w.exchange()
        assert w.degradation.current_level() is DegradationLevel.Level3
    c.clear()
    for w in (a, b):
        w.exchange()
    assert {w.degradation.current_level() for w in (a, b, c)} == {DegradationLevel.Normal}


def test_an_override_with_a_ttl_lapses_everywhere(store_url: str) -> None:
    a, b = worker(store_url, "a"), worker(store_url, "b")
    a.force("Level2", ttl=0.3)
    b.exchange()
    assert b.degradation.current_level() is DegradationLevel.Level2
    import time

    time.sleep(0.4)  # a store TTL: the store's clock decides
    for w in (a, b):
        w.exchange()
        assert w.degradation.current_level() is DegradationLevel.Normal


NODES = [ServiceNode("x", "http://x"), ServiceNode("y", "http://y")]


def test_a_node_one_worker_finds_down_is_avoided_by_the_others(store_url: str) -> None:
    a, b, c = (worker(store_url, n, nodes=NODES, eject_quorum=1) for n in "abc")
    assert a.pool is not None and b.pool is not None and c.pool is not None
    a.pool.mark_failure("x")  # a's own traffic ejects x
    a.exchange()
    c.pool.mark_success("x", 0.01)  # c just talked to x: its own evidence wins
    for w in (b, c):
        w.exchange()
    assert not b.pool.is_healthy("x") and next(r for r in b.pool.snapshot() if r["id"] == "x")["down_reason"] == "shared"
    assert c.pool.is_healthy("x")
    a.pool.mark_success("x", 0.01)  # x answers a again: a withdraws its report
    a.exchange()
    b.exchange()
    assert b.pool.is_healthy("x")


def test_quorum_two_needs_two_reporters(store_url: str) -> None:
    a, b, c = (worker(store_url, n, nodes=NODES, eject_quorum=2) for n in "abc")
    assert a.pool is not None and b.pool is not None and c.pool is not None
    a.pool.mark_failure("x")
    a.exchange()
    c.exchange()
    assert c.pool.is_healthy("x")  # one partitioned worker does not take x out everywhere
    b.pool.mark_failure("x")
    b.exchange()
    c.exchange()
    assert not c.pool.is_healthy("x")


def test_one_checker_holds_the_lease_and_another_takes_over(store_url: str) -> None:
    syncs = []
    for n in "abc":
        w = worker(store_url, n, nodes=NODES)
        w.checker = HealthChecker(check_interval=0.2, timeout=0.1, probe=lambda node, timeout: True)
        syncs.append(w)
    try:
        for w in syncs:
            w.exchange()
        assert [w.leader for w in syncs] == [True, False, False]
        assert [w.checker.running for w in syncs if w.checker] == [True, False, False]
        syncs[0].stop()  # the leader goes away (it gives the lease up)
        for w in syncs[1:]:
            w.exchange()
        assert [w.leader for w in syncs[1:]] == [True, False]
    finally:
        for w in syncs:
            w.stop()
            if w.checker is not None:
                w.checker.stop()


def test_a_dead_checker_is_replaced_when_its_lease_lapses(store_url: str) -> None:
    import time

    syncs = []
    for n in "ab":
        w = worker(store_url, n, nodes=NODES, sync_interval=0.1)
        w.checker = HealthChecker(check_interval=0.2, timeout=0.1, probe=lambda node, timeout: True)
        syncs.append(w)
    leader, follower = syncs
    try:
        leader.exchange()
        follower.exchange()
        assert leader.leader and not follower.leader
        # the leader dies without a word: no release, no more renewals
        assert leader.checker is not None
        leader.checker.stop()
        time.sleep(0.45)  # the lease: 2 x max(sync, check interval) = 0.4 s
        follower.exchange()
        assert follower.leader and follower.checker is not None and follower.checker.running
    finally:
        for w in syncs:
            if w.checker is not None:
                w.checker.stop()


def test_a_store_that_fails_costs_one_log_line_and_is_caught_up_with(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    store = open_store(redis_server.url)
    sync = StateSync(store, AutoDegradationManager(), config=StateConfig(url=redis_server.url), clock=clock, name="w")
    other = worker(redis_server.url, "other")
    sync._tick()
    assert sync.status()["status"] == "pass"
    redis_server.kill()
    with caplog.at_level(logging.WARNING, logger="resilience_mw.fleet.sync"):
        for _ in range(20):
            clock.advance(1)
            sync._tick()
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    status = sync.status()
    assert status["status"] == "warn" and status["outage_seconds"] >= 19
    doc, code = readiness_document(sync.degradation, None, DegradationLevel.Emergency, state=status)
    assert code == 200 and doc["status"] == "warn" and doc["checks"]["state:store"][0]["status"] == "warn"
    assert "pass" not in str(doc["checks"]["state:store"][0]["output"])
    redis_server.start()  # same port
    other.force("Level1")
    clock.advance(60)  # past the capped back-off
    sync._tick()
    assert sync.status()["status"] == "pass"
    assert sync.degradation.current_level() is DegradationLevel.Level1  # resynchronised


def test_store_errors_are_store_errors(tmp_path: Path) -> None:
    store: StateStore = open_store(f"sqlite://{tmp_path}/s.db")
    os.remove(tmp_path / "s.db")
    (tmp_path / "s.db").mkdir()  # the file is now a directory: every statement fails
    store.close()
    with pytest.raises(StoreError):
        store.override()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://localhost/db",
        "sqlite://relative.db",
        "sqlite:///no/such/dir/state.db",
        "redis://127.0.0.1:notaport/0",
        "redis://127.0.0.1:6379/0?namespace=bad name",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url, field="RESILIENCE_STATE_URL")
    assert info.value.field == "RESILIENCE_STATE_URL"


def test_a_wrong_redis_password_is_a_config_error_without_the_password(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="right-one").start()
    try:
        wrong = server.url.replace("right-one", "wrong-one")
        with pytest.raises(ConfigError) as info:
            open_store(wrong, field="RESILIENCE_STATE_URL")
        assert "wrong-one" not in str(info.value) and "credentials" in str(info.value)
        assert open_store(server.url).now() > 0
    finally:
        server.stop()


def test_a_sqlite_file_in_a_read_only_directory_is_refused_at_startup(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="resilience-ro-"))  # /tmp: any user may reach it
    base.chmod(0o755)
    locked = base / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from flask import Flask
        from resilience_mw import ConfigError
        from resilience_mw.flask_ext import Resilience
        import resilience_mw.fleet.stores, resilience_mw.fleet.sync  # (loaded on demand: load them while this Python is readable)
        if os.getuid() == 0:  # root writes anywhere: be a user who cannot
            os.setgid(65534)
            os.setuid(65534)
        app = Flask("ro")
        app.config["RESILIENCE_STATE_URL"] = "sqlite://{locked}/state.db"
        try:
            Resilience(app)
        except ConfigError as exc:
            print("ConfigError", exc.field)
        """
    )
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
        assert not (locked / "state.db").exists()
    finally:
        shutil.rmtree(base)
    assert done.stdout.strip() == "ConfigError RESILIENCE_STATE_URL", done.stdout + done.stderr


def test_an_alert_is_raised_once_per_store_scope(store_url: str) -> None:
    from resilience_mw import AlertRules, signals
    from resilience_mw.testing import record_signals

    workers = [worker(store_url, n) for n in "abc"]
    rules = [AlertRules(level_sender=w.degradation, once=w.once, failovers=False) for w in workers]
    with record_signals(signals.alert) as seen:
        for w in workers:
            w.degradation.force_level("Level3")  # every worker sees the same incident
        assert seen.events == []  # nothing waits on the store in the sender's thread
        for w in workers:
            w.exchange()
    assert [e["kind"] for e in seen.named("alert")] == ["degradation"]
    assert sorted(len(r.fired) for r in rules) == [0, 0, 1]  # one worker's rules raised it


def test_a_fleet_retry_budget_holds_for_every_worker_together(store_url: str, node_factory: Any) -> None:
    import requests

    from resilience_mw.adapter import FailoverAdapter
    from tests.nodes import free_port

    live = node_factory("live")
    dead = f"http://127.0.0.1:{free_port()}"  # refuses every connection: every request fails over

    def one_worker(name: str) -> tuple[StateSync, requests.Session]:
        adapter = FailoverAdapter(
            [ServiceNode("dead", dead, priority=2), ServiceNode("live", live.url, priority=1)],
            failure_threshold=1_000_000,  # never ejected: the budget alone limits the failovers
        )
        session = requests.Session()
        session.mount("http://svc/", adapter)
        sync = StateSync(open_store(store_url), AutoDegradationManager(), name=name, budget=adapter.budget,
                         config=StateConfig(url=store_url, retry_budget_scope="fleet"))
        return sync, session

    def send(session: requests.Session, n: int) -> int:
        served = 0
        for _ in range(n):
            with contextlib.suppress(requests.ConnectionError):  # the budget was spent
                served += session.get("http://svc/x", timeout=2).status_code == 200
        return served

    (a, session_a), (b, session_b) = one_worker("a"), one_worker("b")
    served_a = send(session_a, 100)
    assert served_a == 30  # alone: its own minimum, 3 per second of the 10 s window
    a.exchange()
    b.exchange()  # b now counts a's 100 requests and 30 extra attempts
    served_b = send(session_b, 100)
    # together: 20 % of the fleet's 200 requests (40), not 30 more for b alone
    assert served_a + served_b == live.hits("/x")
    assert 8 <= served_b <= 11, served_b
    assert b.budget is not None and b.budget.allowed()[:2] == (200, 30 + served_b)


def test_a_fleet_error_rate_counts_every_workers_requests(store_url: str) -> None:
    from resilience_mw.degradation.load import Sample

    workers = []
    for n in "abc":
        w = worker(store_url, n, error_rate_scope="fleet")
        w.degradation = AutoDegradationManager(sampler=lambda: Sample(cpu=1.0, memory=1.0))
        workers.append(w)
    a, b, c = workers
    for _ in range(60):
        a.degradation.record_request(False)
    for _ in range(40):
        a.degradation.record_request(True)
    for w in (b, c):
        for _ in range(100):
            w.degradation.record_request(True)
    for w in workers * 2:  # the second round sees every window
        w.exchange()
    for w in workers:
        w.degradation.evaluate()
        figures = w.degradation.figures()
        assert figures["requests"] == 300 and figures["error_rate"] == pytest.approx(0.2), figures
