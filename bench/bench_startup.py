"""What the library costs a process before it serves anything, same-run against plain Flask.

* **Import time**: ``python -X importtime -c "import flask, resilience_mw.flask_ext"``, the
  extension's cumulative time over Flask's (median of ``--imports`` runs, bytecode
  compiled first, as a deployed app has it); goal: at most 100 ms. Also lists any
  optional dependency (redis, prometheus_client, OpenTelemetry, requests) that importing
  the extension loads for an app that configures none of them (goal: none).
* **A gunicorn worker's first response**: from starting ``gunicorn -w 1`` to the first
  200 of ``/``, for bench/apps.py's plain app and the same app with ``Resilience(app)``
  and no settings, in pairs of alternating order (``--pairs``); the median of each
  pair's ratio (goal: at most 1.3).
* **A worker's memory after warm-up** (200 requests): its USS and RSS (psutil), with the
  extension over without (goal: at most 8 MB more RSS).

Prints one JSON line. Usage: python bench/bench_startup.py [--imports 7] [--pairs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._harness import emit
from tests.helpers import stop_process
from tests.nodes import free_port

GUNICORN = Path(sys.executable).parent / "gunicorn"
OPTIONAL = ("redis", "prometheus_client", "opentelemetry", "requests", "urllib3")
GOALS = {"import_ms_over_flask": 100.0, "first_response_ratio": 1.3, "worker_rss_mb_over_plain": 8.0}


def _env(cache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache  # bytecode as a deployed app has it, kept out of the tree
    return env


def import_cost(runs: int, cache: str) -> dict[str, Any]:
    env = _env(cache)
    code = "import flask, json, sys, resilience_mw.flask_ext; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)  # compiles once
    over: list[float] = []
    flask_ms: list[float] = []
    loaded: list[str] = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, check=True,
                             capture_output=True, text=True)
        cumulative = {}
        for line in out.stderr.splitlines():  # "import time: self | cumulative | name"
            parts = line.split("|")
            if len(parts) == 3 and parts[1].strip().isdigit():
                cumulative[parts[2].strip()] = int(parts[1])
        over.append(cumulative["resilience_mw.flask_ext"] / 1000)
        flask_ms.append(cumulative["flask"] / 1000)
        loaded = [m for m in OPTIONAL if m in json.loads(out.stdout)]
    return {"flask_ms": round(statistics.median(flask_ms), 1), "ms_over_flask": round(statistics.median(over), 1),
            "optional_loaded": loaded}


def _serve(kind: str, cache: str) -> tuple[subprocess.Popen[bytes], int, float]:
    """Start gunicorn with bench/apps.py's ``kind`` app; seconds to its first 200."""
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(GUNICORN), "-w", "1", "-b", f"127.0.0.1:{port}", f"bench.startup_app:{kind}()"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(cache),
    )
    deadline = t0 + 30
    with requests.Session() as http:
        while time.perf_counter() < deadline:
            try:
                if http.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                    return proc, port, time.perf_counter() - t0
            except requests.RequestException:
                time.sleep(0.005)
    stop_process(proc)
    raise RuntimeError(f"gunicorn ({kind}) did not answer within 30 s")


def _worker_memory(proc: subprocess.Popen[bytes], port: int) -> tuple[float, float]:
    with requests.Session() as http:
        for _ in range(200):
            http.get(f"http://127.0.0.1:{port}/", timeout=5)
    time.sleep(0.5)
    worker = psutil.Process(proc.pid).children()[0]
    info = worker.memory_full_info()
    return info.uss / 2**20, info.rss / 2**20


def first_response_and_memory(pairs: int, cache: str) -> dict[str, Any]:
    ratios: list[float] = []
    times: dict[str, list[float]] = {"plain": [], "resilient": []}
    memory: dict[str, list[tuple[float, float]]] = {"plain": [], "resilient": []}
    for i in range(pairs):
        order = ("plain", "resilient") if i % 2 == 0 else ("resilient", "plain")
        took: dict[str, float] = {}
        for kind in order:
            proc, port, seconds = _serve(kind, cache)
            try:
                took[kind] = seconds
                memory[kind].append(_worker_memory(proc, port))
            finally:
                stop_process(proc)
        ratios.append(took["resilient"] / took["plain"])
        for kind, seconds in took.items():
            times[kind].append(seconds)

    def med(kind: str, index: int) -> float:
        return round(statistics.median(m[index] for m in memory[kind]), 1)

    return {
        "first_response_s": {k: round(statistics.median(v), 3) for k, v in times.items()},
        "first_response_ratio": round(statistics.median(ratios), 3),
        "worker_uss_mb": {k: med(k, 0) for k in memory},
        "worker_rss_mb": {k: med(k, 1) for k in memory},
        "worker_rss_mb_over_plain": round(med("resilient", 1) - med("plain", 1), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imports", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-startup-pyc-") as cache:
        imports = import_cost(args.imports, cache)
        serving = first_response_and_memory(args.pairs, cache)
    results = {"imports": imports, **serving}
    met = {
        "import_ms_over_flask": imports["ms_over_flask"] <= GOALS["import_ms_over_flask"],
        "no_optional_module": not imports["optional_loaded"],
        "first_response_ratio": serving["first_response_ratio"] <= GOALS["first_response_ratio"],
        "worker_rss_mb_over_plain": serving["worker_rss_mb_over_plain"] <= GOALS["worker_rss_mb_over_plain"],
    }
    emit("startup", {"goals": GOALS, "goals_met": met, "results": results})


if __name__ == "__main__":
    main()
