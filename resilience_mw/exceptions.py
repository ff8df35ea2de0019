"""The exception tree of resilience_mw.

Everything the library raises on purpose derives from :class:`ResilienceError`.
Where callers already catch a builtin or host type, the subclass inherits it too:
:class:`ConfigError` is a :class:`ValueError`, :class:`UnknownNodeError` a
:class:`KeyError`; the integration modules add ``requests`` and ``werkzeug`` flavours
(:class:`resilience_mw.adapter.FailoverConnectionError`,
:class:`resilience_mw.decorators.FeatureUnavailableHTTP`).
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

from ._redact import describe_error, redact_value

__all__ = [
    "PROGRAMMING_ERRORS",
    "AllNodesFailedError",
    "Attempt",
    "ConfigError",
    "ConfigWarning",
    "FailoverError",
    "FeatureUnavailable",
    "NoAvailableNodeError",
    "ResilienceError",
    "UnknownNodeError",
    "with_attempts",
]


class ResilienceError(Exception):
    """Root of every error resilience_mw raises on purpose.

    Every one pickles (a failed call in a ``ProcessPoolExecutor`` reaches the parent as
    itself, attributes and all): it is rebuilt from its ``args`` and attributes, without
    calling ``__init__``, whose parameters differ from class to class.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # the attributes as pickle's state, set once the error exists: an error among its
        # own attempts (the last one's) then pickles as a reference, not endlessly
        return _rebuild, (type(self), self.args), dict(vars(self))


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], mixed: bool = False) -> BaseException:
    """Unpickle an error: an instance of ``cls`` with these ``args`` (``mixed``: with
    :class:`FailoverError` mixed in again, as :func:`with_attempts` did); pickle then
    sets its attributes."""
    error = cls.__new__(cls, *args)
    if isinstance(error, OSError):
        OSError.__init__(error, *args)  # (errno, strerror and filename come from the args)
    error.args = args
    if mixed:
        error.__class__ = _mixed(cls)
    return error


def _reduce_mixed(self: BaseException) -> tuple[Any, ...]:
    # a mixed class cannot be found by name: rebuild the original and mix it in again
    return _rebuild, (type(self).__mro__[1], self.args, True), dict(vars(self))


#: exceptions that say the caller's code is wrong, not that a node or a dependency failed:
#: the failover loop neither charges them to a node nor retries them on another, and a
#: fallback still serves the request but logs them at ERROR with their traceback
PROGRAMMING_ERRORS: tuple[type[Exception], ...] = (
    NameError,  # UnboundLocalError too
    AttributeError,
    TypeError,
    ImportError,  # ModuleNotFoundError too
    SyntaxError,
    AssertionError,
    NotImplementedError,
)


class ConfigWarning(UserWarning):
    """A setting that works but likely not as meant: a ``RESILIENCE_*`` key that no
    setting has (most likely a misspelling), or settings that leave a feature without
    what it needs (shedding by user with no way to tell users apart)."""


class ConfigError(ResilienceError, ValueError):
    """Invalid configuration, raised at construction.

    The message names the setting as the user wrote it (a keyword such as
    ``failure_threshold``, or a Flask key such as ``RESILIENCE_NODES[1].endpoint``),
    the value (credentials hidden, secrets masked), the rule, and a hint where a common
    mistake is likely. ``field``, ``value``, ``reason`` and ``hint`` are attributes.
    """

    def __init__(self, field: str, value: Any, reason: str, *, hint: str | None = None, secret: bool = False) -> None:
        self.field = field
        self.value = redact_value(value, secret=secret)
        self.reason = reason
        self.hint = redact_value(hint)  # hints may quote the value
        self.secret = secret
        message = f"{field}={self.value!r}: {reason}"
        super().__init__(f"{message} (hint: {self.hint})" if hint else message)

    def renamed(self, field: str) -> ConfigError:
        """The same error for a setting the user knows by another name."""
        return ConfigError(field, self.value, self.reason, hint=self.hint, secret=self.secret)


