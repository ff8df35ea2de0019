"""FailoverAdapter through real sockets: servers on 127.0.0.1 killed, hung, 503, reset."""

from __future__ import annotations

import io
import threading
import time
import tracemalloc
import uuid
from typing import Any

import pytest
import requests

from resilience_mw import (
    AllNodesFailedError,
    FailoverError,
    FailoverManager,
    FailoverStrategy,
    ServiceNode,
    signals,
)
from resilience_mw.adapter import (
    DeadlineExceeded,
    FailoverAdapter,
    NoAvailableNodeConnectionError,
    ResponseTooLarge,
)
from tests.nodes import NodeServer, free_port

BASE = "http://orders"


def session_for(*servers: NodeServer | str, **kw: Any) -> tuple[requests.Session, FailoverAdapter]:
    nodes = []
    for i, s in enumerate(servers):
        url = s if isinstance(s, str) else s.url
        name = f"dead{i}" if isinstance(s, str) else s.name
        nodes.append(ServiceNode(name, url, priority=100 - i))
    adapter = FailoverAdapter(nodes, **kw)
    session = requests.Session()
    session.mount(f"{BASE}/", adapter)
    return session, adapter


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def rid() -> dict[str, str]:
    return {"X-Request-Id": uuid.uuid4().hex}


def test_rewrites_url_keeps_path_query_and_reuses_pools(node_factory: Any) -> None:
    a = node_factory("a")
    s, adapter = session_for(a, node_factory("b"))
    r = s.get(f"{BASE}/api/x?q=1", timeout=2)
    assert r.json() == {"node": "a", "path": "/api/x?q=1", "method": "GET"}
    assert r.url == f"{BASE}/api/x?q=1" and r.resilience_node == "a"  # type: ignore[attr-defined]
    for _ in range(5):
        s.get(f"{BASE}/api/x", timeout=2)
    assert len(adapter.poolmanager.pools) == 1  # one kept-alive pool for node a
    assert adapter.max_retries.total == 0


def test_refused_fails_over_for_any_method(node_factory: Any) -> None:
    b = node_factory("b")
    s, _ = session_for(dead_url(), b)
    assert s.get(f"{BASE}/x", timeout=2).json()["node"] == "b"
    headers = rid()
    assert s.post(f"{BASE}/orders", data=b"{}", headers=headers, timeout=2).json()["node"] == "b"
    assert b.request_ids[headers["X-Request-Id"]] == 1


def test_hung_node_get_fails_over_within_timeout_post_does_not(node_factory: Any) -> None:
    hung, b = node_factory("hung", "hang"), node_factory("b")
    s, _ = session_for(hung, b, failure_threshold=100)
    t0 = time.monotonic()
    assert s.get(f"{BASE}/x", timeout=(1, 0.3)).json()["node"] == "b"
    assert time.monotonic() - t0 < 0.3 + 0.25
    headers = rid()
    with pytest.raises(requests.ReadTimeout):
        s.post(f"{BASE}/pay", data=b"{}", headers=headers, timeout=(1, 0.3))
    assert hung.request_ids[headers["X-Request-Id"]] == 1
    assert b.request_ids[headers["X-Request-Id"]] == 0  # a POST never reaches two nodes


def test_idempotency_key_marks_post_safe(node_factory: Any) -> None:
    hung, b = node_factory("hung", "hang"), node_factory("b")
    s, _ = session_for(hung, b)
    r = s.post(f"{BASE}/pay", data=b"{}", headers={"Idempotency-Key": "k1"}, timeout=(1, 0.3))
    assert r.json()["node"] == "b"


def test_503_get_fails_over_post_gets_the_503(node_factory: Any) -> None:
    busy, b = node_factory("busy", "unavailable"), node_factory("b")
    busy.retry_after = 0
    s, _ = session_for(busy, b, failure_threshold=100)
    assert s.get(f"{BASE}/x", timeout=2).json()["node"] == "b"
    headers = rid()
    r = s.post(f"{BASE}/x", data=b"1", headers=headers, timeout=2)
    assert r.status_code == 503 and r.resilience_node == "busy"  # type: ignore[attr-defined]
    assert b.request_ids[headers["X-Request-Id"]] == 0


