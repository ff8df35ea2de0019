"""Runtime: everything the library runs for one service, assembled from its settings,
with no framework.

One object builds, from the ``RESILIENCE_*`` settings, the degradation manager, the node
pool with its health checker and ``requests`` adapter, the shared-state sync, the
metrics and the alerts; :meth:`Runtime.wrap` puts the middleware around a WSGI app and
serves the endpoints (``/livez``, ``/readyz``, the metrics and the admin endpoint) in
front of it. A plain WSGI app (gunicorn and any framework) gets everything the Flask
extension gives in a few lines::

    from resilience_mw.runtime import Runtime

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    runtime = Runtime(sample_interval=1.0, core_paths=["/api/pay"])
    application = runtime.wrap(app)  # gunicorn module:application

The keyword options are the settings' names without the prefix, in lower case
(``RESILIENCE_STATE_URL`` is ``state_url``), as for the Flask extension; or pass the
``RESILIENCE_*`` keys themselves in ``settings``. Background threads start on the first
request a process serves (``start="lazy"``, the default, safe with gunicorn
``--preload``), in :meth:`wrap` (``"eager"``), or when :meth:`start` is called.

With a shared store (``state_url``), the service is known there by its name,
``state_service``, by default the module that created the Runtime (the Flask extension
gives the app's import name); a Redis store keeps its keys under that name unless
``state_namespace`` (or ``?namespace=`` in the URL) says otherwise, so two services on
one Redis share nothing by default, and two that share a namespace are warned about
(:class:`~resilience_mw.fleet.sync.StateSync`).
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from types import FrameType
from typing import TYPE_CHECKING, Any

from . import _validate as v
from ._redact import describe_error, redact_store_url
from .degradation import AutoDegradationManager, SystemSampler
from .degradation.manager import FORCE_TTL
from .exceptions import ConfigError
from .model import parse_level
from .settings import ResilienceSettings, option_names, resolve
from .telemetry import AlertRules, readiness_document
from .wsgi import ResilienceMiddleware

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .adapter import FailoverAdapter
    from .failover import FailoverManager, HealthChecker
    from .fleet import StateSync
    from .model import Sample
    from .settings import OTLPSettings
    from .telemetry import Metrics
    from .telemetry.export import ExportQueue, OTLPExport

__all__ = ["Runtime", "service_name"]

log = logging.getLogger(__name__)


def service_name(module: str) -> str:
    """A service's default name in the state store, from the name of its module (a Flask
    app's import name, or the module that created the Runtime): ``__main__`` reads as the
    script's file name, and what a namespace may not hold becomes ``_``."""
    if module == "__main__":
        main = getattr(sys.modules.get("__main__"), "__file__", None)
        module = os.path.splitext(os.path.basename(main))[0] if main else module
    return re.sub(r"[^A-Za-z0-9._-]", "_", module)[:100] or "resilience"


