"""BackgroundWorker: the one way resilience_mw runs a periodic task in a thread.

* The thread is a daemon, and at interpreter exit every worker is told to stop without
  being waited on for more than a moment: exit never waits on a tick.
* It waits on an Event between ticks, so :meth:`BackgroundWorker.stop` returns
  promptly; :meth:`~BackgroundWorker.start` and :meth:`~BackgroundWorker.stop` are
  idempotent and safe to call from many threads at once, and a ``start()`` after any
  ``stop()`` runs again (after a stop that timed out, the new thread waits for the old
  one's last tick, so ticks never overlap).
* A tick given as a bound method is held through a weak reference: the thread never
  keeps its owner alive, and ends as soon as the owner is collected (a discarded app's
  threads do not run on).
* An exception in a tick, even ``SystemExit`` or ``KeyboardInterrupt`` raised by a
  signal receiver, is logged and the loop goes on.
* After ``os.fork()`` it is running again in the child if it was running in the
  parent (with fresh locks). Nothing starts in ``__init__``.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from types import MethodType

from . import _fork

__all__ = ["BackgroundWorker", "stop_all", "suppressed"]

log = logging.getLogger(__name__)

#: what a tick may raise without ending the thread (a receiver's ``sys.exit()`` included)
_SURVIVED = (Exception, SystemExit, KeyboardInterrupt)


class BackgroundWorker:
    """Run ``tick()`` every ``interval`` seconds in a daemon thread.

    :param name: thread name (shown in logs and ``threading.enumerate()``).
    :param tick: the periodic work; exceptions are logged and the loop goes on. A bound
        method is held weakly (see the module docstring).
    :param interval: seconds between the end of one tick and the start of the next
        (read before every wait, so the owner may change it).
    :param jitter: extra random share of the interval added to each wait (``0.1`` = up
        to 10 %), so workers in many processes do not tick in lock-step.
    :param on_start: called once in the new thread before the first tick (e.g. to prime
        a per-thread baseline such as psutil's ``cpu_percent``).
    :param first_delay: seconds to wait before the first tick (``0``: tick at once).
    """

    _fork_order = 1  # after state owners have replaced their locks

    def __init__(
        self,
        name: str,
        tick: Callable[[], object],
        interval: float,
        *,
        jitter: float = 0.0,
        on_start: Callable[[], object] | None = None,
        first_delay: float = 0.0,
    ) -> None:
        self.name = name
        self.interval = interval
        self.jitter = jitter
        self._tick: Callable[[], Callable[[], object] | None]
        if isinstance(tick, MethodType):
            self._tick = weakref.WeakMethod(tick)
            # the owner's collection wakes the thread at once instead of after a wait
            weakref.finalize(tick.__self__, _owner_collected, weakref.ref(self))
        else:
            self._tick = lambda: tick
        self._on_start = on_start
        self._first_delay = first_delay
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._wanted = False
        self.ticks = 0
        self.errors = 0
        _fork.register(self)
        _workers.add(self)

    @property
    def alive(self) -> bool:
        """Whether a thread of this worker is running in this process (it may be
        finishing its last tick after :meth:`stop`)."""
        t = self._thread
        return t is not None and t.is_alive()

    @property
    def running(self) -> bool:
        """Whether the worker is started and not told to stop."""
        return self.alive and not self._stop_event.is_set()

    def start(self) -> None:
        """Start the thread; a no-op if it is already running."""
        with self._lock:
            if _suppression.open:
                log.debug("%s: not started (background workers are off for testing)", self.name)
                return
            self._wanted = True
            if self.running:
                return
            previous = self._thread if self.alive else None
            self._stop_event = stop = threading.Event()
            self._thread = threading.Thread(target=self._run, args=(stop, previous), name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop the thread and wait up to ``timeout`` seconds; ``True`` once it is gone.

        Safe to call on a worker that never started, and from inside a tick.
        """
        with self._lock:
            self._wanted = False
            self._stop_event.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return not self.alive

    def _run(self, stop: threading.Event, previous: threading.Thread | None) -> None:
        if previous is not None:
            previous.join()  # its last tick, after a stop that timed out: never two at once
        if self._on_start is not None:
            self._guarded(self._on_start)
        if self._first_delay and stop.wait(self._first_delay):
            return
        while not stop.is_set():
            tick = self._tick()
            if tick is None:
                return  # the owner was collected
            self._guarded(tick)
            del tick  # hold no reference to the owner while waiting
            self.ticks += 1
            wait = self.interval * (1 + random.random() * self.jitter) if self.jitter else self.interval
            if stop.wait(wait):
                return

    def _guarded(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except _SURVIVED:
            self.errors += 1
            log.exception("%s: tick failed; will try again in %.3gs", self.name, self.interval)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._thread = None
        self._stop_event = threading.Event()
        if self._wanted:
            log.debug("%s: restarting after fork in pid %d", self.name, os.getpid())
            self.start()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopping" if self.alive else "stopped"
        return f"BackgroundWorker({self.name!r}, interval={self.interval}, {state}, ticks={self.ticks})"


def _owner_collected(ref: weakref.ref[BackgroundWorker]) -> None:
    worker = ref()
    if worker is not None:
        worker._wanted = False
        worker._stop_event.set()


_workers: weakref.WeakSet[BackgroundWorker] = weakref.WeakSet()


class _Suppression:
    """The :func:`suppressed` blocks open in this process; while there is one,
    :meth:`BackgroundWorker.start` starts nothing."""

    def __init__(self) -> None:
        #: open blocks, by the thread that opened them
        self.open: collections.Counter[int] = collections.Counter()
        self.lock = threading.Lock()
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        # Another thread may have been entering or leaving suppressed() at the fork, and
        # the blocks other threads had open never close here: only the forking thread's
        # (its id is the same in the child) live on.
        self.lock = threading.Lock()
        me = threading.get_ident()
        self.open = collections.Counter({me: self.open[me]} if self.open[me] else {})


_suppression = _Suppression()

#: the most interpreter exit waits for ticks in progress, all workers together
EXIT_GRACE = 0.1


def stop_all(timeout: float) -> bool:
    """Tell every worker of this process to stop, then wait up to ``timeout`` seconds in
    total; ``True`` when all threads are gone."""
    workers = list(_workers)
    for worker in workers:
        with worker._lock:
            worker._wanted = False
            worker._stop_event.set()
    deadline = time.monotonic() + timeout
    for worker in workers:
        thread = worker._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    return not any(w.alive for w in workers)


@contextlib.contextmanager
def suppressed() -> Iterator[None]:
    """No worker starts while this is active, in any thread (what
    :mod:`resilience_mw.testing` uses). In a forked child only the blocks of the thread
    that forked are still open."""
    me = threading.get_ident()
    with _suppression.lock:
        _suppression.open[me] += 1
    try:
        yield
    finally:
        with _suppression.lock:
            _suppression.open[me] -= 1
            if not _suppression.open[me]:
                del _suppression.open[me]


atexit.register(stop_all, EXIT_GRACE)
