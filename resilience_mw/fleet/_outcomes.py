"""The outlier-detection counts a worker shares (``outlier_scope="fleet"``): a rolling
window of its own outcomes per node, and the conversion between the pool's tallies and
the store's integers.

The state sync takes the pool's tallies at every exchange and adds them here; what the
window holds is this worker's last ``outlier_interval``, which it publishes (the store
sums every worker's) and, when the store cannot be used, compares on its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from ..failover.load import Tally
from .store import Outcomes

__all__ = ["OutcomeWindow", "from_store", "to_store"]


class OutcomeWindow:
    """This worker's outcomes per node over the last ``span`` seconds: one entry per
    exchange (the tallies taken then), entries older than ``span`` dropped as new ones
    come. Not thread-safe: its owner holds a lock around it (never across I/O)."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: deque[tuple[float, Mapping[str, Tally]]] = deque()

    def add(self, now: float, tallies: Mapping[str, Tally], span: float) -> None:
        """Add the tallies taken at ``now``; forget those taken ``span`` seconds or more ago."""
        self._entries.append((now, tallies))
        while self._entries and self._entries[0][0] <= now - span:
            self._entries.popleft()

    def sums(self) -> dict[str, Tally]:
        """Each node's outcomes over the window."""
        total: dict[str, Tally] = {}
        for _, tallies in self._entries:
            for node_id, tally in tallies.items():
                total[node_id] = total[node_id] + tally if node_id in total else tally
        return total

    def __bool__(self) -> bool:
        return any(t.requests for _, tallies in self._entries for t in tallies.values())


def to_store(tallies: Mapping[str, Tally]) -> dict[str, Outcomes]:
    """The store's form of ``tallies``: latencies in whole microseconds (the fastest at
    least 1: 0 means none)."""
    return {
        nid: (t.requests, t.failures, round(t.latency_sum * 1e6), 0 if t.fastest is None else max(1, round(t.fastest * 1e6)))
        for nid, t in tallies.items()
    }


def from_store(outcomes: Mapping[str, Outcomes]) -> dict[str, Tally]:
    """The pool's form of the store's ``outcomes``."""
    return {
        nid: Tally(r, f, micros / 1e6, fastest / 1e6 if fastest else None)
        for nid, (r, f, micros, fastest) in outcomes.items()
    }
