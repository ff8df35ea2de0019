"""WSGI apps for bench_throughput: a trivial Flask app, bare or with Resilience."""

from __future__ import annotations

from flask import Flask

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


def _tmp_plain_idle_thread() -> Flask:
    import threading

    app = _app("idle")
    ev = threading.Event()
    threading.Thread(target=ev.wait, daemon=True).start()
    return app


def _tmp_plain_timed_thread() -> Flask:
    import threading

    app = _app("timed")
    ev = threading.Event()

    def run() -> None:
        while not ev.wait(1.0):
            pass

    threading.Thread(target=run, daemon=True).start()
    return app
