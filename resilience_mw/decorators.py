"""View decorators: ``@feature(...)`` gates a view by level, ``@with_fallback(...)``
serves a fallback by the graceful-degradation rules.

Put them below ``@app.route`` (the route decorator must be outermost)::

    @app.route("/recommendations")
    @feature(Feature.Analytics)
    def recommendations(): ...

    @app.route("/search")
    @with_fallback(cached_search)
    def search(): ...

The degradation manager comes from ``manager=`` if given, else from the Flask app's
:class:`~resilience_mw.flask_ext.Resilience` extension. Both decorators also work on
plain functions (pass ``manager=``), keep the wrapped function's name and docstring,
and mark the wrapper (``__resilience_feature__`` / ``__resilience_fallback__``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Hashable
from typing import Any, ParamSpec, TypeVar

from flask import current_app, has_app_context, has_request_context, request
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from . import _validate as v
from .admission.rules import Criticality
from .degradation import counting as _outcomes
from .degradation.fallback import (
    check_levels,
    exception_types,
    fallback_caller,
    primary_failed,
    run_with_fallback,
)
from .degradation.manager import AutoDegradationManager
from .exceptions import ConfigError, FeatureUnavailable, ResilienceError
from .model import DegradationLevel

__all__ = ["FeatureUnavailableHTTP", "criticality", "feature", "with_fallback"]

P = ParamSpec("P")
R = TypeVar("R")


class FeatureUnavailableHTTP(FeatureUnavailable, ServiceUnavailable):
    """A :class:`FeatureUnavailable` that Flask renders as a JSON 503 with Retry-After."""

    def __init__(self, feature: Hashable, level: DegradationLevel, retry_after: int | None = None) -> None:
        FeatureUnavailable.__init__(self, feature, level)
        ServiceUnavailable.__init__(self, description=str(self), retry_after=retry_after)

    def get_body(self, environ: Any = None, scope: Any = None) -> str:
        return json.dumps(
            {
                "error": "feature unavailable",
                "feature": getattr(self.feature, "name", str(self.feature)),
                "level": self.level.name,
            }
        )

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        headers = [(k, v) for k, v in super().get_headers(environ, scope) if k.lower() != "content-type"]
        return [("Content-Type", "application/json"), *headers]

    def __str__(self) -> str:
        return self.message


def _check_manager(manager: object) -> None:
    if manager is not None and not isinstance(manager, AutoDegradationManager):
        raise ConfigError("manager", manager, "must be an AutoDegradationManager or None")


def _app_manager() -> AutoDegradationManager:
    if has_app_context():
        state = current_app.extensions.get("resilience")
        if state is not None:
            manager: AutoDegradationManager = state.degradation
            return manager
    raise ResilienceError(
        "no degradation manager: pass manager=..., or call inside a Flask app set up with Resilience"
    )


def feature(
    feat: Hashable,
    *,
    fallback: Callable[..., Any] | None = None,
    manager: AutoDegradationManager | None = None,
    retry_after: int | None = 30,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Call the view only while ``feat`` is available at the current level.

    Otherwise return ``fallback(*args, **kwargs)`` if given, or raise
    :class:`FeatureUnavailableHTTP` (a 503 in Flask; a :class:`FeatureUnavailable`
    for plain callers).
    """

    v.optional(v.function())("fallback", fallback)
    _check_manager(manager)
    v.optional(v.integer(ge=0, le=86_400))("retry_after", retry_after)
    if manager is not None:
        manager.features.is_available(feat, DegradationLevel.Normal)  # unknown feature: ConfigError now

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            m = manager if manager is not None else _app_manager()
            if m.is_feature_available(feat):
                return fn(*args, **kwargs)
            if fallback is not None:
                result: R = fallback(*args, **kwargs)
                return result
            if has_request_context():  # the library's own answer: not a failure of the app
                _outcomes.refused(request.environ, m.window)
            raise FeatureUnavailableHTTP(feat, m.current_level(), retry_after)

        wrapper.__resilience_feature__ = feat  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _is_failure(exc: BaseException) -> bool:
    # abort(404) and friends are answers, not failures of the primary path
    return not (isinstance(exc, HTTPException) and (exc.code or 500) < 500)


