"""Bounded queues of encoded OTLP batches: the interface, and the one in memory.

A batch is one export request's bytes (an ``Export*ServiceRequest``, already encoded),
the signal it belongs to and how many items (spans, log records, metric points) it
holds. An exporter :meth:`~ExportQueue.put` s it and returns; the sender
:meth:`~ExportQueue.take` s it (a lease: no other sender gets it meanwhile), posts it,
and then says :meth:`~ExportQueue.done` (delivered: deleted), :meth:`~ExportQueue.retry`
(back at the head of the queue) or :meth:`~ExportQueue.drop` (given up: counted).

Every queue is bounded in bytes (``max_bytes``) and in age (``max_age``: a batch older
than that is dropped as ``expired`` when it would be taken). When a batch does not fit,
``when_full`` decides, as Vector's buffers do:

* ``"drop_newest"`` (the default): the new batch is dropped (``queue_full``);
* ``"drop_oldest"``: the oldest batches not being sent are dropped (``evicted``) until
  it fits;
* ``"block"``: the caller waits up to ``block_timeout`` seconds for room, then the new
  batch is dropped (``block_timeout``).

Every drop is counted by signal and reason in :attr:`ExportQueue.dropped` and reported
to :attr:`ExportQueue.on_drop` (the export sends it as the ``telemetry_dropped``
signal). :class:`MemoryQueue` loses what it holds when the process ends; the disk
queue (:class:`~resilience_mw.telemetry.export._disk.DiskQueue`) keeps it.
"""

from __future__ import annotations

import abc
import collections
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from ... import _fork
from ... import _validate as v

__all__ = ["REASONS", "SIGNALS", "WHEN_FULL", "Batch", "ExportQueue", "MemoryQueue"]

#: the OTLP signals, as their OTLP/HTTP paths name them
SIGNALS = ("traces", "metrics", "logs")
#: what a full queue does with a new batch
WHEN_FULL = ("drop_newest", "drop_oldest", "block")
#: why items are dropped (the ``reason`` label of ``resilience_telemetry_dropped_total``)
REASONS = (
    "queue_full",  # drop_newest: the new batch did not fit
    "evicted",  # drop_oldest: an old batch made room for a new one
    "block_timeout",  # block: no room within block_timeout
    "too_large",  # one batch larger than the whole queue
    "expired",  # older than max_age
    "rejected",  # the collector answered a status that must not be retried
    "partial",  # the collector accepted the batch but rejected these items
    "shed",  # the degradation level turned this telemetry off
    "unencodable",  # the OTLP encoder failed on it
    "unsent_at_exit",  # in the memory queue when the process stopped
)

#: what a queue reports each drop to: (signal, reason, items)
DropListener = Callable[[str, str, int], None]


@dataclass(frozen=True, slots=True)
class Batch:
    """One encoded export request in a queue."""

    #: unique in its queue
    id: int
    #: ``"traces"``, ``"metrics"`` or ``"logs"``
    signal: str
    #: the encoded ``Export*ServiceRequest``
    body: bytes
    #: spans, log records or metric data points in it
    items: int
    #: when it was queued (``time.time()`` by default: the disk queue outlives the process)
    enqueued_at: float
    #: posts tried so far
    attempts: int = 0
    #: which queue holds it (``"memory"`` or ``"disk"``)
    where: str = "memory"

    def __repr__(self) -> str:
        return f"Batch({self.id}, {self.signal}, {len(self.body)} bytes, {self.items} items, attempts={self.attempts})"


def _max_bytes(name: str, value: object) -> int:
    clean: int = v.integer(ge=1024, le=1 << 40)(name, value)
    return clean


