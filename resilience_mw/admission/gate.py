"""Admission: the middleware's decisions about one request before the app sees it.

:class:`Admission` applies the rules of :mod:`.rules` to a request's environ, in a fixed
order, each step only when configured:

1. its queueing delay (the proxy's stamp, else the server's own) against
   ``max_queue_time``; the delay also feeds the load level;
2. its deadline;
3. its wait against its class's and user's tolerance while the process is behind on its
   queue, else (with criticality shedding) its class's share of the load level;
4. a slot of the adaptive concurrency limit (:meth:`Admission.take_slot`).

It also answers what the level gate asks (:meth:`Admission.criticality`,
:meth:`Admission.level_sheds`). It refuses nothing itself: it says why a request would be
refused, and the middleware answers (or, in shadow mode, serves it anyway).
"""

from __future__ import annotations

import random
import time
import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import signals
from ..config import MiddlewareConfig
from ..degradation import AutoDegradationManager
from ..exceptions import ConfigWarning
from ..model import Criticality, DegradationLevel
from .limit import AdaptiveLimit
from .rules import (
    DEFAULT_SHED_TABLE,
    bucket_secret,
    client_address,
    cookie_value,
    parse_deadline,
    parse_request_start,
    queue_tolerance,
    server_queue_time,
    shed_share,
    user_bucket,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

__all__ = ["CRITICALITY_KEY", "DEADLINE_KEY", "FULL", "QUEUE_TIME_KEY", "Admission", "Slot", "environ_key"]

#: environ key: seconds the request queued before the app saw it (per the proxy's stamp)
QUEUE_TIME_KEY = "resilience.queue_time"
#: environ key: the caller's deadline, epoch seconds (per the deadline header)
DEADLINE_KEY = "resilience.deadline"
#: environ key: the request's :class:`~resilience_mw.model.Criticality`, when decided
CRITICALITY_KEY = "resilience.criticality"
#: environ key: the request's user bucket in [0, 1), once drawn (see Admission.bucket)
_BUCKET_KEY = "resilience.user_bucket"
_CRITICALITIES = {c.value: c for c in Criticality}
#: what a request that took a slot of the limit gives back: (sheddable, start, epoch)
Slot = tuple[bool, float, int]
#: what :meth:`Admission.take_slot` answers when the limit is full
FULL: Slot = (False, -1.0, -1)


def environ_key(header: str) -> str:
    """The WSGI environ key of a request header."""
    return "HTTP_" + header.upper().replace("-", "_")


class Admission:
    """See the module docstring.

    :param config: the middleware's settings.
    :param degradation: whose load level and queue state decide, and which the queueing
        delay feeds.
    :param sender: what the signals this sends name as their sender (the middleware).
    """

    def __init__(self, config: MiddlewareConfig, degradation: AutoDegradationManager, sender: object) -> None:
        cfg = self.config = config
        self.degradation = degradation
        # (weakly: the middleware owns this object, and a cycle would outlive a dropped app)
        self._sender = weakref.ref(sender)
        self._core_paths = cfg.core_paths
        self._queue_key = environ_key(cfg.queue_header) if cfg.max_queue_time is not None or cfg.reads_queue else None
        self._observe = cfg.reads_queue  # the wait feeds the load level
        self._deadline_key = environ_key(cfg.deadline_header) if cfg.deadline_header else None
        self._criticality_key = environ_key(cfg.criticality_header) if cfg.criticality_header else None
        self._user_key = environ_key(cfg.user_key) if cfg.user_key else None
        self._secret = bucket_secret(cfg.user_key_secret) if cfg.user_key_secret else b""
        if cfg.criticality_shedding and cfg.user_key is None and cfg.trusted_proxies is None:
            warnings.warn(
                "criticality shedding has no way to tell users apart (no user_key, trusted_proxies unset): each "
                "request is shed by its own draw, so a user may see some requests served and others shed; set "
                "user_key (RESILIENCE_USER_KEY) or trusted_proxies (RESILIENCE_TRUSTED_PROXIES: 0 when clients "
                "connect directly, 1 behind one proxy)",
                ConfigWarning,
                stacklevel=4,  # (the code that called Runtime.wrap; for Flask, init_app)
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
        #: whether every request must be admitted: a deadline, criticality or the limit is
        #: configured. Otherwise only one that carries the queue stamp (or came through
        #: waitress) is, so that an unstamped request costs two dict lookups
        self.always = self._deadline_key is not None or cfg.criticality_shedding or self.limit is not None
        #: the header whose presence makes a request worth admitting (``None``: not read)
        self.stamp_key = self._queue_key
        #: ``f(environ) -> Criticality | None`` from the app's routing (the Flask
        #: extension reads ``@criticality`` on views); consulted when a class may be shed
        self.criticality_of: Callable[[WSGIEnvironment], Criticality | None] | None = None
        #: request-start stamps that could not be believed (skewed clocks)
        self.skewed_stamps = 0

    # ------------------------------------------------------------- the steps

    def admit(self, environ: WSGIEnvironment, path: str) -> str | None:
        """Steps 1-3: why the request would be refused (``"queue"``, ``"deadline"``,
        ``"criticality"``), or ``None``. Sets :data:`QUEUE_TIME_KEY` and
        :data:`DEADLINE_KEY` in the environ when it reads them."""
        now = time.time()
        waited = None
        if self._queue_key is not None:
            stamp = environ.get(self._queue_key)
            if stamp:
                waited = parse_request_start(stamp, now)
                if waited is None:
                    self.skewed_stamps += 1
                    signals.send(signals.queue_stamp_ignored, self._sender(), stamp=str(stamp)[:64])
            else:
                waited = server_queue_time(environ, now)
            if waited is not None:
                environ[QUEUE_TIME_KEY] = waited
                if self._observe:
                    self.degradation.observe_queue_time(waited)
                limit = self.config.max_queue_time
                if limit is not None and waited > limit:
                    return "queue"
        if self._deadline_key is not None:
            deadline = parse_deadline(environ.get(self._deadline_key), now)
            if deadline is not None:
                environ[DEADLINE_KEY] = deadline
                if deadline <= now:
                    return "deadline"
        return self._by_wait_or_class(environ, path, waited)

    def _by_wait_or_class(self, environ: WSGIEnvironment, path: str, waited: float | None) -> str | None:
        """Why the request is shed for its wait or its class, or ``None``.

        A request whose queueing delay is known is judged by it (unless an operator forced
        the level): while the process is behind on its queue
        (:attr:`~resilience_mw.AutoDegradationManager.queue_behind`), or, with criticality
        shedding, when this request alone waited as long as the delay that puts a process
        behind (``config.queue_behind_at``: the lowest queue threshold, 20 ms by default), it is
        shed when it waited longer than its class and user
        tolerate (:func:`~resilience_mw.admission.queue_tolerance`). A process that falls
        behind sheds just what keeps its queue short, from its first long wait on, and
        serves everything once its requests are served within their tolerance again,
        cooldown or not; the odd request that waited a little too long at low load is
        served. Otherwise, with criticality shedding, the load level's share of the class's
        users (:func:`~resilience_mw.admission.shed_share`), eased while the level only
        waits out its cooldown.
        """
        by_class = self.config.criticality_shedding
        degradation = self.degradation
        if waited is not None and self._tolerance is not None and degradation.forced is None:
            # with criticality shedding, whose tolerances the operator chose per class, a
            # request that alone waited that long counts too: no wait for the next sample
            behind = degradation.queue_behind or (by_class and waited >= degradation.config.queue_behind_at)
            if not behind or not (by_class or self.config.shed_level is not None):
                return None
            criticality = self.criticality(environ, path)
            if criticality is Criticality.CRITICAL_PLUS:
                return None
            if waited > queue_tolerance(criticality, self.bucket(environ), self._tolerance):
                degradation.refused_for_waiting()
                return "criticality" if by_class else "queue"
            return None
        load = degradation.load_level
        if not by_class or load is DegradationLevel.Normal:
            return None
        criticality = self.criticality(environ, path)
        # what the signals call for now is shed in full; the rest of the level's share, held
        # up only by the cooldown, eases off
        now = shed_share(degradation.load_target, criticality, self._shed_table)
        held = shed_share(load, criticality, self._shed_table)
        share = now + max(0.0, held - now) * degradation.easing()
        return "criticality" if share > 0 and (share >= 1 or self.bucket(environ) < share) else None

    def take_slot(self, environ: WSGIEnvironment, path: str) -> Slot | None:
        """Step 4, with the limit on: a slot to :meth:`release`, :data:`FULL` when the
        limit is full, ``None`` for a request the library never sheds (``critical_plus``)."""
        assert self.limit is not None
        criticality = self.criticality(environ, path)
        if criticality is Criticality.CRITICAL_PLUS:
            return None
        sheddable = criticality in (Criticality.SHEDDABLE, Criticality.SHEDDABLE_PLUS)
        epoch = self.limit.acquire(sheddable)
        if epoch is None:
            return FULL
        return sheddable, time.perf_counter(), epoch

    def release(self, slot: Slot) -> None:
        """Give back a slot :meth:`take_slot` gave, with the request's latency."""
        assert self.limit is not None
        sheddable, started, epoch = slot
        self.limit.release(sheddable, time.perf_counter() - started, epoch)

    # ------------------------------------------------------------- for the level gate

    def level_sheds(self, environ: WSGIEnvironment) -> bool:
        """Whether a load level at ``shed_level`` sheds this request: always when forced;
        never when the request's own wait was judged (in :meth:`admit`); otherwise while
        a signal calls for the level, and for a falling share of users while the level
        only waits out its cooldown."""
        degradation = self.degradation
        if degradation.forced_now() is not None:
            return True
        if self._tolerance is not None and QUEUE_TIME_KEY in environ:
            return False
        shed_level = self.config.shed_level
        if shed_level is not None and degradation.load_target >= shed_level:
            return True  # a signal still calls for a level that sheds
        easing = degradation.easing()
        return easing >= 1.0 or self.bucket(environ) < easing

    def criticality(self, environ: WSGIEnvironment, path: str) -> Criticality:
        """The request's class, decided once (then kept in ``environ[CRITICALITY_KEY]``)."""
        criticality: Criticality | None = environ.get(CRITICALITY_KEY)
        if criticality is None:
            criticality = environ[CRITICALITY_KEY] = self._classify(environ, path)
        return criticality

    def _classify(self, environ: WSGIEnvironment, path: str) -> Criticality:
        if path.startswith(self._core_paths):  # (an empty tuple matches nothing)
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

    def bucket(self, environ: WSGIEnvironment) -> float:
        """The request's user bucket in [0, 1): stable per user (a key from
        :meth:`user`), a fresh draw per request when there is no way to tell users apart.
        Drawn once per request."""
        bucket: float | None = environ.get(_BUCKET_KEY)
        if bucket is None:
            user = self.user(environ)
            bucket = environ[_BUCKET_KEY] = random.random() if user is None else user_bucket(user, self._secret)
        return bucket

    def user(self, environ: WSGIEnvironment) -> str | None:
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

    def __repr__(self) -> str:
        steps: list[Any] = [
            name
            for name, on in (
                ("queue", self._queue_key is not None),
                ("deadline", self._deadline_key is not None),
                ("criticality", self.config.criticality_shedding),
                ("limit", self.limit is not None),
            )
            if on
        ]
        return f"Admission({', '.join(steps) or 'nothing to check'})"
