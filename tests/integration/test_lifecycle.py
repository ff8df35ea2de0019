"""Background threads that never leak: bounded checks, race-free start/stop, threads
that end with their owner, an exit that waits on nothing, receivers that cannot kill a
worker. Real sockets, real threads, real processes."""

from __future__ import annotations

import gc
import socket
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from resilience_mw import AutoDegradationManager, FailoverManager, HealthChecker, ServiceNode, signals
from resilience_mw.config import DegradationConfig
from resilience_mw.degradation.load import Sample
from resilience_mw.flask_ext import Resilience
from resilience_mw.testing import stop_all_workers, workers_off
from tests.helpers import library_threads, wait_for
from tests.hostile import RawServer, read_request

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_threads_left_behind() -> Any:
    assert stop_all_workers(5)
    yield
    stop_all_workers(5)


def trickle_head(sock: socket.socket, server: RawServer) -> None:
    """A status line, then one header byte every 20 ms, for ever."""
    if read_request(sock, server) is None:
        return
    sock.sendall(b"HTTP/1.1 200 OK\r\n")
    while True:
        sock.sendall(b"X")
        time.sleep(0.02)


def hang(sock: socket.socket, server: RawServer) -> None:
    if read_request(sock, server) is None:
        return
    while sock.recv(1024):  # until the client goes away
        pass


def test_a_trickled_head_holds_no_thread_past_its_timeout() -> None:
    server = RawServer(trickle_head)
    concurrency = 2
    pool = FailoverManager([ServiceNode("a", server.url), ServiceNode("b", server.url + "/b")])
    checker = HealthChecker(check_interval=0.01, timeout=0.15, jitter=0, max_workers=concurrency)
    most = 0
    checker.start(pool)
    try:
        deadline = time.monotonic() + 30
        while checker.rounds < 20 and time.monotonic() < deadline:
            most = max(most, len(library_threads()))
            time.sleep(0.01)
        assert checker.rounds >= 20
    finally:
        assert checker.stop(2)
        server.stop()
    assert most <= concurrency + 1  # the checking threads (scheduler included) and the watchdog
    assert not pool.is_healthy("a") and not pool.is_healthy("b")
    assert wait_for(lambda: not any(t.name == "resilience_mw-health-check" for t in library_threads()), 1)


def test_concurrent_starts_then_one_stop_leave_no_thread(node_factory: Any) -> None:
    node = node_factory("a")
    pool = FailoverManager([ServiceNode("a", node.url)])
    checker = HealthChecker(check_interval=0.05, timeout=1)
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        checker.start(pool)

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda _: start(), range(8)))
    assert sum(t.name == "resilience_mw-health" for t in library_threads()) == 1
    assert checker.stop(2)
    assert not any(t.name.startswith("resilience_mw-health") for t in library_threads())


def test_start_after_a_stop_that_timed_out_runs_again() -> None:
    server = RawServer(hang)
    pool = FailoverManager([ServiceNode("a", server.url)])
    checker = HealthChecker(check_interval=0.05, timeout=0.5, jitter=0)
    try:
        checker.start(pool)
        assert wait_for(lambda: server.count() == 1, 2)  # a check is in progress, hung
        assert checker.stop(timeout=0.01) is False  # it is still finishing that check
        checker.start(pool)
        assert checker.running
        rounds = checker.rounds
        assert wait_for(lambda: checker.rounds >= rounds + 2, 3)  # the new thread checks
        assert server.count() >= 2
    finally:
        assert checker.stop(2)
        server.stop()
    assert not any(t.name.startswith("resilience_mw-health") for t in library_threads())


def test_a_dropped_checker_takes_its_thread_with_it(node_factory: Any) -> None:
    node = node_factory("a")
    pool = FailoverManager([ServiceNode("a", node.url)])
    checker = HealthChecker(check_interval=0.05, timeout=1)
    checker.start(pool)
    assert wait_for(lambda: node.hits("/health", exclude_health=False) > 0)
    owner = weakref.ref(checker)
    del checker
    # the thread holds it only while a round runs (a few ms), never while it waits
    assert wait_for(lambda: gc.collect() >= 0 and owner() is None, 1)
    assert wait_for(lambda: not any(t.name == "resilience_mw-health" for t in library_threads()), 0.5)


