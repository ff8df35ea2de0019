from __future__ import annotations

import pytest

from resilience_mw import ServiceNode


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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
