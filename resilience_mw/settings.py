"""The Flask extension's settings: every ``RESILIENCE_*`` key, typed and validated.

:data:`SETTINGS` lists each key with its default and meaning (the option reference
is generated from it). :meth:`ResilienceSettings.from_mapping` turns the resolved
keys into typed config objects, and every error names the key as the user wrote it:
``RESILIENCE_NODES[1].endpoint``, ``RESILIENCE_DEGRADATION.cooldown_seconds``, or the
keyword (``shed_level``) when it came from ``Resilience(app, shed_level=...)``.
Nothing here imports Flask.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar
from urllib.parse import urlsplit

from . import _validate as v
from ._redact import MASK
from .config import (
    AdapterConfig,
    AlertConfig,
    DegradationConfig,
    HealthCheckConfig,
    MiddlewareConfig,
    PoolConfig,
    StateConfig,
    nodes_check,
)
from .exceptions import ConfigError, ConfigWarning
from .model import Sample, ServiceNode

__all__ = [
    "OTLP_SETTINGS",
    "PREFIX",
    "RENAMED",
    "SETTINGS",
    "ConfigWarning",
    "OTLPSettings",
    "ResilienceSettings",
    "Setting",
    "option_names",
    "renamed",
    "resolve",
    "warn_unknown_keys",
]

PREFIX = "RESILIENCE_"

C = TypeVar("C", DegradationConfig, PoolConfig, HealthCheckConfig, AdapterConfig, MiddlewareConfig, AlertConfig, StateConfig)


@dataclass(frozen=True, slots=True)
class Setting:
    """One ``RESILIENCE_*`` key: its default and what it does."""

    key: str
    default: Any
    doc: str


_HEALTH = {f.name: f for f in fields(HealthCheckConfig)}


def _health_key(field: str) -> str:
    """The flat Flask key of a HealthCheckConfig field (``check_interval`` ->
    ``RESILIENCE_HEALTH_CHECK_INTERVAL``)."""
    return "RESILIENCE_HEALTH_CHECK_" + field.removeprefix("check_").upper()
_MIDDLEWARE = {f.name: f for f in fields(MiddlewareConfig)}
#: middleware fields with a flat key of the same name (RESILIENCE_MAX_QUEUE_TIME, ...)
_ADMISSION = (
    "queue_signal",
    "queue_header",
    "max_queue_time",
    "deadline_header",
    "criticality_header",
    "criticality_routes",
    "criticality_shedding",
    "shed_table",
    "queue_tolerance",
    "user_key",
    "trusted_proxies",
    "user_key_secret",
    "concurrency_limit",
    "concurrency_min_limit",
    "concurrency_max_limit",
    "enforce",
)
_STATE = {f.name: f for f in fields(StateConfig)}
_STATE_KEYS = {f"RESILIENCE_STATE_{name.upper()}": name for name in _STATE}

# ---------------------------------------------------------------- the durable OTLP export
#: the OTLP export's keys: default and meaning (each may also come from the environment)
_OTLP_KEYS: dict[str, tuple[Any, str]] = {
    "RESILIENCE_OTLP_ENDPOINTS": (
        (), "OTLP/HTTP collectors, in order of preference: base URLs (http://otel-a:4318) or node mappings; "
            "set: spans, logs and metrics go through a durable queue (runtime.otlp); empty: off"),
    "RESILIENCE_OTLP_QUEUE": ("memory", "where batches wait: 'memory' (lost when the process ends) or 'disk'"),
    "RESILIENCE_OTLP_QUEUE_PATH": (None, "the disk queue's SQLite file, one per host, shared by its workers"),
    "RESILIENCE_OTLP_MAX_BYTES": (64 << 20, "most bytes of batches queued (per process in memory, per file on disk)"),
    "RESILIENCE_OTLP_MAX_AGE": (3600.0, "seconds after which a queued batch is dropped (expired)"),
    "RESILIENCE_OTLP_WHEN_FULL": ("drop_newest", "a full queue: 'drop_newest', 'drop_oldest' or 'block'"),
    "RESILIENCE_OTLP_BLOCK_TIMEOUT": (0.5, "with 'block', the most seconds an export waits for room"),
    "RESILIENCE_OTLP_HEADERS": ({}, "headers sent with every post ({'Authorization': ...}; 'k=v,k2=v2' in the environment)"),
    "RESILIENCE_OTLP_TIMEOUT": (10.0, "seconds a post may take, failovers included (the adapter's deadline)"),
    "RESILIENCE_OTLP_QUEUE_SIGNAL": (False, "count the queue's fill ratio as memory use in the degradation levels"),
}
#: the keys the environment may set (``RESILIENCE_OTLP_ENDPOINTS=http://a:4318,http://b:4318``)
OTLP_SETTINGS = tuple(_OTLP_KEYS)


@dataclass(frozen=True, slots=True, kw_only=True)
class OTLPSettings:
    """The durable OTLP export's settings (the ``RESILIENCE_OTLP_*`` keys)."""

    #: the collectors, first preferred
    endpoints: tuple[ServiceNode, ...]
    queue: str = "memory"
    queue_path: str | None = None
    max_bytes: int = 64 << 20
    max_age: float = 3600.0
    when_full: str = "drop_newest"
    block_timeout: float = 0.5
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    timeout: float = 10.0
    queue_signal: bool = False


