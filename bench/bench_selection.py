"""ns per get_available_node() for every strategy at 3/100/1000 nodes, 1 and 8 threads.

Baselines measured in the same run: ``floor`` (``nodes[next(count) % n]``, no lock) and
``naive`` (the ported design's way: filter every node's health under a lock, then max by priority).
Prints one JSON line. Usage: python bench/bench_selection.py [--repeats 5] [--target-s 0.1]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import emit, interleaved, median, ratio
from resilience_mw import FailoverManager, FailoverStrategy, NodeHealth, ServiceNode


def floor_selector(nodes: list[ServiceNode]) -> object:
    counter = itertools.count()
    n = len(nodes)
    return lambda: nodes[next(counter) % n]


def naive_selector(nodes: list[ServiceNode]) -> object:
    lock = threading.RLock()
    health = {node.id: (i % 10 != 0) for i, node in enumerate(nodes)}  # ~10 % unhealthy

    def select() -> ServiceNode | None:
        with lock:
            healthy = [node for node in nodes if health.get(node.id, True)]
            return max(healthy, key=lambda node: node.priority) if healthy else None

    return select


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--target-s", type=float, default=0.1)
    ap.add_argument("--sizes", default="3,100,1000")
    args = ap.parse_args()
    out: dict[str, dict[str, float]] = {}
    for n in (int(s) for s in args.sizes.split(",")):
        nodes = [ServiceNode(f"n{i}", f"http://n{i}:80", priority=i % 17, weight=1 + i % 3) for i in range(n)]
        variants = {}
        for threads in (1, 8):
            variants[f"floor/t{threads}"] = (floor_selector(nodes), threads)
            variants[f"naive/t{threads}"] = (naive_selector(nodes), threads)
            for strategy in FailoverStrategy:
                m = FailoverManager(nodes, strategy, max_ejection_percent=100)
                for i, node in enumerate(nodes):  # same ~10 % unhealthy as the naive baseline
                    if i % 10 == 0 and n > 3:
                        m.update_health(node.id, NodeHealth(node.id, False, 0.0))
                for node in nodes[:50]:
                    m.mark_success(node.id, 0.001 * (1 + hash(node.id) % 7))
                variants[f"{strategy.name}/t{threads}"] = (m.get_available_node, threads)
        res = interleaved(variants, args.repeats, args.target_s)
        row: dict[str, float] = {}
        for name in res:
            row[f"{name}_ns"] = round(median(res[name]), 1)
            if not name.startswith("floor"):
                t = name.split("/")[1]
                row[f"{name}_x_floor"] = round(ratio(res, name, f"floor/{t}"), 3)
        for strategy in ("Priority", "RoundRobin"):
            row[f"{strategy}_t8_over_t1"] = round(
                median(res[f"{strategy}/t8"]) / median(res[f"{strategy}/t1"]), 3
            )
        out[f"n{n}"] = row
    goals = {
        "priority_rr_max_x_floor": 2.0,
        "t8_over_t1_max": 1.2,
    }
    emit("selection", {"results": out, "goals": goals})


if __name__ == "__main__":
    main()
