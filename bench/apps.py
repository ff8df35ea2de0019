"""WSGI apps for bench_throughput: a trivial Flask app, bare or with Resilience."""

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


def resilient_gate_only() -> Flask:
    """Diagnostic variant: the extension's middleware without outcome accounting."""
    app = resilient()
    app.extensions["resilience"].middleware.record_outcomes = False
    return app


class Passthrough:
    def __init__(self, app: object) -> None:
        self.app = app

    def __call__(self, environ: object, start_response: object) -> object:
        return self.app(environ, start_response)  # type: ignore[operator]


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
            ("gate_only", resilient_gate_only),
            ("passthrough", passthrough),
        )
    }
    return DispatcherMiddleware(_not_found, {f"/{name}": app for name, app in apps.items()})


def _not_found(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("404 Not Found", [("Content-Length", "0")])
    return []

