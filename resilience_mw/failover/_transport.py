"""HTTP plumbing under the adapter: what requests and urllib3 do not tell us.

* **Was anything sent?** Connections made through :data:`POOL_CLASSES` record, in the
  calling thread's :class:`AttemptContext`, whether any byte of the request was written
  to the node (connecting, a TLS handshake and a proxy's CONNECT do not count). Only a
  failure before that point proves the node never saw the request, which is what makes
  sending a POST to another node safe.
* **A deadline for every phase.** :func:`attempt` arms a process-wide watchdog: when the
  deadline passes, the socket of the attempt is shut down, so a node that trickles its
  response head or sends ``100 Continue`` forever cannot hold the caller.
* **Interim responses.** ``102``/``103`` (Early Hints) are skipped like ``100`` (Python's
  http.client takes them for the final answer and the connection then answers every
  later request with the previous response).
* **Transfer codings.** A body is framed as urllib3 (and so a plain ``HTTPAdapter``)
  frames it, also where the adapter reads it through http.client itself: chunked
  whenever ``chunked`` is among the codings (``gzip, chunked``, ``identity, chunked``,
  ``chunked, chunked``), else by ``Content-Length`` or the connection's end. Other
  codings are not decoded, as requests does not decode them. No coding is refused: a
  plain adapter frames every one of them this way, and refusing would only make the
  adapter fail where requests does not. The one difference kept: the connection of
  such an answer is never reused, so bytes that a confused framing left behind (the rest
  of a ``gzip`` body cut at its ``Content-Length``) cannot become the next request's
  response.
* :func:`read_bounded`: read a body within a size limit.
* :func:`call_at` / :func:`cancel`: run a short callback on the watchdog's thread at a
  time (what launches a hedged request), without a thread per call.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import urllib3
from requests.models import Response
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError

from .. import _fork

__all__ = [
    "POOL_CLASSES",
    "AttemptContext",
    "attempt",
    "call_at",
    "cancel",
    "read_bounded",
]

log = logging.getLogger(__name__)

_local = threading.local()


class AttemptContext:
    """What one attempt's connection did; written by the connection, read by the adapter."""

    __slots__ = ("_lock", "cut_off", "deadline", "expired", "racing", "sent", "sock", "tracked")

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        #: a connection of ours took part (without one, ``sent`` proves nothing)
        self.tracked = False
        #: at least one byte of the request was handed to the socket
        self.sent = False
        #: the watchdog fired
        self.expired = False
        #: another thread may :meth:`cut` it (a hedged call's attempt)
        self.racing = False
        #: it was cut: the other side of its race answered first
        self.cut_off = False
        self.sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def unsent(self) -> bool:
        """Whether the request provably never reached the node."""
        return self.tracked and not self.sent

    def attach(self, sock: socket.socket | None) -> None:
        """Remember the attempt's socket; shut it at once if the deadline already passed
        or the attempt was cut."""
        if self.deadline is None and not self.racing:  # nobody else reads it: no lock needed
            self.sock = sock
            return
        with self._lock:
            self.sock = sock
            stop = self.expired or self.cut_off
        if stop:
            _shut(sock)

    def cut(self) -> None:
        """Stop the attempt from another thread: its socket is shut now, or as soon as it
        has one (a connect in progress cannot be interrupted; it is cut when it returns,
        before any byte of the request is sent)."""
        with self._lock:
            self.cut_off = True
            sock = self.sock
        _shut(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self.sock
        _shut(sock)


class _Timer:
    """A callback for the watchdog to run at ``deadline``."""

    __slots__ = ("deadline", "fn")

    def __init__(self, deadline: float, fn: Callable[[], object]) -> None:
        self.deadline = deadline
        self.fn = fn

    def expire(self) -> None:
        self.fn()


def call_at(deadline: float, fn: Callable[[], object]) -> int:
    """Run ``fn`` on the watchdog's thread at ``deadline`` (``time.monotonic()``) unless
    :func:`cancel` ed first. ``fn`` must be short and must not block: every deadline of
    the process waits for it."""
    return _WATCHDOG.arm(_Timer(deadline, fn))


def cancel(handle: int) -> None:
    """Do not run the callback of ``handle`` (if it has not run yet)."""
    _WATCHDOG.disarm(handle)


def _shut(sock: socket.socket | None) -> None:
    if sock is None:
        return
    with contextlib.suppress(OSError):
        # socket.socket's own shutdown, also for an SSLSocket: its override would drop
        # the TLS object under the reading thread's feet.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def current() -> AttemptContext | None:
    ctx: AttemptContext | None = getattr(_local, "ctx", None)
    return ctx


class attempt:
    """``with attempt(deadline) as ctx``: run one attempt in the calling thread;
    ``deadline`` (``time.monotonic()``) arms the watchdog for it. (A class, not a
    generator: it is on every request's path.)"""

    __slots__ = ("_ctx", "_handle", "_previous")

    def __init__(self, deadline: float | None) -> None:
        self._ctx = AttemptContext(deadline)
        self._handle: int | None = None

    def __enter__(self) -> AttemptContext:
        self._previous = current()
        _local.ctx = ctx = self._ctx
        if ctx.deadline is not None:
            self._handle = _WATCHDOG.arm(ctx)
        return ctx

    def __exit__(self, *exc: object) -> None:
        _local.ctx = self._previous
        if self._handle is not None:
            _WATCHDOG.disarm(self._handle)


class _Watchdog:
    """One daemon thread per process that expires attempts at their deadline. It
    exits after a second with nothing to watch and starts again on the next arm."""

    _fork_order = 0
    IDLE_EXIT = 1.0

    def __init__(self) -> None:
        self._reset()
        _fork.register(self)

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, AttemptContext | _Timer]] = []
        self._live: set[int] = set()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def _after_fork_in_child(self) -> None:
        self._reset()  # the thread did not survive the fork; its lock may be held

    def arm(self, ctx: AttemptContext | _Timer) -> int:
        assert ctx.deadline is not None
        handle = next(self._seq)
        with self._cond:
            heapq.heappush(self._heap, (ctx.deadline, handle, ctx))
            self._live.add(handle)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="resilience_mw-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()
        return handle

    def disarm(self, handle: int) -> None:
        with self._cond:
            self._live.discard(handle)

    def _run(self) -> None:
        while True:
            due: list[AttemptContext | _Timer] = []
            with self._cond:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)  # finished in time
                if not self._heap:
                    if not self._cond.wait(self.IDLE_EXIT) and not self._heap:
                        self._thread = None
                        return
                    continue
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, handle, ctx = heapq.heappop(self._heap)
                    if handle in self._live:
                        self._live.discard(handle)
                        due.append(ctx)
                if not due:
                    self._cond.wait(self._heap[0][0] - now)
            for ctx in due:
                try:
                    ctx.expire()
                except Exception:  # never let one bad socket or callback stop the watchdog
                    log.exception("deadline watchdog: could not close a socket or run a callback")


