"""Degradation that helps in an incident: sustained container-aware signals, levels that
know their cause, every request counted once, HEAD shed without a body, and
``wsgiref.validate`` on both sides of the middleware for every kind of app."""

from __future__ import annotations

import io
import itertools
import warnings
from pathlib import Path
from typing import Any
from wsgiref.util import FileWrapper
from wsgiref.validate import validator

import pytest
from flask import Flask
from werkzeug.test import Client

from resilience_mw import (
    AutoDegradationManager,
    DegradationConfig,
    GracefulDegradation,
    ResilienceMiddleware,
    Sample,
    signals,
)
from resilience_mw import (
    DegradationLevel as L,
)
from resilience_mw.degradation.load import SystemSampler
from resilience_mw.flask_ext import Resilience
from resilience_mw.testing import FakeClock


class Samples:
    def __init__(self, cpu: float = 1.0, memory: float = 1.0) -> None:
        self.cpu, self.memory = cpu, memory

    def __call__(self) -> Sample:
        return Sample(self.cpu, self.memory)


def manager(clock: FakeClock, samples: Samples, **cfg: Any) -> AutoDegradationManager:
    cfg.setdefault("cooldown_seconds", 0)
    return AutoDegradationManager(DegradationConfig(**cfg), sampler=samples, clock=clock)


# ----------------------------------------------------------------------- signals


def test_one_full_cpu_sample_changes_nothing_a_sustained_one_does(clock: FakeClock) -> None:
    samples = Samples()
    m = manager(clock, samples)  # default: 3 of the last 5 samples
    for _ in range(4):
        m.evaluate()
        clock.advance(1)
    samples.cpu = 100.0
    assert m.evaluate() == L.Normal  # one spike
    samples.cpu = 1.0
    for _ in range(4):
        clock.advance(1)
        assert m.evaluate() == L.Normal
    samples.cpu = 100.0
    levels = []
    for _ in range(3):  # sustained: within 3 samples (3 s at 1 Hz)
        clock.advance(1)
        levels.append(m.evaluate())
    assert levels == [L.Normal, L.Normal, L.Emergency]
    cause = m.figures()["cause"]
    assert {k: cause[k] for k in ("resources", "queue", "errors", "forced")} == {
        "resources": "Emergency", "queue": "Normal", "errors": "Normal", "forced": None,
    }
    # the CPU gates features; it sheds nothing, and says so
    assert m.load_level is L.Normal and "gates features only" in cause["sheds"]


def test_startup_spike_is_ignored(clock: FakeClock) -> None:
    samples = Samples(cpu=100.0)
    m = manager(clock, samples, sustain_samples=1, sustain_window=1, startup_grace_seconds=10)
    m.start(check_interval=3600)  # the thread does not tick: the test drives evaluate
    try:
        assert m.evaluate() == L.Normal
        clock.advance(11)
        assert m.evaluate() == L.Emergency
    finally:
        m.stop()


def test_a_signal_can_be_switched_off(clock: FakeClock) -> None:
    off = {f"cpu_threshold_{s}": None for s in ("l1", "l2", "l3", "emergency")}
    m = manager(clock, Samples(cpu=100.0), sustain_samples=1, sustain_window=1, **off)
    assert m.evaluate() == L.Normal
    only_emergency = manager(
        clock, Samples(cpu=99.0), sustain_samples=1, sustain_window=1, cpu_threshold_l1=None, cpu_threshold_l2=None
    )
    assert only_emergency.evaluate() == L.Emergency


def _cgroup_v2(root: Path, quota: str, usage_usec: int) -> None:
    (root / "cpu.max").write_text(f"{quota}\n")
    (root / "cpu.stat").write_text(f"usage_usec {usage_usec}\nuser_usec 0\nsystem_usec 0\n")


def test_cpu_is_relative_to_the_containers_quota(tmp_path: Path) -> None:
    clock = FakeClock()
    _cgroup_v2(tmp_path, "50000 100000", 0)  # half a CPU
    sampler = SystemSampler(tmp_path, scope="container", clock=clock)
    sampler.prime()
    clock.advance(2)
    _cgroup_v2(tmp_path, "50000 100000", 900_000)  # 0.9 s of CPU in 2 s: 90 % of half a CPU
    assert sampler().cpu == pytest.approx(90.0)
    clock.advance(1)
    _cgroup_v2(tmp_path, "50000 100000", 1_000_000)
    assert sampler().cpu == pytest.approx(20.0)


