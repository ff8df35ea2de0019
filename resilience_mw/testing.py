"""Helpers for testing an app that uses resilience_mw.

* :class:`FakeClock`: a monotonic clock you move by hand; pass it as ``clock=`` to a
  :class:`~resilience_mw.NodePool`, :class:`~resilience_mw.HealthChecker` or
  :class:`~resilience_mw.AutoDegradationManager`.
* :func:`workers_off`: while it is active, no background thread (sampler, health
  checker) starts; whatever was started inside is stopped when it ends.
* :func:`stop_all_workers`: stop every background thread of the library in this process.
* :func:`force_level` and :func:`set_node`: put an app (or a manager, or a pool) in the
  state a test needs, without a load or an outage.
* :func:`record_signals`: collect what the library's signals sent.
* A pytest plugin (``pytest_plugins = ["resilience_mw.testing"]`` in your
  ``conftest.py``) with the fixtures ``resilience_workers_off`` (the test runs inside
  :func:`workers_off`) and ``build_app`` (``build_app(create_app, ...)`` returns
  your app with no background threads and stops anything left at teardown).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from blinker import Signal

from . import _fork, signals
from . import _worker as worker
from .degradation.manager import AutoDegradationManager
from .failover.pool import NodePool
from .model import DegradationLevel, NodeHealth

__all__ = [
    "FakeClock",
    "force_level",
    "record_signals",
    "set_node",
    "stop_all_workers",
    "workers_off",
]

T = TypeVar("T")


class FakeClock:
    """A monotonic clock in seconds that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = float(start)
        self._lock = threading.Lock()
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock ``seconds`` forward; the new time."""
        if seconds < 0:
            raise ValueError(f"a monotonic clock does not go back (advance({seconds!r}))")
        with self._lock:
            self.now += seconds
            return self.now

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now:g})"


def stop_all_workers(timeout: float = 5.0) -> bool:
    """Stop every background thread of resilience_mw in this process (samplers, health
    checkers); ``True`` when all are gone within ``timeout`` seconds in total."""
    return worker.stop_all(timeout)


@contextlib.contextmanager
def workers_off() -> Iterator[None]:
    """No background thread starts while this is active; workers made inside are stopped
    at the end (should one have been started after all), those made before are left alone."""
    before = set(worker._workers)
    with worker.suppressed():
        try:
            yield
        finally:
            for made in set(worker._workers) - before:
                made.stop(timeout=5.0)


def _managers(target: Any) -> tuple[AutoDegradationManager | None, NodePool | None]:
    if isinstance(target, AutoDegradationManager):
        return target, None
    if isinstance(target, NodePool):
        return None, target
    extensions = getattr(target, "extensions", None)  # a Flask app
    state = extensions.get("resilience") if isinstance(extensions, dict) else None
    if state is None:
        raise TypeError(f"expected a Flask app with Resilience, an AutoDegradationManager or a NodePool, not {target!r}")
    degradation: AutoDegradationManager = state.degradation
    pool: NodePool | None = state.failover
    return degradation, pool


def force_level(target: Any, level: DegradationLevel | str | int | None) -> None:
    """Force ``target``'s degradation level (an app with Resilience, or a manager);
    ``None`` clears the override."""
    degradation, _ = _managers(target)
    if degradation is None:
        raise TypeError(f"{target!r} has no degradation manager")
    if level is None:
        degradation.clear_override()
    else:
        degradation.force_level(level)


def set_node(target: Any, node_id: str, healthy: bool) -> None:
    """Take ``node_id`` out (``healthy=False``, reason ``manual``) or bring it back, in
    an app with Resilience or a pool."""
    _, pool = _managers(target)
    if pool is None:
        raise TypeError(f"{target!r} has no node pool (no nodes configured)")
    state = pool.health(node_id)
    pool.update_health(node_id, NodeHealth(node_id, healthy, state.last_check, 0, state.latency))


class SignalRecord:
    """What :func:`record_signals` collected: ``(signal name, sender, kwargs)`` tuples."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, dict[str, Any]]] = []
        self._lock = threading.Lock()
        _fork.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def add(self, name: str, sender: Any, kwargs: dict[str, Any]) -> None:
        with self._lock:
            self.events.append((name, sender, kwargs))

    def named(self, name: str) -> list[dict[str, Any]]:
        """The kwargs of every ``name`` signal, in order."""
        with self._lock:
            return [kw for n, _, kw in self.events if n == name]


@contextlib.contextmanager
def record_signals(*which: Signal, sender: Any = None) -> Iterator[SignalRecord]:
    """Collect what ``which`` (default: every signal of :mod:`resilience_mw.signals`)
    send while active, from ``sender`` only if given."""
    chosen = which or tuple(s for s in vars(signals).values() if isinstance(s, Signal))
    record = SignalRecord()
    receivers = []
    with contextlib.ExitStack() as stack:
        for signal in chosen:

            def receiver(sent_by: Any, _name: str = str(getattr(signal, "name", signal)), **kwargs: Any) -> None:
                record.add(_name, sent_by, kwargs)

            receivers.append(receiver)  # blinker holds receivers weakly by default
            stack.enter_context(signal.connected_to(receiver, sender=sender if sender is not None else Signal.ANY))
        yield record


# ------------------------------------------------------------------ pytest plugin

try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the fixtures
    pass
else:

    @pytest.fixture
    def resilience_workers_off() -> Iterator[None]:
        """The test runs inside :func:`workers_off`."""
        with workers_off():
            yield

    @pytest.fixture
    def build_app() -> Iterator[Callable[..., Any]]:
        """``build_app(create_app, *args, **kwargs)``: your app, built with no background
        threads of resilience_mw; anything still running is stopped at teardown."""
        with workers_off():
            yield lambda factory, *args, **kwargs: factory(*args, **kwargs)
