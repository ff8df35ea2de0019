"""A SQLite file shared by the processes of a host: how it is opened and how a file
deleted or replaced under them is told from the one they opened.

Used by the state store (:mod:`resilience_mw.fleet`) and the telemetry disk queue
(:mod:`resilience_mw.telemetry.export`): WAL, so readers never wait for the writer;
``synchronous=NORMAL``, durable across a process crash (not a power cut) at a fraction
of the cost; autocommit, so each caller says where its transactions are.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable

__all__ = ["SETUP_TIMEOUT", "identity", "open_wal", "thread_connection"]

#: seconds opening a connection may wait on another process's lock (its journal mode and
#: schema): a worker starting while another writes must not take the lock for a fault
SETUP_TIMEOUT = 10.0


def open_wal(path: str, schema: str, *, timeout: float) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode with ``schema`` applied (a file created anew,
    deleted under its users, gets its tables); ``timeout``: seconds each later statement
    waits on a lock (setting up waits up to :data:`SETUP_TIMEOUT`). Closed again if
    setting it up fails."""
    db = sqlite3.connect(path, timeout=max(timeout, SETUP_TIMEOUT), isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
        db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")  # (an int: no text of anyone's)
    except sqlite3.Error:
        db.close()
        raise
    return db


def identity(path: str) -> tuple[int, int] | None:
    """The file at ``path`` (device and inode), ``None`` if there is none: a different
    value means the file was deleted or replaced since."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def thread_connection(
    local: threading.local, generation: int, connect: Callable[[], sqlite3.Connection]
) -> sqlite3.Connection:
    """The calling thread's connection (kept in ``local``) for the file's current
    ``generation``, made with ``connect`` when there is none for this process and
    generation: a forked child must not share its parent's handle, and a file replaced
    under us (a new generation) needs a new one. The handle it replaces is closed."""
    pid = os.getpid()
    held = getattr(local, "db", None)
    if held is None or held[0] != pid or held[2] != generation:
        if held is not None and held[0] == pid:
            with contextlib.suppress(sqlite3.Error):
                held[1].close()
        local.db = None
        held = local.db = (pid, connect(), generation)
    db: sqlite3.Connection = held[1]
    return db
