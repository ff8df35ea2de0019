"""Overload: goodput, critical success and latency at 2x and 4x capacity, with and
without the library, and with HAProxy in front instead, measured in the same run.

A real gunicorn (gthread, one worker x 4 threads, pinned to CPU 0; ``BENCH_WORKERS`` for
more workers) serves bench/overload_app.py (about 5 ms of CPU per request); the load
generator runs on CPU 1, so its own work is not taken for the server's overload. Capacity
C is measured first, unloaded (closed loop, 4 clients). Then an open-loop generator
(asyncio, a 2 s client timeout; connections kept alive as a proxy keeps them,
``--connection close``: one per request) offers 2x and 4x C for
``--seconds`` each, with a mix of criticalities (2 % critical_plus, 8 % critical, 30 %
sheddable_plus, 60 % sheddable: critical traffic fits within C even at 4x) and 100 user
keys, stamping ``X-Request-Start`` as a proxy would. Variants: (a) ``none``: no library;
(b) ``cpu``: the extension with its CPU levels; (c) ``full``: queueing delay (queue
tolerance by class and user, the level's queue signal, a 0.4 s max queue time) +
criticality + adaptive concurrency; ``haproxy<ms>`` (``haproxy25`` and ``haproxy100`` by
default): what an operator would put in front instead of the library: HAProxy 2.6
(Debian's, started here on 127.0.0.1 with a config generated in a temporary directory,
``haproxy -f cfg -db``, on the generator's CPU as a proxy on another machine would be)
before (a)'s server, ``maxconn`` on the server line = the worker threads (4 x workers),
``timeout queue <ms>``, and ``http-request set-priority-class`` by the request's path
``/work/<criticality>`` (critical_plus first, then critical, sheddable_plus, sheddable).
HAProxy answers 503 when a request's queue time runs out: counted as shed. (HAProxy does
not read ``X-Request-Start``; the generator's stamp passes through, harmless.)

Reported per variant and load: goodput (2xx within the 500 ms SLO per second) as a
fraction of C, the success rate of critical traffic (critical and critical_plus, 2xx
within the SLO), the p99 latency of admitted (2xx) requests over the unloaded p99, and
what the library shed, by reason; for HAProxy, its goodput over (c)'s at the same load
(``goodput_over_full``) and HAProxy's own CPU per request. ``refusal_cpu``: the CPU one
refusal costs inside the worker (see :func:`refusal_cost`; ``worker_over_served``: over
the worker's CPU per request served unloaded, ``served_cpu_ms``), which HAProxy's refusals
do not: they run on another CPU. Everything is bounded in time. Prints one JSON line;
``--trace`` adds, on stderr, CPU use, latency per second and each worker's level trace.

Recovery: per variant, after the 2x and 4x loads, ``--overload-seconds`` (20) at 4x C, then
the offered load drops to 0.5x C for ``--recovery-seconds`` (10), on one schedule.
``recovery_s`` is the time from the drop until requests are served again: requests are
grouped by their scheduled send time into 1 s windows starting every 0.1 s from the drop;
it is the start of the first window from which on every window of the phase has >= 99 %
of its requests answered 2xx (``None``: not within the phase). Goal: <= 2 s for the
library's variants. A window holds about 0.5 C requests (~90 here): one request not served
misses 99 %, so a single stray refusal late in the phase sets ``recovery_s``;
``first_window_at_99_s`` and ``last_not_served`` tell a stray refusal from a slow
recovery. ``<variant>_retry_after``: the ``Retry-After`` values the refused clients got
over the whole run of that variant (all three phases): min, median, max and how many
distinct values (HAProxy sends none). ``goals_met`` says which goal held.
Usage: python bench/bench_overload.py [--seconds 20] [--variants none,cpu,full,haproxy25,haproxy100]
       [--overload-seconds 20 --recovery-seconds 10] [--refusals 3000] [--trace]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import emit
from tests.helpers import stop_process
from tests.nodes import free_port

GUNICORN = Path(sys.executable).parent / "gunicorn"
# Debian installs it in /usr/sbin, not on a user's PATH
HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)
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
# (a refusal costs the worker about 0.2 ms of CPU here, ``refusal_cpu``: a seventh of the
# server at 4x).
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


class Result(NamedTuple):
    """One request: its class, status (0: failed or timed out), latency, the
    ``Retry-After`` of a refusal, and (open loop) its scheduled send time from the start
    of the phase."""

    criticality: str
    status: int
    took: float
    retry_after: str | None = None
    at: float = 0.0


async def one(port: int, criticality: str, user: str, pool: Pool | None = None) -> Result:
    """One request; with ``pool``, on a kept-alive connection (as a proxy in front keeps
    them), else on a connection of its own. Every request carries ``X-Request-Start`` (the
    library's queue measure; HAProxy ignores it)."""
    t0 = time.time()
    retry_after = None
    for attempt in (1, 2):
        reused = bool(pool)
        writer: asyncio.StreamWriter | None = None
        try:
            if pool:
                reader, w = pool.pop()
            else:
                reader, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
            writer = w
            w.write(
                f"GET /work/{criticality} HTTP/1.1\r\nHost: bench\r\n"
                f"Connection: {'keep-alive' if pool is not None else 'close'}\r\n"
                f"X-Request-Start: t={t0:.6f}\r\nX-User: {user}\r\n\r\n".encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2 - (time.time() - t0))
            lines = head.split(b"\r\n")
            status = int(lines[0].split(None, 2)[1])
            length, close, retry_after = None, False, None
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"retry-after":
                    retry_after = value.strip().decode("latin-1")
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
            if length is None:
                raise ValueError("no Content-Length")
            await asyncio.wait_for(reader.readexactly(length), 2 - (time.time() - t0))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            if writer is not None:
                writer.close()
            if reused and attempt == 1 and isinstance(e, (asyncio.IncompleteReadError, ConnectionError)):
                continue  # the server had closed the idle connection: once more on a new one
            status, retry_after = 0, None
        else:
            if pool is not None and not close:
                pool.append((reader, w))
            else:  # (HAProxy closes the connection after a 503 of its own)
                w.close()
        break
    return Result(criticality, status, time.time() - t0, retry_after)


def _close(pool: Pool | None) -> None:
    for _, writer in pool or ():
        writer.close()


async def closed_loop(
    port: int, seconds: float, clients: int = 4, criticality: str = "critical", limit: int | None = None
) -> tuple[float, list[float], collections.Counter[int]]:
    """``clients`` clients, each sending its next request when the last one is answered,
    for ``seconds`` (or until ``limit`` requests in all). Returns the rate of 200s, their
    latencies and the count of each status."""
    latencies: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    stop = time.monotonic() + seconds
    pool: Pool | None = [] if KEEP_ALIVE else None

    async def client() -> None:
        while time.monotonic() < stop and (limit is None or statuses.total() < limit):
            r = await one(port, criticality, "u0", pool)
            statuses[r.status] += 1
            if r.status == 200:
                latencies.append(r.took)

    began = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    _close(pool)
    return len(latencies) / (time.monotonic() - began), latencies, statuses


async def open_loop(port: int, schedule: list[tuple[float, float]]) -> list[Result]:
    """Offer ``schedule``, a list of ``(rate, seconds)`` segments one after another, open
    loop (each request at its time, answered or not). Each result carries its scheduled
    send time from the start."""
    rng = random.Random(1)
    names, weights = zip(*MIX, strict=True)
    sends: list[float] = []
    start = 0.0
    for rate, seconds in schedule:
        sends.extend(start + i / rate for i in range(int(rate * seconds)))
        start += seconds
    tasks = []
    pool: Pool | None = [] if KEEP_ALIVE else None
    t0 = time.monotonic()
    for at in sends:
        delay = t0 + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        crit = rng.choices(names, weights)[0]
        tasks.append(asyncio.create_task(one(port, crit, f"u{rng.randrange(100)}", pool)))
    results = await asyncio.gather(*tasks)
    _close(pool)
    return [r._replace(at=at) for r, at in zip(results, sends, strict=True)]


def _cpu(pid: int, children: bool = True) -> float:
    """CPU seconds process ``pid`` (and its children) have used so far."""
    parent = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [parent, *(parent.children(recursive=True) if children else ())])


