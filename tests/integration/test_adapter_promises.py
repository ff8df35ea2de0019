"""The promises the adapter keeps, each against real (and hostile) servers on 127.0.0.1:
a POST never reaches two nodes, exceptions keep requests' types, a sole node is never
shut out, caller mistakes blame no node, requests' timeout semantics, a deadline for
every phase, fork safety, and the smaller wire-level cases."""

from __future__ import annotations

import gzip
import os
import select
import signal
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from resilience_mw import FailoverError, FailoverManager, ServiceNode
from resilience_mw.adapter import DeadlineExceeded, FailoverAdapter
from tests.hostile import RawServer, read_request, reset, respond, tls_contexts
from tests.nodes import free_port

BASE = "http://orders"


@pytest.fixture
def servers() -> Iterator[Callable[..., RawServer]]:
    started: list[RawServer] = []

    def make(handler: Any, tls: ssl.SSLContext | None = None) -> RawServer:
        s = RawServer(handler, tls)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def mount(*urls: str, prefix: str = BASE, **kw: Any) -> tuple[requests.Session, FailoverAdapter]:
    nodes = [ServiceNode(f"n{i}", url, priority=100 - i) for i, url in enumerate(urls)]
    adapter = FailoverAdapter(nodes, **kw)
    session = requests.Session()
    session.mount(f"{prefix}/", adapter)
    return session, adapter


# ------------------------------------------------- 1. a POST never reaches two nodes


def read_then_reset(sock: socket.socket, server: RawServer) -> None:
    if read_request(sock, server):
        reset(sock)


def read_then_tls_garbage(sock: socket.socket, server: RawServer) -> None:
    if read_request(sock, server):
        socket.socket.send(sock, b"\x15\x03\x03\x00\x02\xff\xff not a TLS record")  # under the TLS layer
        reset(sock)


@pytest.mark.parametrize("fail", [read_then_reset, read_then_tls_garbage], ids=["reset", "tls-garbage"])
def test_tls_failure_after_the_body_was_sent_never_reaches_a_second_node(
    servers: Any, tmp_path: Any, fail: Any
) -> None:
    tls, ca_file, _ = tls_contexts(tmp_path)
    a, b = servers(fail, tls), servers(fail, tls)
    s, _ = mount(a.url, b.url, prefix="https://orders")
    with pytest.raises(requests.RequestException) as info:
        s.post("https://orders/pay", data=b"amount=10", verify=ca_file, timeout=5)
    assert a.count("POST") == 1 and b.count("POST") == 0  # exactly one node saw it
    assert isinstance(info.value, FailoverError)
    if fail is read_then_tls_garbage:
        assert isinstance(info.value, requests.exceptions.SSLError)
    # the same failure on a GET is safe to send elsewhere
    with pytest.raises(requests.RequestException):
        s.get("https://orders/x", verify=ca_file, timeout=5)
    assert a.count("GET") + b.count("GET") == 2


def test_tls_handshake_failure_is_before_sending_so_a_post_moves_on(servers: Any, tmp_path: Any) -> None:
    tls, ca_file, untrusted = tls_contexts(tmp_path)

    def ok(sock: socket.socket, server: RawServer) -> None:
        if read_request(sock, server):
            respond(sock, body=b"paid")

    bad, good = servers(ok, untrusted), servers(ok, tls)
    s, _adapter = mount(bad.url, good.url, prefix="https://orders")
    r = s.post("https://orders/pay", data=b"amount=10", verify=ca_file, timeout=5)
    assert r.text == "paid" and r.resilience_node == "n1"  # type: ignore[attr-defined]
    assert bad.count() == 0 and good.count("POST") == 1


# ------------------------------------------------------- 2. exception types are requests'


def hang(sock: socket.socket, server: RawServer) -> None:
    read_request(sock, server)
    time.sleep(3)


def bad_chunks(sock: socket.socket, server: RawServer) -> None:
    if read_request(sock, server):
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n")
        reset(sock)


def bad_gzip(sock: socket.socket, server: RawServer) -> None:
    if read_request(sock, server):
        respond(sock, body=b"this is not gzip", headers={"Content-Encoding": "gzip"})


@pytest.mark.parametrize("handler", [hang, bad_chunks, bad_gzip, read_then_reset])
def test_one_node_raises_what_requests_raises(servers: Any, handler: Any) -> None:
    server = servers(handler)

    def outcome(session: requests.Session, url: str) -> type[BaseException]:
        with pytest.raises(requests.RequestException) as info:
            session.get(url, timeout=(1, 0.5))
        return type(info.value)

    plain = requests.Session()
    plain.mount("http://", HTTPAdapter())
    expected = outcome(plain, f"{server.url}/x")
    s, _ = mount(server.url)
    got = outcome(s, f"{BASE}/x")
    assert issubclass(got, expected) and got.__name__ == expected.__name__
    if handler in (hang, read_then_reset):  # raised in the adapter (a body error is raised by requests)
        assert issubclass(got, FailoverError)
    assert expected in (
        requests.ReadTimeout,
        requests.exceptions.ChunkedEncodingError,
        requests.exceptions.ContentDecodingError,
        requests.ConnectionError,
    )


