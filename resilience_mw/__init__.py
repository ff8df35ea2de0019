"""resilience_mw: keep a WSGI service up when its dependencies fail or it is overloaded.

Failover across upstream nodes, active health checks, automatic multi-level
degradation, graceful fallbacks and load shedding, for Flask and plain WSGI apps and
for ``requests`` clients.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import signals
from ._node_state import DownReason, Phase, RecoveryReason
from .admission import Criticality
from .alerts import AlertRules
from .config import DegradationConfig
from .degradation import AutoDegradationManager
from .exceptions import (
    AllNodesFailedError,
    Attempt,
    ConfigError,
    FailoverError,
    FeatureUnavailable,
    NoAvailableNodeError,
    ResilienceError,
    UnknownNodeError,
)
from .failover import FailoverManager, ServiceBackup
from .features import FeatureTable
from .graceful import GracefulDegradation
from .health import HealthChecker, HttpProbe
from .logfilter import DetailedLogsFilter
from .model import CheckResult, DegradationLevel, FailoverStrategy, Feature, NodeHealth, ServiceNode
from .pool import NodePool
from .readiness import readiness_document
from .sampling import Sample, SystemSampler

if TYPE_CHECKING:
    from .adapter import DeadlineExceeded, FailoverAdapter
    from .decorators import FeatureUnavailableHTTP, criticality, feature, with_fallback
    from .flask_ext import Resilience
    from .wsgi import ResilienceMiddleware

__version__ = "0.1.0"

# Integration classes are imported on first use, so `import resilience_mw` does not
# pull in Flask or the requests adapter machinery for code that only needs the core.
_LAZY = {
    "FailoverAdapter": "adapter",
    "DeadlineExceeded": "adapter",
    "FeatureUnavailableHTTP": "decorators",
    "criticality": "decorators",
    "Resilience": "flask_ext",
    "ResilienceMiddleware": "wsgi",
    "feature": "decorators",
    "with_fallback": "decorators",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "AlertRules",
    "AllNodesFailedError",
    "Attempt",
    "AutoDegradationManager",
    "CheckResult",
    "ConfigError",
    "Criticality",
    "DeadlineExceeded",
    "DegradationConfig",
    "DegradationLevel",
    "DetailedLogsFilter",
    "DownReason",
    "FailoverAdapter",
    "FailoverError",
    "FailoverManager",
    "FailoverStrategy",
    "Feature",
    "FeatureTable",
    "FeatureUnavailable",
    "FeatureUnavailableHTTP",
    "GracefulDegradation",
    "HealthChecker",
    "HttpProbe",
    "NoAvailableNodeError",
    "NodeHealth",
    "NodePool",
    "Phase",
    "RecoveryReason",
    "Resilience",
    "ResilienceError",
    "ResilienceMiddleware",
    "Sample",
    "ServiceBackup",
    "ServiceNode",
    "SystemSampler",
    "UnknownNodeError",
    "__version__",
    "criticality",
    "feature",
    "readiness_document",
    "signals",
    "with_fallback",
]

# No NullHandler: with no logging configured, Python's last-resort handler still shows
# WARNING and above (a node taken out, a failover, a level change) on stderr.
