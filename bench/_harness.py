"""Shared timing helpers for the bench scripts: interleaved repeats, same-run ratios.

Every repeat runs each variant once, in shuffled order; figures are medians over the
repeats, and ratios are computed inside each repeat before taking the median, so they
compare variants measured under the same machine load.
"""

from __future__ import annotations

import gc
import json
import platform
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

Fn = Callable[[], object]


def _loop(fn: Fn, n: int) -> int:
    it = range(n)
    t0 = time.perf_counter_ns()
    for _ in it:
        fn()
    return time.perf_counter_ns() - t0


def calibrate(fn: Fn, target_s: float) -> int:
    n = 1000
    while True:
        elapsed = _loop(fn, n)
        if elapsed >= target_s * 1e9 / 4 or n >= 50_000_000:
            return max(1000, int(n * target_s * 1e9 / max(elapsed, 1)))
        n *= 4


def time_once(fn: Fn, n: int, threads: int = 1) -> float:
    """ns per call; with ``threads`` > 1, aggregate wall time / total calls."""
    gc_was = gc.isenabled()
    gc.disable()
    try:
        if threads == 1:
            return _loop(fn, n) / n
        per = max(1, n // threads)
        barrier = threading.Barrier(threads + 1)

        def work() -> None:
            barrier.wait()
            _loop(fn, per)

        ts = [threading.Thread(target=work) for _ in range(threads)]
        for t in ts:
            t.start()
        barrier.wait()
        t0 = time.perf_counter_ns()
        for t in ts:
            t.join()
        return (time.perf_counter_ns() - t0) / (per * threads)
    finally:
        if gc_was:
            gc.enable()


def interleaved(
    variants: Mapping[str, tuple[Fn, int]], repeats: int, target_s: float
) -> dict[str, list[float]]:
    """Run ``{name: (fn, threads)}`` ``repeats`` times each, shuffled per repeat."""
    counts = {name: calibrate(fn, target_s) for name, (fn, _) in variants.items()}
    results: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for _ in range(repeats):
        random.shuffle(names)
        for name in names:
            fn, threads = variants[name]
            results[name].append(time_once(fn, counts[name], threads))
    return results


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def ratio(results: dict[str, list[float]], a: str, b: str) -> float:
    """Median over repeats of a/b, computed within each repeat."""
    return statistics.median(x / y for x, y in zip(results[a], results[b], strict=True))


def delta(results: dict[str, list[float]], a: str, b: str) -> float:
    """Median over repeats of a-b in ns, computed within each repeat."""
    return statistics.median(x - y for x, y in zip(results[a], results[b], strict=True))


def machine() -> dict[str, Any]:
    import os

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def emit(name: str, payload: dict[str, Any]) -> None:
    """Print one JSON line: the bench name, the machine, and the payload."""
    print(json.dumps({"bench": name, "machine": machine(), **payload}, sort_keys=True))
