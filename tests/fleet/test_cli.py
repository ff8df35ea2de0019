"""``python -m resilience_mw`` as an operator runs it: a real process, a real store, a
real admin endpoint on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
from tests.helpers import stop_process, wait_for
from tests.nodes import NodeServer, free_port
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
    assert done.returncode == 0 and "forced: none" in done.stdout
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


# ---------------------------------------------------------------- the token stays home

class _Recorder(ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 that answers every request with ``answer`` and
    keeps each request's method, path and headers."""

    daemon_threads = True

    def __init__(self, answer: tuple[int, dict[str, str], bytes]) -> None:
        self.answer = answer
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        super().__init__(("127.0.0.1", 0), _RecordingHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _RecordingHandler(BaseHTTPRequestHandler):
    server: _Recorder

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, dict(self.headers.items())))
        status, headers, body = self.server.answer
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_DELETE = _answer


@pytest.mark.parametrize("elsewhere", ["localhost", "127.0.0.1"], ids=["other-host-name", "same-host-other-port"])
@pytest.mark.parametrize("command", [("status",), ("nodes",), ("force", "Level3"), ("clear",)],
                         ids=["status", "nodes", "force", "clear"])
def test_a_redirect_is_never_followed_so_the_token_never_leaves(elsewhere: str, command: tuple[str, ...]) -> None:
    # "Another host": any other origin than the one --url names. The target below is a
    # second real server, reached as "localhost" (another host name for requests, which
    # drops Authorization on such a redirect) or as 127.0.0.1 on another port (the same
    # host name: requests would keep the header). The CLI follows neither: no redirect
    # is followed at all, so no request, with or without the token, reaches the target.
    other = _Recorder((200, {"Content-Type": "application/json"}, b'{"scope": "process", "nodes": []}'))
    target = f"http://{elsewhere}:{other.port}/resilience/level"
    # 307 keeps the method and body (a PUT stays a PUT), 302 is what a proxy's login does
    code = 307 if command[0] in ("force", "clear") else 302
    front = _Recorder((code, {"Location": target}, b""))
    try:
        done = cli("--url", f"http://127.0.0.1:{front.port}/resilience/level", *command,
                   env={"RESILIENCE_ADMIN_TOKEN": "s3cret-token"})
    finally:
        front.shutdown()
        other.shutdown()
    assert [auth for _, _, headers in front.seen for auth in [headers.get("Authorization")]] == ["Bearer s3cret-token"]
    assert other.seen == [], "the redirect was followed"
    assert done.returncode == 1
    assert f"{elsewhere}:{other.port}" in done.stderr and "not followed" in done.stderr, done.stderr
    assert "s3cret-token" not in done.stdout + done.stderr


def test_a_token_on_the_command_line_is_used_with_a_warning_the_environment_without(
    served_app: tuple[str, Any],
) -> None:
    url, _ = served_app
    on_line = cli("--url", url, "--token", "s3cret-token", "status")
    assert on_line.returncode == 0, on_line.stderr
    assert "/proc/<pid>/cmdline" in on_line.stderr and "RESILIENCE_ADMIN_TOKEN" in on_line.stderr
    assert "s3cret-token" not in on_line.stderr + on_line.stdout
    from_env = cli("--url", url, "status", env={"RESILIENCE_ADMIN_TOKEN": "s3cret-token"})
    assert from_env.returncode == 0 and from_env.stderr == "", from_env.stderr


# ------------------------------------------------------- what it prints, and agrees with

KEY_VALUE = re.compile(r"^(?:[a-z_][a-z0-9_.]*: \S.*|[a-z_][a-z0-9_.]*:|  - \S.*)$")


def plain_lines(text: str) -> dict[str, str]:
    """Every line of a text answer is ``key: value``, ``key:`` or a ``  - item``, with no
    Python repr (no dict or list braces, no ``None``); the top-level pairs."""
    lines = text.splitlines()
    assert lines and all(KEY_VALUE.match(line) for line in lines), text
    assert not re.search(r"[{}\[\]]|\bNone\b|\w+\(", text), text
    return dict(line.split(": ", 1) for line in lines if not line.startswith("  ") and ": " in line)


def test_help_is_plain_text() -> None:
    for args in ((), ("force",), ("status",)):
        done = cli(*args, "--help")
        assert done.returncode == 0 and "usage: python -m resilience_mw" in done.stdout
        assert not re.search(r"``|:(class|mod|func|meth|data):|::\s*$", done.stdout, re.M), done.stdout
    top = cli("--help").stdout
    assert "RESILIENCE_ADMIN_TOKEN" in top and "status" in top and "force" in top


