"""The apps bench_saturation.py serves with gunicorn (2 sync workers): ``/`` burns about
2 ms of CPU. ``plain()``: plain Flask; ``resilient()``: the same app with
``Resilience(app)`` and pure default settings (no ``RESILIENCE_*`` key).

Both serve ``STATUS_PATH`` (``?hold=<seconds>``: answer that much later, so that
concurrent reads reach every worker): this worker's pid and, with the extension, its
figures (``degradation.figures()``), how many requests it shed (``signals.request_shed``)
and the highest level and load level it reached (sampled every 0.25 s by a thread of this
module). ``STATUS_PATH`` is ``/metrics``: exempt with the default settings
(``RESILIENCE_EXEMPT_PATHS`` defaults to it) and free (the extension serves metrics only
when ``RESILIENCE_METRICS_PATH`` is set), so reading the status is neither counted nor
shed and no setting had to change; ``resilient()`` checks that it is still exempt."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from flask import Flask, request

from resilience_mw import DegradationLevel, signals
from resilience_mw.flask_ext import Resilience

CPU_SECONDS = 0.002
STATUS_PATH = "/metrics"


def _app(name: str) -> Flask:
    app = Flask(name)

    @app.get("/")
    def work() -> str:
        end = time.thread_time() + CPU_SECONDS
        while time.thread_time() < end:
            pass
        return "ok"

    return app


def plain() -> Flask:
    app = _app("plain")

    @app.get(STATUS_PATH)
    def status() -> dict[str, Any]:
        time.sleep(min(1.0, float(request.args.get("hold", 0))))
        return {"pid": os.getpid()}

    return app


def resilient() -> Flask:
    app = _app("resilient")
    Resilience(app)
    state = app.extensions["resilience"]
    if STATUS_PATH not in state.middleware.exempt_paths:
        raise RuntimeError(f"{STATUS_PATH} is not exempt with the default settings: reading it would be counted")
    degradation = state.degradation
    worst = {"level": 0, "load_level": 0}
    shed = [0]

    def on_shed(_sender: object, **_: object) -> None:
        shed[0] += 1

    signals.request_shed.connect(on_shed, weak=False)

    def sample() -> None:
        while True:
            worst["level"] = max(worst["level"], int(degradation.level))
            worst["load_level"] = max(worst["load_level"], int(degradation.load_level))
            time.sleep(0.25)

    threading.Thread(target=sample, name="bench-level-sampler", daemon=True).start()

    @app.get(STATUS_PATH)
    def status() -> dict[str, Any]:
        figures = degradation.figures()
        time.sleep(min(1.0, float(request.args.get("hold", 0))))
        return {
            "pid": os.getpid(),
            "figures": figures,
            "shed": shed[0],
            "worst_level": DegradationLevel(max(worst["level"], int(degradation.level))).name,
            "worst_load_level": DegradationLevel(max(worst["load_level"], int(degradation.load_level))).name,
        }

    return app
