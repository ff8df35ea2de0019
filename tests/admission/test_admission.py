"""Admission: queue time from the proxy's stamp, deadlines, criticality shedding by
user, shadow mode; real Flask apps, and the adapter honouring an inbound deadline."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
import requests
from flask import Flask

from resilience_mw import DegradationLevel, ServiceNode, signals
from resilience_mw.adapter import DeadlineExceeded, FailoverAdapter
from resilience_mw.admission import (
    Criticality,
    parse_deadline,
    parse_request_start,
    queue_tolerance,
    shed_share,
    user_bucket,
)
from resilience_mw.decorators import criticality
from resilience_mw.flask_ext import Resilience
from resilience_mw.testing import force_level, record_signals

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("stamp", "waited"),
    [
        ("t=1699999999.750", 0.25),  # seconds with a fraction (nginx t=${msec})
        ("t=1699999999750", 0.25),  # milliseconds (Heroku)
        ("t=1699999999750000", 0.25),  # microseconds (Apache %t)
        ("1699999999750", 0.25),  # a bare number
        ("1699999999.5", 0.5),
        ("t=1700000000.4", 0.0),  # a little in the future: clock skew, taken as no wait
    ],
)
def test_request_start_formats(stamp: str, waited: float) -> None:
    assert parse_request_start(stamp, NOW) == pytest.approx(waited, abs=1e-3)


@pytest.mark.parametrize("stamp", ["t=1700000100", "t=1600000000", "yesterday", "t=", "-5", ""])
def test_implausible_stamps_are_ignored(stamp: str) -> None:
    assert parse_request_start(stamp, NOW) is None


def test_deadline_formats() -> None:
    assert parse_deadline("1700000002500", NOW) == pytest.approx(NOW + 2.5)
    assert parse_deadline("2.5", NOW) == pytest.approx(NOW + 2.5)
    assert parse_deadline("2.5s", NOW) == pytest.approx(NOW + 2.5)
    assert parse_deadline("250ms", NOW) == pytest.approx(NOW + 0.25)
    assert parse_deadline("soon", NOW) is None


def app_with(**options: Any) -> tuple[Flask, Counter[str]]:
    app = Flask("admission")
    Resilience(app, start="off", **options)
    calls: Counter[str] = Counter()

    @app.get("/search")
    def search() -> str:
        calls["search"] += 1
        return "ok"

    @app.get("/prefetch")
    @criticality("sheddable")
    def prefetch() -> str:
        calls["prefetch"] += 1
        return "ok"

    @app.get("/checkout")
    @criticality("critical_plus")
    def checkout() -> str:
        calls["checkout"] += 1
        return "ok"

    return app, calls


def test_a_request_that_queued_too_long_is_shed_before_the_view_runs() -> None:
    app, calls = app_with(max_queue_time=0.5)
    client = app.test_client()
    now = time.time()
    fresh = client.get("/search", headers={"X-Request-Start": f"t={now - 0.1:.3f}"})
    stale = client.get("/search", headers={"X-Request-Start": f"t={int((now - 2) * 1000)}"})
    skewed = client.get("/search", headers={"X-Request-Start": f"t={now + 600:.3f}"})  # a clock ahead
    assert (fresh.status_code, stale.status_code, skewed.status_code) == (200, 503, 200)
    assert stale.headers["Retry-After"] and calls["search"] == 2
    assert Resilience.state(app).middleware.admission.skewed_stamps == 1


def test_a_request_past_its_deadline_is_shed_before_the_view_runs() -> None:
    app, calls = app_with(deadline_header="X-Deadline")
    client = app.test_client()
    past = client.get("/search", headers={"X-Deadline": str(int((time.time() - 1) * 1000))})
    ahead = client.get("/search", headers={"X-Deadline": "2s"})
    assert (past.status_code, ahead.status_code, calls["search"]) == (503, 200, 1)


def test_shedding_order_by_criticality_at_each_level() -> None:
    app, _ = app_with(criticality_shedding=True, user_key="X-User", shed_level=None)
    client = app.test_client()
    paths = {"sheddable": "/prefetch", "critical": "/search", "critical_plus": "/checkout"}
    served: dict[str, dict[str, float]] = {}
    for level in DegradationLevel:
        force_level(app, level)
        served[level.name] = {
            name: sum(client.get(path, headers={"X-User": f"u{i}"}).status_code == 200 for i in range(200)) / 200
            for name, path in paths.items()
        }
    # the lowest class goes first; critical_plus is never shed
    assert served["Normal"] == {"sheddable": 1, "critical": 1, "critical_plus": 1}
    assert 0.35 < served["Level1"]["sheddable"] < 0.65 and served["Level1"]["critical"] == 1
    assert served["Level2"]["sheddable"] == 0 and served["Level2"]["critical"] == 1
    assert 0.6 < served["Level3"]["critical"] < 0.9 and served["Level3"]["sheddable"] == 0
    assert all(served[level]["critical_plus"] == 1 for level in served)


def test_critical_plus_is_never_shed_even_at_the_shed_level() -> None:
    app, calls = app_with(criticality_routes={"/search/pay": "critical_plus"})  # shed_level: Emergency
    app.add_url_rule("/search/pay", "pay", lambda: "paid")
    client = app.test_client()
    force_level(app, "Emergency")
    statuses = [client.get(p).status_code for p in ("/search", "/prefetch", "/checkout", "/search/pay")]
    assert statuses == [503, 503, 200, 200]  # the view's @criticality and the route table
    assert calls["checkout"] == 1 and calls["search"] == 0


def test_a_shed_table_of_ones_own() -> None:
    app, _ = app_with(criticality_shedding=True, shed_level=None,
                      shed_table={"Level1": {"critical": 1.0}, "Level3": {"sheddable": 1.0}})
    client = app.test_client()
    force_level(app, "Level1")
    assert (client.get("/search").status_code, client.get("/prefetch").status_code) == (503, 200)
    force_level(app, "Level2")  # not listed: nothing shed
    assert (client.get("/search").status_code, client.get("/prefetch").status_code) == (200, 200)
    force_level(app, "Level3")
    assert (client.get("/search").status_code, client.get("/prefetch").status_code) == (200, 503)
    assert client.get("/checkout").status_code == 200


def test_the_same_users_are_shed_every_time() -> None:
    app, _ = app_with(criticality_shedding=True, user_key="session", shed_level=None)
    client = app.test_client()
    force_level(app, "Level1")  # half of the sheddable users
    first: dict[str, int] = {}
    for i in range(1000):
        user = f"user-{i % 50}"
        client.set_cookie("session", user)  # the key from a cookie when no header carries it
        status = client.get("/prefetch").status_code
        assert first.setdefault(user, status) == status  # 1,000 requests: no user flips
    shed_users = {u for u, s in first.items() if s == 503}
    assert 10 < len(shed_users) < 40
    assert shed_users == {u for u in first if user_bucket(u) < shed_share(DegradationLevel.Level1, Criticality.SHEDDABLE)}


def test_a_growing_queue_sheds_the_lowest_classes_first_user_by_user_without_a_level() -> None:
    app, _ = app_with(
        criticality_shedding=True, queue_signal=True, queue_tolerance=0.01, user_key="X-User",
        criticality_routes={"/feed": "sheddable_plus"},
    )
    app.add_url_rule("/feed", "feed", lambda: "ok")
    client = app.test_client()
    manager = Resilience.state(app).degradation
    for _ in range(20):  # one interval of requests that queued 30 ms: the process is behind
        client.get("/checkout", headers={"X-Request-Start": f"t={time.time() - 0.03:.6f}"})
    manager.evaluate()
    assert manager.queue_behind and manager.load_level is DegradationLevel.Normal
    classes: dict[str, Criticality] = {"/prefetch": Criticality.SHEDDABLE, "/feed": Criticality.SHEDDABLE_PLUS,
               "/search": Criticality.CRITICAL, "/checkout": Criticality.CRITICAL_PLUS}
    users = [f"u{i}" for i in range(200)]
    served: dict[tuple[float, str], float] = {}
    for waited in (0.005, 0.015, 0.03, 0.06, 0.12, 30.0):
        for path, criticality_ in classes.items():
            first: dict[str, int] = {}
            for _ in range(5):  # 1,000 requests per class and wait: no user flips
                for user in users:
                    stamp = f"t={time.time() - waited:.6f}"
                    status = client.get(path, headers={"X-Request-Start": stamp, "X-User": user}).status_code
                    first.setdefault(user, status)
                    tolerance = queue_tolerance(criticality_, user_bucket(user), 0.01)
                    # A user whose tolerance is right at the wait may go either way: the
                    # request reaches the middleware a little after its stamp was taken.
                    if not waited - 0.001 <= tolerance <= waited + 0.005:
                        assert first[user] == status
                        assert status == (200 if tolerance > waited else 503), (path, waited, user)
            served[waited, path] = sum(s == 200 for s in first.values()) / len(first)
    assert Resilience.state(app).degradation.level is DegradationLevel.Normal  # no level was needed
    # 5 ms: everyone; 15 ms: part of sheddable (by user); 30 ms: none of it, part of
    # sheddable_plus; 60 ms: no sheddable class, all critical; 120 ms: part of critical
    assert [served[0.005, p] for p in classes] == [1, 1, 1, 1]
    assert 0.25 < served[0.015, "/prefetch"] < 0.6 and served[0.015, "/feed"] == 1
    assert served[0.03, "/prefetch"] == 0 and 0.25 < served[0.03, "/feed"] < 0.75
    assert served[0.06, "/feed"] == 0 and served[0.06, "/search"] == 1
    assert 0 < served[0.12, "/search"] < 1
    assert served[30.0, "/search"] == 0 and all(served[w, "/checkout"] == 1 for w, _ in served)


def test_with_the_queue_measured_only_a_forced_level_sheds_by_its_table() -> None:
    from resilience_mw.degradation.load import Sample

    app = Flask("levels")
    Resilience(app, start="off", criticality_shedding=True, queue_signal=True, shed_level=None, trusted_proxies=0,
               criticality_routes={"/prefetch": "sheddable"}, sampler=lambda: Sample(cpu=99.0, memory=5.0),
               degradation={"startup_grace_seconds": 0, "sustain_samples": 1, "sustain_window": 1,
                            "resources_shed": True})
    app.add_url_rule("/prefetch", "prefetch", lambda: "ok")
    client = app.test_client()
    Resilience.state(app).degradation.evaluate()
    # from the CPU, since resources_shed says so (by default the CPU gates features only)
    assert Resilience.state(app).degradation.load_level is DegradationLevel.Emergency
    fresh = {"X-Request-Start": f"t={time.time():.6f}"}
    # the queue is short: the process keeps up, whatever the CPU says
    assert client.get("/prefetch", headers=fresh).status_code == 200
    assert client.get("/prefetch").status_code == 503  # no stamp: the level's table decides
    force_level(app, "Level2")  # an operator's level: its table applies, stamp or not
    assert client.get("/prefetch", headers=fresh).status_code == 503


def test_shadow_mode_serves_everything_and_counts_what_it_would_have_shed() -> None:
    app, calls = app_with(criticality_shedding=True, enforce=False, max_queue_time=0.5, metrics=["prometheus"])
    client = app.test_client()
    force_level(app, "Emergency")
    with record_signals(signals.request_shed) as seen:
        statuses = [client.get(p).status_code for p in ("/prefetch", "/search", "/checkout")]
        statuses.append(client.get("/search", headers={"X-Request-Start": f"t={time.time() - 5:.3f}"}).status_code)
    assert statuses == [200, 200, 200, 200] and sum(calls.values()) == 4
    reasons = [(e["reason"], e["enforced"]) for e in seen.named("request-shed")]
    assert ("criticality", False) in reasons and ("queue", False) in reasons and ("level", False) in reasons


def test_the_adapter_spends_only_what_is_left_of_the_inbound_deadline(node_factory: Any) -> None:
    hung, live = node_factory("hung", "hang"), node_factory("live")
    app = Flask("deadline")
    Resilience(app, start="off", deadline_header="X-Deadline")
    session = requests.Session()
    session.mount("http://hung/", FailoverAdapter([ServiceNode("h", hung.url)]))
    session.mount("http://live/", FailoverAdapter([ServiceNode("l", live.url)]))
    seen: dict[str, Any] = {}

    @app.get("/call")
    def call() -> str:
        session.get("http://live/y", timeout=5)  # passes the deadline on
        t0 = time.monotonic()
        try:
            session.get("http://hung/x", timeout=5)
        except DeadlineExceeded:
            seen["gave_up_after"] = time.monotonic() - t0
        try:
            session.get("http://live/z", timeout=5)
        except DeadlineExceeded:
            seen["after_the_deadline"] = "not tried"  # nothing is left to spend
        return "ok"

    client = app.test_client()
    assert client.get("/call", headers={"X-Deadline": "300ms"}).status_code == 200
    assert seen["gave_up_after"] < 0.5  # not the 5 s timeout the call asked for
    assert seen["after_the_deadline"] == "not tried" and live.hits("/z") == 0
    forwarded = [h for h in live.headers_seen if h.get("X-Deadline")]
    assert forwarded and int(forwarded[-1]["X-Deadline"]) > (time.time() - 1) * 1000


def test_queueing_delay_raises_the_load_level_and_sheds() -> None:
    from resilience_mw.config import DegradationConfig
    from resilience_mw.degradation.load import Sample

    app = Flask("queued")
    Resilience(
        app,
        degradation=DegradationConfig(sustain_samples=2, sustain_window=3, startup_grace_seconds=0, cooldown_seconds=0),
        sampler=lambda: Sample(cpu=5.0, memory=5.0),  # CPU and memory say nothing is wrong
        start="off",
        queue_signal=True,
        shed_level="Level3",
    )
    manager = Resilience.state(app).degradation
    app.add_url_rule("/work", "work", lambda: "ok")
    client = app.test_client()
    for _ in range(3):
        for _ in range(20):  # requests that waited 150 ms in the proxy's queue
            client.get("/work", headers={"X-Request-Start": f"t={time.time() - 0.15:.3f}"})
        manager.evaluate()
    figures = manager.figures()
    assert manager.load_level is DegradationLevel.Level3 and figures["cause"]["queue"] == "Level3"
    assert figures["cause"]["resources"] == "Normal" and "queueing delay" in figures["cause"]["sheds"]
    assert figures["queue_time"] == pytest.approx(0.15, abs=0.02)
    assert client.get("/work").status_code == 503  # shed, and readiness fails
    assert client.get("/readyz").status_code == 503
    for _ in range(3):
        manager.evaluate()  # no more queued requests: the queue is gone
    assert manager.load_level is DegradationLevel.Normal


def test_the_concurrency_limit_sheds_the_excess_in_flight() -> None:
    import threading

    app = Flask("limited")
    Resilience(app, start="off", concurrency_limit=True, criticality_routes={"/bulk": "sheddable"})
    state = Resilience.state(app)
    limit = state.middleware.admission.limit
    assert limit is not None
    limit.limit = 4.0  # as if learnt
    release = threading.Event()
    entered = threading.Semaphore(0)

    @app.get("/slow")
    def slow() -> str:
        entered.release()
        release.wait(5)
        return "ok"

    @app.get("/bulk")
    def bulk() -> str:
        return "ok"

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(app.test_client().get("/slow").status_code))
               for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(4):
        assert entered.acquire(timeout=5)
    client = app.test_client()
    assert client.get("/slow").status_code == 503  # the fifth in flight
    assert client.get("/bulk").status_code == 503
    release.set()
    for t in threads:
        t.join(5)
    assert results == [200] * 4 and limit.inflight == 0
    assert client.get("/bulk").status_code == 200


def test_the_wait_for_a_thread_inside_waitress_is_queueing_too() -> None:
    """Without a proxy's stamp, the time a request waited in waitress for a free thread
    counts as its queueing delay (waitress tells when the request's last bytes came)."""
    import threading

    import waitress

    app = Flask("waitress")
    Resilience(app, start="off", max_queue_time=0.15)
    slow_running = threading.Event()

    def slow() -> str:
        slow_running.set()
        time.sleep(0.4)
        return "slow"

    app.add_url_rule("/slow", "slow", slow)
    app.add_url_rule("/fast", "fast", lambda: f"{request_queue_time():.3f}")
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=1)
    stop = threading.Event()

    def serve() -> None:  # server.run(), but one that can be stopped before the sockets close
        while not stop.is_set():
            waitress.wasyncore.loop(timeout=0.05, map=server._map, count=1)

    loop = threading.Thread(target=serve, daemon=True)
    loop.start()
    url = f"http://127.0.0.1:{server.effective_port}"
    try:
        alone = requests.get(f"{url}/fast", timeout=5)
        assert alone.status_code == 200 and float(alone.text) < 0.05  # a free thread: no wait
        slow = threading.Thread(target=requests.get, args=(f"{url}/slow",), kwargs={"timeout": 5})
        slow.start()
        assert slow_running.wait(5)  # the one thread is taken
        behind = requests.get(f"{url}/fast", timeout=5)  # waits for it
        slow.join()
        assert behind.status_code == 503 and behind.headers["Retry-After"]
    finally:
        stop.set()
        loop.join(5)
        server.task_dispatcher.shutdown()
        for channel in list(server._map.values()):
            channel.close()


def request_queue_time() -> float:
    from flask import request

    from resilience_mw.wsgi import QUEUE_TIME_KEY

    return float(request.environ[QUEUE_TIME_KEY])


def test_with_criticality_shedding_a_long_wait_is_judged_before_any_sample() -> None:
    """Not yet behind by the last sample (the overload just began): a request that alone
    waited as long as the delay that puts a process behind (20 ms) and longer than its
    class tolerates is shed at once; one that waited less than that is served."""
    app, _ = app_with(criticality_shedding=True, queue_signal=True, queue_tolerance=0.005, user_key="X-User")
    client = app.test_client()
    assert not Resilience.state(app).degradation.queue_behind
    statuses = {
        waited: client.get("/prefetch", headers={"X-Request-Start": f"t={time.time() - waited:.6f}", "X-User": "u1"}).status_code
        for waited in (0.015, 0.05)
    }
    assert statuses == {0.015: 200, 0.05: 503}  # (sheddable tolerates 5-10 ms: both waited longer)
