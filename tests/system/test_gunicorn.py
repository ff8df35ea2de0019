"""A real gunicorn with --preload and 2 workers: each worker runs its own sampler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.nodes import free_port

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"

pytestmark = pytest.mark.skipif(not GUNICORN.exists(), reason="gunicorn is not installed in this venv")


@pytest.mark.parametrize(
    "factory", ["tests.apps.flask_app:preload_app()", "tests.apps.flask_app:create_app()"]
)
def test_preload_two_workers_each_sample(factory: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            str(GUNICORN),
            "--preload",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "5",
            factory,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"},
    )
    try:
        pids: dict[int, dict[str, object]] = {}
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:
            try:
                body = requests.get(f"http://127.0.0.1:{port}/whoami", timeout=2).json()
            except requests.RequestException:
                time.sleep(0.1)
                continue
            pids[body["pid"]] = body
        assert len(pids) == 2, f"saw workers {list(pids)}"
        assert proc.pid not in pids
        assert all(b["sampler"] is True for b in pids.values()), pids
        assert requests.get(f"http://127.0.0.1:{port}/livez", timeout=2).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail("gunicorn did not exit within 15 s of SIGTERM")
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
