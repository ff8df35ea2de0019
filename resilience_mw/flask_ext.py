"""The Flask extension: degradation, failover nodes, health endpoints, load shedding.

::

    from resilience_mw.flask_ext import Resilience

    resilience = Resilience()

    def create_app():
        app = Flask(__name__)
        app.config["RESILIENCE_CORE_PATHS"] = ["/api/checkout"]
        resilience.init_app(app)
        return app

Per-app state lives in ``app.extensions["resilience"]`` (a :class:`ResilienceState`):
its ``degradation`` manager, and ``failover`` / ``health_checker`` when nodes are
configured. Options resolve as keyword argument > ``app.config["RESILIENCE_*"]`` >
default; see :class:`ConfigVars` for every key and its default.

Background threads (the sampler and the health checker) start on the first request a
process serves (``RESILIENCE_START="lazy"``, the default; safe with gunicorn
``--preload``, whose master then holds no threads), or in ``init_app`` with
``"eager"`` (a worker started before a fork is restarted in the child), or never with
``"off"``. They stop at interpreter exit.

Endpoints (each path configurable; an empty value turns it off):

* ``RESILIENCE_LIVENESS_PATH`` (``/livez``): 200 while the process serves, whatever the level.
* ``RESILIENCE_READINESS_PATH`` (``/readyz``): ``application/health+json`` with status
  ``pass`` (Normal), ``warn`` (degraded or a node down) or ``fail`` (at the shedding
  level: 503, so a load balancer routes away); the level, the sampled figures and each
  node's health, with credentials redacted.
* ``RESILIENCE_ADMIN_PATH`` (``/resilience/level``): registered only when
  ``RESILIENCE_ADMIN_TOKEN`` is set, and then requires ``Authorization: Bearer <token>``.
  ``GET`` shows the figures, ``PUT``/``POST`` ``{"level": "Level3"}`` forces a level,
  ``DELETE`` clears the override.
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import hmac
import logging
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from .alerts import AlertRules
from .config import DegradationConfig
from .degradation import AutoDegradationManager
from .exceptions import ConfigError
from .failover import FailoverManager
from .health import HealthChecker
from .model import DegradationLevel, ServiceNode, parse_level
from .readiness import readiness_document
from .wsgi import DEFAULT_EXEMPT_PATHS, ResilienceMiddleware

__all__ = ["ConfigVars", "Resilience", "ResilienceState"]

log = logging.getLogger(__name__)

EXTENSION_KEY = "resilience"


class ConfigVars:
    """Every ``RESILIENCE_*`` key with its default (keyword options use the lower-case
    name without the prefix, e.g. ``Resilience(app, shed_level="Level3")``)."""

    DEFAULTS: Mapping[str, Any] = {
        #: a DegradationConfig, or a mapping of its fields
        "RESILIENCE_DEGRADATION": None,
        #: seconds between samples of CPU, memory and error rate
        "RESILIENCE_CHECK_INTERVAL": 1.0,
        #: callable returning a Sample(cpu, memory); None: psutil with cgroup-aware memory
        "RESILIENCE_SAMPLER": None,
        #: "lazy" (first request), "eager" (init_app) or "off"
        "RESILIENCE_START": "lazy",
        #: level name from which non-core requests are shed with 503 (None: never)
        "RESILIENCE_SHED_LEVEL": "Emergency",
        #: path prefixes always served
        "RESILIENCE_CORE_PATHS": (),
        #: exact paths neither counted nor shed (the endpoints below are added)
        "RESILIENCE_EXEMPT_PATHS": ("/metrics",),
        #: {path: [lighter_path, level_name]}
        "RESILIENCE_REROUTES": {},
        #: Retry-After seconds on shed responses
        "RESILIENCE_RETRY_AFTER": 30,
        #: upstream nodes: ServiceNode objects or {"id", "endpoint", "priority", "weight"} dicts
        "RESILIENCE_NODES": (),
        #: FailoverStrategy member name
        "RESILIENCE_STRATEGY": "Priority",
        #: extra keyword arguments for FailoverManager
        "RESILIENCE_FAILOVER_OPTIONS": {},
        #: actively check the nodes
        "RESILIENCE_HEALTH_CHECK": True,
        "RESILIENCE_HEALTH_CHECK_INTERVAL": 5.0,
        "RESILIENCE_HEALTH_CHECK_TIMEOUT": 2.0,
        "RESILIENCE_HEALTH_CHECK_PATH": "/health",
        "RESILIENCE_LIVENESS_PATH": "/livez",
        "RESILIENCE_READINESS_PATH": "/readyz",
        "RESILIENCE_ADMIN_PATH": "/resilience/level",
        #: without a token, the state-changing admin endpoint does not exist
        "RESILIENCE_ADMIN_TOKEN": None,
        #: subscribe AlertRules (failover rate, level >= Level2) for this app
        "RESILIENCE_ALERTS": True,
    }


@dataclasses.dataclass(eq=False)
class ResilienceState:
    """What one app's extension owns; found at ``app.extensions["resilience"]``."""

    config: Mapping[str, Any]
    degradation: AutoDegradationManager
    failover: FailoverManager | None
    health_checker: HealthChecker | None
    alerts: AlertRules | None
    middleware: ResilienceMiddleware

    def start(self) -> None:
        """Start the sampler (and the health checker) in this process; idempotent."""
        self.degradation.start(self.config["RESILIENCE_CHECK_INTERVAL"])
        if self.health_checker is not None and self.failover is not None:
            self.health_checker.start(self.failover.nodes, self.failover)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the background threads."""
        self.degradation.stop(timeout)
        if self.health_checker is not None:
            self.health_checker.stop(timeout)

    def readiness(self) -> tuple[dict[str, Any], int]:
        """The readiness document (IETF health+json draft) and its HTTP status."""
        return readiness_document(self.degradation, self.failover, self.middleware.shed_level)


_states: weakref.WeakSet[ResilienceState] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for state in list(_states):
        state.stop(timeout=1.0)


class Resilience:
    """Flask extension; see the module docstring. Never keeps a reference to the app."""

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        unknown = sorted(k for k in options if f"RESILIENCE_{k.upper()}" not in ConfigVars.DEFAULTS)
        if unknown:
            raise ConfigError("options", unknown, f"unknown option(s); known: {_option_names()}")
        self._options = {f"RESILIENCE_{k.upper()}": v for k, v in options.items()}
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> ResilienceState:
        """Set up ``app``: state, middleware, endpoints, lazy or eager start."""
        if EXTENSION_KEY in app.extensions:
            raise ConfigError("app", app.name, "already has a Resilience extension")
        for key, default in ConfigVars.DEFAULTS.items():
            app.config.setdefault(key, copy.copy(default))  # no dict shared between apps
        cfg = {key: self._options.get(key, app.config[key]) for key in ConfigVars.DEFAULTS}
        state = _build_state(app, cfg)
        app.extensions[EXTENSION_KEY] = state
        app.wsgi_app = state.middleware  # type: ignore[method-assign]
        app.register_blueprint(_blueprint(cfg))
        if cfg["RESILIENCE_START"] == "eager":
            state.start()
        _states.add(state)
        return state

    @staticmethod
    def state(app: Flask | None = None) -> ResilienceState:
        """The state of ``app`` (default: ``current_app``)."""
        target = app if app is not None else current_app
        try:
            state: ResilienceState = target.extensions[EXTENSION_KEY]
        except KeyError:
            raise RuntimeError("Resilience is not initialised on this app; call init_app(app)") from None
        return state


def _option_names() -> list[str]:
    return [k.removeprefix("RESILIENCE_").lower() for k in ConfigVars.DEFAULTS]


def _level(name: str, value: Any, allow_none: bool = False) -> DegradationLevel | None:
    return None if value is None and allow_none else parse_level(value, name)


def _nodes(value: Iterable[Any]) -> list[ServiceNode]:
    nodes = []
    for item in value:
        if isinstance(item, ServiceNode):
            nodes.append(item)
        elif isinstance(item, Mapping):
            nodes.append(ServiceNode(**item))
        else:
            raise ConfigError("RESILIENCE_NODES", item, "items must be ServiceNode or mappings")
    return nodes


def _build_state(app: Flask, cfg: dict[str, Any]) -> ResilienceState:
    start = cfg["RESILIENCE_START"]
    if start not in ("lazy", "eager", "off"):
        raise ConfigError("RESILIENCE_START", start, "must be 'lazy', 'eager' or 'off'")
    interval = cfg["RESILIENCE_CHECK_INTERVAL"]
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0.01 <= interval <= 3600:
        raise ConfigError(
            "RESILIENCE_CHECK_INTERVAL", interval, "must be a number of seconds in [0.01, 3600]"
        )
    deg_cfg = cfg["RESILIENCE_DEGRADATION"]
    if deg_cfg is None:
        deg_cfg = DegradationConfig()
    elif isinstance(deg_cfg, Mapping):
        try:
            deg_cfg = DegradationConfig(**deg_cfg)
        except TypeError as exc:
            raise ConfigError("RESILIENCE_DEGRADATION", dict(deg_cfg), str(exc)) from None
    sampler = cfg["RESILIENCE_SAMPLER"]
    if sampler is not None and not callable(sampler):
        raise ConfigError("RESILIENCE_SAMPLER", sampler, "must be a callable returning a Sample")
    degradation = AutoDegradationManager(deg_cfg, sampler=sampler)

    failover = checker = None
    nodes = _nodes(cfg["RESILIENCE_NODES"])
    if nodes:
        failover = FailoverManager(
            nodes, cfg["RESILIENCE_STRATEGY"], **dict(cfg["RESILIENCE_FAILOVER_OPTIONS"])
        )
        if cfg["RESILIENCE_HEALTH_CHECK"]:
            checker = HealthChecker(
                cfg["RESILIENCE_HEALTH_CHECK_INTERVAL"],
                cfg["RESILIENCE_HEALTH_CHECK_TIMEOUT"],
                cfg["RESILIENCE_HEALTH_CHECK_PATH"],
            )

    endpoints = [
        cfg[k] for k in ("RESILIENCE_LIVENESS_PATH", "RESILIENCE_READINESS_PATH", "RESILIENCE_ADMIN_PATH")
    ]
    reroutes = {
        src: (target[0], _level(f"RESILIENCE_REROUTES[{src!r}]", target[1]))
        for src, target in dict(cfg["RESILIENCE_REROUTES"]).items()
    }
    middleware = ResilienceMiddleware(
        app.wsgi_app,
        degradation,
        shed_level=_level("RESILIENCE_SHED_LEVEL", cfg["RESILIENCE_SHED_LEVEL"], allow_none=True),
        core_paths=tuple(cfg["RESILIENCE_CORE_PATHS"]),
        exempt_paths={*DEFAULT_EXEMPT_PATHS, *cfg["RESILIENCE_EXEMPT_PATHS"], *(p for p in endpoints if p)},
        reroutes=reroutes,  # type: ignore[arg-type]
        retry_after=cfg["RESILIENCE_RETRY_AFTER"],
        # `state` is bound below; the hook only runs on the first request, long after.
        on_first_request=(lambda: state.start()) if start == "lazy" else None,  # noqa: PLW0108 - late binding
    )
    alerts = (
        AlertRules(failover_sender=failover, level_sender=degradation, failovers=failover is not None)
        if cfg["RESILIENCE_ALERTS"]
        else None
    )
    state = ResilienceState(
        config=dict(cfg),
        degradation=degradation,
        failover=failover,
        health_checker=checker,
        alerts=alerts,
        middleware=middleware,
    )
    return state


def _blueprint(cfg: Mapping[str, Any]) -> Blueprint:
    bp = Blueprint("resilience", __name__)
    if cfg["RESILIENCE_LIVENESS_PATH"]:
        bp.add_url_rule(cfg["RESILIENCE_LIVENESS_PATH"], "liveness", _liveness)
    if cfg["RESILIENCE_READINESS_PATH"]:
        bp.add_url_rule(cfg["RESILIENCE_READINESS_PATH"], "readiness", _readiness)
    if cfg["RESILIENCE_ADMIN_PATH"] and cfg["RESILIENCE_ADMIN_TOKEN"]:
        bp.add_url_rule(
            cfg["RESILIENCE_ADMIN_PATH"], "admin", _admin, methods=["GET", "PUT", "POST", "DELETE"]
        )
    return bp


def _liveness() -> Response:
    return jsonify(status="pass")


def _readiness() -> Response:
    doc, status = Resilience.state().readiness()
    resp = jsonify(doc)
    resp.status_code = status
    resp.mimetype = "application/health+json"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _admin() -> Response | tuple[Response, int]:
    state = Resilience.state()
    token = str(state.config["RESILIENCE_ADMIN_TOKEN"])
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        resp = jsonify(error="a valid bearer token is required")
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Bearer realm="resilience"'
        return resp
    deg = state.degradation
    if request.method in ("PUT", "POST"):
        body = request.get_json(silent=True)
        level = body.get("level") if isinstance(body, dict) else None
        try:
            if not isinstance(level, (str, int)):
                raise ConfigError("level", level, 'send JSON like {"level": "Level3"}')
            deg.force_level(level)
        except ConfigError as exc:
            return jsonify(error=str(exc)), 400
        log.warning("degradation level forced to %s through the admin endpoint", deg.current_level().name)
    elif request.method == "DELETE":
        deg.clear_override()
        log.warning("degradation override cleared through the admin endpoint")
    return jsonify(deg.figures())