def _creator_module() -> str:
    """The first module up the stack that is not this library's: who built the Runtime."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if name != "resilience_mw" and not name.startswith("resilience_mw."):
            return name
        frame = frame.f_back
    return "__main__"


class Runtime:
    """The library's parts for one service; see the module docstring.

    :param settings: ``RESILIENCE_*`` keys and their values (missing keys take their
        defaults), or typed :class:`~resilience_mw.settings.ResilienceSettings`.
    :param options: the same settings as keywords (``shed_level="Level3"``); they win
        over ``settings``.
    :raises ConfigError: a setting is invalid; the message names it as it was given.
    """

    def __init__(self, settings: ResilienceSettings | Mapping[str, Any] | None = None, **options: Any) -> None:
        #: what the user called each setting given as a keyword (errors name it so)
        self._names: dict[str, str] = {}
        if isinstance(settings, ResilienceSettings):
            if options:
                raise ConfigError("options", sorted(options), "give ResilienceSettings or options, not both")
            typed = settings
        else:
            v.reject_unknown_keys("Runtime", options, option_names())
            typed = resolve(settings or {}, options)
            if "state_url" in options:
                self._names["RESILIENCE_STATE_URL"] = "state_url"
        #: the typed settings in force (``repr`` masks the admin token)
        self.settings = typed
        sampler = typed.sampler if typed.sampler is not None else SystemSampler(scope=typed.resource_scope)
        otlp_queue = _otlp_queue(typed.otlp) if typed.otlp is not None else None
        if otlp_queue is not None and typed.otlp is not None and typed.otlp.queue_signal:
            sampler = _QueueFill(sampler, otlp_queue)
        #: the degradation manager
        self.degradation = AutoDegradationManager(typed.degradation, sampler=sampler)
        #: the node pool, its health checker and a ``requests`` adapter over it, when
        #: nodes are configured: ``session.mount("http://upstream/", runtime.adapter)``
        self.pool: FailoverManager | None = None
        self.health_checker: HealthChecker | None = None
        self.adapter: FailoverAdapter | None = None
        if typed.nodes:  # (requests and urllib3 load only for a service with upstream nodes)
            from .adapter import FailoverAdapter
            from .failover import FailoverManager, HealthChecker

            self.pool = FailoverManager(typed.nodes, config=typed.pool)
            self.adapter = FailoverAdapter(self.pool, config=typed.adapter, degradation=self.degradation)
            if typed.health_check is not None:
                self.health_checker = HealthChecker(config=typed.health_check)
        #: the exchange with the shared store (``state_url``), when one is set
        self.sync: StateSync | None = None
        if typed.state.url is not None:
            from .fleet import StateSync, open_store

            service = typed.state.service or service_name(_creator_module())
            store = open_store(
                typed.state.url,
                field=self._names.get("RESILIENCE_STATE_URL", "RESILIENCE_STATE_URL"),
                namespace=typed.state.namespace,
                default_namespace=service,  # one namespace per service unless told otherwise
            )
            self.sync = StateSync(
                store,
                self.degradation,
                self.pool,
                self.health_checker,
                config=typed.state,
                budget=self.adapter.budget if self.adapter is not None else None,
                service=service,
            )
        #: the alert rules, unless ``alerts`` is off
        self.alerts: AlertRules | None = None
        if typed.alerts is not None:
            self.alerts = AlertRules(
                config=dataclasses.replace(typed.alerts, failovers=typed.alerts.failovers and self.pool is not None),
                failover_sender=self.pool,
                level_sender=self.degradation,
                once=None if self.sync is None else self.sync.once,
            )
        #: the durable OTLP export (``otlp_endpoints``): give its SDK exporters to the
        #: providers (``DurableSpanExporter(runtime.otlp)``); ``None`` when not configured
        self.otlp: OTLPExport | None = None
        if typed.otlp is not None and otlp_queue is not None:
            self.otlp = _otlp_export(typed.otlp, otlp_queue, self.degradation)
        #: the metrics exporters, when ``metrics`` names any (they watch the middleware
        #: from :meth:`wrap` on)
        self.metrics: Metrics | None = None
        if typed.metrics:
            from .telemetry.metrics import Metrics, register

            self.metrics = Metrics(prometheus="prometheus" in typed.metrics, otel="otel" in typed.metrics)
            self.metrics.watch(degradation=self.degradation, pool=self.pool, checker=self.health_checker, sync=self.sync,
                               export=self.otlp)
            if typed.metrics_registry is not None:
                register(typed.metrics_registry)
        #: the middleware :meth:`wrap` made (``None`` before)
        self.middleware: ResilienceMiddleware | None = None

    @property
    def failover(self) -> FailoverManager | None:
        """The node pool (its former name; :attr:`pool`)."""
        return self.pool

    # ------------------------------------------------------------------ wiring

    def wrap(self, app: WSGIApplication, *, endpoints: bool = True) -> WSGIApplication:
        """Put the middleware around ``app`` and, with ``endpoints``, serve the liveness,
        readiness, metrics and admin endpoints in front of it (a framework serves them
        itself with ``endpoints=False``: the Flask extension does). Once per runtime.

        Returns the WSGI app to serve.
        """
        if self.middleware is not None:
            raise ConfigError("app", app, "this Runtime already wraps an app (one Runtime per app)")
        # The hook holds what it starts, not the runtime: the runtime holds the middleware,
        # and a cycle would keep a dropped app's threads alive until the cycle collector ran.
        start = functools.partial(_start, self.degradation, self.settings.sample_interval, self.sync,
                                  self.health_checker, self.pool, otlp=self.otlp)
        self.middleware = ResilienceMiddleware(
            app,
            self.degradation,
            config=self.settings.middleware,
            on_first_request=start if self.settings.start == "lazy" else None,
        )
        if self.metrics is not None:
            self.metrics.watch(middleware=self.middleware)
        if self.settings.start == "eager":
            self.start()
        return _Endpoints(self, self.middleware) if endpoints else self.middleware

    def start(self) -> None:
        """Start the sampler, the state sync and the health checker in this process
        (with a store, the checker runs in the one worker holding its lease); idempotent."""
        _start(self.degradation, self.settings.sample_interval, self.sync, self.health_checker, self.pool, otlp=self.otlp)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the background threads (the OTLP export's too: see
        :meth:`~resilience_mw.telemetry.export.OTLPExport.shutdown`)."""
        if self.otlp is not None:
            self.otlp.shutdown(timeout)
        self.degradation.stop(timeout)
        if self.sync is not None:
            self.sync.stop(timeout)
        if self.health_checker is not None:
            self.health_checker.stop(timeout)

    # ------------------------------------------------------------------ endpoints

    def readiness(self) -> tuple[dict[str, Any], int]:
        """The readiness document (IETF health+json draft) and its HTTP status."""
        shed_level = self.settings.middleware.shed_level
        state = None if self.sync is None else self.sync.status()
        return readiness_document(self.degradation, self.pool, shed_level, state=state)

    def admin(self, method: str, authorization: str, body: Any) -> tuple[int, dict[str, Any]]:
        """What the admin endpoint answers (status, JSON document): ``GET`` the figures,
        ``PUT``/``POST`` ``{"level": "Level3", "ttl": 600}`` forces a level, ``DELETE``
        clears it; 401 without ``Authorization: Bearer <admin_token>``, 404 without a
        token configured (the endpoint does not exist)."""
        token = self.settings.admin_token
        if token is None:
            return 404, {"error": "not found"}
        if not hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
            return 401, {"error": "a valid bearer token is required"}
        if method == "GET":
            doc = self.degradation.figures()
            doc["scope"] = "process" if self.sync is None else self.sync.scope
            doc["nodes"] = [] if self.pool is None else self.pool.snapshot()
            if self.sync is not None:
                doc["state"] = state = self.sync.status()
                if "store" in state and self.settings.state.url is not None:
                    # the URL as the CLI's status shows it, not the store object's repr
                    state["store"] = redact_store_url(self.settings.state.url)
            return 200, doc
        if method == "DELETE":
            return 200, self.change_level(None)
        if method not in ("PUT", "POST"):
            return 405, {"error": f"{method} is not allowed: GET, PUT, POST or DELETE"}
        level = body.get("level") if isinstance(body, dict) else None
        ttl = body.get("ttl") if isinstance(body, dict) else None
        try:
            if not isinstance(level, (str, int)):
                raise ConfigError("level", level, 'send JSON like {"level": "Level3", "ttl": 600}')
            level = parse_level(level).name
            ttl = FORCE_TTL("ttl", ttl)
        except ConfigError as exc:
            return 400, {"error": str(exc)}
        return 200, self.change_level(level, ttl)

    def change_level(self, level: str | None, ttl: float | None = None) -> dict[str, Any]:
        """Force ``level`` (``None``: clear) through the store when there is one, else in
        this process; what the admin endpoint answers. When the store does not take it,
        the change holds in this process (with its ``ttl``) and the sync reconciles it
        with the store when it answers (:meth:`~resilience_mw.fleet.sync.StateSync.force_locally`)."""
        from .fleet import StoreError

        deg, sync = self.degradation, self.sync
        scope, warning, applied_by = "process", None, None
        if sync is not None:
            try:
                override = sync.clear() if level is None else sync.force(level, ttl)
            except StoreError as exc:
                warning = (
                    f"the state store did not take it ({describe_error(exc)}): changed in this process only, "
                    "until the store answers (then the store's state wins if it changed meanwhile)"
                )
            else:
                scope = sync.scope
                # every worker applies it at its next sync
                applied_by = datetime.fromtimestamp(override.set_at + sync.config.sync_interval, timezone.utc).isoformat()
        if scope == "process":
            if sync is not None:
                sync.force_locally(level, ttl)  # remembered: the store's state wins when it answers
            elif level is None:
                deg.clear_override()
            else:
                deg.force_level(level, ttl)  # (a ttl holds in this process too)
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

    def __repr__(self) -> str:
        nodes = [n.id for n in self.pool.nodes] if self.pool is not None else []
        return (
            f"Runtime(level={self.degradation.level.name}, nodes={nodes}, "
            f"health_checks={self.health_checker is not None}, "
            f"admin={'on' if self.settings.admin_token else 'off'})"
        )


