"""GracefulDegradation: use a fallback when the primary fails or the level is high.

The rule (one home: :func:`run_with_fallback`, shared with ``@with_fallback``):

* from ``skip_primary_at`` (default Level3) the fallback runs without calling the
  primary: the system is degraded enough that the primary's cost is not worth paying;
* otherwise the primary runs, and if it raises one of ``fallback_on`` (default any
  ``Exception``) the fallback runs instead, at any level from ``fallback_on_error_at``
  (default Normal: every outage starts with fallbacks, not error pages). The stricter
  rule of the design this library ports (fall back only from Level2; below it the
  primary's error propagates) is ``fallback_on_error_at=DegradationLevel.Level2``.

The primary's outcome (not the fallback's) feeds the error rate.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from collections.abc import Callable, Hashable, MutableMapping
from typing import Any, TypeVar

from .. import _validate as v
from .. import signals
from .._redact import describe_error
from ..exceptions import PROGRAMMING_ERRORS, ConfigError
from ..model import DegradationLevel, parse_level
from . import counting as _outcomes
from .manager import AutoDegradationManager

__all__ = [
    "PROGRAMMING_ERRORS",
    "GracefulDegradation",
    "check_levels",
    "exception_types",
    "fallback_caller",
    "primary_failed",
    "run_with_fallback",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


def fallback_caller(fallback: Callable[..., T]) -> Callable[[tuple[Any, ...], dict[str, Any]], T]:
    """How to call ``fallback``, decided once: with the primary's arguments if its
    signature takes any, with none if it takes none (``lambda: cached``)."""
    try:
        params = inspect.signature(fallback).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: give it the arguments
        return lambda args, kwargs: fallback(*args, **kwargs)
    if not params:
        return lambda args, kwargs: fallback()
    return lambda args, kwargs: fallback(*args, **kwargs)


def run_with_fallback(
    level: DegradationLevel,
    primary: Callable[..., T],
    fallback: Callable[[tuple[Any, ...], dict[str, Any]], T],
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    skip_primary_at: DegradationLevel = DegradationLevel.Level3,
    fallback_on_error_at: DegradationLevel = DegradationLevel.Normal,
    fallback_on: tuple[type[BaseException], ...] = (Exception,),
    on_outcome: Callable[[bool], object] | None = None,
    is_failure: Callable[[BaseException], bool] | None = None,
    sender: Any = None,
) -> T:
    """The fallback rule (see the module docstring).

    ``fallback`` is a caller from :func:`fallback_caller`. ``on_outcome(success)`` is
    told the primary's outcome, not the fallback's. An exception for which
    ``is_failure`` returns ``False`` propagates untouched and counts as a success
    (e.g. a 404). ``sender`` sends :data:`~resilience_mw.signals.fallback_served` (the
    degradation manager whose level decided).
    """
    kw = kwargs or {}
    if level >= skip_primary_at:
        log.debug("level %s: using the fallback without trying the primary", level.name)
        signals.send(signals.fallback_served, sender, reason="level", name=getattr(primary, "__qualname__", "primary"))
        return fallback(args, kw)
    try:
        result = primary(*args, **kw)
    except Exception as exc:
        return primary_failed(
            exc,
            level,
            primary,
            fallback,
            args,
            kw,
            fallback_on_error_at=fallback_on_error_at,
            fallback_on=fallback_on,
            on_outcome=on_outcome,
            is_failure=is_failure,
            sender=sender,
        )
    if on_outcome is not None:
        on_outcome(True)
    return result


def primary_failed(  # noqa: PLR0917 - the whole failure context
    exc: Exception,
    level: DegradationLevel,
    primary: Callable[..., T],
    fallback: Callable[[tuple[Any, ...], dict[str, Any]], T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    fallback_on_error_at: DegradationLevel,
    fallback_on: tuple[type[BaseException], ...],
    on_outcome: Callable[[bool], object] | None,
    is_failure: Callable[[BaseException], bool] | None,
    sender: Any = None,
) -> T:
    """What happens when the primary raised ``exc`` (called from an ``except`` block,
    which a bare ``raise`` here re-raises): the fallback, or the error."""
    if is_failure is not None and not is_failure(exc):
        if on_outcome is not None:
            on_outcome(True)
        raise exc
    if on_outcome is not None:
        on_outcome(False)
    if level >= fallback_on_error_at and isinstance(exc, fallback_on):
        name = getattr(primary, "__qualname__", "primary")
        if isinstance(exc, PROGRAMMING_ERRORS):
            # A bug, not an outage: the fallback keeps users served, but it must not hide it.
            # The traceback's frames, with the error as describe_error redacts it: the raw
            # message of a TypeError may quote a value, and a log line carries no secret.
            log.error(
                "%s raised %s, which looks like a bug in it, at level %s; serving its fallback\n"
                "Traceback (most recent call last):\n%s%s",
                name, type(exc).__name__, level.name, "".join(traceback.format_tb(exc.__traceback__)),
                describe_error(exc),
                extra={"fallback_reason": "programming_error", "level": level.name, "error_type": type(exc).__name__},
            )
            signals.send(signals.fallback_served, sender, reason="programming_error", name=name)
            return fallback(args, kwargs)
        log.warning(
            "%s failed at level %s; serving its fallback: %s",
            name,
            level.name,
            describe_error(exc),
            extra={"fallback_reason": "error", "level": level.name},
        )
        signals.send(signals.fallback_served, sender, reason="error", name=name)
        return fallback(args, kwargs)
    raise exc


class GracefulDegradation:
    """Fallback rules over an :class:`AutoDegradationManager`.

    :param skip_primary_at: from this level the primary is not called at all.
    :param fallback_on_error_at: from this level a primary failure uses the fallback
        (default Normal: always; ``Level2`` is the stricter rule of the ported design).
    :param fallback_on: the exception types that fall back; others propagate.
    :param record: whether primary outcomes are recorded in the manager's error rate.
    """

    def __init__(
        self,
        manager: AutoDegradationManager,
        *,
        skip_primary_at: DegradationLevel | str = DegradationLevel.Level3,
        fallback_on_error_at: DegradationLevel | str = DegradationLevel.Normal,
        fallback_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        record: bool = True,
    ) -> None:
        if not isinstance(manager, AutoDegradationManager):
            raise ConfigError("manager", manager, "must be an AutoDegradationManager")
        self.skip_primary_at, self.fallback_on_error_at = check_levels(skip_primary_at, fallback_on_error_at)
        self.fallback_on = exception_types("fallback_on", fallback_on)
        self.manager = manager
        self.record = v.boolean()("record", record)

    def execute(
        self, primary: Callable[[], T], fallback: Callable[[], T], *, environ: MutableMapping[str, Any] | None = None
    ) -> T:
        """Run ``primary`` or ``fallback`` by the current level and the primary's outcome.

        The primary's outcome counts once per request: in a Flask view the request is
        found by itself; in another WSGI app pass its ``environ``.
        """
        window = self.manager.window
        return run_with_fallback(
            self.manager.current_level(),
            primary,
            lambda args, kwargs: fallback(),
            skip_primary_at=self.skip_primary_at,
            fallback_on_error_at=self.fallback_on_error_at,
            fallback_on=self.fallback_on,
            on_outcome=(lambda ok: _outcomes.record(window, ok, environ)) if self.record else None,
            sender=self.manager,
        )

    def execute_if_available(self, feature: Hashable, operation: Callable[[], T]) -> T | None:
        """Run ``operation`` if ``feature`` is on at the current level, else return ``None``."""
        if self.manager.is_feature_available(feature):
            return operation()
        log.debug("feature %s is unavailable at level %s", feature, self.manager.current_level().name)
        return None


def exception_types(name: str, value: Any) -> tuple[type[BaseException], ...]:
    """An exception class or a tuple of them, as a tuple; :class:`ConfigError` otherwise."""
    types = value if isinstance(value, tuple) else (value,)
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise ConfigError(name, value, "must be an exception class or a tuple of them")
    return types


def check_levels(
    skip_primary_at: object, fallback_on_error_at: object
) -> tuple[DegradationLevel, DegradationLevel]:
    """Both levels as members (given as members, names or values), or :class:`ConfigError`."""
    return parse_level(skip_primary_at, "skip_primary_at"), parse_level(fallback_on_error_at, "fallback_on_error_at")
