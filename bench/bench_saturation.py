"""Closed-loop saturation: with its default settings, does the library cost throughput, or
shed, when a server is merely busy (its CPU at 100 %) but not overloaded?

wrk (Debian's ``/usr/bin/wrk``: 2 threads, 8 connections, ``--seconds`` per variant,
default 60) against a real gunicorn with 2 sync workers (``-w 2``, the default worker
class) on 127.0.0.1 serving bench/saturation_app.py (``/`` burns about 2 ms of CPU).
Nothing is pinned: the server and wrk share the 2 CPUs, so the server's CPU is at 100 %
(``cpus_busy`` reports it). Closed loop: at most 8 requests in flight, each connection
sending its next request when the last one is answered, so the wait is bounded by 8
requests: saturation, not overload. Two variants in the same run, one server each, one
after the other in ``--order``: ``plain`` (plain Flask) and ``resilient`` (the same app
with ``Resilience(app)``, pure default settings: no ``RESILIENCE_*`` key).

Reported: each variant's requests per second (wrk's ``Requests/sec``, and ``ok_rps``:
the requests answered 2xx/3xx per second, since a 503 costs the server little), p50/p99
latency and its server's CPU per response; the ratio resilient/plain of ``ok_rps`` (goal
>= 0.95); the 503s (wrk's "Non-2xx or 3xx responses", and the library's own count of the
requests it shed; goal 0); and the resilient app's levels, read from every worker's
status route (``saturation_app.STATUS_PATH``, exempt by default) right after its wrk run:
the level and load level then, and the highest each reached during the run (goal: the
load level stays Normal). ``--rounds``: more pairs, the order reversed every other round,
ratios the median over rounds (single pairs on a shared machine vary by several per cent).

With the default settings CPU and memory samples are ignored for the first 10 s of the
sampler and a level needs 3 of 5 samples (1 s apart): a run shorter than about 15 s
cannot show a level rise. Bounded: wrk stops by itself after ``--seconds``; every server
started here is stopped. Prints one JSON line.
Usage: python bench/bench_saturation.py [--seconds 60] [--order plain,resilient] [--rounds 1]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import emit
from bench.saturation_app import STATUS_PATH
from tests.helpers import stop_process
from tests.nodes import free_port

GUNICORN = Path(sys.executable).parent / "gunicorn"
WRK = shutil.which("wrk")
WORKERS = 2
GOALS = {"rps_ratio_min": 0.95, "shed_503_max": 0, "load_level": "Normal"}


def get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def start(variant: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(GUNICORN), "-w", str(WORKERS), "-b", f"127.0.0.1:{port}", f"bench.saturation_app:{variant}()"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}")
        try:
            get(url + STATUS_PATH, 1)
            return proc, url
        except OSError:
            time.sleep(0.2)
    stop_process(proc)
    raise RuntimeError("gunicorn did not start")


def server_cpu(proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds of the server's processes so far."""
    parent = psutil.Process(proc.pid)
    return sum(sum(p.cpu_times()[:2]) for p in [parent, *parent.children(recursive=True)])