def _start(
    degradation: AutoDegradationManager,
    interval: float,
    sync: StateSync | None,
    checker: HealthChecker | None,
    pool: FailoverManager | None,
    *,
    otlp: OTLPExport | None = None,
) -> None:
    """What :meth:`Runtime.start` starts (a function of the parts, so that the lazy start
    hook need not hold the runtime)."""
    degradation.start(interval)
    if otlp is not None:
        otlp.start()  # (a disk queue's backlog drains even before the app exports anything)
    if sync is not None:
        # once now, before this first request is served: a fresh worker takes the fleet's
        # forced level (and node verdicts) from the start, not one sync interval late
        sync.exchange_once()
        sync.start()
    elif checker is not None and pool is not None:
        checker.start(pool)


# ---------------------------------------------------------------- the durable OTLP export


def _otlp_queue(config: OTLPSettings) -> ExportQueue:
    """The queue ``RESILIENCE_OTLP_QUEUE`` names, with its bounds."""
    from .telemetry.export import DiskQueue, MemoryQueue

    bounds: dict[str, Any] = {"max_bytes": config.max_bytes, "max_age": config.max_age, "when_full": config.when_full,
              "block_timeout": config.block_timeout}
    if config.queue == "disk" and config.queue_path is not None:
        # a post lasts at most the timeout: a lease of twice that is never cut short
        return DiskQueue(config.queue_path, lease=max(30.0, 2 * config.timeout), **bounds)
    return MemoryQueue(**bounds)