def test_exception_type_does_not_depend_on_method_or_node_count(servers: Any) -> None:
    a, b = servers(hang), servers(hang)
    for urls in ((a.url,), (a.url, b.url)):
        s, _ = mount(*urls)
        for method in ("GET", "POST"):
            with pytest.raises(requests.ReadTimeout) as info:
                s.request(method, f"{BASE}/x", data=b"1", timeout=(1, 0.3))
            assert isinstance(info.value, FailoverError) and info.value.attempts


# ------------------------------------------------------ 3. the only node is not shut out


def test_single_node_answering_503_three_times_then_recovering(node_factory: Any) -> None:
    node = node_factory("only", "unavailable")
    node.retry_after = 30
    s, adapter = mount(node.url, failure_threshold=3)
    for _ in range(3):
        assert s.get(f"{BASE}/x", timeout=2).status_code == 503
    assert not adapter.manager.is_healthy("n0")  # held off, as it asked...
    node.mode = "ok"
    assert s.post(f"{BASE}/x", data=b"batch", timeout=2).status_code == 200  # ...but never refused
    assert node.hits() == 4


# ---------------------------------------------- 4. the caller's mistakes blame no node


def test_callers_mistakes_charge_no_node_and_try_no_other(node_factory: Any, tmp_path: Any) -> None:
    a, b = node_factory("a"), node_factory("b")
    s, adapter = mount(a.url, b.url, failure_threshold=1)
    for _ in range(3):
        with pytest.raises(requests.exceptions.InvalidProxyURL) as info:
            s.get(f"{BASE}/x", proxies={"http": "http://"}, timeout=2)
        assert isinstance(info.value, FailoverError)
    assert adapter.manager.is_healthy("n0") and a.hits() + b.hits() == 0
    assert s.get(f"{BASE}/x", timeout=2).json()["node"] == "a"


def test_a_ca_bundle_that_does_not_load_blames_no_node(servers: Any, tmp_path: Any) -> None:
    tls, _, _ = tls_contexts(tmp_path)
    node = servers(read_request, tls)
    s, adapter = mount(node.url, node.url.replace("127.0.0.1", "localhost"), prefix="https://orders", failure_threshold=1)
    garbage = tmp_path / "bundle.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    for _ in range(3):
        with pytest.raises(requests.exceptions.SSLError):
            s.get("https://orders/x", verify=str(garbage), timeout=2)
    with pytest.raises(OSError, match="invalid path"):  # requests' own check, untouched
        s.get("https://orders/x", verify=str(tmp_path / "missing.pem"), timeout=2)
    assert adapter.manager.is_healthy("n0") and adapter.manager.is_healthy("n1")


# ------------------------------------------------------ 5. requests' timeout semantics


def steady_body(sock: socket.socket, server: RawServer) -> None:
    if read_request(sock, server):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n")
        for _ in range(8):
            time.sleep(0.2)
            sock.sendall(b"x")


def test_timeout_is_per_read_and_elapsed_is_time_to_headers(servers: Any) -> None:
    server = servers(steady_body)
    s, _ = mount(server.url)
    t0 = time.monotonic()
    r = s.get(f"{BASE}/x", timeout=0.5)  # 1.6 s in all, no read waits more than 0.2 s
    assert r.content == b"x" * 8 and time.monotonic() - t0 >= 1.5
    assert r.elapsed.total_seconds() < 0.5


def test_redirect_whose_body_does_not_decode_is_followed(servers: Any) -> None:
    def handler(sock: socket.socket, server: RawServer) -> None:
        while req := read_request(sock, server):
            if req[1] == "/start":
                respond(sock, "302 Found", b"\x00garbage", {"Location": "/done", "Content-Encoding": "gzip"})
            else:
                respond(sock, body=b"arrived")

    server = servers(handler)
    s, _ = mount(server.url)
    r = s.get(f"{BASE}/start", timeout=2)
    assert r.text == "arrived" and r.url == f"{BASE}/done" and r.history[0].status_code == 302


# ---------------------------------------------------- 6. a deadline for every phase


def endless_continue(sock: socket.socket, server: RawServer) -> None:
    if read_request(sock, server):
        for _ in range(100):
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            time.sleep(0.2)


def trickled_head(sock: socket.socket, server: RawServer) -> None:
    if read_request(sock, server):
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 200:
            sock.sendall(bytes([byte]))
            time.sleep(0.05)


