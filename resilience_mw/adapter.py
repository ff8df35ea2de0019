"""FailoverAdapter: a requests transport adapter that fails over between upstream nodes.

Mount it on a logical prefix; requests under that prefix go to a node chosen by the
strategy, and on failure to the next node, the way Envoy would, without a proxy::

    session = requests.Session()
    session.mount("http://orders/", FailoverAdapter([
        ServiceNode("a", "http://10.0.0.1:8080", priority=10),
        ServiceNode("b", "http://10.0.0.2:8080", priority=5),
    ]))
    session.get("http://orders/api/x?q=1", timeout=(1, 5))   # -> http://10.0.0.1:8080/api/x?q=1

**Transparent.** With one healthy node it behaves as requests' own ``HTTPAdapter``:
the same exception types (the last attempt's own exception is raised, with
:class:`~resilience_mw.FailoverError` mixed in and every attempt attached), the same
per-read ``timeout`` semantics (``None`` waits as long as requests would), the body
read by requests after the adapter returns, ``response.url`` the logical URL (so
relative redirects come back through the adapter), proxies chosen for the node's URL
(honouring ``NO_PROXY``). ``response.resilience_node`` names the node that answered.

**Never sends a POST twice.** Each attempt records whether any byte of the request
was written to the node. A failure before that (refused, DNS, connect timeout, TLS
handshake) moves on whatever the method; a failure after it (a read timeout, a reset,
a garbage answer, a status in ``retry_statuses``) moves on only for an idempotent method
(GET, HEAD, OPTIONS, PUT, DELETE, TRACE), a request with an ``Idempotency-Key`` header,
or an adapter built with ``retry_non_idempotent=True``. A body that cannot be replayed
(a generator, a non-seekable file) is never sent twice.

**Blames the right party.** Only what the node did counts against it: connection
failures, timeouts, resets, malformed answers, 5xx and 429. The caller's own mistakes
(an invalid URL or proxy URL, a CA bundle that does not load, a body over
``max_body_bytes``) are raised at once, charge no node and try no other. So is running
out of the inbound request's deadline (the middleware's ``deadline_header``, which the
adapter spends no more than): an attempt it cuts short is no failure of the node, no
ejection and no latency sample, and :class:`DeadlineExceeded` is raised without trying
another node. The adapter's own ``deadline=`` and the call's ``timeout`` still charge
the node when they are the shorter limit, as they would without a caller's deadline.

**Never shuts its nodes out.** When every node is ejected or held off, the best
candidate is tried anyway (panic routing; see :class:`~resilience_mw.config.PoolConfig`),
and a one-node pool always sends to its node. ``Retry-After`` on 503/429 holds a node
off so that others are preferred.

**Opt-in differences**, each because it needs the body read inside the adapter:
``deadline=`` bounds the whole call, every phase included (connect, send, response
head, and the body unless ``stream=True``): a watchdog shuts the socket when it passes
and :class:`DeadlineExceeded` (a ``requests.Timeout``) is raised. ``max_body_bytes=``
bounds the body held in memory (:class:`ResponseTooLarge`). With either set, a body
that breaks while being read fails over like any other failure, and ``r.elapsed``
includes reading it.

**Opt-in, for the tail and for failing upstreams.** ``hedge_max_extra_load=0.05``
hedges idempotent calls (:mod:`~resilience_mw.failover.hedge`): a call still unanswered
after the 97.5th percentile of recent answers is sent to a second node as well, the
first good answer is returned and the other closed; never a POST without an
``Idempotency-Key``, never from Level1 (with ``degradation=``), never while the upstream
looks saturated or calls are late on most nodes at once. A node whose call lost its race
is passed over as a call's first try, one call at a time trying it again, until it
answers (:meth:`~resilience_mw.failover.load.NodeLoad.stalling`). ``throttle=True``
refuses a share of the calls here, sending nothing, while the upstream accepts too few
of them (:class:`~resilience_mw.failover.budget.AdaptiveThrottle`):
:class:`UpstreamThrottled` is raised at once; ``critical_plus`` calls are always sent. It is
a ``requests.ConnectionError`` (nothing was sent): a caller that retries every
``ConnectionError`` at once undoes the throttle, so catch it first and back off or serve
a fallback.

After ``os.fork()`` the child drops the connection pools it inherited, so parent and
children never share a keep-alive socket.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import dataclasses
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit
from urllib.request import getproxies

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from requests.models import PreparedRequest, Response
from requests.utils import get_auth_from_url, rewind_body, should_bypass_proxies
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ReadTimeoutError

from . import _fork, signals
from . import _validate as v
from ._redact import redact_url
from .admission.rules import inbound_deadline
from .config import AdapterConfig, PoolConfig
from .degradation.manager import AutoDegradationManager
from .exceptions import ConfigError, NoAvailableNodeError, ResilienceError, with_attempts
from .failover import _inbound
from .failover import _transport as _http
from .failover.budget import AdaptiveThrottle, RetryBudget
from .failover.hedge import HedgePolicy, LostRace, Race
from .failover.loop import FailoverLoop, FailoverManager, Try
from .failover.pool import CallOrder, NodePool
from .model import Criticality, DegradationLevel, FailoverStrategy, ServiceNode, retry_after_seconds

__all__ = [
    "DeadlineExceeded",
    "FailoverAdapter",
    "NoAvailableNodeConnectionError",
    "ResponseTooLarge",
    "UpstreamStatusError",
    "UpstreamThrottled",
]

log = logging.getLogger(__name__)

#: a request header that marks a request safe to send twice
IDEMPOTENCY_HEADER = "Idempotency-Key"

#: what requests accepts as ``timeout``: seconds, (connect, read) with None for no bound, or None
_Timeout = float | tuple[float | None, float | None] | None

#: the caller's own mistakes: raised at once, no node charged, no other node tried
_CALLER_ERRORS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidHeader,
    requests.exceptions.URLRequired,
)


class NoAvailableNodeConnectionError(NoAvailableNodeError, requests.ConnectionError):
    """No node is healthy, panic routing is off and the pool has several nodes: nothing
    was sent."""

    def __init__(self, message: str, request: PreparedRequest | None = None) -> None:
        NoAvailableNodeError.__init__(self, message)
        self.request = request
        self.response = None


class UpstreamStatusError(ResilienceError):
    """A node answered with a retryable status; recorded as the attempt's error."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"status {status}" + (f" (Retry-After {retry_after:g}s)" if retry_after else ""))


