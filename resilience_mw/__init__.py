"""resilience_mw: keep a WSGI service up when its dependencies fail or it is overloaded.

Failover across upstream nodes, active health checks, automatic multi-level
degradation, graceful fallbacks and load shedding, for Flask and plain WSGI apps and
for ``requests`` clients.
"""

from __future__ import annotations

import logging

from . import signals
from .exceptions import (
    AllNodesFailedError,
    Attempt,
    ConfigError,
    FeatureUnavailable,
    NoAvailableNodeError,
    ResilienceError,
    UnknownNodeError,
)
from .failover import FailoverManager, ServiceBackup
from .model import DegradationLevel, FailoverStrategy, Feature, NodeHealth, ServiceNode
from .pool import NodePool

__version__ = "0.1.0"

__all__ = [
    "AllNodesFailedError",
    "Attempt",
    "ConfigError",
    "DegradationLevel",
    "FailoverManager",
    "FailoverStrategy",
    "Feature",
    "FeatureUnavailable",
    "NoAvailableNodeError",
    "NodeHealth",
    "NodePool",
    "ResilienceError",
    "ServiceBackup",
    "ServiceNode",
    "UnknownNodeError",
    "__version__",
    "signals",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
