"""Signals that measure this service, not its neighbours or its own refusals, and
admission a client cannot turn against it: real gunicorn, real threaded servers on
127.0.0.1, other programs' CPU load from real processes."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from flask import Flask

from resilience_mw import DegradationLevel, Feature, signals
from resilience_mw.admission import cookie_value, user_bucket
from resilience_mw.decorators import criticality, feature, with_fallback
from resilience_mw.degradation.load import SystemSampler
from resilience_mw.exceptions import ConfigWarning
from resilience_mw.flask_ext import Resilience
from resilience_mw.model import Criticality
from resilience_mw.testing import force_level, record_signals
from tests.helpers import cpu_hog, serving, stop_process
from tests.nodes import free_port

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).parent / "gunicorn"


@contextlib.contextmanager
def gunicorn(workers: int, options: dict[str, Any] | None = None, *, cpus: set[int] | None = None,
             cpu_ms: float = 20) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """tests/apps/signals_app.py under a real gunicorn (sync workers); ``options``: the
    extension's keyword options (``None``: pure defaults); ``cpus``: pin it there."""
    port = free_port()
    env = {**os.environ, "SIGNALS_CPU_MS": str(cpu_ms), "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    if options is not None:
        env["SIGNALS_OPTIONS"] = json.dumps(options)
    proc = subprocess.Popen(
        [str(GUNICORN), "-w", str(workers), "-b", f"127.0.0.1:{port}", "--backlog", "512",
         "tests.apps.signals_app:create_app()"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    if cpus is not None:
        os.sched_setaffinity(proc.pid, cpus)  # its workers, forked later, inherit it
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/status", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start within 30 s"
            time.sleep(0.1)
        yield url, proc
    finally:
        stop_process(proc)


# --------------------------------------------------------- whose CPU is read


def test_the_service_cpu_is_its_own_process_tree_not_the_host() -> None:
    """Beside other programs keeping every CPU busy, an idle service reads its own CPU as
    idle (the host reads busy); its own busy thread and its busy child process count."""
    script = """
import os, sys, threading, time
from resilience_mw.degradation.load import SystemSampler
service, host = SystemSampler(), SystemSampler(scope="host")
service.prime(); host.prime()
time.sleep(1.0)
print(service.cpu_percent(), host.cpu_percent(), flush=True)
sys.stdin.readline()  # the hog has stopped
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one CPU: the service's whole share
service = SystemSampler()
service.prime()
start = time.monotonic()
child = os.fork()
if child == 0:  # a child of the service: part of its tree
    while time.monotonic() < start + 0.6:
        pass
    time.sleep(0.3)  # (alive, idle: still in the tree when read)
    os._exit(0)
time.sleep(0.8)
reading = service.cpu_percent()
_, _, usage = os.wait4(child, 0)
print(reading, 100 * (usage.ru_utime + usage.ru_stime) / (time.monotonic() - start), flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        with cpu_hog(10):
            idle, busy_host = map(float, proc.stdout.readline().split())
        proc.stdin.write("\n")
        proc.stdin.flush()
        own, child_used = map(float, proc.stdout.readline().split())
    finally:
        stop_process(proc)
    assert busy_host >= 80, busy_host  # the hog worked: the host was busy
    assert idle <= 15, idle  # but not this service
    # its child's CPU is its own, over the one CPU it may use (what the child got of that
    # CPU depends on what else runs there: the kernel's own count is the reference)
    assert 0.8 * child_used - 1 <= own <= 1.2 * child_used + 5, (own, child_used)


def test_sampler_scopes_are_checked_and_named() -> None:
    from resilience_mw import ConfigError

    with pytest.raises(ConfigError, match="scope"):
        SystemSampler(scope="machine")
    assert SystemSampler(cpu="auto").scope == "container"  # the old name still works
    assert SystemSampler().cpu_source.startswith(f"service (pid {os.getpid()}")


@pytest.mark.slow
def test_an_idle_service_beside_a_cpu_hog_sheds_nothing_and_stays_ready() -> None:
    """gunicorn -w 2 with pure defaults, other programs keeping every CPU busy for 60 s:
    every request served, /readyz passing the whole time."""
    seconds = float(os.environ.get("RESILIENCE_HOG_SECONDS", "60"))
    with gunicorn(2) as (url, proc), cpu_hog(seconds + 30):
        psutil.cpu_percent(interval=None)
        statuses: Counter[int] = Counter()
        ready: Counter[str] = Counter()
        ends = time.monotonic() + seconds
        with requests.Session() as http:
            while time.monotonic() < ends:  # bounded: two requests every half second
                statuses[http.get(f"{url}/idle", timeout=10).status_code] += 1
                r = http.get(f"{url}/readyz", timeout=10)
                ready[f"{r.status_code} {r.json()['status']}"] += 1
                time.sleep(0.5)
            figures = http.get(f"{url}/status", timeout=10).json()
        host = psutil.cpu_percent(interval=None)
    assert host >= 80, host  # the neighbours really kept the host busy
    assert statuses == {200: statuses[200]} and statuses[200] >= seconds, statuses
    assert ready == {"200 pass": ready["200 pass"]}, ready
    assert figures["level"] == "Normal" and figures["load_level"] == "Normal"
    assert f"pid {proc.pid} " in figures["cpu_source"]  # the gunicorn master and its workers


def _stamped_get(port: int, path: str) -> int:
    """One GET stamped with X-Request-Start just before it is sent, as a proxy in front
    stamps it (a raw socket: the client's own work must not pass for the server's queue);
    its status, 0 on a timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                     f"X-Request-Start: t={time.time():.6f}\r\n\r\n".encode())
        head = b""
        try:
            while b"\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
        except OSError:
            return 0
    return int(head.split(None, 2)[1]) if head.startswith(b"HTTP/") else 0


@pytest.mark.slow
def test_a_service_saturated_by_its_own_traffic_gates_features_and_sheds_only_when_requests_wait() -> None:
    """One sync worker pinned to one CPU, clients stamping X-Request-Start as a proxy
    does: at full CPU with a short queue it gates Analytics and sheds nothing; once
    requests queue for long, it sheds those that waited too long and serves the rest."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.fail("this test needs two CPUs: one for the server, one for its clients")
    # (behind a proxy that stamps the request: its stamp is believed)
    options = {"sample_interval": 0.25, "trusted_proxies": 1,
               "degradation": {"startup_grace_seconds": 0.5, "cooldown_seconds": 2}}
    with gunicorn(1, options, cpus={cpus[0]}, cpu_ms=8) as (url, _):
        port = int(url.rsplit(":", 1)[1])

        def load(clients: int, seconds: float) -> tuple[Counter[int], list[dict[str, Any]], Counter[int]]:
            statuses: Counter[int] = Counter()
            analytics: Counter[int] = Counter()
            seen: list[dict[str, Any]] = []
            ends = time.monotonic() + seconds

            def client() -> None:
                os.sched_setaffinity(0, set(cpus[1:]))  # this thread only: off the server's CPU
                while time.monotonic() < ends:
                    statuses[_stamped_get(port, "/work")] += 1

            threads = [threading.Thread(target=client) for _ in range(clients)]
            for t in threads:
                t.start()
            while time.monotonic() < ends - 0.5:  # (read while the load is on)
                time.sleep(0.5)
                seen.append(requests.get(f"{url}/status", timeout=10).json())
                analytics[_stamped_get(port, "/analytics")] += 1
            for t in threads:
                t.join(15)
            return statuses, seen, analytics

        statuses, seen, analytics = load(clients=2, seconds=5)
        # its CPU is full: features are gated by the level ...
        assert max(DegradationLevel[f["level"]] for f in seen) >= DegradationLevel.Level1, seen
        assert any(f["cause"]["resources"] != "Normal" for f in seen), seen
        assert analytics[503] > 0, analytics
        # ... but requests barely wait: nothing is shed
        assert statuses[503] == 0 and statuses[200] > 0, statuses
        statuses, seen, _ = load(clients=16, seconds=5)
        # fifteen requests ahead of each: they wait, and those that waited too long are shed
        assert statuses[503] > 0 and statuses[200] > 0, statuses
        assert any(f["load_level"] != "Normal" and f["cause"]["queue"] != "Normal" for f in seen), seen


# ------------------------------------------------ the library's own refusals


def test_a_force_and_clear_drill_returns_to_normal_at_once() -> None:
    """Force Level1, 20 requests to a gated view (503 by the library), clear: Normal
    within one sampling interval, and an error rate of 0."""
    app = Flask("drill")
    Resilience(app, sample_interval=0.2, start="eager", degradation={"min_requests": 5})

    @app.get("/recommendations")
    @feature(Feature.NonEssential)
    def recommendations() -> str:
        return "for you"

    state = Resilience.state(app)
    try:
        with serving(app) as url, requests.Session() as http:
            force_level(app, "Level1")
            assert [http.get(f"{url}/recommendations", timeout=5).status_code for _ in range(20)] == [503] * 20
            force_level(app, None)
            state.degradation.evaluate()  # the next sample: the drill's 503s counted nothing
            figures = state.degradation.figures()
            assert state.degradation.level is DegradationLevel.Normal, figures
            assert figures["error_rate"] == 0 and state.degradation.window.counts() == (0, 0)
            assert http.get(f"{url}/recommendations", timeout=5).text == "for you"
    finally:
        state.stop()


# ------------------------------------------------ leaving an overload


def test_shedding_eases_as_soon_as_the_overload_ends(clock: Any) -> None:
    """The queue called for Emergency and then stopped: during the cooldown a request
    that barely waited is served at once, unstamped traffic comes back a growing share
    at a time, and Retry-After never exceeds what the level can still last."""
    from resilience_mw import AutoDegradationManager, DegradationConfig, ResilienceMiddleware
    from resilience_mw.degradation.load import Sample

    m = AutoDegradationManager(
        DegradationConfig(sustain_samples=1, sustain_window=1, startup_grace_seconds=0, cooldown_seconds=30,
                          recovery_seconds=4),
        sampler=lambda: Sample(cpu=1.0, memory=1.0), clock=clock,
    )
    app = ResilienceMiddleware(lambda e, s: (s("200 OK", []), [b"ok"])[1], m, queue_signal=True)

    def get(waited: float | None = None) -> tuple[int, int | None]:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "wsgi.input": None}
        if waited is not None:
            environ["HTTP_X_REQUEST_START"] = f"t={time.time() - waited:.6f}"
        seen: list[Any] = []
        app(environ, lambda status, headers, exc_info=None: seen.append((status, dict(headers))))
        status, headers = seen[0]
        return int(status[:3]), int(headers["Retry-After"]) if "Retry-After" in headers else None

    for _ in range(30):
        m.observe_queue_time(0.4)
    m.evaluate()
    assert m.load_level is DegradationLevel.Emergency and m.easing() == 1.0
    assert get()[0] == 503 and get(0.5)[0] == 503  # a signal calls for it: shed
    assert get(0.001)[0] == 200  # but a request that did not wait is served
    clock.advance(1)
    m.evaluate()  # (the stamped requests above)
    clock.advance(1)
    m.evaluate()  # no queued request any more: held up by the cooldown alone
    assert m.load_level is DegradationLevel.Emergency and m.cooling_since is not None
    served = []
    retry_afters = []
    for _ in range(5):
        results = [get() for _ in range(400)]
        served.append(sum(s == 200 for s, _ in results) / len(results))
        retry_afters += [r for s, r in results if s == 503]
        clock.advance(1)
    assert served[0] < 0.1 and 0.15 < served[1] < 0.4 and 0.6 < served[3] < 0.9 and served[4] == 1, served
    assert get(0.05)[0] == 200  # within its tolerance: served during the cooldown
    # no longer behind on its queue: a stray request that waited long is served too
    assert not m.queue_behind and get(0.5)[0] == 200
    assert retry_afters and max(retry_afters) <= 30 and len(set(retry_afters)) >= 5, sorted(set(retry_afters))
    assert all(r >= 1 for r in retry_afters)


def test_behind_on_its_queue_while_it_still_refuses_a_share_of_its_requests(clock: Any) -> None:
    """Behind from a median wait at queue_threshold_l1; still behind while a twentieth or
    more of the stamped requests are refused for waiting too long (a load that persists,
    held short by the refusals); not behind once refusals are the odd burst."""
    from resilience_mw import AutoDegradationManager
    from resilience_mw.degradation.load import Sample

    m = AutoDegradationManager(sampler=lambda: Sample(cpu=1.0, memory=1.0), clock=clock)

    def interval(wait: float, refused: int) -> bool:
        for _ in range(100):
            m.observe_queue_time(wait)
        for _ in range(refused):
            m.refused_for_waiting()
        clock.advance(1)
        m.evaluate()
        return m.queue_behind

    assert not interval(0.005, 3)  # a few refusals in a burst: not behind
    assert interval(0.03, 0)  # the median reached 20 ms
    assert interval(0.005, 10)  # held short by refusing a tenth: still behind
    assert not interval(0.005, 2)  # served within tolerance again
    assert not interval(0.005, 10)  # (refusals alone do not make it behind)


# ------------------------------------------ admission a client cannot turn


def test_the_concurrency_probe_refuses_no_critical_request_on_a_service_that_keeps_up() -> None:
    """12 clients on an idle 40 ms view, through warm-up and the first no-load probe:
    not one refusal."""
    app = Flask("probe")
    Resilience(app, start="off", concurrency_limit=True, concurrency_min_limit=2)

    @app.get("/slow")
    def slow() -> str:
        time.sleep(0.04)
        return "ok"

    limit = Resilience.state(app).middleware.admission.limit
    assert limit is not None and limit.min_limit == 2
    statuses: Counter[int] = Counter()
    with serving(app) as url:

        def client() -> None:
            with requests.Session() as http:
                for _ in range(15):
                    statuses[http.get(f"{url}/slow", timeout=10).status_code] += 1

        threads = [threading.Thread(target=client) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert limit.min_rtt is not None and limit.min_rtt >= 0.04  # the probe ran, and measured
    assert statuses == {200: 180}, statuses


def test_the_concurrency_limit_floor_and_ceiling_are_settings() -> None:
    from resilience_mw import ConfigError

    app = Flask("floor")
    app.config.update(RESILIENCE_CONCURRENCY_LIMIT=True, RESILIENCE_CONCURRENCY_MIN_LIMIT=8,
                      RESILIENCE_CONCURRENCY_MAX_LIMIT=64)
    limit = Resilience(app, start="off").state(app).middleware.admission.limit
    assert limit is not None and (limit.min_limit, limit.max_limit) == (8, 64)
    bad = Flask("bad")
    bad.config.update(RESILIENCE_CONCURRENCY_MIN_LIMIT=8, RESILIENCE_CONCURRENCY_MAX_LIMIT=4)
    with pytest.raises(ConfigError, match="RESILIENCE_CONCURRENCY_MAX_LIMIT"):
        Resilience(bad)


def _feed_app(**options: Any) -> Flask:
    app = Flask("feed")
    Resilience(app, start="off", criticality_shedding=True, shed_level=None, **options)

    @app.get("/feed")
    @criticality("sheddable")
    def feed() -> str:
        return "items"

    return app


def test_users_behind_a_trusted_proxy_are_shed_by_their_own_address() -> None:
    """200 users behind one proxy address, at Level1 (half of the sheddable users shed):
    with trusted_proxies=1 about half of the users are shed, each always the same way."""
    app = _feed_app(trusted_proxies=1)
    force_level(app, "Level1")
    outcome: dict[str, set[int]] = {}
    with serving(app) as url, requests.Session() as http:
        for i in range(200):
            client = f"198.51.{i // 250}.{i % 250 + 1}"
            for _ in range(3):  # the proxy appends the address it got the request from
                r = http.get(f"{url}/feed", headers={"X-Forwarded-For": f"203.0.113.9, {client}"}, timeout=5)
                outcome.setdefault(client, set()).add(r.status_code)
    assert all(len(s) == 1 for s in outcome.values())  # a user is served or shed, every time
    shed = sum(s == {503} for s in outcome.values()) / len(outcome)
    assert 0.4 <= shed <= 0.6, shed


def test_without_a_way_to_tell_users_apart_each_request_is_drawn_with_a_warning() -> None:
    with pytest.warns(ConfigWarning, match="RESILIENCE_TRUSTED_PROXIES"):
        app = _feed_app()
    force_level(app, "Level1")
    with serving(app) as url, requests.Session() as http:
        statuses = Counter(http.get(f"{url}/feed", timeout=5).status_code for _ in range(400))
    assert 0.3 <= statuses[503] / 400 <= 0.7, statuses  # never all-or-nothing


def test_a_hostile_cookie_header_costs_little_and_a_malformed_cookie_spoils_nothing() -> None:
    header = "; ".join(f'c{i}="{"x" * 20}' for i in range(600)) + '; bad\\cookie="; session=alice'
    assert len(header) > 16 * 1024
    costs = []
    for _ in range(5):
        t0 = time.thread_time()
        found = cookie_value(header, "session")
        costs.append(time.thread_time() - t0)
    assert found == "alice"
    assert min(costs) < 0.005, costs  # SimpleCookie took 0.45 s for this on an unpatched CPython
    app = _feed_app(user_key="session")
    force_level(app, "Level1")
    with serving(app) as url:
        r = requests.get(f"{url}/feed", headers={"Cookie": header}, timeout=5)
    assert r.status_code == (503 if user_bucket("alice") < 0.5 else 200)


def test_a_secret_keys_the_user_buckets() -> None:
    users = [f"user-{i}" for i in range(100)]
    plain = [user_bucket(u) < 0.5 for u in users]
    keyed = [user_bucket(u, b"k" * 32) < 0.5 for u in users]
    assert plain != keyed and 30 < sum(keyed) < 70
    app = _feed_app(user_key="X-User", user_key_secret="s3cret-of-this-deployment")
    middleware = Resilience.state(app).middleware
    assert "s3cret" not in repr(middleware.config) and "s3cret" not in repr(Resilience.state(app).settings)


# ------------------------------------------------ fallbacks never hide a bug


def test_a_bug_behind_a_fallback_is_logged_at_error_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    app = Flask("bug")
    Resilience(app, start="off", metrics=["prometheus"])

    @app.get("/search")
    @with_fallback(lambda: "cached results")
    def search() -> str:
        return str(undefined_name)  # type: ignore[name-defined]  # noqa: F821 - the bug under test

    with serving(app) as url, record_signals(signals.fallback_served) as seen, caplog.at_level(logging.WARNING):
        assert requests.get(f"{url}/search", timeout=5).text == "cached results"  # still served
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == "resilience_mw.degradation.fallback"]
    message = errors[0].getMessage()
    assert len(errors) == 1 and "search" in message and "NameError" in message
    assert "Traceback (most recent call last)" in message and "return str(undefined_name)" in message
    assert [e["reason"] for e in seen.named("fallback-served")] == ["programming_error"]


def test_an_outage_behind_a_fallback_stays_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    app = Flask("outage")
    Resilience(app, start="off")

    @app.get("/search")
    @with_fallback(lambda: "cached results")
    def search() -> str:
        raise requests.ConnectionError("upstream down")

    with serving(app) as url, caplog.at_level(logging.WARNING):
        assert requests.get(f"{url}/search", timeout=5).text == "cached results"
    records = [r for r in caplog.records if r.name == "resilience_mw.degradation.fallback"]
    assert [r.levelno for r in records] == [logging.WARNING] and records[0].exc_info is None


def test_easing_never_stops_what_the_signals_still_call_for(clock: Any) -> None:
    """Load level Emergency, then the queue calls for Level2 only: the cooldown holds
    Emergency, its extra share eases off, Level2's share stays shed in full."""
    from resilience_mw.sampling import Sample

    from resilience_mw import AutoDegradationManager, DegradationConfig, DegradationLevel
    from resilience_mw.admission.gate import Admission
    from resilience_mw.config import MiddlewareConfig

    m = AutoDegradationManager(
        DegradationConfig(sustain_samples=1, sustain_window=1, startup_grace_seconds=0, cooldown_seconds=30,
                          recovery_seconds=4),
        sampler=lambda: Sample(cpu=1.0, memory=1.0), clock=clock,
    )
    sender = type("Middleware", (), {})()  # (what the signals name: held weakly)
    gate = Admission(MiddlewareConfig(criticality_shedding=True, trusted_proxies=0, shed_level="Level3"), m, sender)

    def sheds(level_wait: float, user: str) -> bool:
        environ = {"PATH_INFO": "/feed", "REMOTE_ADDR": user, "resilience.criticality": Criticality.SHEDDABLE_PLUS}
        return gate._by_wait_or_class(environ, "/feed", None) is not None

    def interval(wait: float) -> None:
        for _ in range(20):
            m.observe_queue_time(wait)
        clock.advance(1)
        m.evaluate()

    interval(0.3)  # Emergency
    assert m.load_level is DegradationLevel.Emergency
    users = [f"10.0.{i // 250}.{i % 250}" for i in range(400)]
    full = sum(sheds(0, u) for u in users) / len(users)
    for _ in range(6):
        interval(0.06)  # the queue calls for Level2 only (sheddable_plus: half of its users)
    assert m.load_level is DegradationLevel.Emergency and m.load_target is DegradationLevel.Level2
    eased = sum(sheds(0, u) for u in users) / len(users)
    assert full == 1.0 and 0.4 < eased < 0.6, (full, eased)  # Level2's share, not none
    # the level's gate: from Emergency down to a queue that calls for Level3 (shed_level),
    # the cooldown holds Emergency and easing runs out, but Level3 itself still sheds
    interval(0.3)
    for _ in range(6):
        interval(0.15)
    assert m.load_level is DegradationLevel.Emergency and m.load_target is DegradationLevel.Level3
    assert m.easing() == 0.0 and gate.level_sheds({"PATH_INFO": "/x", "REMOTE_ADDR": "10.9.9.9"})


def test_a_client_cannot_forge_its_wait_unless_a_trusted_proxy_stamps() -> None:
    """With no trusted proxy declared, a client's own X-Request-Start (30 s old, once a
    second) moves nothing; behind a declared proxy the stamp is the queue's signal."""
    from resilience_mw.sampling import Sample

    def app_for(**options: Any) -> Flask:
        app = Flask("forged")
        Resilience(app, start="off", sampler=lambda: Sample(cpu=1.0, memory=1.0),
                   degradation={"startup_grace_seconds": 0, "sustain_samples": 1, "sustain_window": 1}, **options)
        app.add_url_rule("/x", "x", lambda: "ok")
        return app

    for options, moved in (({}, False), ({"trusted_proxies": 1}, True)):
        app = app_for(**options)
        client, manager = app.test_client(), Resilience.state(app).degradation
        for _ in range(3):
            forged = client.get("/x", headers={"X-Request-Start": f"t={time.time() - 30:.3f}"})
            for _ in range(10):
                client.get("/x")
            manager.evaluate()
        assert (manager.load_level is DegradationLevel.Emergency) is moved, options
        assert (forged.status_code == 503) is moved


def test_the_service_is_the_pre_fork_master_and_its_workers(tmp_path: Path) -> None:
    """A worker whose parent runs a program named gunicorn counts the parent's whole
    tree (PID 1 in a container too); any other parent is not part of the service."""
    import shutil

    for name, is_master in (("gunicorn", True), ("gunicornish-tool", False), ("uwsgi", True)):
        program = tmp_path / name
        shutil.copy(sys.executable, program)  # a program of that name (a copy of Python)
        code = ("import os, subprocess, sys; c = subprocess.run([sys.argv[1], '-c', "
                "'from resilience_mw.sampling import service_root; import os; print(service_root().pid, os.getppid())'], "
                "capture_output=True, text=True); print(c.stdout.strip(), os.getpid())")
        out = subprocess.run([str(program), "-c", code, sys.executable], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        root, parent, master = map(int, out.stdout.split())
        assert parent == master and (root == master) is is_master, (name, out.stdout, out.stderr)