class UnknownNodeError(ResilienceError, KeyError):
    """A node id that the manager was not constructed with."""

    def __init__(self, node_id: str, known: tuple[str, ...]) -> None:
        self.node_id = node_id
        self.known = known
        super().__init__(node_id)

    def __str__(self) -> str:
        return f"unknown node id {self.node_id!r} (known: {', '.join(self.known)})"


class Attempt(NamedTuple):
    """One try of an operation on one node, as recorded by a failover loop."""

    #: id of the node that was tried
    node_id: str
    #: what the try raised (or a synthetic error for a bad status)
    error: BaseException
    #: seconds the try took
    elapsed: float


class FailoverError(ResilienceError):
    """Every error a failover loop lets out: ``except FailoverError`` catches them all.

    The loops raise the last attempt's own exception (a ``requests.ReadTimeout`` stays
    a ``ReadTimeout``) with this class mixed in, every attempt in :attr:`attempts`
    and a note (PEP 678) naming them; see :func:`with_attempts`.
    """

    #: each try of the call, in order
    attempts: tuple[Attempt, ...] = ()

    @property
    def last_error(self) -> BaseException | None:
        """The error of the last attempt, if any attempt was made."""
        return self.attempts[-1].error if self.attempts else None


class NoAvailableNodeError(FailoverError):
    """No node is healthy, panic routing is off and the pool has more than one node,
    so nothing was tried."""


_MIXED: dict[type[BaseException], type[BaseException]] = {}


def _mixed(cls: type[BaseException]) -> type[BaseException]:
    """``cls`` with :class:`FailoverError` mixed in (made once per class)."""
    mixed = _MIXED.get(cls)
    if mixed is None:
        # Same name and module: tracebacks and logs still read requests.exceptions.ReadTimeout.
        mixed = type(
            cls.__name__,
            (cls, FailoverError),
            {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "__reduce__": _reduce_mixed},
        )
        _MIXED[cls] = mixed
    return mixed


def with_attempts(error: BaseException, attempts: list[Attempt] | tuple[Attempt, ...]) -> BaseException:
    """Mark ``error`` as the end of a failover loop: :class:`FailoverError` mixed into
    its class (it stays an instance of its own type), ``attempts`` attached, and a note
    naming each attempt. Returns ``error`` itself, ready to re-raise."""
    error.attempts = tuple(attempts)  # type: ignore[attr-defined]
    if not isinstance(error, FailoverError):
        # (a builtin exception type refuses: its attributes and note still apply)
        with contextlib.suppress(TypeError):
            error.__class__ = _mixed(type(error))
    if len(attempts) > 1:
        tried = ", ".join(f"{a.node_id} ({type(a.error).__name__}, {a.elapsed:.2f} s)" for a in attempts)
        notes = getattr(error, "__notes__", None)
        note = f"resilience_mw tried {len(attempts)} nodes: {tried}"
        if notes is None:
            error.__notes__ = [note]  # type: ignore[attr-defined]
        elif note not in notes:
            notes.append(note)
    return error


class AllNodesFailedError(FailoverError):
    """Every node tried in one call failed; :attr:`attempts` holds each try in order."""

    def __init__(self, attempts: tuple[Attempt, ...] | list[Attempt], message: str = "") -> None:
        self.attempts = tuple(attempts)
        if not message:
            tried = "; ".join(
                f"{a.node_id}: {describe_error(a.error)} ({a.elapsed * 1000:.1f} ms)" for a in self.attempts
            )
            message = f"all {len(self.attempts)} node(s) failed: {tried}"
        super().__init__(message)


class FeatureUnavailable(ResilienceError):
    """A feature is switched off at the current degradation level."""

    def __init__(self, feature: Any, level: Any) -> None:
        self.feature = feature
        self.level = level
        name = getattr(feature, "name", feature)
        lvl = getattr(level, "name", level)
        self.message = f"feature {name} is unavailable at degradation level {lvl}"
        super().__init__(self.message)

    def __str__(self) -> str:
        # kept explicit: host-type subclasses (werkzeug's HTTPException) reset args
        return self.message