def make_app(endpoint: str) -> Flask:
    app = Flask("lifecycle")
    app.config.update(
        RESILIENCE_START="eager",
        RESILIENCE_SAMPLE_INTERVAL=1.0,
        RESILIENCE_NODES=[{"id": "a", "endpoint": endpoint}],
        RESILIENCE_HEALTH_CHECK_INTERVAL=1.0,
        RESILIENCE_HEALTH_CHECK_TIMEOUT=0.5,
    )
    Resilience(app)
    return app


def test_twenty_dropped_apps_leave_no_thread_after_one_interval(node_factory: Any) -> None:
    node = node_factory("a")
    apps = [make_app(node.url) for _ in range(20)]
    assert wait_for(lambda: len([t for t in library_threads() if t.name == "resilience_mw-health"]) == 20)
    assert wait_for(lambda: node.hits("/health", exclude_health=False) >= 20)
    del apps
    gc.collect()
    t0 = time.monotonic()
    # one interval (1 s) for every worker; the deadline watchdog idles out after 1 s too
    assert wait_for(lambda: library_threads() == [], 1.5), [t.name for t in library_threads()]
    assert time.monotonic() - t0 < 1.5


def test_exit_does_not_wait_on_health_rounds(tmp_path: Path) -> None:
    server = RawServer(hang)
    script = tmp_path / "four_apps.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, time
            sys.path.insert(0, {str(ROOT)!r})
            from tests.integration.test_lifecycle import make_app
            apps = [make_app({server.url!r}) for _ in range(4)]
            time.sleep(0.3)  # every app's health round is now waiting on the hung node
            print(time.monotonic(), flush=True)
            """
        )
    )
    try:
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "the script did not get as far as exiting"
        proc.wait(10)
        exited = time.monotonic()
        assert proc.returncode == 0
        assert server.count() >= 4  # the rounds were in progress
        assert exited - float(line) < 0.5
    finally:
        server.stop()


class HotSampler:
    """CPU alternating between idle and pegged, so the level keeps changing."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> Sample:
        self.calls += 1
        return Sample(cpu=99.0 if (self.calls // 2) % 2 else 1.0, memory=10.0)


@pytest.mark.parametrize("exc", [SystemExit, KeyboardInterrupt])
def test_a_receiver_raising_exit_does_not_kill_the_sampler(exc: type[BaseException]) -> None:
    sampler = HotSampler()
    manager = AutoDegradationManager(
        DegradationConfig(sustain_samples=1, sustain_window=1, startup_grace_seconds=0, cooldown_seconds=0),
        sampler=sampler,
    )
    raised = []

    def receiver(sender: object, **kw: Any) -> None:
        raised.append(kw["new"])
        raise exc("from a receiver")

    signals.level_changed.connect(receiver, sender=manager)
    try:
        manager.start(check_interval=0.01)
        assert wait_for(lambda: len(raised) >= 3, 5)  # each change raised; sampling went on
        assert manager.running
    finally:
        manager.stop(2)
        signals.level_changed.disconnect(receiver)


def test_workers_off_starts_nothing(node_factory: Any) -> None:
    node = node_factory("a")
    with workers_off():
        app = make_app(node.url)
        state = Resilience.state(app)
        state.start()
        assert not state.degradation.running and state.health_checker is not None
        assert not state.health_checker.running
    assert library_threads() == []


def test_a_dropped_app_is_freed_at_once_and_its_threads_end(node_factory: Any) -> None:
    # Flask's own suite checks that an app is freed by reference counting alone
    node = node_factory("a")
    gc.collect()
    gc.disable()
    try:
        app = make_app(node.url)
        assert app.test_client().get("/livez").status_code == 200
        assert len(library_threads()) >= 2
        owner = weakref.ref(app)
        del app
        assert owner() is None
        assert wait_for(lambda: not any(t.name in ("resilience_mw-health", "resilience_mw-degradation")
                                        for t in library_threads()), 0.5)
    finally:
        gc.enable()
