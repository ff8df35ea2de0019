"""Hot-path cost of the degradation manager, psutil sample cost, and health detection time.

* ns per ``record_request()`` (also with the sampler running, which keeps the error
  window current), per ``current_level()`` and per both, 1 and 8 threads,
  beside a bare function call in the same run;
* one ``SystemSampler`` sample (psutil CPU + memory) in microseconds;
* seconds from a node's port closing until the HealthChecker marks it unhealthy, and
  from it reopening until healthy, against interval x threshold (+ timeout).

Prints one JSON line. Usage: python bench/bench_degradation.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import delta, emit, interleaved, median
from resilience_mw import AutoDegradationManager, FailoverManager, HealthChecker, ServiceNode, SystemSampler
from tests.nodes import NodeServer


def bare(success: bool = True) -> None:
    return None


def hot_path_figures(repeats: int, target_s: float) -> dict[str, float]:
    m = AutoDegradationManager()
    record, level = m.record_request, m.current_level
    # with its sampler running, as deployed: the window is kept current, successes skip the clock
    sampling = AutoDegradationManager()
    sampling.start()
    record_sampling = sampling.record_request

    def both() -> object:
        record(True)
        return level()

    variants = {}
    for t in (1, 8):
        variants[f"bare/t{t}"] = (bare, t)
        variants[f"record_request/t{t}"] = ((lambda: record(True)), t)
        variants[f"record_request_sampling/t{t}"] = ((lambda: record_sampling(True)), t)
        variants[f"current_level/t{t}"] = (level, t)
        variants[f"record_plus_level/t{t}"] = (both, t)
    try:
        res = interleaved(variants, repeats, target_s)
    finally:
        sampling.stop()
    out = {f"{k}_ns": round(median(v), 1) for k, v in res.items()}
    for t in (1, 8):
        for name in ("record_request", "record_request_sampling", "current_level", "record_plus_level"):
            out[f"{name}/t{t}_minus_bare_ns"] = round(delta(res, f"{name}/t{t}", f"bare/t{t}"), 1)
    out["record_plus_level_t8_over_t1"] = round(
        median(res["record_plus_level/t8"]) / median(res["record_plus_level/t1"]), 3
    )
    return out


def sample_cost(n: int = 2000) -> float:
    s = SystemSampler()
    s.prime()
    t0 = time.perf_counter()
    for _ in range(n):
        s()
    return (time.perf_counter() - t0) / n * 1e6


def detection(interval: float, timeout: float, threshold: int) -> dict[str, float]:
    server = NodeServer("bench").start()
    manager = FailoverManager([ServiceNode("n", server.url)])
    checker = HealthChecker(
        interval, timeout, unhealthy_threshold=threshold, healthy_threshold=threshold, jitter=0
    )
    checker.start(manager)
    try:
        time.sleep(interval * 2)
        t0 = time.monotonic()
        server.stop()
        while manager.is_healthy("n") and time.monotonic() - t0 < 30:
            time.sleep(0.002)
        down = time.monotonic() - t0
        t0 = time.monotonic()
        server.start()
        while not manager.is_healthy("n") and time.monotonic() - t0 < 30:
            time.sleep(0.002)
        up = time.monotonic() - t0
    finally:
        checker.stop()
        server.stop()
    bound = interval * threshold + timeout
    return {
        "interval_s": interval,
        "threshold": threshold,
        "timeout_s": timeout,
        "detect_down_s": round(down, 3),
        "detect_up_s": round(up, 3),
        "bound_s": bound,
        "down_within_bound": down <= bound,
        "up_within_bound": up <= bound,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--target-s", type=float, default=0.1)
    args = ap.parse_args()
    emit(
        "degradation",
        {
            "hot_path": hot_path_figures(args.repeats, args.target_s),
            "psutil_sample_us": round(sample_cost(), 1),
            "default_sampling_hz": 1.0,
            "health_detection": detection(interval=0.1, timeout=0.2, threshold=3),
            "goals": {"record_plus_level_t1_max_ns": 500, "t8_over_t1_max": 1.5, "sampling_max_hz": 10},
        },
    )


if __name__ == "__main__":
    main()