def cpus_idle() -> float:
    """Idle seconds of all CPUs so far (/proc/stat)."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[4]) / os.sysconf("SC_CLK_TCK")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(text: str) -> dict[str, Any]:
    """wrk's summary: requests, requests/s (all responses; ``ok_rps``: those not counted in
    non-2xx/3xx), non-2xx/3xx responses (absent when none),
    socket errors (absent when none), p50/p99 latency (``--latency``)."""
    requests = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not requests or not rps:
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    latency = {q: re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M) for q in ("50", "99")}
    seconds = float(requests.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[requests.group(3)]
    bad = int(non_2xx.group(1)) if non_2xx else 0
    return {
        "requests": int(requests.group(1)),
        "rps": float(rps.group(1)),
        # a 503 costs the server little: what counts is the requests answered 2xx/3xx
        "ok_rps": round((int(requests.group(1)) - bad) / seconds, 2),
        "non_2xx_3xx": bad,
        "socket_errors": dict(zip(("connect", "read", "write", "timeout"), map(int, errors.groups()), strict=True))
        if errors else {},
        **{f"p{q}_ms": round(_ms(*m.groups()), 2) if m else None for q, m in latency.items()},
    }


def statuses(url: str) -> dict[int, Any]:
    """Every worker's status: concurrent reads held 0.3 s each, so that each worker gets
    one (a sync worker serves one at a time); up to 5 tries."""
    seen: dict[int, Any] = {}
    with concurrent.futures.ThreadPoolExecutor(2 * WORKERS) as pool:
        for _ in range(5):
            for status in pool.map(lambda _: get(f"{url}{STATUS_PATH}?hold=0.3"), range(2 * WORKERS)):
                seen.setdefault(status["pid"], status)
            if len(seen) >= WORKERS:
                break
    return seen


def run(variant: str, seconds: float) -> dict[str, Any]:
    assert WRK is not None
    proc, url = start(variant)
    try:
        for _ in range(20):  # a few requests first: imports, the extension's lazy start
            urllib.request.urlopen(url + "/", timeout=5).read()
        cpu, idle, began = server_cpu(proc), cpus_idle(), time.monotonic()
        out = subprocess.run(
            [WRK, "-t2", "-c8", f"-d{seconds:g}s", "--latency", url + "/"],
            capture_output=True, text=True, timeout=seconds + 60,
        )
        took = time.monotonic() - began
        cpu, idle = server_cpu(proc) - cpu, cpus_idle() - idle
        workers = statuses(url) if variant == "resilient" else {}
    finally:
        stop_process(proc)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    result = parse_wrk(out.stdout)
    result["server_cpu_us_per_request"] = round(1e6 * cpu / max(1, result["requests"]), 1)
    result["cpus_busy"] = round(1 - idle / took / (os.cpu_count() or 1), 3)
    if variant == "resilient":
        result["shed_by_library"] = sum(w["shed"] for w in workers.values())
        result["workers"] = {
            str(pid): {
                "level": w["figures"]["level"],
                "load_level": w["figures"]["load_level"],
                "worst_level": w["worst_level"],
                "worst_load_level": w["worst_load_level"],
                "cpu": w["figures"].get("cpu"),
                "shed": w["shed"],
            }
            for pid, w in workers.items()
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0, help="wrk's duration per variant")
    ap.add_argument("--order", default="plain,resilient", help="the variants, in the order they run")
    ap.add_argument("--rounds", type=int, default=1,
                    help="pairs of runs, the order reversed every other round (ABBA); ratios: median over rounds")
    args = ap.parse_args()
    order = args.order.split(",")
    if sorted(order) != ["plain", "resilient"]:
        ap.error("--order: plain and resilient, each once")
    if WRK is None or not GUNICORN.exists():
        emit("saturation", {"skipped": "needs wrk (apt-get install wrk) and gunicorn in the venv"})
        return
    rounds = []
    for i in range(args.rounds):
        rounds.append({variant: run(variant, args.seconds) for variant in (order if i % 2 == 0 else order[::-1])})
    ratios = [r["resilient"]["ok_rps"] / r["plain"]["ok_rps"] for r in rounds]
    cpu_ratios = [
        r["resilient"]["server_cpu_us_per_request"] / r["plain"]["server_cpu_us_per_request"] for r in rounds
    ]
    results = rounds[0] if args.rounds == 1 else rounds
    lib = {  # the resilient runs, together
        "shed_by_library": sum(r["resilient"]["shed_by_library"] for r in rounds),
        "non_2xx_3xx": sum(r["resilient"]["non_2xx_3xx"] for r in rounds),
        "workers": {f"{i}/{pid}": w for i, r in enumerate(rounds) for pid, w in r["resilient"]["workers"].items()},
    }
    workers = lib["workers"].values()
    out = {
        "server": f"gunicorn, {WORKERS} sync workers; wrk -t2 -c8; unpinned (server and wrk share the CPUs)",
        "seconds": args.seconds,
        "order": order,
        "rounds": args.rounds,
        "results": results,
        "rps_ratio_resilient_over_plain": round(statistics.median(ratios), 4),
        "cpu_per_request_resilient_over_plain": round(statistics.median(cpu_ratios), 4),
        **({"rps_ratios": [round(x, 4) for x in ratios]} if args.rounds > 1 else {}),
        "shed_503": lib["non_2xx_3xx"],
        "load_level_end": max((w["load_level"] for w in workers), key=_rank, default=None),
        "load_level_worst": max((w["worst_load_level"] for w in workers), key=_rank, default=None),
        "level_end": max((w["level"] for w in workers), key=_rank, default=None),
        "level_worst": max((w["worst_level"] for w in workers), key=_rank, default=None),
        "workers_read": len(lib["workers"]) // args.rounds,
        "goals": GOALS,
    }
    out["goals_met"] = {
        "rps_ratio": out["rps_ratio_resilient_over_plain"] >= GOALS["rps_ratio_min"],
        "shed_503": out["shed_503"] <= GOALS["shed_503_max"] and lib["shed_by_library"] <= GOALS["shed_503_max"],
        "load_level": out["load_level_worst"] == GOALS["load_level"] and len(lib["workers"]) == WORKERS * args.rounds,
    }
    emit("saturation", out)


def _rank(name: str) -> int:
    from resilience_mw import DegradationLevel

    return int(DegradationLevel[name])


if __name__ == "__main__":
    main()
