"""Chaos: bounded load while nodes die, hang, answer 503, reset and come back.

Each run prints a report (sent, succeeded, failed visibly, duplicates seen by the
nodes, time to detect a dead node and to route back to the primary) and asserts on it.
Run alone with ``./scripts/test -m chaos``.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import threading
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from resilience_mw import FailoverManager, HealthChecker, ServiceNode
from resilience_mw.adapter import FailoverAdapter
from resilience_mw.degradation import AutoDegradationManager
from resilience_mw.wsgi import ResilienceMiddleware
from tests.nodes import NodeServer

pytestmark = pytest.mark.chaos

INTERVAL, TIMEOUT, THRESHOLD = 0.1, 0.2, 2
BOUND = INTERVAL * 1.1 * THRESHOLD + TIMEOUT  # detection bound: interval (with jitter) x threshold + timeout


def report(capsys: Any, name: str, data: dict[str, Any]) -> None:
    with capsys.disabled():
        print(f"\nchaos report {name}: {json.dumps(data, sort_keys=True)}")


class Load:
    """Client threads sending GETs and POSTs with unique ids; bounded in count and time."""

    def __init__(
        self, send: Callable[[str, str], bool], threads: int = 4, per_thread: int = 3000, seconds: float = 15
    ):
        self.send = send
        self.threads = threads
        self.per_thread = per_thread
        self.seconds = seconds
        self.lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.posts_ok: list[str] = []
        self.stop = threading.Event()

    def _run(self, i: int) -> None:
        deadline = time.monotonic() + self.seconds
        for k in range(self.per_thread):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            method = "POST" if k % 3 == 0 else "GET"
            rid = uuid.uuid4().hex
            ok = self.send(method, rid)
            with self.lock:
                self.stats[f"{method} sent"] += 1
                self.stats[f"{method} {'ok' if ok else 'failed'}"] += 1
                if ok and method == "POST":
                    self.posts_ok.append(rid)
            time.sleep(0.01)

    def run(self, chaos: Callable[[], None]) -> None:
        """Send until ``chaos()`` returns (or the count or time bound is reached)."""
        ts = [threading.Thread(target=self._run, args=(i,)) for i in range(self.threads)]
        for t in ts:
            t.start()
        try:
            chaos()
        finally:
            self.stop.set()
            for t in ts:
                t.join(30)


def wait(cond: Callable[[], bool], limit: float = 10) -> float:
    t0 = time.monotonic()
    while not cond() and time.monotonic() - t0 < limit:
        time.sleep(0.002)
    return time.monotonic() - t0


def test_chaos_through_failover_adapter(capsys: Any, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="resilience_mw")
    nodes = {name: NodeServer(name).start() for name in ("primary", "secondary", "tertiary")}
    manager = FailoverManager(
        [ServiceNode(n, s.url, priority=p) for (n, s), p in zip(nodes.items(), (100, 80, 60), strict=True)],
        base_ejection_time=1.0,
    )
    checker = HealthChecker(INTERVAL, TIMEOUT, unhealthy_threshold=THRESHOLD, healthy_threshold=THRESHOLD)
    checker.start(manager)
    session = requests.Session()
    session.mount("http://svc/", FailoverAdapter(manager, pool_maxsize=8))
    served_by: Counter[str] = Counter()

    def send(method: str, rid: str) -> bool:
        try:
            r = session.request(
                method,
                "http://svc/api",
                headers={"X-Request-Id": rid},
                data=b"x" if method == "POST" else None,
                timeout=(0.2, 0.3),
            )
        except requests.RequestException:
            return False
        served_by[getattr(r, "resilience_node", "?")] += 1
        return r.status_code < 500

    timings: dict[str, float] = {}

    def chaos() -> None:
        p, s, t = nodes["primary"], nodes["secondary"], nodes["tertiary"]
        time.sleep(1.0)
        p.stop()  # killed
        timings["detect_dead_s"] = wait(lambda: not manager.is_healthy("primary"))
        time.sleep(1.0)
        before = served_by["primary"]
        p.start()  # back on the same port
        timings["route_back_s"] = wait(lambda: served_by["primary"] > before)
        time.sleep(0.5)
        s.mode = "hang"  # accepts, never answers
        time.sleep(1.0)
        s.mode = "ok"
        t.mode = "unavailable"  # 503 + Retry-After
        time.sleep(1.0)
        t.mode = "ok"
        p.mode = "reset"  # resets mid-response
        time.sleep(1.0)
        p.mode = "ok"
        time.sleep(1.0)

    load = Load(send)
    try:
        load.run(chaos)
    finally:
        checker.close()
        for n in nodes.values():
            n.stop()
    arrivals = sum((n.request_ids for n in nodes.values()), Counter())
    post_dupes = sum(1 for rid in load.posts_ok if arrivals[rid] > 1)
    all_dupes = sum(1 for c in arrivals.values() if c > 1)
    data = {
        **load.stats,
        "duplicate_posts_seen_by_nodes": post_dupes,
        "requests_seen_twice": all_dupes,
        "served_by": dict(served_by),
        **{k: round(v, 3) for k, v in timings.items()},
        "detect_bound_s": BOUND,
    }
    report(capsys, "adapter", data)
    # the log a person reads: one short line per event, the detail in the record's fields
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("resilience_mw")]
    assert lines and all("\n" not in line and len(line) <= 160 for line in lines), max(lines, key=len)
    failovers = [r for r in caplog.records if "failover from" in r.getMessage()]
    assert failovers and all(
        re.fullmatch(r"upstream \S+ \S+: failover from \w+ to \w+: \w+ \(\d+\.\d\d s\)", r.getMessage())
        for r in failovers
    ), failovers[0].getMessage()
    assert all(getattr(r, "error", "") and getattr(r, "from_node", None) for r in failovers)
    assert post_dupes == 0
    assert all(arrivals[rid] == 1 for rid in load.posts_ok)  # every acknowledged POST arrived exactly once
    assert load.stats["GET ok"] >= 0.97 * load.stats["GET sent"]  # GETs fail over
    assert load.stats["POST ok"] >= 0.80 * load.stats["POST sent"]
    assert timings["detect_dead_s"] <= BOUND + 0.1
    assert timings["route_back_s"] <= INTERVAL * 1.1 * THRESHOLD + TIMEOUT + 0.3


def test_chaos_through_demo_app(capsys: Any, tmp_path: Any) -> None:
    from demo_app.app import create_app
    from demo_app.cluster import Cluster

    cluster = Cluster(orders_dir=str(tmp_path)).start()
    app = create_app(cluster)
    demo = app.extensions["demo"]
    state = app.extensions["resilience"]
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    demo.start(base, traffic=False)
    client = requests.Session()
    hc = state.health_checker.config
    interval = hc.check_interval
    timeout = hc.timeout
    bound = interval * 1.1 * hc.unhealthy_threshold + timeout

    def send(method: str, rid: str) -> bool:
        try:
            if method == "POST":
                r = client.post(f"{base}/api/orders", json={"order_id": rid}, timeout=3)
            else:
                r = client.get(f"{base}/api/items", timeout=3)
        except requests.RequestException:
            return False
        return r.status_code < 500

    timings: dict[str, float] = {}
    failover = state.failover

    def chaos() -> None:
        time.sleep(1.0)
        cluster["primary"].kill()
        timings["detect_dead_s"] = wait(lambda: not failover.is_healthy("primary"))
        time.sleep(1.0)
        before = demo.served["primary"]
        cluster["primary"].start()
        timings["route_back_s"] = wait(lambda: demo.served["primary"] > before)
        cluster["secondary"].control("hang")
        time.sleep(1.0)
        cluster["secondary"].control("ok")
        cluster["primary"].control("unavailable")
        time.sleep(1.0)
        cluster["primary"].control("reset")
        time.sleep(1.0)
        cluster["primary"].control("ok")
        time.sleep(1.0)

    load = Load(send)
    try:
        load.run(chaos)
    finally:
        server.shutdown()
        demo.stop()
        cluster.stop()
    orders: Counter[str] = Counter()  # from the nodes' order logs, which survive kills
    for path in tmp_path.glob("*.orders"):
        orders.update(path.read_text().split())
    post_dupes = sum(1 for c in orders.values() if c > 1)
    data = {
        **load.stats,
        "duplicate_orders_seen_by_nodes": post_dupes,
        **{k: round(v, 3) for k, v in timings.items()},
        "detect_bound_s": round(bound, 3),
    }
    report(capsys, "demo", data)
    assert post_dupes == 0
    assert all(orders[rid] == 1 for rid in load.posts_ok)
    assert load.stats["GET ok"] >= 0.95 * load.stats["GET sent"]
    assert timings["detect_dead_s"] <= bound + 0.2
    assert timings["route_back_s"] <= bound + 0.5


def test_soak_middleware_memory_is_bounded(capsys: Any) -> None:
    deg = AutoDegradationManager()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ["PATH_INFO"]
        status = "500 INTERNAL SERVER ERROR" if path.endswith("7") else "200 OK"
        start_response(status, [("Content-Type", "text/plain")])
        if path.endswith("3"):
            return iter([b"stream", b"ed"])
        return [b"ok"]

    mw = ResilienceMiddleware(app, deg)

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        return None

    base_env = {"REQUEST_METHOD": "GET", "wsgi.url_scheme": "http", "SERVER_NAME": "x", "SERVER_PORT": "80"}
    paths = [f"/p{i}" for i in range(10)]

    def burst(n: int) -> None:
        for i in range(n):
            body = mw({**base_env, "PATH_INFO": paths[i % 10]}, start_response)
            for _ in body:
                pass
            close = getattr(body, "close", None)
            if close:
                close()

    burst(20_000)  # warm-up: caches, buckets
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t0 = time.monotonic()
    total = 300_000
    burst(total)
    elapsed = time.monotonic() - t0
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    requests_, failures = deg.window.counts()
    data = {
        "requests": total,
        "seconds": round(elapsed, 2),
        "memory_growth_bytes": after - before,
        "window_requests": requests_,
        "window_failures": failures,
    }
    report(capsys, "soak", data)
    assert after - before < 256 * 1024
    assert requests_ == total + 20_000 and failures == (total + 20_000) // 10
