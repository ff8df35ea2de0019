"""The app the signal tests serve with gunicorn: the extension with the settings in env
``SIGNALS_OPTIONS`` (JSON keyword options of ``Resilience``; none: pure defaults).

* ``/idle``: answers at once;
* ``/work``: burns ``SIGNALS_CPU_MS`` (default 20) ms of its thread's CPU;
* ``/analytics``: a ``@feature(Feature.Analytics)`` view, off from Level1;
* ``/status`` (exempt): the degradation figures and the worker's pid.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from flask import Flask, jsonify

from resilience_mw import Feature
from resilience_mw.decorators import feature
from resilience_mw.flask_ext import Resilience


def create_app() -> Flask:
    app = Flask("signals")
    options: dict[str, Any] = json.loads(os.environ.get("SIGNALS_OPTIONS", "{}"))
    app.config["RESILIENCE_EXEMPT_PATHS"] = ["/metrics", "/status"]
    ext = Resilience(app, **options)
    cpu_seconds = float(os.environ.get("SIGNALS_CPU_MS", "20")) / 1000

    @app.get("/idle")
    def idle() -> str:
        return "ok"

    @app.get("/work")
    def work() -> str:
        end = time.thread_time() + cpu_seconds
        while time.thread_time() < end:
            pass
        return "ok"

    @app.get("/analytics")
    @feature(Feature.Analytics)
    def analytics() -> str:
        return "tracked"

    @app.get("/status")
    def status() -> Any:
        return jsonify(pid=os.getpid(), **ext.state(app).degradation.figures())

    return app