class ExportQueue(abc.ABC):
    """The interface every queue keeps; see the module docstring.

    :param max_bytes: the most bytes of batches held (those being sent included).
    :param max_age: seconds after which a queued batch is dropped as ``expired``.
    :param when_full: ``"drop_newest"``, ``"drop_oldest"`` or ``"block"``.
    :param block_timeout: with ``"block"``, the most seconds :meth:`put` waits for room.
    :param clock: wall-clock time (``time.time``); tests pass a fake.
    """

    #: ``"memory"`` or ``"disk"``
    kind = "memory"

    def __init__(
        self,
        *,
        max_bytes: int = 64 << 20,
        max_age: float = 3600.0,
        when_full: str = "drop_newest",
        block_timeout: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_bytes = _max_bytes("max_bytes", max_bytes)
        self.max_age: float = v.seconds(minimum=1, maximum=30 * 86_400)("max_age", max_age)
        self.when_full: str = v.one_of(WHEN_FULL)("when_full", when_full)
        self.block_timeout: float = v.seconds(minimum=0, maximum=60, zero=True)("block_timeout", block_timeout)
        self.clock = clock
        #: (signal, reason) -> items dropped by this process
        self.dropped: collections.Counter[tuple[str, str]] = collections.Counter()
        #: called with (signal, reason, items) after each drop, no lock held
        self.on_drop: DropListener | None = None

    # ---------------------------------------------------------------- interface

    @abc.abstractmethod
    def put(self, signal: str, body: bytes, items: int) -> bool:
        """Queue a batch; ``False`` if it was dropped (counted). Waits only with
        ``when_full="block"``, and then at most ``block_timeout``."""

    @abc.abstractmethod
    def take(self, limit: int = 1) -> list[Batch]:
        """Up to ``limit`` batches, oldest first, leased to the caller; expired ones are
        dropped on the way. Never waits for batches to arrive (the disk queue, holding
        none leased, waits for one look at its file: a few milliseconds)."""

    @abc.abstractmethod
    def done(self, batch: Batch) -> None:
        """``batch`` was delivered: delete it."""

    @abc.abstractmethod
    def retry(self, batch: Batch) -> None:
        """``batch`` was not delivered: back to the head of the queue."""

    @abc.abstractmethod
    def drop(self, batch: Batch, reason: str, items: int | None = None) -> None:
        """``batch`` is given up: delete it and count ``items`` (default all) under ``reason``."""

    @abc.abstractmethod
    def size(self) -> tuple[int, int]:
        """(bytes, batches) held now."""

    @abc.abstractmethod
    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a batch to take; ``True`` if there may be one."""

    def close(self) -> None:  # noqa: B027 - a queue with nothing open has nothing to do
        """Release what the queue holds open (files); batches leased and not done go back."""

    def wake(self) -> None:  # noqa: B027 - a queue that never waits has no one to wake
        """Wake the senders waiting in :meth:`wait` (at shutdown)."""

    def fill_ratio(self) -> float:
        """Bytes held over ``max_bytes``, 0 to 1."""
        return min(1.0, self.size()[0] / self.max_bytes)

    def count(self, signal: str, reason: str, items: int) -> None:
        """Count a drop and report it (call with no lock held)."""
        self.dropped[signal, reason] += items
        listener = self.on_drop
        if listener is not None and items:
            listener(signal, reason, items)

    def __repr__(self) -> str:
        held, batches = self.size()
        return (f"{type(self).__name__}({held}/{self.max_bytes} bytes, {batches} batches, "
                f"when_full={self.when_full!r})")


class MemoryQueue(ExportQueue):
    """Batches in this process's memory (lost when it ends); see :class:`ExportQueue`."""

    kind = "memory"

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self._cond = threading.Condition(threading.Lock())
        self._ready: collections.deque[Batch] = collections.deque()
        self._leased: dict[int, Batch] = {}
        self._bytes = 0
        self._ids = itertools.count(1)
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        # what the parent was sending is the parent's: the child does not send it again
        for batch in self._leased.values():
            self._bytes -= len(batch.body)
        self._leased.clear()

    def put(self, signal: str, body: bytes, items: int) -> bool:
        size = len(body)
        if size > self.max_bytes:
            self.count(signal, "too_large", items)
            return False
        drops: list[tuple[str, str, int]] = []
        deadline = None
        refused = ""
        with self._cond:
            while self._bytes + size > self.max_bytes:
                if self.when_full == "drop_oldest" and self._ready:
                    old = self._ready.popleft()
                    self._bytes -= len(old.body)
                    drops.append((old.signal, "evicted", old.items))
                    continue
                if self.when_full == "block":
                    now = time.monotonic()
                    deadline = now + self.block_timeout if deadline is None else deadline
                    if now < deadline:
                        self._cond.wait(deadline - now)
                        continue
                    refused = "block_timeout"
                else:
                    refused = "queue_full"  # (drop_oldest with every batch being sent)
                break
            if not refused:
                self._ready.append(Batch(next(self._ids), signal, body, items, self.clock()))
                self._bytes += size
                self._cond.notify_all()
        for drop in drops:
            self.count(*drop)
        if refused:
            self.count(signal, refused, items)
            return False
        return True

    def take(self, limit: int = 1) -> list[Batch]:
        taken: list[Batch] = []
        expired: list[Batch] = []
        oldest = self.clock() - self.max_age
        with self._cond:
            while self._ready and len(taken) < limit:
                batch = self._ready.popleft()
                if batch.enqueued_at < oldest:
                    self._bytes -= len(batch.body)
                    expired.append(batch)
                    continue
                self._leased[batch.id] = batch
                taken.append(batch)
            if expired:
                self._cond.notify_all()
        for batch in expired:
            self.count(batch.signal, "expired", batch.items)
        return taken

    def _release(self, batch: Batch) -> bool:
        with self._cond:
            if self._leased.pop(batch.id, None) is None:
                return False
            self._bytes -= len(batch.body)
            self._cond.notify_all()
        return True

    def done(self, batch: Batch) -> None:
        self._release(batch)

    def retry(self, batch: Batch) -> None:
        with self._cond:
            if self._leased.pop(batch.id, None) is not None:
                self._ready.appendleft(replace(batch, attempts=batch.attempts + 1))
                self._cond.notify_all()

    def drop(self, batch: Batch, reason: str, items: int | None = None) -> None:
        if self._release(batch):
            self.count(batch.signal, reason, batch.items if items is None else items)

    def size(self) -> tuple[int, int]:
        with self._cond:
            return self._bytes, len(self._ready) + len(self._leased)

    def wait(self, timeout: float) -> bool:
        with self._cond:
            if not self._ready:
                self._cond.wait(timeout)
            return bool(self._ready)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def drain(self, leased: bool = False) -> list[Batch]:
        """Remove and return every batch not being sent, and with ``leased`` those being
        sent too (at exit, to count or spill them: a post still in flight may yet land)."""
        with self._cond:
            out = list(self._ready)
            self._ready.clear()
            if leased:
                out += self._leased.values()
                self._leased.clear()
            for batch in out:
                self._bytes -= len(batch.body)
            self._cond.notify_all()
        return out
