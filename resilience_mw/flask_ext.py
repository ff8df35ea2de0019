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
``"off"``. They hold the app's state only weakly: an app that is dropped takes its
threads with it. Interpreter exit tells them to stop and does not wait for them.

Endpoints (each path configurable; an empty value turns it off):

* ``RESILIENCE_LIVENESS_PATH`` (``/livez``): 200 while the process serves, whatever the level.
* ``RESILIENCE_READINESS_PATH`` (``/readyz``): ``application/health+json`` with status
  ``pass`` (Normal), ``warn`` (degraded or a node down) or ``fail`` (at the shedding
  level: 503, so a load balancer routes away); the level, the sampled figures and each
  node's health, with credentials redacted.
* ``RESILIENCE_METRICS_PATH`` (unset: off): Prometheus metrics; under gunicorn with
  ``PROMETHEUS_MULTIPROC_DIR`` set, every worker's, summed (see :mod:`resilience_mw.metrics`).
* ``RESILIENCE_ADMIN_PATH`` (``/resilience/level``): registered only when
  ``RESILIENCE_ADMIN_TOKEN`` is set, and then requires ``Authorization: Bearer <token>``.
  ``GET`` shows the figures, ``PUT``/``POST`` ``{"level": "Level3"}`` forces a level,
  ``DELETE`` clears the override.
