"""The disk queue: OTLP batches in one SQLite file that every worker on a host shares.

What was queued before a process ends (a restart, a crash, ``kill -9``) is sent after
it, by whichever worker takes it first. A batch counts as queued ("accepted") when
:meth:`DiskQueue.put` returns ``True``: by then it is committed to the file (or, if the
file stayed busy past ``put_wait``, it is on its way there and a crash before the write
loses it; a file that fails puts it in memory, see below).

One thread per process, the *spooler*, does every write to the file: it commits the
batches the app's threads hand it in groups (one transaction for all that arrived while
the last one was written: a request thread waits for one short commit, never for
another thread's lock), deletes delivered batches in groups, and leases batches to this
process's senders a few dozen at a time, so the senders take them from memory. A
batch leased to a process is sent by it alone: the spooler renews its process's leases
(every third of ``lease``), and another worker takes a batch only once its lease has
run out, that is once its process died or hung. A batch is posted twice only when a
process died after the collector took the batch but before the spooler deleted it (a
few milliseconds later).

The file is WAL-mode with ``synchronous=NORMAL``: a process crash loses nothing that
was committed; a power cut may lose the last transactions. One connection per process
and thread (a forked child opens its own), with a short busy timeout.

It never raises into the app:

* the file busy (past the busy timeout) or the disk full: the batch goes to a memory
  queue of the same bounds, which the sender empties first (and :meth:`DiskQueue.close`
  writes to the file);
* the file corrupt (truncated, overwritten): it is renamed ``<path>.corrupt-<time>``,
  a fresh file takes its place, and a warning says so (batches in it are lost);
* the file unwritable (permissions, a read-only or missing directory): the queue
  works in memory from then on, with a warning;
* the file deleted or replaced under running workers: each reopens the file now at the
  path (the check of :mod:`resilience_mw.fleet._sqlite`, one ``stat`` a second).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from ... import _fork
from ... import _validate as v
from ..._sqlite_file import identity, open_wal, thread_connection
from .queue import Batch, ExportQueue, MemoryQueue

__all__ = ["DiskQueue"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT, signal TEXT NOT NULL, body BLOB NOT NULL, size INTEGER NOT NULL,
    items INTEGER NOT NULL, enqueued_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0, holder TEXT
);
CREATE TABLE IF NOT EXISTS totals (
    one INTEGER PRIMARY KEY CHECK (one = 1), bytes INTEGER NOT NULL, batches INTEGER NOT NULL
);
INSERT OR IGNORE INTO totals VALUES (1, 0, 0);
"""

#: seconds between checks that the file at the path is still the one opened
_CHECK_EVERY = 1.0
#: seconds between the spooler's looks at the file for other workers' batches
_POLL = 0.25
#: the most rows one statement names (SQLite allows 32,766 variables)
_CHUNK = 500


@dataclass(slots=True, eq=False)
class _Put:
    """A batch handed to the spooler, and what became of it."""

    signal: str
    body: bytes
    items: int
    #: ``""`` while waiting; then ``"ok"``, ``"full"`` or ``"unavailable"``
    verdict: str = ""
    evicted: list[tuple[str, int]] = field(default_factory=list)


class _Unavailable(Exception):
    """The file could not do it this time (the caller falls back to memory)."""


