"""Overload: goodput, critical success and latency at 2x and 4x capacity, with and
without the library, measured in the same run.

A real gunicorn (gthread, 2 workers x 4 threads) serves bench/overload_app.py (about 5 ms
of CPU per request). Capacity C is measured first, unloaded (closed loop, 4 clients).
Then an open-loop generator (asyncio, one connection per request, a 2 s client timeout)
offers 2x and 4x C for ``--seconds`` each, with a mix of criticalities (5 %
critical_plus, 15 % critical, 30 % sheddable_plus, 50 % sheddable: critical traffic fits
within C even at 4x) and 100 user keys,
stamping ``X-Request-Start`` as a proxy would. Variants: (a) ``none``: no library; (b)
``cpu``: the extension with its CPU levels; (c) ``full``: queueing delay + criticality +
adaptive concurrency (the queue, not the CPU, sets the level).

Reported per variant and load: goodput (2xx within the 500 ms SLO per second) as a
fraction of C, the success rate of critical traffic (critical and critical_plus, 2xx
within the SLO), and the p99 latency of admitted (2xx) requests over the unloaded p99.
Everything is bounded in time. Prints one JSON line.
Usage: python bench/bench_overload.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import emit
from tests.helpers import stop_process
from tests.nodes import free_port

GUNICORN = Path(sys.executable).parent / "gunicorn"
SLO = 0.5
# critical traffic (a fifth) fits within capacity even at 4x: the rest can be shed for it
MIX = [("critical_plus", 0.05), ("critical", 0.15), ("sheddable_plus", 0.30), ("sheddable", 0.50)]


def start(lib: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [str(GUNICORN), "-k", "gthread", "-w", "2", "--threads", "4", "-b", f"127.0.0.1:{port}",
         "--backlog", "2048", "bench.overload_app:create_app()"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "LIB": lib},
    )
    return proc, port


async def one(port: int, criticality: str, user: str) -> tuple[str, int, float]:
    t0 = time.time()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
        writer.write(
            f"GET /work/{criticality} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n"
            f"X-Request-Start: t={t0:.6f}\r\nX-User: {user}\r\n\r\n".encode()
        )
        line = await asyncio.wait_for(reader.readline(), 2 - (time.time() - t0))
        await asyncio.wait_for(reader.read(), 2)
        writer.close()
        status = int(line.split()[1]) if line else 0
    except (OSError, asyncio.TimeoutError, ValueError, IndexError):
        status = 0
    return criticality, status, time.time() - t0


async def closed_loop(port: int, seconds: float, clients: int = 4) -> tuple[float, list[float]]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < stop:
            _, status, took = await one(port, "critical", "u0")
            if status == 200:
                latencies.append(took)

    await asyncio.gather(*(client() for _ in range(clients)))
    return len(latencies) / seconds, latencies


async def open_loop(port: int, rate: float, seconds: float) -> list[tuple[str, int, float]]:
    rng = random.Random(1)
    names, weights = zip(*MIX, strict=True)
    tasks = []
    t0 = time.monotonic()
    n = int(rate * seconds)
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        crit = rng.choices(names, weights)[0]
        tasks.append(asyncio.create_task(one(port, crit, f"u{rng.randrange(100)}")))
    return list(await asyncio.gather(*tasks))


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 100 else max(values, default=0.0)


def wait_up(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, status, _ = asyncio.run(one(port, "critical", "u0"))
        if status == 200:
            return
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    out: dict[str, Any] = {}
    proc, port = start("none")
    try:
        wait_up(port)
        asyncio.run(closed_loop(port, 2))  # warm
        capacity, latencies = asyncio.run(closed_loop(port, 5))
    finally:
        stop_process(proc)
    unloaded_p99 = p99(latencies)
    out["capacity_rps"] = round(capacity, 1)
    out["unloaded_p99_ms"] = round(unloaded_p99 * 1000, 1)
    for lib in ("none", "cpu", "full"):
        proc, port = start(lib)
        try:
            wait_up(port)
            for factor in (2, 4):
                results = asyncio.run(open_loop(port, factor * capacity, args.seconds))
                good = [r for r in results if r[1] == 200 and r[2] <= SLO]
                critical = [r for r in results if r[0] in ("critical", "critical_plus")]
                critical_good = [r for r in critical if r[1] == 200 and r[2] <= SLO]
                admitted = [r[2] for r in results if r[1] == 200]
                out[f"{lib}_{factor}x"] = {
                    "goodput_of_capacity": round(len(good) / args.seconds / capacity, 3),
                    "critical_success": round(len(critical_good) / max(1, len(critical)), 4),
                    "admitted_p99_over_unloaded": round(p99(admitted) / unloaded_p99, 2) if admitted else None,
                    "shed_503": sum(1 for r in results if r[1] == 503),
                    "failed_or_timed_out": sum(1 for r in results if r[1] == 0),
                    "offered": len(results),
                }
                time.sleep(2)  # let the backlog drain between loads
        finally:
            stop_process(proc)
    emit("overload", {"results": out, "seconds": args.seconds,
                      "goals": {"full_2x_goodput": 0.9, "full_4x_goodput": 0.8, "full_critical_success": 0.99,
                                "full_admitted_p99_over_unloaded": 2.0}})


if __name__ == "__main__":
    main()
