"""Node-selection strategies: pure functions of a healthy-node tuple.

A manager rebuilds its picker only when the healthy set changes; choosing a node is
then a single call to that picker. For :attr:`~FailoverStrategy.Priority` with one node
in the top tier and :attr:`~FailoverStrategy.RoundRobin` (and small-weight
:attr:`~FailoverStrategy.WeightedRoundRobin`) the picker is a C-level callable
(``itertools.repeat(...).__next__`` / ``itertools.cycle(...).__next__``): no lock, no
scan, and atomic under the GIL, so every thread can share it.

The load-aware strategies (:attr:`~FailoverStrategy.LeastLoaded`,
:attr:`~FailoverStrategy.FastestResponse`, and ties in Priority's top tier) score a node
by its :meth:`~resilience_mw.failover.load.NodeLoad.cost` divided by its weight, read live:
no rebuild per sample.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
from collections.abc import Callable, Mapping, Sequence

from .. import _fork
from ..model import FailoverStrategy, ServiceNode
from .load import NodeLoad

__all__ = [
    "Orderer",
    "Picker",
    "build_orderer",
    "build_picker",
    "priority_order",
    "smooth_weighted_sequence",
]

Picker = Callable[[], ServiceNode]

#: Longest precomputed weighted sequence; beyond it a locked smooth-WRR is used.
MAX_WEIGHTED_SEQUENCE = 10_000

def priority_order(nodes: Sequence[ServiceNode]) -> tuple[ServiceNode, ...]:
    """Nodes by descending priority; ties keep their given order."""
    return tuple(sorted(nodes, key=lambda n: -n.priority))


def smooth_weighted_sequence(nodes: Sequence[ServiceNode]) -> tuple[ServiceNode, ...]:
    """One period of nginx's smooth weighted round-robin over ``nodes``.

    Each step adds every node's weight to its current score, picks the highest score
    (first on ties) and subtracts the total from it. For weights 5:1:1 this gives
    a,a,b,a,c,a,a: the heavy node is spread out instead of sent in a burst.
    """
    divisor = math.gcd(*(n.weight for n in nodes))
    weights = [n.weight // divisor for n in nodes]
    total = sum(weights)
    current = [0] * len(nodes)
    out: list[ServiceNode] = []
    for _ in range(total):
        best = 0
        for i, w in enumerate(weights):
            current[i] += w
            if current[i] > current[best]:
                best = i
        current[best] -= total
        out.append(nodes[best])
    return tuple(out)


class _LockedSmoothWeighted:
    """Smooth WRR computed step by step, for weight totals too large to precompute."""

    def __init__(self, nodes: Sequence[ServiceNode]) -> None:
        self._nodes = tuple(nodes)
        self._weights = [n.weight for n in nodes]
        self._total = sum(self._weights)
        self._current = [0] * len(nodes)
        self._lock = threading.Lock()
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def __call__(self) -> ServiceNode:
        with self._lock:
            best = 0
            for i, w in enumerate(self._weights):
                self._current[i] += w
                if self._current[i] > self._current[best]:
                    best = i
            self._current[best] -= self._total
        return self._nodes[best]


def _scorer(loads: Mapping[str, NodeLoad]) -> Callable[[ServiceNode, float], float]:
    def score(node: ServiceNode, now: float) -> float:
        return loads[node.id].cost(now) / node.weight

    return score


def _two_choices(
    nodes: tuple[ServiceNode, ...], loads: Mapping[str, NodeLoad], clock: Callable[[], float], rng: random.Random
) -> Picker:
    """The cheaper of two distinct random nodes (ties: the first drawn)."""
    score = _scorer(loads)
    n = len(nodes)
    draw = rng.random

    def pick_p2c() -> ServiceNode:
        i = int(draw() * n)
        j = int(draw() * (n - 1))
        if j >= i:
            j += 1
        a, b = nodes[i], nodes[j]
        now = clock()
        return a if score(a, now) <= score(b, now) else b

    return pick_p2c


def _cheapest(
    nodes: tuple[ServiceNode, ...], loads: Mapping[str, NodeLoad], clock: Callable[[], float], rng: random.Random
) -> Picker:
    """The cheapest node of all, scanned from a random start so that ties spread."""
    score = _scorer(loads)
    n = len(nodes)
    draw = rng.random

    def pick_min() -> ServiceNode:
        now = clock()
        start = int(draw() * n)
        best = nodes[start]
        best_cost = score(best, now)
        for k in range(1, n):
            node = nodes[(start + k) % n]
            cost = score(node, now)
            if cost < best_cost:
                best, best_cost = node, cost
        return best

    return pick_min


def build_picker(
    strategy: FailoverStrategy,
    nodes: tuple[ServiceNode, ...],
    *,
    loads: Mapping[str, NodeLoad],
    clock: Callable[[], float],
    rng: random.Random,
    power_of_two: bool = False,
    offset: int = 0,
) -> Picker | None:
    """Return a zero-argument callable choosing among ``nodes``, or ``None`` if empty.

    ``loads`` (node id -> :class:`~resilience_mw.failover.load.NodeLoad`) is read live by
    the load-aware strategies. ``offset`` rotates the round-robin start so a rebuilt
    cycle does not always restart on the first node.
    """
    if not nodes:
        return None
    if strategy is FailoverStrategy.Priority:
        top = _top_tier(nodes)
        if len(top) == 1:
            return itertools.repeat(top[0]).__next__
        return _two_choices(top, loads, clock, rng)  # a tier is balanced by load
    if strategy is FailoverStrategy.RoundRobin:
        k = offset % len(nodes)
        return itertools.cycle(nodes[k:] + nodes[:k]).__next__
    if strategy is FailoverStrategy.Random:
        choice = rng.choice
        return lambda: choice(nodes)
    if strategy is FailoverStrategy.WeightedRoundRobin:
        divisor = math.gcd(*(n.weight for n in nodes))
        if sum(n.weight for n in nodes) // divisor <= MAX_WEIGHTED_SEQUENCE:
            return itertools.cycle(smooth_weighted_sequence(nodes)).__next__
        return _LockedSmoothWeighted(nodes)
    if len(nodes) == 1:
        return itertools.repeat(nodes[0]).__next__
    if strategy is FailoverStrategy.LeastLoaded or power_of_two:
        return _two_choices(nodes, loads, clock, rng)
    return _cheapest(nodes, loads, clock, rng)


def _top_tier(nodes: tuple[ServiceNode, ...]) -> tuple[ServiceNode, ...]:
    top = max(n.priority for n in nodes)
    return tuple(n for n in nodes if n.priority == top)


Orderer = Callable[[ServiceNode], tuple[ServiceNode, ...]]


def build_orderer(
    strategy: FailoverStrategy,
    nodes: tuple[ServiceNode, ...],
    *,
    loads: Mapping[str, NodeLoad],
    clock: Callable[[], float],
    rng: random.Random,
) -> Orderer:
    """Return ``order(first)``: every node of ``nodes`` once, ``first`` leading, the rest
    in the strategy's order. Built once per healthy set, so a call costs what the
    strategy needs and no more: Priority returns a precomputed tuple, RoundRobin slices
    at a precomputed index, WeightedRoundRobin filters a presorted tuple; Random and the
    load-aware strategies order afresh (their order changes from call to call).
    """
    if strategy is FailoverStrategy.Priority:
        ranked = priority_order(nodes)
        return lambda first: ranked if ranked and ranked[0] is first else _leading(first, ranked)
    if strategy is FailoverStrategy.RoundRobin:
        index = {id(n): i for i, n in enumerate(nodes)}  # by identity: == compares every field

        def rotate(first: ServiceNode) -> tuple[ServiceNode, ...]:
            i = index.get(id(first))
            return _leading(first, nodes) if i is None else nodes[i:] + nodes[:i]

        return rotate
    if strategy is FailoverStrategy.WeightedRoundRobin:
        heaviest = tuple(sorted(nodes, key=lambda n: -n.weight))
        return lambda first: _leading(first, heaviest)
    if strategy is FailoverStrategy.Random:

        def shuffled(first: ServiceNode) -> tuple[ServiceNode, ...]:
            others = _others(first, nodes)
            return (first, *rng.sample(others, len(others)))

        return shuffled
    score = _scorer(loads)

    def cheapest_first(first: ServiceNode) -> tuple[ServiceNode, ...]:
        now = clock()
        return (first, *sorted(_others(first, nodes), key=lambda n: score(n, now)))

    return cheapest_first


def _others(first: ServiceNode, nodes: tuple[ServiceNode, ...]) -> list[ServiceNode]:
    return [n for n in nodes if n is not first]


def _leading(first: ServiceNode, ranked: tuple[ServiceNode, ...]) -> tuple[ServiceNode, ...]:
    return (first, *(n for n in ranked if n is not first))
