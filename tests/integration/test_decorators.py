"""@feature and @with_fallback on Flask views and plain functions."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, Response, stream_with_context

from resilience_mw import DegradationConfig, DegradationLevel, Feature, FeatureUnavailable, ResilienceError
from resilience_mw.decorators import FeatureUnavailableHTTP, feature, with_fallback
from resilience_mw.degradation import AutoDegradationManager
from resilience_mw.degradation.load import Sample
from tests.apps.flask_app import create_app

L = DegradationLevel


@pytest.fixture
def app() -> Flask:
    return create_app(RESILIENCE_START="off")


@pytest.fixture
def deg() -> AutoDegradationManager:
    return AutoDegradationManager(DegradationConfig(cooldown_seconds=0), sampler=lambda: Sample(1, 1))


def test_feature_gate_on_view(app: Flask) -> None:
    c = app.test_client()
    deg = app.extensions["resilience"].degradation
    assert c.get("/analytics").json == {"analytics": "on"}
    deg.force_level(L.Level1)
    r = c.get("/analytics")
    assert r.status_code == 503 and r.headers["Retry-After"] == "30"
    assert r.json == {"error": "feature unavailable", "feature": "Analytics", "level": "Level1"}
    assert c.get("/caching").json == {"cache": "used"}
    deg.force_level(L.Level3)
    assert c.get("/caching").json == {"cache": "bypassed"}


def test_names_and_docstrings_kept(app: Flask) -> None:
    assert set(app.view_functions) >= {"analytics", "caching", "search"}
    assert app.view_functions["analytics"].__doc__ == "Analytics view."
    assert app.view_functions["analytics"].__resilience_feature__ is Feature.Analytics


def test_feature_on_plain_function(deg: AutoDegradationManager) -> None:
    calls = []

    @feature(Feature.Analytics, manager=deg)
    def track(event: str) -> str:
        """Track an event."""
        calls.append(event)
        return "tracked"

    assert track("a") == "tracked"
    deg.force_level(L.Level1)
    with pytest.raises(FeatureUnavailable) as info:
        track("b")
    assert info.value.feature is Feature.Analytics and info.value.level == L.Level1
    assert calls == ["a"] and track.__name__ == "track" and track.__doc__ == "Track an event."

    @feature(Feature.Analytics, manager=deg, fallback=lambda event: f"skipped {event}")
    def track2(event: str) -> str:
        return "tracked"

    assert track2("c") == "skipped c"


def test_no_manager_outside_flask_is_clear() -> None:
    @feature(Feature.Analytics)
    def f() -> None:
        pass

    with pytest.raises(ResilienceError, match="no degradation manager"):
        f()


def test_with_fallback_view_rules(app: Flask) -> None:
    c = app.test_client()
    deg = app.extensions["resilience"].degradation
    assert c.get("/search/books").json == {"results": ["books"], "source": "primary"}
    # a failing primary falls back at any level, from the first failing request
    assert c.get("/search/crash").json == {"results": ["cached"], "source": "fallback"}
    deg.force_level(L.Level2)
    assert c.get("/search/crash").json == {"results": ["cached"], "source": "fallback"}
    assert c.get("/search/missing").status_code == 404  # 4xx is an answer, not a failure
    deg.force_level(L.Level3)
    assert c.get("/search/books").json["source"] == "fallback"  # primary skipped


def test_with_fallback_records_one_outcome_per_request(app: Flask) -> None:
    c = app.test_client()
    deg = app.extensions["resilience"].degradation
    c.get("/search/crash")  # primary failed, fallback served 200: one failure, no success
    c.get("/search/books")  # one success
    c.get("/search/missing")  # 404: one success
    assert deg.window.counts() == (3, 1)


def test_with_fallback_inside_a_streamed_body_turns_the_request_into_one_failure(app: Flask) -> None:
    """The middleware counted the 200 when the view returned; a primary that fails while
    the body streams turns that success into a failure: one request, one failure."""
    deg = app.extensions["resilience"].degradation

    @with_fallback(lambda part: f"{part}:cached", fallback_on_error_at=L.Level2)
    def render(part: str) -> str:
        if part == "b":
            raise ConnectionError("recommendations service down")
        return f"{part}:live"

    @app.route("/report")
    def report() -> Response:
        return Response(stream_with_context(render(p) + "," for p in "abc"))

    deg.force_level(L.Level2)
    assert app.test_client().get("/report").get_data() == b"a:live,b:cached,c:live,"
    assert deg.window.counts() == (1, 1)


def test_strict_rule_lets_errors_through_below_its_level(deg: AutoDegradationManager) -> None:
    """The ported design's rule, kept as an option: below Level2 the error propagates."""

    @with_fallback(lambda: "cached", manager=deg, fallback_on_error_at="Level2")
    def load() -> str:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        load()
    deg.force_level("Level2")
    assert load() == "cached"


def test_fallback_without_parameters_gets_no_arguments(app: Flask) -> None:
    @app.route("/lookup/<q>")
    @with_fallback(lambda: {"results": [], "cached": True})
    def lookup(q: str) -> Any:
        raise ConnectionError("search down")

    assert app.test_client().get("/lookup/shoes").json == {"results": [], "cached": True}


def test_fallback_on_limits_what_falls_back(deg: AutoDegradationManager) -> None:
    @with_fallback(lambda: "cached", manager=deg, fallback_on=ConnectionError)
    def load(kind: str) -> str:
        raise ConnectionError("down") if kind == "net" else KeyError(kind)

    assert load("net") == "cached"
    with pytest.raises(KeyError):
        load("bug")


def test_explicit_manager_without_its_middleware_counts_every_outcome(app: Flask) -> None:
    """A manager no middleware watches: the decorator counts successes and failures alike."""
    other = AutoDegradationManager(sampler=lambda: __import__("resilience_mw").Sample(1, 1))

    @app.route("/other/<int:n>")
    @with_fallback(lambda n: {"n": n, "cached": True}, manager=other)
    def view(n: int) -> Any:
        if n % 20 == 0:
            raise ConnectionError("down")
        return {"n": n}

    c = app.test_client()
    for n in range(1, 41):
        c.get(f"/other/{n}")
    assert other.window.counts() == (40, 2)  # 5 %: not 100 % failures


def test_with_fallback_plain_function(deg: AutoDegradationManager) -> None:
    def fallback(x: int) -> str:
        return f"fallback {x}"

    @with_fallback(fallback, manager=deg, fallback_on_error_at=L.Level1)
    def compute(x: int) -> str:
        """Compute."""
        if x < 0:
            raise ValueError("negative")
        return f"primary {x}"

    assert compute(1) == "primary 1"
    with pytest.raises(ValueError):
        compute(-1)  # below fallback_on_error_at: the error propagates
    deg.force_level(L.Level1)
    assert compute(-2) == "fallback -2"
    assert deg.window.counts() == (3, 2)
    assert compute.__doc__ == "Compute." and compute.__resilience_fallback__ is fallback


def test_http_exception_is_resilience_error_and_503() -> None:
    exc = FeatureUnavailableHTTP(Feature.Caching, L.Level3, retry_after=5)
    assert isinstance(exc, FeatureUnavailable) and exc.code == 503
    assert ("Retry-After", "5") in exc.get_headers()
    assert "Caching" in str(exc)


def test_bad_fallback_args() -> None:
    with pytest.raises(ResilienceError):
        with_fallback("not callable")  # type: ignore[arg-type]