_WATCHDOG = _Watchdog()


class _Response(http.client.HTTPResponse):
    """http.client's response, skipping every interim (1xx) answer but 101, and framing
    a body whose ``Transfer-Encoding`` lists more than ``chunked`` as urllib3 does."""

    def _read_status(self) -> tuple[str, int, str]:
        while True:
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not (100 < status < 200) or status == 101:
                return version, status, reason
            http.client._read_headers(self.fp)  # type: ignore[attr-defined]  # drop the interim headers

    def begin(self) -> None:
        super().begin()
        if self.headers.get("transfer-encoding") is None:
            return
        # urllib3 joins every Transfer-Encoding line and reads the body chunk by chunk if
        # any coding is "chunked"; http.client frames it as chunked only for exactly
        # "chunked" in the first line, else by Content-Length or until the connection
        # ends, which would hand raw chunk framing to whoever reads through http.client
        # (read1: the adapter's deadline and max_body_bytes modes).
        codings = [c.strip().lower() for line in self.headers.get_all("transfer-encoding", ()) for c in line.split(",")]
        if codings == ["chunked"]:
            return
        if "chunked" in codings:
            self.chunked, self.chunk_left = True, None
            no_body = self.status in (204, 304) or 100 <= self.status < 200 or self._method == "HEAD"  # type: ignore[attr-defined]
            self.length = 0 if no_body else None  # a Content-Length is ignored, as by urllib3
        # Framing the node did not state plainly: read this answer, then close.
        self.will_close = True


class _Tracked:
    """Records, in the thread's AttemptContext, the socket and whether anything was sent."""

    response_class = _Response
    _rmw_connecting = False
    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        ctx = current()
        if ctx is not None:
            ctx.tracked = True
            ctx.attach(sock)  # from here the watchdog can cut a slow TLS handshake too
        return sock

    def connect(self) -> None:
        self._rmw_connecting = True  # a proxy's CONNECT is sent from inside connect()
        try:
            super().connect()  # type: ignore[misc]
        finally:
            self._rmw_connecting = False

    def send(self, data: Any) -> None:
        ctx = current()
        if ctx is not None and not self._rmw_connecting:
            if self.sock is None:
                self.connect()  # http.client would connect inside send: connect errors send nothing
            ctx.tracked = True
            ctx.sent = True
            ctx.attach(self.sock)
        super().send(data)  # type: ignore[misc]


class _HTTPConnection(_Tracked, HTTPConnection):  # type: ignore[misc]  # response_class narrows
    pass


class _HTTPSConnection(_Tracked, HTTPSConnection):  # type: ignore[misc]
    pass


class _HTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


#: urllib3 pool classes whose connections record what they sent
POOL_CLASSES: dict[str, type[HTTPConnectionPool]] = {
    "http": _HTTPConnectionPool,
    "https": _HTTPSConnectionPool,
}


def read_bounded(resp: Response, limit: int | None, too_large: type[requests.RequestException]) -> bytes:
    """Read ``resp``'s whole body, raising ``too_large`` past ``limit`` bytes; urllib3's
    errors come out as requests' own (as ``Response.iter_content`` would raise them).
    The response is closed if reading fails."""
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := _read1(resp):
            size += len(chunk)
            if limit is not None and size > limit:
                raise too_large(f"response body exceeds max_body_bytes={limit}", response=resp)
            chunks.append(chunk)
    except BaseException:
        resp.close()
        raise
    return b"".join(chunks)


def _read1(resp: Response) -> bytes:
    try:
        # read1 returns whatever has arrived: a trickled body does not wait for a full chunk
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
