"""Hypothesis state machine: the pool against a simple model of the same rules."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from resilience_mw import FailoverManager, FailoverStrategy, ServiceNode
from resilience_mw.testing import FakeClock

IDS = ["a", "b", "c", "d"]
THRESHOLD = 2


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        nodes = [ServiceNode(i, f"http://{i}", priority=10 - k) for k, i in enumerate(IDS)]
        self.m = FailoverManager(
            nodes,
            FailoverStrategy.Priority,
            failure_threshold=THRESHOLD,
            max_ejection_percent=100,
            base_ejection_time=10,
            max_ejection_time=40,
            panic=False,
            slow_start_window=0,  # the model: a node offered again is picked again at once
            clock=self.clock,
        )
        self.fails = dict.fromkeys(IDS, 0)
        self.healthy = dict.fromkeys(IDS, True)
        self.until: dict[str, float] = {}

    def _expire(self) -> None:
        for i, t in list(self.until.items()):
            if self.clock.now >= t:
                self.healthy[i] = True
                self.fails[i] = THRESHOLD - 1
                del self.until[i]

    @rule(node=st.sampled_from(IDS))
    def fail(self, node: str) -> None:
        self._expire()  # the pool readmits on any event too
        self.m.mark_failure(node)
        self.fails[node] += 1
        if self.healthy[node] and self.fails[node] >= THRESHOLD:
            self.healthy[node] = False
            st_ = next(s for s in self.m.snapshot() if s["id"] == node)
            self.until[node] = self.clock.now + st_["ejected_for"]

    @rule(node=st.sampled_from(IDS))
    def succeed(self, node: str) -> None:
        self._expire()
        self.m.mark_success(node, 0.01)
        self.fails[node] = 0
        self.healthy[node] = True
        self.until.pop(node, None)

    @rule(dt=st.floats(min_value=0, max_value=50))
    def wait(self, dt: float) -> None:
        self.clock.advance(dt)

    @invariant()
    def every_read_path_agrees(self) -> None:
        self._expire()
        # each reader on its own readmits what expired by now (is_healthy first: no pick needed)
        for i in IDS:
            assert self.m.is_healthy(i) == self.healthy[i]
        assert [s["healthy"] for s in self.m.snapshot()] == [self.healthy[i] for i in IDS]
        picked = self.m.get_available_node()
        best = next((i for i in IDS if self.healthy[i]), None)
        assert (picked.id if picked else None) == best


PoolMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestPool = PoolMachine.TestCase
