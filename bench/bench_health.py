"""Health checking and ordering costs, each against a baseline measured in the same run.

* ``order``: ns per ``failover_order()`` for every strategy at 3/100/1000 nodes (10 %
  down), beside ``pick`` (``get_available_node()``, the floor an order cannot beat) and
  ``naive`` (the ported design's way: filter the healthy nodes under a lock, sort by priority).
* ``round``: one health round over 1,000 local nodes (one asyncio process serving 1,000
  ports), wall and CPU seconds of this process, beside ``floor``: the same 1,000 GETs
  with plain urllib3 from a thread pool of the same size (no state, no deadline, no
  schedule). Answers come at once (``delay 0``: what the checker itself costs) and after
  50 ms (``delay 0.05``: what a round takes when nodes are slowish).

Prints one JSON line. Usage: python bench/bench_health.py [--repeats 5] [--workers 64]
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import urllib3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import emit, interleaved, median, ratio
from resilience_mw import FailoverManager, FailoverStrategy, HealthChecker, NodeHealth, ServiceNode
from tests.many_ports import ManyNodes


def naive_order(nodes: list[ServiceNode]) -> object:
    lock = threading.RLock()
    health = {node.id: (i % 10 != 0) for i, node in enumerate(nodes)}

    def order() -> tuple[ServiceNode, ...]:
        with lock:
            healthy = [n for n in nodes if health[n.id]]
            return tuple(sorted(healthy, key=lambda n: -n.priority))

    return order


def bench_order(sizes: list[int], repeats: int, target_s: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for n in sizes:
        nodes = [ServiceNode(f"n{i}", f"http://n{i}:80", priority=i % 17, weight=1 + i % 3) for i in range(n)]
        variants: dict[str, tuple[object, int]] = {"naive": (naive_order(nodes), 1)}
        for strategy in FailoverStrategy:
            m = FailoverManager(nodes, strategy, max_ejection_percent=100)
            for i, node in enumerate(nodes):
                if i % 10 == 0 and n > 3:
                    m.update_health(node.id, NodeHealth(node.id, False, 0.0))
            for node in nodes[:50]:
                m.mark_success(node.id, 0.001 * (1 + hash(node.id) % 7))
            variants[strategy.name] = (m.failover_order, 1)
            if strategy is FailoverStrategy.Priority:
                variants["pick"] = (m.get_available_node, 1)
        res = interleaved(variants, repeats, target_s)  # type: ignore[arg-type]
        row: dict[str, float] = {f"{name}_ns": round(median(v), 1) for name, v in res.items()}
        for strategy in FailoverStrategy:
            row[f"{strategy.name}_x_naive"] = round(ratio(res, strategy.name, "naive"), 3)
            row[f"{strategy.name}_x_pick"] = round(ratio(res, strategy.name, "pick"), 3)
        out[f"n{n}"] = row
    return out


def floor_round(nodes: list[ServiceNode], workers: int) -> object:
    http = urllib3.PoolManager(num_pools=len(nodes), maxsize=1, retries=False)

    def one(node: ServiceNode) -> bool:
        resp = http.request("GET", node.endpoint + "/health", timeout=2.0, redirect=False)
        return 200 <= resp.status < 300

    def run() -> int:
        with ThreadPoolExecutor(workers) as ex:
            return sum(ex.map(one, nodes))

    return run


def measure(fn: object) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()  # type: ignore[operator]
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_round(delay: float, repeats: int, workers: int) -> dict[str, float]:
    with ManyNodes(1000, delay, max_seconds=600) as server:
        nodes = [ServiceNode(f"n{i}", endpoint) for i, endpoint in enumerate(server.endpoints())]
        pool = FailoverManager(nodes)
        checker = HealthChecker(timeout=2.0, max_workers=workers)
        variants = {
            "checker": lambda: checker.run_once(pool),
            "floor": floor_round(nodes, workers),
        }
        for fn in variants.values():
            fn()  # connections up, code warm
        wall: dict[str, list[float]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        names = list(variants)
        for _ in range(repeats):
            random.shuffle(names)
            for name in names:
                w, c = measure(variants[name])
                wall[name].append(w)
                cpu[name].append(c)
        assert len(pool.healthy_nodes()) == 1000, "a healthy node was marked down"
    return {
        "checker_wall_s": round(median(wall["checker"]), 3),
        "checker_cpu_s": round(median(cpu["checker"]), 3),
        "floor_wall_s": round(median(wall["floor"]), 3),
        "floor_cpu_s": round(median(cpu["floor"]), 3),
        "wall_x_floor": round(ratio(wall, "checker", "floor"), 3),
        "cpu_x_floor": round(ratio(cpu, "checker", "floor"), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--target-s", type=float, default=0.1)
    ap.add_argument("--sizes", default="3,100,1000")
    ap.add_argument("--workers", type=int, default=64)
    args = ap.parse_args()
    results = {
        "order": bench_order([int(s) for s in args.sizes.split(",")], args.repeats, args.target_s),
        "round_delay0": bench_round(0.0, args.repeats, args.workers),
        "round_delay50ms": bench_round(0.05, args.repeats, args.workers),
    }
    goals = {"round_false_downs": 0, "order_priority_rr_3_nodes_max_x_pick": 3.0}
    emit("health", {"results": results, "workers": args.workers, "goals": goals})


if __name__ == "__main__":
    main()
