"""Runtime: a plain WSGI app under a real gunicorn gets health checks, shared state
(SQLite), /readyz, /metrics and the admin endpoint from Runtime alone, with no Flask."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from resilience_mw import ConfigError
from resilience_mw.runtime import Runtime
from tests.helpers import serving, stop_process, wait_for
from tests.nodes import free_port

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"
TOKEN = "t0ken-for-the-test"


def test_a_plain_wsgi_app_under_gunicorn_gets_everything_from_runtime(node_factory: Any, tmp_path: Path) -> None:
    a, b = node_factory("a"), node_factory("b")
    port = free_port()
    env = {
        **os.environ,
        "PLAIN_NODES": f"{a.url},{b.url}",
        "PLAIN_STATE_URL": f"sqlite:///{tmp_path}/state.db",
        "PLAIN_TOKEN": TOKEN,
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    proc = subprocess.Popen(
        [str(GUNICORN), "-w", "2", "-b", f"127.0.0.1:{port}", "tests.apps.plain_wsgi:application"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with requests.Session() as http:
            assert wait_for(lambda: _get(http, f"{url}/") == "hello", 30), "gunicorn did not answer"
            # no framework: the app's processes never imported Flask
            pids = set()
            for _ in range(20):
                seen = http.get(f"{url}/modules", timeout=5).json()
                assert seen["flask"] is False
                pids.add(seen["pid"])
            # readiness: both upstream nodes checked and healthy
            ready = http.get(f"{url}/readyz", timeout=5)
            assert ready.status_code == 200 and ready.headers["Content-Type"] == "application/health+json"
            nodes = {c["componentId"]: c["status"] for c in ready.json()["checks"]["upstream:responseTime"]}
            assert nodes == {"n0": "pass", "n1": "pass"}
            assert ready.json()["checks"]["state:store"][0]["status"] == "pass"
            # health checks run: a dead node shows as down
            a.stop()
            assert wait_for(lambda: _node_status(http, url, "n0") == "fail", 10)
            # metrics
            metrics = http.get(f"{url}/metrics", timeout=5)
            assert metrics.status_code == 200 and "resilience_degradation_level" in metrics.text
            # the admin endpoint: a token is required; a level forced through the store
            # reaches every worker
            assert http.put(f"{url}/resilience/level", json={"level": "Level2"}, timeout=5).status_code == 401
            forced = http.put(f"{url}/resilience/level", json={"level": "Level2"}, timeout=5,
                              headers={"Authorization": f"Bearer {TOKEN}"})
            assert forced.status_code == 200 and forced.json()["scope"] != "process"

            def everywhere(level: str) -> bool:
                seen = {http.get(f"{url}/readyz", timeout=5).json()["level"] for _ in range(20)}
                return seen == {level}

            assert wait_for(lambda: everywhere("Level2"), 10)
            cleared = http.delete(f"{url}/resilience/level", timeout=5, headers={"Authorization": f"Bearer {TOKEN}"})
            assert cleared.status_code == 200
            assert wait_for(lambda: everywhere("Normal"), 10)
    finally:
        stop_process(proc)
    assert len(pids) >= 1


def _get(http: requests.Session, url: str) -> str | None:
    try:
        return http.get(url, timeout=2).text
    except requests.RequestException:
        return None


def _node_status(http: requests.Session, url: str, node: str) -> str:
    checks = http.get(f"{url}/readyz", timeout=5).json()["checks"]["upstream:responseTime"]
    return next(c["status"] for c in checks if c["componentId"] == node)


def test_runtime_takes_settings_as_keywords_or_keys_and_names_the_bad_one() -> None:
    assert Runtime(shed_level="Level3").settings.middleware.shed_level.name == "Level3"
    assert Runtime({"RESILIENCE_SHED_LEVEL": "Level2"}).settings.middleware.shed_level.name == "Level2"
    with pytest.raises(ConfigError, match="shed_level"):
        Runtime(shed_level="Level9")
    with pytest.raises(ConfigError, match="RESILIENCE_CORE_PATHS"):
        Runtime({"RESILIENCE_CORE_PATHS": ["api"]})
    with pytest.raises(ConfigError, match="shed_levle"):
        Runtime(shed_levle="Level3")


def test_the_endpoints_answer_in_front_of_a_plain_app() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    runtime = Runtime(start="off", admin_token=TOKEN)
    application = runtime.wrap(app)
    with pytest.raises(ConfigError, match="already wraps"):
        runtime.wrap(app)
    with serving(application) as url:
        assert requests.get(f"{url}/x", timeout=5).text == "app"
        assert requests.get(f"{url}/livez", timeout=5).json() == {"status": "pass"}
        assert requests.get(f"{url}/readyz", timeout=5).json()["status"] == "pass"
        bad = requests.put(f"{url}/resilience/level", data=b"not json", timeout=5,
                           headers={"Authorization": f"Bearer {TOKEN}"})
        assert bad.status_code == 400 and "level" in bad.json()["error"]
        ok = requests.put(f"{url}/resilience/level", json={"level": "emergency"}, timeout=5,
                          headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["level"] == "Emergency"
        assert requests.get(f"{url}/x", timeout=5).status_code == 503  # shed: the app is not called
        assert requests.get(f"{url}/readyz", timeout=5).status_code == 503
        assert requests.get(f"{url}/metrics", timeout=5).text == "app"  # not configured: the app's own


def test_a_level_forced_with_a_ttl_ends_without_a_store() -> None:
    """PUT {"level": "Emergency", "ttl": 1} with no shared store: the level holds, then
    ends by itself within two seconds (before, the ttl was echoed and ignored)."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    runtime = Runtime(admin_token=TOKEN, sample_interval=0.2, start="eager")
    try:
        with serving(runtime.wrap(app)) as url:
            put = requests.put(f"{url}/resilience/level", json={"level": "Emergency", "ttl": 1}, timeout=5,
                               headers={"Authorization": f"Bearer {TOKEN}"})
            assert put.status_code == 200 and put.json()["ttl"] == 1.0 and put.json()["scope"] == "process"
            assert 0 < put.json()["forced_remaining"] <= 1.0
            shed = requests.get(f"{url}/x", timeout=5)
            assert shed.status_code == 503 and int(shed.headers["Retry-After"]) <= 1  # no longer than it lasts
            assert wait_for(lambda: requests.get(f"{url}/x", timeout=5).status_code == 200, 2.0)
            assert runtime.degradation.forced is None and runtime.degradation.level.name == "Normal"
    finally:
        runtime.stop()