def _from_environment(key: str, text: str) -> Any:
    """An OTLP setting's value from its environment variable's text."""
    default = _OTLP_KEYS[key][0]
    if isinstance(default, tuple):
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(default, dict):
        pairs = [part.partition("=") for part in text.split(",") if part.strip()]
        return {k.strip(): value.strip() for k, _, value in pairs}
    if isinstance(default, bool):
        return {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}.get(text.lower(), text)
    if isinstance(default, (int, float)):
        try:
            return int(text) if isinstance(default, int) else float(text)
        except ValueError:
            return text  # the check names the variable and its text
    return text or None


def _collector(name: str, value: Any, index: int) -> Any:
    if not isinstance(value, str):
        return value  # a ServiceNode or a mapping: the node check takes it
    if not value.startswith(("http://", "https://")):
        raise ConfigError(name, value, "must be an http:// or https:// URL", hint="e.g. http://otel-collector:4318")
    if urlsplit(value).path not in ("", "/"):
        raise ConfigError(name, value, "must be the collector's base URL: /v1/traces, /v1/logs, /v1/metrics are added")
    return {"id": f"collector-{index}", "endpoint": value.rstrip("/"), "priority": 100 - index}


def _otlp(get: Callable[[str], Any], called: Mapping[str, str]) -> OTLPSettings | None:
    """The OTLP settings (every key checked, set or not), or ``None`` with no endpoints
    (the export is off)."""
    name = called["RESILIENCE_OTLP_ENDPOINTS"]
    given = get("RESILIENCE_OTLP_ENDPOINTS")
    if isinstance(given, str):
        raise ConfigError(name, given, "must be a list of collector URLs", hint=f"write [{given!r}]")
    if not isinstance(given, (list, tuple)):
        raise ConfigError(name, given, "must be a list of collector URLs or node mappings")
    nodes: tuple[ServiceNode, ...] = ()
    if given:
        nodes = nodes_check()(name, [_collector(f"{name}[{i}]", e, i) for i, e in enumerate(given)])

    def check(key: str, rule: v.Check) -> Any:
        return rule(called[key], get(key))

    queue = check("RESILIENCE_OTLP_QUEUE", v.one_of(("memory", "disk")))
    path = check("RESILIENCE_OTLP_QUEUE_PATH", v.optional(v.text()))
    headers = get("RESILIENCE_OTLP_HEADERS")
    if not isinstance(headers, Mapping) or not all(isinstance(k, str) and isinstance(x, str) for k, x in headers.items()):
        raise ConfigError(called["RESILIENCE_OTLP_HEADERS"], headers, "must be a mapping of header names to text",
                          secret=True)
    settings = OTLPSettings(
        endpoints=nodes,
        queue=queue,
        queue_path=path,
        max_bytes=check("RESILIENCE_OTLP_MAX_BYTES", v.integer(ge=1024, le=1 << 40)),
        max_age=check("RESILIENCE_OTLP_MAX_AGE", v.seconds(minimum=1, maximum=30 * 86_400)),
        when_full=check("RESILIENCE_OTLP_WHEN_FULL", v.one_of(("drop_newest", "drop_oldest", "block"))),
        block_timeout=check("RESILIENCE_OTLP_BLOCK_TIMEOUT", v.seconds(minimum=0, maximum=60, zero=True)),
        headers=dict(headers),
        timeout=check("RESILIENCE_OTLP_TIMEOUT", v.seconds(minimum=0.01, maximum=600)),
        queue_signal=check("RESILIENCE_OTLP_QUEUE_SIGNAL", v.boolean()),
    )
    if not nodes:
        return None
    if queue == "disk" and path is None:
        raise ConfigError(called["RESILIENCE_OTLP_QUEUE_PATH"], path, "is required with the disk queue",
                          hint="e.g. /var/run/myapp/otlp.db (one file per host)")
    return settings