class DiskQueue(ExportQueue):
    """Batches in the SQLite file at ``path``; see the module docstring and
    :class:`~resilience_mw.telemetry.export.queue.ExportQueue` for the bounds.

    :param path: the file (created if missing; its directory must exist).
    :param lease: seconds a taken batch stays with its worker before another may take
        it (more than a post can last: the session's timeout and deadline).
    :param busy_timeout: seconds a call waits for another worker's write.
    :param prefetch: batches leased to this process's senders at once.
    :param put_wait: the most seconds :meth:`put` waits for the spooler's commit
        (default: ``block_timeout`` or four busy timeouts, whichever is longer).
    """

    kind = "disk"
    _fork_order = 0

    def __init__(self, path: str | os.PathLike[str], *, lease: float = 30.0, busy_timeout: float = 0.25,
                 prefetch: int = 32, put_wait: float | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.path = os.fspath(path)
        self.lease: float = v.seconds(minimum=0.1, maximum=3600)("lease", lease)
        self._busy = busy_timeout
        self.prefetch: int = v.integer(ge=1, le=10_000)("prefetch", prefetch)
        self.put_wait: float = (max(self.block_timeout, 4 * busy_timeout) if put_wait is None
                                else v.seconds(minimum=0, maximum=60, zero=True)("put_wait", put_wait))
        #: batches the file could not take (and, once :attr:`degraded`, all of them)
        self.memory = MemoryQueue(max_bytes=self.max_bytes, max_age=self.max_age, when_full=self.when_full,
                                  block_timeout=self.block_timeout, clock=self.clock)
        self.memory.count = self.count  # type: ignore[method-assign]  # its drops are this queue's
        #: ``True`` once the file proved unusable: memory only from then on
        self.degraded = False
        #: files found corrupt and set aside
        self.set_aside = 0
        self._token = uuid.uuid4().hex[:8]
        self._local = threading.local()
        self._generation = 0
        self._file: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._spool_state()
        _fork.register(self)
        if not Path(self.path).parent.is_dir():
            self._degrade(f"directory {Path(self.path).parent} does not exist")
            return
        try:
            self._db()
        except sqlite3.Error as exc:
            self._failed(exc)

    def _spool_state(self) -> None:
        """The spooler's hand-offs (new, and again in a forked child: the parent's
        leases and threads are the parent's)."""
        #: guards every field below; never held across a file operation
        self._cond = threading.Condition(threading.Lock())
        self._inbox: list[_Put] = []
        self._deletes: list[tuple[int, int]] = []  # (id, generation) delivered or dropped
        self._ready: collections.deque[tuple[Batch, int]] = collections.deque()  # leased, not being sent
        self._inflight: dict[int, int] = {}  # id -> generation, being sent
        self._want = False  # a sender found few batches ready
        self._asked = self._answered = 0  # looks at the file a sender waits for, and made
        self._wrote = False  # rows written here since the last look at the file
        self._closing = False
        self._spooler: threading.Thread | None = None

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._spool_state()

    # ------------------------------------------------------------ connection

    def _holder(self) -> str:
        return f"{os.getpid()}.{self._token}"

    def _db(self) -> sqlite3.Connection:
        return thread_connection(self._local, self._generation, self._connect)

    def _connect(self) -> sqlite3.Connection:
        db = open_wal(self.path, _SCHEMA, timeout=self._busy)
        if self._file is None:
            self._file = self._identity()
        return db

    def _identity(self) -> tuple[int, int] | None:
        return identity(self.path)

    def _check_file(self) -> None:
        """Reopen on the file now at the path if it was deleted or replaced."""
        now = time.monotonic()
        if now - self._checked < _CHECK_EVERY:
            return
        self._checked = now
        there = self._identity()
        with self._lock:
            if there == self._file:
                return
            self._file = there
            self._generation += 1
        log.warning("OTLP queue file %s was %s while in use: reopened it", self.path,
                    "deleted" if there is None else "replaced")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def _run(self, op: Callable[[], T]) -> T:
        """``op()``, or :class:`_Unavailable` after dealing with what the file did."""
        if self.degraded:
            raise _Unavailable
        try:
            return op()
        except sqlite3.Error as exc:
            self._failed(exc)
            raise _Unavailable from exc

    def _failed(self, exc: sqlite3.Error) -> None:
        text = str(exc).lower()
        if "locked" in text or "busy" in text or "full" in text:
            log.debug("OTLP queue file %s: %s (this batch kept in memory)", self.path, exc)
        elif not isinstance(exc, sqlite3.OperationalError) or "malformed" in text or "not a database" in text:
            self._set_aside(exc)
        else:
            self._degrade(str(exc))

    def _set_aside(self, exc: sqlite3.Error) -> None:
        with self._lock:
            opened = self._file
            there = self._identity()
            self._generation += 1
            self._file = None
            if there is not None and opened is not None and there != opened:
                return  # another worker already replaced it: use the new one
            aside = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
            try:
                os.replace(self.path, aside)
                for suffix in ("-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path + suffix)
            except OSError as err:
                self._degrade(f"corrupt ({exc}) and cannot be moved aside ({err})")
                return
            self.set_aside += 1
        log.warning("OTLP queue file %s is corrupt (%s): moved it to %s and started a new one "
                    "(the batches in it are lost)", self.path, exc, aside)
        try:
            self._db()
        except sqlite3.Error as err:
            self._degrade(f"a new file cannot be made ({err})")

    def _degrade(self, why: str) -> None:
        if not self.degraded:
            self.degraded = True
            log.warning("OTLP queue file %s cannot be used (%s): queueing in memory instead "
                        "(lost if the process ends)", self.path, why)

    # ------------------------------------------------------------------ spooler

    def _start_spooler(self) -> None:
        """Start this process's spooler once (after a fork, the child's own)."""
        if self._spooler is not None and self._spooler.is_alive():
            return
        with self._cond:
            if self._closing or (self._spooler is not None and self._spooler.is_alive()):
                return
            self._spooler = threading.Thread(target=self._spool, name="resilience_mw-otlp-spool", daemon=True)
            self._spooler.start()

    def _spool(self) -> None:
        """The spooler: every write to the file, in groups, until :meth:`close`."""
        try:
            self._spool_until_closed()
        finally:
            # its connection closed with it: one left open in this process would be
            # inherited by a forked worker, whose closing it drops that worker's locks
            # on the file (POSIX locks are per process)
            self._close_connection()

    def _close_connection(self) -> None:
        """Close this thread's connection, if it opened one in this process."""
        held = getattr(self._local, "db", None)
        if held is not None and held[0] == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                held[1].close()
        self._local.db = None

    def _spool_until_closed(self) -> None:
        looked = renewed = 0.0
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    held = bool(self._ready or self._inflight)
                    renew = held and now - renewed >= self.lease / 3
                    asked = self._asked
                    look = asked > self._answered or (self._want and len(self._ready) < self.prefetch
                                                      and (self._wrote or now - looked >= _POLL))
                    if self._inbox or self._deletes or renew or look or self._closing:
                        break
                    self._cond.wait(_POLL if self._want else self.lease / 3)
                puts, self._inbox = self._inbox, []
                deletes, self._deletes = self._deletes, []
                room = self.prefetch - len(self._ready) if look else 0
                if look:  # (senders that still find nothing ask again)
                    self._wrote = self._want = False
                generation, closing = self._generation, self._closing
            if look:
                looked = now
            if renew:
                renewed = now
            try:
                self._check_file()
                self._write(puts, deletes, room, renew, generation=generation, asked=asked)
            except Exception:  # a bug must not end the spooler, nor leave a put waiting
                log.exception("OTLP queue file %s: unexpected error in the spooler", self.path)
                with self._cond:
                    for put in puts:
                        put.verdict = put.verdict or "unavailable"
                    self._answered = max(self._answered, asked)
                    self._cond.notify_all()
            if closing:
                return

    def _write(self, puts: list[_Put], deletes: list[tuple[int, int]], room: int, renew: bool, *,
               generation: int, asked: int = 0) -> None:
        """One transaction: ``puts`` inserted, ``deletes`` deleted, up to ``room``
        batches leased, this process's leases renewed; then the waiters told."""
        rows: list[tuple[Any, ...]] = []
        expired: list[tuple[str, int]] = []
        current = [row_id for row_id, gen in deletes if gen == generation]
        try:
            if room and not (puts or current or renew) and not self._run(self._any_ready):
                room = 0  # (an idle look reads, and takes no write lock)
            if puts or current or renew or room:
                rows, expired = self._run(lambda: self._commit(puts, current, room, renew))
        except _Unavailable:
            for put in puts:
                put.verdict = "unavailable"
            if not self.degraded and self._generation == generation:
                with self._cond:  # (the file was busy: try the deletes again)
                    self._deletes[:0] = deletes
        batches = [(Batch(r[0], r[1], bytes(r[2]), r[3], r[4], r[5], "disk"), generation) for r in rows]
        with self._cond:
            if batches and self._generation == generation:
                self._ready.extend(batches)
            if any(put.verdict == "ok" for put in puts):
                self._wrote = True
            self._answered = max(self._answered, asked)
            self._cond.notify_all()
        for put in puts:
            for old_signal, old_items in put.evicted:
                self.count(old_signal, "evicted", old_items)
        for signal, items in expired:
            self.count(signal, "expired", items)

    def _any_ready(self) -> bool:
        """Whether the file holds a batch no process has leased."""
        return bool(self._db().execute("SELECT 1 FROM batches WHERE lease_until <= ? LIMIT 1",
                                       (self.clock(),)).fetchall())

    def _commit(self, puts: list[_Put], deletes: list[int], room: int,
                renew: bool) -> tuple[list[tuple[Any, ...]], list[tuple[str, int]]]:
        now = self.clock()
        holder = self._holder()
        rows: list[tuple[Any, ...]] = []
        expired: list[tuple[str, int]] = []
        with self._transaction() as db:
            held, count = before = db.execute("SELECT bytes, batches FROM totals").fetchone()
            for at in range(0, len(deletes), _CHUNK):
                chunk = deletes[at:at + _CHUNK]
                marks = ",".join("?" * len(chunk))
                gone = db.execute(f"DELETE FROM batches WHERE holder = ? AND id IN ({marks}) RETURNING size",
                                  (holder, *chunk)).fetchall()
                held, count = held - sum(g[0] for g in gone), count - len(gone)
            for put in puts:
                put.evicted = []
                size = len(put.body)
                if held + size > self.max_bytes and self.when_full == "drop_oldest":
                    for row_id, old_signal, old_items, old_size in db.execute(
                        "SELECT id, signal, items, size FROM batches WHERE lease_until <= ? ORDER BY id LIMIT 10000",
                        (now,),
                    ).fetchall():
                        db.execute("DELETE FROM batches WHERE id = ?", (row_id,))
                        put.evicted.append((old_signal, old_items))
                        held, count = held - old_size, count - 1
                        if held + size <= self.max_bytes:
                            break
                if held + size > self.max_bytes:
                    put.verdict = "full"
                    continue
                db.execute("INSERT INTO batches (signal, body, size, items, enqueued_at) VALUES (?, ?, ?, ?, ?)",
                           (put.signal, put.body, size, put.items, now))
                held, count = held + size, count + 1
                put.verdict = "ok"
            if renew:
                db.execute("UPDATE batches SET lease_until = ? WHERE holder = ?", (now + self.lease, holder))
            if room:
                oldest = now - self.max_age
                for row in db.execute(
                    "SELECT id, signal, body, items, enqueued_at, attempts, size FROM batches "
                    "WHERE lease_until <= ? ORDER BY id LIMIT ?",
                    (now, room + 16),
                ).fetchall():
                    if row[4] < oldest:
                        db.execute("DELETE FROM batches WHERE id = ?", (row[0],))
                        expired.append((row[1], row[3]))
                        held, count = held - row[6], count - 1
                    elif len(rows) < room:
                        rows.append(row)
                for at in range(0, len(rows), _CHUNK):
                    chunk = [row[0] for row in rows[at:at + _CHUNK]]
                    marks = ",".join("?" * len(chunk))
                    db.execute(f"UPDATE batches SET lease_until = ?, holder = ? WHERE id IN ({marks})",
                               (now + self.lease, holder, *chunk))
            if (held, count) != before:
                db.execute("UPDATE totals SET bytes = ?, batches = ?", (held, count))
        return rows, expired

    # ------------------------------------------------------------------ queue

    def put(self, signal: str, body: bytes, items: int) -> bool:
        """Hand the batch to the spooler and wait for its commit (at most ``put_wait``)."""
        size = len(body)
        if size > self.max_bytes:
            self.count(signal, "too_large", items)
            return False
        if self.degraded:
            return self.memory.put(signal, body, items)
        self._start_spooler()
        deadline = time.monotonic() + self.block_timeout
        while True:
            put = _Put(signal, body, items)
            with self._cond:
                if self._closing:
                    put.verdict = "unavailable"
                else:
                    self._inbox.append(put)
                    self._cond.notify_all()
                    self._cond.wait_for(lambda p=put: p.verdict, self.put_wait)  # type: ignore[misc]
            if not put.verdict:
                return True  # the file is slow: the spooler writes it when it can
            if put.verdict == "ok":
                return True
            if put.verdict == "unavailable":
                return self.memory.put(signal, body, items)
            if self.when_full != "block":
                self.count(signal, "queue_full", items)
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                self.count(signal, "block_timeout", items)
                return False
            with self._cond:  # (room made by another worker: seen at the next try)
                self._cond.wait(min(left, 0.05))

    def take(self, limit: int = 1) -> list[Batch]:
        taken = self.memory.take(limit)  # at risk in memory: first
        if len(taken) >= limit or self.degraded:
            return taken
        oldest = self.clock() - self.max_age
        expired: list[Batch] = []
        self._start_spooler()
        with self._cond:
            if not self._ready and not self._closing:
                # nothing leased here: wait for one look at the file (a read, and a
                # write only if there are batches to lease)
                self._asked += 1
                asked = self._asked
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._answered >= asked or self._closing, 2 * self._busy + 0.05)
            while self._ready and len(taken) < limit:
                batch, generation = self._ready.popleft()
                if generation != self._generation:
                    continue  # (from a file since set aside or replaced)
                if batch.enqueued_at < oldest:
                    self._deletes.append((batch.id, generation))
                    expired.append(batch)
                    continue
                self._inflight[batch.id] = generation
                taken.append(batch)
            if len(self._ready) < self.prefetch // 2:
                self._want = True
                self._cond.notify_all()
        for batch in expired:
            self.count(batch.signal, "expired", batch.items)
        return taken

    def _finish(self, batch: Batch) -> bool:
        """Hand a batch being sent to the spooler for deletion; ``False`` if it was not."""
        with self._cond:
            generation = self._inflight.pop(batch.id, None)
            if generation is None:
                return False
            self._deletes.append((batch.id, generation))
            self._cond.notify_all()
        return True

    def done(self, batch: Batch) -> None:
        if batch.where == "memory":
            self.memory.done(batch)
        else:
            self._finish(batch)

    def retry(self, batch: Batch) -> None:
        if batch.where == "memory":
            self.memory.retry(batch)
            return
        with self._cond:  # still leased here: back at the head of this process's batches
            generation = self._inflight.pop(batch.id, None)
            if generation is not None:
                self._ready.appendleft((replace(batch, attempts=batch.attempts + 1), generation))

    def drop(self, batch: Batch, reason: str, items: int | None = None) -> None:
        if batch.where == "memory":
            self.memory.drop(batch, reason, items)
        elif self._finish(batch):
            self.count(batch.signal, reason, batch.items if items is None else items)

    def size(self) -> tuple[int, int]:
        held, batches = self.memory.size()
        with contextlib.suppress(_Unavailable):
            row = self._run(lambda: self._db().execute("SELECT bytes, batches FROM totals").fetchone())
            held, batches = held + row[0], batches + row[1]
        return held, batches

    def wait(self, timeout: float) -> bool:
        if self.memory.size()[1]:
            return True
        if self.degraded:
            return self.memory.wait(timeout)
        self._start_spooler()
        with self._cond:
            if not self._ready:
                self._want = True
                self._cond.notify_all()
                self._cond.wait(min(timeout, _POLL))
            return bool(self._ready)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
        self.memory.wake()

    def close(self) -> None:
        """Stop the spooler (what it was handed is written first), give back this
        process's leases, write what waits in memory to the file (so a restart sends
        it), and close this thread's connection."""
        with self._cond:
            self._closing = True
            spooler = self._spooler
            self._cond.notify_all()
        if spooler is not None and spooler is not threading.current_thread():
            spooler.join(max(1.0, 4 * self._busy))
        with self._cond:
            self._ready.clear()
            self._inflight.clear()
            deletes, self._deletes = self._deletes, []
            puts, self._inbox = self._inbox, []
        if deletes or puts:  # (the spooler's last write failed, or it did not stop in time)
            self._write(puts, deletes, 0, False, generation=self._generation)
            for put in puts:
                if put.verdict != "ok":
                    self.memory.put(put.signal, put.body, put.items)
        if not self.degraded:
            with contextlib.suppress(_Unavailable):
                self._run(lambda: self._db().execute(
                    "UPDATE batches SET lease_until = 0, holder = NULL WHERE holder = ?", (self._holder(),)))
            for batch in self.memory.drain():
                put = _Put(batch.signal, batch.body, batch.items)
                with contextlib.suppress(_Unavailable):
                    self._run(lambda p=put: self._commit([p], [], 0, False))  # type: ignore[misc]
                if put.verdict != "ok":
                    self.count(batch.signal, "unsent_at_exit", batch.items)
        self._close_connection()

    def __repr__(self) -> str:
        state = "degraded to memory, " if self.degraded else ""
        return f"DiskQueue({self.path!r}, {state}{super().__repr__().partition('(')[2]}"
