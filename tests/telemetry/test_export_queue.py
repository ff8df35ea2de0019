"""The export queues on their own: bounds in bytes and age, the when_full policies,
leases; the same cases for the memory queue and a real SQLite file."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from resilience_mw.exceptions import ConfigError
from resilience_mw.telemetry.export import DiskQueue, ExportQueue, MemoryQueue
from resilience_mw.testing import FakeClock
from tests.helpers import wait_for

KB = 1024


def make(kind: str, tmp_path: Path, **options: object) -> ExportQueue:
    if kind == "memory":
        return MemoryQueue(**options)
    return DiskQueue(tmp_path / "otlp.db", **options)  # type: ignore[arg-type]


KINDS = ["memory", "disk"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_goes_through_put_take_done(kind: str, tmp_path: Path) -> None:
    """What is put is taken once, in order, and deleted when done."""
    q = make(kind, tmp_path)
    assert q.put("traces", b"one", 1) and q.put("logs", b"two", 2)
    assert q.size() == (6, 2)
    first, second = q.take(1)[0], q.take(1)[0]
    assert (first.body, first.signal, first.items) == (b"one", "traces", 1)
    assert second.body == b"two"
    assert q.take(1) == []  # both leased
    q.done(first)
    q.retry(second)
    again = q.take(5)
    assert [b.body for b in again] == [b"two"] and again[0].attempts == 1
    q.done(again[0])
    assert wait_for(lambda: q.size() == (0, 0), 5)  # (the disk queue's spooler deletes it a moment later)


@pytest.mark.parametrize("kind", KINDS)
def test_drop_newest_at_the_byte_limit_refuses_the_new_batch(kind: str, tmp_path: Path) -> None:
    q = make(kind, tmp_path, max_bytes=4 * KB)
    body = b"x" * KB
    assert all(q.put("traces", body, 10) for _ in range(4))
    assert not q.put("traces", body, 10)
    assert q.dropped == {("traces", "queue_full"): 10}
    assert [b.body for b in q.take(10)] == [body] * 4


@pytest.mark.parametrize("kind", KINDS)
def test_drop_oldest_at_the_byte_limit_evicts_the_oldest(kind: str, tmp_path: Path) -> None:
    q = make(kind, tmp_path, max_bytes=4 * KB, when_full="drop_oldest")
    for i in range(6):
        assert q.put("logs", bytes([i]) * KB, 3)
    assert q.dropped == {("logs", "evicted"): 6}
    assert [b.body[0] for b in q.take(10)] == [2, 3, 4, 5]


@pytest.mark.parametrize("kind", KINDS)
def test_block_waits_at_most_block_timeout_then_drops(kind: str, tmp_path: Path) -> None:
    q = make(kind, tmp_path, max_bytes=2 * KB, when_full="block", block_timeout=0.2)
    assert q.put("traces", b"x" * KB, 1) and q.put("traces", b"x" * KB, 1)
    started = time.monotonic()
    assert not q.put("traces", b"y" * KB, 1)
    waited = time.monotonic() - started
    assert 0.15 <= waited < 1.5, waited
    assert q.dropped == {("traces", "block_timeout"): 1}


def test_block_goes_on_as_soon_as_there_is_room(tmp_path: Path) -> None:
    import threading

    q = MemoryQueue(max_bytes=2 * KB, when_full="block", block_timeout=5)
    q.put("traces", b"x" * KB, 1)
    q.put("traces", b"x" * KB, 1)
    taken = q.take(1)[0]
    threading.Timer(0.1, q.done, args=(taken,)).start()
    started = time.monotonic()
    assert q.put("traces", b"y" * KB, 1)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_older_than_max_age_is_dropped_as_expired(kind: str, tmp_path: Path) -> None:
    clock = FakeClock(start=1_000_000.0)
    q = make(kind, tmp_path, max_age=60, clock=clock)
    q.put("traces", b"old", 4)
    clock.advance(30)
    q.put("traces", b"new", 1)
    clock.advance(31)
    assert [b.body for b in q.take(5)] == [b"new"]
    assert q.dropped == {("traces", "expired"): 4}


@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_larger_than_the_queue_is_dropped(kind: str, tmp_path: Path) -> None:
    q = make(kind, tmp_path, max_bytes=2 * KB)
    assert not q.put("metrics", b"x" * 3 * KB, 7)
    assert q.dropped == {("metrics", "too_large"): 7}


def test_drops_are_reported_to_the_listener() -> None:
    q = MemoryQueue(max_bytes=1 * KB)
    seen: list[tuple[str, str, int]] = []
    q.on_drop = lambda *drop: seen.append(drop)
    q.put("logs", b"x" * KB, 5)
    q.put("logs", b"x", 2)
    assert seen == [("logs", "queue_full", 2)]


def test_bad_bounds_are_config_errors_naming_the_option() -> None:
    with pytest.raises(ConfigError, match="when_full"):
        MemoryQueue(when_full="drop_everything")
    with pytest.raises(ConfigError, match="max_bytes"):
        MemoryQueue(max_bytes=10)


def test_repr_says_what_it_holds(tmp_path: Path) -> None:
    q = MemoryQueue(max_bytes=4 * KB)
    q.put("traces", b"abc", 1)
    assert repr(q) == "MemoryQueue(3/4096 bytes, 1 batches, when_full='drop_newest')"
    assert repr(DiskQueue(tmp_path / "q.db", max_bytes=4 * KB)).startswith(f"DiskQueue('{tmp_path}/q.db', 0/4096")


def test_the_disk_queue_keeps_batches_across_reopening(tmp_path: Path) -> None:
    """A second queue on the file (a restarted process) finds what the first accepted;
    a batch the first had leased when it died comes back once its lease runs out."""
    pid = os.fork()
    if pid == 0:  # the first process: dies (no close()) while sending batch 0
        try:
            first = DiskQueue(tmp_path / "otlp.db", lease=0.5, prefetch=1)
            for i in range(5):
                first.put("traces", bytes([i]), 1)
            first.take(1)
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    second = DiskQueue(tmp_path / "otlp.db", lease=60)
    assert [b.body[0] for b in second.take(10)] == [1, 2, 3, 4]
    time.sleep(0.6)
    assert [b.body[0] for b in second.take(10)] == [0]


def test_the_disk_queue_gives_back_its_leases_when_closed(tmp_path: Path) -> None:
    first = DiskQueue(tmp_path / "otlp.db", lease=60)
    first.put("traces", b"a", 1)
    first.take(1)
    first.close()
    assert [b.body for b in DiskQueue(tmp_path / "otlp.db").take(1)] == [b"a"]