@pytest.mark.parametrize("handler", [endless_continue, trickled_head])
@pytest.mark.parametrize("timeout", [2, (None, 2), (2, None), None])
def test_deadline_holds_against_a_trickling_head(servers: Any, handler: Any, timeout: Any) -> None:
    server = servers(handler)
    s, _ = mount(server.url, deadline=1)
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        s.get(f"{BASE}/x", timeout=timeout)
    assert time.monotonic() - t0 < 1.2
    assert isinstance(info.value, requests.Timeout) and isinstance(info.value, FailoverError)


# ------------------------------------------------------------------ 7. fork safety


def test_fork_children_never_share_a_pooled_connection(node_factory: Any) -> None:
    node = node_factory("a")
    s, _ = mount(node.url)
    assert s.get(f"{BASE}/warm", timeout=2).status_code == 200  # a pooled keep-alive socket

    def crossed(n: int) -> int:
        bad = 0
        for _ in range(n):
            tag = uuid.uuid4().hex
            try:
                if s.get(f"{BASE}/id/{tag}", timeout=5).json()["path"] != f"/id/{tag}":
                    bad += 1
            except requests.RequestException:
                bad += 1
        return bad

    children = []
    for _ in range(2):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 1
            try:
                code = min(crossed(200), 100) + 2
            finally:
                os.write(w, bytes([code]))
                os._exit(0)
        os.close(w)
        children.append((pid, r))
    parent_bad = crossed(200)
    results = []
    for pid, r in children:
        ready, _, _ = select.select([r], [], [], 60)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        results.append(os.read(r, 1) if ready else b"")
        os.waitpid(pid, 0)
        os.close(r)
    assert parent_bad == 0
    assert results == [bytes([2]), bytes([2])], "a child saw crossed responses or failed"


# ---------------------------------------------------------------------- 8. smaller


def test_retry_after_date_far_in_the_future_is_capped_not_a_crash(servers: Any) -> None:
    def handler(sock: socket.socket, server: RawServer) -> None:
        while read_request(sock, server):
            respond(sock, "503 Service Unavailable", b"busy", {"Retry-After": "Fri, 31 Dec 99999 23:59:59 GMT"})

    server = servers(handler)
    s, _ = mount(server.url)
    assert s.get(f"{BASE}/x", timeout=2).status_code == 503


def test_no_proxy_is_applied_to_the_node(node_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    node, proxy = node_factory("node"), node_factory("proxy")
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    s, _ = mount(node.url)
    assert s.get(f"{BASE}/x", timeout=2).json()["node"] == "node"
    assert proxy.hits() == 0


def chunked(data: bytes) -> bytes:
    """``data`` in chunked framing, in two chunks."""
    half = len(data) // 2
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (data[:half], data[half:]) if part) + b"0\r\n\r\n"


#: Transfer-Encoding header lines -> the payload, sent in chunked framing under them
CODED_PAYLOADS = {
    ("gzip, chunked",): gzip.compress(b"hello, gzip " * 50),
    ("identity, chunked",): b"hello, identity " * 50,
    ("chunked, chunked",): chunked(b"hello, twice " * 50),
    ("gzip", "chunked"): b"two header lines " * 50,  # one list of codings over two lines
}


@pytest.mark.parametrize(
    "mode", [{}, {"deadline": 5}, {"max_body_bytes": 1_000_000}], ids=["default", "deadline", "max_body_bytes"]
)
@pytest.mark.parametrize("codings", list(CODED_PAYLOADS), ids=" + ".join)
def test_transfer_codings_with_chunked_read_as_a_plain_adapter_reads_them(
    servers: Any, codings: tuple[str, ...], mode: dict[str, Any]
) -> None:
    """What the adapter returns for ``gzip, chunked`` and the like is what requests'
    own HTTPAdapter returns (status, headers, bytes), in every mode, also for the next
    request (the connection is not left in a muddle)."""
    head = "".join(f"Transfer-Encoding: {c}\r\n" for c in codings)
    wire = chunked(CODED_PAYLOADS[codings])

    def handler(sock: socket.socket, server: RawServer) -> None:
        while read_request(sock, server):
            sock.sendall(f"HTTP/1.1 200 OK\r\nX-Node: raw\r\n{head}\r\n".encode() + wire)

    server = servers(handler)
    plain = requests.Session()
    plain.mount("http://", HTTPAdapter(max_retries=0))
    s, adapter = mount(server.url, **mode)
    for _ in range(2):
        want = plain.get(f"{server.url}/x", timeout=2)
        got = s.get(f"{BASE}/x", timeout=2)
        assert (got.status_code, dict(got.headers), got.content) == (want.status_code, dict(want.headers), want.content)
        assert got.status_code == 200 and got.content and got.content != wire  # the framing taken off
    assert adapter.manager.health("n0").consecutive_failures == 0