class ResponseTooLarge(ResilienceError, requests.RequestException):
    """A response body exceeded ``max_body_bytes`` (the caller's limit: no node is blamed)."""


class UpstreamThrottled(ResilienceError, requests.ConnectionError):
    """The adapter refused the call itself, sending nothing: its upstream accepts too
    few calls (client-side throttling, ``throttle=True``). Nothing was sent, so nothing
    needs undoing; try again later or serve a fallback."""

    def __init__(self, message: str, request: PreparedRequest | None = None, *, probability: float = 0.0) -> None:
        ResilienceError.__init__(self, message)
        self.request = request
        self.response = None
        #: the chance this call was refused with
        self.probability = probability


class DeadlineExceeded(ResilienceError, requests.Timeout):
    """The adapter's ``deadline``, or the inbound request's, passed before the call finished."""

    #: the inbound request's deadline (the caller's limit), not the adapter's own
    callers: bool = False


def _retry_after(resp: Response, cap: float) -> float | None:
    """Seconds the response's ``Retry-After`` asks for, at most ``cap``."""
    return retry_after_seconds(resp.headers.get("Retry-After"), cap)


@dataclasses.dataclass(slots=True)
class _Call:
    """One call through the adapter: what requests passed to ``send``, and how to send it."""

    request: PreparedRequest
    stream: bool
    timeout: _Timeout
    verify: bool | str
    cert: Any
    proxies: Mapping[str, str] | None
    #: the nodes to try (``None``: the strategy's order)
    order: CallOrder | tuple[ServiceNode, ...] | None = None
    #: whether its first attempt counts in the retry budget (a hedge is counted as an
    #: extra attempt instead)
    budgeted: bool = True
    #: the node being tried now
    node: ServiceNode | None = None
    #: when it started (``time.perf_counter()``)
    started: float = dataclasses.field(default_factory=time.perf_counter)
    #: the hedged race it runs in, if any
    race: Race | None = None
    #: which side of the race: the hedge (``True``) or the primary
    hedge: bool = False


def _callers_own(exc: BaseException) -> bool:
    """Whether a call ended by the caller's own doing (its URL, its size limit, its
    inbound deadline): no answer of the upstream's, so the throttle does not count it."""
    return isinstance(exc, (*_CALLER_ERRORS, ResponseTooLarge)) or (
        isinstance(exc, DeadlineExceeded) and exc.callers
    )


def _read_timeout(timeout: _Timeout) -> float | None:
    """The read part of a requests ``timeout`` (``None``: none, or not a number)."""
    if isinstance(timeout, tuple):
        timeout = timeout[1]
    return float(timeout) if isinstance(timeout, (int, float)) else None


