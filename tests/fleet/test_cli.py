"""``python -m resilience_mw`` as an operator runs it: a real process, a real store, a
real admin endpoint on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from resilience_mw import AutoDegradationManager, DegradationLevel
from resilience_mw.config import StateConfig
from resilience_mw.flask_ext import Resilience
from resilience_mw.fleet.stores import open_store
from resilience_mw.fleet.sync import StateSync
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "resilience_mw", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_force_status_clear_through_the_store(state_url: str) -> None:
    worker = StateSync(open_store(state_url), AutoDegradationManager(), config=StateConfig(url=state_url), name="w1")
    done = cli("--state-url", state_url, "force", "Level3", "--ttl", "600", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["forced"] == "Level3"
    worker.exchange()
    assert worker.degradation.current_level() is DegradationLevel.Level3
    status = json.loads(cli("--state-url", state_url, "status", "--json").stdout)
    assert status["forced"] == "Level3" and 590 < status["expires_in"] <= 600 and status["forced_by"] == "cli"
    done = cli("clear", env={"RESILIENCE_STATE_URL": state_url})  # the URL from the environment
    assert done.returncode == 0 and "forced: None" in done.stdout
    worker.exchange()
    assert worker.degradation.current_level() is DegradationLevel.Normal


@pytest.fixture
def served_app() -> Iterator[tuple[str, Flask]]:
    app = Flask("cli_target")
    Resilience(app, admin_token="s3cret-token", start="off")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/resilience/level", app
    finally:
        server.shutdown()


def test_force_and_clear_through_the_admin_endpoint(served_app: tuple[str, Any]) -> None:
    url, app = served_app
    done = cli("--url", url, "force", "Emergency", "--json", env={"RESILIENCE_ADMIN_TOKEN": "s3cret-token"})
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["scope"] == "process" and doc["level"] == "Emergency"
    assert Resilience.state(app).degradation.current_level() is DegradationLevel.Emergency
    assert cli("--url", url, "--token", "s3cret-token", "clear").returncode == 0
    assert Resilience.state(app).degradation.current_level() is DegradationLevel.Normal


def test_errors_say_what_and_keep_secrets(served_app: tuple[str, Any], tmp_path: Path) -> None:
    url, _ = served_app
    wrong = cli("--url", url, "--token", "not-the-token", "status")
    assert wrong.returncode == 1 and "not-the-token" not in wrong.stderr + wrong.stdout
    bad_level = cli("--state-url", f"sqlite://{tmp_path}/s.db", "force", "Level9")
    assert bad_level.returncode == 2 and "Level9" in bad_level.stderr
    dead = RedisServer(tmp_path, password="pw-secret")  # never started: nothing listens
    down = cli("--state-url", dead.url, "status")
    assert down.returncode == 1 and "pw-secret" not in down.stderr and "did not answer" in down.stderr
    assert cli("status").returncode == 2  # neither --state-url nor --url