def test_a_transfer_coding_framed_by_content_length_never_answers_the_next_request(servers: Any) -> None:
    """``Transfer-Encoding: gzip`` with a ``Content-Length``: http.client (and a plain
    adapter) frame the body by the length, and the adapter returns the same bytes. But
    its connection is not reused: the rest of that body, arriving late, never becomes
    the answer to the next request, as it does on a plain adapter's kept-alive one."""

    def handler(sock: socket.socket, server: RawServer) -> None:
        while req := read_request(sock, server):
            if req[1] != "/coded":
                respond(sock, body=b"clean")
                continue
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello")
            if read_request(sock, server):  # a next request on this connection: the body goes on
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged")

    server = servers(handler)
    plain = requests.Session()
    plain.mount("http://", HTTPAdapter(max_retries=0))
    s, _ = mount(server.url)
    assert s.get(f"{BASE}/coded", timeout=2).content == plain.get(f"{server.url}/coded", timeout=2).content == b"hello"
    assert s.get(f"{BASE}/next", timeout=2).content == b"clean"
    assert plain.get(f"{server.url}/next", timeout=2).content == b"forged"  # what the adapter keeps away


def test_redirect_from_a_node_with_a_base_path(servers: Any) -> None:
    def handler(sock: socket.socket, server: RawServer) -> None:
        while req := read_request(sock, server):
            if req[1] == "/base/start":
                respond(sock, "302 Found", b"", {"Location": "/base/next"})
            else:
                respond(sock, body=req[1].encode())

    server = servers(handler)
    s, _ = mount(server.url + "/base")
    r = s.get(f"{BASE}/start", timeout=2)
    assert r.text == "/base/next" and r.url == f"{BASE}/next"


def test_early_hints_do_not_desynchronise_the_connection(servers: Any) -> None:
    def handler(sock: socket.socket, server: RawServer) -> None:
        while req := read_request(sock, server):
            sock.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            respond(sock, body=req[1].encode())

    s, _ = mount(servers(handler).url)
    for i in range(5):
        assert s.get(f"{BASE}/r{i}", timeout=2).text == f"/r{i}"


def test_dead_node_then_live_node_for_a_post(node_factory: Any) -> None:
    live = node_factory("live")
    s, _ = mount(f"http://127.0.0.1:{free_port()}", live.url)
    assert s.post(f"{BASE}/x", data=b"1", timeout=2).json()["node"] == "live"


def test_shared_manager_health_is_fed(node_factory: Any) -> None:
    a = node_factory("a")
    manager = FailoverManager([ServiceNode("a", a.url)])
    s = requests.Session()
    s.mount(f"{BASE}/", FailoverAdapter(manager))
    s.get(f"{BASE}/x", timeout=2)
    assert manager.latency("a") is not None




def test_adapter_pickles_with_its_session(node_factory: Any) -> None:
    import pickle

    node = node_factory("a")
    s, adapter = mount(node.url, failure_threshold=7, deadline=5)
    copy = pickle.loads(pickle.dumps(s))
    assert copy.get(f"{BASE}/x", timeout=2).json()["node"] == "a"
    restored = copy.get_adapter(f"{BASE}/x")
    assert isinstance(restored, FailoverAdapter) and restored.manager is not adapter.manager
    assert restored.manager.config.failure_threshold == 7 and restored.failover_config.deadline == 5


def test_the_retry_budget_caps_failovers_during_a_full_outage_of_one_node(node_factory: Any) -> None:
    import resilience_mw.signals as sig
    from resilience_mw.testing import record_signals

    live = node_factory("live")
    dead = f"http://127.0.0.1:{free_port()}"  # refuses every connection
    adapter = FailoverAdapter(
        [ServiceNode("dead", dead, priority=2), ServiceNode("live", live.url, priority=1)],
        failure_threshold=1_000_000,  # never ejected: every request meets the dead node first
    )
    session = requests.Session()
    session.mount("http://svc/", adapter)
    n, served, refused = 300, 0, 0
    with record_signals(sig.retry_budget_exhausted) as spent:
        for _ in range(n):
            try:
                served += session.get("http://svc/x", timeout=2).status_code == 200
            except requests.ConnectionError as exc:
                refused += 1
                assert "retry budget spent" in "".join(getattr(exc, "__notes__", []))
    extra = live.hits("/x")  # each one reached the live node after failing over
    allowed = max(0.2 * n, 3 * 10)  # 20 % of the requests; never fewer than 3 per second of the 10 s window
    assert served == extra and served + refused == n
    assert allowed - 5 <= extra <= allowed + 1, (extra, allowed)
    assert len(spent.events) == refused > 0
