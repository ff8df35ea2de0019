"""BackgroundWorker: start/stop, survival of bad ticks, no leftover threads, fork."""

from __future__ import annotations

import os
import threading
import time

import pytest

from resilience_mw.worker import BackgroundWorker


def wait_for(cond, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return bool(cond())


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