def test_force_status_clear_through_a_sqlite_store_print_what_operators_read(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/state.db"
    before = time.time()
    forced = cli("--state-url", url, "force", "level3", "--ttl", "600")  # any case
    assert forced.returncode == 0, forced.stderr
    pairs = plain_lines(forced.stdout)
    assert pairs["forced"] == "Level3" and pairs["scope"] == "host" and pairs["ttl"] == "600.0"
    # who wrote it, and by when every worker (syncing every second) has it: as the PUT says
    assert int(pairs["pid"]) > 0
    applied_by = datetime.fromisoformat(pairs["applied_by"]).timestamp()
    assert before + 1 - 0.5 <= applied_by <= time.time() + 1 + 0.5
    as_json = json.loads(cli("--state-url", url, "force", "EMERGENCY", "--json").stdout)
    assert as_json["forced"] == "Emergency" and as_json["pid"] > 0 and as_json["applied_by"]
    status = cli("--state-url", url, "status")
    assert status.returncode == 0, status.stderr
    pairs = plain_lines(status.stdout)
    assert pairs["store"] == url  # the URL, not the object's repr
    assert pairs["forced"] == "Emergency" and pairs["forced_by"] == "cli" and pairs["expires_in"] == "none"
    assert pairs["reports"] == "none"
    doc = json.loads(cli("--state-url", url, "status", "--json").stdout)  # the same, as JSON
    assert doc["store"] == url and doc["forced"] == "Emergency" and doc["reports"] == []
    cleared = cli("--state-url", url, "clear")
    assert plain_lines(cleared.stdout)["forced"] == "none" and "applied_by" in cleared.stdout
    assert plain_lines(cli("--state-url", url, "status").stdout)["forced"] == "none"


def test_status_never_shows_a_store_password(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="pw-secret").start()
    url = server.url + ("&" if "?" in server.url else "?") + "namespace=shop"
    try:
        done = cli("--state-url", url, "status")
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    shown = plain_lines(done.stdout)["store"]
    assert "pw-secret" not in done.stdout and shown.startswith("redis://***@") and "namespace=shop" in shown


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real gunicorn worker serving tests/apps/plain_wsgi.py (one upstream, a SQLite
    store, the admin endpoint); yields its base URL and the store URL."""
    upstream = NodeServer("up").start()
    port, state_url = free_port(), f"sqlite://{tmp_path}/state.db"
    env = {**os.environ, "PLAIN_NODES": upstream.url, "PLAIN_STATE_URL": state_url, "PLAIN_TOKEN": "s3cret-token",
           "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}",
         "tests.apps.plain_wsgi:application"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _answers(base + "/"), 30), "gunicorn did not answer"
        yield base, state_url
    finally:
        stop_process(proc)
        upstream.stop()


def _answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def test_force_status_clear_through_a_workers_admin_endpoint_agree_with_its_answers(worker: tuple[str, str]) -> None:
    base, state_url = worker
    url, token = base + "/resilience/level", {"RESILIENCE_ADMIN_TOKEN": "s3cret-token"}
    worker_pid = json.load(urllib.request.urlopen(base + "/modules", timeout=5))["pid"]
    forced = cli("--url", url, "force", "level3", "--ttl", "600", env=token)
    assert forced.returncode == 0, forced.stderr
    pairs = plain_lines(forced.stdout)
    # the PUT's own answer: the worker that took it, by when every worker has it
    assert pairs["scope"] == "host" and pairs["pid"] == str(worker_pid) and pairs["ttl"] == "600.0"
    assert datetime.fromisoformat(pairs["applied_by"]).timestamp() > time.time() - 5
    assert "cause.forced" in pairs  # nested answers as dotted keys
    through_store = plain_lines(cli("--state-url", state_url, "status").stdout)
    assert through_store["forced"] == "Level3" and through_store["store"] == state_url
    assert wait_for(lambda: plain_lines(cli("--url", url, "status", env=token).stdout)["level"] == "Level3", 5)
    status = plain_lines(cli("--url", url, "status", env=token).stdout)
    assert status["scope"] == "host" and status["forced"] == "Level3"
    nodes = cli("--url", url, "nodes", env=token)
    assert nodes.returncode == 0 and re.search(r"^  - id: n0, endpoint: http://127\.0\.0\.1:\d+", nodes.stdout, re.M)
    plain_lines(nodes.stdout)
    as_json = json.loads(cli("--url", url, "status", "--json", env=token).stdout)
    assert as_json["forced"] == "Level3" and isinstance(as_json["cause"], dict)  # JSON keeps its shape
    cleared = cli("--url", url, "clear", env=token)
    assert cleared.returncode == 0 and plain_lines(cleared.stdout)["pid"] == str(worker_pid)
    assert wait_for(lambda: plain_lines(cli("--url", url, "status", env=token).stdout)["level"] == "Normal", 5)
