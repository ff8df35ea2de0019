"""The SQLite state store: every worker on one host shares one file (WAL mode).

Each call opens no new connection: one per process (a forked child opens its own) and
per thread, with a short busy timeout, so a slow disk costs the sync thread at most
that and never a request. Times are the host's clock (one host, one clock).

A file is one namespace: services that must not share state use files of their own
(two that share one are told apart by the identities they announce, and warned about).

The file may be deleted or replaced under running workers (``rm state.db*``, a ``/tmp``
cleaner): their connections would go on with the unlinked file while new workers and
the CLI use a new one. :meth:`SQLiteStore.check` (the sync calls it before every
exchange) compares the device and inode at the path with those of the file it opened
and, when they differ, reopens every connection of this store on the file now there.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from .._sqlite_file import identity, open_wal, thread_connection
from ..exceptions import ConfigError
from .store import (
    NodeReport,
    Outcomes,
    Override,
    ServiceIdentity,
    StoreDataError,
    StoreError,
    add_outcomes,
    check_outcomes,
    decode_identity,
    decode_override,
    encode_identity,
    encode_override,
)

__all__ = ["SQLiteStore"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at REAL);
CREATE TABLE IF NOT EXISTS counts (
    reporter TEXT PRIMARY KEY, requests INTEGER NOT NULL, failures INTEGER NOT NULL, expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS retry_counts (
    reporter TEXT PRIMARY KEY, requests INTEGER NOT NULL, failures INTEGER NOT NULL, expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outcomes (
    reporter TEXT NOT NULL, node_id TEXT NOT NULL, requests INTEGER NOT NULL, failures INTEGER NOT NULL,
    latency_micros INTEGER NOT NULL, fastest_micros INTEGER NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (reporter, node_id)
);
CREATE TABLE IF NOT EXISTS reports (
    node_id TEXT NOT NULL, reporter TEXT NOT NULL, reason TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (node_id, reporter)
);
CREATE TABLE IF NOT EXISTS services (
    service TEXT NOT NULL, fingerprint TEXT NOT NULL, value TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (service, fingerprint)
);
"""

#: the table of each tally (a fixed name, never the caller's text, goes into the SQL)
_TABLES = {"errors": "counts", "retries": "retry_counts"}


