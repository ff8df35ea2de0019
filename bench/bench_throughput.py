"""Requests per second of a trivial Flask app under gunicorn (or waitress), with and without Resilience.

All variants are served by one gunicorn (1 sync worker; ``--server waitress``: waitress
with 1 thread) on 127.0.0.1, each under its
own path (``bench.apps.side_by_side``): two starts of the same app differ in speed by
a few percent here, more than the effect measured, so comparing separate processes
needs many of them (``--separate`` does that: one server per variant). wrk (Debian
package ``wrk``) loads one variant at a time for ``--duration`` seconds, in shuffled
order, and each ratio compares runs measured back to back. The server is started
anew for each of ``--sessions`` sessions, each alternating ``--rounds`` times. Where
``taskset`` exists the server has one CPU and wrk the other.

Bounded: every run stops by itself, and only the servers this script started are
stopped. Prints one JSON line.
Usage: python bench/bench_throughput.py [--server waitress] [--duration 2 --rounds 4 --sessions 3 --separate]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import emit
from demo_app.cluster import free_port, wait_listening
from tests.helpers import stop_process

BIN = Path(sys.executable).parent
PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def _pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if PIN else argv


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_pid(master: int, timeout: float = 15.0) -> int:
    """The pid of gunicorn's (single) worker process, once it has been forked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{master}/task").iterdir():
            children = (task / "children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.05)
    raise RuntimeError(f"gunicorn {master} has no worker")


@contextlib.contextmanager
def server(kind: str, factory: str) -> Iterator[tuple[str, int]]:
    """A ``kind`` server (gunicorn or waitress) serving ``bench.apps:<factory>()``;
    yields its URL and the pid of the process that runs the app."""
    port = free_port()
    if kind == "gunicorn":
        argv = [str(BIN / "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", f"bench.apps:{factory}()"]
    else:
        argv = [str(BIN / "waitress-serve"), f"--listen=127.0.0.1:{port}", "--threads=1", "--call"]
        argv.append(f"bench.apps:{factory}")
    proc = subprocess.Popen(_pinned(1, argv), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_listening(port, 15):
            raise RuntimeError(f"{kind} did not start on port {port}")
        yield f"http://127.0.0.1:{port}/", worker_pid(proc.pid) if kind == "gunicorn" else proc.pid
    finally:
        stop_process(proc)


def load(url: str, duration: float, pid: int) -> tuple[float, float, float]:
    """``(requests per second, p50 latency in ms, CPU µs per request of process pid)``
    of one wrk run."""
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(
        _pinned(0, ["wrk", "-t1", "-c8", f"-d{duration:g}s", "--latency", url]),
        capture_output=True,
        text=True,
        timeout=duration + 30,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"errors during the run:\n{out}")
    cpu = cpu_seconds(pid) - cpu0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    latency = float(p50.group(1)) * scale[p50.group(2)] if p50 else float("nan")
    return rps, latency, 1e6 * cpu / max(total, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--variants", default="plain,resilient,gate_only,passthrough", help="baseline first")
    ap.add_argument("--server", choices=("gunicorn", "waitress"), default="gunicorn")
    ap.add_argument("--separate", action="store_true", help="one server per variant instead of one for all")
    args = ap.parse_args()
    bench_name = "throughput" if args.server == "gunicorn" else f"throughput_{args.server}"
    exe = "gunicorn" if args.server == "gunicorn" else "waitress-serve"
    if shutil.which("wrk") is None or not (BIN / exe).exists():
        emit(bench_name, {"skipped": f"needs wrk (apt-get install wrk) and {exe} in the venv"})
        return
    names = args.variants.split(",")
    baseline = names[0]
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names[1:]}
    cpu_ratios: dict[str, list[float]] = {name: [] for name in names[1:]}
    for _ in range(args.sessions):
        with contextlib.ExitStack() as stack:
            if args.separate:
                servers = {name: stack.enter_context(server(args.server, name)) for name in names}
            else:
                url, pid = stack.enter_context(server(args.server, "side_by_side"))
                servers = {name: (f"{url}{name}/", pid) for name in names}
            for url, pid in servers.values():
                load(url, 1, pid)  # warm-up
            for _ in range(args.rounds):
                order = list(names)
                random.shuffle(order)
                got = {name: load(servers[name][0], args.duration, servers[name][1]) for name in order}
                for name, result in got.items():
                    runs[name].append(result)
                for name in names[1:]:
                    ratios[name].append(got[name][0] / got[baseline][0])
                    cpu_ratios[name].append(got[name][2] / got[baseline][2])
    emit(
        bench_name,
        {
            "server": ("gunicorn, 1 sync worker" if args.server == "gunicorn" else "waitress, 1 thread")
            + "; wrk -t1 -c8"
            + ("; pinned to separate CPUs" if PIN else "")
            + ("; one server per variant" if args.separate else "; all variants in one server"),
            "duration_s": args.duration,
            "sessions": args.sessions,
            "rounds": args.rounds,
            "rps_median": {k: round(statistics.median(x[0] for x in v), 1) for k, v in runs.items()},
            "p50_ms": {k: round(statistics.median(x[1] for x in v), 3) for k, v in runs.items()},
            "worker_cpu_us_per_request": {
                k: round(statistics.median(x[2] for x in v), 2) for k, v in runs.items()
            },
            "ratios": {k: [round(r, 4) for r in v] for k, v in ratios.items()},
            **{f"ratio_{k}_over_{baseline}": round(statistics.median(v), 4) for k, v in ratios.items()},
            # the app process's CPU time per request, relative: the same cost seen from
            # the server side, without the time spent waiting
            **{
                f"cpu_per_request_{k}_over_{baseline}": round(statistics.median(v), 4)
                for k, v in cpu_ratios.items()
            },
            "goals": {"ratio_min": 0.98},
        },
    )


if __name__ == "__main__":
    main()
