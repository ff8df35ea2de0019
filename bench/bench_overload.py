"""Overload: goodput, critical success and latency at 2x and 4x capacity, with and
without the library, measured in the same run.

A real gunicorn (gthread, one worker x 4 threads, pinned to CPU 0; ``BENCH_WORKERS`` for
more workers) serves bench/overload_app.py (about 5 ms of CPU per request); the load
generator runs on CPU 1, so its own work is not taken for the server's overload. Capacity
C is measured first, unloaded (closed loop, 4 clients). Then an open-loop generator
(asyncio, one connection per request, a 2 s client timeout) offers 2x and 4x C for
``--seconds`` each, with a mix of criticalities (2 % critical_plus, 8 % critical, 30 %
sheddable_plus, 60 % sheddable: critical traffic fits within C even at 4x) and 100 user
keys, stamping ``X-Request-Start`` as a proxy would. Variants: (a) ``none``: no library;
(b) ``cpu``: the extension with its CPU levels; (c) ``full``: queueing delay (queue
tolerance by class and user, the level's queue signal, a 0.4 s max queue time) +
criticality + adaptive concurrency.

Reported per variant and load: goodput (2xx within the 500 ms SLO per second) as a
fraction of C, the success rate of critical traffic (critical and critical_plus, 2xx
within the SLO), the p99 latency of admitted (2xx) requests over the unloaded p99, and
what the library shed, by reason. Everything is bounded in time. Prints one JSON line;
``--trace`` adds, on stderr, CPU use, latency per second and each worker's level trace.
Usage: python bench/bench_overload.py [--seconds 20] [--variants none,cpu,full] [--trace]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import emit
from tests.helpers import stop_process
from tests.nodes import free_port

GUNICORN = Path(sys.executable).parent / "gunicorn"
SLO = 0.5
# The server gets one CPU, the load generator the other: sharing them, the generator's own
# work would be counted as the server's overload (and vary with the offered load).
SERVER_CPUS = {0}
GENERATOR_CPUS = {1}
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
#: the generator keeps connections alive, as a proxy in front does (``--connection close``:
#: a connection per request)
KEEP_ALIVE = True
# Critical traffic (a tenth) fits within capacity even at 4x, with room to refuse the rest
# (about 0.3 ms of CPU per refusal here: a sixth of the server at 4x).
MIX = [("critical_plus", 0.02), ("critical", 0.08), ("sheddable_plus", 0.30), ("sheddable", 0.60)]


def start(lib: str, stats_dir: str | None = None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "LIB": lib}
    if stats_dir:
        env["STATS_DIR"] = stats_dir
    proc = subprocess.Popen(
        [str(GUNICORN), "-k", "gthread", "-w", str(WORKERS), "--threads", "4", "-b", f"127.0.0.1:{port}",
         "--backlog", "2048", "--keep-alive", "30", "bench.overload_app:create_app()"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    os.sched_setaffinity(proc.pid, SERVER_CPUS)  # its workers, forked later, inherit it
    return proc, port


Pool = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


async def one(port: int, criticality: str, user: str, pool: Pool | None = None) -> tuple[str, int, float]:
    """One request; with ``pool``, on a kept-alive connection (as a proxy in front keeps
    them), else on a connection of its own."""
    t0 = time.time()
    for attempt in (1, 2):
        reused = bool(pool)
        writer: asyncio.StreamWriter | None = None
        try:
            if pool:
                reader, writer = pool.pop()
            else:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
            writer.write(
                f"GET /work/{criticality} HTTP/1.1\r\nHost: bench\r\n"
                f"Connection: {'keep-alive' if pool is not None else 'close'}\r\n"
                f"X-Request-Start: t={t0:.6f}\r\nX-User: {user}\r\n\r\n".encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2 - (time.time() - t0))
            status = int(head.split(None, 2)[1])
            length = next(
                int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            )
            await asyncio.wait_for(reader.readexactly(length), 2 - (time.time() - t0))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError, StopIteration) as e:
            if writer is not None:
                writer.close()
            if reused and attempt == 1 and isinstance(e, (asyncio.IncompleteReadError, ConnectionError)):
                continue  # the server had closed the idle connection: once more on a new one
            status = 0
        else:
            if pool is not None:
                pool.append((reader, writer))
            else:
                writer.close()
        break
    return criticality, status, time.time() - t0


def _close(pool: Pool | None) -> None:
    for _, writer in pool or ():
        writer.close()


async def closed_loop(port: int, seconds: float, clients: int = 4) -> tuple[float, list[float]]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    pool: Pool | None = [] if KEEP_ALIVE else None

    async def client() -> None:
        while time.monotonic() < stop:
            _, status, took = await one(port, "critical", "u0", pool)
            if status == 200:
                latencies.append(took)

    await asyncio.gather(*(client() for _ in range(clients)))
    _close(pool)
    return len(latencies) / seconds, latencies


async def open_loop(port: int, rate: float, seconds: float) -> list[tuple[str, int, float]]:
    rng = random.Random(1)
    names, weights = zip(*MIX, strict=True)
    tasks = []
    pool: Pool | None = [] if KEEP_ALIVE else None
    t0 = time.monotonic()
    n = int(rate * seconds)
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        crit = rng.choices(names, weights)[0]
        tasks.append(asyncio.create_task(one(port, crit, f"u{rng.randrange(100)}", pool)))
    results = list(await asyncio.gather(*tasks))
    _close(pool)
    return results


def _server_cpu(proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds the server's processes have used so far."""
    parent = psutil.Process(proc.pid)
    return sum(sum(p.cpu_times()[:2]) for p in [parent, *parent.children(recursive=True)])