def _otlp_export(config: OTLPSettings, queue: ExportQueue, degradation: AutoDegradationManager) -> OTLPExport:
    """The export over the configured collectors: a session with a FailoverAdapter whose
    deadline is the timeout (an OTLP batch is safe to send twice: no failover is refused)."""
    from .adapter import FailoverAdapter
    from .telemetry.export import OTLPExport

    session = FailoverAdapter.session(
        "http://otlp-collectors/", list(config.endpoints), retry_non_idempotent=True, deadline=config.timeout,
        default_timeout=(min(2.0, config.timeout), config.timeout),
    )
    return OTLPExport(session, "http://otlp-collectors", queue=queue, headers=config.headers,
                      timeout=(min(2.0, config.timeout), config.timeout), degradation=degradation)


class _QueueFill:
    """A sampler whose memory figure is at least the OTLP queue's fill, in percent
    (``RESILIENCE_OTLP_QUEUE_SIGNAL``): a queue 85 % full reads as Level2's memory."""

    def __init__(self, sampler: Callable[[], Sample], queue: ExportQueue) -> None:
        self._sampler = sampler
        self._queue = queue

    def __call__(self) -> Sample:
        sample = self._sampler()
        fill = 100.0 * self._queue.fill_ratio()
        return dataclasses.replace(sample, memory=max(sample.memory, fill)) if fill > sample.memory else sample

    def __getattr__(self, name: str) -> Any:  # prime(), cpu_source: the sampler's own
        return getattr(self._sampler, name)


#: the most bytes of an admin request's body read
_MAX_ADMIN_BODY = 4096


class _Endpoints:
    """The runtime's endpoints in front of the middleware, for a WSGI app without a
    framework of its own: liveness, readiness, metrics and (with a token) admin."""

    def __init__(self, runtime: Runtime, middleware: ResilienceMiddleware) -> None:
        s = runtime.settings
        #: the runtime (the served app keeps it, and so its threads' owner, alive)
        self.runtime = runtime
        self.middleware = middleware
        routes: dict[str, Callable[[WSGIEnvironment], tuple[int, bytes, str]]] = {}
        if s.liveness_path:
            routes[s.liveness_path] = lambda environ: (200, b'{"status": "pass"}', "application/json")
        if s.readiness_path:
            routes[s.readiness_path] = self._readiness
        if s.metrics_path:
            routes[s.metrics_path] = self._metrics
        if s.admin_path and s.admin_token:
            routes[s.admin_path] = self._admin
        self._routes = routes

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        route = self._routes.get(environ.get("PATH_INFO", ""))
        if route is None:
            return self.middleware(environ, start_response)
        self.middleware.first_request()  # a worker probed before it served anything starts too
        status, body, content_type = route(environ)
        start_response(
            f"{status} {_REASONS.get(status, 'Unknown')}",
            [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
            + ([("WWW-Authenticate", 'Bearer realm="resilience"')] if status == 401 else []),
        )
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    def _readiness(self, environ: WSGIEnvironment) -> tuple[int, bytes, str]:
        doc, status = self.runtime.readiness()
        return status, json.dumps(doc).encode(), "application/health+json"

    def _metrics(self, environ: WSGIEnvironment) -> tuple[int, bytes, str]:
        from .telemetry.metrics import prometheus_exposition

        body, content_type = prometheus_exposition()
        return 200, body, content_type

    def _admin(self, environ: WSGIEnvironment) -> tuple[int, bytes, str]:
        method = environ.get("REQUEST_METHOD", "GET")
        body: Any = None
        if method in ("PUT", "POST"):
            try:
                length = min(int(environ.get("CONTENT_LENGTH") or 0), _MAX_ADMIN_BODY)
                body = json.loads(environ["wsgi.input"].read(length) or b"null")
            except (ValueError, KeyError):
                body = None
        status, doc = self.runtime.admin(method, environ.get("HTTP_AUTHORIZATION", ""), body)
        return status, json.dumps(doc).encode(), "application/json"


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}
