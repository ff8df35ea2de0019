"""Two gunicorn workers sharing one disk queue file: a real ``gunicorn -w 2`` serving
tests/apps/otlp_app.py, whose spans go through the durable exporter to a real OTLP/HTTP
receiver on 127.0.0.1. While the receiver is down the batches pile up in the shared file;
once it is back both workers drain it, and every span arrives exactly once."""

from __future__ import annotations

import collections
import sqlite3
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk.trace")
from tests.fleet.test_state_gunicorn import Gunicorn
from tests.helpers import wait_for
from tests.telemetry.receiver import Receiver

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(sys.executable).parent / "gunicorn").exists(), reason="gunicorn is not installed"),
]


def queued(path: Path) -> int:
    """Batches in the queue file, as any process on the host reads it."""
    with sqlite3.connect(path, timeout=5) as db:
        return int(db.execute("SELECT count(*) FROM batches").fetchone()[0])


def spans_until(g: Gunicorn, emitted: dict[str, int], enough: int, deadline: float) -> set[int]:
    """Ask for spans until ``enough`` were made, by both workers; the pids that served.
    ``emitted``: span id -> the pid that made it (added to)."""
    pids: collections.Counter[int] = collections.Counter()
    while sum(pids.values()) < enough or len(pids) < 2:
        assert time.monotonic() < deadline, f"both workers did not serve in time: {pids}; {''.join(g.lines[-20:])}"
        answer = g.get("/span").json()
        emitted[answer["span_id"]] = answer["pid"]
        pids[answer["pid"]] += 1
    return set(pids)


def test_two_workers_sharing_one_disk_queue_send_each_span_once_and_both_drain_the_backlog(tmp_path: Path) -> None:
    path = tmp_path / "otlp.db"
    up = Receiver().start()
    g = Gunicorn({"OTLP_ENDPOINT": up.url, "OTLP_QUEUE_PATH": str(path)}, workers=2,
                 app="tests.apps.otlp_app:application")
    receivers = [up]
    deadline = time.monotonic() + 20  # (a busy machine is slow, not stuck)
    emitted: dict[str, int] = {}  # span id -> the worker that made it
    try:
        # the collector up: spans flow from both workers
        assert spans_until(g, emitted, 20, deadline) == set(g.pids)
        # (every post answered before it goes down: none is in flight, whose lost answer
        # would rightly have its batch sent again)
        assert wait_for(lambda: queued(path) == 0, max(1.0, deadline - time.monotonic()))
        # the collector down: the spans of both workers pile up in the shared file
        up.stop()
        before = dict(emitted)
        spans_until(g, emitted, 150, deadline)
        during = set(emitted) - set(before)
        assert queued(path) >= len(during) > 100  # each committed before its request was answered
        # the collector back on the same port: both workers drain the file
        back = Receiver(up.port).start()
        receivers.append(back)
        assert wait_for(lambda: queued(path) == 0, max(1.0, deadline - time.monotonic())), (
            f"{queued(path)} batches still queued; gunicorn said: {''.join(g.lines[-20:])}")
    finally:
        g.stop()
        for r in receivers:
            r.stop()
    # (a batch leaves the file only once a collector took it: nothing more is sent after)
    got = [span for r in receivers for span in r.spans()]
    counts = collections.Counter(span_id for span_id, _, _ in got)
    assert sorted(counts) == sorted(emitted)  # every span, and only these
    assert [s for s, n in counts.items() if n > 1] == []  # none twice
    sender = {span_id: int(headers["X-Worker-Pid"]) for span_id, _, headers in got}
    maker = {span_id: int(resource["worker.pid"]) for span_id, resource, _ in got}
    assert maker == emitted
    # the backlog was drained by both workers, each sending batches the other queued
    drained = [(maker[s], sender[s]) for s in during]
    assert {who for _, who in drained} == set(g.pids), collections.Counter(drained)
    assert any(made != sent for made, sent in drained), collections.Counter(drained)
