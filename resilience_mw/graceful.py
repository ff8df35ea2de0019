"""GracefulDegradation: use a fallback when the primary fails or the level is high.

The seed's rules are the defaults: at Level3 and above the fallback runs without
calling the primary; a primary failure at Level2 and above runs the fallback; below
Level2 the primary's error propagates. Outcomes of the primary feed
:meth:`AutoDegradationManager.record_request`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import TypeVar

from .degradation import AutoDegradationManager
from .exceptions import ConfigError
from .model import DegradationLevel

__all__ = ["GracefulDegradation"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class GracefulDegradation:
    """Fallback rules over an :class:`AutoDegradationManager`.

    :param skip_primary_at: from this level the primary is not called at all.
    :param fallback_on_error_at: from this level a primary failure uses the fallback.
    :param record: whether primary outcomes are recorded in the manager's error rate.
    """

    def __init__(
        self,
        manager: AutoDegradationManager,
        *,
        skip_primary_at: DegradationLevel = DegradationLevel.Level3,
        fallback_on_error_at: DegradationLevel = DegradationLevel.Level2,
        record: bool = True,
    ) -> None:
        if not isinstance(skip_primary_at, DegradationLevel):
            raise ConfigError("skip_primary_at", skip_primary_at, "must be a DegradationLevel")
        if not isinstance(fallback_on_error_at, DegradationLevel):
            raise ConfigError("fallback_on_error_at", fallback_on_error_at, "must be a DegradationLevel")
        self.manager = manager
        self.skip_primary_at = skip_primary_at
        self.fallback_on_error_at = fallback_on_error_at
        self.record = record

    def execute(self, primary: Callable[[], T], fallback: Callable[[], T]) -> T:
        """Run ``primary`` or ``fallback`` by the current level and the primary's outcome."""
        level = self.manager.current_level()
        if level >= self.skip_primary_at:
            log.debug("level %s: using the fallback without trying the primary", level.name)
            return fallback()
        try:
            result = primary()
        except Exception as exc:
            if self.record:
                self.manager.record_request(False)
            if level >= self.fallback_on_error_at:
                log.warning("primary failed at level %s, using the fallback: %r", level.name, exc)
                return fallback()
            raise
        if self.record:
            self.manager.record_request(True)
        return result

    def execute_if_available(self, feature: Hashable, operation: Callable[[], T]) -> T | None:
        """Run ``operation`` if ``feature`` is on at the current level, else return ``None``."""
        if self.manager.is_feature_available(feature):
            return operation()
        log.debug("feature %s is unavailable at level %s", feature, self.manager.current_level().name)
        return None
