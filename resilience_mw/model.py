"""Plain values shared by every layer: nodes, node health, strategies, levels, features.

Nothing here holds a lock or does I/O. :class:`ServiceNode` validates itself on
construction and never shows credentials embedded in its endpoint (``__repr__`` and
:attr:`ServiceNode.safe_endpoint` redact them).
"""

from __future__ import annotations

import email.utils
import enum
import math
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from . import _validate as v
from ._redact import redact_url
from .exceptions import ConfigError

__all__ = [
    "CheckResult",
    "Criticality",
    "DegradationLevel",
    "FailoverStrategy",
    "Feature",
    "NodeHealth",
    "Sample",
    "ServiceNode",
    "parse_level",
    "redact_url",
    "retry_after_seconds",
]


#: what to say when an endpoint's password is taken for its path, query or fragment
_AT_HINT = "percent-encode '/', '?', '#' and '@' in a password (%2F, %3F, %23, %40)"


@dataclass(frozen=True, slots=True)
class ServiceNode:
    """One upstream node.

    :param id: non-empty name, unique within a manager.
    :param endpoint: ``http://`` or ``https://`` base URL with a host; a trailing ``/``
        is dropped so paths can be appended.
    :param priority: higher is preferred by :attr:`FailoverStrategy.Priority`; ``>= 0``.
    :param weight: share for :attr:`FailoverStrategy.WeightedRoundRobin`; ``>= 1``.
    """

    id: str
    endpoint: str = field(repr=False)
    priority: int = 0
    weight: int = 1

    def __post_init__(self) -> None:
        v.text()("id", self.id)
        v.text()("endpoint", self.endpoint)
        endpoint = self.endpoint
        try:
            parts = urlsplit(endpoint)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ConfigError("endpoint", endpoint, f"unparseable URL ({exc})", hint=_AT_HINT if "@" in endpoint else None) from None
        if ("@" in endpoint and "@" not in parts.netloc) or "@" in parts.path:
            raise ConfigError("endpoint", endpoint, "has an '@' after the host", hint=_AT_HINT)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("endpoint", endpoint, "must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ConfigError("endpoint", endpoint, "must not carry a query or fragment", hint=_AT_HINT if "@" in endpoint else None)
        object.__setattr__(self, "endpoint", endpoint.rstrip("/"))
        v.integer(ge=0)("priority", self.priority)
        v.integer(ge=1, le=1_000_000)("weight", self.weight)

    @property
    def safe_endpoint(self) -> str:
        """The endpoint with credentials redacted, fit for logs and status pages."""
        return redact_url(self.endpoint)

    def __repr__(self) -> str:
        return (
            f"ServiceNode(id={self.id!r}, endpoint={self.safe_endpoint!r}, "
            f"priority={self.priority}, weight={self.weight})"
        )


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """A node's health as last observed.

    :param last_check: ``time.monotonic()`` of the observation.
    :param latency: seconds; for nodes tracked by a manager, the decaying average.
    """

    node_id: str
    is_healthy: bool
    last_check: float
    consecutive_failures: int = 0
    latency: float = 0.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one active health check saw."""

    node_id: str
    passed: bool
    #: seconds the check took, by the checker's clock
    latency: float
    #: why it failed (a status, an error type and message; redacted), ``""`` if it passed
    detail: str = ""

    @property
    def is_healthy(self) -> bool:
        """Whether the check passed (the name the ported design uses for :attr:`passed`,
        its ``NodeHealth.is_healthy``)."""
        return self.passed


class FailoverStrategy(enum.Enum):
    """How a manager picks the node for the next call."""

    #: the highest ``priority`` tier with a healthy node; nodes of equal priority (all of
    #: them when none is given) share its traffic by load, as LeastLoaded
    Priority = "priority"
    #: healthy nodes in turn
    RoundRobin = "round_robin"
    #: a uniformly random healthy node
    Random = "random"
    #: the lowest load-aware cost (peak-sensitive latency x (requests in flight + 1)) over
    #: every healthy node; an unmeasured node is tried, not shunned
    FastestResponse = "fastest_response"
    #: smooth weighted round-robin (nginx): weights 5:1:1 give a,a,b,a,c,a,a
    WeightedRoundRobin = "weighted_round_robin"
    #: the cheaper of two random healthy nodes by the load-aware cost (Finagle's and
    #: Linkerd's power of two choices over a peak EWMA): the choice for sick, not only
    #: dead, nodes and for many client processes
    LeastLoaded = "least_loaded"


class DegradationLevel(enum.IntEnum):
    """Ordered degradation levels; the ported design's ``None`` is :attr:`Normal`
    (see :doc:`/guide/origin`)."""

    #: everything on
    Normal = 0
    #: light: analytics off
    Level1 = 1
    #: moderate: detailed logs off too
    Level2 = 2
    #: heavy: caching off too; fallbacks used without trying the primary
    Level3 = 3
    #: core only; requests outside core paths are shed
    Emergency = 4

    def __str__(self) -> str:
        return self.name

    def __format__(self, spec: str) -> str:
        return format(self.name, spec)


class Feature(enum.Enum):
    """The ported design's feature classes; see :mod:`resilience_mw.degradation.features`
    for the table."""

    #: always available
    CoreFunction = "core_function"
    #: off from Level1
    Analytics = "analytics"
    #: off from Level2
    DetailedLogs = "detailed_logs"
    #: off from Level3
    Caching = "caching"
    #: on only at Normal
    NonEssential = "non_essential"


_LEVEL_NAMES = {lv.name.lower(): lv for lv in DegradationLevel}


def retry_after_seconds(value: str | None, cap: float) -> float | None:
    """Seconds a ``Retry-After`` header value asks for (delta-seconds or an HTTP date),
    at most ``cap``; ``None`` when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    if math.isnan(seconds):
        return None
    return min(max(0.0, seconds), cap)


def parse_level(value: object, field: str = "level") -> DegradationLevel:
    """A :class:`DegradationLevel` from a member, its name in any case (``"Level3"``,
    ``"level3"``) or its value (``3``).

    :raises ConfigError: naming ``field`` and the value otherwise.
    """
    if isinstance(value, DegradationLevel):
        return value
    try:
        if isinstance(value, str):
            return _LEVEL_NAMES[value.strip().lower()]
        if isinstance(value, int) and not isinstance(value, bool):
            return DegradationLevel(value)
    except (KeyError, ValueError):
        pass
    raise ConfigError(field, value, f"must be one of {[lv.name for lv in DegradationLevel]}")


class Criticality(str, enum.Enum):
    """How much a request matters when some must be shed (highest first)."""

    CRITICAL_PLUS = "critical_plus"
    CRITICAL = "critical"
    SHEDDABLE_PLUS = "sheddable_plus"
    SHEDDABLE = "sheddable"

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True, slots=True)
class Sample:
    """CPU and memory use, in percent."""

    cpu: float
    memory: float
