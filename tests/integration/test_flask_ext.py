"""The Flask extension: config, endpoints, shedding, state, two apps, real server, fork."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from resilience_mw import ConfigError, DegradationLevel, ServiceNode
from resilience_mw.flask_ext import Resilience
from tests.apps.flask_app import create_app
from tests.helpers import wait_for

L = DegradationLevel


@pytest.fixture
def app() -> Any:
    app = create_app(RESILIENCE_START="off")
    yield app
    app.extensions["resilience"].stop()


def test_state_in_extensions_and_not_on_self(app: Flask) -> None:
    state = app.extensions["resilience"]
    assert state.degradation.current_level() == L.Normal and state.failover is None
    ext = Resilience()
    assert not any(isinstance(v, Flask) for v in vars(ext).values())


def test_options_resolution_kwarg_over_config_over_default() -> None:
    a = Flask("a")
    a.config["RESILIENCE_RETRY_AFTER"] = 11
    a.config["RESILIENCE_SHED_LEVEL"] = "Level2"
    Resilience(a, shed_level="Level3", start="off")
    state = a.extensions["resilience"]
    assert state.middleware.retry_after == 11
    assert state.middleware.shed_level == L.Level3
    assert state.settings.sample_interval == 1.0
    assert a.config["RESILIENCE_READINESS_PATH"] == "/readyz"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"RESILIENCE_SHED_LEVEL": "Level7"}, "RESILIENCE_SHED_LEVEL"),
        ({"RESILIENCE_START": "sometimes"}, "RESILIENCE_START"),
        ({"RESILIENCE_DEGRADATION": {"cpu_threshold_l1": 99}}, "RESILIENCE_DEGRADATION.cpu_threshold_l2"),
        ({"RESILIENCE_NODES": [{"id": "a", "endpoint": "gopher://x"}]}, "RESILIENCE_NODES[0].endpoint"),
        ({"RESILIENCE_CHECK_INTERVAL": 0}, "RESILIENCE_CHECK_INTERVAL"),
    ],
)
def test_bad_config_fails_at_init(config: dict[str, Any], field: str) -> None:
    a = Flask("bad")
    a.config.update(config)
    with pytest.raises(ConfigError) as info:
        Resilience(a)
    assert info.value.field == field


def test_unknown_option_and_double_init() -> None:
    with pytest.raises(ConfigError, match="shed_levl"):
        Resilience(shed_levl="Level3")
    a = Flask("twice")
    Resilience(a, start="off")
    with pytest.raises(ConfigError):
        Resilience(a, start="off")


def test_liveness_always_200_readiness_follows_level(app: Flask) -> None:
    c = app.test_client()
    deg = app.extensions["resilience"].degradation
    r = c.get("/readyz")
    assert r.status_code == 200 and r.mimetype == "application/health+json"
    assert r.json["status"] == "pass" and r.json["level"] == "Normal"
    assert set(r.json["checks"]) >= {"cpu:utilization", "memory:utilization", "requests:errorRate"}
    deg.force_level(L.Level2)
    assert c.get("/readyz").json["status"] == "warn" and c.get("/readyz").status_code == 200
    deg.force_level(L.Emergency)
    r = c.get("/readyz")
    assert r.status_code == 503 and r.json["status"] == "fail" and "Emergency" in r.json["output"]
    assert c.get("/livez").status_code == 200
    assert c.get("/").status_code == 503  # shed
    assert c.get("/api/pay").status_code == 200  # core


def test_health_endpoints_not_counted(app: Flask) -> None:
    c = app.test_client()
    for _ in range(10):
        c.get("/readyz")
        c.get("/livez")
    c.get("/")
    assert app.extensions["resilience"].degradation.window.counts() == (1, 0)


def test_endpoints_configurable_or_off() -> None:
    a = create_app(
        RESILIENCE_START="off", RESILIENCE_LIVENESS_PATH="/healthz/live", RESILIENCE_READINESS_PATH=""
    )
    c = a.test_client()
    assert c.get("/healthz/live").status_code == 200
    assert c.get("/readyz").status_code == 404


def test_admin_endpoint_off_without_token(app: Flask) -> None:
    c = app.test_client()
    assert c.put("/resilience/level", json={"level": "Emergency"}).status_code == 404
    assert app.extensions["resilience"].degradation.current_level() == L.Normal


def test_admin_endpoint_needs_token() -> None:
    a = create_app(RESILIENCE_START="off", RESILIENCE_ADMIN_TOKEN="s3cret")
    c = a.test_client()
    deg = a.extensions["resilience"].degradation
    assert c.put("/resilience/level", json={"level": "Level3"}).status_code == 401
    bad = {"Authorization": "Bearer nope"}
    assert c.put("/resilience/level", json={"level": "Level3"}, headers=bad).status_code == 401
    good = {"Authorization": "Bearer s3cret"}
    r = c.put("/resilience/level", json={"level": "Level3"}, headers=good)
    assert r.status_code == 200 and r.json["forced"] == "Level3" and deg.current_level() == L.Level3
    assert c.put("/resilience/level", json={"level": "Level9"}, headers=good).status_code == 400
    assert c.delete("/resilience/level", headers=good).json["forced"] is None
    assert deg.current_level() == L.Normal


def test_nodes_configured_with_redacted_readiness(node_factory: Any) -> None:
    up = node_factory("up")
    a = create_app(
        RESILIENCE_START="off",
        RESILIENCE_NODES=[
            {"id": "up", "endpoint": up.url.replace("http://", "http://user:pw@"), "priority": 10},
            ServiceNode("down", "http://admin:hunter2@127.0.0.1:9", priority=5),
        ],
        RESILIENCE_HEALTH_CHECK_TIMEOUT=0.5,
        RESILIENCE_HEALTH_CHECK_HEALTHY_THRESHOLD=1,
        RESILIENCE_HEALTH_CHECK_UNHEALTHY_THRESHOLD=1,
    )
    state = a.extensions["resilience"]
    state.health_checker.run_once(state.failover)
    r = a.test_client().get("/readyz")
    text = r.get_data(as_text=True)
    assert "hunter2" not in text and "pw@" not in text
    ups = {c["componentId"]: c["status"] for c in r.json["checks"]["upstream:responseTime"]}
    assert ups == {"up": "pass", "down": "fail"}
    assert r.json["status"] == "warn" and "down" in r.json["output"]


def test_config_defaults_not_shared_between_apps() -> None:
    a1 = create_app(RESILIENCE_START="off")
    a2 = create_app(RESILIENCE_START="off")
    a1.config["RESILIENCE_REROUTES"]["/x"] = ("/y", "Level1")
    assert a2.config["RESILIENCE_REROUTES"] == {}


def test_two_apps_have_separate_state() -> None:
    a1 = create_app(RESILIENCE_START="off")
    a2 = create_app(RESILIENCE_START="off")
    a1.extensions["resilience"].degradation.force_level(L.Emergency)
    assert a1.test_client().get("/").status_code == 503
    assert a2.test_client().get("/").status_code == 200


def test_lazy_start_on_first_request_then_stop() -> None:
    a = create_app()  # RESILIENCE_START defaults to "lazy"
    state = a.extensions["resilience"]
    assert not state.degradation.running
    try:
        assert a.test_client().get("/whoami").json["sampler"] is True
    finally:
        state.stop()
    assert not state.degradation.running


def test_dependency_outage_degrades_but_neither_sheds_nor_fails_readiness() -> None:
    """Both upstreams of /search down, half the traffic failing: the error rate raises the
    level (features off, fallbacks served from the first failure), but the process is
    not overloaded, so nothing is shed and readiness stays 200 (warn)."""
    from resilience_mw import Sample

    a = create_app(
        RESILIENCE_DEGRADATION={"cooldown_seconds": 0, "min_requests": 5},
        RESILIENCE_SAMPLER=lambda: Sample(cpu=5.0, memory=5.0),  # errors alone drive the level
    )
    server = make_server("127.0.0.1", 0, a, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        with requests.Session() as s:
            for _ in range(10):
                assert s.get(f"{url}/search/crash", timeout=5).json()["source"] == "fallback"
                assert s.get(f"{url}/", timeout=5).status_code == 200
            assert wait_for(lambda: s.get(f"{url}/whoami", timeout=5).json()["level"] == "Emergency", 5)
            assert s.get(f"{url}/", timeout=5).status_code == 200  # not shed: errors alone
            assert s.get(f"{url}/analytics", timeout=5).status_code == 503  # but features are gated
            ready = s.get(f"{url}/readyz", timeout=5)
            assert ready.status_code == 200 and ready.json()["status"] == "warn"
            cause = ready.json()["figures"]["cause"]
            assert cause["errors"] == "Emergency" and cause["resources"] == "Normal"
            assert ready.json()["figures"]["load_level"] == "Normal"
            assert s.get(f"{url}/livez", timeout=5).status_code == 200
    finally:
        server.shutdown()
        a.extensions["resilience"].stop()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_eager_workers_survive_fork() -> None:
    a = create_app(RESILIENCE_START="eager")
    state = a.extensions["resilience"]
    try:
        assert state.degradation.running
        from tests.conftest import run_in_forked_child

        def in_child() -> bool:
            ok = wait_for(lambda: state.degradation.running, 3)
            body = a.test_client().get("/whoami").json
            return bool(ok and body["sampler"] and body["pid"] == os.getpid())

        assert run_in_forked_child(in_child)
    finally:
        state.stop()


def test_workers_stop_at_interpreter_exit(tmp_path: Any) -> None:
    import subprocess
    import sys

    script = (
        "from tests.apps.flask_app import create_app\n"
        "a = create_app(RESILIENCE_START='eager')\n"
        "assert a.extensions['resilience'].degradation.running\n"
        "print('started', flush=True)\n"
    )
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, cwd=os.getcwd()
    )
    assert out.returncode == 0, out.stderr
    assert "started" in out.stdout and time.monotonic() - t0 < 10