def test_retry_after_holds_node_off(node_factory: Any) -> None:
    busy, b = node_factory("busy", "unavailable"), node_factory("b")
    busy.retry_after = 30
    s, adapter = session_for(busy, b)
    s.get(f"{BASE}/x", timeout=2)
    assert not adapter.manager.is_healthy("busy")
    before = busy.hits()
    for _ in range(5):
        assert s.get(f"{BASE}/x", timeout=2).json()["node"] == "b"
    assert busy.hits() == before  # not tried while it asked to be left alone


@pytest.mark.parametrize("mode", ["reset", "garbage"])
def test_broken_answer_get_fails_over_post_raises(node_factory: Any, mode: str) -> None:
    bad, b = node_factory("bad", mode), node_factory("b")
    s, _ = session_for(bad, b, failure_threshold=100)
    assert s.get(f"{BASE}/x", timeout=2).json()["node"] == "b"
    headers = rid()
    with pytest.raises(requests.ConnectionError) as info:
        s.post(f"{BASE}/x", data=b"1", headers=headers, timeout=2)
    assert not isinstance(info.value, AllNodesFailedError)
    assert b.request_ids[headers["X-Request-Id"]] == 0


def test_endless_body_is_bounded_and_is_the_callers_limit(node_factory: Any) -> None:
    endless, b = node_factory("endless", "endless"), node_factory("b")
    s, adapter = session_for(endless, b, max_body_bytes=1_000_000, failure_threshold=1)
    tracemalloc.start()
    with pytest.raises(ResponseTooLarge) as info:
        s.get(f"{BASE}/x", timeout=2)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8_000_000
    # the caller's own limit: no node is blamed, and the body is not fetched again elsewhere
    assert isinstance(info.value, FailoverError) and [a.node_id for a in info.value.attempts] == ["endless"]
    assert adapter.manager.is_healthy("endless") and b.hits() == 0


def test_deadline_bounds_the_whole_call(node_factory: Any) -> None:
    h1, h2, h3 = (node_factory(f"h{i}", "hang") for i in range(3))
    s, _ = session_for(h1, h2, h3, deadline=0.5)
    t0 = time.monotonic()
    with pytest.raises(requests.Timeout) as info:
        s.get(f"{BASE}/x", timeout=(1, 0.3))
    assert time.monotonic() - t0 < 0.5 + 0.2
    assert isinstance(info.value, (DeadlineExceeded, requests.ReadTimeout)) and isinstance(info.value, FailoverError)


def test_all_nodes_down_raises_with_every_attempt() -> None:
    s, _ = session_for(dead_url(), f"http://user:hunter2@127.0.0.1:{free_port()}")
    with pytest.raises(requests.ConnectionError) as info:
        s.get(f"{BASE}/x", timeout=1)
    err = info.value
    assert isinstance(err, FailoverError) and not isinstance(err, AllNodesFailedError)
    assert type(err).__name__ == "ConnectionError"  # the last attempt's own exception
    assert [a.node_id for a in err.attempts] == ["dead0", "dead1"]
    assert any("tried 2 nodes" in note for note in getattr(err, "__notes__", []))
    assert all(isinstance(a.error, requests.ConnectionError) for a in err.attempts)
    assert "hunter2" not in str(err) and "hunter2" not in repr(err.attempts)


def test_no_available_node_only_without_panic_routing() -> None:
    nodes = [ServiceNode("a", dead_url()), ServiceNode("b", dead_url())]
    m = FailoverManager(nodes, failure_threshold=1, panic=False, max_ejection_percent=100)
    m.mark_failure("a")
    m.mark_failure("b")
    s = requests.Session()
    s.mount(f"{BASE}/", FailoverAdapter(m))
    with pytest.raises(NoAvailableNodeConnectionError) as info:
        s.get(f"{BASE}/x", timeout=1)
    assert isinstance(info.value, requests.ConnectionError) and isinstance(info.value, FailoverError)