def _server_cpus_idle() -> float:
    """Idle seconds of the server's CPUs so far (from /proc/stat)."""
    names = {f"cpu{n}" for n in SERVER_CPUS}
    idle = 0.0
    with open("/proc/stat") as f:
        for line in f:
            if line.split(" ", 1)[0] in names:
                idle += int(line.split()[4]) / os.sysconf("SC_CLK_TCK")
    return idle


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 100 else max(values, default=0.0)


def wait_up(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, status, _ = asyncio.run(one(port, "critical", "u0"))
        if status == 200:
            for child in psutil.Process(proc.pid).children(recursive=True):
                assert set(child.cpu_affinity()) == SERVER_CPUS  # (inherited from the arbiter)
            return
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--variants", default="none,cpu,full", help="comma-separated subset of none,cpu,full")
    ap.add_argument("--trace", action="store_true", help="print each worker's level/threshold/limit trace to stderr")
    ap.add_argument("--connection", choices=("keep-alive", "close"), default="keep-alive")
    args = ap.parse_args()
    global KEEP_ALIVE
    KEEP_ALIVE = args.connection == "keep-alive"
    os.sched_setaffinity(0, GENERATOR_CPUS)
    out: dict[str, Any] = {}
    proc, port = start("none")
    try:
        wait_up(port, proc)
        asyncio.run(closed_loop(port, 2))  # warm
        capacity, latencies = asyncio.run(closed_loop(port, 5))
    finally:
        stop_process(proc)
    unloaded_p99 = p99(latencies)
    out["capacity_rps"] = round(capacity, 1)
    out["unloaded_p99_ms"] = round(unloaded_p99 * 1000, 1)
    for lib in args.variants.split(","):
        stats_dir = tempfile.mkdtemp()
        proc, port = start(lib, stats_dir)
        try:
            wait_up(port, proc)
            for factor in (2, 4):
                busy, mine, began, idle = _server_cpu(proc), sum(os.times()[:2]), time.monotonic(), _server_cpus_idle()
                results = asyncio.run(open_loop(port, factor * capacity, args.seconds))
                if args.trace:
                    took = time.monotonic() - began
                    print(lib, factor, "CPU busy: server", round((_server_cpu(proc) - busy) / took, 3),
                          "generator", round((sum(os.times()[:2]) - mine) / took, 3),
                          "server CPUs idle", round((_server_cpus_idle() - idle) / took, 3), file=sys.stderr)
                good = [r for r in results if r[1] == 200 and r[2] <= SLO]
                critical = [r for r in results if r[0] in ("critical", "critical_plus")]
                critical_good = [r for r in critical if r[1] == 200 and r[2] <= SLO]
                admitted = [r[2] for r in results if r[1] == 200]
                if args.trace:  # admitted latency per second of the run: is it a transient?
                    per_second = [
                        [r[2] for r in results[int(i * factor * capacity):int((i + 1) * factor * capacity)] if r[1] == 200]
                        for i in range(int(args.seconds))
                    ]
                    print(lib, factor, "p50/p99 ms per second:",
                          [(round(statistics.median(x) * 1000), round(p99(x) * 1000)) for x in per_second if x],
                          file=sys.stderr)
                    refused = [r[2] for r in results if r[1] == 503]
                    if refused:
                        print(lib, factor, "503 p50/p99 ms:", round(statistics.median(refused) * 1000, 1),
                              round(p99(refused) * 1000, 1), file=sys.stderr)
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
        reasons: collections.Counter[str] = collections.Counter()
        for name in os.listdir(stats_dir):
            with open(os.path.join(stats_dir, name)) as f:
                stats = json.load(f)
            reasons.update(stats["reasons"])
            if args.trace:
                print(lib, name, stats["trace"], file=sys.stderr)
        shutil.rmtree(stats_dir)
        out[f"{lib}_shed_by_reason"] = dict(reasons)
    emit("overload", {"results": out, "seconds": args.seconds,
                      "goals": {"full_2x_goodput": 0.9, "full_4x_goodput": 0.8, "full_critical_success": 0.99,
                                "full_admitted_p99_over_unloaded": 2.0}})


if __name__ == "__main__":
    main()