def _server_cpu(proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds the server's processes have used so far."""
    return _cpu(proc.pid)


def _workers_cpu(proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds the server's workers (not the arbiter) have used so far."""
    return sum(sum(p.cpu_times()[:2]) for p in psutil.Process(proc.pid).children(recursive=True))


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


def wait_up(port: int, proc: subprocess.Popen[bytes], statuses: tuple[int, ...] = (200,)) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        if asyncio.run(one(port, "critical", "u0")).status in statuses:
            for child in psutil.Process(proc.pid).children(recursive=True):
                assert set(child.cpu_affinity()) == SERVER_CPUS  # (inherited from the arbiter)
            return
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not start")


def haproxy_variant(name: str) -> int | None:
    """``haproxy<ms>``: HAProxy with ``timeout queue <ms>``; otherwise ``None``."""
    return int(name.removeprefix("haproxy")) if name.startswith("haproxy") and name[7:].isdigit() else None


#: HAProxy's queue priority class by criticality (the lowest class is served first)
PRIORITY_CLASS = {"critical_plus": 0, "critical": 1, "sheddable_plus": 2, "sheddable": 3}


def haproxy_config(port: int, server_port: int, queue_ms: int) -> str:
    """What an operator would put in front instead of the library: at most one request per
    worker thread on the server, the rest queued by class for at most ``queue_ms``, then
    HAProxy's own 503."""
    priorities = "\n".join(
        f"    http-request set-priority-class int({cls}) if {{ path /work/{crit} }}"
        for crit, cls in PRIORITY_CLASS.items()
    )
    return f"""global
    nbthread 1
    maxconn 8192

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 10s
    timeout http-keep-alive 30s
    timeout queue {queue_ms}ms

frontend bench
    bind 127.0.0.1:{port}
    default_backend app

backend app
{priorities}
    server app 127.0.0.1:{server_port} maxconn {4 * WORKERS}
"""


def start_haproxy(server_port: int, queue_ms: int, directory: str) -> tuple[subprocess.Popen[bytes], int]:
    """HAProxy in the foreground (``-db``) on 127.0.0.1, on the generator's CPU (inherited:
    a real proxy runs elsewhere than the server), with its config and log in ``directory``."""
    assert HAPROXY is not None
    port = free_port()
    cfg = Path(directory, "haproxy.cfg")
    cfg.write_text(haproxy_config(port, server_port, queue_ms))
    check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"haproxy rejected its config:\n{check.stdout}{check.stderr}")
    with open(Path(directory, "haproxy.log"), "wb") as log:
        proc = subprocess.Popen([HAPROXY, "-f", str(cfg), "-db"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"haproxy exited: {Path(directory, 'haproxy.log').read_text()}")
        if asyncio.run(one(port, "critical", "u0")).status == 200:
            assert set(psutil.Process(proc.pid).cpu_affinity()) == GENERATOR_CPUS
            return proc, port
        time.sleep(0.1)
    stop_process(proc)
    raise RuntimeError("haproxy did not start")


def refusal_cost(n: int) -> dict[str, Any]:
    """The CPU one refusal costs, two ways. ``worker_us``: a gunicorn worker like the
    bench's (``LIB=shedall``: the library sheds every non-core request at level Normal,
    forced)
    refuses ``n`` requests from 4 closed-loop clients on kept-alive connections; its
    workers' CPU time (psutil; the arbiter left out), over the 503s: the whole refusal
    inside the worker, HTTP parsing and writing included (and the library's sampler, 4
    times a second). ``middleware_us``: the same app called in this process through
    Flask's WSGI entry ``n`` times (thread CPU time): the library's share. HAProxy's
    refusals cost the server nothing: HAProxy runs on another CPU (its CPU per request is
    reported by variant)."""
    proc, port = start("shedall")
    try:
        wait_up(port, proc, statuses=(503,))
        asyncio.run(closed_loop(port, 10, criticality="sheddable", limit=n // 5))  # warm
        before = _workers_cpu(proc)
        _, _, statuses = asyncio.run(closed_loop(port, 30, criticality="sheddable", limit=n))
        worker = _workers_cpu(proc) - before
    finally:
        stop_process(proc)
    from werkzeug.test import EnvironBuilder

    from bench.overload_app import create_app

    saved = {k: os.environ.pop(k, None) for k in ("LIB", "STATS_DIR")}
    os.environ["LIB"] = "shedall"
    try:
        app = create_app()
    finally:
        for k, val in saved.items():
            os.environ.pop(k, None)
            if val is not None:
                os.environ[k] = val
    environ = EnvironBuilder(path="/work/sheddable", headers=[("X-User", "u1")]).get_environ()
    got: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
        got.append(status)
        return lambda data: None

    def call() -> None:
        body = app(dict(environ), start_response)
        for _ in body:
            pass
        getattr(body, "close", lambda: None)()

    for _ in range(1000):
        call()
    got.clear()
    t0 = time.thread_time()
    for _ in range(n):
        call()
    in_process = time.thread_time() - t0
    app.extensions["resilience"].stop()
    assert got and all(s.startswith("503") for s in got), got[:3]
    return {
        "worker_us": round(1e6 * worker / max(1, statuses[503]), 1),
        "refused_in_worker": statuses[503],
        "other_statuses": {str(k): v for k, v in statuses.items() if k != 503},
        "middleware_us": round(1e6 * in_process / n, 2),
    }


def summary(results: list[Result], seconds: float, capacity: float, unloaded_p99: float) -> dict[str, Any]:
    """Goodput (2xx within the SLO per second) over C, critical success, admitted p99 over
    the unloaded p99, and what was refused or failed."""
    good = [r for r in results if r.status == 200 and r.took <= SLO]
    critical = [r for r in results if r.criticality in ("critical", "critical_plus")]
    critical_good = [r for r in critical if r.status == 200 and r.took <= SLO]
    admitted = [r.took for r in results if r.status == 200]
    return {
        "goodput_of_capacity": round(len(good) / seconds / capacity, 3),
        "critical_success": round(len(critical_good) / max(1, len(critical)), 4),
        "admitted_p99_over_unloaded": round(p99(admitted) / unloaded_p99, 2) if admitted else None,
        "shed_503": sum(1 for r in results if r.status == 503),
        "failed_or_timed_out": sum(1 for r in results if r.status == 0),
        "offered": len(results),
    }


#: recovery: requests are grouped by their scheduled send time in windows this long...
RECOVERY_WINDOW = 1.0
#: ...starting every this many seconds after the drop...
RECOVERY_STEP = 0.1
#: ...and a window is recovered when this share of its requests got a 2xx
RECOVERY_SERVED = 0.99


def recovery(results: list[Result], drop: float, end: float, capacity: float) -> dict[str, Any]:
    """How soon requests are served again once the load drops at ``drop`` (seconds from the
    phase's start; the phase ends at ``end``). Windows of ``RECOVERY_WINDOW`` seconds of
    scheduled send time start every ``RECOVERY_STEP`` seconds from the drop; ``recovery_s``
    is the start of the first window from which on every window has >= 99 % of its
    requests answered 2xx (whatever their latency: each is within the client's 2 s
    timeout), measured from the drop; ``None`` when the last window of the phase still
    falls short; ``first_window_at_99_s``: the first window that reaches 99 %, whatever
    follows. Also: the goodput before the drop, the share served after it (per second
    too), and the requests not served after it, by status, with the last few."""
    after = [r for r in results if r.at >= drop]
    last = round((end - drop - RECOVERY_WINDOW) / RECOVERY_STEP)
    failing = -1  # the last window that falls short
    first = None  # the first window that does not
    for k in range(last + 1):
        lo = drop + k * RECOVERY_STEP
        window = [r.status // 100 == 2 for r in after if lo <= r.at < lo + RECOVERY_WINDOW]
        if window and sum(window) / len(window) < RECOVERY_SERVED:
            failing = k
        elif first is None:
            first = k
    per_second: list[list[bool]] = [[] for _ in range(int(end - drop + 0.999))]
    for r in after:
        per_second[min(len(per_second) - 1, int(r.at - drop))].append(r.status // 100 == 2)
    before = [r for r in results if r.at < drop]
    failed = [r for r in after if r.status // 100 != 2]
    return {
        "recovery_s": round((failing + 1) * RECOVERY_STEP, 2) if failing < last else None,
        # the first window at 99 %, whatever follows (a single stray refusal later moves
        # recovery_s, not this)
        "first_window_at_99_s": None if first is None else round(first * RECOVERY_STEP, 2),
        "served_after_drop": round(sum(r.status // 100 == 2 for r in after) / max(1, len(after)), 4),
        "served_per_second_after_drop": [round(sum(x) / len(x), 3) for x in per_second if x],
        "overload_goodput_of_capacity": round(
            sum(1 for r in before if r.status == 200 and r.took <= SLO) / drop / capacity, 3
        ),
        "offered_before_after_drop": [len(before), len(after)],
        # at 0.5x C a window holds ~0.5 C requests: below ~100 a single failure misses 99 %
        "not_served_after_drop": dict(collections.Counter(str(r.status) for r in failed)),
        # the last ones (seconds after the drop, status, class): a stray refusal or a real tail?
        "last_not_served": [[round(r.at - drop, 2), r.status, r.criticality] for r in failed[-5:]],
    }


def retry_after_spread(results: list[Result]) -> dict[str, Any]:
    """The ``Retry-After`` values the refused (503) clients got: min, median, max (seconds)
    and the number of distinct values; ``with_header``: the refusals that carried one."""
    refused = [r for r in results if r.status == 503]
    seconds: list[float] = []
    for r in refused:
        if r.retry_after is not None:
            with contextlib.suppress(ValueError):  # (an HTTP date: counted in with_header only)
                seconds.append(float(r.retry_after))
    spread: dict[str, Any] = {
        "refused": len(refused),
        "with_header": sum(1 for r in refused if r.retry_after is not None),
    }
    if seconds:
        spread.update(min=min(seconds), median=statistics.median(seconds), max=max(seconds),
                      distinct=len(set(seconds)))
    return spread


def trace(name: str, factor: float, results: list[Result], seconds: float) -> None:
    """Admitted latency per second of the run (is it a transient?) and the refusals'."""
    per_second: list[list[float]] = [[] for _ in range(int(seconds) + 1)]
    for r in results:
        if r.status == 200:
            per_second[int(r.at)].append(r.took)
    print(name, factor, "p50/p99 ms per second:",
          [(round(statistics.median(x) * 1000), round(p99(x) * 1000)) for x in per_second if x], file=sys.stderr)
    refused = [r.took for r in results if r.status == 503]
    if refused:
        print(name, factor, "503 p50/p99 ms:", round(statistics.median(refused) * 1000, 1),
              round(p99(refused) * 1000, 1), file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--variants", default="none,cpu,full,haproxy25,haproxy100",
                    help="comma-separated subset of none,cpu,full,haproxy<ms> (HAProxy, timeout queue <ms>)")
    ap.add_argument("--trace", action="store_true", help="print each worker's level/threshold/limit trace to stderr")
    ap.add_argument("--connection", choices=("keep-alive", "close"), default="keep-alive")
    ap.add_argument("--refusals", type=int, default=3000, help="refusals timed for the CPU cost of one (0: skip)")
    ap.add_argument("--overload-seconds", type=float, default=20.0,
                    help="recovery phase: seconds at 4x C before the load drops to 0.5x C (0: no recovery phase)")
    ap.add_argument("--recovery-seconds", type=float, default=10.0, help="recovery phase: seconds at 0.5x C")
    args = ap.parse_args()
    global KEEP_ALIVE
    KEEP_ALIVE = args.connection == "keep-alive"
    os.sched_setaffinity(0, GENERATOR_CPUS)  # HAProxy, started from here, inherits it
    variants = args.variants.split(",")
    for name in variants:
        if name not in ("none", "cpu", "full", "shedall") and haproxy_variant(name) is None:
            ap.error(f"unknown variant {name!r}")
    out: dict[str, Any] = {}
    proc, port = start("none")
    try:
        wait_up(port, proc)
        asyncio.run(closed_loop(port, 2))  # warm
        before = _workers_cpu(proc)
        capacity, latencies, _ = asyncio.run(closed_loop(port, 5))
        served_cpu = (_workers_cpu(proc) - before) / len(latencies)
    finally:
        stop_process(proc)
    unloaded_p99 = p99(latencies)
    out["capacity_rps"] = round(capacity, 1)
    out["unloaded_p99_ms"] = round(unloaded_p99 * 1000, 1)
    out["served_cpu_ms"] = round(1000 * served_cpu, 2)  # the worker's CPU per request served unloaded
    if args.refusals:
        out["refusal_cpu"] = cost = refusal_cost(args.refusals)
        cost["worker_over_served"] = round(cost["worker_us"] / 1e6 / served_cpu, 3)
    for name in variants:
        queue_ms = haproxy_variant(name)
        if queue_ms is not None and HAPROXY is None:
            out[name] = {"skipped": "needs haproxy (apt-get install haproxy)"}
            continue
        stats_dir = tempfile.mkdtemp()
        proc, port = start("none" if queue_ms is not None else name, stats_dir)
        proxy = None
        try:
            wait_up(port, proc)
            if queue_ms is not None:
                proxy, port = start_haproxy(port, queue_ms, stats_dir)
            everything: list[Result] = []
            for factor in (2, 4):
                busy, mine, began, idle = _server_cpu(proc), sum(os.times()[:2]), time.monotonic(), _server_cpus_idle()
                proxy_cpu = _cpu(proxy.pid) if proxy else 0.0
                results = asyncio.run(open_loop(port, [(factor * capacity, args.seconds)]))
                took = time.monotonic() - began
                if args.trace:
                    print(name, factor, "CPU busy: server", round((_server_cpu(proc) - busy) / took, 3),
                          "generator", round((sum(os.times()[:2]) - mine) / took, 3),
                          "server CPUs idle", round((_server_cpus_idle() - idle) / took, 3),
                          *(("haproxy", round((_cpu(proxy.pid) - proxy_cpu) / took, 3)) if proxy else ()),
                          file=sys.stderr)
                    trace(name, factor, results, args.seconds)
                everything += results
                out[f"{name}_{factor}x"] = summary(results, args.seconds, capacity, unloaded_p99)
                if proxy:
                    out[f"{name}_{factor}x"]["proxy_cpu_us_per_request"] = round(
                        1e6 * (_cpu(proxy.pid) - proxy_cpu) / len(results), 1
                    )
                time.sleep(2)  # let the backlog drain between loads
            if args.overload_seconds > 0:
                drop, end = args.overload_seconds, args.overload_seconds + args.recovery_seconds
                results = asyncio.run(
                    open_loop(port, [(4 * capacity, args.overload_seconds), (0.5 * capacity, args.recovery_seconds)])
                )
                everything += results
                out[f"{name}_recovery"] = recovery(results, drop, end, capacity)
                if args.trace:
                    trace(f"{name} recovery (drop at {drop:g} s)", 4, results, end)
            out[f"{name}_retry_after"] = retry_after_spread(everything)
        finally:
            if proxy:
                stop_process(proxy)
            stop_process(proc)
        reasons: collections.Counter[str] = collections.Counter()
        for file in Path(stats_dir).glob("*.json"):
            stats = json.loads(file.read_text())
            reasons.update(stats["reasons"])
            if args.trace:
                print(name, file.name, stats["trace"], file=sys.stderr)
        shutil.rmtree(stats_dir)
        if queue_ms is None:
            out[f"{name}_shed_by_reason"] = dict(reasons)
    for name in variants:
        for factor in (2, 4):
            row, full = out.get(f"{name}_{factor}x"), out.get(f"full_{factor}x")
            if haproxy_variant(name) is not None and row and full:
                row["goodput_over_full"] = round(
                    row["goodput_of_capacity"] / full["goodput_of_capacity"], 3
                ) if full["goodput_of_capacity"] else None
    goals = {"full_2x_goodput": 0.9, "full_4x_goodput": 0.8, "full_critical_success": 0.99,
             "full_admitted_p99_over_unloaded": 2.0, "recovery_max_s": 2.0}
    emit("overload", {"results": out, "seconds": args.seconds, "overload_seconds": args.overload_seconds,
                      "recovery_seconds": args.recovery_seconds,
                      "recovery_window_s": [RECOVERY_WINDOW, RECOVERY_STEP, RECOVERY_SERVED],
                      "goals": goals, "goals_met": goals_met(out, goals)})


def goals_met(out: dict[str, Any], goals: dict[str, float]) -> dict[str, bool]:
    """Each goal, met or not (a goal whose variant did not run is left out). The goodput,
    critical and latency goals are (c)'s, at both loads where both apply; the recovery goal,
    each library variant's (``cpu_recovery``, ``full_recovery``)."""
    met: dict[str, bool] = {}
    two, four = out.get("full_2x"), out.get("full_4x")
    if two is not None and four is not None:
        full = [two, four]
        met["full_2x_goodput"] = two["goodput_of_capacity"] >= goals["full_2x_goodput"]
        met["full_4x_goodput"] = four["goodput_of_capacity"] >= goals["full_4x_goodput"]
        met["full_critical_success"] = min(x["critical_success"] for x in full) >= goals["full_critical_success"]
        p99s = [x["admitted_p99_over_unloaded"] for x in full]
        met["full_admitted_p99_over_unloaded"] = (
            None not in p99s and max(p99s) <= goals["full_admitted_p99_over_unloaded"]
        )
    for lib in ("cpu", "full"):
        rec = out.get(f"{lib}_recovery")
        if rec is not None:
            met[f"{lib}_recovery"] = rec["recovery_s"] is not None and rec["recovery_s"] <= goals["recovery_max_s"]
    return met


if __name__ == "__main__":
    main()
