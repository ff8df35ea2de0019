"""The app bench_overload.py serves with gunicorn gthread: ``/work/<criticality>`` burns
about 5 ms of CPU. Env ``LIB``: ``none`` (plain Flask), ``cpu`` (the extension with its
default CPU/memory levels), ``full`` (plus queueing delay, criticality shedding by user
and the adaptive concurrency limit)."""

from __future__ import annotations

import os
import time

from flask import Flask

from resilience_mw.flask_ext import Resilience

CPU_SECONDS = 0.005


def create_app() -> Flask:
    app = Flask("overload")
    lib = os.environ.get("LIB", "none")
    if lib != "none":
        options: dict[str, object] = {"start": "eager", "check_interval": 0.25, "alerts": False,
                                      "degradation": {"startup_grace_seconds": 1, "cooldown_seconds": 5}}
        if lib == "full":
            # (c) is queueing delay + criticality + the adaptive limit: the queue, not the
            # CPU (which the load generator shares here), decides the level
            options["degradation"] = {
                **options["degradation"],  # type: ignore[dict-item]
                **{f"cpu_threshold_{s}": None for s in ("l1", "l2", "l3", "emergency")},
            }
            options.update(
                max_queue_time=0.4,  # its client's 500 ms SLO is as good as gone
                queue_signal=True,
                criticality_shedding=True,
                criticality_routes={f"/work/{c}": c for c in ("critical_plus", "critical", "sheddable_plus", "sheddable")},
                user_key="X-User",
                concurrency_limit=True,
            )
        Resilience(app, **options)

    @app.get("/work/<criticality>")
    def work(criticality: str) -> str:
        end = time.process_time() + CPU_SECONDS
        while time.process_time() < end:
            pass
        return "ok"

    return app
