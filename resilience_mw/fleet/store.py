"""Shared state for many workers and hosts: what is stored (the records, and the
protocol every store meets; :mod:`resilience_mw.fleet.stores` opens one from a URL).

One setting picks the store, ``state_url`` (``RESILIENCE_STATE_URL``):

* unset: this process alone (nothing is shared; the default);
* ``sqlite:///path/to/file.db``: every worker on this host (SQLite in WAL mode, no
  server to run);
* ``redis://host:port/db`` or ``rediss://...``: the whole fleet (the ``redis`` client,
  ``pip install resilience_mw[redis]``); ``?namespace=name`` keeps services apart on
  one Redis (default ``resilience``).

A store is used only by the background sync (:mod:`resilience_mw.fleet.sync`) and the CLI,
never on a request's path. Its methods are plain and synchronous, raise
:class:`StoreError` when the store cannot answer, and take times from the store's own
clock (:meth:`StateStore.now`: Redis ``TIME``; the host clock for SQLite, which is one
host), so hosts whose clocks disagree still agree on what has expired.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Protocol

from ..exceptions import ResilienceError

__all__ = [
    "TALLIES",
    "NodeReport",
    "Override",
    "StateStore",
    "StoreError",
    "reporter_id",
]


class StoreError(ResilienceError):
    """The state store did not answer (down, slow, refused, full); nothing is lost:
    every worker goes on with its local state."""


@dataclass(frozen=True, slots=True)
class Override:
    """An operator's forced level, shared by every worker of the store's scope."""

    #: the level's name; ``None`` when the override was cleared
    level: str | None
    #: grows with every change, so a worker applies each change once
    version: int
    #: store clock when it was set
    set_at: float
    #: store clock when it lapses (``None``: until cleared)
    expires_at: float | None
    #: who set it (``host:pid`` or ``cli``)
    actor: str


@dataclass(frozen=True, slots=True)
class NodeReport:
    """One worker's word that a node is down, until ``expires_at`` (store clock)."""

    node_id: str
    reporter: str
    #: why the reporter took it out (a :class:`~resilience_mw.DownReason` value)
    reason: str
    expires_at: float


class StateStore(Protocol):
    """What the sync and the CLI need from a store."""

    #: ``"host"`` (SQLite) or ``"fleet"`` (Redis)
    scope: str

    def now(self) -> float:
        """The store's clock, in seconds."""
        ...

    def override(self) -> Override | None:
        """The latest override (``level`` ``None`` once cleared); ``None`` if there has
        never been one or it lapsed."""
        ...

    def set_override(self, level: str | None, ttl: float | None, actor: str) -> Override:
        """Force ``level`` for ``ttl`` seconds (``None``: until cleared), or clear it."""
        ...

    def report(self, node_id: str, reporter: str, reason: str | None, ttl: float) -> None:
        """Say ``node_id`` is down for ``reason`` (for ``ttl`` seconds), or, with ``None``,
        withdraw ``reporter``'s word."""
        ...

    def reports(self) -> list[NodeReport]:
        """Every unexpired report."""
        ...

    def put_counts(self, reporter: str, requests: int, failures: int, ttl: float, *, tally: str = "errors") -> None:
        """``reporter``'s window of ``tally`` (:data:`TALLIES`), for ``ttl`` seconds:
        requests and failures in its error window, or requests and extra attempts in its
        retry budget's."""
        ...

    def counts(self, *, tally: str = "errors") -> tuple[int, int]:
        """Every unexpired window of ``tally``, summed: ``(requests, failures or extra
        attempts)``."""
        ...

    def lease(self, name: str, holder: str, ttl: float) -> str | None:
        """Take or renew the lease ``name`` for ``holder``; the holder after the call."""
        ...

    def holder(self, name: str) -> str | None:
        """Who holds the lease ``name`` now (``None``: nobody)."""
        ...

    def release(self, name: str, holder: str) -> None:
        """Give the lease up if ``holder`` has it."""
        ...

    def claim(self, key: str, ttl: float) -> bool:
        """``True`` for the first caller within ``ttl`` seconds (alerts once per scope)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


#: what workers count together: ``errors`` (the error rate, ``error_rate_scope="fleet"``)
#: and ``retries`` (the adapter's retry budget, ``retry_budget_scope="fleet"``)
TALLIES = ("errors", "retries")


def reporter_id() -> str:
    """This worker's name in the store: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"
