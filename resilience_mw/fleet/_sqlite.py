"""The SQLite state store: every worker on one host shares one file (WAL mode).

Each call opens no new connection: one per process (a forked child opens its own) and
per thread, with a short busy timeout, so a slow disk costs the sync thread at most
that and never a request. Times are the host's clock (one host, one clock).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..exceptions import ConfigError
from .store import NodeReport, Override, StoreError

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);
CREATE TABLE IF NOT EXISTS counts (
    reporter TEXT PRIMARY KEY, requests INTEGER NOT NULL, failures INTEGER NOT NULL, expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS retry_counts (
    reporter TEXT PRIMARY KEY, requests INTEGER NOT NULL, failures INTEGER NOT NULL, expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    node_id TEXT NOT NULL, reporter TEXT NOT NULL, reason TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (node_id, reporter)
);
"""

#: the table of each tally (a fixed name, never the caller's text, goes into the SQL)
_TABLES = {"errors": "counts", "retries": "retry_counts"}


class SQLiteStore:
    """See the module docstring; ``path`` is created if missing (its directory must exist
    and be writable)."""

    scope = "host"

    def __init__(self, path: str, *, field: str = "state_url", timeout: float = 0.5) -> None:
        self.path = path
        self._timeout = timeout
        self._local = threading.local()
        directory = Path(path).parent
        try:
            if not directory.is_dir():
                raise ConfigError(field, f"sqlite://{path}", f"directory {directory} does not exist")
            with self._connect() as db:
                db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(
                field, f"sqlite://{path}", f"cannot be opened for writing ({exc})", hint="is the directory writable?"
            ) from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _db(self) -> sqlite3.Connection:
        pid = os.getpid()
        held = getattr(self._local, "db", None)
        if held is None or held[0] != pid:  # a forked child must not share the parent's handle
            held = self._local.db = (pid, self._connect())
        db: sqlite3.Connection = held[1]
        return db

    def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        try:
            return self._db().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (workers serialise on the file lock)."""
        try:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc

    def now(self) -> float:
        return time.time()

    # ----------------------------------------------------------- override

    def override(self) -> Override | None:
        rows = self._run("SELECT value, expires_at FROM kv WHERE key = 'override'")
        if not rows:
            return None
        value, expires_at = rows[0]
        data = json.loads(str(value))
        if expires_at is not None and float(expires_at) <= self.now():  # type: ignore[arg-type]
            return Override(None, int(data["version"]), float(data["set_at"]), None, str(data["actor"]))
        return Override(
            data["level"], int(data["version"]), float(data["set_at"]), data["expires_at"], str(data["actor"])
        )

    def set_override(self, level: str | None, ttl: float | None, actor: str) -> Override:
        with self._transaction() as db:
            rows = db.execute("SELECT value FROM kv WHERE key = 'override'").fetchall()
            version = (json.loads(rows[0][0])["version"] + 1) if rows else 1
            now = self.now()
            ov = Override(level, version, now, None if ttl is None or level is None else now + ttl, actor)
            value = {"level": ov.level, "version": ov.version, "set_at": ov.set_at, "expires_at": ov.expires_at,
                     "actor": ov.actor}
            db.execute(
                "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES ('override', ?, ?)",
                (json.dumps(value), ov.expires_at),
            )
        return ov

    # ------------------------------------------------------------ reports

    def report(self, node_id: str, reporter: str, reason: str | None, ttl: float) -> None:
        if reason is None:
            self._run("DELETE FROM reports WHERE node_id = ? AND reporter = ?", (node_id, reporter))
        else:
            self._run(
                "INSERT OR REPLACE INTO reports (node_id, reporter, reason, expires_at) VALUES (?, ?, ?, ?)",
                (node_id, reporter, reason, self.now() + ttl),
            )

    def reports(self) -> list[NodeReport]:
        now = self.now()
        self._run("DELETE FROM reports WHERE expires_at <= ?", (now,))
        rows = self._run("SELECT node_id, reporter, reason, expires_at FROM reports")
        return [NodeReport(str(n), str(r), str(why), float(e)) for n, r, why, e in rows]  # type: ignore[arg-type]

    def put_counts(self, reporter: str, requests: int, failures: int, ttl: float, *, tally: str = "errors") -> None:
        self._run(
            f"INSERT OR REPLACE INTO {_TABLES[tally]} (reporter, requests, failures, expires_at) VALUES (?, ?, ?, ?)",
            (reporter, requests, failures, self.now() + ttl),
        )

    def counts(self, *, tally: str = "errors") -> tuple[int, int]:
        rows = self._run(
            f"SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(failures), 0) FROM {_TABLES[tally]} WHERE expires_at > ?",
            (self.now(),),
        )
        return int(rows[0][0]), int(rows[0][1])  # type: ignore[call-overload]

    # ------------------------------------------------------ leases, claims

    def lease(self, name: str, holder: str, ttl: float) -> str | None:
        key = f"lease:{name}"
        with self._transaction() as db:
            now = self.now()
            rows = db.execute("SELECT value, expires_at FROM kv WHERE key = ?", (key,)).fetchall()
            current = str(rows[0][0]) if rows and float(rows[0][1]) > now else None
            if current is None or current == holder:
                db.execute("INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)", (key, holder, now + ttl))
                current = holder
        return current

    def holder(self, name: str) -> str | None:
        rows = self._run("SELECT value FROM kv WHERE key = ? AND expires_at > ?", (f"lease:{name}", self.now()))
        return str(rows[0][0]) if rows else None

    def release(self, name: str, holder: str) -> None:
        self._run("DELETE FROM kv WHERE key = ? AND value = ?", (f"lease:{name}", holder))

    def claim(self, key: str, ttl: float) -> bool:
        now = self.now()
        self._run("DELETE FROM kv WHERE key = ? AND expires_at <= ?", (f"claim:{key}", now))
        rows = self._run(
            "INSERT OR IGNORE INTO kv (key, value, expires_at) VALUES (?, '1', ?) RETURNING key",
            (f"claim:{key}", now + ttl),
        )
        return bool(rows)

    def close(self) -> None:
        held = getattr(self._local, "db", None)
        if held is not None:
            held[1].close()
            self._local.db = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"
