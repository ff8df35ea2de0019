"""The durable OTLP/HTTP export: a queue of encoded batches and the threads that post them.

:class:`OTLPExport` owns one :class:`~.queue.ExportQueue` and the sender threads. The
SDK exporters (:mod:`.exporters`) put encoded batches in it and return at once; the
senders post them through a ``requests`` session, normally one with a
:class:`~resilience_mw.adapter.FailoverAdapter` mounted over the collectors, so that
failover, ``Retry-After``, the retry budget and the deadline all apply::

    session = requests.Session()
    session.mount("http://collector/", FailoverAdapter(nodes, retry_non_idempotent=True))
    export = OTLPExport(session, "http://collector", queue=DiskQueue("/var/run/app/otlp.db"))

A sender takes up to ``merge`` queued batches at once and posts those of one signal as
one request (at most ``max_post_bytes``): encoded ``Export*ServiceRequest`` messages
concatenated are one message holding all their resources, so a backlog drains in far
fewer posts. Each answer is judged, for all the batches in the post, as the OTLP/HTTP
specification says:

* 2xx: delivered, the batch is deleted; a partial success (``rejected_spans`` ...) is
  logged and its rejected items counted as dropped (``partial``), never sent again;
* 429, 502, 503, 504, or no answer (refused, reset, timed out, every collector down):
  the batch goes back to the head of the queue and every sender waits: an exponential
  back-off with jitter (``backoff`` doubling up to ``max_backoff``, each wait between
  half and one and a half times that), or longer when the collector's ``Retry-After``
  asks for it (up to ``max_retry_after``);
* any other status: the collector will never take it: dropped (``rejected``) and logged
  (a post of several batches is first tried again batch by batch, so that one bad batch
  does not take the others with it).

It never hurts the app: :meth:`OTLPExport.put` waits only with the queue's
``when_full="block"`` (at most ``block_timeout``); :meth:`~OTLPExport.shutdown` and
:meth:`~OTLPExport.force_flush` return within their timeouts; with a disk queue,
shutdown stops posting and leaves what is queued in the file for the next start.

It degrades with the service (``degradation``): while the level is above Normal, log
batches may fill at most ``log_share`` of the queue (the rest is kept for spans and
metrics), and the exporters drop what the feature table has turned off (debug logs from
Level2, spans of a feature that is off): counted as ``shed``.
"""

from __future__ import annotations

import atexit
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ... import _fork, signals
from ... import _validate as v
from ...degradation.manager import AutoDegradationManager
from ...exceptions import ConfigError
from ...model import DegradationLevel, retry_after_seconds
from .queue import SIGNALS, Batch, ExportQueue, MemoryQueue

__all__ = ["RETRYABLE", "OTLPExport", "partial_rejection"]

log = logging.getLogger(__name__)

#: statuses the OTLP/HTTP specification says to retry
RETRYABLE = frozenset({429, 502, 503, 504})
#: the path of each signal under the collector's base URL
PATHS: Mapping[str, str] = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}
#: seconds between reports of the queue's size (``telemetry_queue_sampled``)
SAMPLE_EVERY = 1.0

#: exports started and not shut down (what :func:`_at_exit` closes)
_LIVE: weakref.WeakSet[OTLPExport] = weakref.WeakSet()


@atexit.register
def _at_exit() -> None:
    """At interpreter exit, close every export nobody shut down: a memory queue's batches
    are counted ``unsent_at_exit`` (and logged), a disk queue's are left in its file
    for the next start. Never waits on a collector."""
    for export in list(_LIVE):
        try:
            export.close_at_exit()
        except Exception:  # (exit must go on)
            log.exception("OTLP export: closing at exit failed")


class Session(Protocol):
    """What the export needs of a ``requests.Session``."""

    def post(self, url: str, *, data: bytes, headers: Mapping[str, str], timeout: Any) -> Any: ...


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def partial_rejection(body: bytes) -> tuple[int, str]:
    """(items rejected, the collector's message) from an ``Export*ServiceResponse``:
    its ``partial_success`` (field 1) holds ``rejected_*`` (field 1) and
    ``error_message`` (field 2). ``(0, "")`` for an empty or unreadable body."""
    try:
        at, end = 0, len(body)
        while at < end:
            key, at = _varint(body, at)
            field, kind = key >> 3, key & 7
            if kind == 0:
                _, at = _varint(body, at)
                continue
            if kind != 2:
                return 0, ""  # not a message this library knows
            length, at = _varint(body, at)
            if field == 1:
                return _partial(body[at:at + length])
            at += length
    except IndexError:
        pass
    return 0, ""


