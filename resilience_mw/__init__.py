"""resilience_mw: keep a WSGI service up when its dependencies fail or it is overloaded.

Failover across upstream nodes, active health checks, automatic multi-level
degradation, graceful fallbacks and load shedding, for Flask and plain WSGI apps and
for ``requests`` clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _imports, signals
from .config import DegradationConfig
from .degradation import AutoDegradationManager, FeatureTable, GracefulDegradation, SystemSampler
from .exceptions import (
    AllNodesFailedError,
    Attempt,
    ConfigError,
    ConfigWarning,
    FailoverError,
    FeatureUnavailable,
    NoAvailableNodeError,
    ResilienceError,
    UnknownNodeError,
)
from .failover import DownReason, FailoverManager, NodePool, Phase, RecoveryReason, ServiceBackup
from .model import (
    CheckResult,
    Criticality,
    DegradationLevel,
    FailoverStrategy,
    Feature,
    NodeHealth,
    Sample,
    ServiceNode,
)
from .telemetry import AlertRules, DetailedLogsFilter, readiness_document

if TYPE_CHECKING:
    from .adapter import DeadlineExceeded, FailoverAdapter, UpstreamThrottled
    from .decorators import FeatureUnavailableHTTP, criticality, feature, with_fallback
    from .failover.health import HealthChecker, HttpProbe
    from .flask_ext import Resilience
    from .wsgi import ResilienceMiddleware

__version__ = "0.1.0"

# Old module paths (resilience_mw.pool, ...) keep working, with a DeprecationWarning.
_imports.install()

# Integrations and what loads requests are imported on first use, so `import
# resilience_mw` does not pull in Flask or the requests machinery for code that only
# needs the core.
__getattr__ = _imports.lazy(
    __name__,
    {
        "FailoverAdapter": ".adapter",
        "DeadlineExceeded": ".adapter",
        "UpstreamThrottled": ".adapter",
        "FeatureUnavailableHTTP": ".decorators",
        "criticality": ".decorators",
        "feature": ".decorators",
        "with_fallback": ".decorators",
        "HealthChecker": ".failover.health",
        "HttpProbe": ".failover.health",
        "Resilience": ".flask_ext",
        "ResilienceMiddleware": ".wsgi",
    },
)

__all__ = [
    "AlertRules",
    "AllNodesFailedError",
    "Attempt",
    "AutoDegradationManager",
    "CheckResult",
    "ConfigError",
    "ConfigWarning",
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
    "UpstreamThrottled",
    "__version__",
    "criticality",
    "feature",
    "readiness_document",
    "signals",
    "with_fallback",
]

# No NullHandler: with no logging configured, Python's last-resort handler still shows
# WARNING and above (a node taken out, a failover, a level change) on stderr.
