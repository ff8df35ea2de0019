"""Many threads selecting and marking at once: invariants hold, round-robin stays balanced."""

from __future__ import annotations

import random
import threading
from collections import Counter

from resilience_mw import FailoverManager, FailoverStrategy, ServiceNode


def run_threads(n: int, target: object) -> None:
    barrier = threading.Barrier(n)

    def wrapped(i: int) -> None:
        barrier.wait()
        target(i)  # type: ignore[operator]

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_round_robin_balanced_under_8_threads() -> None:
    nodes = [ServiceNode(f"n{i}", f"http://n{i}") for i in range(3)]
    m = FailoverManager(nodes, FailoverStrategy.RoundRobin)
    counts: list[Counter[str]] = [Counter() for _ in range(8)]

    def work(i: int) -> None:
        c = counts[i]
        for _ in range(50_000 // 8):
            c[m.get_available_node().id] += 1  # type: ignore[union-attr]

    run_threads(8, work)
    total = sum(counts, Counter())
    expected = sum(total.values()) / 3
    assert all(abs(v - expected) <= expected * 0.01 for v in total.values()), total


def test_selection_and_marking_race_keeps_invariants() -> None:
    nodes = [ServiceNode(f"n{i}", f"http://n{i}", priority=i, weight=i + 1) for i in range(6)]
    errors: list[BaseException] = []
    for strategy in FailoverStrategy:
        m = FailoverManager(nodes, strategy, failure_threshold=2, max_ejection_percent=100)

        def work(i: int, m: FailoverManager = m) -> None:
            rng = random.Random(i)
            try:
                for k in range(50_000 // 8):
                    node = m.get_available_node()
                    if node is not None:
                        assert node in nodes
                    if k % 7 == 0:
                        victim = rng.choice(nodes).id
                        if rng.random() < 0.5:
                            m.mark_failure(victim)
                        else:
                            m.mark_success(victim, rng.random() / 100)
                    if k % 101 == 0:
                        order = m.failover_order()
                        assert len({n.id for n in order}) == len(order)
            except BaseException as exc:
                errors.append(exc)

        run_threads(8, work)
        assert not errors, errors
        # the published healthy set matches the per-node state
        healthy = {n.id for n in m.healthy_nodes()}
        assert healthy == {n.id for n in nodes if m.is_healthy(n.id)}