def _number(value: object) -> float:
    """A stored number, or ValueError (SQLite keeps whatever another tool wrote)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{str(value)[:40]!r} is not a number")
    return float(value)


class SQLiteStore:
    """See the module docstring; ``path`` is created if missing (its directory must exist
    and be writable)."""

    scope = "host"

    def __init__(self, path: str, *, field: str = "state_url", timeout: float = 0.5) -> None:
        self.path = path
        self._timeout = timeout
        self._local = threading.local()
        #: bumped each time the file at the path is found replaced: every thread's
        #: connection opened before is replaced at its next call
        self._generation = 0
        #: (device, inode) of the file this store uses (``None``: not known yet)
        self._file: tuple[int, int] | None = None
        #: times the file was found deleted or replaced and reopened
        self.reopened = 0
        self._check_lock = threading.Lock()
        directory = Path(path).parent
        try:
            if not directory.is_dir():
                raise ConfigError(field, f"sqlite://{path}", f"directory {directory} does not exist")
            self._db()
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(
                field, f"sqlite://{path}", f"cannot be opened for writing ({exc})", hint="is the directory writable?"
            ) from None

    def _connect(self) -> sqlite3.Connection:
        db = open_wal(self.path, _SCHEMA, timeout=self._timeout)
        if self._file is None:
            self._file = self._identity()
        return db

    def _identity(self) -> tuple[int, int] | None:
        return identity(self.path)

    def _db(self) -> sqlite3.Connection:
        return thread_connection(self._local, self._generation, self._connect)

    def check(self) -> bool:
        """Reopen on the file now at the path if it is not the one opened (deleted,
        replaced, or moved away); ``True`` if so. One ``stat``: cheap enough for every sync."""
        now_there = self._identity()
        with self._check_lock:  # the sync and a request thread may look at once: one reopens
            if now_there == self._file or (now_there is None and self._file is None):
                return False  # the same file, or a reopen of a deleted one under way
            what = "deleted" if now_there is None else "replaced"
            self._file = now_there  # None: the reopen below creates the file and records it
            self._generation += 1
        try:
            self._db()  # creates the file if it is gone, and its tables
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc
        self.reopened += 1
        log.warning(
            "state file %s was %s while in use: reopened it (state kept in the old file is lost; "
            "every worker reopens it at its next sync)",
            self.path,
            what,
        )
        return True

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
        try:
            lapsed = expires_at is not None and _number(expires_at) <= self.now()
        except ValueError as exc:
            raise StoreDataError("kv:override", f"expires_at: {exc}") from None
        return decode_override("kv:override", value, lapsed=lapsed)

    def set_override(self, level: str | None, ttl: float | None, actor: str) -> Override:
        with self._transaction() as db:
            rows = db.execute("SELECT value FROM kv WHERE key = 'override'").fetchall()
            # a damaged record is replaced, not a reason to refuse the operator: its
            # version is unknown, so count on from the clock (above any earlier one)
            try:
                version = decode_override("kv:override", rows[0][0]).version + 1 if rows else 1
            except StoreDataError:
                version = int(time.time() * 1000)
            now = self.now()
            ov = Override(level, version, now, None if ttl is None or level is None else now + ttl, actor)
            db.execute(
                "INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES ('override', ?, ?)",
                (encode_override(ov), ov.expires_at),
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
        self._run("DELETE FROM reports WHERE typeof(expires_at) IN ('integer', 'real') AND expires_at <= ?", (now,))
        found, bad = [], []
        for n, r, why, e in self._run("SELECT node_id, reporter, reason, expires_at FROM reports"):
            try:
                found.append(NodeReport(str(n), str(r), str(why), _number(e)))
            except ValueError:
                bad.append(f"{n}/{r}")
        if bad:
            raise StoreDataError("reports", f"{len(bad)} row(s) with a bad expiry: {bad[0][:40]!r}", partial=found)
        return found

    def put_counts(self, reporter: str, requests: int, failures: int, ttl: float, *, tally: str = "errors") -> None:
        self._run(
            f"INSERT OR REPLACE INTO {_TABLES[tally]} (reporter, requests, failures, expires_at) VALUES (?, ?, ?, ?)",
            (reporter, requests, failures, self.now() + ttl),
        )

    def counts(self, *, tally: str = "errors") -> tuple[int, int]:
        table = _TABLES[tally]
        rows = self._run(f"SELECT reporter, requests, failures FROM {table} WHERE expires_at > ?", (self.now(),))
        requests = failures = 0
        bad = []
        for reporter, r, f in rows:
            if isinstance(r, int) and isinstance(f, int):
                requests, failures = requests + r, failures + f
            else:
                bad.append(str(reporter))
        if bad:
            raise StoreDataError(table, f"{len(bad)} row(s) with counts that are not integers: {bad[0][:40]!r}",
                                 partial=(requests, failures))
        return requests, failures

    def put_outcomes(self, reporter: str, outcomes: Mapping[str, Outcomes], ttl: float) -> None:
        with self._transaction() as db:
            now = self.now()
            # the reporter's rows are replaced whole; a dead worker's go once they expire
            db.execute("DELETE FROM outcomes WHERE reporter = ? OR (typeof(expires_at) IN ('integer', 'real') "
                       "AND expires_at <= ?)", (reporter, now))
            db.executemany(
                "INSERT INTO outcomes (reporter, node_id, requests, failures, latency_micros, fastest_micros, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(reporter, node_id, r, f, m, q, now + ttl) for node_id, (r, f, m, q) in outcomes.items()],
            )

    def outcomes(self) -> dict[str, Outcomes]:
        rows = self._run(
            "SELECT reporter, node_id, requests, failures, latency_micros, fastest_micros, expires_at FROM outcomes "
            "WHERE NOT (typeof(expires_at) IN ('integer', 'real') AND expires_at <= ?)",
            (self.now(),),
        )
        total: dict[str, Outcomes] = {}
        bad = []
        for reporter, node_id, r, f, m, q, expires_at in rows:
            try:
                _number(expires_at)  # text sorts after every number: it would never expire
                add_outcomes(total, {str(node_id): check_outcomes((r, f, m, q))})
            except (ValueError, TypeError):
                bad.append(f"{node_id}/{reporter}")
        if bad:
            raise StoreDataError("outcomes", f"{len(bad)} row(s) that are not counts with an expiry: {bad[0][:40]!r}",
                                 partial=total)
        return total

    # ------------------------------------------------------ leases, claims

    def lease(self, name: str, holder: str, ttl: float) -> str | None:
        key = f"lease:{name}"
        with self._transaction() as db:
            now = self.now()
            rows = db.execute("SELECT value, expires_at FROM kv WHERE key = ?", (key,)).fetchall()
            try:
                current = str(rows[0][0]) if rows and _number(rows[0][1]) > now else None
            except ValueError as exc:  # no expiry, or text: a lease that never lapses is not ours
                raise StoreDataError(f"kv:{key}", f"expires_at: {exc}") from None
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
        if rows:
            return True
        held = self._run("SELECT expires_at FROM kv WHERE key = ?", (f"claim:{key}",))
        if held and not isinstance(held[0][0], (int, float)):  # would block the alert for good
            raise StoreDataError(f"kv:claim:{key}", "no expiry (not a claim resilience_mw wrote)")
        return False

    # ------------------------------------------------------------ identity

    def announce(self, identity: ServiceIdentity, ttl: float) -> list[ServiceIdentity]:
        now = self.now()
        self._run(
            "INSERT OR REPLACE INTO services (service, fingerprint, value, expires_at) VALUES (?, ?, ?, ?)",
            (identity.service, identity.fingerprint, encode_identity(identity, now + ttl), now + ttl),
        )
        self._run("DELETE FROM services WHERE typeof(expires_at) IN ('integer', 'real') AND expires_at <= ?", (now,))
        found, bad = [], []
        for service, fingerprint, value in self._run("SELECT service, fingerprint, value FROM services"):
            try:
                found.append(decode_identity("services", str(service), str(fingerprint), value)[0])
            except StoreDataError:
                bad.append(str(service))
        if bad:
            raise StoreDataError("services", f"{len(bad)} row(s) not a service identity: {bad[0][:40]!r}",
                                 partial=found)
        return found

    def close(self) -> None:
        held = getattr(self._local, "db", None)
        if held is not None:
            held[1].close()
            self._local.db = None

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"