def test_unhealthy_node_not_tried_and_passive_health_fed(node_factory: Any) -> None:
    a, b = node_factory("a"), node_factory("b")
    s, adapter = session_for(a, b, failure_threshold=2)
    a.stop()
    for _ in range(2):
        assert s.get(f"{BASE}/x", timeout=1).json()["node"] == "b"
    assert not adapter.manager.is_healthy("a")
    assert adapter.manager.latency("b") is not None
    t0 = time.perf_counter()
    assert s.get(f"{BASE}/x", timeout=1).json()["node"] == "b"
    assert time.perf_counter() - t0 < 0.05


def test_restart_mid_test_traffic_returns(node_factory: Any, clock: Any) -> None:
    a, b = node_factory("a"), node_factory("b")
    s, _adapter = session_for(a, b, failure_threshold=1, clock=clock, base_ejection_time=10, slow_start_window=0)
    assert s.get(f"{BASE}/x", timeout=1).json()["node"] == "a"
    a.stop()
    assert s.get(f"{BASE}/x", timeout=1).json()["node"] == "b"
    a.start()
    assert s.get(f"{BASE}/x", timeout=1).json()["node"] == "b"  # still ejected
    clock.advance(10.1)
    assert s.get(f"{BASE}/x", timeout=1).json()["node"] == "a"  # back after the ejection


def test_generator_body_never_sent_twice(node_factory: Any) -> None:
    hung, b = node_factory("hung", "hang"), node_factory("b")

    def gen() -> Any:
        yield b"part1"
        yield b"part2"

    s, _ = session_for(dead_url(), b)
    assert s.put(f"{BASE}/x", data=gen(), timeout=2).json()["node"] == "b"  # refused: not sent yet
    assert b.bodies[-1] == b"part1part2"
    s2, _ = session_for(hung, b, failure_threshold=100)
    with pytest.raises(requests.ReadTimeout):
        s2.put(f"{BASE}/x", data=gen(), timeout=(1, 0.3))  # PUT is idempotent, but the body is gone
    assert len(b.bodies) == 1


def test_seekable_file_body_is_rewound(node_factory: Any) -> None:
    busy, b = node_factory("busy", "unavailable"), node_factory("b")
    busy.retry_after = 0
    s, _ = session_for(busy, b, failure_threshold=100)
    r = s.put(f"{BASE}/upload", data=io.BytesIO(b"0123456789"), timeout=2)
    assert r.json()["node"] == "b" and b.bodies[-1] == b"0123456789"
    assert busy.bodies[-1] == b"0123456789"


def test_relative_redirect_comes_back_through_adapter(node_factory: Any) -> None:
    a = node_factory("a", "redirect")
    s, _ = session_for(a)
    r = s.get(f"{BASE}/old", timeout=2, allow_redirects=False)
    assert r.status_code == 302 and r.url == f"{BASE}/old"
    r.close()
    assert s.get(f"{BASE}/old", timeout=2).history[0].status_code == 302
    assert a.requests[("GET", "/elsewhere")] >= 1


def test_failover_signal(node_factory: Any) -> None:
    b = node_factory("b")
    s, adapter = session_for(dead_url(), b)
    seen: list[tuple[str, str]] = []

    def receiver(sender: Any, from_node: ServiceNode, to_node: ServiceNode, error: Exception) -> None:
        seen.append((from_node.id, to_node.id))

    signals.failover.connect(receiver, sender=adapter.manager)
    try:
        s.get(f"{BASE}/x", timeout=1)
    finally:
        signals.failover.disconnect(receiver)
    assert seen == [("dead0", "b")]


def test_round_robin_spreads_and_fails_over(node_factory: Any) -> None:
    a, b, c = (node_factory(n) for n in "abc")
    s, _ = session_for(a, b, c, strategy=FailoverStrategy.RoundRobin)
    for _ in range(30):
        s.get(f"{BASE}/x", timeout=2)
    assert a.hits() == b.hits() == c.hits() == 10
    b.stop()
    for _ in range(30):
        assert s.get(f"{BASE}/x", timeout=2).status_code == 200


