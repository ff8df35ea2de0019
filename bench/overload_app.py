"""The app bench_overload.py serves with gunicorn gthread: ``/work/<criticality>`` burns
about 5 ms of CPU. Env ``LIB``: ``none`` (plain Flask), ``cpu`` (the extension with its
default CPU/memory levels), ``full`` (plus queueing delay, criticality shedding by user
and the adaptive concurrency limit). Also read: ``QUEUE_TOLERANCE`` (seconds, to try
another value than the bench's 5 ms) and ``STATS_DIR`` (where each worker writes its shed
reasons and its level/limit trace at exit, for ``--trace``)."""

from __future__ import annotations

import atexit
import collections
import json
import os
import threading
import time

from flask import Flask

from resilience_mw import signals
from resilience_mw.flask_ext import Resilience

CPU_SECONDS = 0.005


def create_app() -> Flask:
    app = Flask("overload")
    lib = os.environ.get("LIB", "none")
    if lib != "none":
        # behind a proxy (the generator stamps X-Request-Start as one would): its stamp is believed
        options: dict[str, object] = {"start": "eager", "sample_interval": 0.25, "alerts": False, "trusted_proxies": 1,
                                      "degradation": {"startup_grace_seconds": 1, "cooldown_seconds": 5}}
        if lib == "shedall":  # (to measure what a shed request costs)
            options["shed_level"] = "Normal"
        if lib == "full":
            # (c) is queueing delay + criticality + the adaptive limit: the queue, not the
            # CPU (busy whenever the server is, overloaded or not), decides the level
            options["degradation"] = {
                **options["degradation"],  # type: ignore[dict-item]
                **{f"cpu_threshold_{s}": None for s in ("l1", "l2", "l3", "emergency")},
            }
            options.update(
                max_queue_time=0.4,  # its client's 500 ms SLO is as good as gone
                # about one request's cost: a request that waited longer than that finds a
                # process behind (the default, 10 ms, trades some p99 for fewer sheds)
                queue_tolerance=0.005,
                queue_signal=True,
                criticality_shedding=True,
                criticality_routes={f"/work/{c}": c for c in ("critical_plus", "critical", "sheddable_plus", "sheddable")},
                user_key="X-User",
                concurrency_limit=True,
            )
            if "QUEUE_TOLERANCE" in os.environ:  # (env QUEUE_TOLERANCE: to try other values)
                options["queue_tolerance"] = float(os.environ["QUEUE_TOLERANCE"])
        ext = Resilience(app, **options)
        if lib == "shedall":
            # forced: a request whose wait is known is otherwise judged by its wait, not the level
            ext.state(app).degradation.force_level("Normal")
        if os.environ.get("STATS_DIR"):
            _record_stats(app, ext, os.environ["STATS_DIR"])

    @app.get("/work/<criticality>")
    def work(criticality: str) -> str:
        end = time.thread_time() + CPU_SECONDS
        while time.thread_time() < end:
            pass
        return "ok"

    return app


def _record_stats(app: Flask, ext: Resilience, directory: str) -> None:
    """For the bench's diagnostics: shed reasons, and every 0.5 s the level, the
    concurrency limit and its no-load latency (ms), written to ``directory/<pid>.json`` at
    exit."""
    reasons: collections.Counter[str] = collections.Counter()
    trace: list[tuple[float, int, float | None, float | None]] = []

    def shed(_sender: object, reason: str, **_: object) -> None:
        reasons[reason] += 1

    signals.request_shed.connect(shed, weak=False)

    def sample() -> None:
        while True:
            time.sleep(0.5)
            state = ext.state(app)
            mw = state.middleware
            limit = getattr(mw, "limit", None)
            trace.append((round(time.time(), 1), int(state.degradation.level),
                          None if limit is None else round(limit.limit, 1),
                          None if limit is None or limit.min_rtt is None else round(limit.min_rtt * 1000, 1)))

    threading.Thread(target=sample, daemon=True).start()

    def write() -> None:
        with open(os.path.join(directory, f"{os.getpid()}.json"), "w") as f:
            json.dump({"reasons": reasons, "trace": trace}, f)

    atexit.register(write)
