"""The disk queue: OTLP batches in one SQLite file that every worker on a host shares.

What was queued before a process ends (a restart, a crash, ``kill -9``) is sent after
it, by whichever worker takes it first. A batch being sent is leased to one worker
(``lease`` seconds, a row lock in the file): no other worker takes it meanwhile, so a
batch is posted twice only when a worker died, or its post outlived its lease, after
the collector took the batch but before the row was deleted.

The file is WAL-mode with ``synchronous=NORMAL``: a process crash loses nothing that
was committed; a power cut may lose the last transactions. One connection per process
and thread (a forked child opens its own), with a short busy timeout.

It never raises into the app:

* the file busy or the disk full: the batch goes to a memory queue of the same bounds,
  which the sender empties first (and :meth:`DiskQueue.close` writes to the file);
* the file corrupt (truncated, overwritten): it is renamed ``<path>.corrupt-<time>``,
  a fresh file takes its place, and a warning says so (batches in it are lost);
* the file unwritable (permissions, a read-only or missing directory): the queue
  works in memory from then on, with a warning;
* the file deleted or replaced under running workers: each reopens the file now at the
  path (the check of :mod:`resilience_mw.fleet._sqlite`, one ``stat`` a second).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ... import _fork
from ... import _validate as v
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
#: seconds an idle sender waits between looks at the file (other workers' batches)
_POLL = 0.25


class _Unavailable(Exception):
    """The file could not do it this time (the caller falls back to memory)."""


class DiskQueue(ExportQueue):
    """Batches in the SQLite file at ``path``; see the module docstring and
    :class:`~resilience_mw.telemetry.export.queue.ExportQueue` for the bounds.

    :param path: the file (created if missing; its directory must exist).
    :param lease: seconds a taken batch stays with its worker before another may take
        it (more than a post can last: the session's timeout and deadline).
    :param busy_timeout: seconds a call waits for another worker's write.
    """

    kind = "disk"
    _fork_order = 0

    def __init__(self, path: str | os.PathLike[str], *, lease: float = 30.0, busy_timeout: float = 0.25,
                 **options: Any) -> None:
        super().__init__(**options)
        self.path = os.fspath(path)
        self.lease: float = v.seconds(minimum=0.1, maximum=3600)("lease", lease)
        self._busy = busy_timeout
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
        self._posted = threading.Event()
        self._room = threading.Event()
        _fork.register(self)
        if not Path(self.path).parent.is_dir():
            self._degrade(f"directory {Path(self.path).parent} does not exist")
            return
        try:
            self._db()
        except sqlite3.Error as exc:
            self._failed(exc)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._posted = threading.Event()
        self._room = threading.Event()

    # ------------------------------------------------------------ connection

    def _holder(self) -> str:
        return f"{os.getpid()}.{self._token}"

    def _db(self) -> sqlite3.Connection:
        pid, generation = os.getpid(), self._generation
        held = getattr(self._local, "db", None)
        if held is None or held[0] != pid or held[2] != generation:
            if held is not None and held[0] == pid:
                with contextlib.suppress(sqlite3.Error):
                    held[1].close()
            self._local.db = None
            db = sqlite3.connect(self.path, timeout=self._busy, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
            except sqlite3.Error:
                db.close()
                raise
            if self._file is None:
                self._file = self._identity()
            held = self._local.db = (pid, db, generation)
        conn: sqlite3.Connection = held[1]
        return conn

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

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

    # ------------------------------------------------------------------ queue

    def put(self, signal: str, body: bytes, items: int) -> bool:
        size = len(body)
        if size > self.max_bytes:
            self.count(signal, "too_large", items)
            return False
        deadline = time.monotonic() + self.block_timeout
        while True:
            try:
                verdict, evicted = self._run(lambda: self._insert(signal, body, items))
            except _Unavailable:
                return self.memory.put(signal, body, items)
            for old_signal, old_items in evicted:
                self.count(old_signal, "evicted", old_items)
            if verdict:
                self._posted.set()
                return True
            if self.when_full != "block":
                self.count(signal, "queue_full", items)
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                self.count(signal, "block_timeout", items)
                return False
            self._room.clear()
            self._room.wait(min(left, 0.05))  # (room made by another worker: seen at the next look)

    def _insert(self, signal: str, body: bytes, items: int) -> tuple[bool, list[tuple[str, int]]]:
        size = len(body)
        evicted: list[tuple[str, int]] = []
        with self._transaction() as db:
            held = db.execute("SELECT bytes FROM totals").fetchone()[0]
            if held + size > self.max_bytes:
                if self.when_full != "drop_oldest":
                    return False, []
                freed = 0
                for row_id, old_signal, old_items, old_size in db.execute(
                    "SELECT id, signal, items, size FROM batches WHERE lease_until <= ? ORDER BY id LIMIT 10000",
                    (self.clock(),),
                ).fetchall():
                    db.execute("DELETE FROM batches WHERE id = ?", (row_id,))
                    evicted.append((old_signal, old_items))
                    freed += old_size
                    if held - freed + size <= self.max_bytes:
                        break
                db.execute("UPDATE totals SET bytes = bytes - ?, batches = batches - ?", (freed, len(evicted)))
                if held - freed + size > self.max_bytes:
                    return False, evicted
            db.execute(
                "INSERT INTO batches (signal, body, size, items, enqueued_at) VALUES (?, ?, ?, ?, ?)",
                (signal, body, size, items, self.clock()),
            )
            db.execute("UPDATE totals SET bytes = bytes + ?, batches = batches + 1", (size,))
        return True, evicted

    def take(self, limit: int = 1) -> list[Batch]:
        taken = self.memory.take(limit)  # at risk in memory: first
        if len(taken) >= limit or self.degraded:
            return taken
        self._check_file()
        try:
            rows, expired = self._run(lambda: self._lease(limit - len(taken)))
        except _Unavailable:
            return taken
        for signal, items in expired:
            self.count(signal, "expired", items)
        if expired:
            self._room.set()
        taken += [Batch(r[0], r[1], bytes(r[2]), r[3], r[4], r[5], "disk") for r in rows]
        return taken

    def _lease(self, limit: int) -> tuple[list[tuple[Any, ...]], list[tuple[str, int]]]:
        db = self._db()
        now = self.clock()
        # a read first: an idle sender looks without taking the write lock
        if not db.execute("SELECT 1 FROM batches WHERE lease_until <= ? LIMIT 1", (now,)).fetchall():
            return [], []
        oldest = now - self.max_age
        rows: list[tuple[Any, ...]] = []
        expired: list[tuple[str, int]] = []
        with self._transaction() as db:
            found = db.execute(
                "SELECT id, signal, body, items, enqueued_at, attempts, size FROM batches "
                "WHERE lease_until <= ? ORDER BY id LIMIT ?",
                (now, limit + 16),
            ).fetchall()
            gone = 0
            for row in found:
                if row[4] < oldest:
                    db.execute("DELETE FROM batches WHERE id = ?", (row[0],))
                    expired.append((row[1], row[3]))
                    gone += row[6]
                elif len(rows) < limit:
                    rows.append(row)
            if expired:
                db.execute("UPDATE totals SET bytes = bytes - ?, batches = batches - ?", (gone, len(expired)))
            if rows:
                db.executemany(
                    "UPDATE batches SET lease_until = ?, holder = ? WHERE id = ?",
                    [(now + self.lease, self._holder(), row[0]) for row in rows],
                )
        return rows, expired

    def _delete(self, batch: Batch) -> bool:
        def op() -> bool:
            with self._transaction() as db:
                row = db.execute("DELETE FROM batches WHERE id = ? AND holder = ? RETURNING size",
                                 (batch.id, self._holder())).fetchone()
                if row is not None:
                    db.execute("UPDATE totals SET bytes = bytes - ?, batches = batches - 1", (row[0],))
            return row is not None

        try:
            gone = self._run(op)
        except _Unavailable:
            return False
        self._room.set()
        return gone

    def done(self, batch: Batch) -> None:
        if batch.where == "memory":
            self.memory.done(batch)
        else:
            self._delete(batch)

    def retry(self, batch: Batch) -> None:
        if batch.where == "memory":
            self.memory.retry(batch)
            return
        with contextlib.suppress(_Unavailable):
            self._run(lambda: self._db().execute(
                "UPDATE batches SET lease_until = 0, holder = NULL, attempts = attempts + 1 WHERE id = ? AND holder = ?",
                (batch.id, self._holder()),
            ))

    def drop(self, batch: Batch, reason: str, items: int | None = None) -> None:
        if batch.where == "memory":
            self.memory.drop(batch, reason, items)
        elif self._delete(batch):
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
        self._posted.wait(min(timeout, _POLL))
        self._posted.clear()
        return True  # (other workers' batches are seen only by looking)

    def wake(self) -> None:
        self._posted.set()
        self.memory.wake()

    def close(self) -> None:
        """Give back this process's leases, write what waits in memory to the file (so a
        restart sends it), and close this thread's connection."""
        if not self.degraded:
            with contextlib.suppress(_Unavailable):
                self._run(lambda: self._db().execute(
                    "UPDATE batches SET lease_until = 0, holder = NULL WHERE holder = ?", (self._holder(),)))
            for batch in self.memory.drain():
                try:
                    verdict, _ = self._run(lambda b=batch: self._insert(b.signal, b.body, b.items))  # type: ignore[misc]
                except _Unavailable:
                    verdict = False
                if not verdict:
                    self.count(batch.signal, "unsent_at_exit", batch.items)
        held = getattr(self._local, "db", None)
        if held is not None and held[0] == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                held[1].close()
        self._local.db = None

    def __repr__(self) -> str:
        state = "degraded to memory, " if self.degraded else ""
        return f"DiskQueue({self.path!r}, {state}{super().__repr__().partition('(')[2]}"
