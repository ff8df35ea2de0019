"""The fleet under the faults a real one meets (issue 23): a store that does not take a
forced level, reports of nodes a worker does not have, garbage in the store, two services
on one Redis, a SQLite file deleted under the workers, both upstreams dead. Real parts
only: SQLite files (locked by a real second process), a real redis-server, the real CLI,
real HTTP nodes; several workers are several syncs in this process with names of their
own, or several Runtimes."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from resilience_mw import (
    AutoDegradationManager,
    DegradationLevel,
    FailoverManager,
    ServiceNode,
    readiness_document,
)
from resilience_mw.config import StateConfig
from resilience_mw.degradation.load import Sample
from resilience_mw.failover.budget import RetryBudget
from resilience_mw.failover.health import HealthChecker
from resilience_mw.fleet.store import StoreDataError, StoreError
from resilience_mw.fleet.stores import open_store
from resilience_mw.fleet.sync import StateSync
from resilience_mw.runtime import Runtime
from tests.helpers import serving, wait_for
from tests.nodes import NodeServer
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "fleet-faults-token"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resilience_mw", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})


@contextlib.contextmanager
def sqlite_locked(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process holds the SQLite file's write lock (``BEGIN EXCLUSIVE``) for
    ``seconds``: every write of the workers times out meanwhile."""
    script = (
        "import sqlite3, sys, time\n"
        f"db = sqlite3.connect({str(path)!r}, isolation_level=None, timeout=5)\n"
        "db.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        f"time.sleep({seconds})\n"
        "db.execute('COMMIT')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.wait(seconds + 10)


def plain_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app"]


def quiet() -> Sample:
    return Sample(cpu=1.0, memory=1.0)


# ---------------------------------------------------------------- item 1


def test_a_level_forced_while_the_sqlite_file_is_locked_ends_and_a_cli_clear_reaches_every_worker(
    tmp_path: Path,
) -> None:
    """PUT {"level": "Emergency", "ttl": 2} while another process holds the file's lock:
    the worker that was asked forces it alone (scope process) for 2 s, then every worker
    is at Normal; a force with a long ttl made during a second lock reaches every worker
    once the store answers, and a clear by the CLI (another process) reaches them all."""
    url = f"sqlite://{tmp_path}/state.db"
    runtimes = [
        Runtime(state_url=url, state_sync_interval=0.2, admin_token=TOKEN, start="eager", check_interval=0.1,
                sampler=quiet, health_check=False)
        for _ in range(2)
    ]
    a = runtimes[0]
    apps = [r.wrap(plain_app) for r in runtimes]
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def levels() -> list[str]:
        return [r.degradation.current_level().name for r in runtimes]

    try:
        with serving(apps[0]) as base:
            assert wait_for(lambda: all(r.sync is not None and r.sync.status()["last_sync_age"] is not None
                                        for r in runtimes), 5)
            with sqlite_locked(tmp_path / "state.db", 2.5):
                put = requests.put(f"{base}/resilience/level", json={"level": "Emergency", "ttl": 2}, headers=headers,
                                   timeout=10)
                t0 = time.monotonic()
                assert put.status_code == 200 and put.json()["scope"] == "process" and "warning" in put.json()
                assert levels() == ["Emergency", "Normal"]
                assert a.sync is not None
                local = a.sync.status()["local_override"]
                assert local is not None and local["level"] == "Emergency" and 0 < local["remaining"] <= 2
                assert requests.get(f"{base}/x", timeout=5).status_code == 503  # shed, as forced
            assert wait_for(lambda: levels() == ["Normal", "Normal"], 2 + 2 - (time.monotonic() - t0))
            # reconciled once the store answers (its back-off is at most 2 s)
            assert wait_for(lambda: a.sync is not None and a.sync.status()["local_override"] is None, 3)
            assert levels() == ["Normal", "Normal"]

            # a force without an end, while the file is locked: the store takes it later
            with sqlite_locked(tmp_path / "state.db", 1.5):
                put = requests.put(f"{base}/resilience/level", json={"level": "Level3", "ttl": 600}, headers=headers,
                                   timeout=10)
                assert put.json()["scope"] == "process" and levels() == ["Level3", "Normal"]
            assert wait_for(lambda: levels() == ["Level3", "Level3"], 5)  # written to the store, so everywhere
            assert a.sync.status()["local_override"] is None
            done = cli("--state-url", url, "clear")
            assert done.returncode == 0, done.stderr
            assert wait_for(lambda: levels() == ["Normal", "Normal"], 2)
            assert requests.get(f"{base}/x", timeout=5).status_code == 200
    finally:
        for r in runtimes:
            r.stop()


def test_a_worker_starting_while_another_holds_the_sqlite_lock_waits_for_it(tmp_path: Path) -> None:
    """gunicorn restarting a worker (``--max-requests``) while another writes: opening the
    store waits for the lock (up to SETUP_TIMEOUT), it is no configuration error."""
    import sqlite3
    import threading

    path = tmp_path / "state.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another worker, first, still setting the new file up
    holder.execute("CREATE TABLE IF NOT EXISTS setup (x)")
    release = threading.Timer(1.5, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        store = open_store(f"sqlite://{path}", timeout=0.5)  # (each later statement: 0.5 s)
        assert time.monotonic() - started >= 1.0  # it waited for the lock...
        assert store.check() is False  # ...and works on the file it opened
    finally:
        release.join()
        holder.close()


def test_a_change_made_in_the_store_meanwhile_wins_over_a_local_force(redis_server: RedisServer) -> None:
    """A worker forced Level3 alone while Redis was down; meanwhile the CLI forced Level1
    in the store: at the worker's next exchange the store's Level1 replaces its own."""
    url = redis_server.url + "?namespace=t"
    a = StateSync(open_store(url), AutoDegradationManager(), config=StateConfig(url=url), name="a")
    a.exchange()
    redis_server.kill()
    with pytest.raises(StoreError):
        a.force("Level3", ttl=600)
    a.force_locally("Level3", ttl=600)  # what the admin endpoint falls back to
    assert a.degradation.current_level() is DegradationLevel.Level3
    redis_server.start()
    done = cli("--state-url", url, "force", "Level1")
    assert done.returncode == 0, done.stderr
    a.exchange()
    assert a.degradation.current_level() is DegradationLevel.Level1
    assert a.status()["local_override"] is None and a.status()["override"] == "Level1"
    done = cli("--state-url", url, "clear")
    a.exchange()
    assert a.degradation.current_level() is DegradationLevel.Normal


def test_a_forced_level_from_the_store_keeps_its_ttl_in_the_worker_when_the_store_goes(
    redis_server: RedisServer,
) -> None:
    """Level2 forced for 1 s through the store; the store dies right after the worker
    applied it: the worker's level still ends by itself."""
    url = redis_server.url + "?namespace=t"
    clock_start = time.monotonic()
    b = StateSync(open_store(url), AutoDegradationManager(sampler=quiet), config=StateConfig(url=url), name="b")
    open_store(url).set_override("Level2", 1.0, "cli")
    b.exchange()
    assert b.degradation.current_level() is DegradationLevel.Level2
    remaining = b.degradation.forced_remaining()
    assert remaining is not None and 0 < remaining <= 1.0
    redis_server.kill()
    time.sleep(max(0.0, 1.1 - (time.monotonic() - clock_start)))
    b.degradation.evaluate()
    assert b.degradation.current_level() is DegradationLevel.Normal


# ---------------------------------------------------------------- item 3


def test_a_report_of_a_node_this_worker_does_not_have_breaks_nothing(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = [ServiceNode("x", "http://x"), ServiceNode("y", "http://y")]
    syncs = []
    for name in "ab":
        degradation = AutoDegradationManager(sampler=quiet)
        pool = FailoverManager(nodes, failure_threshold=1, max_ejection_percent=100)
        syncs.append(StateSync(open_store(store_url), degradation, pool, name=name,
                               config=StateConfig(url=store_url, error_rate_scope="fleet", eject_quorum=1)))
    a, b = syncs
    # a worker of a deploy that still had node "gone" says it is down
    open_store(store_url).report("gone", "old-worker", "passive", 60)
    for _ in range(30):
        a.degradation.record_request(False)
    for _ in range(70):
        b.degradation.record_request(True)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            for s in syncs:
                s.exchange()
        assert a.pool is not None and b.pool is not None
        a.pool.mark_failure("x")  # node hints still flow
        a.exchange()
        b.exchange()
    for s in syncs:
        s.degradation.evaluate()
        figures = s.degradation.figures()
        assert figures["requests"] == 100 and figures["error_rate"] == pytest.approx(0.3)  # the fleet's counts
        status = s.status()
        assert status["unknown_nodes"]["gone"] >= 3 and status["step_errors"] == {}
    assert not b.pool.is_healthy("x")
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert len([r for r in caplog.records if "'gone'" in r.getMessage()]) == 2  # once per worker, not per tick


# ---------------------------------------------------------------- item 4


def fleet_of_two(url: str, nodes: list[ServiceNode]) -> list[StateSync]:
    syncs = []
    for name in "ab":
        pool = FailoverManager(nodes, failure_threshold=1, max_ejection_percent=100)
        checker = HealthChecker(check_interval=0.1, timeout=0.5, jitter=0)
        budget = RetryBudget(0.2, 3, 10)
        syncs.append(StateSync(open_store(url), AutoDegradationManager(sampler=quiet), pool, checker, name=name,
                               budget=budget, config=StateConfig(url=url, error_rate_scope="fleet",
                                                                 retry_budget_scope="fleet", sync_interval=0.1)))
    return syncs


GARBAGE: list[tuple[str, str, Callable[[Any], object]]] = [
    ("override", "t:override", lambda r: r.set("t:override", "Level3")),
    ("override", "t:override", lambda r: r.set("t:override", '{"level": "Level9", "version": 1}')),
    ("override", "t:override", lambda r: r.hset("t:override", "level", "Level3")),
    ("nodes", "t:reports", lambda r: r.hset("t:reports", "x", "not json, not ours")),
    ("nodes", "t:reports", lambda r: r.set("t:reports", "a string")),
    ("errors", "t:counts", lambda r: r.hset("t:counts", "w", "{bad")),
    ("retries", "t:counts:retries", lambda r: r.hset("t:counts:retries", "w", "1|x|y")),
    ("lease", "t:lease:health", lambda r: r.set("t:lease:health", "someone-forever")),
    ("lease", "t:lease:health", lambda r: (r.delete("t:lease:health"), r.rpush("t:lease:health", "a"))),
    ("identity", "t:services", lambda r: r.set("t:services", "garbage")),
    ("alerts", "t:claim:alert:k", lambda r: r.set("t:claim:alert:k", "1")),
    ("outcomes", "t:outcomes", lambda r: r.set("t:outcomes", "a string")),
]


@pytest.mark.parametrize(("step", "key", "spoil"), GARBAGE, ids=[f"{s}-{i}" for i, (s, _, _) in enumerate(GARBAGE)])
def test_garbage_in_any_key_is_a_named_store_error_and_health_checks_still_run(
    redis_server: RedisServer, step: str, key: str, spoil: Callable[[Any], object],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = redis_server.url + "?namespace=t"
    up = NodeServer("up").start()
    try:
        syncs = fleet_of_two(url, [ServiceNode("x", up.url), ServiceNode("y", up.url + "/y")])
        for s in syncs:
            s.exchange()
        spoil(redis.Redis.from_url(redis_server.url))
        fired: list[str] = []
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                for s in syncs:
                    s.once("k", 60, lambda s=s: fired.append(s.me))
                    s.exchange()
        for s in syncs:
            status = s.status()
            assert status["status"] == "warn" and step in status["step_errors"], status
            assert key in status["step_errors"][step] and key in status["reason"]
            assert status["data_errors"] >= 1
            assert set(status["step_errors"]) == {step}  # every other step went on
            doc, code = readiness_document(s.degradation, s.pool, DegradationLevel.Emergency, state=status)
            assert code == 200 and doc["status"] == "warn" and key in doc["checks"]["state:store"][0]["output"]
            assert key in doc["output"]
        # health checks still run somewhere: the checker's probes reach the node
        before = up.hits("/health", exclude_health=False)
        assert wait_for(lambda: up.hits("/health", exclude_health=False) > before + 2, 3)
        assert any(s.checker is not None and s.checker.running for s in syncs)
        if step == "alerts":
            assert fired, "an alert whose claim cannot be read is raised anyway"
        assert not [r for r in caplog.records if r.exc_info]
        # one log line per failing step and worker, not one per tick
        assert len([r for r in caplog.records if key in r.getMessage()]) == 2
    finally:
        for s in syncs:
            s.stop()
        up.stop()


def test_a_sqlite_override_that_does_not_decode_is_a_named_store_error(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite://{tmp_path}/state.db"
    store = open_store(url)
    store.set_override("Level2", None, "cli")
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("UPDATE kv SET value = 'Level3' WHERE key = 'override'")
    db.commit()
    with pytest.raises(StoreDataError) as info:
        store.override()
    assert info.value.key == "kv:override"
    assert store.set_override("Level1", None, "cli").level == "Level1"  # an operator can still write over it
    override = store.override()
    assert override is not None and override.level == "Level1"


# ---------------------------------------------------------------- item 5


def service(name: str, url: str, nodes: dict[str, str], **options: Any) -> Runtime:
    from flask import Flask

    from resilience_mw.flask_ext import Resilience

    app = Flask(name)
    return Resilience(app, state_url=url, nodes=[{"id": k, "endpoint": v} for k, v in nodes.items()],
                      health_check_interval=0.1, health_check_timeout=0.3, health_check_jitter=0,
                      state_sync_interval=0.1, start="eager", sampler=quiet, alerts=False, **options).state(app)


def test_two_services_on_one_redis_share_nothing_by_default(redis_server: RedisServer) -> None:
    live = NodeServer("live").start()
    dead = NodeServer("dead").start()
    dead.stop()  # refuses connections
    shop = service("shop", redis_server.url, {"primary": dead.url, "backup": live.url})
    search = service("search", redis_server.url, {"primary": live.url, "index": live.url + "/i"})
    try:
        assert shop.pool is not None and search.pool is not None and shop.sync and search.sync
        assert wait_for(lambda: not shop.pool.is_healthy("primary"), 5)  # shop's checker: its primary is dead
        shop.change_level("Level3")
        assert shop.degradation.current_level() is DegradationLevel.Level3
        time.sleep(1.0)  # ten syncs
        assert search.pool.is_healthy("primary")  # not ejected by shop's reports
        assert search.degradation.current_level() is DegradationLevel.Normal  # not shop's override
        assert search.health_checker is not None and search.health_checker.running  # its own lease
        for runtime in (shop, search):
            assert runtime.sync is not None and runtime.sync.status()["status"] == "pass"
        keys = {k.decode().split(":")[0] for k in redis.Redis.from_url(redis_server.url).keys("*")}
        assert keys == {"shop", "search"}
    finally:
        for runtime in (shop, search):
            runtime.stop()
        live.stop()


def test_two_services_told_to_share_a_namespace_are_warned_about_and_not_merged(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    live = NodeServer("live").start()
    dead = NodeServer("dead").start()
    dead.stop()
    with caplog.at_level(logging.WARNING, logger="resilience_mw.fleet.sync"):
        shop = service("shop", redis_server.url, {"primary": dead.url, "backup": live.url},
                       state_namespace="shared")
        search = service("search", redis_server.url, {"primary": live.url, "index": live.url + "/i"},
                         state_namespace="shared")
        try:
            assert shop.sync is not None and search.sync is not None
            assert wait_for(lambda: shop.sync.collision is not None and search.sync.collision is not None, 3)
            for runtime, other in ((shop, "search"), (search, "shop")):
                assert runtime.sync is not None
                status = runtime.sync.status()
                assert status["status"] == "warn" and f"service {other}" in status["reason"]
                doc, code = runtime.readiness()
                assert code == 200 and doc["status"] == "warn" and f"service {other}" in doc["output"]
            answer = shop.change_level("Level3")  # not merged: this worker only, and it says so
            assert answer["scope"] == "process" and "search" in answer["warning"]
            assert shop.pool is not None and search.pool is not None
            assert wait_for(lambda: not shop.pool.is_healthy("primary"), 5)
            time.sleep(1.0)
            assert search.pool.is_healthy("primary") and search.degradation.current_level().name == "Normal"
            assert search.health_checker is not None and search.health_checker.running  # checks on its own
        finally:
            for runtime in (shop, search):
                runtime.stop()
            live.stop()
    collisions = [r for r in caplog.records if "collision" in r.getMessage()]
    assert {("shop" if "this worker is shop" in r.getMessage() else "search") for r in collisions} == {"shop", "search"}


def test_two_node_sets_of_one_service_are_a_collision(redis_server: RedisServer) -> None:
    url = redis_server.url + "?namespace=t"
    a = StateSync(open_store(url), AutoDegradationManager(), FailoverManager([ServiceNode("x", "http://x")]),
                  config=StateConfig(url=url), name="a", service="shop")
    b = StateSync(open_store(url), AutoDegradationManager(), FailoverManager([ServiceNode("x", "http://x2")]),
                  config=StateConfig(url=url), name="b", service="shop")
    for s in (a, b, a):
        s.exchange()
    for s in (a, b):
        assert s.collision is not None and "another node set" in s.collision and s.status()["status"] == "warn"


# ---------------------------------------------------------------- item 6


def test_a_deleted_sqlite_file_is_noticed_and_the_workers_agree_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite://{tmp_path}/state.db"
    a, b = (StateSync(open_store(url), AutoDegradationManager(), config=StateConfig(url=url, sync_interval=0.1),
                      name=n) for n in "ab")
    a.start()
    b.start()
    try:
        a.force("Level1")
        assert wait_for(lambda: b.degradation.current_level() is DegradationLevel.Level1, 2)
        with caplog.at_level(logging.WARNING):
            for f in tmp_path.glob("state.db*"):
                f.unlink()  # rm state.db*: a /tmp cleaner
            a.force("Level3")
            t0 = time.monotonic()
            assert wait_for(lambda: b.degradation.current_level() is DegradationLevel.Level3, 5)
        assert time.monotonic() - t0 < 5
        status = cli("--state-url", url, "status", "--json")  # a new process sees the same file
        assert '"forced": "Level3"' in status.stdout, status.stdout + status.stderr
        assert a.reopened + b.reopened >= 2 and b.status()["reopened"] >= 1
        assert any("was deleted" in r.getMessage() for r in caplog.records)
        b.clear()
        assert wait_for(lambda: a.degradation.current_level() is DegradationLevel.Normal, 2)
    finally:
        a.stop()
        b.stop()


# ---------------------------------------------------------------- item 7


def test_the_checkers_verdict_takes_even_the_last_node_down_in_every_worker(store_url: str) -> None:
    """Both upstreams dead: the lease holder's checks find both down; the other worker,
    whose ejection cap (50 %) would keep the last node 'healthy', has both down within
    two sync intervals, and both up again within two once the checker says so."""
    one, two = NodeServer("one").start(), NodeServer("two").start()
    nodes = [ServiceNode("one", one.url, priority=2), ServiceNode("two", two.url, priority=1)]
    interval = 0.3
    syncs = []
    for name in ("leader", "follower"):
        pool = FailoverManager(nodes, failure_threshold=1)  # the default cap: 50 % of the nodes
        checker = HealthChecker(check_interval=0.1, timeout=0.3, jitter=0, unhealthy_threshold=2, healthy_threshold=2)
        syncs.append(StateSync(open_store(store_url), AutoDegradationManager(), pool, checker, name=name,
                               config=StateConfig(url=store_url, sync_interval=interval)))
    leader, follower = syncs
    assert leader.pool is not None and follower.pool is not None
    lead_pool, follow_pool = leader.pool, follower.pool

    def states(pool: Any) -> list[str]:
        return [row["state"] for row in pool.snapshot()]

    try:
        leader.exchange()
        follower.exchange()
        assert leader.leader and not follower.leader
        leader.start()
        follower.start()
        one.stop()
        two.stop()
        follow_pool.mark_failure("one")  # the follower's own traffic ejected one: the cap is full
        assert wait_for(lambda: states(lead_pool) == ["down", "down"], 5)
        t0 = time.monotonic()
        assert wait_for(lambda: states(follow_pool) == ["down", "down"], 2)
        took = time.monotonic() - t0
        assert took <= 2 * interval + 0.3, took
        assert not follow_pool.healthy_nodes()
        one.start()
        two.start()
        assert wait_for(lambda: states(lead_pool) == ["healthy", "healthy"], 5)
        t0 = time.monotonic()
        assert wait_for(lambda: states(follow_pool) == ["healthy", "healthy"], 2)
        took = time.monotonic() - t0
        assert took <= 2 * interval + 0.3, took
    finally:
        for s in syncs:
            s.stop()
        one.stop()
        two.stop()


def test_a_fresh_worker_applies_the_fleets_forced_level_before_its_first_request(tmp_path: Path) -> None:
    """A level forced in the store before a worker starts: that worker's very first
    request already sees it (not one sync interval later)."""
    from resilience_mw.fleet import open_store
    from resilience_mw.runtime import Runtime

    url = f"sqlite:///{tmp_path}/state.db"
    store = open_store(url)
    store.set_override("Level3", None, "test")
    store.close()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["resilience.level"].name.encode()]

    runtime = Runtime(state_url=url, state_sync_interval=5.0)  # (a long interval: no luck involved)
    application = runtime.wrap(app)
    try:
        seen: list[str] = []
        body = application({"PATH_INFO": "/x", "REQUEST_METHOD": "GET"}, lambda s, h, e=None: seen.append(s))
        assert b"".join(body) == b"Level3" and seen == ["200 OK"]
    finally:
        runtime.stop()


def test_the_cli_reaches_a_service_in_its_own_redis_namespace(redis_server: RedisServer) -> None:
    """The workers keep their keys under their service's name: the CLI's --namespace (or
    RESILIENCE_STATE_NAMESPACE) reaches them; without it, it reaches no one of theirs."""
    from resilience_mw.runtime import Runtime

    runtime = Runtime(state_url=redis_server.url, state_service="shop", start="off")
    sync = runtime.sync
    assert sync is not None
    cli = [sys.executable, "-m", "resilience_mw", "--state-url", redis_server.url]
    subprocess.run([*cli, "force", "Level2"], check=True, capture_output=True, timeout=60)  # namespace "resilience"
    sync.exchange()
    assert runtime.degradation.level.name == "Normal"
    subprocess.run([*cli, "--namespace", "shop", "force", "Level3"], check=True, capture_output=True, timeout=60)
    sync.exchange()
    assert runtime.degradation.level.name == "Level3"