def _record_outcome(manager: AutoDegradationManager, success: bool) -> None:
    """Count the primary's outcome once per request (see :mod:`resilience_mw.degradation.counting`):
    in a Flask request, through its environ; elsewhere as its own outcome."""
    _outcomes.record(manager.window, success, request.environ if has_request_context() else None, find=False)


def _record_app_outcome(manager: AutoDegradationManager, success: bool) -> None:
    """The same for the app's own manager, whose middleware counts every response: only a
    failure served as a fallback is news to it."""
    if not success:
        _outcomes.record_failure(request.environ, manager.window)


def criticality(level: Criticality | str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a view's criticality (``critical_plus``, ``critical``, ``sheddable_plus``,
    ``sheddable``) for criticality shedding (``RESILIENCE_CRITICALITY_SHEDDING``); the
    middleware reads it before the view runs::

        @app.get("/recommendations")
        @criticality("sheddable")
        def recommendations(): ...
    """
    names = [c.value for c in Criticality]
    if not isinstance(level, (str, Criticality)) or str(level) not in names:
        raise ConfigError("criticality", level, f"must be one of {names}")
    chosen = Criticality(str(level))

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        fn.__resilience_criticality__ = chosen  # type: ignore[attr-defined]
        return fn

    return decorate


def with_fallback(
    fallback: Callable[..., Any],
    *,
    skip_primary_at: DegradationLevel | str = DegradationLevel.Level3,
    fallback_on_error_at: DegradationLevel | str = DegradationLevel.Normal,
    fallback_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    manager: AutoDegradationManager | None = None,
    record: bool = True,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Serve ``fallback`` when the view fails, or without calling it from a high level.

    The rule is :class:`~resilience_mw.GracefulDegradation`'s: a view exception of
    ``fallback_on`` serves the fallback at any level from ``fallback_on_error_at``
    (default Normal: always); from ``skip_primary_at`` (default Level3) the view is not
    called. The fallback gets the view's arguments if its signature takes any, none if
    it takes none (``lambda: {...}``). HTTP errors below 500 (``abort(404)``) always
    propagate and are not failures. A view that failed and served its fallback counts
    as one failed request.
    """
    skip_primary_at, fallback_on_error_at = check_levels(skip_primary_at, fallback_on_error_at)
    fallback_on = exception_types("fallback_on", fallback_on)
    v.function()("fallback", fallback)
    _check_manager(manager)
    v.boolean()("record", record)
    call_fallback = fallback_caller(fallback)
    # Decided once: who counts the outcome (see _record_outcome, _record_app_outcome).
    explicit = functools.partial(_record_outcome, manager) if record and manager is not None else None

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            if manager is not None:
                m, on_outcome = manager, explicit
            else:
                m = _app_manager()
                on_outcome = functools.partial(_record_app_outcome, m) if record else None
            level = m.level
            if level >= skip_primary_at:
                skipped: R = run_with_fallback(
                    level, fn, call_fallback, args, kwargs, skip_primary_at=skip_primary_at, sender=m
                )
                return skipped
            # run_with_fallback's primary branch, a call layer less (every decorated
            # request takes it); the failure rule stays in primary_failed
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                served: R = primary_failed(
                    exc,
                    level,
                    fn,
                    call_fallback,
                    args,
                    kwargs,
                    fallback_on_error_at=fallback_on_error_at,
                    fallback_on=fallback_on,
                    on_outcome=on_outcome,
                    is_failure=_is_failure,
                    sender=m,
                )
                return served
            if on_outcome is explicit and explicit is not None and not has_request_context():
                m.window.ok()  # _record_outcome outside a request, a call layer less
            elif on_outcome is not None:
                on_outcome(True)
            return result

        wrapper.__resilience_fallback__ = fallback  # type: ignore[attr-defined]
        return wrapper

    return decorate
