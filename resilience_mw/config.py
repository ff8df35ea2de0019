"""Frozen, validated configuration: one dataclass per component.

Each field is declared once with :func:`option`: its default, its meaning and its
rule. Construction validates every field and raises
:class:`~resilience_mw.ConfigError` naming the field and the value; settings that
together make a rule unreachable are refused with the reason. Change a config with
:func:`dataclasses.replace`. Components take either their config object or the same
fields as keyword arguments.

============================  ===================================================
:class:`DegradationConfig`    levels from CPU, memory and the error rate
:class:`PoolConfig`           node selection, passive ejection
:class:`HealthCheckConfig`    active health checks
:class:`AdapterConfig`        the ``requests`` failover adapter
:class:`MiddlewareConfig`     shedding and rerouting in the WSGI middleware
:class:`AlertConfig`          alert rules
:class:`StateConfig`          state shared by the workers of a service
============================  ===================================================
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, TypeVar

from . import _validate as v
from ._redact import redact_url
from .exceptions import ConfigError
from .model import Criticality, DegradationLevel, FailoverStrategy, ServiceNode, parse_level

__all__ = [
    "AdapterConfig",
    "AlertConfig",
    "DegradationConfig",
    "HealthCheckConfig",
    "MiddlewareConfig",
    "PoolConfig",
    "StateConfig",
    "level_check",
    "nodes_check",
    "option",
    "options_of",
]

C = TypeVar("C", bound="_Validated")


def option(default: Any, doc: str, check: v.Check, *, secret: bool = False) -> Any:
    """A config field: its default, what it means, and the rule its value must meet
    (``secret``: kept out of the config's repr)."""
    meta = {"doc": doc, "check": check}
    if type(default).__hash__ is None:  # a mapping: each config gets its own
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta, repr=not secret)


def options_of(cls: type[Any]) -> list[tuple[str, Any, str, str]]:
    """``(name, default, rule, meaning)`` of every field of a config class, in order
    (the option reference in the docs is generated from this)."""
    return [
        (
            f.name,
            f.default if f.default_factory is dataclasses.MISSING else f.default_factory(),
            f.metadata["check"].rule,
            f.metadata["doc"],
        )
        for f in fields(cls)
    ]


def level_check() -> v.Check:
    """A :class:`DegradationLevel` given as a member, its name or its value."""
    return v.Check(
        "a level: Normal, Level1, Level2, Level3 or Emergency (name or member)",
        lambda name, value: parse_level(value, name),
    )


class _Validated:
    """Base of the config dataclasses: checks and normalises every field at construction."""

    __slots__ = ()

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            clean = f.metadata["check"](f.name, getattr(self, f.name))
            object.__setattr__(self, f.name, clean)
        self._check_together()

    def _check_together(self) -> None:
        """Rules between fields; subclasses override."""

    @classmethod
    def from_options(cls: type[C], config: C | None, options: Mapping[str, Any], *, name: str = "config") -> C:
        """``config`` if given (then ``options`` must be empty), else a config from ``options``.

        The shape every component constructor uses to accept either form.
        """
        if config is not None:
            if not isinstance(config, cls):
                raise ConfigError(name, config, f"must be a {cls.__name__}")
            if options:
                raise ConfigError(
                    name, sorted(options), f"give a {cls.__name__} or keyword options, not both",
                    hint=f"dataclasses.replace({name}, ...) changes a config",
                )
            return config
        v.reject_unknown_keys("", options, [f.name for f in fields(cls)])  # type: ignore[arg-type]
        return cls(**options)


#: a threshold in percent, or None to switch that level of that signal off
_PERCENT = v.optional(v.number(ge=0, le=100))


_QUEUE = v.optional(v.seconds(minimum=0.0001, maximum=3600))