def _good(resp: Response) -> bool:
    """Whether an answer is worth returning over another (not a 5xx or a 429)."""
    return resp.status_code < 500 and resp.status_code != 429


def _replayable(request: PreparedRequest) -> bool:
    body: object = request.body  # typed bytes | str | None, but generators and files happen
    if body is None or isinstance(body, (bytes, str)):
        return True
    # A file-like body can be sent again only if requests recorded where it started
    # (it stores a sentinel object, not an int, when tell() failed).
    return isinstance(getattr(request, "_body_position", None), int) and hasattr(body, "seek")


def _budget_of(cfg: AdapterConfig, manager: NodePool) -> RetryBudget | None:
    if cfg.retry_budget_ratio is None:
        return None
    return RetryBudget(cfg.retry_budget_ratio, cfg.retry_budget_min_per_second, cfg.retry_budget_window,
                       clock=manager.clock)


def _unsent(ctx: _http.AttemptContext, exc: BaseException) -> bool:
    """Whether the request provably never reached the node."""
    if ctx.unsent:
        return True
    # Without our connection (a SOCKS proxy), only urllib3's connect errors prove it.
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


class FailoverAdapter(HTTPAdapter):
    """A :class:`requests.adapters.HTTPAdapter` that fails over between nodes.

    :param nodes_or_manager: a list of :class:`ServiceNode`, or a
        :class:`~resilience_mw.NodePool` (a :class:`FailoverManager` is one) to share node
        health with a health checker, the metrics or other adapters.
    :param strategy: the :class:`FailoverStrategy` (only with a node list).
    :param config: an :class:`~resilience_mw.config.AdapterConfig`; or pass its fields
        as keyword arguments: ``retry_statuses``, ``idempotent_methods``,
        ``retry_non_idempotent``, ``default_timeout``, ``deadline``,
        ``max_body_bytes``, ``pool_connections``, ``pool_maxsize``, ``pool_block``.
    :param pool_config: a :class:`~resilience_mw.config.PoolConfig` for the manager
        built from a node list; or pass its fields (``failure_threshold``, ``panic``,
        ...) as keyword arguments.
    :param clock: monotonic clock of the manager built from a node list.
    :param degradation: the service's degradation manager: hedging stops from Level1.
    """

    def __init__(
        self,
        nodes_or_manager: NodePool | Iterable[ServiceNode],
        strategy: FailoverStrategy | str | None = None,
        *,
        config: AdapterConfig | None = None,
        pool_config: PoolConfig | None = None,
        clock: Callable[[], float] | None = None,
        degradation: AutoDegradationManager | None = None,
        **options: Any,
    ) -> None:
        if degradation is not None and not isinstance(degradation, AutoDegradationManager):
            raise ConfigError("degradation", degradation, "must be an AutoDegradationManager or None")
        adapter_fields = {f.name for f in dataclasses.fields(AdapterConfig)}
        v.reject_unknown_keys("", options, [*adapter_fields, *(f.name for f in dataclasses.fields(PoolConfig))])
        pool_options = {k: options.pop(k) for k in list(options) if k not in adapter_fields}
        if strategy is not None:
            pool_options["strategy"] = strategy
        manager: NodePool
        if isinstance(nodes_or_manager, NodePool):
            if pool_options or pool_config is not None or clock is not None:
                raise ConfigError(
                    "pool options",
                    sorted(pool_options) or pool_config or clock,
                    f"not allowed with a {type(nodes_or_manager).__name__}: they are the pool's own",
                )
            manager = nodes_or_manager
        else:
            manager = FailoverManager(
                nodes_or_manager, config=pool_config, clock=clock or time.monotonic, **pool_options
            )
        #: the settings in force (not ``config``: requests' HTTPAdapter has a ``config`` dict)
        self.failover_config = cfg = AdapterConfig.from_options(config, options)
        n = len(manager.nodes)
        if cfg.pool_connections is not None and cfg.pool_connections < n:
            raise ConfigError("pool_connections", cfg.pool_connections, f"must be >= the node count ({n})")
        self.manager = manager
        #: extra attempts (failovers, retries, hedges) this adapter may make; ``None``: unlimited
        self.budget = _budget_of(cfg, manager)
        self.degradation = degradation
        self._set_tail_policies(cfg)
        # Credentials in a node's endpoint go in an Authorization header (urllib3 ignores
        # them in the URL) and never into the URL requested, so errors cannot show them.
        self._targets = {node.id: _split_credentials(node.endpoint) for node in manager.nodes}
        self._any_https = any(ep.startswith("https:") for ep, _ in self._targets.values())
        self._tls_checked: set[tuple[Any, ...]] = set()
        # One pool per node and then some: fewer pools than nodes would churn connections.
        super().__init__(
            pool_connections=cfg.pool_connections if cfg.pool_connections is not None else max(n, 10),
            pool_maxsize=cfg.pool_maxsize,
            max_retries=0,
            pool_block=cfg.pool_block,
        )
        _fork.register(self)

    # ------------------------------------------------------------ requests hooks

    @classmethod
    def session(cls, prefix: str, nodes: NodePool | Iterable[ServiceNode], **options: Any) -> requests.Session:
        """A new ``requests.Session`` with an adapter over ``nodes`` (``options`` as for
        the constructor) mounted on ``prefix`` (``"http://collectors/"``): for callers
        that should not load ``requests`` themselves."""
        session = requests.Session()
        session.mount(prefix, cls(nodes, **options))
        return session

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _http.POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools are urllib3's own
            manager.pool_classes_by_scheme = _http.POOL_CLASSES
        return manager

    def __getstate__(self) -> dict[str, Any]:
        # requests pickles adapters with their sessions. Node health and its locks do
        # not travel: the copy gets a fresh pool of the same nodes and settings.
        state: dict[str, Any] = HTTPAdapter.__getstate__(self)  # type: ignore[attr-defined]  # (untyped in the stubs)
        state["_rmw"] = (self.manager.nodes, self.manager.config, self.failover_config)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        nodes, pool_config, config = state.pop("_rmw")
        HTTPAdapter.__setstate__(self, state)  # type: ignore[attr-defined]
        self.manager = FailoverManager(nodes, config=pool_config)
        self.failover_config = config
        self.budget = _budget_of(config, self.manager)
        self.degradation = None
        self._set_tail_policies(config)
        self._targets = {node.id: _split_credentials(node.endpoint) for node in nodes}
        self._any_https = any(ep.startswith("https:") for ep, _ in self._targets.values())
        self._tls_checked = set()
        _fork.register(self)

    def _set_tail_policies(self, cfg: AdapterConfig) -> None:
        #: when to hedge (``None``: hedging is off)
        self.hedging = None if cfg.hedge_max_extra_load is None else HedgePolicy(
            cfg.hedge_max_extra_load, clock=self.manager.clock
        )
        #: client-side throttling of calls (``None``: off)
        self.throttle = None if not cfg.throttle else AdaptiveThrottle(
            cfg.throttle_window, cfg.throttle_success_ratio, cfg.throttle_max_rejection, clock=self.manager.clock
        )
        #: hedged requests sent so far
        self.hedges_sent = 0
        self._hedgers: concurrent.futures.ThreadPoolExecutor | None = None
        self._hedgers_lock = threading.Lock()

    def _after_fork_in_child(self) -> None:
        # The parent's hedging threads do not exist here; its lock may have been held.
        self._hedgers = None
        self._hedgers_lock = threading.Lock()
        if self.hedging is not None:
            self.hedging.after_fork_in_child()
        # The parent's pooled sockets are the parent's: the child starts with none.
        self.proxy_manager = {}
        pools, size, block = (getattr(self, a) for a in ("_pool_connections", "_pool_maxsize", "_pool_block"))
        self.init_poolmanager(pools, size, block=block)

    # The signature is requests' own: Session.send calls it by keyword.
    def send(  # noqa: PLR0917 - requests' own signature
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: _Timeout = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        throttle = self.throttle
        criticality = None
        if throttle is not None:
            criticality = _inbound.criticality()
            self._throttle(throttle, request, criticality)
        call = _Call(request, stream, timeout, verify, cert, proxies)
        hedging = self.hedging
        delay = None
        if hedging is not None and self._may_hedge(request):
            delay = hedging.call()
            known = hedging.delay  # (known even while hedging stands down)
            if known is not None:
                # a call that would be hedged away from a stalling node does not start there
                call.order = self.manager.call_order(pass_over=known)  # (None: none available)
        started = time.perf_counter()
        accepted: bool | None = None  # None: not the upstream's answer (the throttle leaves it out)
        try:
            resp = self._call(call) if delay is None else self._hedged(call, delay)
            accepted = _good(resp)
        except Exception as exc:
            accepted = None if _callers_own(exc) else False
            raise
        finally:
            if throttle is not None and accepted is not None:
                throttle.finished(accepted, criticality)
        if accepted and hedging is not None and delay is None:
            hedging.observe(time.perf_counter() - started)
        return resp

    def _throttle(self, throttle: AdaptiveThrottle, request: PreparedRequest, criticality: Criticality | None) -> None:
        """Refuse the call here if the throttle says so (see :class:`UpstreamThrottled`)."""
        chance = throttle.admit(criticality)
        if chance is None:
            return
        signals.send(signals.call_throttled, self.manager, criticality=criticality, probability=chance)
        requests_, accepts = throttle.totals()
        raise UpstreamThrottled(
            f"throttled here, nothing sent: the upstream accepted {accepts} of {requests_} calls in the last "
            f"{throttle.window:g} s (below {throttle.success_ratio:.0%}); refused with probability {chance:.2f}",
            request=request,
            probability=chance,
        )

    def _may_hedge(self, request: PreparedRequest) -> bool:
        """Whether the call may be sent twice at once: an idempotent method (or an
        ``Idempotency-Key``), a body that can be sent again, more than one node, and the
        service below Level1."""
        cfg = self.failover_config
        if (request.method or "GET").upper() not in cfg.idempotent_methods and IDEMPOTENCY_HEADER not in request.headers:
            return False
        degradation = self.degradation
        if degradation is not None and degradation.level >= DegradationLevel.Level1:
            return False
        return len(self.manager.nodes) > 1 and _replayable(request)

    def _hedged(self, call: _Call, delay: float) -> Response:
        """The call, with a hedge to another node if it has not answered after ``delay``
        (a :class:`~resilience_mw.failover.hedge.Race`)."""
        hedging = self.hedging
        assert hedging is not None
        race = call.race = Race(delay)
        context = contextvars.copy_context()  # the hedge runs in the caller's context
        handle = _http.call_at(time.monotonic() + delay, lambda: self._launch_hedge(race, call, context))
        answer: Response | None = None
        error: Exception | None = None
        try:
            try:
                answer = self._call(call)
            except LostRace:
                pass
            except Exception as exc:
                error = exc
            finally:
                _http.cancel(handle)
        except BaseException:
            race.abandon()  # an interrupt, not an outcome
            raise
        good = answer is not None and _good(answer)
        if good:  # (a primary cut by its hedge's answer is no latency: only "longer than the delay")
            hedging.observe(time.perf_counter() - call.started)
        elif answer is None and error is None and race.lost and call.node is not None:
            # cut because a copy sent a delay later, to another node, answered first
            self.manager.lost_race(call.node.id, time.perf_counter() - call.started)  # (not a failure)
        winner = race.primary_finished(answer, good, wait=_read_timeout(call.timeout))
        if winner is not None:
            assert isinstance(winner, Response)
            return winner
        if error is not None:
            raise error
        assert answer is not None
        return answer

    def _launch_hedge(self, race: Race, call: _Call, context: contextvars.Context) -> None:
        """At the hedge delay, on the watchdog's thread: claim the hedge and hand it to a
        hedge thread if the level and the budgets allow. Nothing here may block or run a
        user's code: the node is picked in the hedge thread."""
        hedging = self.hedging
        if hedging is None or call.node is None or not race.claim_backup():
            return
        if (
            (self.degradation is not None and self.degradation.level >= DegradationLevel.Level1)
            or hedging.widespread(*self.manager.waiting_past(race.delay))
            or not hedging.try_hedge()
            or (self.budget is not None and not self.budget.try_spend())
        ):
            race.backup_finished(None, False)
            return
        self._hedger_threads().submit(context.run, self._run_hedge, race, call)

    def _run_hedge(self, race: Race, call: _Call) -> None:
        busy = call.node
        backup = self._hedge_node(busy, race.delay)
        answer: Response | None = None
        try:
            if backup is None or busy is None or race.stopped(True):  # (the primary answered meanwhile)
                return
            with self._hedgers_lock:
                self.hedges_sent += 1
            signals.send(signals.hedge_sent, self.manager, node=busy, to_node=backup, delay=race.delay)
            hedge = dataclasses.replace(call, order=(backup,), budgeted=False, node=None, hedge=True)
            started = time.perf_counter()
            try:
                answer = self._call(hedge)
                if _good(answer) and self.hedging is not None:
                    self.hedging.observe(time.perf_counter() - started)
            except LostRace:
                pass  # the primary answered first
            except Exception as exc:  # the primary's outcome stands; the loop logged this one
                log.debug("hedge to %s failed: %s", backup.id, type(exc).__name__)
        finally:
            race.backup_finished(answer, answer is not None and _good(answer))

    def _hedge_node(self, busy: ServiceNode | None, delay: float) -> ServiceNode | None:
        """The node a hedge goes to: the strategy's pick (passing over a node stalling for
        longer than ``delay``), if not ``busy``, else the next."""
        order = self.manager.call_order(pass_over=delay)
        if order is None:
            return None
        if order.first is not busy:
            return order.first
        rest = order.rest()
        return rest[0] if rest else None

    def _hedger_threads(self) -> concurrent.futures.ThreadPoolExecutor:
        hedgers = self._hedgers
        if hedgers is None:
            with self._hedgers_lock:
                if self._hedgers is None:
                    self._hedgers = concurrent.futures.ThreadPoolExecutor(
                        max_workers=4 * self.failover_config.pool_maxsize, thread_name_prefix="resilience-hedge"
                    )
                hedgers = self._hedgers
        return hedgers

    def _call(self, call: _Call) -> Response:
        """The call across the nodes (:class:`FailoverLoop`): the strategy's order, or
        ``call.order``."""
        request, stream, timeout, verify, cert, proxies = (
            call.request, call.stream, call.timeout, call.verify, call.cert, call.proxies
        )
        cfg = self.failover_config
        order: CallOrder | tuple[ServiceNode, ...] | None = call.order or self.manager.call_order()
        if order is None:
            raise with_attempts(
                NoAvailableNodeConnectionError(
                    f"no healthy node among {[n.id for n in self.manager.nodes]} (panic routing is off)",
                    request=request,
                ),
                (),
            )
        self._check_caller_tls(request, verify, cert)
        safe = (
            cfg.retry_non_idempotent
            or (request.method or "GET").upper() in cfg.idempotent_methods
            or IDEMPOTENCY_HEADER in request.headers
        )
        replayable = _replayable(request)
        ends = None if cfg.deadline is None else time.monotonic() + cfg.deadline
        # the inbound request's deadline when it comes before the adapter's own: running
        # out of it is the caller's doing, never the node's
        callers: float | None = None
        inbound = inbound_deadline.get()
        if inbound is not None:
            # serving a request with a deadline: spend no more than what is left of it,
            # and pass it on to the node
            deadline, header = inbound
            by = time.monotonic() + (deadline - time.time())
            if ends is None or by < ends:
                ends = callers = by
            if header and header not in request.headers:
                request.headers[header] = str(int(deadline * 1000))
        timeout = cfg.default_timeout if timeout is None else timeout
        read_body = not stream and (ends is not None or cfg.max_body_bytes is not None)
        loop = FailoverLoop(
            self.manager,
            order,
            label=lambda: f"upstream {request.method} {_path(request)}",
            budget=self.budget if call.budgeted else None,
        )
        race = call.race
        for step in loop:
            if race is not None and race.stopped(call.hedge):  # the other side answered first
                raise LostRace  # (before trying this node: call.node stays the one cut)
            call.node = step.node
            if ends is not None and time.monotonic() >= ends:
                exc = DeadlineExceeded(
                    f"{self._deadline_name(callers)} passed before trying {step.node.id}", request=request
                )
                exc.callers = callers is not None
                loop.failed(step, exc, charge=False, go_on=False)
                raise exc
            with _http.attempt(ends) as ctx:
                if race is not None:
                    race.watch(ctx, call.hedge)
                try:
                    resp = self._attempt(request, step, stream, timeout, verify, cert, proxies, read_body, ctx, callers)
                except Exception as exc:
                    if race is not None:
                        race.unwatch(ctx, call.hedge)
                    if race is not None and race.stopped(call.hedge):
                        # cut because the other side answered first: nobody's fault, but
                        # the node was this slow at least
                        self.manager.note_latency(step.node.id, loop.elapsed())
                        raise LostRace from exc
                    if isinstance(exc, requests.RequestException):
                        _detach_node_credentials(exc, request)
                    if isinstance(exc, (*_CALLER_ERRORS, ResponseTooLarge)) or not isinstance(
                        exc, (requests.RequestException, urllib3.exceptions.HTTPError)
                    ):
                        loop.failed(step, exc, charge=False, go_on=False)
                        raise
                    if callers is not None and _ran_out(ctx, exc, callers):
                        # The caller's deadline ended the attempt, not the node: no failure,
                        # no ejection, and no other node to blame in its turn.
                        if isinstance(exc, DeadlineExceeded):
                            loop.failed(step, exc, charge=False, go_on=False)
                            raise
                        passed = self._deadline_passed(request, step, callers)
                        loop.failed(step, passed, charge=False, go_on=False)
                        raise passed from exc
                    # Another node only if this one provably never saw the request, or
                    # seeing it twice is harmless; never once the deadline has passed.
                    go_on = not isinstance(exc, DeadlineExceeded) and (
                        _unsent(ctx, exc) or (safe and replayable)
                    )
                    if loop.failed(step, exc, go_on=go_on):
                        continue
                    raise
                if race is not None:
                    # answered: from here its connection is the response's (then the pool's),
                    # never cut
                    race.unwatch(ctx, call.hedge)
            status = resp.status_code
            if status in cfg.retry_statuses:
                wait = _retry_after(resp, self.manager.config.max_ejection_time) if status in (429, 503) else None
                if step.next is not None and safe and replayable:
                    resp.close()
                    loop.failed(step, UpstreamStatusError(status, wait), hold_off=wait)
                    continue
                loop.charge(step, hold_off=wait)
            elif status >= 500:
                loop.charge(step)
            else:
                loop.succeeded(step)
            return self._finish(resp, request, step.node)
        raise AssertionError("unreachable: an empty order")  # pragma: no cover

    # ----------------------------------------------------------------- helpers

    def _attempt(  # noqa: PLR0917 - the attempt's whole context
        self,
        request: PreparedRequest,
        step: Try,
        stream: bool,
        timeout: _Timeout,
        verify: bool | str,
        cert: Any,
        proxies: Mapping[str, str] | None,
        read_body: bool,
        ctx: _http.AttemptContext,
        callers: float | None,
    ) -> Response:
        """Send one attempt to ``step.node``; the body too when ``read_body``.
        ``callers``: the inbound deadline, when it is the one ``ctx.deadline`` holds."""
        attempt = self._prepare(request, step.node, first=step.position == 0)
        try:
            resp = super().send(
                attempt,
                stream=stream,
                timeout=_clamp(timeout, ctx.deadline),  # type: ignore[arg-type]  # (None, x) is valid
                verify=verify,
                cert=cert,
                proxies=_proxies_for(attempt.url or "", proxies),
            )
            if read_body:
                resp._content = _http.read_bounded(resp, self.failover_config.max_body_bytes, ResponseTooLarge)
                resp._content_consumed = True  # type: ignore[attr-defined]
        except requests.RequestException as exc:
            if ctx.expired:
                raise self._deadline_passed(request, step, callers) from exc
            raise
        if ctx.expired:
            # The watchdog's shutdown can read as a clean end: a head cut mid-header, or
            # a body without a length. Whatever arrived is not the whole answer.
            resp.close()
            raise self._deadline_passed(request, step, callers)
        return resp

    def _deadline_passed(self, request: PreparedRequest, step: Try, callers: float | None) -> DeadlineExceeded:
        exc = DeadlineExceeded(f"{self._deadline_name(callers)} passed on node {step.node.id}", request=request)
        exc.callers = callers is not None
        return exc

    def _deadline_name(self, callers: float | None) -> str:
        """Which deadline bounds the call, for messages (``callers``: the inbound one does)."""
        deadline = self.failover_config.deadline
        return "the inbound request's deadline" if callers is not None or deadline is None else f"deadline of {deadline:g}s"

    def _check_caller_tls(self, request: PreparedRequest, verify: bool | str, cert: Any) -> None:
        """Load the caller's CA bundle and client certificate once: if they are broken,
        that is the caller's error, not every node's."""
        if not self._any_https:
            return
        files = (verify if isinstance(verify, str) else None, cert if isinstance(cert, (str, tuple)) else None)
        if files == (None, None):
            return
        key = (*files, *(os.path.getmtime(f) if isinstance(f, str) and os.path.exists(f) else None for f in files))
        if key in self._tls_checked:
            return
        ca, client = files
        try:
            context = ssl.create_default_context()
            if ca is not None and os.path.exists(ca):
                if os.path.isdir(ca):
                    context.load_verify_locations(capath=ca)
                else:
                    context.load_verify_locations(cafile=ca)
            if client is not None:
                certfile, keyfile = (client, None) if isinstance(client, str) else client
                if os.path.exists(certfile) and (keyfile is None or os.path.exists(keyfile)):
                    context.load_cert_chain(certfile, keyfile)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise requests.exceptions.SSLError(
                f"the TLS files given to requests do not load: {exc}", request=request
            ) from exc
        # (a missing file is left to requests, which raises OSError naming it)
        if len(self._tls_checked) < 64:
            self._tls_checked.add(key)

    def _prepare(self, request: PreparedRequest, node: ServiceNode, *, first: bool) -> PreparedRequest:
        # A shallow copy: urllib3 reads method, URL, headers and body, and nothing here
        # changes them in place (``PreparedRequest.copy`` would also copy the cookie jar,
        # a quarter of the adapter's own cost per request). Headers are copied only to
        # add the node's credentials.
        attempt = PreparedRequest()
        attempt.__dict__.update(request.__dict__)
        endpoint, auth = self._targets[node.id]
        attempt.url = _rewrite(request.url or "", endpoint)
        if auth is not None and "Authorization" not in request.headers:
            attempt.headers = request.headers.copy()
            auth(attempt)
        if not first and isinstance(getattr(request, "_body_position", None), int):
            rewind_body(attempt)
        return attempt

    def _finish(self, resp: Response, request: PreparedRequest, node: ServiceNode) -> Response:
        endpoint, _ = self._targets[node.id]
        location = resp.headers.get("Location")
        if location:
            resp.headers["Location"] = _logical_location(location, endpoint, request.url or "")
        resp.url = request.url or resp.url  # logical URL: relative redirects come back here
        resp.request = request
        resp.resilience_node = node.id  # type: ignore[attr-defined]
        return resp

    def __repr__(self) -> str:
        return f"FailoverAdapter({self.manager!r})"


def _detach_node_credentials(exc: requests.RequestException, request: PreparedRequest) -> None:
    """Point ``exc`` at the caller's own request instead of the attempt sent to a node,
    which carries the node's URL and ``Authorization`` header."""
    exc.request = request
    if exc.response is not None:
        exc.response.request = request


def _split_credentials(endpoint: str) -> tuple[str, HTTPBasicAuth | None]:
    """``http://user:pw@host`` -> (``http://host``, basic auth for user/pw)."""
    parts = urlsplit(endpoint)
    if "@" not in parts.netloc:
        return endpoint, None
    user, password = get_auth_from_url(endpoint)
    clean = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return clean, HTTPBasicAuth(user, password)


def _rewrite(url: str, endpoint: str) -> str:
    """``http://orders/api/x?q=1`` on node ``http://10.0.0.1:8080/base`` ->
    ``http://10.0.0.1:8080/base/api/x?q=1``."""
    u = urlsplit(url)
    e = urlsplit(endpoint)
    return urlunsplit((e.scheme, e.netloc, e.path.rstrip("/") + (u.path or "/"), u.query, ""))


def _logical_location(location: str, endpoint: str, logical_url: str) -> str:
    """A ``Location`` the node gave, in the logical URL space: the node's own origin and
    base path are swapped for the logical ones, so following the redirect comes back
    through the adapter without the base path twice. Other locations stay as they are."""
    e = urlsplit(endpoint)
    base = e.path.rstrip("/")
    absolute = urljoin(urlunsplit((e.scheme, e.netloc, base + "/", "", "")), location)
    a = urlsplit(absolute)
    if (a.scheme, a.netloc) != (e.scheme, e.netloc) or not (a.path == base or a.path.startswith(base + "/")):
        return location  # elsewhere: not ours to rewrite
    u = urlsplit(logical_url)
    return urlunsplit((u.scheme, u.netloc, a.path[len(base) :] or "/", a.query, a.fragment))


def _proxies_for(node_url: str, proxies: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """The caller's proxies as they apply to the node: requests applied ``NO_PROXY`` to
    the logical host; a node that ``NO_PROXY`` names gets no proxy from the environment."""
    if not proxies or not should_bypass_proxies(node_url, no_proxy=proxies.get("no_proxy")):
        return proxies
    env = getproxies()
    return {scheme: proxy for scheme, proxy in proxies.items() if env.get(scheme) != proxy}


#: how early a timeout may fire and still be the inbound deadline's (the socket's timer
#: and ``time.monotonic()`` round differently)
_TIMER_SLACK = 0.001


def _ran_out(ctx: _http.AttemptContext, exc: BaseException, callers: float) -> bool:
    """Whether the attempt ended because the inbound deadline ``callers`` passed: it was
    cut by the watchdog or by a timeout, and that deadline had passed by then. A timeout
    that fired before it (the caller's own, shorter ``timeout``) is the node's."""
    timed_out = ctx.expired or isinstance(exc, requests.Timeout) or isinstance(exc.__cause__, ReadTimeoutError)
    return timed_out and time.monotonic() >= callers - _TIMER_SLACK


def _path(request: PreparedRequest) -> str:
    return redact_url(urlsplit(request.url or "").path or "/", query=False)


def _clamp(timeout: _Timeout, ends: float | None) -> _Timeout:
    """The per-attempt timeout, shortened so the attempt ends by the deadline."""
    if ends is None or not (timeout is None or isinstance(timeout, (int, float, tuple))):
        return timeout  # e.g. a urllib3 Timeout object: passed through as requests would
    left = max(0.001, ends - time.monotonic())
    if timeout is None:
        return left
    if isinstance(timeout, tuple):
        connect, read = timeout
        return (left if connect is None else min(connect, left), left if read is None else min(read, left))
    return min(float(timeout), left)
