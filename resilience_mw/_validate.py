"""The validator kit: one rule per kind of setting, each raising a ConfigError that
names the setting, shows the value and says the rule.

A :class:`Check` is a callable ``check(name, value) -> clean value`` with a ``rule``
text (shown in errors and in the generated option reference). Config dataclasses
declare one per field (see :func:`resilience_mw.config.option`); Flask settings reuse
the same checks under their ``RESILIENCE_*`` names.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .exceptions import ConfigError

__all__ = [
    "Check",
    "boolean",
    "closest",
    "function",
    "integer",
    "list_of",
    "number",
    "one_of",
    "optional",
    "path",
    "paths",
    "reject_unknown_keys",
    "seconds",
    "text",
]


@dataclass(frozen=True, slots=True)
class Check:
    """A validation rule: ``check(name, value)`` returns the clean value or raises."""

    rule: str
    fn: Callable[[str, Any], Any]

    def __call__(self, name: str, value: Any) -> Any:
        return self.fn(name, value)


def closest(word: str, known: Iterable[str]) -> str | None:
    """The known name ``word`` most likely misspells, if any is close."""
    found = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return found[0] if found else None


def _bounds_text(gt: float | None, ge: float | None, le: float | None, lt: float | None) -> str:
    low = f"({gt:g}" if gt is not None else f"[{ge:g}" if ge is not None else None
    high = f"{le:g}]" if le is not None else f"{lt:g})" if lt is not None else None
    if low and high:
        return f"in {low}, {high}"
    if low:
        return f"{'>' if gt is not None else '>='} {low[1:]}"
    if high:
        return f"{'<=' if le is not None else '<'} {high[:-1]}"
    return "finite"


def _in_bounds(v: float, gt: float | None, ge: float | None, le: float | None, lt: float | None) -> bool:
    return (
        (gt is None or v > gt)
        and (ge is None or v >= ge)
        and (le is None or v <= le)
        and (lt is None or v < lt)
    )


def _numeric(name: str, value: Any, what: str) -> float | int:
    if isinstance(value, bool):
        raise ConfigError(name, value, f"must be {what}, not a bool")
    if isinstance(value, str):
        try:
            float(value)
            hint: str | None = f"write {value.strip()} without quotes"
        except ValueError:
            hint = None
        raise ConfigError(name, value, f"must be {what}, not a string", hint=hint)
    if not isinstance(value, (int, float)):
        raise ConfigError(name, value, f"must be {what}, not {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(name, value, f"must be finite, not {value}")
    return value


def number(
    *, gt: float | None = None, ge: float | None = None, le: float | None = None, lt: float | None = None
) -> Check:
    """A finite int or float (never a bool or a string) within the bounds; gives a float."""
    rule = f"a number {_bounds_text(gt, ge, le, lt)}"

    def check(name: str, value: Any) -> float:
        v = float(_numeric(name, value, "a number"))
        if not _in_bounds(v, gt, ge, le, lt):
            raise ConfigError(name, value, f"must be {rule}")
        return v

    return Check(rule, check)


def seconds(*, minimum: float = 0.001, maximum: float = 86_400.0, zero: bool = False) -> Check:
    """A duration in seconds: finite, at least ``minimum`` (or exactly 0 if ``zero``)."""
    rule = f"seconds in [{minimum:g}, {maximum:g}]" + (" or 0" if zero else "")

    def check(name: str, value: Any) -> float:
        v = float(_numeric(name, value, "a number of seconds"))
        if not (minimum <= v <= maximum or (zero and v == 0)):
            raise ConfigError(name, value, f"must be {rule}")
        return v

    return Check(rule, check)


def integer(*, ge: int | None = None, le: int | None = None) -> Check:
    """A whole number (an ``int``, never a bool or a float) within the bounds."""
    rule = f"an integer {_bounds_text(None, ge, le, None)}"

    def check(name: str, value: Any) -> int:
        v = _numeric(name, value, "an integer")
        if not isinstance(v, int):
            raise ConfigError(name, value, f"must be {rule}", hint=f"write {int(v)}" if v == int(v) else None)
        if not _in_bounds(v, None, ge, le, None):
            raise ConfigError(name, value, f"must be {rule}")
        return v

    return Check(rule, check)


def boolean() -> Check:
    """``True`` or ``False`` exactly: ``"false"`` would be truthy."""

    def check(name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            hint = "the string is truthy whatever it says; use True or False" if isinstance(value, str) else None
            raise ConfigError(name, value, "must be True or False", hint=hint)
        return value

    return Check("True or False", check)


def text(*, empty: bool = False, secret: bool = False) -> Check:
    """A string (non-empty unless ``empty``)."""

    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise ConfigError(name, value, "must be a string", secret=secret)
        if not empty and not value.strip():
            raise ConfigError(name, value, "must not be empty", secret=secret)
        return value

    return Check("a string" if empty else "a non-empty string", check)


def path() -> Check:
    """A URL path: starts with ``/``, no whitespace, no query or fragment."""

    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise ConfigError(name, value, "must be a path string starting with '/'")
        if not value.startswith("/"):
            raise ConfigError(name, value, "must start with '/'", hint=f"write '/{value}'")
        if any(c.isspace() for c in value) or "?" in value or "#" in value:
            raise ConfigError(name, value, "must be a plain path (no whitespace, query or fragment)")
        return value

    return Check("a path starting with '/'", check)


def one_of(choices: Iterable[str]) -> Check:
    """One of the given strings."""
    allowed = tuple(choices)
    rule = "one of " + ", ".join(repr(c) for c in allowed)

    def check(name: str, value: Any) -> str:
        if value not in allowed:
            near = closest(value, allowed) if isinstance(value, str) else None
            raise ConfigError(name, value, f"must be {rule}", hint=f"did you mean {near!r}?" if near else None)
        return str(value)

    return Check(rule, check)


def optional(inner: Check) -> Check:
    """``None``, or a value ``inner`` accepts."""
    return Check(f"None or {inner.rule}", lambda name, value: None if value is None else inner(name, value))


def function() -> Check:
    """A callable."""

    def check(name: str, value: Any) -> Any:
        if not callable(value):
            raise ConfigError(name, value, "must be callable")
        return value

    return Check("a callable", check)


def list_of(item: Check, what: str) -> Check:
    """A list (or tuple, set...) of values ``item`` accepts; gives a tuple.

    A string is refused with a hint: iterating it would give single characters.
    """
    rule = f"a list of {what}"

    def check(name: str, value: Any) -> tuple[Any, ...]:
        if isinstance(value, (str, bytes)):
            raise ConfigError(
                name, value, f"must be {rule}", hint=f"a string was given where a list of {what} is expected; write [{value!r}]"
            )
        if isinstance(value, Mapping):
            raise ConfigError(name, value, f"must be {rule}", hint=f"a mapping was given where a list of {what} is expected")
        if not isinstance(value, Iterable):
            raise ConfigError(name, value, f"must be {rule}")
        return tuple(item(f"{name}[{i}]", v) for i, v in enumerate(value))

    return Check(rule, check)


def paths() -> Check:
    """A list of paths (see :func:`path`)."""
    return list_of(path(), "paths")


def reject_unknown_keys(name: str, given: Mapping[str, Any], known: Iterable[str]) -> None:
    """Raise for the first key of ``given`` not in ``known``, suggesting the closest."""
    known = list(known)
    for key, value in given.items():
        if key not in known:
            near = closest(str(key), known)
            raise ConfigError(
                f"{name}.{key}" if name else str(key),
                value,
                "is not a known setting",
                hint=f"did you mean {near!r}?" if near else f"known: {', '.join(known)}",
            )