@dataclass(frozen=True, slots=True, kw_only=True)
class DegradationConfig(_Validated):
    """Thresholds of :class:`~resilience_mw.AutoDegradationManager`.

    CPU and memory thresholds are percentages (of this service's own use, by default:
    :class:`~resilience_mw.degradation.load.SystemSampler`), queue thresholds seconds of queueing
    delay (the median of a sampling interval's requests, measured when the middleware
    reads the proxy's request-start stamp), strictly increasing per resource from Level1
    to Emergency; ``None`` switches that level of that signal off (all four ``None``: the
    signal is off). A CPU, memory or queue level counts only when
    ``sustain_samples`` of the last ``sustain_window`` samples call for it, and not
    within ``startup_grace_seconds`` of the sampler's start. The error rate is measured over the last
    ``error_window_seconds`` and counts once ``min_requests`` requests fell in that
    window; Level1/2/3/Emergency are reached at 1x/1.5x/2x/``error_emergency_multiplier``
    x ``error_rate_threshold``. Going up is immediate; going down needs the lower level
    to hold for ``cooldown_seconds``.

    Every signal raises the level features and fallbacks follow. Shedding and readiness
    follow the *load level*: the queueing delay (a symptom requests suffer) and a forced
    level; CPU and memory only with ``resources_shed``, the error rate only with
    ``errors_shed``.
    """

    cpu_threshold_l1: float | None = option(70.0, "CPU percent from which Level1 applies", _PERCENT)
    cpu_threshold_l2: float | None = option(85.0, "CPU percent from which Level2 applies", _PERCENT)
    cpu_threshold_l3: float | None = option(95.0, "CPU percent from which Level3 applies", _PERCENT)
    cpu_threshold_emergency: float | None = option(98.0, "CPU percent from which Emergency applies", _PERCENT)
    memory_threshold_l1: float | None = option(70.0, "memory percent from which Level1 applies", _PERCENT)
    memory_threshold_l2: float | None = option(85.0, "memory percent from which Level2 applies", _PERCENT)
    memory_threshold_l3: float | None = option(95.0, "memory percent from which Level3 applies", _PERCENT)
    memory_threshold_emergency: float | None = option(98.0, "memory percent from which Emergency applies", _PERCENT)
    queue_threshold_l1: float | None = option(
        0.02, "queueing delay (seconds, the median of an interval's requests, from the proxy's stamp) "
        "from which Level1 applies", _QUEUE
    )
    queue_threshold_l2: float | None = option(0.05, "queueing delay from which Level2 applies", _QUEUE)
    queue_threshold_l3: float | None = option(0.1, "queueing delay from which Level3 applies", _QUEUE)
    queue_threshold_emergency: float | None = option(0.25, "queueing delay from which Emergency applies", _QUEUE)
    error_rate_threshold: float = option(
        0.1, "error rate (share of failed requests) from which Level1 applies", v.number(gt=0, le=1)
    )
    error_emergency_multiplier: float = option(
        4.0, "Emergency applies at this multiple of error_rate_threshold (Level3 is 2x)", v.number(gt=2)
    )
    error_window_seconds: float = option(
        60.0, "seconds of requests the error rate covers", v.seconds(minimum=0.1)
    )
    error_window_buckets: int = option(
        12, "time slices of the error window (more: smoother, more memory)", v.integer(ge=1, le=3600)
    )
    min_requests: int = option(
        10, "requests the window must hold before the error rate counts", v.integer(ge=1)
    )
    cooldown_seconds: float = option(
        30.0, "how long a lower level must hold before the level goes down (0: at once)", v.seconds(zero=True)
    )
    sustain_samples: int = option(
        3,
        "CPU and memory raise the level only when this many of the last sustain_window samples call for it",
        v.integer(ge=1, le=1000),
    )
    sustain_window: int = option(5, "samples sustain_samples is counted over", v.integer(ge=1, le=1000))
    startup_grace_seconds: float = option(
        10.0, "CPU and memory samples taken this soon after the sampler starts are ignored", v.seconds(zero=True)
    )
    errors_shed: bool = option(
        False,
        "the error rate alone also sheds requests and fails readiness (by default it only gates "
        "features and engages fallbacks: a dependency outage must not pull every replica)",
        v.boolean(),
    )
    resources_shed: bool = option(
        False,
        "CPU and memory levels also shed requests and fail readiness (by default they only gate "
        "features: a service at 100 % of its CPU that keeps up must keep answering; the queueing "
        "delay sheds when requests suffer)",
        v.boolean(),
    )
    recovery_seconds: float = option(
        5.0,
        "while the load level is held up by its cooldown alone, the share of requests it sheds "
        "falls from all to none over this many seconds (a request whose queueing delay is known "
        "is served as soon as it waited no longer than its tolerance)",
        v.seconds(zero=True, maximum=3600),
    )

    def _check_together(self) -> None:
        for res in ("cpu", "memory", "queue"):
            names = [f"{res}_threshold_{s}" for s in ("l1", "l2", "l3", "emergency")]
            names = [n for n in names if getattr(self, n) is not None]  # None: that level is off
            for lower, higher in itertools.pairwise(names):
                if not getattr(self, lower) < getattr(self, higher):
                    raise ConfigError(
                        higher, getattr(self, higher), f"must be greater than {lower}={getattr(self, lower)!r}"
                    )
        top = self.error_rate_threshold * self.error_emergency_multiplier
        if top > 1:
            raise ConfigError(
                "error_rate_threshold",
                self.error_rate_threshold,
                f"Emergency would need an error rate of {top:g} "
                f"(error_emergency_multiplier={self.error_emergency_multiplier:g}), which cannot happen",
                hint=f"use error_rate_threshold <= {1 / self.error_emergency_multiplier:g} "
                "or a smaller error_emergency_multiplier",
            )
        if self.sustain_samples > self.sustain_window:
            raise ConfigError(
                "sustain_samples",
                self.sustain_samples,
                f"must be <= sustain_window={self.sustain_window} (the level could never rise)",
            )
        if self.error_window_seconds / self.error_window_buckets < 0.01:
            raise ConfigError(
                "error_window_buckets",
                self.error_window_buckets,
                f"slices of error_window_seconds={self.error_window_seconds:g} must be at least 10 ms",
            )

    @property
    def queue_behind_at(self) -> float:
        """The median queueing delay from which a process is behind on its queue: the
        lowest queue threshold set (20 ms by default; 20 ms when all are off)."""
        levels = [getattr(self, f"queue_threshold_{s}") for s in ("l1", "l2", "l3", "emergency")]
        return min((t for t in levels if t is not None), default=0.02)

    def queue_level(self, queue: float | None) -> DegradationLevel:
        """The level the queueing delay (seconds; ``None``: not measured) alone calls for."""
        if queue is None:
            return DegradationLevel.Normal
        return self._first_level(lambda suffix: _reached(getattr(self, f"queue_threshold_{suffix}"), queue))

    def resource_level(self, cpu: float, memory: float, queue: float | None = None) -> DegradationLevel:
        """The level CPU and memory percentages (and the queueing delay in seconds, when
        given) alone call for."""
        level = self._first_level(
            lambda suffix: _reached(getattr(self, f"cpu_threshold_{suffix}"), cpu)
            or _reached(getattr(self, f"memory_threshold_{suffix}"), memory)
        )
        return max(level, self.queue_level(queue))

    @staticmethod
    def _first_level(reached: Callable[[str], bool]) -> DegradationLevel:
        """The highest level whose threshold (named by its suffix) ``reached`` says is met."""
        for level, suffix in (
            (DegradationLevel.Emergency, "emergency"),
            (DegradationLevel.Level3, "l3"),
            (DegradationLevel.Level2, "l2"),
            (DegradationLevel.Level1, "l1"),
        ):
            if reached(suffix):
                return level
        return DegradationLevel.Normal

    def error_level(self, error_rate: float, requests: int) -> DegradationLevel:
        """The level the error rate alone calls for (Normal below ``min_requests``)."""
        if requests < self.min_requests:
            return DegradationLevel.Normal
        # 1e-9 of slack: 0.1 * 1.5 is 0.15000000000000002, and 15 % failed must reach Level2
        r = error_rate + 1e-9
        t = self.error_rate_threshold
        if r >= t * self.error_emergency_multiplier:
            return DegradationLevel.Emergency
        if r >= t * 2.0:
            return DegradationLevel.Level3
        if r >= t * 1.5:
            return DegradationLevel.Level2
        if r >= t:
            return DegradationLevel.Level1
        return DegradationLevel.Normal

    def decide(self, cpu: float, memory: float, error_rate: float, requests: int) -> DegradationLevel:
        """The level called for by one sample: the worst of resources and errors."""
        return max(self.resource_level(cpu, memory), self.error_level(error_rate, requests))


