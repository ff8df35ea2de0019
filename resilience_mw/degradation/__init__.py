"""Degradation: the level, from this service's load, its queue and its errors, and what
follows from it (features, fallbacks).

* :mod:`.manager`: :class:`AutoDegradationManager` and its :class:`ErrorWindow`;
* :mod:`.load`: :class:`SystemSampler`, this service's CPU and memory (cgroup-aware);
* :mod:`.hysteresis`: sustained readings and cooldowns (pure);
* :mod:`.features`: :class:`FeatureTable`, which feature is off from which level;
* :mod:`.fallback`: :class:`GracefulDegradation` and the fallback rule;
* :mod:`.counting`: each request's outcome counted once, whichever layer sees it.

The names of the former ``resilience_mw.degradation`` module are here unchanged.
"""

from __future__ import annotations

from .fallback import GracefulDegradation
from .features import DEFAULT_TABLE, FeatureTable
from .load import SystemSampler
from .manager import AutoDegradationManager, ErrorWindow

__all__ = [
    "DEFAULT_TABLE",
    "AutoDegradationManager",
    "ErrorWindow",
    "FeatureTable",
    "GracefulDegradation",
    "SystemSampler",
]
