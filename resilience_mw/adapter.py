"""FailoverAdapter: a requests transport adapter that fails over between upstream nodes.

Mount it on a logical prefix; requests under that prefix go to a node chosen by the
strategy, and on failure to the next node, the way Envoy would, without a proxy::

    session = requests.Session()
    session.mount("http://orders/", FailoverAdapter([
        ServiceNode("a", "http://10.0.0.1:8080", priority=10),
        ServiceNode("b", "http://10.0.0.2:8080", priority=5),
    ]))
    session.get("http://orders/api/x?q=1", timeout=(1, 5))   # -> http://10.0.0.1:8080/api/x?q=1

Safety first. A request that never reached a node (connection refused, DNS failure,
connect timeout, TLS handshake failure) fails over whatever its method. A request that
may have reached it (read timeout, reset after sending, a garbage answer, a status in
``retry_statuses``) fails over only if its method is idempotent (GET, HEAD, OPTIONS,
PUT, DELETE, TRACE), the request carries an ``Idempotency-Key`` header, or the adapter
was built with ``retry_non_idempotent=True`` (e.g. for OTLP export, where a duplicate
is acceptable). A POST never reaches two nodes otherwise. A body that cannot be
replayed (a generator, a non-seekable file) is never sent twice.

The failover loop owns the retry budget: urllib3's own retries stay at zero. Each
attempt gets the caller's ``timeout`` (``default_timeout`` when it is ``None``), and
``deadline`` bounds the whole call. Without ``stream=True`` the body is read inside the
adapter, at most ``max_body_bytes`` of it and within the deadline, so an endless or
broken body costs bounded time and memory and can fail over too.

When every node fails the adapter raises :class:`FailoverConnectionError`, both a
``requests.ConnectionError`` and an :class:`~resilience_mw.AllNodesFailedError` with
every attempt. When it stops early because failing over would not be safe, the
original error (``ReadTimeout``, ``ConnectionError``...) propagates. When the last
node answers with a retryable status, that response is returned (call
``raise_for_status()`` as usual).

The response's ``url`` is the logical URL (so relative redirects come back through the
adapter) and ``response.resilience_node`` names the node that answered.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from requests.models import PreparedRequest, Response
from requests.utils import get_auth_from_url, rewind_body
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from . import _validate as v
from . import signals
from ._redact import describe_error, redact_url
from .config import AdapterConfig, PoolConfig
from .exceptions import AllNodesFailedError, Attempt, ConfigError, NoAvailableNodeError, ResilienceError
from .failover import FailoverManager
from .model import FailoverStrategy, ServiceNode

__all__ = [
    "FailoverAdapter",
    "FailoverConnectionError",
    "NoAvailableNodeConnectionError",
    "ResponseTooLarge",
    "UpstreamStatusError",
]

log = logging.getLogger(__name__)

#: what requests accepts as ``timeout``: seconds, (connect, read) with None for no bound, or None
_Timeout = float | tuple[float | None, float | None] | None

#: a request header that marks a request safe to send twice
IDEMPOTENCY_HEADER = "Idempotency-Key"


class FailoverConnectionError(AllNodesFailedError, requests.ConnectionError):
    """Every node failed; ``attempts`` has each try (node id, error, seconds)."""

    def __init__(self, attempts: list[Attempt], request: PreparedRequest | None = None) -> None:
        AllNodesFailedError.__init__(self, attempts)
        self.request = request
        self.response = None


class NoAvailableNodeConnectionError(NoAvailableNodeError, requests.ConnectionError):
    """No node is healthy (and panic mode is off): nothing was sent."""

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
    """A non-streamed response body exceeded ``max_body_bytes``."""


class _DeadlineExceeded(ResilienceError, requests.Timeout):
    """The overall deadline passed before or while reading a response."""


def _never_reached(exc: BaseException) -> bool:
    """Whether the request certainly did not reach the node (safe to send elsewhere)."""
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.ReadTimeout):
        reason = exc.args[0] if exc.args else None
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        return isinstance(reason, (NewConnectionError, ConnectTimeoutError))
    return False


def _retry_after(resp: Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _replayable(request: PreparedRequest) -> bool:
    body: object = request.body  # typed bytes | str | None, but generators and files happen
    if body is None or isinstance(body, (bytes, str)):
        return True
    # A file-like body can be sent again only if requests recorded where it started
    # (it stores a sentinel object, not an int, when tell() failed).
    return isinstance(getattr(request, "_body_position", None), int) and hasattr(body, "seek")


class FailoverAdapter(HTTPAdapter):
    """A :class:`requests.adapters.HTTPAdapter` that fails over between nodes.

    :param nodes_or_manager: a list of :class:`ServiceNode`, or a :class:`FailoverManager`
        to share node health with a health checker or other adapters.
    :param strategy: the :class:`FailoverStrategy` (only with a node list).
    :param config: an :class:`~resilience_mw.config.AdapterConfig`; or pass its fields
        as keyword arguments: ``retry_statuses``, ``idempotent_methods``,
        ``retry_non_idempotent``, ``default_timeout``, ``deadline``,
        ``max_body_bytes``, ``pool_connections``, ``pool_maxsize``, ``pool_block``.
    :param pool_config: a :class:`~resilience_mw.config.PoolConfig` for the manager
        built from a node list; or pass its fields (``failure_threshold``, ``panic``,
        ...) as keyword arguments.
    :param clock: monotonic clock of the manager built from a node list.
    """

    def __init__(
        self,
        nodes_or_manager: FailoverManager | Iterable[ServiceNode],
        strategy: FailoverStrategy | str | None = None,
        *,
        config: AdapterConfig | None = None,
        pool_config: PoolConfig | None = None,
        clock: Callable[[], float] | None = None,
        **options: Any,
    ) -> None:
        adapter_fields = {f.name for f in dataclasses.fields(AdapterConfig)}
        v.reject_unknown_keys("", options, [*adapter_fields, *(f.name for f in dataclasses.fields(PoolConfig))])
        pool_options = {k: options.pop(k) for k in list(options) if k not in adapter_fields}
        if strategy is not None:
            pool_options["strategy"] = strategy
        if isinstance(nodes_or_manager, FailoverManager):
            if pool_options or pool_config is not None or clock is not None:
                raise ConfigError(
                    "pool options", sorted(pool_options) or pool_config or clock,
                    "not allowed with a FailoverManager: they are the manager's own",
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
        # Credentials in a node's endpoint go in an Authorization header (urllib3 ignores
        # them in the URL) and never into the URL requested, so errors cannot show them.
        self._targets = {node.id: _split_credentials(node.endpoint) for node in manager.nodes}
        # One pool per node and then some: fewer pools than nodes would churn connections.
        super().__init__(
            pool_connections=cfg.pool_connections if cfg.pool_connections is not None else max(n, 10),
            pool_maxsize=cfg.pool_maxsize,
            max_retries=0,
            pool_block=cfg.pool_block,
        )

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
        order = self.manager.failover_order()
        if not order:
            raise NoAvailableNodeConnectionError(
                f"no healthy node among {[n.id for n in self.manager.nodes]}", request=request
            )
        safe = (
            self.failover_config.retry_non_idempotent
            or (request.method or "GET").upper() in self.failover_config.idempotent_methods
            or IDEMPOTENCY_HEADER in request.headers
        )
        replayable = _replayable(request)
        ends = None if self.failover_config.deadline is None else time.monotonic() + self.failover_config.deadline
        attempt_timeout = timeout if timeout is not None else self.failover_config.default_timeout
        attempts: list[Attempt] = []
        for i, node in enumerate(order):
            nxt = order[i + 1] if i + 1 < len(order) else None
            if ends is not None and time.monotonic() >= ends:
                attempts.append(Attempt(node.id, _DeadlineExceeded("deadline passed before trying"), 0.0))
                break
            attempt = self._prepare(request, node, first=i == 0)
            start = time.perf_counter()
            # The whole attempt, body included, gets the timeout's budget (connect + read):
            # a body trickled in just under the read timeout cannot hold it forever.
            budget = _budget(attempt_timeout)
            attempt_ends = ends if budget is None else min(ends or math.inf, time.monotonic() + budget)
            try:
                resp = super().send(
                    attempt,
                    stream=True,
                    timeout=_clamp(attempt_timeout, ends),  # type: ignore[arg-type]  # (None, x) is valid
                    verify=verify,
                    cert=cert,
                    proxies=proxies,
                )
                if not stream:
                    self._read_body(resp, attempt_ends)
            except (requests.RequestException, ResilienceError) as exc:
                elapsed = time.perf_counter() - start
                _detach_node_credentials(exc, request)
                self.manager.mark_failure(node.id)
                attempts.append(Attempt(node.id, exc, elapsed))
                if nxt is None:
                    break
                if not _never_reached(exc) and not (safe and replayable):
                    # It may have been received: sending it elsewhere could duplicate it.
                    log.warning(
                        "%s %s to node %s failed after it may have been received; not failing over: %s",
                        request.method,
                        _path(request),
                        node.id,
                        describe_error(exc),
                    )
                    raise
                self._failed_over(node, nxt, exc, request)
                continue
            elapsed = time.perf_counter() - start
            status = resp.status_code
            if status in self.failover_config.retry_statuses:
                wait = _retry_after(resp) if status in (429, 503) else None
                if wait:
                    self.manager.hold_off(node.id, wait)
                else:
                    self.manager.mark_failure(node.id)
                if nxt is not None and safe and replayable:
                    error = UpstreamStatusError(status, wait)
                    attempts.append(Attempt(node.id, error, elapsed))
                    resp.close()
                    self._failed_over(node, nxt, error, request)
                    continue
            elif status >= 500:
                self.manager.mark_failure(node.id)
            else:
                self.manager.mark_success(node.id, elapsed)
            return self._finish(resp, request, node)
        raise FailoverConnectionError(attempts, request=request) from (
            attempts[-1].error if attempts else None
        )

    # ----------------------------------------------------------------- helpers

    def _prepare(self, request: PreparedRequest, node: ServiceNode, *, first: bool) -> PreparedRequest:
        attempt = request.copy()
        endpoint, auth = self._targets[node.id]
        attempt.url = _rewrite(request.url or "", endpoint)
        if auth is not None and "Authorization" not in attempt.headers:
            auth(attempt)
        if not first and isinstance(getattr(request, "_body_position", None), int):
            rewind_body(attempt)
        return attempt

    def _read_body(self, resp: Response, ends: float | None) -> None:
        """Read the whole body now, bounded in size and by the deadline."""
        limit = self.failover_config.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            # read1 returns as soon as any bytes are there (iter_content waits to fill a
            # whole chunk), so the deadline is checked even against a trickled body.
            while chunk := _read1(resp):
                size += len(chunk)
                if limit is not None and size > limit:
                    raise ResponseTooLarge(f"response body exceeds max_body_bytes={limit}", response=resp)
                if ends is not None and time.monotonic() > ends:
                    raise _DeadlineExceeded("time ran out while reading the response body", response=resp)
                chunks.append(chunk)
        except BaseException:
            resp.close()
            raise
        resp._content = b"".join(chunks)
        resp._content_consumed = True  # type: ignore[attr-defined]

    def _finish(self, resp: Response, request: PreparedRequest, node: ServiceNode) -> Response:
        resp.url = request.url or resp.url  # logical URL: relative redirects come back here
        resp.request = request
        resp.resilience_node = node.id  # type: ignore[attr-defined]
        return resp

    def _failed_over(
        self, node: ServiceNode, nxt: ServiceNode, error: BaseException, request: PreparedRequest
    ) -> None:
        log.warning(
            "%s %s: node %s failed (%s); trying %s",
            request.method,
            _path(request),
            node.id,
            describe_error(error),
            nxt.id,
        )
        signals.send(signals.failover, self.manager, from_node=node, to_node=nxt, error=error)

    def __repr__(self) -> str:
        return f"FailoverAdapter({self.manager!r})"


def _detach_node_credentials(exc: BaseException, request: PreparedRequest) -> None:
    """Point ``exc`` at the caller's own request instead of the attempt sent to a node,
    which carries the node's URL and ``Authorization`` header."""
    if isinstance(exc, requests.RequestException):
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


def _path(request: PreparedRequest) -> str:
    return redact_url(urlsplit(request.url or "").path or "/")


def _read1(resp: Response) -> bytes:
    """One ``read1`` of the body, with urllib3's errors turned into requests' own, as
    ``Response.iter_content`` does."""
    try:
        data: bytes = resp.raw.read1(64 * 1024, decode_content=True)
    except ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc, response=resp) from exc
    except DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc, response=resp) from exc
    except ReadTimeoutError as exc:
        raise requests.ConnectionError(exc, response=resp) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc, response=resp) from exc
    return data


def _budget(timeout: _Timeout) -> float | None:
    """Seconds one attempt may take in all: connect + read, or ``None`` for no bound."""
    if isinstance(timeout, (int, float)):
        return 2 * float(timeout)  # requests applies a plain number to connect and to read
    if isinstance(timeout, tuple) and all(isinstance(t, (int, float)) for t in timeout):
        return float(sum(timeout))  # type: ignore[arg-type]
    return None


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
