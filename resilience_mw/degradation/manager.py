"""AutoDegradationManager: the process's degradation levels from its resources, its
queue and its errors.

A background worker samples this service's CPU and memory (psutil), the queueing delay
of recent requests and their error rate, and publishes two levels:

* :attr:`~AutoDegradationManager.level`, the worst any signal calls for: features and
  fallbacks follow it (a busy CPU turns analytics off to save it);
* :attr:`~AutoDegradationManager.load_level`, what shedding and readiness follow: only
  symptoms that requests suffer (their queueing delay) and an operator's forced level,
  since a service at 100 % of its CPU that keeps up must keep answering.

Request threads only call :meth:`record_request` (lock-free) and :meth:`current_level`
(an attribute read, no lock)::

    degradation = AutoDegradationManager(DegradationConfig(cooldown_seconds=10))
    degradation.start(check_interval=1.0)
    ...
    degradation.record_request(success=response.status_code < 500)
    if degradation.is_feature_available(Feature.Analytics):
        track(event)
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import random
import statistics
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from .. import _fork, signals
from .. import _validate as v
from .._worker import BackgroundWorker
from ..config import DegradationConfig
from ..exceptions import ConfigError
from ..model import DegradationLevel, parse_level
from .features import FeatureTable
from .hysteresis import Settler, sustained
from .load import Sample, SystemSampler

__all__ = ["FORCE_TTL", "AutoDegradationManager", "ErrorWindow"]

log = logging.getLogger(__name__)

#: sampling intervals accepted by :meth:`AutoDegradationManager.start`
_INTERVAL = v.seconds(minimum=0.01, maximum=3600)
#: how long a forced level may be given to last (the admin endpoint and the CLI check it too)
FORCE_TTL = v.optional(v.seconds(maximum=7 * 86_400))
#: queueing-delay samples kept per sampling interval (the rest of the interval's are not
#: needed for its median)
_QUEUE_SAMPLES = 512
#: the share of an interval's stamped requests refused for waiting too long that shows a
#: process still behind (a load that persists); below it, the odd refusal of a burst
_STILL_BEHIND = 0.05


class _Bucket:
    """Counts of one time slice. Writers only call ``next()`` on the counters: a single
    C call, atomic under the GIL, so recording needs no lock."""

    __slots__ = ("ends_at", "epoch", "fails", "fails_read", "total", "total_read")

    def __init__(self, epoch: int, width: float) -> None:
        self.epoch = epoch
        self.ends_at = (epoch + 1) * width
        self.total = itertools.count()
        self.fails = itertools.count()
        # Reading a count means calling next() too; readers (under the window's lock)
        # remember how often they did so, to subtract it.
        self.total_read = 0
        self.fails_read = 0

    def read(self) -> tuple[int, int]:
        total = next(self.total) - self.total_read
        fails = next(self.fails) - self.fails_read
        self.total_read += 1
        self.fails_read += 1
        return total, fails


class ErrorWindow:
    """Request and failure counts over a sliding time window, in fixed buckets.

    Count a request with :meth:`ok` or :meth:`fail`. Recording is
    lock-free; the lock is taken only to start a new bucket (once per
    ``seconds / buckets``) and to read. Memory is ``buckets`` small objects whatever the
    request rate. A request recorded into a bucket just as it is being replaced still
    lands in a bucket of the window, so nothing is lost.

    By default every count reads the clock, so each lands in the bucket of its own
    time. A caller that reads :meth:`counts` at least once per bucket width (the
    degradation manager's sampling thread) may call ``keep_current(True)``: :meth:`ok`
    then skips the clock and becomes a single C-level counter increment, and a success
    lands in the bucket that was current at the last read, at most one read interval
    late.
    """

    def __init__(self, seconds: float, buckets: int, clock: Callable[[], float] = time.monotonic) -> None:
        seconds = v.seconds(minimum=0.1)("seconds", seconds)
        buckets = v.integer(ge=1, le=3600)("buckets", buckets)
        self.width = seconds / buckets
        self._n = buckets
        self._clock = clock
        self._lock = threading.Lock()
        self._ring: collections.deque[_Bucket] = collections.deque([_Bucket(-1, self.width)], maxlen=buckets)
        self._current = self._ring[-1]
        self._kept_current = False
        #: count one success; an attribute, not a method, so that it can be the current
        #: bucket's C-level counter while the window is kept current
        self.ok: Callable[[], object] = self._ok_clocked

    def _ok_clocked(self) -> None:
        # _fresh(), inline: this is the per-request path when nobody keeps the window current
        bucket = self._current
        if self._clock() >= bucket.ends_at:  # one compare: no division on the hot path
            bucket = self._rotate()
        next(bucket.total)

    def fail(self) -> None:
        """Count one failure."""
        bucket = self._fresh()
        next(bucket.total)
        next(bucket.fails)

    def fail_after_ok(self) -> None:
        """Turn one request already counted by :meth:`ok` into a failure (a streamed body
        that broke after its status was counted)."""
        next(self._fresh().fails)

    def keep_current(self, on: bool) -> None:
        """Promise (``True``) or stop promising that :meth:`counts` is read at least once
        per bucket width; while promised, :meth:`ok` does not read the clock."""
        with self._lock:
            self._kept_current = on
            self.ok = self._current.total.__next__ if on else self._ok_clocked
        if on:
            self._fresh()

    def _fresh(self) -> _Bucket:
        """The current bucket, after starting a new one if its time is over."""
        bucket = self._current
        if self._clock() >= bucket.ends_at:
            bucket = self._rotate()
        return bucket

    def _rotate(self) -> _Bucket:
        epoch = int(self._clock() / self.width)
        with self._lock:
            if self._current.epoch != epoch:
                self._start_bucket(epoch)
            return self._current

    def _start_bucket(self, epoch: int) -> None:
        """Make a new bucket current; the caller holds the lock."""
        self._current = _Bucket(epoch, self.width)
        self._ring.append(self._current)
        if self._kept_current:
            self.ok = self._current.total.__next__

    def counts(self) -> tuple[int, int]:
        """``(requests, failures)`` within the window ending now."""
        self._fresh()
        oldest = int(self._clock() / self.width) - self._n + 1
        total = fails = 0
        with self._lock:
            for bucket in self._ring:
                if bucket.epoch >= oldest:
                    t, f = bucket.read()
                    total += t
                    fails += f
        return total, fails

    def reset(self) -> None:
        epoch = int(self._clock() / self.width)
        with self._lock:
            self._ring.clear()
            self._start_bucket(epoch)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()


class _QueueTick:
    """One sampling interval's queueing delays: a uniform sample of at most
    :data:`_QUEUE_SAMPLES` of them (reservoir sampling, so a long interval is not judged by
    its start), how many there were, and how many requests were refused for waiting.

    Written by request threads without a lock and swapped whole by the tick, so that
    nothing of one interval is counted in the next: a request that races the swap lands
    in the old interval, unread (one sample). ``refused`` is a C-level counter (atomic
    under the GIL); read it with ``next()``, which counts one more.
    """

    __slots__ = ("refused", "stamped", "waits")

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.stamped = 0
        self.refused = itertools.count()

    def observe(self, seconds: float) -> None:
        self.stamped += 1  # (racy: a lost increment only nudges a share)
        waits = self.waits
        if len(waits) < _QUEUE_SAMPLES:
            waits.append(seconds)
        else:
            slot = random.randrange(self.stamped)
            if slot < _QUEUE_SAMPLES:
                waits[slot] = seconds


class AutoDegradationManager:
    """Samples load and errors and publishes the degradation level.

    :param config: thresholds; the defaults are the ported design's.
    :param sampler: callable returning a :class:`~resilience_mw.model.Sample`; the
        default reads psutil and cgroup memory. If it has a ``prime()`` method, that
        runs once in the sampling thread before the first sample.
    :param features: the feature table (default: the ported design's).
    :param clock: monotonic clock for the error window and the cooldown.
    """

    def __init__(
        self,
        config: DegradationConfig | None = None,
        *,
        sampler: Callable[[], Sample] | None = None,
        features: FeatureTable | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config if config is not None else DegradationConfig()
        if not isinstance(self.config, DegradationConfig):
            raise ConfigError("config", config, "must be a DegradationConfig")
        v.optional(v.function())("sampler", sampler)
        v.function()("clock", clock)
        if features is not None and not isinstance(features, FeatureTable):
            raise ConfigError("features", features, "must be a FeatureTable")
        self.features = features if features is not None else FeatureTable()
        self._sampler: Callable[[], Sample] = sampler if sampler is not None else SystemSampler()
        self._clock = clock
        #: the error window; per-request hot paths call ``window.ok()`` / ``window.fail()``
        #: directly, a call layer less than :meth:`record_request`. Never reassign it.
        self.window = ErrorWindow(self.config.error_window_seconds, self.config.error_window_buckets, clock)
        self._lock = threading.RLock()
        #: the level in force, from every cause (features and fallbacks follow it); read
        #: it freely (no lock), never assign it (use force_level)
        self.level = DegradationLevel.Normal
        #: the level from symptoms that requests suffer (their queueing delay) and an
        #: operator's forced level; CPU and memory only with ``config.resources_shed``, the
        #: error rate only with ``config.errors_shed``: what shedding and readiness follow
        self.load_level = DegradationLevel.Normal
        #: the load level the signals call for at the last sample, before its cooldown;
        #: below :attr:`load_level` while the load level only waits to come down
        self.load_target = DegradationLevel.Normal
        #: since when (by the clock) the load level has been held up by its cooldown
        #: alone, ``None`` while a signal or an operator calls for it
        self.cooling_since: float | None = None
        #: the process is behind on its queue: the last interval's median queueing delay
        #: reached ``config.queue_behind_at`` (the lowest queue threshold, 20 ms by
        #: default), or it had been behind and still refused a twentieth of its stamped
        #: requests for waiting too long. While it is, a request
        #: whose wait is known is shed when it waited longer than its tolerance; once its
        #: requests are served within their tolerance again, nothing is shed that way
        self.queue_behind = False
        cooldown = self.config.cooldown_seconds
        self._overall = Settler(cooldown)
        self._load = Settler(cooldown)
        self._resources: collections.deque[DegradationLevel] = collections.deque(
            maxlen=self.config.sustain_window
        )
        self._queue_levels: collections.deque[DegradationLevel] = collections.deque(
            maxlen=self.config.sustain_window
        )
        self._started_at: float | None = None
        self._forced: DegradationLevel | None = None
        self._forced_until: float | None = None  # by the clock; None: until cleared
        self._last: dict[str, Any] = {"cpu": None, "memory": None, "error_rate": 0.0, "requests": 0, "queue_time": None}
        self._cause: dict[str, Any] = {
            "resources": "Normal", "queue": "Normal", "errors": "Normal", "forced": None, "sheds": None,
        }
        self._worker: BackgroundWorker | None = None
        #: (requests, failures, valid until by the clock): the error window of every
        #: worker of the store's scope, when the error rate is fleet-wide
        self._shared_counts: tuple[int, int, float] | None = None
        # this interval's queueing delays and refusals; each tick swaps in a new one
        self._tick = _QueueTick()
        _fork.register(self)
        _fork.register(self.window)

    # ------------------------------------------------------------ hot path

    def record_request(self, success: bool) -> None:
        """Count one request's outcome in the error window. Lock-free."""
        if success:
            self.window.ok()
        else:
            self.window.fail()

    def current_level(self) -> DegradationLevel:
        """The level in force (forced or computed). No lock."""
        return self.level

    def is_feature_available(self, feature: Hashable) -> bool:
        """Whether ``feature`` is on at the current level (a precomputed-table lookup)."""
        return self.features.is_available(feature, self.level)

    def register_feature(self, feature: Hashable, off_at: DegradationLevel | str | None) -> None:
        """Add a feature of your own, off from level ``off_at`` (``None``: never)."""
        self.features.register(feature, off_at)

    def observe_queue_time(self, seconds: float) -> None:
        """One request's queueing delay (the middleware's, from the proxy's stamp).
        Lock-free (see :class:`_QueueTick`)."""
        self._tick.observe(seconds)

    def refused_for_waiting(self) -> None:
        """One request refused because it waited longer than its tolerance (keeps
        :attr:`queue_behind` while the process still refuses a share of its requests)."""
        next(self._tick.refused)

    def share_counts(self, requests: int, failures: int, valid_for: float) -> None:
        """Judge the error rate on these counts (every worker's window, summed by the
        state sync) instead of this process's own, for the next ``valid_for`` seconds;
        after that, this process's window again."""
        self._shared_counts = (requests, failures, self._clock() + valid_for)

    # ----------------------------------------------------------- sampling

    def start(self, check_interval: float = 1.0) -> None:
        """Start sampling every ``check_interval`` seconds in a daemon thread (idempotent)."""
        check_interval = _INTERVAL("check_interval", check_interval)
        with self._lock:
            if self._started_at is None:
                self._started_at = self._clock()
            if self._worker is None:
                prime = getattr(self._sampler, "prime", None)
                self._worker = BackgroundWorker(
                    "resilience_mw-degradation",
                    self.evaluate,
                    check_interval,
                    on_start=prime if callable(prime) else None,
                    # psutil's CPU figure is an average since the last call: the first
                    # real sample needs a whole interval after priming, not a blip.
                    first_delay=check_interval,
                )
            self._worker.interval = check_interval
            worker = self._worker
        worker.start()
        # Each tick reads the window (evaluate), which keeps its buckets current when
        # ticks come at least once per bucket; then successes need not read the clock.
        self.window.keep_current(check_interval <= self.window.width)

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop sampling; ``True`` once the thread is gone. The level stays as it is."""
        worker = self._worker
        self.window.keep_current(False)
        return True if worker is None else worker.stop(timeout)

    @property
    def running(self) -> bool:
        worker = self._worker
        return worker is not None and worker.alive

    def evaluate(self) -> DegradationLevel:
        """Take one sample and update the level; returns the level in force.

        A sampler failure is logged and keeps the last level.
        """
        self._expire_override()
        # Read the window first: it stays current even while the sampler fails.
        requests, failures = self.window.counts()
        shared = self._shared_counts
        if shared is not None and self._clock() < shared[2]:
            requests, failures = shared[0], shared[1]  # every worker's window (the state sync's)
        try:
            sample = self._sampler()
        except Exception:
            log.exception("degradation sampler failed; keeping level %s", self.level.name)
            return self.level
        # a failure turned from a success may land a bucket later than its request
        rate = min(1.0, failures / requests) if requests else 0.0
        cfg = self.config
        now = self._clock()
        errors = cfg.error_level(rate, requests)
        tick, self._tick = self._tick, _QueueTick()
        waits, stamped, refused = tick.waits, tick.stamped, next(tick.refused)
        queue = statistics.median(waits) if waits else None
        self.queue_behind = queue is not None and (
            queue >= cfg.queue_behind_at or (self.queue_behind and refused >= _STILL_BEHIND * stamped)
        )
        with self._lock:
            in_grace = self._started_at is not None and now - self._started_at < cfg.startup_grace_seconds
            # Startup spikes (imports, forks, warm-up) are not load: they are not fed.
            if not in_grace:
                self._resources.append(cfg.resource_level(sample.cpu, sample.memory))
                self._queue_levels.append(cfg.queue_level(queue))
            resources = sustained(self._resources, cfg.sustain_samples)
            queued = sustained(self._queue_levels, cfg.sustain_samples)
            self._last = {
                "cpu": sample.cpu,
                "memory": sample.memory,
                "error_rate": rate,
                "requests": requests,
                "queue_time": queue,
            }
            # Shedding and readiness follow what requests suffer; CPU, memory and a
            # dependency's errors gate features only, unless configured otherwise.
            load = max(
                queued,
                resources if cfg.resources_shed else DegradationLevel.Normal,
                errors if cfg.errors_shed else DegradationLevel.Normal,
            )
            self._cause = {
                "resources": resources.name,
                "queue": queued.name,
                "errors": errors.name,
                # a level forced earlier is still forced: a sample does not forget it
                "forced": None if self._forced is None else self._forced.name,
                "sheds": _shedding_cause(cfg, resources, queued, errors),
            }
            self._overall.settle(max(resources, queued, errors), now)
            self._load.settle(load, now)
            self.load_target = load
            old, new = self._publish()
        self._announce(old, new, forced=False)
        return new

    # ------------------------------------------------------------ override

    def force_level(self, level: DegradationLevel | int | str, ttl: float | None = None) -> None:
        """Pin the level (operators, tests, drills) until :meth:`clear_override`, or for
        ``ttl`` seconds: the first sample after that clears it (so does any read of
        :meth:`figures`)."""
        forced = parse_level(level)
        ttl = FORCE_TTL("ttl", ttl)
        with self._lock:
            # (the expiry first: a lock-free reader never sees the new level with the old ttl)
            self._forced_until = None if ttl is None else self._clock() + ttl
            self._forced = forced
            self._cause = {**self._cause, "forced": forced.name}
            old, new = self._publish()
        self._announce(old, new, forced=True)

    def clear_override(self) -> None:
        """Return to the computed level."""
        with self._lock:
            self._forced = None
            self._forced_until = None
            self._cause = {**self._cause, "forced": None}
            old, new = self._publish()
        self._announce(old, new, forced=False)

    @property
    def forced(self) -> DegradationLevel | None:
        """The level an operator forced, while it holds (``None``: none)."""
        return self._forced

    def forced_remaining(self) -> float | None:
        """Seconds until the forced level ends by its ``ttl`` (``None``: not forced, or
        forced until cleared)."""
        until = self._forced_until
        return None if until is None or self._forced is None else max(0.0, until - self._clock())

    def forced_now(self) -> DegradationLevel | None:
        """:attr:`forced`, after ending it if its ``ttl`` ran out since the last sample (for
        the paths that refuse requests: a level never sheds past its ttl)."""
        self._expire_override()
        return self._forced

    def _expire_override(self) -> None:
        """Clear a forced level whose ``ttl`` has run out."""
        until = self._forced_until
        if until is None or self._clock() < until:
            return
        with self._lock:
            if self._forced_until != until or self._forced is None:
                return  # forced again (or cleared) meanwhile: that one stands
            ended = self._forced
            self._forced = self._forced_until = None
            self._cause = {**self._cause, "forced": None}
            old, new = self._publish()
        log.warning("forced level %s ended: its ttl ran out", ended.name)
        self._announce(old, new, forced=False)

    def figures(self) -> dict[str, Any]:
        """The last sample, the levels and why they are what they are, as plain data.

        ``cause`` names the level each cause calls for (``resources``: CPU and memory,
        sustained; ``queue``: the queueing delay, sustained; ``errors``: the error rate;
        ``forced``: an operator's override) and, in ``sheds``, why the load level is what
        it is in words; ``load_level`` is what shedding and readiness follow;
        ``cooldown_remaining`` is how long until the level may come down (``None``: not
        waiting to); ``cpu_source`` says whose CPU ``cpu`` is (the sampler's own words).
        """
        self._expire_override()
        now = self._clock()
        with self._lock:
            waits = [w for w in (self._overall.cooldown_remaining(now), self._load.cooldown_remaining(now)) if w is not None]
            return {
                **self._last,
                "level": self.level.name,
                "level_value": int(self.level),
                "load_level": self.load_level.name,
                "computed_level": self._overall.level.name,
                "forced": self._forced.name if self._forced is not None else None,
                "forced_remaining": self.forced_remaining(),
                "cause": dict(self._cause),
                "cooldown_remaining": None if self._forced is not None or not waits else max(waits),
                "cpu_source": getattr(self._sampler, "cpu_source", "custom sampler"),
            }

    def reset_errors(self) -> None:
        """Forget the error window (e.g. after a deploy)."""
        self.window.reset()

    # ------------------------------------------------------------ internals

    def _publish(self) -> tuple[DegradationLevel, DegradationLevel]:
        old = self.level
        forced = self._forced
        self.load_level = forced if forced is not None else self._load.level
        self.level = forced if forced is not None else self._overall.level
        self.cooling_since = self._load.lower_since if forced is None else None
        return old, self.level

    # ------------------------------------------------------------ recovery

    def easing(self, now: float | None = None) -> float:
        """The share still shed of what the load level sheds beyond what the signals call
        for now (:attr:`load_target`): 1.0 while they call for the level (or an operator
        forced it); while the level is held above them only by its cooldown, falling from 1
        to 0 over ``config.recovery_seconds``, so that traffic comes back as fast as the
        overload ended, a growing share at a time. What the signals still call for is
        shed in full (the callers add it). No lock."""
        since = self.cooling_since
        if since is None:
            return 1.0
        ramp = self.config.recovery_seconds
        if ramp <= 0:
            return 0.0
        elapsed = (self._clock() if now is None else now) - since
        return max(0.0, 1.0 - elapsed / ramp)

    def level_may_last(self) -> float:
        """At most how many seconds the load level may still hold if every signal calls
        for less from now on (what ``Retry-After`` should not exceed); 0 at Normal,
        ``math.inf`` while forced until an operator clears it."""
        if self.forced_now() is not None:
            remaining = self.forced_remaining()
            return math.inf if remaining is None else remaining
        if self.load_level is DegradationLevel.Normal:
            return 0.0
        since = self.cooling_since
        cooldown = self.config.cooldown_seconds
        if since is None:
            return cooldown
        return max(0.0, since + cooldown - self._clock())

    def _announce(self, old: DegradationLevel, new: DegradationLevel, *, forced: bool) -> None:
        if old == new:
            return
        f = self._last
        cause = dict(self._cause)
        why = (
            f"forced to {cause['forced']}"
            if cause["forced"]
            else f"resources call for {cause['resources']}, the queue for {cause['queue']}, errors for {cause['errors']}"
        )
        log.warning(
            "degradation level %s -> %s: %s (cpu %s%%, memory %s%%, error rate %.1f%% of %d); load level %s",
            old.name,
            new.name,
            why,
            _fmt(f["cpu"]),
            _fmt(f["memory"]),
            100 * f["error_rate"],
            f["requests"],
            self.load_level.name,
            extra={"old": old.name, "new": new.name, "cause": cause},
        )
        signals.send(
            signals.level_changed,
            self,
            old=old,
            new=new,
            cpu=f["cpu"],
            memory=f["memory"],
            error_rate=f["error_rate"],
            requests=f["requests"],
            forced=forced,
            cause=cause,
            load_level=self.load_level,
        )

    def _after_fork_in_child(self) -> None:
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"AutoDegradationManager(level={self.level.name}, running={self.running})"


def _fmt(x: float | None) -> str:
    return "?" if x is None else f"{x:.1f}"


def _shedding_cause(
    cfg: DegradationConfig, resources: DegradationLevel, queued: DegradationLevel, errors: DegradationLevel
) -> str | None:
    """Why the load level is what it is, in words (``None``: nothing calls for one); says
    too when CPU or memory call for a level that, by design, does not shed."""
    parts = []
    if queued > DegradationLevel.Normal:
        parts.append(f"queueing delay calls for {queued.name}")
    if resources > DegradationLevel.Normal:
        parts.append(
            f"CPU/memory call for {resources.name}"
            + ("" if cfg.resources_shed else " (gates features only: requests do not wait)")
        )
    if errors > DegradationLevel.Normal:
        parts.append(
            f"the error rate calls for {errors.name}" + ("" if cfg.errors_shed else " (gates features only)")
        )
    return "; ".join(parts) or None
