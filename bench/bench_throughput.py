"""Requests per second of a trivial Flask app under gunicorn, with and without Resilience.

gunicorn (1 sync worker) on 127.0.0.1, loaded by wrk (Debian package ``wrk``) for
``--duration`` seconds per run; the two variants alternate in shuffled order in each of
``--repeats`` repeats and the ratio is taken within each repeat. Bounded: every run
stops by itself, and only the servers this script started are stopped.

Prints one JSON line. Usage: python bench/bench_throughput.py [--duration 5 --repeats 3]
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import emit
from demo_app.cluster import free_port, wait_listening

GUNICORN = Path(sys.executable).parent / "gunicorn"


def run_one(factory: str, duration: float) -> tuple[float, float]:
    port = free_port()
    server = subprocess.Popen(
        [str(GUNICORN), "-w", "1", "-b", f"127.0.0.1:{port}", f"bench.apps:{factory}()"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not wait_listening(port, 15):
            raise RuntimeError(f"gunicorn did not start on port {port}")
        url = f"http://127.0.0.1:{port}/"
        subprocess.run(["wrk", "-t1", "-c8", "-d1s", url], capture_output=True, timeout=30)  # warm-up
        out = subprocess.run(
            ["wrk", "-t1", "-c8", f"-d{duration:g}s", "--latency", url],
            capture_output=True,
            text=True,
            timeout=duration + 30,
        ).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
        latency = float(p50.group(1)) * scale[p50.group(2)] if p50 else float("nan")
        if "Non-2xx" in out or "Socket errors" in out:
            raise RuntimeError(f"errors during the run:\n{out}")
        return rps, latency
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default="plain,resilient")
    args = ap.parse_args()
    if shutil.which("wrk") is None or not GUNICORN.exists():
        emit("throughput", {"skipped": "needs wrk (apt-get install wrk) and gunicorn in the venv"})
        return
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in args.variants.split(",")}
    for _ in range(args.repeats):
        order = list(runs)
        random.shuffle(order)
        for name in order:
            runs[name].append(run_one(name, args.duration))
    ratios = [r[0] / p[0] for r, p in zip(runs["resilient"], runs["plain"], strict=True)]
    emit(
        "throughput",
        {
            "server": "gunicorn 1 sync worker, wrk -t1 -c8",
            "duration_s": args.duration,
            "rps": {k: [round(x[0], 1) for x in v] for k, v in runs.items()},
            "p50_ms": {k: round(statistics.median(x[1] for x in v), 3) for k, v in runs.items()},
            "ratio_resilient_over_plain": round(statistics.median(ratios), 4),
            "goals": {"ratio_min": 0.98},
        },
    )


if __name__ == "__main__":
    main()