def _partial(body: bytes) -> tuple[int, str]:
    rejected, message, at = 0, "", 0
    while at < len(body):
        key, at = _varint(body, at)
        field, kind = key >> 3, key & 7
        if kind == 0:
            value, at = _varint(body, at)
            if field == 1:
                rejected = value
        elif kind == 2:
            length, at = _varint(body, at)
            if field == 2:
                message = body[at:at + length].decode("utf-8", "replace")
            at += length
        else:
            break
    return rejected, message


class OTLPExport:
    """A queue of OTLP batches and the threads that post them; see the module docstring.

    :param session: posts the batches (a ``requests.Session``, with a
        :class:`~resilience_mw.adapter.FailoverAdapter` mounted on ``endpoint``).
    :param endpoint: the collectors' base URL (``http://collector``); batches go to
        ``/v1/traces``, ``/v1/metrics`` and ``/v1/logs`` under it.
    :param queue: where batches wait (default a :class:`~.queue.MemoryQueue` of 64 MiB).
    :param headers: sent with every post (an ``Authorization``, a tenant).
    :param timeout: each post's ``requests`` timeout, seconds or (connect, read).
    :param consumers: sender threads (posts in flight at once).
    :param merge: the most queued batches one post carries (1: a post per batch).
    :param max_post_bytes: the most bytes one post of several batches carries.
    :param backoff: first wait, in seconds, after a post that failed.
    :param max_backoff: longest wait between tries while collectors fail.
    :param max_retry_after: longest wait a ``Retry-After`` may ask for.
    :param degradation: the service's degradation manager: telemetry is shed by its level.
    :param log_share: share of the queue log batches may fill while the level is above Normal.
    :param clock: monotonic seconds (waits); ``rng``: a ``random.random`` for the jitter.
    """

    _fork_order = 1

    def __init__(
        self,
        session: Session,
        endpoint: str,
        *,
        queue: ExportQueue | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | tuple[float, float] = (2.0, 10.0),
        consumers: int = 2,
        merge: int = 32,
        max_post_bytes: int = 1 << 20,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        max_retry_after: float = 60.0,
        degradation: AutoDegradationManager | None = None,
        log_share: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not callable(getattr(session, "post", None)):
            raise ConfigError("session", session, "must be a requests.Session (something with post())")
        endpoint = v.text()("endpoint", endpoint).rstrip("/")
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError("endpoint", endpoint, "must be an http:// or https:// URL")
        self.session = session
        self.endpoint = endpoint
        self.queue: ExportQueue = queue if queue is not None else MemoryQueue()
        self.queue.on_drop = self._on_drop
        self.headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        self.timeout = timeout
        self.consumers: int = v.integer(ge=1, le=64)("consumers", consumers)
        self.merge: int = v.integer(ge=1, le=10_000)("merge", merge)
        self.max_post_bytes: int = v.integer(ge=1, le=1 << 30)("max_post_bytes", max_post_bytes)
        self.backoff: float = v.seconds(minimum=0.001, maximum=600)("backoff", backoff)
        self.max_backoff: float = v.seconds(minimum=0.001, maximum=3600)("max_backoff", max_backoff)
        self.max_retry_after: float = v.seconds(minimum=0, maximum=3600, zero=True)("max_retry_after", max_retry_after)
        self.degradation = degradation
        self.log_share: float = v.number(ge=0, le=1)("log_share", log_share)
        self.clock = clock
        self.rng = rng
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._closed = False
        self._failures = 0
        self._hold_until = 0.0
        self._sampled = 0.0
        self._users = 0
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        running = any(t.is_alive() for t in self._threads) or bool(self._threads and not self._stop.is_set())
        self._threads = []
        self._stop = threading.Event()
        if running and not self._closed:
            self.start()

    # ------------------------------------------------------------------ public

    @property
    def level(self) -> DegradationLevel:
        """The service's degradation level (Normal without a manager)."""
        return self.degradation.level if self.degradation is not None else DegradationLevel.Normal

    def feature_on(self, feature: Any) -> bool:
        """Whether ``feature`` (a :class:`~resilience_mw.Feature` or name) is on at the level in force."""
        if self.degradation is None:
            return True
        try:
            return self.degradation.features.is_available(feature, self.degradation.level)
        except ConfigError:
            return True  # a feature the table does not know: not ours to drop

    def put(self, signal: str, body: bytes, items: int) -> bool:
        """Queue one encoded batch of ``signal``; ``False`` if it was dropped (counted).
        Starts the senders on first use."""
        if signal not in PATHS:
            raise ConfigError("signal", signal, f"must be one of {list(SIGNALS)}")
        if self._closed:
            self.queue.count(signal, "unsent_at_exit", items)
            return False
        if (signal == "logs" and self.degradation is not None and self.degradation.level > DegradationLevel.Normal
                and self.queue.fill_ratio() >= self.log_share):
            self.shed(signal, items)
            return False
        if not self._threads:
            self.start()
        return self.queue.put(signal, body, items)

    def shed(self, signal: str, items: int) -> None:
        """Count ``items`` of ``signal`` dropped because the level turned them off."""
        if items:
            self.queue.count(signal, "shed", items)

    def start(self) -> None:
        """Start the sender threads (idempotent); a disk queue's backlog from an earlier
        run starts draining."""
        with self._lock:
            if self._threads or self._closed:
                return
            self._stop = threading.Event()
            self._threads = [
                threading.Thread(target=self._run, args=(self._stop,), name=f"resilience_mw-otlp-{i}", daemon=True)
                for i in range(self.consumers)
            ]
            threads = list(self._threads)
        _LIVE.add(self)
        for thread in threads:
            thread.start()

    def attach(self) -> None:
        """An exporter uses this export (each :meth:`detach` then ends one use)."""
        with self._lock:
            self._users += 1

    def detach(self, timeout: float = 5.0) -> None:
        """An exporter is shut down: the last one shuts the export down."""
        with self._lock:
            self._users -= 1
            last = self._users <= 0
        if last:
            self.shutdown(timeout)

    def force_flush(self, timeout: float = 10.0) -> bool:
        """Wait up to ``timeout`` seconds for the queue to empty; ``True`` if it did. With
        a disk queue, what is still queued is in the file when this returns. After
        :meth:`shutdown`, ``False`` at once: nothing is sent any more."""
        if self._closed:
            return False
        deadline = time.monotonic() + timeout
        if not self._threads:
            self.start()
        while self.queue.size()[1]:
            left = deadline - time.monotonic()
            if left <= 0:
                self._persist()
                return False
            self._stop.wait(min(left, 0.01))
        return True

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop within ``timeout`` seconds. A memory queue is drained first for up to half
        of it while collectors answer (what remains is counted ``unsent_at_exit``); a
        disk queue keeps its batches for the next start. Idempotent."""
        if self._closed:
            return
        deadline = time.monotonic() + timeout
        if self.queue.kind == "memory" and self._threads:
            while self.queue.size()[1] and self.clock() >= self._hold_until:
                if time.monotonic() >= deadline - timeout / 2:
                    break
                self._stop.wait(0.01)
        self._closed = True
        self._stop.set()
        self.queue.wake()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._persist()
        self._sample(force=True)
        _LIVE.discard(self)

    def close_at_exit(self) -> None:
        """Shut down without waiting (the interpreter is exiting and nobody called
        :meth:`shutdown`); say what could not be sent."""
        if self._closed:
            return
        held, batches = self.queue.size()
        memory = isinstance(self.queue, MemoryQueue)
        self.shutdown(0.0)
        if batches and memory:
            log.warning("OTLP export to %s: %d batches (%d bytes) unsent at exit without shutdown(); "
                        "counted as dropped (unsent_at_exit)", self.endpoint, batches, held)
        elif batches:
            log.info("OTLP export to %s: %d batches left in the queue file for the next start",
                     self.endpoint, batches)

    def _persist(self) -> None:
        if isinstance(self.queue, MemoryQueue):
            if self._closed:  # (a post the senders did not finish in time: counted too)
                for batch in self.queue.drain(leased=True):
                    self.queue.count(batch.signal, "unsent_at_exit", batch.items)
        elif self._closed:
            self.queue.close()

    # ------------------------------------------------------------------ sending

    def _run(self, stop: threading.Event) -> None:
        queue = self.queue
        while not stop.is_set():
            try:
                hold = self._hold_until - self.clock()
                if hold > 0:
                    stop.wait(min(hold, 1.0))
                    continue
                batches = queue.take(self.merge)
                if not batches:
                    queue.wait(0.5)
                posts = self._posts(batches)
                for at, post in enumerate(posts):
                    if at and self.backing_off:  # (a post failed: the rest wait too)
                        for batch in reversed([b for later in posts[at:] for b in later]):
                            queue.retry(batch)
                        break
                    if len(post) == 1:
                        self._deliver(post[0])
                    else:
                        self._deliver_merged(post)
                self._sample()
            except Exception:  # a bug must not end the sender
                log.exception("OTLP sender: unexpected error; going on")
                stop.wait(1.0)

    def _posts(self, batches: list[Batch]) -> list[list[Batch]]:
        """``batches`` grouped into posts: one signal each, in queue order, at most
        ``max_post_bytes`` (a larger batch alone)."""
        posts: list[list[Batch]] = []
        open_: dict[str, tuple[list[Batch], int]] = {}
        for batch in batches:
            post, size = open_.get(batch.signal, ([], 0))
            if post and size + len(batch.body) > self.max_post_bytes:
                post, size = [], 0
            if not post:
                posts.append(post)
            post.append(batch)
            open_[batch.signal] = (post, size + len(batch.body))
        return posts

    def _deliver_merged(self, batches: list[Batch]) -> None:
        """Post ``batches`` (one signal) as one request; see the module docstring."""
        first = batches[0]
        items = sum(b.items for b in batches)
        started = time.monotonic()
        outcome, wait, rejected, why = self._post(first.signal, b"".join(b.body for b in batches), items)
        if outcome == "rejected":  # one bad batch must not take the others with it
            for batch in batches:
                self._deliver(batch)
            return
        signals.send(signals.telemetry_sent, self, kind=first.signal, items=items - rejected,
                     outcome=outcome, duration=time.monotonic() - started)
        if outcome == "sent":
            for batch in batches:
                self.queue.done(batch)
            if rejected:
                self.queue.count(first.signal, "partial", rejected)
                log.warning("collector rejected %d of %d %s items: %s", rejected, items, first.signal, why)
            self._succeeded()
        else:
            for batch in reversed(batches):  # (each back at the head: in their order)
                self.queue.retry(batch)
            self._failed(wait, why)

    def _deliver(self, batch: Batch) -> None:
        started = time.monotonic()
        outcome, wait, rejected, why = self._post(batch.signal, batch.body, batch.items)
        duration = time.monotonic() - started
        signals.send(signals.telemetry_sent, self, kind=batch.signal, items=batch.items - rejected,
                     outcome=outcome, duration=duration)
        if outcome == "sent":
            self.queue.done(batch)
            if rejected:
                self.queue.count(batch.signal, "partial", rejected)
                log.warning("collector rejected %d of %d %s items: %s", rejected, batch.items, batch.signal, why)
            self._succeeded()
        elif outcome == "retry":
            self.queue.retry(batch)
            self._failed(wait, why)
        else:
            self.queue.drop(batch, "rejected")
            log.warning("collector refused a batch of %d %s items for good (%s): dropped",
                        batch.items, batch.signal, why)

    def _post(self, signal: str, body: bytes, items: int) -> tuple[str, float | None, int, str]:
        """(outcome, seconds Retry-After asks, items rejected, why) of posting ``body``."""
        try:
            resp = self.session.post(self.endpoint + PATHS[signal], data=body, headers=self.headers,
                                     timeout=self.timeout)
        except Exception as exc:  # (requests' errors are OSErrors; anything else is retried the same)
            return "retry", None, 0, f"{type(exc).__name__}: {str(exc)[:200]}"
        try:
            status = int(resp.status_code)
            if 200 <= status < 300:
                rejected, message = partial_rejection(resp.content or b"")
                return "sent", None, min(rejected, items), message
            if status in RETRYABLE:
                return "retry", retry_after_seconds(resp.headers.get("Retry-After"), self.max_retry_after), 0, f"status {status}"
            return "rejected", None, 0, f"status {status}: {(resp.text or '')[:200]}"
        finally:
            close = getattr(resp, "close", None)
            if close is not None:
                close()

    def _failed(self, wait: float | None, why: str) -> None:
        with self._lock:
            self._failures += 1
            failures = self._failures
            base = min(self.max_backoff, self.backoff * 2 ** min(failures - 1, 30))
            delay = min(self.max_backoff, base * (0.5 + self.rng()))
            if wait is not None:
                delay = max(delay, wait)
            self._hold_until = max(self._hold_until, self.clock() + delay)
        if failures == 1:
            log.warning("OTLP export to %s failed (%s): batches stay queued and are retried", self.endpoint, why)
        else:
            log.debug("OTLP export failed again (%s); next try in %.2f s", why, delay)

    def _succeeded(self) -> None:
        if not self._failures:
            return
        with self._lock:
            failures, self._failures, self._hold_until = self._failures, 0, 0.0
        if failures:
            held, batches = self.queue.size()
            log.info("OTLP export to %s works again after %d failed posts; %d batches (%d bytes) to send",
                     self.endpoint, failures, batches, held)

    # ------------------------------------------------------------------ reporting

    def _on_drop(self, signal: str, reason: str, items: int) -> None:
        signals.send(signals.telemetry_dropped, self, kind=signal, reason=reason, items=items)

    def _sample(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._sampled < SAMPLE_EVERY:
            return
        self._sampled = now
        if not signals.telemetry_queue_sampled.receivers:
            return
        held, batches = self.queue.size()
        signals.send(signals.telemetry_queue_sampled, self, bytes=held, batches=batches,
                     fill_ratio=min(1.0, held / self.queue.max_bytes))

    @property
    def backing_off(self) -> bool:
        """Whether the senders are waiting after failed posts."""
        return self.clock() < self._hold_until

    def __repr__(self) -> str:
        return f"OTLPExport({self.endpoint!r}, {self.queue!r}, consumers={self.consumers})"
