"""The apps bench_startup.py serves with gunicorn: one route, plain Flask or with the
Resilience extension and no settings at all."""

from __future__ import annotations

from flask import Flask


def plain() -> Flask:
    app = Flask("startup")
    app.add_url_rule("/", "index", lambda: "ok")
    return app


def resilient() -> Flask:
    from resilience_mw.flask_ext import Resilience

    app = plain()
    Resilience(app)
    return app