"""

from __future__ import annotations

import copy
import dataclasses
import hmac
import logging
import os
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Flask, Response, current_app, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from . import _validate as v
from ._redact import describe_error
from .adapter import FailoverAdapter
from .admission.rules import Criticality
from .degradation import counting as _outcomes
from .degradation.load import SystemSampler
from .degradation.manager import AutoDegradationManager
from .exceptions import ConfigError
from .failover.health import HealthChecker
from .failover.loop import FailoverManager
from .fleet.store import StoreError
from .fleet.stores import open_store
from .fleet.sync import StateSync
from .model import parse_level
from .settings import DEFAULTS, PREFIX, ResilienceSettings, warn_unknown_keys
from .telemetry.alerts import AlertRules
from .telemetry.metrics import Metrics, prometheus_exposition, register
from .telemetry.readiness import readiness_document
from .wsgi import ResilienceMiddleware

__all__ = ["ConfigVars", "Resilience", "ResilienceState"]

log = logging.getLogger(__name__)

EXTENSION_KEY = "resilience"


class ConfigVars:
    """Every ``RESILIENCE_*`` key with its default (keyword options use the lower-case
    name without the prefix, e.g. ``Resilience(app, shed_level="Level3")``); see
    :data:`resilience_mw.settings.SETTINGS` for what each does."""

    DEFAULTS: Mapping[str, Any] = DEFAULTS


@dataclasses.dataclass(eq=False, repr=False)
class ResilienceState:
    """What one app's extension owns; found at ``app.extensions["resilience"]``."""

    #: the app's typed settings (``repr`` masks the admin token)
    settings: ResilienceSettings
    degradation: AutoDegradationManager
    #: the node pool, when nodes are configured
    failover: FailoverManager | None
    health_checker: HealthChecker | None
    alerts: AlertRules | None
    middleware: ResilienceMiddleware
    #: a FailoverAdapter over ``failover`` (``RESILIENCE_ADAPTER`` settings), when nodes
    #: are configured: ``session.mount("http://upstream/", state.adapter)``
    adapter: FailoverAdapter | None = None
    #: the exchange with the shared store (``RESILIENCE_STATE_URL``), when one is set
    sync: StateSync | None = None
    #: what the app's components decide, as metrics (``RESILIENCE_METRICS``)
    metrics: Metrics | None = None

    def start(self) -> None:
        """Start the sampler, the state sync and the health checker in this process
        (with a store, the checker runs in the one worker holding its lease); idempotent."""
        self.degradation.start(self.settings.check_interval)
        if self.sync is not None:
            self.sync.start()
        elif self.health_checker is not None and self.failover is not None:
            self.health_checker.start(self.failover)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the background threads."""
        self.degradation.stop(timeout)
        if self.sync is not None:
            self.sync.stop(timeout)
        if self.health_checker is not None:
            self.health_checker.stop(timeout)

    def readiness(self) -> tuple[dict[str, Any], int]:
        """The readiness document (IETF health+json draft) and its HTTP status."""
        return readiness_document(
            self.degradation,
            self.failover,
            self.middleware.shed_level,
            state=None if self.sync is None else self.sync.status(),
        )

    def __repr__(self) -> str:
        nodes = [n.id for n in self.failover.nodes] if self.failover is not None else []
        return (
            f"ResilienceState(level={self.degradation.level.name}, nodes={nodes}, "
            f"health_checks={self.health_checker is not None}, "
            f"admin={'on' if self.settings.admin_token else 'off'})"
        )


def _request_environ() -> Any:
    return request.environ if has_request_context() else None


# GracefulDegradation in a view counts its outcome through the request it serves.
_outcomes.environ_provider = _request_environ


class Resilience:
    """Flask extension; see the module docstring. Never keeps a reference to the app."""

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        v.reject_unknown_keys("Resilience", options, _option_names())
        self._options = {f"{PREFIX}{k.upper()}": v for k, v in options.items()}
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> ResilienceState:
        """Set up ``app``: state, middleware, endpoints, lazy or eager start.

        :raises ConfigError: a setting is invalid; the message names its key.
        """
        if EXTENSION_KEY in app.extensions:
            raise ConfigError("app", app.name, "already has a Resilience extension")
        warn_unknown_keys(app.config)
        for key, default in DEFAULTS.items():
            app.config.setdefault(key, copy.copy(default))  # no dict shared between apps
        values = {key: self._options.get(key, app.config[key]) for key in DEFAULTS}
        names = {key: key.removeprefix(PREFIX).lower() for key in self._options}
        settings = ResilienceSettings.from_mapping(values, names)
        state = _build_state(app, settings)
        app.extensions[EXTENSION_KEY] = state
        app.wsgi_app = state.middleware  # type: ignore[method-assign]
        app.register_blueprint(_blueprint(settings))
        if settings.start == "eager":
            state.start()
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
    return [k.removeprefix(PREFIX).lower() for k in DEFAULTS]


def _build_state(app: Flask, settings: ResilienceSettings) -> ResilienceState:
    sampler = settings.sampler if settings.sampler is not None else SystemSampler(scope=settings.resource_scope)
    degradation = AutoDegradationManager(settings.degradation, sampler=sampler)
    failover = checker = adapter = None
    if settings.nodes:
        failover = FailoverManager(settings.nodes, config=settings.pool)
        adapter = FailoverAdapter(failover, config=settings.adapter)
        if settings.health_check is not None:
            checker = HealthChecker(config=settings.health_check)
    inner = app.wsgi_app
    if getattr(inner, "__self__", None) is app:
        inner = _AppWsgi(app, inner.__func__)  # type: ignore[attr-defined]
    middleware = ResilienceMiddleware(
        inner,
        degradation,
        config=settings.middleware,
        # `state` is bound below (the hook runs on the first request, long after), and
        # held weakly: state -> middleware -> hook -> state would be a cycle.
        on_first_request=(lambda: _start(started)) if settings.start == "lazy" else None,
    )
    # (consulted only when a request may be shed: its class decides whether it can be)
    middleware.criticality_of = _view_criticality(weakref.ref(app))
    sync = None
    if settings.state.url is not None:
        store = open_store(settings.state.url, field="RESILIENCE_STATE_URL")
        sync = StateSync(
            store, degradation, failover, checker, config=settings.state, budget=adapter.budget if adapter else None
        )
    alerts = None
    if settings.alerts is not None:
        alerts = AlertRules(
            config=dataclasses.replace(settings.alerts, failovers=settings.alerts.failovers and failover is not None),
            failover_sender=failover,
            level_sender=degradation,
            once=None if sync is None else sync.once,
        )
    metrics = None
    if settings.metrics:
        metrics = Metrics(prometheus="prometheus" in settings.metrics, otel="otel" in settings.metrics)
        metrics.watch(degradation=degradation, pool=failover, middleware=middleware, checker=checker, sync=sync)
        if settings.metrics_registry is not None:
            register(settings.metrics_registry)
    state = ResilienceState(
        metrics=metrics,
        settings=settings,
        degradation=degradation,
        failover=failover,
        health_checker=checker,
        alerts=alerts,
        middleware=middleware,
        adapter=adapter,
        sync=sync,
    )
    started = weakref.WeakMethod(state.start)
    return state


def _view_criticality(app_ref: weakref.ref[Flask]) -> Callable[[Any], Criticality | None]:
    """The criticality a view declares with ``@criticality``, found by the app's routing
    (asked only when a class may be shed: the level is above Normal)."""

    def of(environ: Any) -> Criticality | None:
        app = app_ref()
        if app is None:
            return None
        try:
            endpoint, _ = app.url_map.bind_to_environ(environ).match()
        except HTTPException:
            return None
        found: Criticality | None = getattr(app.view_functions.get(endpoint), "__resilience_criticality__", None)
        return found

    return of


def _start(method: weakref.WeakMethod[Any]) -> None:
    start = method()
    if start is not None:
        start()


class _AppWsgi:
    """The app's own ``wsgi_app``, reached through a weak reference.

    The app holds its middleware (``app.wsgi_app``); a middleware holding the app's
    bound method would make a cycle, and CPython would free a dropped app (and end its
    threads) only when the cycle collector runs. Flask's suite checks that an app is
    freed at once.
    """

    __slots__ = ("_app", "_wsgi")

    def __init__(self, app: Flask, wsgi: Callable[..., Any]) -> None:
        self._app = weakref.ref(app)
        self._wsgi = wsgi

    def __call__(self, environ: Any, start_response: Any) -> Any:
        app = self._app()
        if app is None:
            raise RuntimeError("the Flask app behind this middleware has been garbage collected")
        return self._wsgi(app, environ, start_response)


def _blueprint(settings: ResilienceSettings) -> Blueprint:
    bp = Blueprint("resilience", __name__)
    if settings.liveness_path:
        bp.add_url_rule(settings.liveness_path, "liveness", _liveness)
    if settings.readiness_path:
        bp.add_url_rule(settings.readiness_path, "readiness", _readiness)
    if settings.metrics_path:
        bp.add_url_rule(settings.metrics_path, "metrics", _metrics)
    if settings.admin_path and settings.admin_token:
        bp.add_url_rule(settings.admin_path, "admin", _admin, methods=["GET", "PUT", "POST", "DELETE"])
    return bp


def _liveness() -> Response:
    return jsonify(status="pass")


def _metrics() -> Response:
    body, content_type = prometheus_exposition()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def _readiness() -> Response:
    doc, status = Resilience.state().readiness()
    resp = jsonify(doc)
    resp.status_code = status
    resp.mimetype = "application/health+json"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _admin() -> Response | tuple[Response, int]:
    state = Resilience.state()
    token = str(state.settings.admin_token)
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        resp = jsonify(error="a valid bearer token is required")
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Bearer realm="resilience"'
        return resp
    deg, sync = state.degradation, state.sync
    if request.method == "GET":
        doc = deg.figures()
        doc["scope"] = "process" if sync is None else sync.scope
        doc["nodes"] = [] if state.failover is None else state.failover.snapshot()
        if sync is not None:
            doc["state"] = sync.status()
        return jsonify(doc)
    level = ttl = None
    if request.method in ("PUT", "POST"):
        body = request.get_json(silent=True)
        level = body.get("level") if isinstance(body, dict) else None
        ttl = body.get("ttl") if isinstance(body, dict) else None
        try:
            if not isinstance(level, (str, int)):
                raise ConfigError("level", level, 'send JSON like {"level": "Level3", "ttl": 600}')
            level = parse_level(level).name
            ttl = v.optional(v.seconds(maximum=7 * 86_400))("ttl", ttl)
        except ConfigError as exc:
            return jsonify(error=str(exc)), 400
    return jsonify(_change_level(deg, sync, level, ttl))


def _change_level(
    deg: AutoDegradationManager, sync: StateSync | None, level: str | None, ttl: float | None
) -> dict[str, Any]:
    """Force ``level`` (``None``: clear) through the store when there is one, else in this
    process; what the admin endpoint answers."""
    scope, warning, applied_by = "process", None, None
    if sync is not None:
        try:
            override = sync.clear() if level is None else sync.force(level, ttl)
        except StoreError as exc:
            warning = f"the state store did not answer ({describe_error(exc)}): changed in this process only"
        else:
            scope = sync.scope
            # every worker applies it at its next sync
            applied_by = datetime.fromtimestamp(override.set_at + sync.config.sync_interval, timezone.utc).isoformat()
    if scope == "process":
        if level is None:
            deg.clear_override()
        else:
            deg.force_level(level)
    what = "cleared" if level is None else f"forced to {level}" + (f" for {ttl:g} s" if ttl else "")
    log.warning("degradation level %s through the admin endpoint (scope %s, pid %d)", what, scope, os.getpid())
    doc = deg.figures()
    doc.update(
        scope=scope,
        pid=os.getpid(),
        applies_within_s=0.0 if scope == "process" or sync is None else sync.config.sync_interval,
        applied_by=applied_by,
        ttl=ttl,
    )
    if warning:
        doc["warning"] = warning
    return doc
