"""Many workers, one state: a real gunicorn with 4 workers sharing a SQLite file or a real
redis-server. Every request opens a new connection, so the kernel spreads them over the
workers; a worker is identified by the pid it answers with."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.apps.state_app import TOKEN
from tests.helpers import stop_process
from tests.nodes import NodeServer, free_port
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"
WORKERS = 4

pytestmark = pytest.mark.slow


class Gunicorn:
    """``app`` under a real gunicorn, once each of its ``workers`` answered ``/whoami``
    (a JSON object with its ``pid``)."""

    def __init__(self, env: dict[str, str], workers: int = WORKERS, args: tuple[str, ...] = (),
                 app: str = "tests.apps.state_app:create_app()") -> None:
        self.port = free_port()
        self.workers = workers
        self.proc = subprocess.Popen(
            [str(GUNICORN), "-w", str(workers), "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "3", *args,
             app],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning", **env},
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}"
        # (a busy machine boots workers slowly; a worker that never answers says why below)
        self.pids = self.wait_for(lambda seen: len(seen) == workers, timeout=60)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, headers={"Connection": "close"}, timeout=5, **kw)

    def admin(self, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        r = requests.request(method, self.url + "/resilience/level", json=body, timeout=5,
                             headers={"Authorization": f"Bearer {TOKEN}", "Connection": "close"})
        assert r.status_code == 200, r.text
        doc: dict[str, Any] = r.json()
        return doc

    def wait_for(self, done: Callable[[dict[int, dict[str, Any]]], bool], timeout: float) -> dict[int, dict[str, Any]]:
        """Ask /whoami until ``done(latest answer per pid)``; the answers."""
        seen: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                body = self.get("/whoami").json()
            except requests.RequestException:
                time.sleep(0.05)
                continue
            seen[body["pid"]] = body
            if done(seen):
                return seen
        raise AssertionError(f"not within {timeout} s: {seen}; gunicorn said: {''.join(self.lines[-30:])}")

    def stop(self) -> None:
        stop_process(self.proc, timeout=15)


@contextmanager
def gunicorn(**env: str) -> Iterator[Gunicorn]:
    g = Gunicorn(env)
    try:
        yield g
    finally:
        g.stop()


def all_at(level: str) -> Callable[[dict[int, dict[str, Any]]], bool]:
    return lambda seen: len(seen) == WORKERS and all(b["level"] == level for b in seen.values())


def test_a_forced_level_reaches_all_four_workers_and_delete_clears_them(state_url: str) -> None:
    with gunicorn(STATE_URL=state_url) as g:
        answer = g.admin("PUT", {"level": "Level3"})
        assert answer["scope"] in ("host", "fleet") and answer["pid"] in g.pids and answer["applied_by"]
        t0 = time.monotonic()
        g.wait_for(all_at("Level3"), timeout=2)
        took = time.monotonic() - t0
        g.admin("DELETE")
        g.wait_for(all_at("Normal"), timeout=2)
    assert took < 2


@pytest.mark.parametrize("instances", [1, 2], ids=["sqlite-4-workers", "redis-2x4-workers"])
def test_one_checker_per_store_not_one_per_worker(instances: int, tmp_path: Path) -> None:
    upstream = NodeServer("up").start()
    server = RedisServer(tmp_path).start() if instances == 2 else None
    url = server.url if server else f"sqlite://{tmp_path}/state.db"
    interval = 0.5
    try:
        env = {"STATE_URL": url, "NODES": f"up={upstream.url}", "HEALTH_INTERVAL": str(interval)}
        with contextlib.ExitStack() as stack:
            for _ in range(instances):
                assert stack.enter_context(gunicorn(**env)).pids
            time.sleep(1.5)  # the lease is settled
            before = upstream.hits("/health", exclude_health=False)
            time.sleep(4)
            checks = upstream.hits("/health", exclude_health=False) - before
    finally:
        if server:
            server.stop()
        upstream.stop()
    # one checker: 4 s / 0.5 s = 8 checks (jitter makes it a few fewer); one per worker: 32 or 64
    assert 5 <= checks <= 10, checks


def test_a_node_one_worker_finds_dead_is_avoided_by_the_others(state_url: str) -> None:
    a, b = NodeServer("a").start(), NodeServer("b").start()
    try:
        with gunicorn(STATE_URL=state_url, NODES=f"a={a.url},b={b.url}", EJECT_QUORUM="1") as g:
            g.wait_for(lambda seen: len(seen) == WORKERS and all(s["healthy"]["a"] for s in seen.values()), 5)
            a.stop()
            assert g.get("/call").json()["status"] == 200  # one worker fails over, ejects a
            t0 = time.monotonic()
            g.wait_for(lambda seen: len(seen) == WORKERS and not any(s["healthy"]["a"] for s in seen.values()), 2)
            assert time.monotonic() - t0 < 2
    finally:
        a.stop()
        b.stop()


def test_both_upstreams_dead_are_down_in_every_worker_and_up_again(state_url: str) -> None:
    """Four workers, the default ejection cap (half the nodes), both upstreams killed:
    the lease holder's checks take both down, and so does every other worker within two
    sync intervals of it, the last node included; both come back everywhere."""
    a, b = NodeServer("a").start(), NodeServer("b").start()
    interval = 0.5
    env = {"STATE_URL": state_url, "NODES": f"a={a.url},b={b.url}", "HEALTH_INTERVAL": "0.2",
           "SYNC_INTERVAL": str(interval), "MAX_EJECTION_PERCENT": "50"}
    try:
        with gunicorn(**env) as g:
            g.wait_for(lambda seen: len(seen) == WORKERS and all(all(s["healthy"].values()) for s in seen.values()), 5)
            a.stop()
            b.stop()
            # 3 failed checks 0.2 s apart, then at most two sync intervals
            seen = g.wait_for(lambda seen: len(seen) == WORKERS
                              and not any(any(s["healthy"].values()) for s in seen.values()), 0.6 + 2 * interval + 1)
            assert sum(1 for s in seen.values() if s["leader"]) == 1
            a.start()
            b.start()
            g.wait_for(lambda seen: len(seen) == WORKERS and all(all(s["healthy"].values()) for s in seen.values()), 5)
    finally:
        a.stop()
        b.stop()


def test_redis_killed_mid_load_fails_no_request_and_is_caught_up_with(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    outcomes: dict[str, int] = {"ok": 0, "failed": 0}
    stop = threading.Event()

    def load(g: Gunicorn) -> None:
        deadline = time.monotonic() + 20  # bounded whatever happens
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                ok = g.get("/whoami").status_code == 200
            except requests.RequestException:
                ok = False
            outcomes["ok" if ok else "failed"] += 1

    try:
        with gunicorn(STATE_URL=server.url, SYNC_INTERVAL="0.5") as g:
            clients = [threading.Thread(target=load, args=(g,)) for _ in range(4)]
            for c in clients:
                c.start()
            time.sleep(1)
            server.kill()
            time.sleep(1.5)  # several syncs fail in every worker
            ready = g.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"]["state:store"][0]["status"] == "warn"
            time.sleep(1.5)
            server.start()
            back = time.monotonic()
            from resilience_mw.fleet.stores import open_store

            # the workers keep their keys under their service's name (the Flask app's import name)
            open_store(server.url + "?namespace=state_app").set_override("Level2", None, "test")  # after the restart
            g.wait_for(all_at("Level2"), timeout=3)
            resynced = time.monotonic() - back
            stop.set()
            for c in clients:
                c.join()
            warnings = [line for line in g.lines if re.match(r"LOG \d+ WARNING resilience_mw.fleet.sync .*did not answer", line)]
    finally:
        stop.set()
        server.stop()
    assert outcomes["failed"] == 0 and outcomes["ok"] > 50, outcomes
    assert len(warnings) == WORKERS, warnings  # one line per worker for the whole outage
    assert resynced < 3
