"""Per-request cost of ResilienceMiddleware and of the view decorators, same-run deltas.

WSGI (direct calls, no server): the bare app, a one-layer pass-through, the middleware
as a gate only (``record_outcomes=False``), and the full middleware; each with a list
body and with a lazy (closable) body, and one trivial Flask app bare, behind a pass-through and
behind the Resilience extension's middleware. Decorators: a plain call, a ``functools.wraps`` closure,
``@feature`` and ``@with_fallback`` (explicit manager).

Prints one JSON line. Usage: python bench/bench_wsgi.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import Flask
from werkzeug.test import EnvironBuilder

from bench._harness import delta, emit, interleaved, median, ratio
from resilience_mw import AutoDegradationManager, Feature
from resilience_mw.decorators import feature, with_fallback
from resilience_mw.flask_ext import Resilience
from resilience_mw.wsgi import ResilienceMiddleware

ENV = EnvironBuilder(path="/").get_environ()
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "2")]


def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return None


def bare(environ: Any, sr: Any) -> Iterable[bytes]:
    sr("200 OK", HEADERS)
    return [b"ok"]


class Body:
    def __iter__(self) -> Iterator[bytes]:
        yield b"ok"

    def close(self) -> None:
        pass


def bare_lazy(environ: Any, sr: Any) -> Iterable[bytes]:
    sr("200 OK", HEADERS)
    return Body()


class Passthrough:
    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: Any, sr: Any) -> Any:
        return self.app(environ, sr)


class StatusCounter:
    """The least a middleware that counts outcomes by status can do: wrap
    start_response in a closure to see the status, and count it. A reference for the
    floor of any such layer in Python, not a usable middleware."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.ok = 0
        self.failed = 0

    def __call__(self, environ: Any, sr: Any) -> Any:
        status = ""

        def capture(status_: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status
            status = status_
            return sr(status_, headers) if exc_info is None else sr(status_, headers, exc_info)

        body = self.app(environ, capture)
        if "5" <= status < "6":
            self.failed += 1
        else:
            self.ok += 1
        return body


def driver(app: Any) -> Any:
    def call() -> None:
        body = app(dict(ENV), start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    return call


def plain(x: int) -> int:
    return x + 1


def wraps_closure(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        return fn(*a, **kw)

    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--target-s", type=float, default=0.15)
    args = ap.parse_args()
    # Sampling, as in a deployment (the extension starts it on the first request): the
    # sampler's reads keep the error window current, so successes skip the clock.
    deg = AutoDegradationManager()
    deg.start()

    # One Flask app, measured bare, behind a pass-through layer and behind the
    # extension's middleware, so the comparison is not between two app objects.
    flask_app = Flask("bench")
    flask_app.route("/")(lambda: "ok")
    state = Resilience(start="eager").init_app(flask_app)
    flask_inner = state.middleware.app

    wsgi_variants = {
        "bare": (driver(bare), 1),
        "bare+passthrough": (driver(Passthrough(bare)), 1),
        "bare+status_counter": (driver(StatusCounter(bare)), 1),
        "bare+gate": (driver(ResilienceMiddleware(bare, deg, record_outcomes=False)), 1),
        "bare+middleware": (driver(ResilienceMiddleware(bare, deg)), 1),
        "lazy": (driver(bare_lazy), 1),
        "lazy+passthrough": (driver(Passthrough(bare_lazy)), 1),
        "lazy+middleware": (driver(ResilienceMiddleware(bare_lazy, deg)), 1),
        "flask": (driver(flask_inner), 1),
        "flask+passthrough": (driver(Passthrough(flask_inner)), 1),
        "flask+resilience": (driver(state.middleware), 1),
    }
    res = interleaved(wsgi_variants, args.repeats, args.target_s)
    wsgi = {f"{k}_ns": round(median(v), 1) for k, v in res.items()}
    for name in ("bare+passthrough", "bare+status_counter", "bare+gate", "bare+middleware"):
        wsgi[f"{name}_delta_ns"] = round(delta(res, name, "bare"), 1)
    # the structure issue's goal: gate-and-count at most 4x a pass-through layer; the
    # status counter shows the floor of any layer that must see the status
    passthrough = delta(res, "bare+passthrough", "bare")
    wsgi["middleware_vs_passthrough"] = round(delta(res, "bare+middleware", "bare") / passthrough, 2)
    wsgi["status_counter_vs_passthrough"] = round(delta(res, "bare+status_counter", "bare") / passthrough, 2)
    for name in ("lazy+passthrough", "lazy+middleware"):
        wsgi[f"{name}_delta_ns"] = round(delta(res, name, "lazy"), 1)
    for name in ("flask+passthrough", "flask+resilience"):
        wsgi[f"{name}_ratio"] = round(ratio(res, name, "flask"), 4)
        wsgi[f"{name}_delta_ns"] = round(delta(res, name, "flask"), 1)

    feat = feature(Feature.Analytics, manager=deg)(plain)
    fb = with_fallback(lambda x: x, manager=deg)(plain)
    closure = wraps_closure(plain)
    deco_variants = {
        "plain": ((lambda: plain(1)), 1),
        "wraps_closure": ((lambda: closure(1)), 1),
        "feature": ((lambda: feat(1)), 1),
        "with_fallback": ((lambda: fb(1)), 1),
    }
    res = interleaved(deco_variants, args.repeats, args.target_s)
    deco = {f"{k}_ns": round(median(v), 1) for k, v in res.items()}
    for name in ("wraps_closure", "feature", "with_fallback"):
        deco[f"{name}_delta_ns"] = round(delta(res, name, "plain"), 1)

    emit(
        "wsgi",
        {
            "wsgi": wsgi,
            "decorators": deco,
            "goals": {
                "middleware_delta_max_ns": 500,
                "gate_delta_max_ns": 250,
                "decorator_delta_max_ns": 250,
            },
        },
    )


if __name__ == "__main__":
    main()
