"""WSGI apps for bench_throughput: a trivial Flask app, bare or with Resilience.

Each function is a factory gunicorn calls (``bench.apps:plain()``); ``side_by_side``
serves the variants from one process, each under ``/<name>/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from resilience_mw.flask_ext import Resilience


def _app(name: str) -> Flask:
    app = Flask(name)

    @app.route("/")
    def index() -> str:
        return "ok"

    return app


def plain() -> Flask:
    return _app("plain")


def resilient() -> Flask:
    app = _app("resilient")
    Resilience(app)
    return app


def resilient_no_workers() -> Flask:
    """Diagnostic variant: the extension without its background sampler."""
    app = _app("resilient_no_workers")
    Resilience(app, start="off")
    return app


def gate_only() -> Flask:
    """The extension's middleware without outcome accounting: the gate's cost."""
    app = resilient()
    app.extensions["resilience"].middleware.record_outcomes = False
    return app


class Passthrough:
    """A WSGI layer that does nothing: the cost of one layer."""

    def __init__(self, app: Callable[[dict[str, Any], Any], Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return self.app(environ, start_response)


def passthrough() -> Flask:
    """Reference: one do-nothing WSGI layer."""
    app = _app("passthrough")
    app.wsgi_app = Passthrough(app.wsgi_app)  # type: ignore[method-assign]
    return app


def side_by_side() -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    """Every variant in one process, each under its own path prefix (``/plain/``,
    ``/resilient/``, ...): a comparison then does not depend on how fast one process
    happened to be laid out in memory."""
    apps = {
        name: factory()
        for name, factory in (
            ("plain", plain),
            ("resilient", resilient),
            ("gate_only", gate_only),
            ("passthrough", passthrough),
        )
    }
    return DispatcherMiddleware(_not_found, {f"/{name}": app for name, app in apps.items()})


def _not_found(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("404 Not Found", [("Content-Length", "0")])
    return []
