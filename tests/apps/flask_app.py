"""A small Flask app using every integration piece; used by tests and gunicorn."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, abort, jsonify
from flask.testing import FlaskClient

from resilience_mw import Feature
from resilience_mw.decorators import feature, with_fallback
from resilience_mw.flask_ext import Resilience

resilience = Resilience()


def cached_search(**kwargs: Any) -> Any:
    return jsonify(results=["cached"], source="fallback")


class BufferedClient(FlaskClient):
    """Reads and closes every response at once, as a real server does."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def create_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.test_client_class = BufferedClient
    app.config.update(
        RESILIENCE_SAMPLE_INTERVAL=0.05,
        RESILIENCE_DEGRADATION={"cooldown_seconds": 0},
        RESILIENCE_CORE_PATHS=["/api/pay", "/whoami"],  # a loaded CI box may reach Emergency
    )
    app.config.update(config)
    resilience.init_app(app)

    @app.route("/")
    def index() -> Any:
        return jsonify(ok=True)

    @app.route("/api/pay")
    def pay() -> Any:
        return jsonify(paid=True)

    @app.route("/analytics")
    @feature(Feature.Analytics)
    def analytics() -> Any:
        """Analytics view."""
        return jsonify(analytics="on")

    @app.route("/caching")
    @feature(Feature.Caching, fallback=lambda: jsonify(cache="bypassed"))
    def caching() -> Any:
        return jsonify(cache="used")

    @app.route("/search/<term>")
    @with_fallback(cached_search)
    def search(term: str) -> Any:
        """Search view."""
        if term == "crash":
            raise ConnectionError("search backend down")
        if term == "missing":
            abort(404)
        return jsonify(results=[term], source="primary")

    @app.route("/whoami")
    def whoami() -> Any:
        state = app.extensions["resilience"]
        return jsonify(
            pid=os.getpid(),
            sampler=state.degradation.running,
            health=state.health_checker.running if state.health_checker else None,
            level=state.degradation.current_level().name,
        )

    return app


def preload_app() -> Flask:
    """For gunicorn --preload: workers started eagerly in the master, before fork."""
    return create_app(RESILIENCE_START="eager")