def test_cgroup_v1_quota_and_no_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpuacct").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    (tmp_path / "cpuacct" / "cpuacct.usage").write_text("0")
    clock = FakeClock()
    sampler = SystemSampler(tmp_path, scope="container", clock=clock)
    sampler.prime()
    clock.advance(1)
    (tmp_path / "cpuacct" / "cpuacct.usage").write_text(str(int(1.5e9)))  # 1.5 of 2 CPUs
    assert sampler().cpu == pytest.approx(75.0)
    empty = tmp_path / "none"
    empty.mkdir()
    host = SystemSampler(empty, scope="container")  # no quota: the host's CPU, from psutil
    host.prime()
    assert 0.0 <= host().cpu <= 100.0


# ----------------------------------------------------------- levels and causes


def test_errors_alone_gate_features_but_do_not_shed(clock: FakeClock) -> None:
    m = manager(clock, Samples(), min_requests=10)
    for i in range(20):
        m.record_request(i % 2 == 0)  # 50 % of requests fail: a dependency outage
    assert m.evaluate() == L.Emergency
    assert m.load_level == L.Normal
    app = ResilienceMiddleware(_hello, m)
    assert Client(app).get("/x").status_code == 200  # not shed
    assert not m.is_feature_available(__import__("resilience_mw").Feature.Analytics)
    m.force_level("Emergency")  # an operator can still shed
    assert Client(app).get("/x").status_code == 503
    assert m.figures()["cause"]["forced"] == "Emergency"


def test_errors_shed_restores_the_old_rule(clock: FakeClock) -> None:
    m = manager(clock, Samples(), min_requests=10, errors_shed=True)
    for _ in range(20):
        m.record_request(False)
    m.evaluate()
    assert m.load_level == L.Emergency
    assert Client(ResilienceMiddleware(_hello, m)).get("/x").status_code == 503


def test_level_change_says_why_and_when_the_cooldown_ends(clock: FakeClock) -> None:
    samples = Samples(cpu=90.0)
    m = manager(clock, samples, sustain_samples=1, sustain_window=1, cooldown_seconds=30)
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any, **kw: Any) -> None:
        seen.append(kw)

    with signals.level_changed.connected_to(receiver, sender=m):
        m.evaluate()
    assert seen[-1]["cause"]["resources"] == "Level2" and seen[-1]["load_level"] == L.Normal
    samples.cpu = 1.0
    clock.advance(1)
    m.evaluate()
    assert m.level == L.Level2 and m.figures()["cooldown_remaining"] == pytest.approx(30.0)
    clock.advance(10)
    m.evaluate()
    assert m.figures()["cooldown_remaining"] == pytest.approx(20.0)


def test_readiness_stays_ready_through_a_dependency_outage(clock: FakeClock) -> None:
    app = Flask("outage")
    state = Resilience(app, start="off", degradation={"cooldown_seconds": 0, "min_requests": 10}).state(app)
    for _ in range(20):
        state.degradation.record_request(False)
    state.degradation.evaluate()
    r = app.test_client().get("/readyz")
    assert r.status_code == 200 and r.json["status"] == "warn" and r.json["level"] == "Emergency"


# ------------------------------------------------------------- count once