def test_many_threads_one_session_no_duplicate_posts(node_factory: Any) -> None:
    a, b = node_factory("a"), node_factory("b")
    s, _ = session_for(a, b, pool_maxsize=16)
    errors: list[BaseException] = []
    sent: list[str] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        for k in range(40):
            headers = rid()
            with lock:
                sent.append(headers["X-Request-Id"])
            try:
                s.post(f"{BASE}/orders", data=b"x", headers=headers, timeout=(1, 2))
            except requests.RequestException as exc:
                with lock:
                    errors.append(exc)
            if i == 0 and k == 10:
                a.stop()  # kill the primary mid-run

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = a.request_ids + b.request_ids
    assert max(seen.values()) == 1  # no POST reached two nodes
    # every request either arrived exactly once or failed visibly to its caller
    assert len(seen) + len(errors) >= len(sent) and len(seen) <= len(sent)
    assert len(errors) <= 8  # only requests in flight on the killed node can fail


def test_config_errors() -> None:
    from resilience_mw import ConfigError

    nodes = [ServiceNode("a", "http://a"), ServiceNode("b", "http://b")]
    with pytest.raises(ConfigError) as info:
        FailoverAdapter(nodes, pool_connections=1)
    assert info.value.field == "pool_connections"
    with pytest.raises(ConfigError):
        FailoverAdapter(nodes, deadline=0)
    with pytest.raises(ConfigError):
        FailoverAdapter(FailoverManager(nodes), failure_threshold=2)


def test_node_credentials_sent_as_basic_auth_never_in_errors(node_factory: Any) -> None:
    import base64

    a = node_factory("a")
    s, _ = session_for(a.url.replace("http://", "http://svc-user:s3cr%40t@"))
    assert s.get(f"{BASE}/x", timeout=2).status_code == 200
    assert a.authorization[-1] == "Basic " + base64.b64encode(b"svc-user:s3cr@t").decode()
    s.get(f"{BASE}/x", headers={"Authorization": "Bearer mine"}, timeout=2)
    assert a.authorization[-1] == "Bearer mine"  # the caller's own header wins
    s2, _ = session_for(f"http://svc-user:s3cret@127.0.0.1:{free_port()}")
    with pytest.raises(requests.ConnectionError) as info:
        s2.get(f"{BASE}/x", timeout=1)
    text = str(info.value) + repr(info.value.attempts) + str(info.value.__cause__)  # type: ignore[attr-defined]
    assert "s3cret" not in text and "svc-user" not in text


def test_unrewindable_file_body_not_sent_twice(node_factory: Any) -> None:
    class NoTell(io.RawIOBase):
        def __init__(self) -> None:
            self.data = io.BytesIO(b"payload")

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            return self.data.read(n)

        def tell(self) -> int:
            raise OSError("not seekable")

    busy, b = node_factory("busy", "unavailable"), node_factory("b")
    busy.retry_after = 0
    s, _ = session_for(busy, b, failure_threshold=100)
    r = s.put(f"{BASE}/x", data=NoTell(), timeout=2)
    assert r.status_code == 503 and b.hits() == 0  # the 503 comes back; nothing sent twice


def test_urllib3_timeout_object_with_deadline(node_factory: Any) -> None:
    from urllib3.util import Timeout

    a = node_factory("a")
    s, _ = session_for(a, deadline=5)
    assert s.get(f"{BASE}/x", timeout=Timeout(connect=1, read=1)).status_code == 200


def test_trickled_body_is_cut_at_the_deadline(node_factory: Any) -> None:
    slow, b = node_factory("slow", "trickle"), node_factory("b")
    s, _ = session_for(slow, b, failure_threshold=100, deadline=0.5)
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        s.get(f"{BASE}/x", timeout=(0.2, 0.3))  # every read is on time; the whole is not
    assert time.monotonic() - t0 < 0.5 + 0.2
    assert b.hits() == 0  # no time was left for another node


