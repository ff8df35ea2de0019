"""A Flask app sharing state through ``STATE_URL`` (env), served by a real gunicorn in
tests/test_state_gunicorn.py and tests/test_metrics_gunicorn.py. Env: ``STATE_URL``,
``NODES`` (comma-separated ``id=endpoint``), ``HEALTH_INTERVAL`` (0: no health checks),
``EJECT_QUORUM``, ``SYNC_INTERVAL``, ``METRICS_PATH``, ``SHED_LEVEL``, ``MAX_EJECTION_PERCENT``
(default 100)."""

from __future__ import annotations

import logging
import os

import requests
from flask import Flask, jsonify

from resilience_mw.flask_ext import Resilience

TOKEN = "test-admin-token"

# the library's warnings, one line each, with the worker's pid
logging.basicConfig(level=logging.WARNING, format="LOG %(process)d %(levelname)s %(name)s %(message)s")


def create_app() -> Flask:
    app = Flask("state_app")
    nodes = [
        {"id": spec.split("=", 1)[0], "endpoint": spec.split("=", 1)[1], "priority": 100 - i}
        for i, spec in enumerate(filter(None, os.environ.get("NODES", "").split(",")))
    ]
    interval = float(os.environ.get("HEALTH_INTERVAL", "0"))
    quorum = os.environ.get("EJECT_QUORUM")
    app.config.update(
        RESILIENCE_STATE_URL=os.environ["STATE_URL"],
        RESILIENCE_STATE_SYNC_INTERVAL=float(os.environ.get("SYNC_INTERVAL", "0.5")),
        RESILIENCE_STATE_EJECT_QUORUM=int(quorum) if quorum else None,
        RESILIENCE_ADMIN_TOKEN=TOKEN,
        RESILIENCE_START="eager",
        RESILIENCE_CORE_PATHS=["/whoami", "/call"],
        RESILIENCE_NODES=nodes,
        RESILIENCE_STRATEGY="Priority",
        RESILIENCE_FAILOVER_OPTIONS={
            "failure_threshold": 1,
            "max_ejection_percent": float(os.environ.get("MAX_EJECTION_PERCENT", "100")),
        },
        RESILIENCE_HEALTH_CHECK=interval > 0,
        RESILIENCE_HEALTH_CHECK_INTERVAL=interval or 5.0,
        RESILIENCE_HEALTH_CHECK_TIMEOUT=0.5,
        RESILIENCE_ALERTS=False,
        RESILIENCE_METRICS_PATH=os.environ.get("METRICS_PATH") or None,
        RESILIENCE_SHED_LEVEL=os.environ.get("SHED_LEVEL", "Emergency"),
    )
    Resilience(app)
    session = requests.Session()
    state = Resilience.state(app)
    if state.adapter is not None:
        session.mount("http://upstream/", state.adapter)

    @app.get("/")
    def index() -> str:
        return "ok"

    @app.get("/whoami")
    def whoami() -> object:
        s = Resilience.state()
        return jsonify(
            pid=os.getpid(),
            level=s.degradation.current_level().name,
            healthy={n.id: s.failover.is_healthy(n.id) for n in s.failover.nodes} if s.failover else {},
            leader=s.sync.leader if s.sync else None,
        )

    @app.get("/call")
    def call() -> object:
        r = session.get("http://upstream/work", timeout=2)
        return jsonify(pid=os.getpid(), status=r.status_code)

    return app
