"""Outlier detection by comparison with peers: which nodes to eject after an interval.

A pure function of each node's :class:`~resilience_mw.failover.load.Tally` for the
interval (this process's, or summed over the fleet's workers) and the pool's rules.
The rules are Envoy's outlier detection, with one guard it lacks:

* **success rate**: among the nodes with at least ``outlier_min_requests`` requests, if
  there are at least ``outlier_min_hosts`` of them, a node whose success rate is below
  the mean by ``success_rate_factor`` standard deviations. With five nodes the factor
  alone ejects a node by chance in about one interval in twenty when every node fails
  2 % of its requests at random, so the node's failures must also be far more than
  chance explains given its peers' failure rate: seven standard errors above it (at 100
  requests and 2 %, 12 failures or more: about one chance in a million).
* **failure percentage**: a node (with enough requests, among enough hosts) failing
  at least ``failure_percentage`` % of its requests.
* **latency**: a node (with ``latency_min_requests`` successes, among enough hosts with
  as many; a load-aware strategy sends a slow node little traffic) whose fastest answer
  of the interval is at least ``latency_factor`` times the median of its peers' fastest:
  even its quickest answers are that much slower, so it is the node, not the queue in
  front of it (under load, a balancer queues requests at the fast nodes and their mean
  latency rises towards the slow node's; their fastest answers do not). Only the nodes
  slow enough to matter: ``latency_factor`` is a multiple, not a standard deviation,
  of at least :data:`LATENCY_FLOOR` (peers answering in microseconds make no node slow
  for answering in one millisecond: that is a scheduler's hiccup, not a sick node).

The result says why; the pool ejects within ``max_ejection_percent``, worst first.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

from ..config import PoolConfig
from .load import Tally
from .node_state import DownReason

__all__ = ["LATENCY_FLOOR", "find_outliers"]

#: the least peers' fastest answer the latency rule multiplies, seconds
LATENCY_FLOOR = 0.002

#: how far beyond chance (standard errors) a node's failures must be for the
#: success-rate rule
_SIGNIFICANCE_Z = 7.0
#: the failure rate assumed for peers that failed nothing (a rate of 0 would make any
#: single failure "significant")
_FLOOR_RATE = 0.001


def find_outliers(tallies: Mapping[str, Tally], rules: PoolConfig) -> list[tuple[str, DownReason, float]]:
    """``(node id, reason, severity)`` for each node the rules eject, worst first
    (severity: how far past its rule the node is, comparable within a rule only)."""
    found: dict[str, tuple[DownReason, float]] = {}
    if rules.latency_factor is not None:
        answered = {nid: t for nid, t in tallies.items() if t.successes >= rules.latency_min_requests}
        if len(answered) >= rules.outlier_min_hosts:
            for nid, severity in _latency(answered, rules.latency_factor):
                found[nid] = (DownReason.LATENCY, severity)
    eligible = {nid: t for nid, t in tallies.items() if t.requests >= rules.outlier_min_requests}
    if len(eligible) < rules.outlier_min_hosts:
        return _ranked(found)
    if rules.success_rate_factor is not None:
        for nid, severity in _success_rate(eligible, rules.success_rate_factor):
            found[nid] = (DownReason.SUCCESS_RATE, severity)
    if rules.failure_percentage is not None:
        for nid, t in eligible.items():
            percent = 100.0 * t.failures / t.requests
            if percent >= rules.failure_percentage:
                found[nid] = (DownReason.FAILURE_PERCENTAGE, percent)
    return _ranked(found)


def _ranked(found: Mapping[str, tuple[DownReason, float]]) -> list[tuple[str, DownReason, float]]:
    """Worst first: by rule (failures before latency), then by how far past it."""
    ranked = sorted(found.items(), key=lambda item: (_RULE_ORDER[item[1][0]], -item[1][1]))
    return [(nid, reason, severity) for nid, (reason, severity) in ranked]


_RULE_ORDER = {DownReason.FAILURE_PERCENTAGE: 0, DownReason.SUCCESS_RATE: 1, DownReason.LATENCY: 2}


def _success_rate(eligible: Mapping[str, Tally], factor: float) -> list[tuple[str, float]]:
    rates = {nid: t.successes / t.requests for nid, t in eligible.items()}
    mean = statistics.fmean(rates.values())
    spread = statistics.pstdev(rates.values())
    if spread == 0.0:
        return []
    threshold = mean - factor * spread
    out = []
    for nid, rate in rates.items():
        if rate >= threshold:
            continue
        t = eligible[nid]
        peers_requests = sum(p.requests for pid, p in eligible.items() if pid != nid)
        peers_failures = sum(p.failures for pid, p in eligible.items() if pid != nid)
        expected = max(_FLOOR_RATE, peers_failures / peers_requests if peers_requests else 0.0)
        z = (t.failures / t.requests - expected) / math.sqrt(expected * (1.0 - expected) / t.requests)
        if z >= _SIGNIFICANCE_Z:
            out.append((nid, (threshold - rate) / spread))
    return out


def _latency(eligible: Mapping[str, Tally], factor: float) -> list[tuple[str, float]]:
    fastest = {nid: t.fastest for nid, t in eligible.items() if t.fastest is not None}
    out = []
    for nid, own in fastest.items():
        peers = [f for pid, f in fastest.items() if pid != nid]
        if not peers:
            continue
        median = max(LATENCY_FLOOR, statistics.median(peers))
        if own >= factor * median:
            out.append((nid, own / median))
    return out