def test_chunked_and_gzip_bodies_read_whole() -> None:
    import gzip

    from werkzeug.serving import make_server

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/gz":
            body = gzip.compress(b"hello gzip " * 1000)
            start_response("200 OK", [("Content-Encoding", "gzip"), ("Content-Length", str(len(body)))])
            return [body]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"part{i};".encode() for i in range(500))  # no length: sent chunked

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        s, _ = session_for(f"http://127.0.0.1:{server.server_port}")
        r = s.get(f"{BASE}/chunked", timeout=2)
        assert r.headers["Transfer-Encoding"] == "chunked"
        assert r.content == b"".join(f"part{i};".encode() for i in range(500))
        assert s.get(f"{BASE}/gz", timeout=2).content == b"hello gzip " * 1000
    finally:
        server.shutdown()


def test_reset_mid_body_is_a_requests_error_and_fails_over(node_factory: Any) -> None:
    """A body cut short surfaces as a requests exception (never a raw urllib3 one)."""
    import socket as _socket

    srv = _socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]

    def serve() -> None:
        for _ in range(3):
            try:
                conn, _addr = srv.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nonly ten b")
            conn.close()  # 40 bytes short

    threading.Thread(target=serve, daemon=True).start()
    b = node_factory("b")
    try:
        # by default requests reads the body, as it would without the adapter
        s0, _ = session_for(f"http://127.0.0.1:{port}", b, failure_threshold=100)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            s0.get(f"{BASE}/x", timeout=2)
        # with a body limit the adapter reads it, and a broken body fails over like any failure
        s, _ = session_for(f"http://127.0.0.1:{port}", b, failure_threshold=100, max_body_bytes=1000)
        assert s.get(f"{BASE}/x", timeout=2).json()["node"] == "b"  # GET fails over
        headers = rid()
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            s.post(f"{BASE}/x", data=b"1", headers=headers, timeout=2)  # POST: surfaced, not retried
        assert b.request_ids[headers["X-Request-Id"]] == 0
    finally:
        srv.close()


# ------------------------------------------------- the caller's deadline is not the node's fault


def test_an_inbound_deadline_never_ejects_a_healthy_upstream(node_factory: Any) -> None:
    """Three requests whose caller allows 40 ms, to a view calling an upstream that answers
    in 150 ms: the caller's deadline runs out every time, and the upstream stays healthy."""
    from flask import Flask
    from werkzeug.serving import make_server

    from resilience_mw import Phase
    from resilience_mw.flask_ext import Resilience

    slow, b = node_factory("slow", "slow"), node_factory("b")
    slow.delay = 0.15
    upstream, adapter = session_for(slow, b)  # failure_threshold 3: three charges would eject it
    app = Flask("inbound-deadline")
    Resilience(app, start="off", deadline_header="X-Request-Deadline")

    @app.get("/orders")
    def orders() -> tuple[bytes, int]:
        try:
            return upstream.get(f"{BASE}/x", timeout=5).content, 200
        except DeadlineExceeded:
            return b"the caller's deadline passed", 504

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    front = f"http://127.0.0.1:{server.server_port}/orders"
    try:
        for _ in range(3):
            r = requests.get(front, headers={"X-Request-Deadline": "40ms"}, timeout=5)
            assert r.status_code == 504  # DeadlineExceeded: given up before the 150 ms answer
        assert adapter.manager.phase("slow") is Phase.HEALTHY
        [state] = [s for s in adapter.manager.snapshot() if s["id"] == "slow"]
        assert (state["state"], state["consecutive_failures"], state["ejections"]) == ("healthy", 0, 0)
        assert state["latency"] is None  # no 40 ms sample to make it look fast or slow either
        assert b.hits() == 0  # the blame did not move on to the next node
        r = requests.get(front, timeout=5)  # no deadline: the first node still gets the traffic
        assert r.status_code == 200 and r.json()["node"] == "slow"
        assert slow.hits() == 4
    finally:
        server.shutdown()