def _hello(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


class Closing:
    """A lazy body that calls start_response only when iterated (PEP 3333 allows it)."""

    closed = 0

    def __init__(self, start_response: Any, status: str) -> None:
        self.start_response, self.status = start_response, status

    def __iter__(self) -> Any:
        self.start_response(self.status, [("Content-Type", "text/plain")])
        yield b"late"

    def close(self) -> None:
        Closing.closed += 1


@pytest.mark.parametrize("is_failure", [None, lambda code: code >= 500])
def test_lazy_start_response_is_counted_by_its_status_and_closed(clock: FakeClock, is_failure: Any) -> None:
    m = manager(clock, Samples())
    Closing.closed = 0
    for status in ("500 Internal Server Error", "200 OK", "503 Service Unavailable"):
        app = ResilienceMiddleware(lambda e, sr, s=status: Closing(sr, s), m, is_failure=is_failure)
        assert Client(app).get("/x").get_data() == b"late"
    assert m.window.counts() == (3, 2) and Closing.closed == 3


def test_nested_middlewares_each_count_every_request(clock: FakeClock) -> None:
    inner_m, outer_m = manager(clock, Samples()), manager(clock, Samples())
    app = ResilienceMiddleware(ResilienceMiddleware(_hello, inner_m), outer_m)
    same = ResilienceMiddleware(ResilienceMiddleware(_hello, inner_m), inner_m)
    for _ in range(40):
        Client(app).get("/x")
    assert inner_m.window.counts() == (40, 0) and outer_m.window.counts() == (40, 0)
    for _ in range(10):
        Client(same).get("/x")
    assert inner_m.window.counts() == (50, 0)  # one manager twice: counted once


def test_graceful_degradation_in_a_flask_view_counts_once() -> None:
    app = Flask("graceful")
    state = Resilience(app, start="off").state(app)
    graceful = GracefulDegradation(state.degradation)

    def down() -> str:
        raise ConnectionError("search down")

    @app.route("/ok")
    def ok() -> str:
        return graceful.execute(lambda: "live", lambda: "cached")

    @app.route("/down")
    def fails() -> str:
        return graceful.execute(down, lambda: "cached")

    c = app.test_client()
    for _ in range(5):
        assert c.get("/ok").text == "live"
        assert c.get("/down").text == "cached"
    assert state.degradation.window.counts() == (10, 5)


def test_head_is_shed_without_a_body(clock: FakeClock) -> None:
    m = manager(clock, Samples())
    m.force_level("Emergency")
    r = Client(ResilienceMiddleware(_hello, m)).head("/x")
    assert r.status_code == 503 and r.get_data() == b"" and 15 <= int(r.headers["Retry-After"]) <= 30


# --------------------------------------------------------- wsgiref.validate


def _apps() -> dict[str, Any]:
    def listed(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"a", b"b"]

    def generated(environ: Any, start_response: Any) -> Any:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        yield b"x"

    def lazy(environ: Any, start_response: Any) -> Any:
        return Closing(start_response, "200 OK")

    def writer(environ: Any, start_response: Any) -> Any:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written")
        return []

    def wrapped_file(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"file body"), 4)

    def with_exc_info(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("late failure")
        except RuntimeError:
            import sys

            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error page"]

    def head(environ: Any, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [b"body"]

    return {
        "list": listed,
        "generator": generated,
        "lazy": lazy,
        "write": writer,
        "file_wrapper": wrapped_file,
        "exc_info": with_exc_info,
        "head": head,
    }


@pytest.mark.parametrize(("name", "level"), list(itertools.product(_apps(), L)))
def test_wsgiref_validate_on_both_sides_at_every_level(clock: FakeClock, name: str, level: L) -> None:
    m = manager(clock, Samples())
    m.force_level(level)
    inner = validator(_apps()[name])
    app = validator(
        ResilienceMiddleware(inner, m, reroutes={"/r": ("/s", L.Level2)}, core_paths=["/core"])
    )
    method = "HEAD" if name == "head" else "GET"
    counted_before = m.window.counts()[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # wsgiref.validate warns on some breaches
        for path in ("/x", "/core", "/r"):
            shed = level == L.Emergency and path != "/core"
            # a server's own file_wrapper, as gunicorn and wsgiref give one
            overrides = {"wsgi.file_wrapper": FileWrapper}
            if name == "exc_info" and not shed:
                # werkzeug's start_response re-raises exc_info, as PEP 3333 allows a server to
                with pytest.raises(RuntimeError, match="late failure"):
                    Client(app).open(path, method=method, environ_overrides=overrides)
                continue
            r = Client(app).open(path, method=method, environ_overrides=overrides)
            r.close()
            if shed:
                assert r.status_code == 503
    served = 1 if level == L.Emergency else 3  # shed requests are not counted
    assert m.window.counts()[0] - counted_before == served


def test_a_bug_in_the_callers_operation_charges_no_node() -> None:
    from resilience_mw import FailoverManager, ServiceNode

    m = FailoverManager(
        [ServiceNode("a", "http://127.0.0.1:9", priority=2), ServiceNode("b", "http://127.0.0.1:10")], failure_threshold=1
    )
    calls: list[str] = []

    def buggy(node: Any) -> None:
        calls.append(node.id)
        return node.no_such_attribute  # type: ignore[no-any-return]  # an AttributeError: our bug

    for _ in range(3):
        with pytest.raises(AttributeError):
            m.execute_with_failover(buggy)
    assert calls == ["a", "a", "a"] and m.is_healthy("a")  # not charged, not retried elsewhere
    with pytest.raises(ConnectionError):
        m.execute_with_failover(lambda n: (_ for _ in ()).throw(ConnectionError("down")), should_fail_over=lambda e: False)
    assert m.is_healthy("a")  # a veto charges nothing either


def test_an_http_404_counts_the_same_at_every_level(clock: FakeClock) -> None:
    from werkzeug.exceptions import NotFound

    from resilience_mw.decorators import with_fallback

    m = manager(clock, Samples())

    @with_fallback(lambda: "cached", manager=m)
    def lookup() -> str:
        raise NotFound()

    for level in ("Normal", "Level2"):
        m.force_level(level)
        with pytest.raises(NotFound):
            lookup()
    assert m.window.counts() == (2, 0)  # an answer, not a failure, whatever the level


def test_a_forced_level_stays_in_the_cause_after_the_next_samples(clock: FakeClock) -> None:
    m = manager(clock, Samples())
    m.force_level("Level2")
    for _ in range(3):
        clock.advance(1)
        m.evaluate()
    assert m.figures()["cause"]["forced"] == "Level2" and m.figures()["forced"] == "Level2"
    m.clear_override()
    assert m.figures()["cause"]["forced"] is None
