"""The Flask extension: degradation, failover nodes, health endpoints, load shedding.

::

    from resilience_mw.flask_ext import Resilience

    resilience = Resilience()

    def create_app():
        app = Flask(__name__)
        app.config["RESILIENCE_CORE_PATHS"] = ["/api/checkout"]
        resilience.init_app(app)
        return app

Per-app state lives in ``app.extensions["resilience"]``: the app's
:class:`~resilience_mw.runtime.Runtime` (its ``degradation`` manager, and ``pool`` /
``health_checker`` / ``adapter`` when nodes are configured), which this extension
builds from the app's settings and serves through Flask. Options resolve as keyword
argument > ``app.config["RESILIENCE_*"]`` > default; see :class:`ConfigVars` for every
key and its default.

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
  ``PROMETHEUS_MULTIPROC_DIR`` set, every worker's, summed (see :mod:`resilience_mw.telemetry.metrics`).
* ``RESILIENCE_ADMIN_PATH`` (``/resilience/level``): registered only when
  ``RESILIENCE_ADMIN_TOKEN`` is set, and then requires ``Authorization: Bearer <token>``.
  ``GET`` shows the figures, ``PUT``/``POST`` ``{"level": "Level3", "ttl": 600}`` forces
  a level (for ``ttl`` seconds, if given), ``DELETE`` clears the override.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from . import _validate as v
from .degradation import counting as _outcomes
from .exceptions import ConfigError
from .model import Criticality
from .runtime import Runtime, service_name
from .settings import DEFAULTS, ResilienceSettings, option_names, resolve, warn_unknown_keys

__all__ = ["ConfigVars", "Resilience", "ResilienceState"]

EXTENSION_KEY = "resilience"

#: the former name of what an app's extension holds (a :class:`Runtime`)
ResilienceState = Runtime


class ConfigVars:
    """Every ``RESILIENCE_*`` key with its default (keyword options use the lower-case
    name without the prefix, e.g. ``Resilience(app, shed_level="Level3")``); see
    :data:`resilience_mw.settings.SETTINGS` for what each does."""

    DEFAULTS: Mapping[str, Any] = DEFAULTS


def _request_environ() -> Any:
    return request.environ if has_request_context() else None


# GracefulDegradation in a view counts its outcome through the request it serves.
_outcomes.environ_provider = _request_environ


class Resilience:
    """Flask extension; see the module docstring. Never keeps a reference to the app."""

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        v.reject_unknown_keys("Resilience", options, option_names())
        self._options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> Runtime:
        """Set up ``app``: its runtime, middleware, endpoints, lazy or eager start.

        :raises ConfigError: a setting is invalid; the message names its key.
        """
        if EXTENSION_KEY in app.extensions:
            raise ConfigError("app", app.name, "already has a Resilience extension")
        warn_unknown_keys(app.config)
        options = dict(self._options)
        if "state_service" not in options and app.config.get("RESILIENCE_STATE_SERVICE") is None:
            options["state_service"] = service_name(app.import_name)  # the app's name, in the store
        runtime = Runtime(resolve(app.config, options))
        for key, default in DEFAULTS.items():  # (so that the app's config shows them)
            app.config.setdefault(key, copy.copy(default))  # no dict shared between apps
        inner = app.wsgi_app
        if getattr(inner, "__self__", None) is app:
            inner = _AppWsgi(app, inner.__func__)  # type: ignore[attr-defined]
        runtime.wrap(inner, endpoints=False)  # (starts it at once with start="eager")
        middleware = runtime.middleware
        assert middleware is not None
        # (consulted only when a request may be shed: its class decides whether it can be)
        middleware.admission.criticality_of = _view_criticality(weakref.ref(app))
        app.extensions[EXTENSION_KEY] = runtime
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.register_blueprint(_blueprint(runtime.settings))
        return runtime

    @staticmethod
    def state(app: Flask | None = None) -> Runtime:
        """The runtime of ``app`` (default: ``current_app``)."""
        target = app if app is not None else current_app
        try:
            runtime: Runtime = target.extensions[EXTENSION_KEY]
        except KeyError:
            raise RuntimeError("Resilience is not initialised on this app; call init_app(app)") from None
        return runtime


def _view_criticality(app_ref: weakref.ref[Flask]) -> Callable[[Any], Criticality | None]:
    """The criticality a view declares with ``@criticality``, found by the app's routing
    (asked only when a class may be shed)."""

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
    from .telemetry.metrics import prometheus_exposition

    body, content_type = prometheus_exposition()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def _readiness() -> Response:
    doc, status = Resilience.state().readiness()
    resp = jsonify(doc)
    resp.status_code = status
    resp.mimetype = "application/health+json"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _admin() -> Response:
    status, doc = Resilience.state().admin(
        request.method, request.headers.get("Authorization", ""), request.get_json(silent=True)
    )
    resp = jsonify(doc)
    resp.status_code = status
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="resilience"'
    return resp