@pytest.mark.parametrize("binding", ["deadline", "timeout"])
def test_the_adapters_own_limit_still_charges_the_node(node_factory: Any, binding: str) -> None:
    """When the adapter's own ``deadline`` or the call's ``timeout`` is shorter than what
    the caller allows, running out of it is the slow node's doing, as without a caller."""
    from resilience_mw import Phase
    from resilience_mw.admission import inbound_deadline

    slow, b = node_factory("slow", "slow"), node_factory("b")
    slow.delay = 0.15
    options = {"deadline": 0.04} if binding == "deadline" else {}
    s, adapter = session_for(slow, b, failure_threshold=1, slow_start_window=0, **options)
    for inbound in (None, (time.time() + 5, "")):  # without a caller's deadline, and under a longer one
        token = inbound_deadline.set(inbound)
        try:
            if binding == "deadline":
                with pytest.raises(DeadlineExceeded):
                    s.get(f"{BASE}/x", timeout=5)
                assert b.hits() == 0  # no time left for another node
            else:
                assert s.get(f"{BASE}/x", timeout=0.04).json()["node"] == "b"  # timed out: failed over
        finally:
            inbound_deadline.reset(token)
        assert adapter.manager.phase("slow") is Phase.EJECTED
        assert adapter.manager.health("slow").consecutive_failures == 1
        adapter.manager.record_check("slow", True)  # back in, for the next round


@pytest.mark.parametrize(("method", "stream"), [("GET", False), ("POST", False), ("GET", True)])
def test_the_callers_deadline_charges_no_node_whatever_the_call(node_factory: Any, method: str, stream: bool) -> None:
    """Cut by the inbound deadline (the watchdog or the clamped timeout, whichever fires
    first), an attempt charges nothing, for any method, streamed or not, and with the
    adapter's own longer deadline in force too."""
    from resilience_mw import Phase
    from resilience_mw.admission import inbound_deadline

    slow, b = node_factory("slow", "slow"), node_factory("b")
    slow.delay = 0.15
    s, adapter = session_for(slow, b, failure_threshold=1, deadline=2)
    for _ in range(3):
        token = inbound_deadline.set((time.time() + 0.04, "X-Request-Deadline"))
        try:
            with pytest.raises(DeadlineExceeded, match="inbound request's deadline"):
                s.request(method, f"{BASE}/x", data=b"{}", stream=stream, timeout=5)
        finally:
            inbound_deadline.reset(token)
    assert adapter.manager.phase("slow") is Phase.HEALTHY
    assert adapter.manager.health("slow").consecutive_failures == 0 and b.hits() == 0
    assert slow.hits() == 3 and slow.headers_seen[-1]["X-Request-Deadline"]  # it was passed on


def test_a_failover_line_names_the_inbound_request_and_the_upstream_call_apart(
    node_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from resilience_mw import AutoDegradationManager
    from resilience_mw.wsgi import ResilienceMiddleware
    from tests.helpers import serving

    live = node_factory("live")
    session, adapter = session_for(dead_url(), live)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        # an inbound request whose work calls the upstream on another path
        r = session.get(f"{BASE}/pay/now?card=4111", timeout=2)
        adapter.manager.execute_with_failover(fetch_stock)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(r.status_code).encode()]

    def fetch_stock(node: ServiceNode) -> str:
        if node.id == "dead0":
            raise ConnectionError("refused")
        return node.id

    caplog.set_level("WARNING", logger="resilience_mw")
    with serving(ResilienceMiddleware(app, AutoDegradationManager())) as url:
        assert requests.get(f"{url}/checkout/cart?session=s3cret", timeout=5).text == "200"
    session.get(f"{BASE}/pay/later", timeout=2)  # and outside any inbound request
    lines = [r for r in caplog.records if "failover from" in r.getMessage()]
    assert [r.getMessage().split(": failover from")[0] for r in lines] == [
        "GET /checkout/cart (upstream GET /pay/now)",
        "GET /checkout/cart (fetch_stock)",
        "upstream GET /pay/later",
    ]
    assert all(r.getMessage().split(": failover from ")[1].startswith("dead0 to live") for r in lines)
    # the same apart in the record's fields; no query string anywhere
    assert [(getattr(r, "inbound", "?"), getattr(r, "call", "?")) for r in lines] == [
        ("GET /checkout/cart", "upstream GET /pay/now"),
        ("GET /checkout/cart", "fetch_stock"),
        (None, "upstream GET /pay/later"),
    ]
    assert not any("s3cret" in r.getMessage() or "4111" in r.getMessage() for r in caplog.records)
