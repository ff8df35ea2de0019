"""DetailedLogsFilter: drop verbose log records while detailed logs are switched off.

Attach it to a *handler* (a filter on a logger does not see records of its child
loggers)::

    handler.addFilter(DetailedLogsFilter(degradation))   # DEBUG dropped from Level2 on

Records at ``min_level`` or above always pass; below it, they pass only while the
feature (default :attr:`Feature.DetailedLogs`) is available at the current level.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

from ..degradation.manager import AutoDegradationManager
from ..exceptions import ConfigError
from ..model import Feature

__all__ = ["DetailedLogsFilter"]


class DetailedLogsFilter(logging.Filter):
    """A :class:`logging.Filter` gated by a feature of an :class:`AutoDegradationManager`."""

    def __init__(
        self,
        manager: AutoDegradationManager,
        feature: Hashable = Feature.DetailedLogs,
        min_level: int = logging.INFO,
    ) -> None:
        super().__init__()
        if not isinstance(manager, AutoDegradationManager):
            raise ConfigError("manager", manager, "must be an AutoDegradationManager")
        manager.features.is_available(feature, manager.level)  # an unknown feature fails now
        if isinstance(min_level, bool) or not isinstance(min_level, int):
            raise ConfigError("min_level", min_level, "must be a logging level number such as logging.INFO")
        self.manager = manager
        self.feature = feature
        self.min_level = min_level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.min_level or self.manager.is_feature_available(self.feature)
