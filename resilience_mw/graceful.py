"""GracefulDegradation: use a fallback when the primary fails or the level is high.

The seed's rules are the defaults: at Level3 and above the fallback runs without
calling the primary; a primary failure at Level2 and above runs the fallback; below
Level2 the primary's error propagates. Outcomes of the primary feed
:meth:`AutoDegradationManager.record_request`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from . import _validate as v
from .degradation import AutoDegradationManager
from .exceptions import ConfigError
from .model import DegradationLevel, parse_level

__all__ = ["GracefulDegradation", "check_levels", "run_with_fallback"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def run_with_fallback(
    level: DegradationLevel,
    primary: Callable[..., T],
    fallback: Callable[..., T],
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    skip_primary_at: DegradationLevel = DegradationLevel.Level3,
    fallback_on_error_at: DegradationLevel = DegradationLevel.Level2,
    on_outcome: Callable[[bool], object] | None = None,
    is_failure: Callable[[Exception], bool] | None = None,
) -> T:
    """The fallback rule, shared by :class:`GracefulDegradation` and ``@with_fallback``.

    Both callables get ``*args, **kwargs``. ``on_outcome(success)`` is told the
    primary's outcome (not the fallback's). An exception for which ``is_failure``
    returns ``False`` propagates untouched and counts as a success (e.g. a 404).
    """
    kw = kwargs or {}
    if level >= skip_primary_at:
        log.debug("level %s: using the fallback without trying the primary", level.name)
        return fallback(*args, **kw)
    try:
        result = primary(*args, **kw)
    except Exception as exc:
        if is_failure is not None and not is_failure(exc):
            if on_outcome is not None:
                on_outcome(True)
            raise
        if on_outcome is not None:
            on_outcome(False)
        if level >= fallback_on_error_at:
            log.warning("primary failed at level %s, using the fallback: %r", level.name, exc)
            return fallback(*args, **kw)
        raise
    if on_outcome is not None:
        on_outcome(True)
    return result


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
        skip_primary_at: DegradationLevel | str = DegradationLevel.Level3,
        fallback_on_error_at: DegradationLevel | str = DegradationLevel.Level2,
        record: bool = True,
    ) -> None:
        if not isinstance(manager, AutoDegradationManager):
            raise ConfigError("manager", manager, "must be an AutoDegradationManager")
        self.skip_primary_at, self.fallback_on_error_at = check_levels(skip_primary_at, fallback_on_error_at)
        self.manager = manager
        self.record = v.boolean()("record", record)

    def execute(self, primary: Callable[[], T], fallback: Callable[[], T]) -> T:
        """Run ``primary`` or ``fallback`` by the current level and the primary's outcome."""
        return run_with_fallback(
            self.manager.current_level(),
            primary,
            fallback,
            skip_primary_at=self.skip_primary_at,
            fallback_on_error_at=self.fallback_on_error_at,
            on_outcome=self.manager.record_request if self.record else None,
        )

    def execute_if_available(self, feature: Hashable, operation: Callable[[], T]) -> T | None:
        """Run ``operation`` if ``feature`` is on at the current level, else return ``None``."""
        if self.manager.is_feature_available(feature):
            return operation()
        log.debug("feature %s is unavailable at level %s", feature, self.manager.current_level().name)
        return None


def check_levels(
    skip_primary_at: object, fallback_on_error_at: object
) -> tuple[DegradationLevel, DegradationLevel]:
    """Both levels as members (given as members, names or values), or :class:`ConfigError`."""
    return parse_level(skip_primary_at, "skip_primary_at"), parse_level(fallback_on_error_at, "fallback_on_error_at")
