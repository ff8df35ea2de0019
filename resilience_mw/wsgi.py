"""ResilienceMiddleware: degradation-aware WSGI middleware (no Flask needed).

Wraps any WSGI app and, per request:

* admits it (:mod:`resilience_mw.admission.gate`): its queueing delay, deadline, class
  and a slot of the concurrency limit, each when configured;
* puts the current :class:`DegradationLevel` in ``environ["resilience.level"]``;
* sheds load: at ``shed_level`` and above (default Emergency), requests outside
  ``core_paths`` get ``503`` with a jittered ``Retry-After`` and a small JSON body, and
  the app is not called (a request whose queueing delay is known is judged by its wait
  instead, unless an operator forced the level);
* reroutes: ``reroutes={"/search": ("/search/lite", DegradationLevel.Level2)}`` serves
  ``/search`` from ``/search/lite`` at Level2 and above (the original path is kept in
  ``environ["resilience.original_path"]``);
* counts each request once in the degradation manager's error window, when the app
  returns: a 5xx status or an exception is a failure, 4xx is not. A lazy body that
  raises while it is being sent turns the request into a failure (the app's
  iterable is always closed, once). The status counted is the one the app gave when
  it returned; an app that replaces it mid-body (``start_response`` with
  ``exc_info``) without raising is counted by the first. A ``wsgi.file_wrapper`` body
  is passed through unwrapped, so the server can still send it with ``sendfile``.
  Views can count a failure themselves with :func:`record_failure`.

Exempt paths (health, metrics, status) are neither counted nor shed, so probes cannot
feed back into the level they report. Usage with Flask::

    app.wsgi_app = ResilienceMiddleware(app.wsgi_app, degradation, core_paths=("/api/pay",))

(the :class:`resilience_mw.flask_ext.Resilience` extension does this for you). Shed
responses are not counted as failures either: counting our own refusals would hold
the level up.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import threading
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

from . import _fork, signals
from .admission.gate import CRITICALITY_KEY, DEADLINE_KEY, FULL, QUEUE_TIME_KEY, Admission
from .admission.rules import inbound_deadline
from .config import MiddlewareConfig
from .degradation import counting as _outcomes
from .degradation.manager import AutoDegradationManager
from .exceptions import ConfigError
from .failover import _inbound
from .model import Criticality, DegradationLevel

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "CRITICALITY_KEY",
    "DEADLINE_KEY",
    "LEVEL_KEY",
    "ORIGINAL_PATH_KEY",
    "QUEUE_TIME_KEY",
    "ResilienceMiddleware",
    "record_failure",
]

#: Retry-After of a refusal while the load level is Normal (the request's own wait,
#: deadline or the concurrency limit refused it: a passing condition)
_BRIEF_RETRY = 2
#: the waitress environ key that tells when a request arrived (see admission.server_queue_time)
_WAITRESS = "waitress.client_disconnected"


@functools.lru_cache(maxsize=512)
def _shed_body(level: DegradationLevel, retry_after: int) -> bytes:
    """The JSON body of a shed response (cached: a process far behind sheds many
    requests, each should cost little)."""
    return json.dumps({"error": "service overloaded", "level": level.name, "retry_after": retry_after}).encode()


def _is_file_body(body: object, file_wrapper: object) -> bool:
    """Whether ``body`` came from the server's ``wsgi.file_wrapper`` (it must reach the
    server untouched to be sent with sendfile): an instance of it where it is a class;
    where it is a function (uWSGI's returns the file itself), a file-like body."""
    if isinstance(file_wrapper, type):
        return type(body) is file_wrapper
    return file_wrapper is not None and callable(getattr(body, "read", None))


log = logging.getLogger(__name__)

#: environ key holding the request's :class:`DegradationLevel`
LEVEL_KEY = "resilience.level"
#: environ key holding the path before a reroute
ORIGINAL_PATH_KEY = "resilience.original_path"
#: paths the middleware neither counts nor sheds unless told otherwise
DEFAULT_EXEMPT_PATHS: tuple[str, ...] = MiddlewareConfig().exempt_paths


def record_failure(environ: WSGIEnvironment, degradation: AutoDegradationManager) -> None:
    """Count the request of ``environ`` as a failure in ``degradation``, exactly once.

    Turns a success the middleware already counted into a failure, does nothing if a
    failure was already counted, and otherwise counts one (the middleware then counts
    nothing more for this request). For code that knows better than the status line,
    e.g. a view that serves a fallback with 200 after its primary path failed.
    """
    _outcomes.record_failure(environ, degradation.window)


def _watching(
    body: Iterable[bytes],
    environ: WSGIEnvironment,
    middleware: ResilienceMiddleware,
    status: Callable[[], str] | None,
) -> Generator[bytes, None, None]:
    """A lazy response body that counts its request once its status is known (an app
    may call ``start_response`` only when iterated), counts a failure if iterating it
    raises, and always closes it.

    The caller runs it to the first (empty) yield before returning it: a generator
    closed before it started would skip its ``finally`` and not close the inner body.
    A plain loop, not ``yield from``: closing this generator must not close the inner
    body a second time (the ``finally`` does that, once).
    """
    try:
        yield b""
        if status is None:  # counted already
            for chunk in body:  # (not yield from: see above)
                yield chunk
        else:
            # ``status`` (a getter): the app had not called start_response when it
            # returned, so the request is counted when its status comes
            key = middleware._key
            for chunk in body:
                if status is not None and status():
                    if environ.get(key) is middleware:
                        middleware._count(environ, status())
                    status = None
                yield chunk
            if status is not None and environ.get(key) is middleware:
                middleware._count(environ, status())  # an empty body: the status came at the end
    except GeneratorExit:  # closed early: the client went away, not a failure
        raise
    except BaseException:
        if middleware.count_exceptions:
            _outcomes.record_failure(environ, middleware._window)
        raise
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


class ResilienceMiddleware:
    """Degradation-aware WSGI middleware; see the module docstring.

    :param app: the WSGI app to wrap.
    :param degradation: the :class:`AutoDegradationManager` to read and feed.
    :param config: a :class:`~resilience_mw.config.MiddlewareConfig`; or pass its
        fields as keyword arguments: ``shed_level`` (from this level, non-core requests
        get 503; ``None``: never; a level member or name), ``core_paths`` (path
        prefixes always served), ``exempt_paths`` (exact paths neither counted nor
        shed), ``reroutes`` (``{path: (lighter_path, level)}``), ``retry_after``
        (seconds), ``is_failure`` (``f(status_code) -> bool``; default: ``>= 500``),
        ``count_exceptions`` (an exception from the app or its body is a failure;
        ``False`` also leaves lazy bodies unwrapped) and ``record_outcomes``
        (``False``: only gate, shed and reroute).
    :param on_first_request: called once, before the first request this process serves
        (the Flask extension starts its background workers this way).
    """

    def __init__(
        self,
        app: WSGIApplication,
        degradation: AutoDegradationManager,
        *,
        config: MiddlewareConfig | None = None,
        on_first_request: Callable[[], object] | None = None,
        **options: Any,
    ) -> None:
        if not callable(app):
            raise ConfigError("app", app, "must be a WSGI application (a callable)")
        if not isinstance(degradation, AutoDegradationManager):
            raise ConfigError("degradation", degradation, "must be an AutoDegradationManager")
        if on_first_request is not None and not callable(on_first_request):
            raise ConfigError("on_first_request", on_first_request, "must be callable or None")
        #: the settings in force
        self.config = cfg = MiddlewareConfig.from_options(config, options)
        self.app = app
        self.degradation = degradation
        self.shed_level = cfg.shed_level
        self.core_paths = cfg.core_paths
        self.exempt_paths = frozenset(cfg.exempt_paths)
        self.reroutes = cfg.reroutes
        self.retry_after = cfg.retry_after
        self.count_exceptions = cfg.count_exceptions
        self.record_outcomes = cfg.record_outcomes
        self._on_first_request = on_first_request
        self._first_lock = threading.Lock()
        _fork.register(self)
        is_failure = cfg.is_failure
        shed_level = cfg.shed_level
        # None: the default rule (5xx), which the hot path checks inline
        self._is_failure: Callable[[str], bool] | None = (
            None if is_failure is None else (lambda status: is_failure(int(status[:3])))
        )
        # The level below which nothing is shed or rerouted: one int compare on the hot path.
        levels = [lv for _, lv in self.reroutes.values()] + ([shed_level] if shed_level is not None else [])
        self._act_from = min(levels) if levels else DegradationLevel.Emergency + 1
        self._window = degradation.window
        self._key = _outcomes.key(degradation.window)
        self.enforce = cfg.enforce
        #: the admission steps (queue time, deadline, class, the concurrency limit)
        self.admission = Admission(cfg, degradation, self)
        # (copied for the hot path: an attribute of self is one lookup less)
        self._admit_all = self.admission.always
        self._stamp_key = self.admission.stamp_key
        self._classify = self.admission.criticality


    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self._on_first_request is not None:
            self.first_request()
        path = environ.get("PATH_INFO", "")
        if path in self.exempt_paths:
            return self.app(environ, start_response)
        release = None
        # (an unstamped request with nothing else to check costs two dict lookups here)
        if self._admit_all or (self._stamp_key is not None and (self._stamp_key in environ or _WAITRESS in environ)):
            refused, release = self._admit(environ, path, start_response)
            if refused is not None:
                return refused
        # the request, for the failover lines of the app's upstream calls (only once this
        # process has a node pool: a global read, else)
        named = _inbound.request.set((environ, self._classify)) if _inbound.wanted else None
        try:
            level = self.degradation.level
            environ[LEVEL_KEY] = level
            if level >= self._act_from:
                shed = self._degrade(environ, path, level, start_response)
                if shed is not None:
                    return shed
            if not self.record_outcomes:
                return self.app(environ, start_response)
            key = self._key
            # This middleware counts the request (see _outcomes): its own object marks it as
            # pending. An inner middleware of the same manager overwrites the mark with its
            # own and counts instead; this one then finds the mark not its own.
            environ[key] = self
            status = ""

            def capture(
                status_: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
            ) -> Callable[[bytes], object]:
                nonlocal status
                status = status_
                # exc_info only when given: some servers and middlewares take two arguments
                if exc_info is None:
                    return start_response(status_, headers)
                return start_response(status_, headers, exc_info)

            try:
                body = self.app(environ, capture)
            except BaseException:
                if self.count_exceptions and environ[key] is self:
                    self._window.fail()
                    environ[key] = "fail"
                raise
            # Counted now, by the status the app gave. The rule is written out here rather
            # than in _count: this is the per-request hot path, and a call costs.
            if status and environ[key] is self:
                if self._is_failure(status) if self._is_failure is not None else "5" <= status < "6":
                    self._window.fail()
                    counted = "fail"
                else:
                    self._window.ok()
                    counted = "ok"
                if type(body) is list:  # fully built: nothing can change it later
                    return body
                environ[key] = counted  # a body that breaks while sent turns it (record_failure)
            elif type(body) is list and status:
                return body
            if status and (not self.count_exceptions or _is_file_body(body, environ.get("wsgi.file_wrapper"))):
                # A file_wrapper goes back unwrapped, or the server could not send it with
                # sendfile; a failure while sending the file is then not counted.
                return body
            # A lazy body, or an app that calls start_response only when iterated (then the
            # status is read, once it has come, through a getter of the closure's cell).
            watching = _watching(body, environ, self, None if status else (lambda: status))
            next(watching)  # to the first, empty yield; see _watching
            return watching
        finally:
            if named is not None:
                _inbound.request.reset(named)
            if release is not None:
                release()

    def _admit(
        self, environ: WSGIEnvironment, path: str, start_response: StartResponse
    ) -> tuple[list[bytes] | None, Callable[[], None] | None]:
        """The admission steps (:class:`~resilience_mw.admission.gate.Admission`): the
        refusal to answer (``None``: admitted), and what to do once the request is served
        (give back its slot of the concurrency limit, end its inbound deadline), if anything."""
        admission = self.admission
        reason = admission.admit(environ, path)
        if reason is not None:
            shed = self._refuse(environ, path, self.degradation.load_level, reason, start_response)
            if shed is not None:
                return shed, None
        slot = None
        if admission.limit is not None:
            slot = admission.take_slot(environ, path)
            if slot is FULL:
                shed = self._refuse(environ, path, self.degradation.load_level, "concurrency", start_response)
                if shed is not None:
                    return shed, None
                slot = None  # shadow mode: served without a slot
        deadline = environ.get(DEADLINE_KEY)
        if slot is None and deadline is None:
            return None, None
        # the app's outbound calls (the requests adapter) see what is left of the deadline
        token = None if deadline is None else inbound_deadline.set((deadline, self.config.deadline_header or ""))

        def release() -> None:
            if token is not None:
                inbound_deadline.reset(token)
            if slot is not None:
                admission.release(slot)

        return None, release

    def _count(self, environ: WSGIEnvironment, status: str) -> None:
        """Count a request whose status arrived after the app returned."""
        if not status:
            failed = True  # the body ended without a start_response: a broken app
        elif self._is_failure is not None:
            failed = self._is_failure(status)
        else:
            failed = "5" <= status < "6"  # the same test as the inline one in __call__
        if failed:
            self._window.fail()
        else:
            self._window.ok()
        environ[self._key] = "fail" if failed else "ok"

    def _after_fork_in_child(self) -> None:
        self._first_lock = threading.Lock()

    def first_request(self) -> None:
        """Run the ``on_first_request`` hook, once per process (``__call__`` does; so does a
        layer in front that answers some requests itself, the runtime's endpoints)."""
        with self._first_lock:
            hook, self._on_first_request = self._on_first_request, None
        if hook is not None:
            hook()

    def _refuse(
        self, environ: WSGIEnvironment, path: str, level: DegradationLevel, reason: str, start_response: StartResponse
    ) -> list[bytes] | None:
        """Shed the request, or in shadow mode only count it and let it through."""
        signals.send(signals.request_shed, self, path=path, level=level, reason=reason, enforced=self.enforce)
        if not self.enforce:
            log.debug("shadow mode: would have shed %s (%s)", path, reason)
            return None
        return self._shed(level, start_response, environ.get("REQUEST_METHOD") == "HEAD")

    def _degrade(
        self, environ: WSGIEnvironment, path: str, level: DegradationLevel, start_response: StartResponse
    ) -> list[bytes] | None:
        # Shedding follows the load level (the process's own overload, or a forced level),
        # not the error rate of a dependency: shedding would not help it.
        load = self.degradation.load_level
        if (
            self.shed_level is not None
            and load >= self.shed_level
            and not path.startswith(self.core_paths)
            # critical_plus (a view's @criticality, the route table, the trusted header) is
            # never shed by the library
            and self.admission.criticality(environ, path) is not Criticality.CRITICAL_PLUS
            and self.admission.level_sheds(environ)
        ):
            shed = self._refuse(environ, path, load, "level", start_response)
            if shed is not None:
                return shed
        target = self.reroutes.get(path)
        if target is not None and level >= target[1]:
            environ[ORIGINAL_PATH_KEY] = path
            environ["PATH_INFO"] = target[0]
            signals.send(signals.request_rerouted, self, path=path, to=target[0], level=level)
        return None

    def _shed(self, level: DegradationLevel, start_response: StartResponse, head: bool = False) -> list[bytes]:
        retry_after = self._retry_after()
        body = _shed_body(level, retry_after)
        start_response(
            "503 SERVICE UNAVAILABLE",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Retry-After", str(retry_after)),
                ("Cache-Control", "no-store"),
            ],
        )
        return [] if head else [body]  # HEAD: the headers a GET would get, no body

    def _retry_after(self) -> int:
        """Seconds for a refusal's ``Retry-After``: at most ``retry_after`` and at most how
        long the load level can still last (a brief wait at Normal: the refusal was the
        request's own wait, deadline or the concurrency limit), drawn at random from the
        upper half of that, so refused clients do not all come back in the same second."""
        most = self.retry_after
        if most <= 0:
            return 0
        lasts = self.degradation.level_may_last()
        if lasts < most:
            most = math.ceil(lasts) if lasts > 0 else min(most, _BRIEF_RETRY)
        return random.randint(max(1, math.ceil(most / 2)), max(1, most))


    def __repr__(self) -> str:
        shed = self.shed_level.name if self.shed_level is not None else None
        return f"ResilienceMiddleware(shed_level={shed}, core_paths={self.core_paths}, reroutes={list(self.reroutes)})"