#: every key the extension reads, in the order the reference lists them
SETTINGS: tuple[Setting, ...] = (
    Setting("RESILIENCE_DEGRADATION", None, "a DegradationConfig, or a mapping of its fields"),
    Setting(
        "RESILIENCE_SAMPLE_INTERVAL", 1.0,
        "seconds between samples of CPU, memory, queueing delay and error rate (was RESILIENCE_CHECK_INTERVAL)",
    ),
    Setting("RESILIENCE_SAMPLER", None, "callable returning a Sample(cpu, memory); None: psutil, by RESILIENCE_RESOURCE_SCOPE"),
    Setting(
        "RESILIENCE_RESOURCE_SCOPE", "service",
        "whose CPU and memory the levels read: 'service' (this service's processes over the CPUs and memory it "
        "may use), 'container' (the cgroup's, else the host's) or 'host' (every program on the machine)",
    ),
    Setting("RESILIENCE_START", "lazy", "start workers on the first request ('lazy'), in init_app ('eager') or never ('off')"),
    Setting("RESILIENCE_SHED_LEVEL", "Emergency", _MIDDLEWARE["shed_level"].metadata["doc"]),
    Setting("RESILIENCE_CORE_PATHS", (), _MIDDLEWARE["core_paths"].metadata["doc"]),
    Setting("RESILIENCE_EXEMPT_PATHS", ("/metrics",), "exact paths neither counted nor shed (the health endpoints are added)"),
    Setting("RESILIENCE_REROUTES", {}, '{"/search": ["/search/lite", "Level2"]}: serve a lighter path from a level on'),
    Setting("RESILIENCE_RETRY_AFTER", 30, _MIDDLEWARE["retry_after"].metadata["doc"]),
    *(
        Setting(f"RESILIENCE_{name.upper()}", _MIDDLEWARE[name].default if name != "criticality_routes" else {},
                _MIDDLEWARE[name].metadata["doc"])
        for name in _ADMISSION
    ),
    Setting("RESILIENCE_NODES", (), "upstream nodes: ServiceNode objects or {id, endpoint, priority, weight} mappings"),
    Setting("RESILIENCE_STRATEGY", "Priority", "FailoverStrategy member or name"),
    Setting("RESILIENCE_FAILOVER_OPTIONS", {}, "a mapping of PoolConfig fields: ejection, panic, latency (strategy has its own key)"),
    Setting("RESILIENCE_ADAPTER", {}, "a mapping of AdapterConfig fields for the app's FailoverAdapter (state.adapter)"),
    Setting("RESILIENCE_HEALTH_CHECK", True, "actively check the configured nodes"),
    *(
        Setting(
            _health_key(name),
            f.default,
            f.metadata["doc"],
        )
        for name, f in _HEALTH.items()
    ),
    *(Setting(key, _STATE[name].default, _STATE[name].metadata["doc"]) for key, name in _STATE_KEYS.items()),
    Setting("RESILIENCE_LIVENESS_PATH", "/livez", "liveness endpoint (200 while the process serves); empty: off"),
    Setting("RESILIENCE_READINESS_PATH", "/readyz", "readiness endpoint (application/health+json); empty: off"),
    Setting("RESILIENCE_ADMIN_PATH", "/resilience/level", "admin endpoint: GET figures, PUT a level, DELETE the override"),
    Setting("RESILIENCE_ADMIN_TOKEN", None, "bearer token the admin endpoint requires; without one the endpoint does not exist"),
    Setting("RESILIENCE_ALERTS", True, "raise alerts for this app: True, False, or a mapping of AlertConfig fields"),
    Setting("RESILIENCE_METRICS", (), "metrics exporters: 'prometheus', 'otel' (a list; the extras of those names)"),
    Setting("RESILIENCE_METRICS_PATH", None, "serve Prometheus metrics at this path (multiprocess-aware); unset: off"),
    Setting("RESILIENCE_METRICS_REGISTRY", None, "a prometheus_client CollectorRegistry the app already serves"),
    *(Setting(key, default, doc) for key, (default, doc) in {**_OTLP_KEYS}.items()),
)

