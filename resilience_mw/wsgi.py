"""ResilienceMiddleware: degradation-aware WSGI middleware (no Flask needed).

Wraps any WSGI app and, per request:

* puts the current :class:`DegradationLevel` in ``environ["resilience.level"]``;
* sheds load: at ``shed_level`` and above (default Emergency), requests outside
  ``core_paths`` get ``503`` with ``Retry-After`` and a small JSON body, and the app
  is not called;
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

(the :class:`resilience_mw.flask.Resilience` extension does this for you). Shed
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
import time
import warnings
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

from . import _fork, signals
from .admission.limit import AdaptiveLimit
from .admission.rules import (
    DEFAULT_SHED_TABLE,
    Criticality,
    bucket_secret,
    client_address,
    cookie_value,
    inbound_deadline,
    parse_deadline,
    parse_request_start,
    queue_tolerance,
    server_queue_time,
    shed_share,
    user_bucket,
)
from .config import MiddlewareConfig
from .degradation import counting as _outcomes
from .degradation.manager import AutoDegradationManager
from .exceptions import ConfigError, ConfigWarning
from .model import DegradationLevel

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

#: environ key: seconds the request queued before the app saw it (per the proxy's stamp)
QUEUE_TIME_KEY = "resilience.queue_time"
#: environ key: the caller's deadline, epoch seconds (per the deadline header)
DEADLINE_KEY = "resilience.deadline"
#: environ key: the request's :class:`~resilience_mw.admission.Criticality`, when decided
CRITICALITY_KEY = "resilience.criticality"
_CRITICALITIES = {c.value: c for c in Criticality}
#: environ key: this middleware admitted the request (its second pass serves it)
_ADMITTED_KEY = "resilience.admitted"
#: environ key: the request's user bucket in [0, 1), once drawn (see _bucket)
_BUCKET_KEY = "resilience.user_bucket"
#: Retry-After of a refusal while the load level is Normal (the request's own wait,
#: deadline or the concurrency limit refused it: a passing condition)
_BRIEF_RETRY = 2
#: what _take_slot answers when the adaptive limit is full
_FULL = (False, -1.0, -1)


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


def _environ_key(header: str) -> str:
    """The WSGI environ key of a request header."""
    return "HTTP_" + header.upper().replace("-", "_")

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
        # Admission (queue time, deadline, criticality): checked only when configured.
        self._queue_key = (
            _environ_key(cfg.queue_header) if cfg.max_queue_time is not None or cfg.queue_signal else None
        )
        self._deadline_key = _environ_key(cfg.deadline_header) if cfg.deadline_header else None
        self._criticality_key = _environ_key(cfg.criticality_header) if cfg.criticality_header else None
        self._user_key = _environ_key(cfg.user_key) if cfg.user_key else None
        self._secret = bucket_secret(cfg.user_key_secret) if cfg.user_key_secret else b""
        if cfg.criticality_shedding and cfg.user_key is None and cfg.trusted_proxies is None:
            warnings.warn(
                "criticality shedding has no way to tell users apart (no user_key, trusted_proxies unset): each "
                "request is shed by its own draw, so a user may see some requests served and others shed; set "
                "user_key (RESILIENCE_USER_KEY) or trusted_proxies (RESILIENCE_TRUSTED_PROXIES: 0 when clients "
                "connect directly, 1 behind one proxy)",
                ConfigWarning,
                stacklevel=3,
            )
        self._routes = sorted(
            ((prefix, Criticality(c)) for prefix, c in cfg.criticality_routes.items()), key=lambda r: -len(r[0])
        )
        #: the adaptive in-flight limit (``concurrency_limit``), when on
        self.limit = (
            AdaptiveLimit(
                min_limit=cfg.concurrency_min_limit,
                max_limit=cfg.concurrency_max_limit,
                initial=min(cfg.concurrency_max_limit, max(20, cfg.concurrency_min_limit)),
            )
            if cfg.concurrency_limit
            else None
        )
        self._shed_table = DEFAULT_SHED_TABLE if cfg.shed_table is None else cfg.shed_table
        # with the queue measured, each request may wait as long as its class and user allow
        self._tolerance = cfg.queue_tolerance if self._queue_key is not None else None
        self._admits = (
            self._queue_key is not None
            or self._deadline_key is not None
            or cfg.criticality_shedding
            or self.limit is not None
        )
        #: ``f(environ) -> Criticality | None`` from the app's routing (the Flask
        #: extension reads ``@criticality`` on views); consulted when a class may be shed
        self.criticality_of: Callable[[WSGIEnvironment], Criticality | None] | None = None
        #: request-start stamps that could not be believed (skewed clocks)
        self.skewed_stamps = 0

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if self._on_first_request is not None:
            self._first_request()
        path = environ.get("PATH_INFO", "")
        if path in self.exempt_paths:
            return self.app(environ, start_response)
        if self._admits and environ.get(_ADMITTED_KEY) is not self:
            return self._admit_then_serve(environ, start_response, path)
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

    def _admit_then_serve(
        self, environ: WSGIEnvironment, start_response: StartResponse, path: str
    ) -> Iterable[bytes]:
        """Queue time, deadline, criticality and the concurrency limit, then (admitted)
        the request as any other: ``__call__`` again, with the environ marked admitted.
        Kept off ``__call__`` so that a middleware without admission pays nothing for it."""
        refused = self._admit(environ, path, start_response)
        if refused is not None:
            return refused
        slot = None
        if self.limit is not None:
            slot = self._take_slot(environ, path)
            if slot is _FULL:
                shed = self._refuse(environ, path, self.degradation.load_level, "concurrency", start_response)
                if shed is not None:
                    return shed
                slot = None  # shadow mode: served without a slot
        deadline = environ.get(DEADLINE_KEY)
        # the app's outbound calls (the requests adapter) see what is left of the deadline
        token = None if deadline is None else inbound_deadline.set((deadline, self.config.deadline_header or ""))
        environ[_ADMITTED_KEY] = self
        try:
            return self(environ, start_response)
        finally:
            if token is not None:
                inbound_deadline.reset(token)
            if slot is not None:
                sheddable, started, epoch = slot
                assert self.limit is not None
                self.limit.release(sheddable, time.perf_counter() - started, epoch)

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

    def _first_request(self) -> None:
        with self._first_lock:
            hook, self._on_first_request = self._on_first_request, None
        if hook is not None:
            hook()

    def _admit(self, environ: WSGIEnvironment, path: str, start_response: StartResponse) -> list[bytes] | None:
        """Queue time, deadline, and the request's own wait against its tolerance or its
        class's share of the level (see :mod:`resilience_mw.admission`)."""
        now = time.time()
        reason = None
        waited = None
        if self._queue_key is not None:
            stamp = environ.get(self._queue_key)
            if stamp:
                waited = parse_request_start(stamp, now)
                if waited is None:
                    self.skewed_stamps += 1
                    signals.send(signals.queue_stamp_ignored, self, stamp=str(stamp)[:64])
            else:
                waited = server_queue_time(environ, now)
            if waited is not None:
                environ[QUEUE_TIME_KEY] = waited
                if self.config.queue_signal:
                    self.degradation.observe_queue_time(waited)
                limit = self.config.max_queue_time
                if limit is not None and waited > limit:
                    reason = "queue"
        if reason is None and self._deadline_key is not None:
            deadline = parse_deadline(environ.get(self._deadline_key), now)
            if deadline is not None:
                environ[DEADLINE_KEY] = deadline
                if deadline <= now:
                    reason = "deadline"
        load = self.degradation.load_level
        if reason is None:
            reason = self._by_wait_or_class(environ, path, load, waited)
        if reason is None:
            return None
        return self._refuse(environ, path, load, reason, start_response)

    def _by_wait_or_class(
        self, environ: WSGIEnvironment, path: str, load: DegradationLevel, waited: float | None
    ) -> str | None:
        """Why the request is shed for its class, or ``None``.

        A request whose queueing delay is known is judged by it (unless an operator forced
        the level): while the process is behind on its queue
        (:attr:`~resilience_mw.AutoDegradationManager.queue_behind`), it is shed when it
        waited longer than its class and user tolerate
        (:func:`~resilience_mw.admission.queue_tolerance`). A process that falls behind
        sheds just what keeps its queue short, from the next sample on, and serves
        everything once its requests are served within their tolerance again, cooldown or
        not. Otherwise, with criticality shedding, the level's share of the class's users
        (:func:`~resilience_mw.admission.shed_share`), eased while the level only waits out
        its cooldown.
        """
        by_class = self.config.criticality_shedding
        degradation = self.degradation
        if waited is not None and self._tolerance is not None and degradation.forced is None:
            if not degradation.queue_behind or not (by_class or self.shed_level is not None):
                return None
            criticality = self._criticality(environ, path)
            if criticality is Criticality.CRITICAL_PLUS:
                return None
            if waited > queue_tolerance(criticality, self._bucket(environ), self._tolerance):
                degradation.refused_for_waiting()
                return "criticality" if by_class else "queue"
            return None
        if not by_class or load is DegradationLevel.Normal:
            return None
        criticality = self._criticality(environ, path)
        share = shed_share(load, criticality, self._shed_table) * self.degradation.easing()
        return "criticality" if share > 0 and (share >= 1 or self._bucket(environ) < share) else None


    def _take_slot(self, environ: WSGIEnvironment, path: str) -> tuple[bool, float, int] | None:
        """A slot of the adaptive limit: ``(sheddable, start, epoch)``, :data:`_FULL` when the
        limit is full, ``None`` for a request the library never sheds (``critical_plus``)."""
        assert self.limit is not None
        criticality = self._criticality(environ, path)
        if criticality is Criticality.CRITICAL_PLUS:
            return None
        sheddable = criticality in (Criticality.SHEDDABLE, Criticality.SHEDDABLE_PLUS)
        epoch = self.limit.acquire(sheddable)
        if epoch is None:
            return _FULL
        return sheddable, time.perf_counter(), epoch

    def _criticality(self, environ: WSGIEnvironment, path: str) -> Criticality:
        """The request's class, decided once (then kept in ``environ[CRITICALITY_KEY]``)."""
        criticality: Criticality | None = environ.get(CRITICALITY_KEY)
        if criticality is None:
            criticality = environ[CRITICALITY_KEY] = self._classify(environ, path)
        return criticality

    def _classify(self, environ: WSGIEnvironment, path: str) -> Criticality:
        if path.startswith(self.core_paths):  # (an empty tuple matches nothing)
            return Criticality.CRITICAL_PLUS  # core paths are never shed
        if self._criticality_key is not None:
            named = environ.get(self._criticality_key, "").strip().lower()
            if named in _CRITICALITIES:
                return _CRITICALITIES[named]
        if self.criticality_of is not None:
            found = self.criticality_of(environ)
            if found is not None:
                return found
        for prefix, criticality in self._routes:
            if path.startswith(prefix):
                return criticality
        return Criticality.CRITICAL

    def _bucket(self, environ: WSGIEnvironment) -> float:
        """The request's user bucket in [0, 1): stable per user (a key from
        :meth:`_user`), a fresh draw per request when there is no way to tell users apart.
        Drawn once per request."""
        bucket: float | None = environ.get(_BUCKET_KEY)
        if bucket is None:
            user = self._user(environ)
            bucket = environ[_BUCKET_KEY] = random.random() if user is None else user_bucket(user, self._secret)
        return bucket

    def _user(self, environ: WSGIEnvironment) -> str | None:
        """What tells this request's user apart: the ``user_key`` header, else its cookie,
        else the client address behind ``trusted_proxies``; ``None`` without any."""
        if self._user_key is not None:
            value = environ.get(self._user_key)
            if value:
                return str(value)
            cookie = cookie_value(environ.get("HTTP_COOKIE", ""), self.config.user_key or "")
            if cookie is not None:
                return cookie
        trusted = self.config.trusted_proxies
        return None if trusted is None else client_address(environ, trusted)

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
            and self._criticality(environ, path) is not Criticality.CRITICAL_PLUS
            and self._level_sheds(environ)
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

    def _level_sheds(self, environ: WSGIEnvironment) -> bool:
        """Whether a load level at ``shed_level`` sheds this request: always when forced;
        never when the request's own wait was judged (in :meth:`_admit`); otherwise
        while a signal calls for the level, and for a falling share of users while the
        level only waits out its cooldown."""
        degradation = self.degradation
        if degradation.forced is not None:
            return True
        if self._tolerance is not None and QUEUE_TIME_KEY in environ:
            return False
        easing = degradation.easing()
        return easing >= 1.0 or self._bucket(environ) < easing

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
