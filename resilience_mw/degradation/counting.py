"""Count each request once: the one home of "this request's outcome".

A request is counted in a degradation manager's error window at most once, by
whichever layer knows first, and a counted success can be turned into a failure
once. The state lives in the WSGI environ under a key per error window, so nested
middlewares for different managers each count every request, and two for the same
manager count it once:

* absent: no middleware of this manager sees the request; a decorator or
  ``GracefulDegradation`` counts the outcome itself;
* the middleware object itself (pending): it will count it by its status when the
  app returns (an inner middleware of the same manager then counts nothing);
* ``"ok"`` / ``"fail"``: counted;
* ``"refused"``: the library answered the request itself (a gated feature's 503): not
  an outcome of the app, never counted.

Code that has no environ in hand (``GracefulDegradation.execute`` in a view) asks
:data:`environ_provider`, which a framework integration sets (the Flask extension
returns the current request's environ); without one, each such call counts as its
own outcome.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from .manager import ErrorWindow

__all__ = ["environ_provider", "key", "record", "record_failure", "refused"]

Environ = MutableMapping[str, Any]

#: returns the environ of the request being served, or ``None`` outside one (set by
#: the Flask extension; a middleware-only app passes ``environ=`` instead)
environ_provider: Callable[[], Environ | None] | None = None


def key(window: ErrorWindow) -> str:
    """The environ key of one error window's count of a request."""
    return f"resilience.recorded.{id(window):x}"


def record(window: ErrorWindow, success: bool, environ: Environ | None = None, *, find: bool = True) -> None:
    """Count an outcome for the current request, once.

    Inside a request a middleware of this window counts (``"pending"``), a success is
    left to it and a failure is counted now (the middleware then counts nothing more).
    Outside any request, or in one no middleware of this window sees, the outcome is
    counted here, once per request. ``find=False``: the caller already looked for the
    request (``environ`` is ``None`` because there is none).
    """
    if environ is None and find and environ_provider is not None:
        environ = environ_provider()
    if environ is None:  # no request: each call is its own outcome
        window.ok() if success else window.fail()
        return
    if not success:
        record_failure(environ, window)
        return
    k = key(window)
    if k not in environ:
        window.ok()
        environ[k] = "ok"


def record_failure(environ: Environ, window: ErrorWindow) -> None:
    """Count the request of ``environ`` as a failure, exactly once: turns a counted
    success into a failure, does nothing after a counted failure, counts one otherwise."""
    k = key(window)
    state = environ.get(k)
    if state == "ok":
        window.fail_after_ok()
    elif state != "fail":  # absent, or pending with a middleware
        window.fail()
    environ[k] = "fail"


def refused(environ: Environ, window: ErrorWindow) -> None:
    """Mark the request of ``environ`` as answered by the library itself (``@feature``'s
    503 at a level that turns the feature off), so that no layer counts it: the
    library's own refusals must not raise the error rate that raised the level."""
    k = key(window)
    if environ.get(k) not in ("ok", "fail"):
        environ[k] = "refused"