def _reached(threshold: float | None, value: float) -> bool:
    """A threshold that is set (``None``: that level of that signal is off) and met."""
    return threshold is not None and value >= threshold


def _strategy(name: str, value: Any) -> FailoverStrategy:
    if isinstance(value, FailoverStrategy):
        return value
    names = [s.name for s in FailoverStrategy]
    if isinstance(value, str) and value in names:
        return FailoverStrategy[value]
    near = v.closest(value, names) if isinstance(value, str) else None
    raise ConfigError(
        name, value, f"must be one of {', '.join(names)}", hint=f"did you mean {near!r}?" if near else None
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolConfig(_Validated):
    """Node selection and passive ejection of a :class:`~resilience_mw.NodePool` /
    :class:`~resilience_mw.FailoverManager` (Envoy's outlier detection)."""

    strategy: FailoverStrategy = option(
        FailoverStrategy.Priority,
        "how the next node is picked: Priority, RoundRobin, WeightedRoundRobin, Random, FastestResponse or "
        "LeastLoaded",
        v.Check("a FailoverStrategy member or its name", _strategy),
    )
    failure_threshold: int = option(
        5, "consecutive failures of real traffic that eject a node (Envoy's consecutive_5xx)", v.integer(ge=1, le=1_000_000)
    )
    base_ejection_time: float = option(
        30.0, "seconds of a node's first ejection; the n-th lasts n times as long", v.seconds()
    )
    max_ejection_time: float = option(300.0, "cap on one ejection, in seconds", v.seconds())
    max_ejection_percent: float = option(
        50.0, "share of nodes that may be ejected passively at once (at least one always may)", v.number(gt=0, le=100)
    )
    panic: bool = option(
        True,
        "when no node is healthy, try them all, best first, instead of none (Envoy's panic routing; "
        "a one-node pool always does)",
        v.boolean(),
    )
    latency_alpha: float = option(
        0.3, "weight of a new latency sample in the decaying average", v.number(gt=0, le=1)
    )
    power_of_two: bool = option(
        False, "FastestResponse compares two random nodes instead of all (LeastLoaded always does)", v.boolean()
    )
    latency_decay: float = option(
        10.0,
        "seconds over which a node's peak-sensitive latency decays when it is not measured again "
        "(LeastLoaded, FastestResponse, Priority ties): a node that stalled once is tried again",
        v.seconds(minimum=0.1, maximum=3600),
    )
    failure_penalty: float = option(
        1.0,
        "seconds of latency a node's load-aware cost is worth at least after a failure, a 429 or a 503, "
        "fading over 2 s (Linkerd's penalty): a node that fails fast does not attract traffic",
        v.seconds(maximum=3600, zero=True),
    )
    slow_start_window: float = option(
        30.0,
        "seconds over which a node offered again (after an ejection, a hold-off or failed checks) ramps "
        "from slow_start_min_weight to its full share, whatever the strategy (0: at once)",
        v.seconds(maximum=3600, zero=True),
    )
    slow_start_min_weight: float = option(
        0.1, "share of its traffic a returning node gets at the start of its slow start", v.number(gt=0, le=1)
    )
    outlier_interval: float = option(
        5.0,
        "seconds between comparisons of each node's outcomes with its peers' (half Envoy's 10 s: a sick "
        "node costs half as many requests before it goes)",
        v.seconds(minimum=0.05, maximum=3600),
    )
    outlier_min_hosts: int = option(
        5, "nodes with enough requests a comparison needs (Envoy's minimum_hosts)", v.integer(ge=2, le=10_000)
    )
    outlier_min_requests: int = option(
        100,
        "requests a node needs in an interval to be compared (Envoy's request_volume)",
        v.integer(ge=1, le=10_000_000),
    )
    success_rate_factor: float | None = option(
        1.9,
        "eject a node whose success rate is below its peers' mean by this many standard deviations "
        "(and by more than chance explains); None: off",
        v.optional(v.number(gt=0, le=100)),
    )
    failure_percentage: float | None = option(
        85.0, "eject a node failing at least this percentage of its requests; None: off",
        v.optional(v.number(gt=0, le=100)),
    )
    latency_min_requests: int = option(
        20,
        "successes a node needs in an interval for the latency rule (fewer than for the others: a slow "
        "node gets little traffic from a load-aware strategy, and its fastest answer is clear from a few)",
        v.integer(ge=1, le=10_000_000),
    )
    latency_factor: float | None = option(
        5.0,
        "eject a node whose fastest answer of an interval is at least this multiple of its peers' "
        "(their median); None: off",
        v.optional(v.number(gt=1, le=10_000)),
    )

    def _check_together(self) -> None:
        if self.max_ejection_time < self.base_ejection_time:
            raise ConfigError(
                "max_ejection_time",
                self.max_ejection_time,
                f"must be >= base_ejection_time={self.base_ejection_time:g}",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheckConfig(_Validated):
    """Active health checks of a :class:`~resilience_mw.HealthChecker`."""

    check_interval: float = option(5.0, "seconds between checks of a node that is offered", v.seconds(minimum=0.01))
    unhealthy_interval: float | None = option(
        None,
        "seconds between checks of a node that is out (Envoy's unhealthy_interval); default: check_interval",
        v.optional(v.seconds(minimum=0.01)),
    )
    timeout: float = option(
        2.0, "seconds one check may take from its own start, connect and read together", v.seconds(maximum=300)
    )
    path: str = option("/health", "request path appended to each node's endpoint", v.path())
    unhealthy_threshold: int = option(
        3, "consecutive failed checks that take a node out", v.integer(ge=1, le=1000)
    )
    healthy_threshold: int = option(
        2, "consecutive passed checks that bring it back (one after a passive ejection)", v.integer(ge=1, le=1000)
    )
    jitter: float = option(0.1, "up to this share of the interval is added at random to each wait", v.number(ge=0, le=1))
    max_workers: int = option(
        8, "most checks running at the same time (threads, the scheduling one included)", v.integer(ge=1, le=1024)
    )
    max_body_bytes: int = option(64 * 1024, "most bytes of a health response read", v.integer(ge=1))


def _state_url(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    url: str = v.text()(name, value)  # errors show it with its password hidden
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("sqlite", "redis", "rediss"):
        raise ConfigError(name, url, "must be sqlite:///path/file.db, redis://host:port/db or rediss://...")
    return url


def _store_name(name: str, value: Any) -> str | None:
    if value is None:
        return None
    clean: str = v.text()(name, value).strip()
    if not clean.replace("-", "").replace("_", "").replace(".", "").isalnum() or len(clean) > 100:
        raise ConfigError(name, value, "must be up to 100 letters, digits, '-', '_' or '.'")
    return clean


#: a service name or namespace in the store
_STORE_NAME = v.Check("letters, digits, '-', '_' or '.', or unset", _store_name)


@dataclass(frozen=True, slots=True, kw_only=True)
class StateConfig(_Validated):
    """Where the workers of a service share state (:mod:`resilience_mw.fleet.store`), and how."""

    url: str | None = option(
        None,
        "sqlite:///path/file.db (every worker on this host) or redis://host:port/db (the fleet); unset: "
        "this process alone",
        v.Check("a sqlite://, redis:// or rediss:// URL, or unset", _state_url),
    )
    sync_interval: float = option(
        1.0, "seconds between exchanges with the store (never on a request's path)", v.seconds(minimum=0.05, maximum=60)
    )
    eject_quorum: int | None = option(
        None,
        "distinct workers whose reports take a node out in the others; default 1 on SQLite, 2 on Redis",
        v.optional(v.integer(ge=1, le=1000)),
    )

    error_rate_scope: str = option(
        "process",
        "whose requests the error rate counts: this process's ('process') or every worker's of the store ('fleet')",
        v.one_of(("process", "fleet")),
    )

    retry_budget_scope: str = option(
        "process",
        "whose requests and extra attempts the adapter's retry budget counts: this process's ('process') "
        "or every worker's of the store ('fleet')",
        v.one_of(("process", "fleet")),
    )

    outlier_scope: str = option(
        "fleet",
        "whose outcomes outlier detection compares the nodes by: every worker's of the store, summed over the "
        "last outlier_interval ('fleet': a worker that sends little still learns), or this process's ('process')",
        v.one_of(("process", "fleet")),
    )

    service: str | None = option(
        None,
        "this service's name in the store (announced with its node set: another service, or another node set, in "
        "the same namespace is a collision, warned about and not merged); unset: the Flask app's import name, "
        "else the module that created the Runtime",
        _STORE_NAME,
    )

    namespace: str | None = option(
        None,
        "the prefix of this service's keys in a Redis store (?namespace= in the URL says the same); unset: the "
        "service's name, so services on one Redis stay apart. A SQLite file is one namespace",
        _STORE_NAME,
    )

    def __repr__(self) -> str:
        url = None if self.url is None else redact_url(self.url)
        return (
            f"StateConfig(url={url!r}, sync_interval={self.sync_interval}, eject_quorum={self.eject_quorum}, "
            f"error_rate_scope={self.error_rate_scope!r}, retry_budget_scope={self.retry_budget_scope!r}, "
            f"outlier_scope={self.outlier_scope!r}, service={self.service!r}, namespace={self.namespace!r})"
        )


def _timeout(name: str, value: Any) -> float | tuple[float | None, float | None] | None:
    if value is None:
        return None
    one = v.optional(v.seconds(maximum=86_400))
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ConfigError(name, value, "must be a number of seconds or a (connect, read) pair")
        return (one(f"{name}[0]", value[0]), one(f"{name}[1]", value[1]))
    clean: float = v.seconds(maximum=86_400)(name, value)
    return clean


def _status(name: str, value: Any) -> int:
    clean: int = v.integer(ge=100, le=599)(name, value)
    return clean


def _method(name: str, value: Any) -> str:
    return str(v.text()(name, value)).upper()


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterConfig(_Validated):
    """The :class:`~resilience_mw.adapter.FailoverAdapter`'s own settings (node
    selection and ejection are the pool's: :class:`PoolConfig`)."""

    retry_statuses: frozenset[int] = option(
        frozenset({429, 502, 503, 504}),
        "statuses that move a request that is safe to resend to the next node",
        v.Check("a list of HTTP statuses", lambda n, x: frozenset(v.list_of(v.Check("a status", _status), "statuses")(n, x))),
    )
    idempotent_methods: frozenset[str] = option(
        frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}),
        "methods safe to send to a second node after the first may have received them",
        v.Check("a list of methods", lambda n, x: frozenset(v.list_of(v.Check("a method", _method), "methods")(n, x))),
    )
    retry_non_idempotent: bool = option(
        False, "treat every method as safe to resend (OTLP export and other duplicate-tolerant callers)", v.boolean()
    )
    default_timeout: float | tuple[float | None, float | None] | None = option(
        None,
        "per-attempt timeout, seconds or (connect, read), used when the caller passes None "
        "(None: wait as requests would)",
        v.Check("None, seconds, or a (connect, read) pair of seconds", _timeout),
    )
    deadline: float | None = option(
        None,
        "seconds for the whole call, every attempt and phase included; the body is then read in the "
        "adapter (None: only requests' per-read timeouts)",
        v.optional(v.seconds()),
    )
    max_body_bytes: int | None = option(
        None,
        "most bytes of a non-streamed body held in memory; the body is then read in the adapter "
        "(None: no limit, requests reads the body)",
        v.optional(v.integer(ge=1)),
    )
    retry_budget_ratio: float | None = option(
        0.2,
        "extra attempts (failovers, retries) allowed as a share of requests over retry_budget_window "
        "(None: no budget)",
        v.optional(v.number(ge=0, le=10)),
    )
    retry_budget_min_per_second: float = option(
        3.0, "extra attempts always allowed per second, however few the requests", v.number(ge=0, le=1_000_000)
    )
    retry_budget_window: float = option(10.0, "seconds the retry budget looks back", v.seconds(minimum=1, maximum=3600))
    hedge_max_extra_load: float | None = option(
        None,
        "hedging of idempotent calls (None: off): a call unanswered after the (1 - this / 2) quantile of the "
        "last 30 s of answers is sent to a second node too, the first answer wins; hedges are at most this "
        "share of the calls and are extra attempts of the retry budget; none from Level1, while the upstream "
        "looks saturated or while calls are late on most nodes at once",
        v.optional(v.number(gt=0, le=0.5)),
    )
    throttle: bool = option(
        False,
        "client-side throttling: while the upstream accepts less than throttle_success_ratio of the calls, "
        "refuse a share of them here (critical_plus never, sheddable first) instead of sending them",
        v.boolean(),
    )
    throttle_window: float = option(30.0, "seconds the throttle counts calls and accepts over", v.seconds(minimum=1, maximum=3600))
    throttle_success_ratio: float = option(
        0.95, "share of calls the upstream must accept for nothing to be throttled", v.number(gt=0, le=1)
    )
    throttle_max_rejection: float = option(
        0.8, "most a call of class critical is refused with (a probability)", v.number(gt=0, le=1)
    )
    pool_connections: int | None = option(
        None, "connection pools kept (None: the node count, at least 10)", v.optional(v.integer(ge=1))
    )
    pool_maxsize: int = option(10, "connections kept per node", v.integer(ge=1, le=10_000))
    pool_block: bool = option(False, "wait for a free connection instead of opening another", v.boolean())


def _criticality_routes(name: str, value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(name, value, "must be a mapping {path prefix: criticality}")
    clean = {}
    for path, level in value.items():
        v.path()(f"{name} key", path)
        names = [c.value for c in Criticality]
        if level not in names:
            raise ConfigError(f"{name}[{path!r}]", level, f"must be one of {names}")
        clean[path] = str(level)
    return MappingProxyType(clean)


def _shed_table(name: str, value: Any) -> Mapping[DegradationLevel, Mapping[Criticality, float]]:
    if not isinstance(value, Mapping):
        raise ConfigError(name, value, "must be a mapping {level: {criticality: share of its users shed}}")
    share = v.number(ge=0, le=1)
    names = [c.value for c in Criticality if c is not Criticality.CRITICAL_PLUS]
    table: dict[DegradationLevel, Mapping[Criticality, float]] = {}
    for level, shares in value.items():
        lv = parse_level(level, f"{name} key")
        if lv is DegradationLevel.Normal:
            raise ConfigError(f"{name} key", level, "must be a level above Normal (Normal sheds nothing)")
        if not isinstance(shares, Mapping):
            raise ConfigError(f"{name}[{lv.name}]", shares, "must be a mapping {criticality: share}")
        row: dict[Criticality, float] = {}
        for criticality, part in shares.items():
            if criticality not in names:  # (critical_plus is never shed)
                raise ConfigError(f"{name}[{lv.name}] key", criticality, f"must be one of {names}")
            row[Criticality(criticality)] = share(f"{name}[{lv.name}][{criticality!r}]", part)
        table[lv] = MappingProxyType(row)
    return MappingProxyType(table)


def _reroutes(name: str, value: Any) -> Mapping[str, tuple[str, DegradationLevel]]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            name, value, 'must be a mapping {path: (target_path, level)}',
            hint='e.g. {"/search": ["/search/lite", "Level2"]}',
        )
    out: dict[str, tuple[str, DegradationLevel]] = {}
    for src, target in value.items():
        key = f"{name}[{src!r}]"
        src_path: str = v.path()(key, src)
        if isinstance(target, str) or not isinstance(target, (tuple, list)) or len(target) != 2:
            raise ConfigError(
                key, target, "must be a pair (target_path, level)", hint=f'e.g. ["{src}/lite", "Level2"]'
            )
        out[src_path] = (v.path()(f"{key}[0]", target[0]), parse_level(target[1], f"{key}[1]"))
    return MappingProxyType(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class MiddlewareConfig(_Validated):
    """What :class:`~resilience_mw.ResilienceMiddleware` sheds, reroutes and counts."""

    shed_level: DegradationLevel | None = option(
        DegradationLevel.Emergency, "from this level, requests outside core_paths get 503 (None: never)",
        v.optional(level_check()),
    )
    core_paths: tuple[str, ...] = option((), "path prefixes always served, whatever the level", v.paths())
    exempt_paths: tuple[str, ...] = option(
        ("/livez", "/readyz", "/healthz", "/health", "/metrics"),
        "exact paths neither counted nor shed (health, metrics, status)",
        v.paths(),
    )
    reroutes: Mapping[str, tuple[str, DegradationLevel]] = option(
        {},
        "{path: (lighter_path, level)}: serve path from lighter_path from that level on",
        v.Check('a mapping {path: (target_path, level)}', _reroutes),
    )
    retry_after: int = option(
        30, "most seconds in the Retry-After header of shed responses: each gets a random value between "
        "half of it and all of it, and never more than the load level can still last", v.integer(ge=0, le=86_400),
    )
    is_failure: Callable[[int], bool] | None = option(
        None, "f(status_code) -> bool deciding a failure (None: status >= 500)", v.optional(v.function())
    )
    count_exceptions: bool = option(
        True, "an exception from the app, or while sending its body, counts as a failure", v.boolean()
    )
    record_outcomes: bool = option(
        True, "count outcomes in the error window (False: only gate, shed and reroute)", v.boolean()
    )
    queue_signal: bool | None = option(
        None, "read the proxy's request-start stamp (queue_header) and feed the queueing delay into the load "
        "level; None: when trusted_proxies is set (a proxy you trust sets the header, replacing any a client "
        "sent: a client cannot forge its own wait), True: always, False: never",
        v.optional(v.boolean()),
    )
    queue_header: str = option(
        "X-Request-Start", "header in which the proxy stamps when the request arrived", v.text()
    )
    max_queue_time: float | None = option(
        None, "a request that queued longer than this (seconds, per queue_header) gets 503 at once (None: off)",
        v.optional(v.seconds(minimum=0.001, maximum=3600)),
    )
    deadline_header: str | None = option(
        None, "header carrying the caller's deadline (epoch ms, or a timeout such as 2.5s or 250ms); "
        "a request past it gets 503 (None: off)", v.optional(v.text()),
    )
    criticality_header: str | None = option(
        None, "trusted header naming a request's criticality (None: not read)", v.optional(v.text())
    )
    criticality_routes: Mapping[str, str] = option(
        {}, "{path prefix: criticality}: critical_plus, critical, sheddable_plus or sheddable",
        v.Check("a mapping {path prefix: criticality}", _criticality_routes),
    )
    shed_table: Mapping[DegradationLevel, Mapping[Criticality, float]] | None = option(
        None, "{level: {criticality: share of its users shed}} for criticality shedding by level "
        "(None: resilience_mw.admission.DEFAULT_SHED_TABLE; a level not listed sheds nothing)",
        v.optional(v.Check("a mapping {level: {criticality: share}}", _shed_table)),
    )
    criticality_shedding: bool = option(
        False, "shed by criticality as the load level rises (the lowest classes first, by user)", v.boolean()
    )
    queue_tolerance: float | None = option(
        0.01, "with the queue header read (queue_signal or max_queue_time): the queueing delay the "
        "lowest-priority request tolerates (sheddable: 1-2x by user, sheddable_plus 2-4x, critical 8-16x); "
        "a request that waited longer is shed while the process is behind on its queue (its last "
        "interval's median wait reached queue_threshold_l1, or it still refuses a twentieth of its "
        "requests for waiting), and one whose wait is known is not shed by the level (None: shed "
        "by level only)",
        v.optional(v.seconds(minimum=0.0001, maximum=60)),
    )
    user_key: str | None = option(
        None, "header, else cookie, whose value keeps a user's requests together when shedding by share "
        "(None, or absent from a request: the client address, see trusted_proxies)", v.optional(v.text()),
    )
    trusted_proxies: int | None = option(
        None, "proxies in front whose X-Forwarded-For is believed, as werkzeug's ProxyFix x_for (0: none, the "
        "peer is the client); 1 or more also makes their request-start stamp believed (see queue_signal); "
        "None: no client address is used to tell users apart, each request is shed by its own draw",
        v.optional(v.integer(ge=0, le=32)),
    )
    user_key_secret: str | None = option(
        None, "a per-deployment secret keying the hash of user keys, so that a client that sets its own key "
        "cannot search offline for one that is shed last", v.optional(v.text(secret=True)), secret=True,
    )
    concurrency_limit: bool = option(
        False, "limit requests in flight in this process by an adaptive limit learnt from latency (a gradient "
        "against a probed no-load latency); "
        "the excess gets 503 at once, sheddable classes at most half of it", v.boolean(),
    )
    concurrency_min_limit: int = option(
        2, "the adaptive concurrency limit's floor (requests in flight it always allows)", v.integer(ge=1, le=100_000)
    )
    concurrency_max_limit: int = option(
        200, "the adaptive concurrency limit's ceiling", v.integer(ge=1, le=100_000)
    )
    enforce: bool = option(
        True, "False: decide and count every shed, but serve the request (shadow mode)", v.boolean()
    )

    @property
    def reads_queue(self) -> bool:
        """Whether the request-start stamp feeds the load level (see ``queue_signal``)."""
        return self.queue_signal if self.queue_signal is not None else bool(self.trusted_proxies)

    def _check_together(self) -> None:
        if self.concurrency_max_limit < self.concurrency_min_limit:
            raise ConfigError(
                "concurrency_max_limit",
                self.concurrency_max_limit,
                f"must be >= concurrency_min_limit={self.concurrency_min_limit}",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertConfig(_Validated):
    """When :class:`~resilience_mw.AlertRules` raise an alert."""

    failover_threshold: int = option(5, "failovers within failover_window that raise an alert", v.integer(ge=1, le=1_000_000))
    failover_window: float = option(60.0, "seconds over which failovers are counted", v.seconds())
    level_threshold: DegradationLevel = option(
        DegradationLevel.Level2, "a level at or above this raises an alert", level_check()
    )
    min_interval: float = option(300.0, "seconds between two alerts of one kind", v.seconds(zero=True))
    failovers: bool = option(True, "watch failovers at all (False for apps without upstream nodes)", v.boolean())



def _node(name: str, value: Any) -> ServiceNode:
    if isinstance(value, ServiceNode):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(
            name, value, "must be a ServiceNode or a mapping with id and endpoint",
            hint='e.g. {"id": "a", "endpoint": "http://10.0.0.1:8080"}' if isinstance(value, str) else None,
        )
    known = [f.name for f in fields(ServiceNode)]
    v.reject_unknown_keys(name, value, known)
    for required in ("id", "endpoint"):
        if required not in value:
            raise ConfigError(f"{name}.{required}", value, "is required", hint=f"a node needs {required!r}")
    try:
        return ServiceNode(**value)
    except ConfigError as exc:
        raise exc.renamed(f"{name}.{exc.field}") from None


def nodes_check() -> v.Check:
    """A non-empty list of :class:`ServiceNode` (or mappings of their fields), unique ids."""

    def check(name: str, value: Any) -> tuple[ServiceNode, ...]:
        nodes: tuple[ServiceNode, ...] = v.list_of(v.Check("a node", _node), "nodes")(name, value)
        if not nodes:
            raise ConfigError(name, value, "must hold at least one node")
        ids = [n.id for n in nodes]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ConfigError(name, dupes, "node ids must be unique")
        return nodes

    return v.Check("a list of ServiceNode or {id, endpoint, priority, weight} mappings", check)
