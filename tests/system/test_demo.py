"""The demo as a user runs it: the scenario, the port check, a clean stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import cpu_hog, stop_process

ROOT = Path(__file__).resolve().parents[2]


def test_scenario_exits_zero_when_every_step_matches() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "demo_app", "--scenario"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success from secondary" in out.stdout and "-> Level3 by the ported design's rules" in out.stdout
    assert "Fallback result" in out.stdout and "all 14 checks matched" in out.stdout


def test_port_taken_gives_clear_message() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "demo_app", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 2
    assert f"port {port}" in out.stderr and "already in use" in out.stderr


def test_demo_serves_and_stops_every_process_it_started() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo_app", "--port", str(port), "--no-traffic"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        while len(lines) < 5:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        text = "".join(lines)
        assert f"http://127.0.0.1:{port}/" in text
        node_ports = [int(p) for p in re.findall(r"node \w+ +priority \d+ +http://127.0.0.1:(\d+)", text)]
        assert len(node_ports) == 3
        status = requests.get(f"http://127.0.0.1:{port}/api/status", timeout=5).json()
        assert {n["id"] for n in status["nodes"]} == {"primary", "secondary", "tertiary"}
        assert requests.get(f"http://127.0.0.1:{port}/api/items", timeout=5).json()["node"] == "primary"
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        # controls need the token printed into the page
        assert (
            requests.post(
                f"http://127.0.0.1:{port}/demo/control", json={"action": "clear"}, timeout=5
            ).status_code
            == 401
        )
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    assert proc.returncode == 0
    time.sleep(0.2)
    for p in [port, *node_ports]:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", p)) != 0, f"port {p} still served after the demo stopped"


@pytest.mark.slow
def test_demo_left_alone_stays_at_normal() -> None:
    """Started fresh on this machine (its start is a CPU spike: four processes launch) and
    left alone with its own traffic, the demo stays at Normal the whole time, while other
    programs keep every CPU busy (the demo reads its own CPU, not the host's)."""
    seconds = float(os.environ.get("RESILIENCE_DEMO_SOAK_SECONDS", "180"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo_app", "--port", str(port), "--duration", str(seconds + 60)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for _ in range(20):
            if "demo running at" in proc.stdout.readline():
                break
        levels: list[str] = []
        ends = time.monotonic() + seconds
        with cpu_hog(seconds + 30), requests.Session() as http:
            while time.monotonic() < ends:  # bounded: one status read a second
                status = http.get(f"http://127.0.0.1:{port}/api/status", timeout=5).json()
                levels.append(status["level"])
                time.sleep(1)
        assert levels and set(levels) == {"Normal"}, levels
        assert status["traffic"]["ok"] > 0 and status["traffic"]["failed"] == 0
    finally:
        stop_process(proc, signal.SIGINT, 20)