#: key -> default
DEFAULTS: Mapping[str, Any] = {s.key: s.default for s in SETTINGS}

#: old key -> the key it was renamed to (the old one still works, with a ConfigWarning)
RENAMED: Mapping[str, str] = {
    # it never was the health checks' interval (RESILIENCE_HEALTH_CHECK_INTERVAL is)
    "RESILIENCE_CHECK_INTERVAL": "RESILIENCE_SAMPLE_INTERVAL",
}


def renamed(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``values`` with each renamed key under its new name (the new name wins when both
    are given), warning (:class:`ConfigWarning`) for each old one; and new key -> the old
    name the user wrote, for errors to name it."""
    out = dict(values)
    written: dict[str, str] = {}
    for old, new in RENAMED.items():
        if old in out:
            warnings.warn(
                f"{old} is now {new}; the old name still works until 1.0", ConfigWarning, stacklevel=3
            )
            value = out.pop(old)
            if new not in out:
                out[new] = value
                written[new] = old
    return out, written

_HEALTH_KEYS = {_health_key(n): n for n in _HEALTH}
_MIDDLEWARE_KEYS = {
    "RESILIENCE_SHED_LEVEL": "shed_level",
    "RESILIENCE_CORE_PATHS": "core_paths",
    "RESILIENCE_EXEMPT_PATHS": "exempt_paths",
    "RESILIENCE_REROUTES": "reroutes",
    "RESILIENCE_RETRY_AFTER": "retry_after",
    **{f"RESILIENCE_{name.upper()}": name for name in _ADMISSION},
}


def warn_unknown_keys(keys: Iterable[str]) -> list[str]:
    """Warn (:class:`ConfigWarning`) about each ``RESILIENCE_*`` key that is not a
    setting, naming the closest one; returns the unknown keys."""
    unknown = [k for k in keys if k.startswith(PREFIX) and k not in DEFAULTS and k not in RENAMED]
    for key in unknown:
        near = v.closest(key, DEFAULTS)
        warnings.warn(
            f"{key} is not a resilience_mw setting and is ignored" + (f"; did you mean {near}?" if near else ""),
            ConfigWarning,
            stacklevel=3,
        )
    return unknown


@dataclass(frozen=True, slots=True, kw_only=True)
class ResilienceSettings:
    """The typed settings of one app, built by :meth:`from_mapping`."""

    degradation: DegradationConfig
    #: seconds between samples of the degradation manager
    sample_interval: float
    sampler: Callable[[], Sample] | None
    #: whose CPU and memory the default sampler reads (see :class:`~resilience_mw.degradation.load.SystemSampler`)
    resource_scope: str
    start: str
    middleware: MiddlewareConfig
    nodes: tuple[ServiceNode, ...]
    pool: PoolConfig
    adapter: AdapterConfig
    #: ``None`` when health checks are off
    health_check: HealthCheckConfig | None
    liveness_path: str | None
    readiness_path: str | None
    admin_path: str | None
    admin_token: str | None = dataclasses.field(repr=False)
    #: ``None`` when alerts are off
    alerts: AlertConfig | None
    #: where the workers share state (``url`` ``None``: this process alone)
    state: StateConfig = dataclasses.field(default_factory=StateConfig)
    #: metrics exporters in use (``"prometheus"``, ``"otel"``)
    metrics: tuple[str, ...] = ()
    metrics_path: str | None = None
    metrics_registry: Any = None
    #: the durable OTLP export (``None``: off)
    otlp: OTLPSettings | None = None

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={MASK if f.name == 'admin_token' and self.admin_token else getattr(self, f.name)!r}"
            for f in fields(self)
        )
        return f"ResilienceSettings({shown})"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], names: Mapping[str, str] | None = None) -> ResilienceSettings:
        """Settings from resolved ``RESILIENCE_*`` values (missing keys take defaults).

        :param names: what the user calls each key, where it is not the key itself
            (the keyword of ``Resilience(app, shed_level=...)``); errors use it.
        """
        get = {**DEFAULTS, **values}.__getitem__
        called = {key: key for key in DEFAULTS} | dict(names or {})

        def check(key: str, rule: v.Check) -> Any:
            return rule(called[key], get(key))

        token = v.optional(v.text(secret=True))(called["RESILIENCE_ADMIN_TOKEN"], get("RESILIENCE_ADMIN_TOKEN"))
        if token is not None and token != token.strip():
            raise ConfigError(called["RESILIENCE_ADMIN_TOKEN"], token, "must not start or end with whitespace", secret=True)
        pool_name = called["RESILIENCE_FAILOVER_OPTIONS"]
        pool_options = _mapping(pool_name, get("RESILIENCE_FAILOVER_OPTIONS"))
        if "strategy" in pool_options:
            raise ConfigError(
                f"{pool_name}.strategy", pool_options["strategy"], "has its own key", hint="set RESILIENCE_STRATEGY"
            )
        v.reject_unknown_keys(pool_name, pool_options, [f.name for f in fields(PoolConfig)])
        strategy_name = called["RESILIENCE_STRATEGY"]
        pool = _grouped(
            PoolConfig,
            {**pool_options, "strategy": get("RESILIENCE_STRATEGY")},
            lambda f: strategy_name if f == "strategy" else f"{pool_name}.{f}",
        )
        health_on = check("RESILIENCE_HEALTH_CHECK", v.boolean())
        health = _grouped(
            HealthCheckConfig,
            {field: get(key) for key, field in _HEALTH_KEYS.items()},
            {field: called[key] for key, field in _HEALTH_KEYS.items()}.__getitem__,
        )
        endpoints = {
            key: check(key, v.Check("a path or empty", _optional_path))
            for key in ("RESILIENCE_LIVENESS_PATH", "RESILIENCE_READINESS_PATH", "RESILIENCE_ADMIN_PATH")
        }
        middleware_values = {field: get(key) for key, field in _MIDDLEWARE_KEYS.items()}
        exempt = v.paths()(called["RESILIENCE_EXEMPT_PATHS"], middleware_values["exempt_paths"])
        middleware_values["exempt_paths"] = tuple(
            dict.fromkeys([*MiddlewareConfig().exempt_paths, *exempt, *(p for p in endpoints.values() if p)])
        )
        middleware = _grouped(
            MiddlewareConfig,
            middleware_values,
            {field: called[key] for key, field in _MIDDLEWARE_KEYS.items()}.__getitem__,
        )
        metrics_path = check("RESILIENCE_METRICS_PATH", v.Check("a path or empty", _optional_path))
        metrics_registry = get("RESILIENCE_METRICS_REGISTRY")
        if metrics_registry is not None and not callable(getattr(metrics_registry, "register", None)):
            raise ConfigError(called["RESILIENCE_METRICS_REGISTRY"], metrics_registry, "must be a CollectorRegistry")
        alerts_value = get("RESILIENCE_ALERTS")
        alerts = None
        if alerts_value is not False:
            alerts = _sub(AlertConfig, called["RESILIENCE_ALERTS"], {} if alerts_value is True else alerts_value)
        return cls(
            degradation=_sub(DegradationConfig, called["RESILIENCE_DEGRADATION"], get("RESILIENCE_DEGRADATION")),
            sample_interval=check("RESILIENCE_SAMPLE_INTERVAL", v.seconds(minimum=0.01, maximum=3600)),
            sampler=check("RESILIENCE_SAMPLER", v.optional(v.function())),
            resource_scope=check("RESILIENCE_RESOURCE_SCOPE", v.one_of(("service", "container", "host"))),
            start=check("RESILIENCE_START", v.one_of(("lazy", "eager", "off"))),
            middleware=middleware,
            nodes=_nodes(called["RESILIENCE_NODES"], get("RESILIENCE_NODES")),
            pool=pool,
            adapter=_sub(AdapterConfig, called["RESILIENCE_ADAPTER"], get("RESILIENCE_ADAPTER")),
            health_check=health if health_on else None,
            liveness_path=endpoints["RESILIENCE_LIVENESS_PATH"],
            readiness_path=endpoints["RESILIENCE_READINESS_PATH"],
            admin_path=endpoints["RESILIENCE_ADMIN_PATH"],
            admin_token=token,
            alerts=alerts,
            metrics=_metrics(called["RESILIENCE_METRICS"], get("RESILIENCE_METRICS"), metrics_path, metrics_registry),
            metrics_path=metrics_path,
            metrics_registry=metrics_registry,
            otlp=_otlp(get, called),
            state=_grouped(
                StateConfig,
                {field: get(key) for key, field in _STATE_KEYS.items()},
                {field: called[key] for key, field in _STATE_KEYS.items()}.__getitem__,
            ),
        )


def _metrics(name: str, value: Any, path: str | None, registry: Any) -> tuple[str, ...]:
    """The exporters: those named, plus Prometheus when a path or a registry is set."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(name, value, "must be a list of exporters: 'prometheus', 'otel'",
                          hint="write ['prometheus'], not 'prometheus'" if isinstance(value, str) else None)
    chosen = [v.one_of(("prometheus", "otel"))(f"{name}[{i}]", item) for i, item in enumerate(value)]
    if (path or registry is not None) and "prometheus" not in chosen:
        chosen.append("prometheus")
    return tuple(dict.fromkeys(chosen))


