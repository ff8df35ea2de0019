from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resilience_mw import ServiceNode
from resilience_mw.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def seed_nodes() -> list[ServiceNode]:
    """The seed's three nodes (priorities 100/80/60, weights 50/30/20)."""
    return [
        ServiceNode("primary", "http://primary:8080", priority=100, weight=50),
        ServiceNode("secondary", "http://secondary:8080", priority=80, weight=30),
        ServiceNode("tertiary", "http://tertiary:8080", priority=60, weight=20),
    ]


@pytest.fixture
def node_factory():  # type: ignore[no-untyped-def]
    """Start NodeServers on demand; all are stopped at the end of the test."""
    from tests.nodes import NodeServer

    started: list[NodeServer] = []

    def make(name: str = "node", mode: str = "ok") -> NodeServer:
        node = NodeServer(name).start()
        node.mode = mode
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop()


def run_in_forked_child(fn: Any, timeout: float = 10.0) -> bool:
    """Run ``fn()`` in a real ``os.fork()`` child; its truthy result, or False if it
    raised or did not answer within ``timeout`` (a deadlocked child is killed)."""
    import os
    import select
    import signal

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            ok = bool(fn())
        except BaseException:
            ok = False
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            return False
        return os.read(r, 1) == b"1"
    finally:
        os.waitpid(pid, 0)
        os.close(r)


@pytest.fixture(params=["sqlite", "redis"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL: a SQLite file, then a fresh redis-server (stopped at the end)."""
    from tests.redis_server import state_url_for

    with state_url_for(request.param, tmp_path) as url:
        yield url
