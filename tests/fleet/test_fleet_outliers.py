"""Outlier detection on the fleet's counts (issue 24): each worker publishes its
outcomes per node and compares the nodes by the sum over every worker, so a worker that
sends a node almost nothing still ejects it. Real stores only (a SQLite file, a real
redis-server); the end-to-end test runs real forked workers against real HTTP nodes."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from resilience_mw import AutoDegradationManager, FailoverManager, ServiceNode
from resilience_mw.config import StateConfig
from resilience_mw.fleet.store import StoreDataError
from resilience_mw.fleet.stores import open_store
from resilience_mw.fleet.sync import StateSync
from resilience_mw.testing import FakeClock
from tests.helpers import wait_for
from tests.redis_server import RedisServer

#: outlier rules for the tests: a comparison every half second, on ten requests a node
RULES: dict[str, Any] = {
    "strategy": "RoundRobin",
    "outlier_interval": 0.5,
    "outlier_min_requests": 10,
    "latency_factor": None,  # a loaded test machine's latencies are not what is tested
    "failure_threshold": 10_000,  # outliers only, not failures in a row
}
NODES = [ServiceNode(f"n{i}", f"http://n{i}") for i in range(5)]
BAD = "n0"


def worker(url: str, name: str, clock: FakeClock | None = None, *, rules: dict[str, Any] | None = None,
           **state: Any) -> StateSync:
    """One worker (a sync with a name of its own, its pool on ``clock``). Its entries in
    the store live 15 s unless ``sync_interval`` says otherwise: a test driving the
    exchanges by hand is not at the mercy of a slow machine."""
    pool = FailoverManager(NODES, clock=clock or time.monotonic, **{**RULES, **(rules or {})})
    config = StateConfig(url=url, **{"sync_interval": 5.0, **state})
    return StateSync(open_store(url), AutoDegradationManager(), pool, config=config, name=name,
                     clock=clock or time.monotonic)


def traffic(sync: StateSync, per_node: int) -> None:
    """``per_node`` outcomes on every node, one in five failing on the bad node."""
    pool = sync.pool
    assert pool is not None
    for node in NODES:
        for i in range(per_node):
            if node.id == BAD and i % 5 == 4:
                pool.mark_failure(node.id)
            else:
                pool.mark_success(node.id, 0.002)


def reason(sync: StateSync, node_id: str = BAD) -> str | None:
    assert sync.pool is not None
    return next(row["down_reason"] for row in sync.pool.snapshot() if row["id"] == node_id)


# ------------------------------------------------------------ the stores


def test_outcomes_are_summed_over_every_unexpired_reporter(store_url: str) -> None:
    store, other = open_store(store_url), open_store(store_url)
    assert store.outcomes() == {}
    store.put_outcomes("a", {"x": (10, 2, 5000, 300), "y": (3, 0, 900, 200)}, 60)
    other.put_outcomes("b", {"x": (5, 1, 1000, 150)}, 60)
    # sums, and the fastest of the fastest
    assert store.outcomes() == other.outcomes() == {"x": (15, 3, 6000, 150), "y": (3, 0, 900, 200)}
    store.put_outcomes("a", {"y": (1, 0, 7, 7)}, 60)  # a reporter's entry is replaced whole
    assert store.outcomes() == {"x": (5, 1, 1000, 150), "y": (1, 0, 7, 7)}
    other.put_outcomes("c", {"x": (100, 100, 0, 0)}, 0.3)  # (no success: no fastest)
    assert store.outcomes()["x"] == (105, 101, 1000, 150)
    assert wait_for(lambda: store.outcomes()["x"] == (5, 1, 1000, 150), 10)  # c stopped publishing: it lapses
    store.put_outcomes("a", {}, 60)
    assert store.outcomes() == {"x": (5, 1, 1000, 150)}


def test_outcomes_that_do_not_decode_in_sqlite_name_their_table(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/state.db"
    store = open_store(url)
    store.put_outcomes("good", {"x": (4, 1, 30, 5)}, 60)
    db = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    for row in [("w1", "x", "lots", 0, 0, 0, time.time() + 60),  # not a number
                ("w2", "x", 1, 2, 0, 0, time.time() + 60),  # more failures than requests
                ("w3", "x", -1, 0, 0, 0, time.time() + 60),
                ("w4", "x", 1, 0, 0, 0, "never")]:  # an expiry that would never come
        db.execute("INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?)", row)
    with pytest.raises(StoreDataError) as info:
        store.outcomes()
    assert info.value.key == "outcomes" and "4 row(s)" in info.value.reason
    assert info.value.partial == {"x": (4, 1, 30, 5)}  # the others' counts still count


def test_outcomes_that_do_not_decode_in_redis_name_their_key(redis_server: RedisServer) -> None:
    store = open_store(redis_server.url + "?namespace=t")
    r = redis.Redis.from_url(redis_server.url)
    store.put_outcomes("good", {"x": (4, 1, 30, 5)}, 60)
    r.hset("t:outcomes", "w1", "garbage")
    r.hset("t:outcomes", "w2", '9999999999|{"x": [1, 2, 3, 0]}')  # more failures than requests
    r.hset("t:outcomes", "w3", "9999999999|[1, 2, 3, 0]")
    with pytest.raises(StoreDataError) as info:
        store.outcomes()
    assert info.value.key == "t:outcomes" and "3 field(s)" in info.value.reason
    assert info.value.partial == {"x": (4, 1, 30, 5)}
    assert r.pttl("t:outcomes") > 0  # the hash goes when its workers do
    r.delete("t:outcomes")
    r.set("t:outcomes", "a string")  # not a hash at all
    for call in (store.outcomes, lambda: store.put_outcomes("a", {"x": (1, 0, 0, 0)}, 1)):
        with pytest.raises(StoreDataError) as info:
            call()
        assert info.value.key == "t:outcomes"


# ------------------------------------------------------------ the sync


def test_a_worker_with_almost_no_traffic_ejects_by_the_fleets_counts(store_url: str) -> None:
    clock = FakeClock(1000.0)
    busy, rare = worker(store_url, "busy", clock), worker(store_url, "rare", clock)
    alone = worker(store_url, "alone", clock, outlier_scope="process")  # the same traffic as rare
    for w in (busy, rare, alone):
        w.exchange()
    assert busy.pool is not None and rare.pool is not None and alone.pool is not None
    assert not busy.pool.compare_on_traffic and not rare.pool.compare_on_traffic
    assert alone.pool.compare_on_traffic and alone.status()["outliers"] == "process"
    assert rare.status()["outliers"] == "fleet"
    for _ in range(2):  # two syncs in the interval
        traffic(busy, 15)
        traffic(rare, 1)
        traffic(alone, 1)
        clock.advance(0.25)
        for w in (busy, rare, alone):
            w.exchange()
    assert reason(busy) == reason(rare) == "success-rate"
    assert reason(alone) is None  # its own two requests a node prove nothing
    assert {reason(rare, n.id) for n in NODES if n.id != BAD} == {None}
    store = open_store(store_url)
    assert store.outcomes()[BAD][:2] == (32, 6)  # published: busy's and rare's windows, not alone's


def test_the_window_covers_one_interval(store_url: str) -> None:
    clock = FakeClock(1000.0)
    w = worker(store_url, "w", clock)
    w.exchange()
    traffic(w, 10)
    clock.advance(0.1)
    w.exchange()
    assert open_store(store_url).outcomes()["n1"][0] == 10
    clock.advance(0.5)  # the interval has passed: those outcomes leave the window
    w.exchange()
    assert open_store(store_url).outcomes()["n1"][0] == 0


def test_a_store_that_stops_answering_hands_the_comparison_back_with_what_was_taken(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    url = server.url + "?namespace=t"
    w = worker(url, "w", rules={"outlier_interval": 60.0}, sync_interval=0.1)  # no comparison meanwhile
    pool = w.pool
    assert pool is not None
    try:
        w.start()
        assert wait_for(lambda: w.status()["outliers"] == "fleet" and not pool.compare_on_traffic, 10)
        traffic(w, 15)  # taken by the sync at its next exchange
        reader = open_store(url)
        assert wait_for(lambda: reader.outcomes().get(BAD, (0, 0, 0, 0))[:2] == (15, 3), 10)
        assert reason(w) is None  # not compared yet: the fleet comparison is a minute away
        server.kill()
        # the pool compares on its own again, and what the sync took is compared at once
        assert wait_for(lambda: pool.compare_on_traffic and w.status()["outliers"] == "process", 10)
        assert reason(w) == "success-rate"
        server.start()  # back: the sync compares the fleet's counts again
        assert wait_for(lambda: not pool.compare_on_traffic and w.status()["outliers"] == "fleet", 10)
    finally:
        w.stop()
        server.stop()
    assert pool.compare_on_traffic  # stopped: the pool compares on its own


def test_a_worker_isolated_by_a_collision_compares_its_own_counts(redis_server: RedisServer) -> None:
    url = redis_server.url + "?namespace=t"
    w = worker(url, "w")
    w.exchange()
    assert w.pool is not None and not w.pool.compare_on_traffic
    other = StateSync(open_store(url), AutoDegradationManager(), FailoverManager([ServiceNode("x", "http://x")]),
                      config=StateConfig(url=url), name="other", service="another")
    other.exchange()
    w.exchange()
    assert w.collision is not None
    assert w.pool.compare_on_traffic and w.status()["outliers"] == "process"


def test_the_process_scope_publishes_nothing(store_url: str) -> None:
    w = worker(store_url, "w", outlier_scope="process")
    traffic(w, 10)
    w.exchange()
    assert w.pool is not None and w.pool.compare_on_traffic
    assert open_store(store_url).outcomes() == {}


# ------------------------------------------------- real workers, real nodes


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        server: Any = self.server
        with server.lock:
            server.answers += 1
            fail = server.every and server.answers % server.every == 0
        body = b"fail" if fail else b"ok"
        self.send_response(500 if fail else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, every: int) -> None:
        super().__init__(("127.0.0.1", 0), _Upstream)
        self.lock, self.answers, self.every = threading.Lock(), 0, every

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a worker that stopped closed its connections: not an error of the node
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def _upstream(every: int) -> _UpstreamServer:
    """A node on 127.0.0.1 (bound, not yet serving): every ``every``-th answer a 500."""
    return _UpstreamServer(every)


def _worker_process(role: str, url: str, ports: list[int], out: int, stop: int) -> None:
    """A worker: a pool with a sync on the shared file, traffic through a session with the
    FailoverAdapter (``busy``: four threads flat out; ``rare``: one request a second);
    writes a JSON line when it finds the bad node ejected."""
    from resilience_mw.adapter import FailoverAdapter

    nodes = [ServiceNode(f"n{i}", f"http://127.0.0.1:{port}") for i, port in enumerate(ports)]
    pool = FailoverManager(nodes, **RULES)
    sync = StateSync(open_store(url), AutoDegradationManager(), pool, name=role,
                     config=StateConfig(url=url, sync_interval=0.1))
    sync.start()
    assert wait_for(lambda: not pool.compare_on_traffic, 30)  # the sync compares: the fleet's counts
    done = threading.Event()
    sent = [0]

    def session() -> requests.Session:
        s = requests.Session()
        s.mount("http://up/", FailoverAdapter(pool))
        return s

    def send(s: requests.Session) -> None:
        with contextlib.suppress(requests.RequestException):
            s.get("http://up/x", timeout=5).close()
            sent[0] += 1

    def flat_out() -> None:
        s = session()
        while not done.is_set():
            send(s)

    threads = [threading.Thread(target=flat_out, daemon=True) for _ in range(4 if role == "busy" else 0)]
    for t in threads:
        t.start()
    mine = session()
    started, next_send, seen = time.monotonic(), 0.0, False
    while not select.select([stop], [], [], 0.005)[0]:
        now = time.monotonic()
        if role == "rare" and now >= next_send:
            send(mine)
            next_send = now + 1.0
        row = next(r for r in pool.snapshot() if r["id"] == "n0")
        if not seen and row["down_reason"] is not None:
            seen = True
            line = {"role": role, "at": now, "started": started, "reason": row["down_reason"], "sent": sent[0]}
            os.write(out, (json.dumps(line) + "\n").encode())
    done.set()
    sync.stop(1)


@contextlib.contextmanager
def _forked(target: Any, *args: Any) -> Iterator[tuple[int, int]]:
    """``target(*args, out, stop)`` in a forked child; yields (its pid, the read end of
    ``out``). The child stops when ``stop`` closes, and is killed if it does not."""
    out_r, out_w = os.pipe()
    stop_r, stop_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(out_r)
            os.close(stop_w)
            target(*args, out_w, stop_r)
            code = 0
        finally:
            os._exit(code)
    os.close(out_w)
    os.close(stop_r)
    try:
        yield pid, out_r
    finally:
        os.close(stop_w)
        if not wait_for(lambda: os.waitpid(pid, os.WNOHANG) != (0, 0), 10):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(out_r)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with the test's threads about
def test_forked_workers_on_one_file_eject_a_node_failing_a_fifth_even_where_it_is_rarely_used(
    tmp_path: Path,
) -> None:
    url = f"sqlite://{tmp_path}/state.db"
    upstreams = [_upstream(5 if i == 0 else 0) for i in range(5)]  # n0: every fifth answer a 500
    ports = [u.server_address[1] for u in upstreams]
    serving: list[_UpstreamServer] = []
    try:
        with _forked(_worker_process, "busy", url, ports) as (_, busy_out), \
                _forked(_worker_process, "rare", url, ports) as (_, rare_out):
            for u in upstreams:  # serving only now: the workers were forked with no thread of ours running
                threading.Thread(target=u.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
                serving.append(u)
            seen: dict[str, dict[str, Any]] = {}
            buffers = {busy_out: b"", rare_out: b""}
            deadline = time.monotonic() + 60
            while len(seen) < 2 and time.monotonic() < deadline:
                ready, _, _ = select.select(list(buffers), [], [], 0.2)
                for fd in ready:
                    chunk = os.read(fd, 4096)
                    buffers[fd] += chunk
                    if b"\n" in buffers[fd]:
                        line = json.loads(buffers[fd].split(b"\n")[0])
                        seen[line["role"]] = line
                    if not chunk:
                        del buffers[fd]
            assert set(seen) == {"busy", "rare"}, f"only {seen} found the bad node ejected within 60 s"
    finally:
        for u in serving:
            u.shutdown()
        for u in upstreams:
            u.server_close()
    busy, rare = seen["busy"], seen["rare"]
    assert busy["reason"] == rare["reason"] == "success-rate"
    # the rare worker sent about one request a second: a few to n0, far below the 10 a
    # comparison needs; it learnt from the busy worker's counts
    assert rare["sent"] <= 3 + (rare["at"] - rare["started"])
    interval = RULES["outlier_interval"]
    # the workers of a host compare together: the rare one within two intervals of the busy one
    assert abs(rare["at"] - busy["at"]) <= 2 * interval, (busy, rare)
