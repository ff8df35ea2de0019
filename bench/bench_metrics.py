"""What observability costs, each against a baseline measured in the same run.

* ``wsgi``: one Flask request (through the middleware, and a call through the pool that
  sends an attempt signal) with metrics off, Prometheus, OpenTelemetry, both; direct WSGI
  calls, interleaved repeats.
* ``gunicorn``: the same app under a real gunicorn (2 workers, Prometheus multiprocess
  mode or no metrics), a bounded keep-alive client loop (4 threads, a few seconds per
  variant, alternated): requests per second with metrics over without.
* ``scrape``: one ``/metrics`` scrape of 8 gunicorn workers with 100 nodes each
  (multiprocess mode): median and max over 20 scrapes.
* ``sampler``: ns per ``should_sample`` of LevelSampler beside OpenTelemetry's
  TraceIdRatioBased; ns per record of DetailedLogsFilter beside no filter.

Prints one JSON line. Usage: python bench/bench_metrics.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests
from flask import Flask
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
from werkzeug.test import EnvironBuilder

from bench._harness import emit, interleaved, median, ratio
from resilience_mw import AutoDegradationManager, DetailedLogsFilter
from resilience_mw.flask_ext import Resilience
from resilience_mw.telemetry.metrics import Metrics
from resilience_mw.telemetry.otel import LevelSampler
from resilience_mw.testing import stop_all_workers
from tests.helpers import stop_process
from tests.nodes import free_port

ENV = EnvironBuilder(path="/").get_environ()
GUNICORN = Path(sys.executable).parent / "gunicorn"


def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return None


def app_with(metrics: tuple[str, ...]) -> Any:
    app = Flask(f"bench-{'-'.join(metrics) or 'off'}")
    Resilience(app, start="off", metrics=list(metrics), nodes=[{"id": "a", "endpoint": "http://127.0.0.1:9"}],
               health_check=False)
    pool = Resilience.state(app).failover
    assert pool is not None
    app.add_url_rule("/", "index", lambda: pool.execute_with_failover(lambda node: node.id))
    if "otel" in metrics:  # a real SDK provider, as an app would have
        state = Resilience.state(app)
        assert state.metrics is not None
        state.metrics.close()
        state.metrics = Metrics(otel=MeterProvider(metric_readers=[InMemoryMetricReader()]),
                                prometheus="prometheus" in metrics)
        state.metrics.watch(degradation=state.degradation, pool=pool, middleware=state.middleware)

    def call() -> None:
        for _ in app(dict(ENV), start_response):
            pass

    call()
    return call


def bench_wsgi(repeats: int, target_s: float) -> dict[str, float]:
    variants = {
        "off": app_with(()),
        "prometheus": app_with(("prometheus",)),
        "otel": app_with(("otel",)),
        "both": app_with(("prometheus", "otel")),
    }
    res = interleaved({k: (fn, 1) for k, fn in variants.items()}, repeats, target_s)
    out = {f"{k}_us": round(median(v) / 1000, 2) for k, v in res.items()}
    for k in ("prometheus", "otel", "both"):
        out[f"{k}_x_off"] = round(ratio(res, k, "off"), 4)
    return out


class Server:
    def __init__(self, workers: int, env: dict[str, str]) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(GUNICORN), "-w", str(workers), "-b", f"127.0.0.1:{self.port}", "-c",
             str(ROOT / "contrib" / "gunicorn" / "gunicorn.conf.py"), "bench.bench_metrics:served_app()"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env},
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "/", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not start")

    def stop(self) -> None:
        stop_process(self.proc, timeout=15)


def served_app() -> Flask:
    """The app gunicorn serves here: env METRICS (on/off), NODES (how many)."""
    app = Flask("served")
    n = int(os.environ.get("NODES", "1"))
    nodes = [{"id": f"n{i}", "endpoint": f"http://127.0.0.1:{9 + i}"} for i in range(n)]
    chosen = os.environ.get("METRICS", "off")
    exporters = {"off": [], "on": ["prometheus"], "otel": ["otel"], "both": ["prometheus", "otel"]}[chosen]
    if "otel" in exporters:  # the SDK with a reader, as an app exporting metrics would have
        from opentelemetry import metrics as otel_metrics

        otel_metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    Resilience(app, start="eager", nodes=nodes, health_check=False, metrics=exporters,
               metrics_path="/metrics" if "prometheus" in exporters else None, sample_interval=1.0)
    pool = Resilience.state(app).failover
    assert pool is not None
    app.add_url_rule("/", "index", lambda: pool.execute_with_failover(lambda node: node.id))
    return app


def client_rps(url: str, seconds: float, threads: int = 4) -> float:
    count = [0] * threads
    stop = time.monotonic() + seconds

    def run(i: int) -> None:
        with requests.Session() as s:
            while time.monotonic() < stop:
                s.get(url, timeout=5)
                count[i] += 1

    ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(count) / seconds


def bench_gunicorn(rounds: int, seconds: float) -> dict[str, float]:
    names = ("off", "on", "otel", "both")
    rps: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as prom_on, tempfile.TemporaryDirectory() as prom_both:
        servers = {
            "off": Server(2, {"METRICS": "off"}),
            "on": Server(2, {"METRICS": "on", "PROMETHEUS_MULTIPROC_DIR": prom_on}),
            "otel": Server(2, {"METRICS": "otel"}),
            "both": Server(2, {"METRICS": "both", "PROMETHEUS_MULTIPROC_DIR": prom_both}),
        }
        try:
            for _ in range(rounds):
                for name in random.sample(names, len(names)):
                    rps[name].append(client_rps(servers[name].url + "/", seconds))
        finally:
            for s in servers.values():
                s.stop()
    out = {f"{name}_rps": round(median(rps[name]), 1) for name in names}
    for name in ("on", "otel", "both"):
        ratios = [x / off for x, off in zip(rps[name], rps["off"], strict=True)]
        out[f"{name}_over_off_rps"] = round(statistics.median(ratios), 4)
    return out


def bench_scrape(tries: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as prom:
        server = Server(8, {"METRICS": "on", "NODES": "100", "PROMETHEUS_MULTIPROC_DIR": prom})
        try:
            time.sleep(2)  # every worker has set its 100 nodes' gauges
            for _ in range(40):  # and served a request
                requests.get(server.url + "/", headers={"Connection": "close"}, timeout=5)
            times = []
            for _ in range(tries):
                t0 = time.perf_counter()
                text = requests.get(server.url + "/metrics", timeout=10).text
                times.append(time.perf_counter() - t0)
            series = sum(1 for line in text.splitlines() if line.startswith("resilience_node_state{"))
            files = len(os.listdir(prom))
        finally:
            server.stop()
    return {"median_ms": round(statistics.median(times) * 1000, 1), "max_ms": round(max(times) * 1000, 1),
            "node_state_series": series, "files": files}


def bench_sampler(repeats: int, target_s: float) -> dict[str, float]:
    manager = AutoDegradationManager()
    manager.force_level("Level1")
    ours, theirs = LevelSampler(manager), TraceIdRatioBased(0.5)
    ids = [random.getrandbits(128) for _ in range(1024)]
    it = iter(range(1 << 62))
    record = logging.LogRecord("x", logging.DEBUG, __file__, 1, "m", None, None)
    log_filter = DetailedLogsFilter(manager)
    res = interleaved(
        {
            "level_sampler": (lambda: ours.should_sample(None, ids[next(it) & 1023], "s"), 1),
            "ratio_sampler": (lambda: theirs.should_sample(None, ids[next(it) & 1023], "s"), 1),
            "log_filter": (lambda: log_filter.filter(record), 1),
            "no_filter": (lambda: True, 1),
        },
        repeats,
        target_s,
    )
    return {
        "level_sampler_ns": round(median(res["level_sampler"]), 1),
        "ratio_sampler_ns": round(median(res["ratio_sampler"]), 1),
        "level_x_ratio": round(ratio(res, "level_sampler", "ratio_sampler"), 3),
        "log_filter_ns": round(median(res["log_filter"]), 1),
        "no_filter_ns": round(median(res["no_filter"]), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--target-s", type=float, default=0.2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    results = {
        "wsgi": bench_wsgi(args.repeats, args.target_s),
        "sampler": bench_sampler(args.repeats, 0.1),
    }
    stop_all_workers()
    results["gunicorn"] = bench_gunicorn(args.rounds, args.seconds)
    results["scrape"] = bench_scrape(20)
    emit("metrics", {"results": results, "goals": {"gunicorn_on_over_off_rps_min": 0.98, "scrape_max_ms": 50}})


if __name__ == "__main__":
    main()
