"""Failover: which node to try next, whether a node is healthy, and trying the next one.

* :mod:`.pool`: :class:`NodePool`, the nodes and their states (one owner, one lock);
* :mod:`.node_state`: the pure state machine of one node (healthy ... down);
* :mod:`._strategies`: the pickers and orderers of each :class:`FailoverStrategy`;
* :mod:`.loop`: :class:`FailoverLoop` and :class:`FailoverManager`, trying nodes in turn;
* :mod:`.budget`: :class:`RetryBudget`, so that failovers cannot multiply an outage's load;
* :mod:`.health`: :class:`HealthChecker` and :class:`HttpProbe`, active checks;
* :mod:`._transport`: what the adapter's connections record (bytes sent, deadlines).

The names of the former ``resilience_mw.failover`` module are here unchanged; the health
checker (which loads ``requests``) is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._imports import lazy
from ..exceptions import PROGRAMMING_ERRORS
from .budget import RetryBudget
from .loop import FailoverLoop, FailoverManager, ServiceBackup, Try
from .node_state import DownReason, NodeState, Phase, RecoveryReason, Transition
from .pool import CallOrder, NodePool

if TYPE_CHECKING:
    from .health import HealthChecker, HttpProbe, Probe

__getattr__ = lazy(__name__, {"HealthChecker": ".health", "HttpProbe": ".health", "Probe": ".health"})

__all__ = [
    "PROGRAMMING_ERRORS",
    "CallOrder",
    "DownReason",
    "FailoverLoop",
    "FailoverManager",
    "HealthChecker",
    "HttpProbe",
    "NodePool",
    "NodeState",
    "Phase",
    "Probe",
    "RecoveryReason",
    "RetryBudget",
    "ServiceBackup",
    "Transition",
    "Try",
]