def _optional_path(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    clean: str = v.path()(name, value)
    return clean


def _nodes(name: str, value: Any) -> tuple[ServiceNode, ...]:
    if isinstance(value, (list, tuple)) and not value:
        return ()  # no upstream nodes: the app uses degradation only
    nodes: tuple[ServiceNode, ...] = nodes_check()(name, value)
    return nodes


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        hint = "a string was given where a mapping of settings is expected" if isinstance(value, str) else None
        raise ConfigError(name, value, "must be a mapping of setting names to values", hint=hint)
    return value


def _sub(cls: type[C], name: str, value: Any) -> C:
    """A config from a config object, a mapping of its fields, or ``None`` (defaults)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    values = _mapping(name, value)
    v.reject_unknown_keys(name, values, [f.name for f in fields(cls)])
    return _grouped(cls, values, lambda f: f"{name}.{f}")


_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(.*)$", re.S)


def _grouped(cls: type[C], values: Mapping[str, Any], name_of: Callable[[str], str]) -> C:
    """``cls(**values)`` (keys already checked), with every error renamed from the field
    to the user's name for it (``core_paths[0]`` -> ``RESILIENCE_CORE_PATHS[0]``)."""
    known = [f.name for f in fields(cls)]
    try:
        return cls(**values)
    except ConfigError as exc:
        m = _FIELD.match(exc.field)
        if m is None or m[1] not in known:
            raise
        raise exc.renamed(name_of(m[1]) + m[2]) from None


def resolve(values: Mapping[str, Any], options: Mapping[str, Any]) -> ResilienceSettings:
    """Typed settings from ``RESILIENCE_*`` ``values`` (a Flask config, a dict) and keyword
    ``options`` (``shed_level="Level3"``; they win), renamed keys read under their new
    names and missing ones defaulted (the ``RESILIENCE_OTLP_*`` ones from the environment
    first, when set there); every error names the setting as it was written."""
    given, given_old = renamed({k: v for k, v in values.items() if k.startswith(PREFIX)})
    for key in OTLP_SETTINGS:  # the environment a platform team sets, below the app's own settings
        if key not in given and os.environ.get(key) is not None:
            given[key] = _from_environment(key, os.environ[key])
    keyword, keyword_old = renamed({f"{PREFIX}{k.upper()}": value for k, value in options.items()})
    merged = {key: keyword.get(key, given.get(key, copy.copy(default))) for key, default in DEFAULTS.items()}
    names = given_old | {key: key.removeprefix(PREFIX).lower() for key in keyword}
    names |= {new: old.removeprefix(PREFIX).lower() for new, old in keyword_old.items()}
    return ResilienceSettings.from_mapping(merged, names)


def option_names() -> list[str]:
    """The keyword names of every setting (``RESILIENCE_SHED_LEVEL`` -> ``shed_level``),
    renamed ones' old names included."""
    return [k.removeprefix(PREFIX).lower() for k in (*DEFAULTS, *RENAMED)]
