"""BackgroundWorker: start/stop, survival of bad ticks, no leftover threads, fork."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from resilience_mw import _worker as worker
from resilience_mw._worker import BackgroundWorker
from tests.helpers import wait_for


def test_ticks_survive_exceptions_and_stop_promptly() -> None:
    calls = []

    def tick() -> None:
        calls.append(1)
        if len(calls) % 2:
            raise RuntimeError("bad tick")

    w = BackgroundWorker("t-worker", tick, 0.01)
    w.start()
    w.start()  # second start is a no-op
    assert wait_for(lambda: len(calls) >= 6)
    assert w.errors >= 3 and w.alive
    assert sum(t.name == "t-worker" for t in threading.enumerate()) == 1
    t0 = time.monotonic()
    w.interval = 60  # a long wait must not delay stop()
    time.sleep(0.05)
    assert w.stop(timeout=2)
    assert time.monotonic() - t0 < 1.0
    assert not any(t.name == "t-worker" for t in threading.enumerate())


def test_stop_unstarted_and_restart() -> None:
    w = BackgroundWorker("t-idle", lambda: None, 0.01)
    assert w.stop() is True and not w.alive
    w.start()
    assert wait_for(lambda: w.ticks > 0)
    w.stop()
    ticks = w.ticks
    w.start()
    assert wait_for(lambda: w.ticks > ticks + 1)
    w.stop()


def test_thread_is_daemon() -> None:
    w = BackgroundWorker("t-daemon", lambda: None, 0.5)
    w.start()
    try:
        assert w._thread is not None and w._thread.daemon
    finally:
        w.stop()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_worker_runs_again_in_forked_child() -> None:
    """gunicorn --preload: a worker started before fork is running in the child."""
    ticks_in = []
    w = BackgroundWorker("t-fork", lambda: ticks_in.append(os.getpid()), 0.01)
    w.start()
    assert wait_for(lambda: len(ticks_in) > 0)
    from tests.conftest import run_in_forked_child

    def in_child() -> bool:
        ok = wait_for(lambda: w.alive and os.getpid() in ticks_in, 5)
        w.stop(2)
        return ok and not w.alive

    try:
        assert run_in_forked_child(in_child)
    finally:
        w.stop()
    assert w.alive is False


def exit_code_of_forked(in_child: Callable[[], bool]) -> int:
    """Run ``in_child`` in a real ``os.fork()`` child and wait for it: its exit code (0
    when it returned true; ``-SIGALRM`` when it hung for 5 s and was ended)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            signal.alarm(5)  # a deadlocked child ends, so waitpid below cannot hang
            code = 0 if in_child() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_suppression_lock_is_free_in_a_child_forked_while_another_thread_held_it() -> None:
    """gunicorn --preload forking while a thread is inside suppressed(): the child can
    still open a suppressed() block, and it still keeps workers from starting."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with worker._suppression.lock:
            holding.set()
            release.wait(10)

    def in_child() -> bool:
        if not worker._suppression.lock.acquire(timeout=1):
            return False  # inherited held: suppressed() would block forever
        worker._suppression.lock.release()
        with worker.suppressed():
            w = BackgroundWorker("t-suppressed-child", lambda: None, 0.01)
            w.start()
            return not w.alive

    t = threading.Thread(target=hold)
    t.start()
    assert holding.wait(5)
    try:
        assert exit_code_of_forked(in_child) == 0
    finally:
        release.set()
        t.join()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_only_the_forking_threads_suppressed_blocks_live_on_in_the_child() -> None:
    """A block another thread had open at the fork never closes in the child, so it must
    not keep the child's workers off; the forking thread's own block still does, until
    it closes."""
    opened, release = threading.Event(), threading.Event()

    def stay_suppressed() -> None:
        with worker.suppressed():
            opened.set()
            release.wait(10)

    def in_child() -> bool:
        w = BackgroundWorker("t-unsuppressed-child", lambda: None, 0.01)
        w.start()  # the forking thread's block is still open
        kept_off = not w.alive
        block.__exit__(None, None, None)
        w.start()  # only the other thread's block is left, and it is gone with that thread
        started = w.alive
        w.stop(2)
        return kept_off and started

    t = threading.Thread(target=stay_suppressed)
    t.start()
    assert opened.wait(5)
    block = worker.suppressed()
    block.__enter__()
    try:
        assert exit_code_of_forked(in_child) == 0
    finally:
        block.__exit__(None, None, None)
        release.set()
        t.join()
    assert not worker._suppression.open  # every block closed in the parent


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_every_lock_owner_gets_a_fresh_lock_in_a_forked_child(tmp_path: Any) -> None:
    """Each object that owns a lock, its lock held by another thread at the fork: the
    child can take every one of them (none stays held forever)."""
    from resilience_mw import AlertRules, AutoDegradationManager, NodePool, ServiceNode
    from resilience_mw.admission.limit import AdaptiveLimit
    from resilience_mw.failover._strategies import _LockedSmoothWeighted
    from resilience_mw.fleet.stores import open_store
    from resilience_mw.fleet.sync import StateSync
    from resilience_mw.testing import FakeClock, SignalRecord

    degradation = AutoDegradationManager()
    owners = {
        "AdaptiveLimit": AdaptiveLimit(),
        "StateSync": StateSync(open_store(f"sqlite:///{tmp_path}/state.db"), degradation),
        "smooth weighted round robin": _LockedSmoothWeighted([ServiceNode("a", "http://127.0.0.1:1", weight=3)]),
        "FakeClock": FakeClock(),
        "SignalRecord": SignalRecord(),
        "AlertRules": AlertRules(),
        "AutoDegradationManager": degradation,
        "NodePool": NodePool([ServiceNode("a", "http://127.0.0.1:1")]),
    }
    holding, release = threading.Barrier(len(owners) + 1), threading.Event()

    def hold(lock: Any) -> None:
        with lock:
            holding.wait(5)
            release.wait(10)

    threads = [threading.Thread(target=hold, args=(o._lock,)) for o in owners.values()]
    for t in threads:
        t.start()
    holding.wait(5)

    def in_child() -> bool:
        stuck = [name for name, o in owners.items() if not o._lock.acquire(timeout=1)]
        print("still held in the child:", stuck, flush=True)
        return not stuck

    try:
        assert exit_code_of_forked(in_child) == 0
    finally:
        release.set()
        for t in threads:
            t.join()
        owners["AlertRules"].close()
