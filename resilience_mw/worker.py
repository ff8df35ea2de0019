"""BackgroundWorker: the one way resilience_mw runs a periodic task in a thread.

The thread is a daemon (it never keeps the process from exiting), waits on an
Event between ticks (so :meth:`BackgroundWorker.stop` returns promptly), logs and
survives an exception in any tick, and after ``os.fork()`` is running again in the
child if it was running in the parent (with fresh locks). Nothing starts in
``__init__``.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable

from . import _fork

__all__ = ["BackgroundWorker"]

log = logging.getLogger(__name__)


class BackgroundWorker:
    """Run ``tick()`` every ``interval`` seconds in a daemon thread.

    :param name: thread name (shown in logs and ``threading.enumerate()``).
    :param tick: the periodic work; exceptions are logged and the loop goes on.
    :param interval: seconds between the end of one tick and the start of the next.
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
        self._tick = tick
        self._on_start = on_start
        self._first_delay = first_delay
        self._lock = threading.RLock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._wanted = False
        self.ticks = 0
        self.errors = 0
        _fork.register(self)

    @property
    def alive(self) -> bool:
        """Whether the thread is running in this process."""
        t = self._thread
        return t is not None and t.is_alive()

    def start(self) -> None:
        """Start the thread; a no-op if it is already running."""
        with self._lock:
            self._wanted = True
            if self.alive:
                return
            self._stop_event = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop_event,), name=self.name, daemon=True
            )
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

    def _run(self, stop: threading.Event) -> None:
        if self._on_start is not None:
            self._guarded(self._on_start)
        if self._first_delay and stop.wait(self._first_delay):
            return
        while not stop.is_set():
            self._guarded(self._tick)
            self.ticks += 1
            wait = self.interval * (1 + random.random() * self.jitter) if self.jitter else self.interval
            if stop.wait(wait):
                return

    def _guarded(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:
            self.errors += 1
            log.exception("%s: tick failed; will try again in %.3gs", self.name, self.interval)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.RLock()
        self._thread = None
        self._stop_event = threading.Event()
        if self._wanted:
            log.debug("%s: restarting after fork in pid %d", self.name, os.getpid())
            self.start()

    def __repr__(self) -> str:
        state = "alive" if self.alive else "stopped"
        return f"BackgroundWorker({self.name!r}, interval={self.interval}, {state}, ticks={self.ticks})"
