"""Shared state for many workers and hosts: what is stored (the records, and the
protocol every store meets; :mod:`resilience_mw.fleet.stores` opens one from a URL).

One setting picks the store, ``state_url`` (``RESILIENCE_STATE_URL``):

* unset: this process alone (nothing is shared; the default);
* ``sqlite:///path/to/file.db``: every worker on this host (SQLite in WAL mode, no
  server to run);
* ``redis://host:port/db`` or ``rediss://...``: the whole fleet (the ``redis`` client,
  ``pip install resilience_mw[redis]``); its keys live under a namespace, one per
  service: ``?namespace=name`` in the URL or ``state_namespace``, else the service's
  name (see :class:`~resilience_mw.config.StateConfig`).

A store is used only by the background sync (:mod:`resilience_mw.fleet.sync`) and the CLI,
never on a request's path. Its methods are plain and synchronous, raise
:class:`StoreError` when the store cannot answer, and take times from the store's own
clock (:meth:`StateStore.now`: Redis ``TIME``; the host clock for SQLite, which is one
host), so hosts whose clocks disagree still agree on what has expired.

A value in the store that does not decode (written by another tool or another version,
or damaged) raises :class:`StoreDataError`, a :class:`StoreError` naming the key: the
sync counts it and goes on with its other steps.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..exceptions import ConfigError, ResilienceError
from ..model import ServiceNode, parse_level

__all__ = [
    "TALLIES",
    "NodeReport",
    "Outcomes",
    "Override",
    "ServiceIdentity",
    "StateStore",
    "StoreDataError",
    "StoreError",
    "reporter_id",
]


class StoreError(ResilienceError):
    """The state store did not answer (down, slow, refused, full); nothing is lost:
    every worker goes on with its local state."""


class StoreDataError(StoreError):
    """A value in the store's namespace that does not decode (another tool's, another
    version's, or damaged): the store answered, but ``key`` holds ``reason``.

    ``partial`` is what did decode, for a reader that can go on without the bad entries
    (the reports, or the counts, of the other workers); ``None`` when nothing did.
    """

    def __init__(self, key: str, reason: str, partial: Any = None) -> None:
        #: the store key (Redis) or ``table:key`` (SQLite) that holds the bad value
        self.key = key
        #: what is wrong with it
        self.reason = reason
        #: what could be decoded despite it
        self.partial = partial
        super().__init__(f"undecodable value at {key!r}: {reason}")


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


@dataclass(frozen=True, slots=True)
class ServiceIdentity:
    """Which service a worker serves: its name and its node set. Every worker announces
    it; two identities in one namespace are two services (or two versions of one with
    different nodes) that must not merge their state."""

    #: the service's name (``state_service``: a Flask app's import name by default)
    service: str
    #: a digest of the node set (ids and endpoints): equal node sets, equal fingerprints
    fingerprint: str
    #: the node ids (what a collision message names; endpoints stay out of the store)
    nodes: tuple[str, ...] = ()

    @classmethod
    def of(cls, service: str, nodes: Iterable[ServiceNode]) -> ServiceIdentity:
        """The identity of ``service`` with these nodes."""
        ordered = sorted((n.id, n.endpoint) for n in nodes)
        digest = hashlib.sha256(json.dumps(ordered).encode()).hexdigest()[:16]
        return cls(service, digest, tuple(i for i, _ in ordered))

    def describe(self) -> str:
        """``service (nodes a, b)`` for log lines and status pages."""
        return f"{self.service} (nodes {', '.join(self.nodes) or 'none'})"


#: one node's outcomes in a store: ``(requests, failures, latency_micros, fastest_micros)``:
#: the sum of the successes' latencies and the fastest of them, in whole microseconds
#: (integers add up the same in every store and language; ``fastest_micros`` 0: no
#: success)
Outcomes = tuple[int, int, int, int]


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

    def put_outcomes(self, reporter: str, outcomes: Mapping[str, Outcomes], ttl: float) -> None:
        """``reporter``'s outcomes per node over its outlier-detection window (node id ->
        ``(requests, failures, latency_micros)``), for ``ttl`` seconds; they replace
        whatever ``reporter`` published before, so a node it no longer names drops out."""
        ...

    def outcomes(self) -> dict[str, Outcomes]:
        """Every unexpired reporter's outcomes, summed per node: node id -> ``(requests,
        failures, latency_micros)``. Entries that do not decode raise
        :class:`StoreDataError` with the sum of the others as ``partial``."""
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

    def announce(self, identity: ServiceIdentity, ttl: float) -> list[ServiceIdentity]:
        """Say a worker of ``identity`` uses the namespace (for ``ttl`` seconds); every
        unexpired identity announced there, this one included."""
        ...

    def check(self) -> bool:
        """Notice a store replaced under this process (a SQLite file deleted or
        replaced) and reconnect to the one now at its address; ``True`` if it did. The
        sync calls it before each exchange."""
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


# ------------------------------------------------------------------ decoding
# Every backend turns its stored text into records through these, so a value that does
# not decode is a StoreDataError naming its key, whatever the store.


def decode_override(key: str, raw: object, *, lapsed: bool = False) -> Override:
    """The :class:`Override` stored as JSON text ``raw`` at ``key`` (``lapsed``: its
    expiry has passed, so it reads as cleared)."""
    try:
        data = json.loads(str(raw))
        if not isinstance(data, dict):
            raise ValueError(f"not a JSON object: {str(raw)[:40]!r}")
        level = data["level"]
        if level is not None:
            level = parse_level(level).name
        expires_at = data["expires_at"]
        override = Override(
            level,
            _integer(data["version"]),
            _number(data["set_at"]),
            None if expires_at is None else _number(expires_at),
            str(data["actor"]),
        )
    except (ValueError, TypeError, KeyError, ConfigError) as exc:
        raise StoreDataError(key, _why(exc)) from None
    if lapsed:
        return Override(None, override.version, override.set_at, None, override.actor)
    return override


def encode_override(override: Override) -> str:
    """The JSON text :func:`decode_override` reads."""
    return json.dumps(
        {"level": override.level, "version": override.version, "set_at": override.set_at,
         "expires_at": override.expires_at, "actor": override.actor}
    )


def decode_identity(key: str, service: str, fingerprint: str, raw: object) -> tuple[ServiceIdentity, float]:
    """An identity and its expiry (store clock) from its JSON text ``raw``."""
    try:
        data = json.loads(str(raw))
        nodes = data["nodes"]
        if not isinstance(nodes, list):
            raise ValueError("nodes is not a list")
        return ServiceIdentity(service, fingerprint, tuple(str(n) for n in nodes)), _number(data["expires_at"])
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreDataError(key, _why(exc)) from None


def encode_identity(identity: ServiceIdentity, expires_at: float) -> str:
    """The JSON text :func:`decode_identity` reads."""
    return json.dumps({"nodes": list(identity.nodes), "expires_at": expires_at})


def decode_outcomes(key: str, raw: object) -> dict[str, Outcomes]:
    """One reporter's outcomes from their JSON text ``raw`` at ``key`` (an object: node id
    -> ``[requests, failures, latency_micros, fastest_micros]``, non-negative integers,
    failures at most requests)."""
    try:
        data = json.loads(str(raw))
        if not isinstance(data, dict):
            raise ValueError(f"not a JSON object: {str(raw)[:40]!r}")
        return {str(node_id): check_outcomes(value) for node_id, value in data.items()}
    except (ValueError, TypeError) as exc:
        raise StoreDataError(key, _why(exc)) from None


def encode_outcomes(outcomes: Mapping[str, Outcomes]) -> str:
    """The JSON text :func:`decode_outcomes` reads."""
    return json.dumps({node_id: list(counts) for node_id, counts in outcomes.items()}, separators=(",", ":"))


def check_outcomes(value: object) -> Outcomes:
    """``value`` as one node's :data:`Outcomes`, or ValueError/TypeError."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ValueError(f"{str(value)[:40]!r} is not [requests, failures, latency_micros, fastest_micros]")
    requests, failures, micros, fastest = (_integer(x, text=False) for x in value)
    if min(requests, failures, micros, fastest) < 0 or failures > requests:
        raise ValueError(f"{list(value)!r} are not counts (negative, or more failures than requests)")
    return requests, failures, micros, fastest


def add_outcomes(total: dict[str, Outcomes], more: Mapping[str, Outcomes]) -> None:
    """Add ``more`` into ``total``, node by node (the fastest: the least that is not 0)."""
    for node_id, (r, f, m, q) in more.items():
        tr, tf, tm, tq = total.get(node_id, (0, 0, 0, 0))
        total[node_id] = (tr + r, tf + f, tm + m, min(tq, q) if tq and q else tq or q)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"{value!r} is not a number")
    number = float(value)
    if math.isnan(number):
        raise ValueError(f"{value!r} is not a number")
    return number


def _integer(value: object, *, text: bool = True) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str) if text else int):
        raise TypeError(f"{value!r} is not an integer")
    return int(value)


def _why(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]!r} field"
    return f"{type(exc).__name__}: {str(exc)[:120]}"
