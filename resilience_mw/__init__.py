"""resilience_mw: keep a WSGI service up when its dependencies fail or it is overloaded.

Failover across upstream nodes, active health checks, automatic multi-level
degradation, graceful fallbacks and load shedding, for Flask and plain WSGI apps and
for ``requests`` clients.
"""

from __future__ import annotations

import logging

from . import signals
from .alerts import AlertRules
from .config import DegradationConfig
from .degradation import AutoDegradationManager
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
from .features import FeatureTable
from .graceful import GracefulDegradation
from .health import HealthChecker
from .model import DegradationLevel, FailoverStrategy, Feature, NodeHealth, ServiceNode
from .pool import NodePool
from .sampling import Sample, SystemSampler

__version__ = "0.1.0"

__all__ = [
    "AlertRules",
    "AllNodesFailedError",
    "Attempt",
    "AutoDegradationManager",
    "ConfigError",
    "DegradationConfig",
    "DegradationLevel",
    "FailoverManager",
    "FailoverStrategy",
    "Feature",
    "FeatureTable",
    "FeatureUnavailable",
    "GracefulDegradation",
    "HealthChecker",
    "NoAvailableNodeError",
    "NodeHealth",
    "NodePool",
    "ResilienceError",
    "Sample",
    "ServiceBackup",
    "ServiceNode",
    "SystemSampler",
    "UnknownNodeError",
    "__version__",
    "signals",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
