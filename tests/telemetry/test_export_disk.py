"""The disk queue as a host's workers use it: real SQLite files, forked processes,
``kill -9``, corrupt and unwritable files, real receivers on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
import requests

from resilience_mw import ServiceNode
from resilience_mw.adapter import FailoverAdapter
from resilience_mw.telemetry.export import DiskQueue, OTLPExport
from tests.helpers import wait_for

pytest.importorskip("opentelemetry.proto")
from tests.telemetry.receiver import Receiver


def export_to(url: str, queue: DiskQueue, **options: object) -> OTLPExport:
    session = requests.Session()
    session.mount("http://collector/", FailoverAdapter([ServiceNode("c", url)], retry_non_idempotent=True))
    defaults: dict[str, object] = {"backoff": 0.02, "max_backoff": 0.1, "timeout": (0.5, 2.0), "merge": 1}
    return OTLPExport(session, "http://collector", queue=queue, **{**defaults, **options})  # type: ignore[arg-type]


def bodies(receiver: Receiver) -> list[bytes]:
    return [body for _, body, _ in receiver.posts]


def test_what_was_queued_before_kill_9_is_sent_after_the_restart(tmp_path: Path) -> None:
    path = tmp_path / "otlp.db"
    with Receiver() as r:
        port = r.port
    pid = os.fork()
    if pid == 0:  # the app, with its collector down
        try:
            export = export_to(f"http://127.0.0.1:{port}", DiskQueue(path, lease=1.0))
            for i in range(50):
                export.put("traces", b"batch-%d" % i, 1)
            time.sleep(60)
        finally:
            os._exit(0)
    try:
        assert wait_for(lambda: path.exists() and DiskQueue(path).size()[1] == 50, 10)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    with Receiver(port) as r:  # the collector is back; so is the app
        export = export_to(r.url, DiskQueue(path, lease=1.0))
        export.start()
        assert wait_for(lambda: len(r.posts) >= 50, 10)
        export.shutdown(2)
        got = bodies(r)
    assert sorted(got) == sorted(b"batch-%d" % i for i in range(50))  # each once


def test_two_workers_sharing_one_file_never_send_a_batch_twice(tmp_path: Path) -> None:
    path = tmp_path / "otlp.db"
    queue = DiskQueue(path)
    for i in range(300):
        queue.put("traces", b"batch-%d" % i, 1)
    queue.close()
    with Receiver() as r:
        children = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:  # a gunicorn worker
                code = 1
                try:
                    export = export_to(r.url, DiskQueue(path), consumers=2)
                    export.start()
                    deadline = time.monotonic() + 20
                    while export.queue.size()[1] and time.monotonic() < deadline:
                        time.sleep(0.02)
                    export.shutdown(2)
                    code = 0
                finally:
                    os._exit(code)
            children.append(pid)
        for pid in children:
            assert os.waitpid(pid, 0)[1] == 0
        got = bodies(r)
    assert len(got) == 300 and len(set(got)) == 300  # every batch, each by one worker
    assert DiskQueue(path).size() == (0, 0)


def test_a_corrupt_file_is_set_aside_and_replaced_with_a_warning(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "otlp.db"
    path.write_bytes(b"this is not a database" * 200)
    with caplog.at_level(logging.WARNING):
        queue = DiskQueue(path)
    assert "is corrupt" in caplog.text
    assert queue.set_aside == 1 and not queue.degraded
    assert len(list(tmp_path.glob("otlp.db.corrupt-*"))) == 1
    assert queue.put("traces", b"after", 1)
    assert [b.body for b in DiskQueue(path).take(1)] == [b"after"]


def test_a_truncated_file_is_noticed_set_aside_and_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "otlp.db"
    queue = DiskQueue(path)
    for i in range(200):
        queue.put("logs", bytes([i % 256]) * 3000, 1)
    queue.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 3)
    with caplog.at_level(logging.WARNING):
        reopened = DiskQueue(path)
        while reopened.take(50):  # reading reaches the missing pages
            pass
    assert "is corrupt" in caplog.text
    assert reopened.set_aside == 1
    assert reopened.put("logs", b"new", 1)  # no exception ever reached the caller
    assert reopened.take(5)[-1].body == b"new"


def test_an_unwritable_place_degrades_to_memory_with_a_warning(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        queue = DiskQueue(tmp_path / "missing" / "otlp.db")
    assert queue.degraded and "queueing in memory" in caplog.text
    assert queue.put("traces", b"kept", 1)
    assert [b.body for b in queue.take(1)] == [b"kept"]


def test_a_file_deleted_under_the_workers_is_reopened(tmp_path: Path) -> None:
    path = tmp_path / "otlp.db"
    queue = DiskQueue(path)
    queue.put("traces", b"old", 1)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    queue._checked = 0
    queue.take(1)
    assert queue.put("traces", b"new", 1)
    queue.close()  # (its spooler may have leased the new batch to this process meanwhile)
    assert [b.body for b in DiskQueue(path).take(5)] == [b"new"]


def test_force_flush_and_shutdown_with_the_disk_queue_return_at_once_when_collectors_are_down(tmp_path: Path) -> None:
    with Receiver() as r:
        url = r.url
    export = export_to(url, DiskQueue(tmp_path / "otlp.db"))
    for i in range(20):
        export.put("traces", b"b%d" % i, 1)
    started = time.monotonic()
    assert not export.force_flush(0.3)
    export.shutdown(0.5)
    assert time.monotonic() - started < 1.5
    assert DiskQueue(tmp_path / "otlp.db").size()[1] == 20  # all in the file for the next start


def test_puts_from_many_threads_are_committed_in_groups_to_the_file(tmp_path: Path) -> None:
    """Request threads hand batches to the spooler: none waits on another's lock, none
    falls back to memory, and each is in the file when put() returns."""
    import threading

    queue = DiskQueue(tmp_path / "otlp.db")

    def work(n: int) -> None:
        for i in range(100):
            assert queue.put("traces", b"%d-%d" % (n, i), 1)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert queue.memory.size() == (0, 0) and not queue.degraded
    with sqlite3.connect(tmp_path / "otlp.db") as db:
        assert db.execute("SELECT count(*) FROM batches").fetchone()[0] == 600
    assert queue.size()[1] == 600


def test_a_drain_deletes_in_groups_and_leaves_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "otlp.db"
    queue = DiskQueue(path)
    for i in range(2000):
        queue.put("traces", b"batch-%d" % i, 1)
    with Receiver() as r:
        export = export_to(r.url, queue, consumers=4)
        export.start()
        assert wait_for(lambda: queue.size() == (0, 0), 30)
        export.shutdown(2)
        got = bodies(r)
    assert sorted(got) == sorted(b"batch-%d" % i for i in range(2000))


EXIT_SCRIPT = """
import atexit, sys, time
atexit.register(lambda: print(dict(queue.dropped), flush=True))  # (runs after the library's hook)
import requests
from resilience_mw.telemetry.export import DiskQueue, MemoryQueue, OTLPExport
queue = DiskQueue(sys.argv[2], lease=60) if sys.argv[1] == "disk" else MemoryQueue()
export = OTLPExport(requests.Session(), "http://127.0.0.1:9", queue=queue, backoff=5.0)
for i in range(7):
    export.put("traces", b"b%d" % i, 3)
time.sleep(0.3)  # (the first post failed: the senders back off)
print(dict(queue.dropped), flush=True)
"""


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_an_export_never_shut_down_is_closed_at_exit(kind: str, tmp_path: Path) -> None:
    """Without shutdown(), the memory queue's batches are counted and logged at exit;
    the disk queue's are left in the file, not leased, for the next start at once."""
    import subprocess
    import sys

    path = tmp_path / "otlp.db"
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, kind, str(path)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert done.returncode == 0, done.stderr
    first, at_exit = done.stdout.splitlines()
    assert first == "{}"
    if kind == "memory":
        assert at_exit == "{('traces', 'unsent_at_exit'): 21}"
        assert "7 batches" in done.stderr and "unsent at exit without shutdown()" in done.stderr
    else:
        assert at_exit == "{}"
        assert len(DiskQueue(path, lease=60).take(10)) == 7  # not leased to the dead process
